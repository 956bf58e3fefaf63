//! `linkage-node`: an office's node. See `linkage-node --help` and the README.

use std::process::ExitCode;

use clap::Parser;
use linkage_node::config::{NodeArgs, NodeConfig};
use linkage_node::server;

/// jemalloc, not glibc's malloc, as on the hub (`hub/src/main.rs` says why); its purging
/// settings are built in (`.cargo/config.toml`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Errors are printed once, by their message alone: each names what was wrong, so the cause
/// chain and backtrace `anyhow` would add only repeat it.
#[tokio::main]
async fn main() -> ExitCode {
    server::init_tracing();
    let config = match NodeConfig::from_args(NodeArgs::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("linkage-node: {e}");
            return ExitCode::from(2);
        }
    };
    match server::run(config, server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkage-node: {e}");
            ExitCode::FAILURE
        }
    }
}
