//! `linkage-node`: an office's node. See `linkage-node --help` and the README.

use clap::Parser;
use linkage_node::config::{NodeArgs, NodeConfig};
use linkage_node::server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let config = NodeConfig::from_args(NodeArgs::parse())?;
    server::run(config, server::shutdown_signal()).await
}
