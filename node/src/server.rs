//! Starts a node: opens its store, binds its gRPC services, and runs its sync link to the hub.
//! `main` and the tests both start nodes through [`run`], so a test runs the real thing.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{error, info};

use crate::config::NodeConfig;
use crate::office::Office;
use crate::replica::{Replica, SystemClock};
use crate::service::NodeService;
use crate::store::{RocksStore, Store};
use crate::sync::client::{self, LinkStatus};

/// Runs the node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let store: Arc<dyn Store> =
        Arc::new(tokio::task::spawn_blocking(move || RocksStore::open(&data_dir)).await??);
    let replica = Arc::new(Replica::open(
        &config.org,
        store,
        Arc::new(SystemClock),
        config.cache_docs,
    )?);
    let office = Office::new(replica.clone(), Arc::new(config.directory.clone()));

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr)?;
    }
    info!(org = %config.org, %addr, data_dir = %config.data_dir.display(), hub = ?config.hub, "node listening");

    let link = Arc::new(LinkStatus::default());
    let sync_task = config
        .hub
        .clone()
        .map(|hub| tokio::spawn(client::run_forever(replica.clone(), hub, link.clone())));

    let (_health_reporter, health, reflection) =
        crate::service::standard_services("linkage.v1.Records").await;
    let service = NodeService::new(office, config.hub.clone(), link);
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;

    if let Some(task) = sync_task {
        task.abort();
    }
    if let Err(e) = &served {
        error!(error = %e, "gRPC server failed");
    }
    served?;
    info!("node stopped");
    Ok(())
}

/// Writes the bound address atomically (write then rename), so a script polling for the file
/// never reads half an address.
pub fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, path)
}

/// Logs to stderr in the format the binaries share; `RUST_LOG` sets the level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
