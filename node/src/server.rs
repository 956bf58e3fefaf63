//! Starts a node: opens its store, binds its gRPC services, and runs its sync link to the hub.
//! `main` starts nodes through [`run`]; tests that bind their own listener call [`open`] and
//! [`serve`], the two halves of [`run`], so a test runs the real thing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use automerge::ActorId;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tracing::{error, info};

use crate::config::NodeConfig;
use crate::office::Office;
use crate::record::doc;
use crate::replica::{Replica, ReplicaError, SystemClock};
use crate::service::NodeService;
use crate::store::{RocksStore, Store, StoreError};
use crate::sync::client::{self, LinkStatus};
use crate::tls::{TlsError, TlsFiles};

/// The store's meta key holding the node's actor id, which [`Replica::open`] keeps there.
const ACTOR_META_KEY: &str = "actor";

/// Why a node could not start, or stopped serving. Each message is complete on its own: `main`
/// prints it once, without a cause chain.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "data folder {folder} holds the records of organisation {stored}, not {configured}: \
         start it with --org {stored}, or give {configured} a data folder of its own"
    )]
    OtherOrganisation {
        folder: PathBuf,
        stored: String,
        configured: String,
    },
    #[error("node replica: {0}")]
    Replica(#[from] ReplicaError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the address file {path}: {source}")]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error(
        "the node stopped: a write or disk sync of its store failed, and it takes no more writes until it is reopened ({0})"
    )]
    StoreFailed(String),
}

/// Binds `addr` (port 0: any free port) and says which address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Runs the node until `shutdown` resolves: binds `config.listen`, opens its replica and serves
/// there. The address first: a node that cannot serve must not have made (and claimed for its
/// organisation) a data folder.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let (listener, addr) = bind(config.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen,
            source,
        })?;
    let office = open(&config).await?;
    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr).map_err(|source| NodeError::AddrFile {
            path: path.clone(),
            source,
        })?;
    }
    info!(org = %config.org, %addr, data_dir = %config.data_dir.display(), hub = ?config.hub, "node listening");
    serve_with_tls(
        listener,
        office,
        config.hub.clone(),
        config.tls.clone(),
        shutdown,
    )
    .await
}

/// Set to `1` only by the fault harness's negative control: the node opens its store without
/// a write-ahead log ([`RocksStore::open_unsafe_without_wal`]), so a kill -9 loses acknowledged
/// writes and the durability check must notice. Deliberately not a flag or a config key.
pub const UNSAFE_NO_WAL_ENV: &str = "LINKAGE_UNSAFE_NO_WAL";

/// Opens the node's store and replica and the office over them, with the configured period
/// policies.
pub async fn open(config: &NodeConfig) -> Result<Office, NodeError> {
    let data_dir = config.data_dir.clone();
    let unsafe_no_wal = std::env::var(UNSAFE_NO_WAL_ENV).is_ok_and(|v| v == "1");
    if unsafe_no_wal {
        error!(
            env = UNSAFE_NO_WAL_ENV,
            data_dir = %config.data_dir.display(),
            "UNSAFE: store opened without its write-ahead log; acknowledged writes are lost on a crash. This mode exists only for the fault harness's negative control"
        );
    }
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || {
            if unsafe_no_wal {
                RocksStore::open_unsafe_without_wal(&data_dir)
            } else {
                RocksStore::open(&data_dir)
            }
        })
        .await
        .map_err(|_| NodeError::ShuttingDown)??,
    );
    check_folder_org(store.as_ref(), &config.org, &config.data_dir)?;
    let replica = Arc::new(Replica::open(
        &config.org,
        store,
        Arc::new(SystemClock),
        config.cache_docs,
    )?);
    info!(
        district = %config.periods.district,
        organisations_with_their_own = config.periods.organisations.len(),
        "period policies"
    );
    Ok(Office::new(replica, Arc::new(config.directory.clone()))
        .with_period_policies(config.periods.clone()))
}

