//! What the bench binaries share: their entry point, settings from the
//! environment, medians, and URLs printed without their password.

use std::future::Future;

/// The URL without its password, for printing.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The median of `v` (the mean of the middle two of an even count; NaN
/// for none): benches report medians of repeated runs.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// A bench binary's entry: runs `body` on a multi-thread runtime and exits
/// 0 when it returns `Ok(true)`; 1 when it returns `Ok(false)` (saying
/// `missing`) or fails, or the runtime cannot start. Messages start with `name`.
pub fn bench_main(
    name: &str,
    missing: &str,
    body: impl Future<Output = anyhow::Result<bool>>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{name}: {missing} (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A positive count from the environment variable `name` (`_` allowed as a
/// digit separator), or `default` when it is unset: the benches' settings.
pub fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{name}={v} is not a positive number")),
        Err(_) => Ok(default),
    }
}
