//! Replays the fuzz inputs worth keeping through exactly the code the fuzz
//! targets run (`fuzz/src/lib.rs`, compiled in here), on stable Rust:
//! every crash input kept under `fuzz/regressions/<target>/` and every
//! committed seed under `fuzz/seeds/<target>/`. None may panic.
//!
//! To keep a crash found by `cargo fuzz`, copy its artifact into
//! `fuzz/regressions/<target>/` (see fuzz/README.md); this test then fails
//! until the bug is fixed, and guards it afterwards.

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};

/// A target: its name (the directory of its inputs) and what it runs.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 3] = [
    ("envelope_open", targets::envelope_open),
    ("validate_header", targets::validate_header),
    ("verify_envelope", targets::verify_envelope),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            // Notes kept next to the inputs are not inputs.
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') || n.ends_with(".md"))
        })
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind` (`regressions` or `seeds`) through its target,
/// each in its own `catch_unwind`, and names every one that panicked.
fn replay(kind: &str) -> usize {
    let mut failed = Vec::new();
    let mut count = 0;
    for (target, run) in TARGETS {
        for path in inputs(&fuzz_dir().join(kind).join(target)) {
            let bytes = std::fs::read(&path).expect("readable input");
            count += 1;
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                failed.push(format!("{target}: {}", path.display()));
            }
        }
    }
    assert!(failed.is_empty(), "panicked on: {failed:#?}");
    count
}

#[test]
fn kept_crash_inputs_no_longer_panic() {
    let n = replay("regressions");
    eprintln!("{n} kept crash inputs replayed");
}

#[test]
fn seeds_run_clean_and_the_valid_ones_verify() {
    let n = replay("seeds");
    assert!(n >= 30, "the committed seeds are there ({n} found)");
    // The seeds must reach the deep end of verification: the valid request
    // verifies against the fixture CA at the fixed instant.
    let bytes = std::fs::read(fuzz_dir().join("seeds/verify_envelope/request")).unwrap();
    let opened = mev_proto::envelope::open(&bytes, &targets::LIMITS[0]).expect("opens");
    let cert = opened
        .verify(
            targets::trust(),
            &mev_proto::crypto::RingVerifier::new(),
            targets::verify_at(),
        )
        .expect("the seed verifies");
    assert_eq!(cert.agency, targets::AGENCY);
    assert!(!targets::CA_PEM.is_empty());
}
