//! Starts the hub: opens its store, loads the node registry, binds its gRPC services.
//! `main` and the tests start hubs through [`run`], or [`serve`] over a store of their own.

use std::net::SocketAddr;
use std::sync::Arc;

use linkage_node::office::Office;
use linkage_node::replica::{Replica, ReplicaError, SystemClock};
use linkage_node::server::{incoming, serve_with_grace, write_addr_file};
use linkage_node::store::{RocksStore, Store, StoreError};
use tracing::{info, warn};

use crate::config::HubConfig;
use crate::convergence::Registry;
use crate::service::HubService;

/// The hub's own identity in actor ids and in its certificate. The hub never writes records;
/// the name only keeps the replica's bookkeeping uniform.
pub const HUB_ORG: &str = linkage_node::tls::HUB_ORG;

/// Why the hub could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub store: {0}")]
    Store(#[from] StoreError),
    #[error("hub replica: {0}")]
    Replica(#[from] ReplicaError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the address file: {0}")]
    AddrFile(std::io::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] linkage_node::tls::TlsError),
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error(
        "the hub stopped: a write or disk sync of its store failed, and it takes no more writes until it is reopened ({0})"
    )]
    StoreFailed(String),
}

/// Runs the hub until `shutdown` resolves. It binds its address before it opens (or makes)
/// its data folder: a hub that cannot serve leaves nothing behind.
pub async fn run(
    config: HubConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    let (listener, addr) = linkage_node::server::bind(config.listen)
        .await
        .map_err(|source| HubError::Listen {
            addr: config.listen,
            source,
        })?;

    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || RocksStore::open(&data_dir))
        .await
        .map_err(|_| HubError::ShuttingDown)??;
    serve(config, listener, addr, Arc::new(store), shutdown).await
}

/// Serves the hub over `store` on `listener` (bound to `addr`) until `shutdown` resolves, or
/// until a write or disk sync of `store` fails. [`run`] opens the data folder's store; the tests serve
/// hubs over in-memory stores whose syncs they can make fail.
pub async fn serve(
    config: HubConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    store: Arc<dyn Store>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    let replica = Arc::new(
        Replica::open(HUB_ORG, store, Arc::new(SystemClock), config.cache_docs)?
            .keep_frontiers(config.cache_frontiers),
    );
    let registry = {
        let replica = replica.clone();
        tokio::task::spawn_blocking(move || Registry::load(replica))
            .await
            .map_err(|_| HubError::ShuttingDown)??
    };
    let office = Office::new(replica, Arc::new(config.directory.clone()))
        .with_period_policies(config.periods.clone());

    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr).map_err(HubError::AddrFile)?;
    }
    info!(%addr, data_dir = %config.data_dir.display(), "hub listening");

    // A graceful shutdown waits for every open stream, and neither a node's sync session nor a
    // following feed ends on its own: both are told to. A failed disk sync stops the hub too
    // (`Replica::store_failed`), and so does a failed write: a break-test's hub ran on for
    // minutes refusing every node.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (shutdown, store_failed) =
        linkage_node::server::or_store_failure(office.replica().clone(), shutdown);
    let shutdown = async move {
        shutdown.await;
        info!("hub stopping: ending sync sessions and feeds");
        let _ = stopping_tx.send(true);
    };
    if config.refill_from_nodes {
        warn!(
            "refilling from the nodes: changes a node hands over for a record's other parties are admitted; restart without --refill-from-nodes once `linkage status` shows the district converged"
        );
    }
    let feed_log = {
        let (store, refill) = (office.replica().store().clone(), config.refill_from_nodes);
        tokio::task::spawn_blocking(move || crate::feed::FeedLog::open(store, refill))
            .await
            .map_err(|_| HubError::ShuttingDown)??
    };
    let registry = Arc::new(registry);
    tokio::spawn(keep_last_contacts(registry.clone(), stopping.clone()));
    let service = HubService::new(office, registry)
        .refilling_from_nodes(config.refill_from_nodes)
        .with_feed_log(Arc::new(feed_log))
        .with_stop_signal(stopping.clone());
    let (_reporter, health, reflection) =
        linkage_node::service::standard_services("linkage.v1.Sync").await;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server_config()?)?;
    }
    serve_with_grace(
        builder
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_service(health)
            .add_service(reflection)
            .add_service(service.sync_server())
            .add_service(service.district_server())
            .add_service(service.feeds_server())
            .serve_with_incoming_shutdown(incoming(listener), shutdown),
        stopping,
    )
    .await?;
    if let Some(error) = store_failed.get() {
        return Err(HubError::StoreFailed(error.clone()));
    }
    info!("hub stopped");
    Ok(())
}

/// How often the connected nodes' last contact is written down.
const LAST_CONTACT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes the connected nodes' last contact every [`LAST_CONTACT_EVERY`] until the hub stops,
/// so after a crash `linkage status` shows an offline node's last contact within that much.
async fn keep_last_contacts(
    registry: Arc<Registry>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(LAST_CONTACT_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.changed() => return,
        }
        let registry = registry.clone();
        match tokio::task::spawn_blocking(move || registry.persist_connected()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "could not write the connected nodes' last contact"),
            Err(_) => return,
        }
    }
}
