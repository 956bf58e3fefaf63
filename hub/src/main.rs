//! `linkage-hub`: the district hub. See `linkage-hub --help` and the README.

use clap::Parser;
use linkage_hub::config::{HubArgs, HubConfig};
use linkage_node::server::{init_tracing, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = HubConfig::from_args(HubArgs::parse())?;
    linkage_hub::server::run(config, shutdown_signal()).await
}
