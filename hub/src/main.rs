//! `linkage-hub`: the district hub. See `linkage-hub --help` and the README.

use std::process::ExitCode;

use clap::Parser;
use linkage_hub::config::{HubArgs, HubConfig};
use linkage_node::server::{init_tracing, shutdown_signal};

/// jemalloc, not glibc's malloc: Automerge makes many small allocations per loaded document,
/// and glibc's bins (`_int_malloc`, `malloc_consolidate`) were 40 % of the hub's CPU taking in
/// changes to records not in memory; jemalloc took a fifth off the hub's CPU in the benchmark.
/// Its purging settings are built in (`.cargo/config.toml`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
