//! The broker as a process of its own, for the tests that kill it with
//! SIGKILL: `mev-test-broker CONFIG.toml` runs `mev_broker::server::run`,
//! exactly what `mev broker --config` runs.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: mev-test-broker CONFIG.toml");
        return ExitCode::from(2);
    };
    let run = || -> anyhow::Result<()> {
        let config = mev_broker::config::BrokerConfig::load(std::path::Path::new(&path))?;
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(mev_broker::server::run(config))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mev-test-broker: {e:#}");
            ExitCode::from(2)
        }
    }
}