/// Refuses a data folder another organisation's node wrote. [`Replica::open`] would otherwise
/// take a new actor of `org` and serve the other organisation's records as `org`'s; the actor
/// id it stored names the organisation the folder belongs to.
fn check_folder_org(store: &dyn Store, org: &str, folder: &Path) -> Result<(), NodeError> {
    let Some(bytes) = store.meta(ACTOR_META_KEY)? else {
        return Ok(());
    };
    match doc::org_of_actor(&ActorId::from(bytes.as_slice())) {
        Some(stored) if stored != org => Err(NodeError::OtherOrganisation {
            folder: folder.to_owned(),
            stored,
            configured: org.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Serves `office` on `listener` until `shutdown` resolves, syncing with `hub` if given.
/// Tests bind `127.0.0.1:0` themselves and hand the listener over, so they know the port
/// before the server starts and never wait for it.
pub async fn serve(
    listener: TcpListener,
    office: Office,
    hub: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    serve_with_tls(listener, office, hub, None, shutdown).await
}

/// [`serve`], over mutual TLS when `tls` is given: clients (and the hub link) must present
/// certificates the district CA signed.
pub async fn serve_with_tls(
    listener: TcpListener,
    office: Office,
    hub: Option<String>,
    tls: Option<TlsFiles>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let link = Arc::new(LinkStatus::default());
    let client_tls = tls.as_ref().map(TlsFiles::client_config).transpose()?;
    let sync_task = hub.clone().map(|hub| {
        tokio::spawn(client::run_forever_tls(
            office.replica().clone(),
            hub,
            client_tls,
            link.clone(),
        ))
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.server_config()?)?;
    }

    let (_health_reporter, health, reflection) =
        crate::service::standard_services("linkage.v1.Records").await;
    // A graceful shutdown waits for every open stream; `Watch` streams never end on their own,
    // so they are told to. A failed write or disk sync of the store stops the node too
    // (`Replica::store_failed`).
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (shutdown, store_failed) = or_store_failure(office.replica().clone(), shutdown);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    let service = NodeService::new(office, hub, link, stopping.clone());
    let served = serve_with_grace(
        builder
            .add_service(health)
            .add_service(reflection)
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(incoming(listener), shutdown),
        stopping,
    )
    .await;

    if let Some(task) = sync_task {
        task.abort();
    }
    if let Err(e) = &served {
        error!(error = %e, "gRPC server failed");
    }
    served?;
    if let Some(error) = store_failed.get() {
        return Err(NodeError::StoreFailed(error.clone()));
    }
    info!("node stopped");
    Ok(())
}

/// `shutdown`, or else a failed write or disk sync of `replica`'s store (`Replica::store_failed`):
/// the future resolves with whichever comes first, and the cell then holds the failure if that
/// was it, for the server to return as its error once it has stopped.
pub fn or_store_failure(
    replica: Arc<Replica>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    Arc<std::sync::OnceLock<String>>,
) {
    let store_failed = Arc::new(std::sync::OnceLock::new());
    let failed = store_failed.clone();
    let either = async move {
        tokio::select! {
            () = shutdown => {}
            error = replica.store_failed() => {
                error!(%error, "stopping: a write or disk sync of the store failed");
                let _ = failed.set(error);
            }
        }
    };
    (either, store_failed)
}

/// The connections `listener` accepts, with TCP_NODELAY set as tonic's own `serve` would: a
/// reply goes out in several small writes, and without it Nagle's algorithm holds the last
/// ones until the client's delayed ACK, some 40 ms per call on Linux.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Writes the bound address atomically (write then rename), so a script polling for the file
/// never reads half an address.
pub fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, path)
}

/// Automerge instruments its loading and column parsing with INFO spans whose arguments are
/// formatted on every call: enabled, they were about 5 % of the hub's CPU in sync (`perf`,
/// 2026-12-05). Its warnings still show; naming `automerge` in `RUST_LOG` brings them back.
const QUIET_LIBRARIES: &str = "automerge=warn";

/// The log filter: `RUST_LOG` (default `info`), with [`QUIET_LIBRARIES`] unless it names them.
fn log_filter(rust_log: Option<&str>) -> String {
    let spec = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    if spec.contains("automerge") {
        spec.to_owned()
    } else {
        format!("{spec},{QUIET_LIBRARIES}")
    }
}

/// Logs to stderr in the format the binaries share; `RUST_LOG` sets the level.
pub fn init_tracing() {
    let spec = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("RUST_LOG {spec:?} is not a log filter ({e}); logging at info");
        tracing_subscriber::EnvFilter::new(log_filter(None))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; plain text for journald and log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// How long a graceful stop waits for connections to close once their streams were told to
/// end: a peer that stopped answering (a frozen process, a half-open link) would otherwise hold
/// the server until HTTP/2 keepalive gives up on it, about 25 s.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `served` to its end, or until [`SHUTDOWN_GRACE`] after `stopping` turns true, when the
/// connections still open are dropped.
pub async fn serve_with_grace(
    served: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let overdue = async move {
        if stopping.wait_for(|stop| *stop).await.is_err() {
            // The sender went with the server's shutdown future: `served` is ending anyway.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = served => served,
        () = overdue => {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "connections still open after the stop signal; closing them"
            );
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn automerge_spans_are_quiet_unless_rust_log_names_automerge() {
        assert_eq!(log_filter(None), "info,automerge=warn");
        assert_eq!(log_filter(Some("  ")), "info,automerge=warn");
        assert_eq!(
            log_filter(Some("debug,h2=warn")),
            "debug,h2=warn,automerge=warn"
        );
        assert_eq!(
            log_filter(Some("info,automerge=trace")),
            "info,automerge=trace"
        );
        for spec in [None, Some("debug"), Some("automerge=debug")] {
            let spec = log_filter(spec);
            assert!(
                tracing_subscriber::EnvFilter::try_new(&spec).is_ok(),
                "{spec}"
            );
        }
    }
}
