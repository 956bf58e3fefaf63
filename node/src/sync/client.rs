//! The node's side of the sync link: connects to the hub, says hello, runs a session, and when
//! the link drops tries again with exponential backoff and jitter, forever. The node keeps
//! working offline meanwhile; everything it records waits in its change log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use linkage_proto::v1::sync_client::SyncClient;
use linkage_proto::v1::{Hello, SyncFrame, sync_frame::Frame};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::ClientTlsConfig;
use tracing::{info, instrument, warn};

use super::session::{self, FiguresHandle, SessionContext, TrustHub};
use super::{MAX_FRAME_BYTES, PROTOCOL_VERSION, SyncError};
use crate::replica::Replica;

/// The key under which a node keeps its hub's cursor and sync states.
pub const HUB_PEER: &str = "hub";
const HUB_STORE_ID_KEY: &str = "peer-store-id/hub";

/// First retry after this; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// A node offline for a day retries at most this often: cheap for the hub, and quick enough
/// that a returning link is used within half a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// A session that lasted this long counts as healthy and resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// What the node shows about its hub link.
#[derive(Debug, Default)]
pub struct LinkStatus {
    pub connected: AtomicBool,
    pub figures: FiguresHandle,
}

/// Runs the node's sync link to `hub` (an `http://host:port` URL) until the task is dropped.
pub async fn run_forever(replica: Arc<Replica>, hub: String, status: Arc<LinkStatus>) {
    run_forever_tls(replica, hub, None, status).await;
}

/// [`run_forever`] over mutual TLS when `tls` is given (the hub URL is then `https://`).
#[instrument(skip_all, fields(org = %replica.org(), hub = %hub))]
pub async fn run_forever_tls(
    replica: Arc<Replica>,
    hub: String,
    tls: Option<ClientTlsConfig>,
    status: Arc<LinkStatus>,
) {
    let mut failures: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let result = connect_once(&replica, &hub, tls.clone(), &status).await;
        status.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => info!("hub closed the session"),
            Err(e) => warn!(error = %e, "sync session ended"),
        }
        if started.elapsed() >= HEALTHY_SESSION {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Exponential backoff with full jitter in [50%, 150%], so that nodes cut off together do not
/// reconnect together.
fn backoff(failures: u32) -> Duration {
    let exp = MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.5..1.5);
    exp.mul_f64(jitter)
}

async fn connect_once(
    replica: &Arc<Replica>,
    hub: &str,
    tls: Option<ClientTlsConfig>,
    status: &Arc<LinkStatus>,
) -> Result<(), SyncError> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(hub.to_owned())
        .map_err(|e| SyncError::Transport(format!("bad hub address {hub:?}: {e}")))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| SyncError::Transport(format!("TLS settings for {hub}: {e}")))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(20)))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| SyncError::Transport(e.to_string()))?;
    let mut client = SyncClient::new(channel)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);

    let (outbound, rx) = mpsc::channel::<SyncFrame>(64);
    let store_id = replica.store().store_id();
    outbound
        .send(SyncFrame {
            frame: Some(Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                org: replica.org().to_owned(),
                node_id: store_id.clone(),
                store_id,
            })),
        })
        .await
        .map_err(|_| SyncError::Closed)?;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();

    let hello = match inbound.next().await {
        Some(Ok(SyncFrame {
            frame: Some(Frame::Hello(hello)),
        })) => hello,
        Some(Ok(_)) => return Err(SyncError::Protocol("hub did not start with hello".into())),
        Some(Err(status)) => return Err(status.into()),
        None => return Err(SyncError::Closed),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(SyncError::Protocol(format!(
            "hub speaks protocol {}, this node {PROTOCOL_VERSION}",
            hello.protocol_version
        )));
    }
    forget_if_recreated(replica, &hello.store_id).await?;
    status.connected.store(true, Ordering::Relaxed);
    info!("connected to hub");

    let ctx = SessionContext {
        replica: replica.clone(),
        peer_key: HUB_PEER.to_owned(),
        peer_org: "hub".to_owned(),
        gate: Arc::new(TrustHub),
        figures: status.figures.clone(),
        log_watch: None,
        offer_summaries: false,
    };
    session::run(ctx, inbound, outbound).await
}

/// A hub whose store id changed lost (or replaced) its data: whatever this node believed the
/// hub holds is void, so the cursor and sync states start over and everything is offered again.
async fn forget_if_recreated(replica: &Arc<Replica>, hub_store_id: &str) -> Result<(), SyncError> {
    let replica = replica.clone();
    let hub_store_id = hub_store_id.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(), SyncError> {
        let store = replica.store();
        let known = store.meta(HUB_STORE_ID_KEY)?;
        if known.as_deref() != Some(hub_store_id.as_bytes()) {
            if known.is_some() {
                warn!("hub's store was recreated; offering every record again");
            }
            store.forget_peer(HUB_PEER)?;
            store.put_meta(HUB_STORE_ID_KEY, hub_store_id.as_bytes())?;
        }
        Ok(())
    })
    .await
    .map_err(|e| SyncError::Protocol(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps_with_jitter() {
        let first = backoff(1);
        assert!(
            first >= MIN_BACKOFF && first <= MIN_BACKOFF * 3,
            "{first:?}"
        );
        for failures in [10, 20, 1000] {
            let wait = backoff(failures);
            assert!(wait <= MAX_BACKOFF.mul_f64(1.5), "{wait:?}");
            assert!(wait >= MAX_BACKOFF.mul_f64(0.5), "{wait:?}");
        }
    }
}
