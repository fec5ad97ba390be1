//! No circles among a crate's top-level modules (the issue "The house"):
//! each crate of the workspace reads bottom-up, so a change has one place to
//! go and a module can be understood from those below it. The check reads
//! the `crate::` paths of every module's files (tests and comments aside)
//! and fails naming the circle and the files that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → module it uses → the files where it does.
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The crates checked, by their source folders under the workspace root.
const CRATES: [&str; 6] = [
    "proto/src",
    "transport/src",
    "store/src",
    "adapters/src",
    "broker/src",
    "cli/src",
];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's top-level modules (`src/m.rs`, `src/m/`) and their files.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if matches!(name, "lib" | "main" | "tests") {
            continue;
        }
        let files = modules.entry(name.to_string()).or_default();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    modules
}

/// The names that follow `crate::` in `text`, without comments and without
/// a trailing `#[cfg(test)] mod tests { … }` (tests may reach anywhere).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let rest = rest.strip_prefix('{').unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Which top-level module uses which, in the crate whose sources are `src`.
fn edges(src: &Path) -> Edges {
    let modules = modules(src);
    let mut edges = Edges::new();
    for (module, files) in &modules {
        for file in files {
            if file.file_name().is_some_and(|f| f == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("a source file");
            for used in crate_paths(&text) {
                if &used != module && modules.contains_key(&used) {
                    let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(used)
                        .or_default()
                        .insert(shown);
                }
            }
        }
    }
    edges
}

/// A circle, as the modules along it (the first repeated at the end), if any.
fn find_circle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == at) {
            let mut circle = path[start..].to_vec();
            circle.push(at.to_string());
            return Some(circle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_string());
        for next in edges.get(at).into_iter().flat_map(|e| e.keys()) {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(at.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut Vec::new(), &mut done))
}

/// The circle with the files that make each step of it.
fn explain(circle: &[String], edges: &Edges) -> String {
    circle
        .windows(2)
        .map(|w| {
            let files: Vec<_> = edges[&w[0]][&w[1]].iter().cloned().collect();
            format!("{} -> {} ({})", w[0], w[1], files.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn no_crate_has_a_circle_among_its_top_level_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in CRATES {
        let src = root.join(krate);
        let edges = edges(&src);
        if let Some(circle) = find_circle(&edges) {
            panic!(
                "{krate}: a circle among top-level modules: {}\n  {}\nMove what both need into a module of its own below them.",
                circle.join(" -> "),
                explain(&circle, &edges)
            );
        }
    }
}

#[test]
fn the_check_finds_a_circle_and_names_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::Thing; // crate::c is only named here\n",
    )
    .unwrap();
    std::fs::write(src.join("b/mod.rs"), "mod inner;\n").unwrap();
    std::fs::write(src.join("b/inner.rs"), "fn f() { crate::c::g() }\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub fn g() {}\n#[cfg(test)]\nmod tests {\n    use crate::a::*;\n}\n",
    )
    .unwrap();
    // a -> b -> c, and c's tests may use a: no circle.
    assert_eq!(find_circle(&edges(src)), None);
    std::fs::write(src.join("c.rs"), "use crate::{a::Other};\npub fn g() {}\n").unwrap();
    let edges = edges(src);
    let circle = find_circle(&edges).expect("a -> b -> c -> a");
    assert_eq!(circle, ["a", "b", "c", "a"]);
    let text = explain(&circle, &edges);
    assert!(text.contains("b -> c (b/inner.rs)"), "{text}");
}
