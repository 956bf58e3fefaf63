//! `linkage-hub`: the district hub. See `linkage-hub --help` and the README.

use std::process::ExitCode;

use clap::Parser;
use linkage_hub::config::{HubArgs, HubConfig};
use linkage_node::server::{init_tracing, shutdown_signal};

/// Errors go to stderr once, by their message alone (each names what was wrong, e.g. the
/// address it could not listen on), whatever `RUST_LOG` lets through.
#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let config = match HubConfig::from_args(HubArgs::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("linkage-hub: {e}");
            return ExitCode::from(2);
        }
    };
    match linkage_hub::server::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkage-hub: {e}");
            ExitCode::FAILURE
        }
    }
}
