//! Starts the hub: opens its store, loads the node registry, binds its gRPC services.
//! `main` and the tests start hubs through [`run`].

use std::sync::Arc;

use linkage_node::office::Office;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::server::write_addr_file;
use linkage_node::store::{RocksStore, Store};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::config::HubConfig;
use crate::convergence::Registry;
use crate::service::HubService;

/// The hub's own identity in actor ids. The hub never writes records; the name only keeps
/// the replica's bookkeeping uniform.
pub const HUB_ORG: &str = "district-hub";

/// Runs the hub until `shutdown` resolves.
pub async fn run(
    config: HubConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let store: Arc<dyn Store> =
        Arc::new(tokio::task::spawn_blocking(move || RocksStore::open(&data_dir)).await??);
    let replica = Arc::new(Replica::open(
        HUB_ORG,
        store,
        Arc::new(SystemClock),
        config.cache_docs,
    )?);
    let registry = Arc::new({
        let replica = replica.clone();
        tokio::task::spawn_blocking(move || Registry::load(replica)).await??
    });
    let office = Office::new(replica, Arc::new(config.directory.clone()));

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr)?;
    }
    info!(%addr, data_dir = %config.data_dir.display(), "hub listening");

    let service = HubService::new(office, registry);
    let (_reporter, health, reflection) =
        linkage_node::service::standard_services("linkage.v1.Sync").await;
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health)
        .add_service(reflection)
        .add_service(service.sync_server())
        .add_service(service.district_server())
        .add_service(service.feeds_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    info!("hub stopped");
    Ok(())
}
