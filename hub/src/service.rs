//! The hub's gRPC face: the `Sync` service that nodes hold sessions with, the `District`
//! service for the operator, and the `Feeds` service for department systems.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use linkage_node::office::Office;
use linkage_node::org::Directory;
use linkage_node::service::{bounded, invalid, status_of};
use linkage_node::sync::session::{self, LogWatch, SessionContext};
use linkage_node::sync::{MAX_FRAME_BYTES, PROTOCOL_VERSION};
use linkage_proto::v1 as pb;
use linkage_proto::v1::district_server::{District, DistrictServer};
use linkage_proto::v1::feeds_server::{Feeds, FeedsServer};
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::sync_server::{Sync, SyncServer};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, error, info, info_span, warn};

use crate::convergence::{ForgetError, Registry};
use crate::feed::{self, FeedFilter, FeedLog};
use crate::gate::HubGate;
use crate::incarnation::node_peer_key;

/// A node must say hello this quickly, or the stream is closed.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HubService {
    office: Office,
    directory: Arc<Directory>,
    registry: Arc<Registry>,
    /// Turns true when the server begins a graceful shutdown, which waits for every open
    /// stream: sessions and feeds end on it. `None` for a service no server will stop.
    stopping: Option<watch::Receiver<bool>>,
    /// Refilling from the nodes after losing the store: see [`HubGate::refill`].
    refill: bool,
    /// The change log as feeds name it ([`FeedLog`]); the store's id, never renewed, if unset.
    feed_log: Option<Arc<FeedLog>>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::SyncFrame, Status>> + Send>>;
type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::FeedEvent, Status>> + Send>>;

impl HubService {
    pub fn new(office: Office, registry: Arc<Registry>) -> Self {
        let directory = office.directory().clone();
        HubService {
            office,
            directory,
            registry,
            stopping: None,
            refill: false,
            feed_log: None,
        }
    }

    /// Names the change log in feeds as `log` does, and tells it when a node saw the log
    /// reach further than it does now.
    pub fn with_feed_log(mut self, log: Arc<FeedLog>) -> Self {
        self.feed_log = Some(log);
        self
    }

    fn feed_log_id(&self) -> String {
        match &self.feed_log {
            Some(log) => log.id(),
            None => self.office.replica().store().store_id(),
        }
    }

    /// Admits the changes a node hands over for a record's other parties (see
    /// [`HubGate::refill`]): for a hub refilled from the nodes after losing its store.
    pub fn refilling_from_nodes(mut self, refill: bool) -> Self {
        self.refill = refill;
        self
    }

    /// Ends open sync sessions and feeds once `stopping` turns true.
    pub fn with_stop_signal(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// Resolves once the server is shutting down.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stopping = self.stopping.clone();
        async move {
            match stopping {
                // An error means the sender is gone with the server, which is a stop too.
                Some(mut stopping) => {
                    let _ = stopping.wait_for(|stop| *stop).await;
                }
                None => std::future::pending().await,
            }
        }
    }

    pub fn sync_server(&self) -> SyncServer<Self> {
        SyncServer::new(self.clone())
            .max_decoding_message_size(MAX_FRAME_BYTES)
            .max_encoding_message_size(MAX_FRAME_BYTES)
    }

    pub fn district_server(&self) -> DistrictServer<Self> {
        DistrictServer::new(self.clone())
    }

    pub fn feeds_server(&self) -> FeedsServer<Self> {
        FeedsServer::new(self.clone()).max_encoding_message_size(MAX_FRAME_BYTES)
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<R, linkage_node::replica::ReplicaError> + Send + 'static,
    ) -> Result<R, Status> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|_| Status::unavailable("the hub is shutting down"))?
            .map_err(|e| {
                error!(error = %e, "the hub's store failed");
                Status::internal(format!("hub store failed: {e}"))
            })
    }
}

/// The organisation named by the client's TLS certificate, if it connected over mutual TLS.
fn certified_org<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    match linkage_node::tls::org_of_peer(request) {
        None => Ok(None),
        Some(Ok(org)) => Ok(Some(org)),
        Some(Err(e)) => Err(Status::permission_denied(e.to_string())),
    }
}

/// Checks a node's hello: protocol version and a known organisation.
fn check_hello(directory: &Directory, hello: &pb::Hello) -> Result<(), Status> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "node speaks sync protocol {}, the hub {PROTOCOL_VERSION}",
            hello.protocol_version
        )));
    }
    if directory.org(&hello.org).is_none() {
        return Err(Status::permission_denied(format!(
            "organisation {:?} is not in the district's directory",
            hello.org
        )));
    }
    if hello.node_id.is_empty() || hello.node_id.len() > 128 || hello.store_id.len() > 128 {
        return Err(invalid(
            "node_id must be 1 to 128 bytes and store_id at most 128",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Sync for HubService {
    type SessionStream = FrameStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SyncFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let certified = certified_org(&request)?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(pb::SyncFrame {
                frame: Some(Frame::Hello(hello)),
            }))) => hello,
            Ok(Some(Ok(_))) => {
                return Err(invalid("a sync session starts with hello"));
            }
            Ok(Some(Err(status))) => return Err(status),
            Ok(None) => return Err(Status::cancelled("node closed the stream before hello")),
            Err(_) => return Err(Status::deadline_exceeded("no hello within 10 s")),
        };
        check_hello(&self.directory, &hello)?;
        // Over mutual TLS the certificate says who the node is; the hello must agree. Without
        // TLS (the loopback-only development mode) the hello is all there is.
        if let Some(certified) = certified
            && certified != hello.org
        {
            return Err(Status::permission_denied(format!(
                "the node's certificate was issued to {certified}, but its hello claims {}",
                hello.org
            )));
        }
        let node_id = hello.node_id.clone();
        let org = hello.org.clone();
        let replica = self.office.replica().clone();
        let (id, store_id) = (node_id.clone(), hello.store_id.clone());
        let peer_key = tokio::task::spawn_blocking(move || {
            node_peer_key(replica.store().as_ref(), &id, &store_id)
        })
        .await
        .map_err(|_| Status::unavailable("the hub is shutting down"))?
        .map_err(|e| {
            error!(node = %node_id, org = %org, error = %e, "refused a node: the hub's store failed");
            Status::internal(format!("hub store failed: {e}"))
        })?;

        let registry = self.registry.clone();
        let (id, o) = (node_id.clone(), org.clone());
        let figures = self.blocking(move |r| r.connected(&id, &o)).await?;
        let (outbound, rx) = mpsc::channel::<pb::SyncFrame>(64);
        let hub_hello = pb::SyncFrame {
            frame: Some(Frame::Hello(pb::Hello {
                protocol_version: PROTOCOL_VERSION,
                org: String::new(),
                node_id: self.office.replica().store().store_id(),
                store_id: self.office.replica().store().store_id(),
            })),
        };
        outbound
            .send(hub_hello)
            .await
            .map_err(|_| Status::cancelled("node went away"))?;

        let ctx = SessionContext {
            replica: self.office.replica().clone(),
            peer_key,
            peer_org: org.clone(),
            gate: Arc::new(HubGate {
                org: org.clone(),
                directory: self.directory.clone(),
                refill: self.refill,
            }),
            figures,
            log_watch: self.feed_log.clone().map(|log| log as Arc<dyn LogWatch>),
            offer_summaries: true,
        };
        // On shutdown the node's side of the stream ends as if it had hung up: the session writes
        // what the node confirmed and closes its answer stream, which lets the server stop.
        let inbound = futures::StreamExt::take_until(inbound, Box::pin(self.stopped()));
        let span = info_span!("node_session", org = %org, node = %node_id);
        tokio::spawn(
            async move {
                info!("node connected");
                match session::run(ctx, inbound, outbound).await {
                    Ok(()) | Err(linkage_node::sync::SyncError::Closed) => {
                        info!("node disconnected")
                    }
                    Err(e) => warn!(error = %e, "node session failed"),
                }
                let _ = tokio::task::spawn_blocking(move || registry.disconnected(&node_id)).await;
            }
            .instrument(span),
        );

        let stream = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl District for HubService {
    async fn forget_node(
        &self,
        request: Request<pb::ForgetNodeRequest>,
    ) -> Result<Response<pb::ForgetNodeResponse>, Status> {
        // Over mutual TLS a node's certificate reads the district's figures; retiring a node
        // is the hub operator's, who holds the hub's own certificate.
        if let Some(certified) = certified_org(&request)?
            && certified != crate::server::HUB_ORG
        {
            return Err(Status::permission_denied(format!(
                "only the hub's own certificate may forget a node; the caller's was issued to {certified}"
            )));
        }
        let node_id = request.into_inner().node_id;
        if node_id.trim().is_empty() {
            return Err(invalid(
                "give the id of the node to forget, or a start of it that names one",
            ));
        }
        let registry = self.registry.clone();
        let forgotten = tokio::task::spawn_blocking(move || registry.forget(&node_id))
            .await
            .map_err(|_| Status::unavailable("the hub is shutting down"))?;
        match forgotten {
            Ok((node_id, org)) => {
                info!(node = %node_id, org = %org, "node forgotten by the operator");
                Ok(Response::new(pb::ForgetNodeResponse { node_id, org }))
            }
            // The node id the operator typed is echoed back: bounded like every refusal.
            Err(e @ ForgetError::Unknown(_)) => Err(bounded(Status::not_found(e.to_string()))),
            Err(e @ ForgetError::Ambiguous { .. }) => Err(invalid(e.to_string())),
            Err(e @ ForgetError::Connected(_)) => {
                Err(bounded(Status::failed_precondition(e.to_string())))
            }
            Err(e @ ForgetError::Store(_)) => Err(Status::internal(e.to_string())),
        }
    }

    async fn convergence(
        &self,
        _: Request<pb::ConvergenceRequest>,
    ) -> Result<Response<pb::ConvergenceReport>, Status> {
        self.blocking(|registry| registry.report())
            .await
            .map(Response::new)
    }

    async fn obligations(
        &self,
        request: Request<pb::ObligationsRequest>,
    ) -> Result<Response<pb::ObligationsResponse>, Status> {
        let mut req = request.into_inner();
        if req.org.is_empty() {
            req.org = "all".into();
        }
        linkage_node::service::known_org_or_all(self.office.directory(), &req.org)
            .map_err(status_of)?;
        linkage_node::obligation::answer(&self.office, req)
            .await
            .map(Response::new)
            .map_err(status_of)
    }

    async fn accountability(
        &self,
        request: Request<pb::AccountabilityRequest>,
    ) -> Result<Response<pb::AccountabilityResponse>, Status> {
        let mut req = request.into_inner();
        if req.org.is_empty() {
            req.org = "all".into();
        }
        linkage_node::service::known_org_or_all(self.office.directory(), &req.org)
            .map_err(status_of)?;
        linkage_node::obligation::report(&self.office, req)
            .await
            .map(Response::new)
            .map_err(status_of)
    }

    async fn record_counts(
        &self,
        _: Request<pb::RecordCountsRequest>,
    ) -> Result<Response<pb::RecordCountsResponse>, Status> {
        let summaries = self.blocking(|registry| registry.summaries()).await?;
        let mut counts = std::collections::BTreeMap::<(String, String), u64>::new();
        for s in summaries {
            *counts.entry((s.owner, s.kind)).or_default() += 1;
        }
        let counts = counts
            .into_iter()
            .map(|((org, kind), count)| pb::RecordCount { org, kind, count })
            .collect();
        Ok(Response::new(pb::RecordCountsResponse { counts }))
    }
}

#[tonic::async_trait]
impl Feeds for HubService {
    type SubscribeStream = FeedStream;

    async fn subscribe(
        &self,
        request: Request<pb::FeedRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let certified = certified_org(&request)?;
        let req = request.into_inner();
        if let Some(certified) = certified
            && certified != req.org
        {
            return Err(Status::permission_denied(format!(
                "the caller's certificate was issued to {certified}; it may read only its own feed, not {}'s",
                req.org
            )));
        }
        let filter = FeedFilter::from_request(&self.directory, &req)?;
        let end = self.office.replica().store().last_seq();
        let log_id = self.feed_log_id();
        // Positions in a rebuilt hub's log name other records than they did: a department
        // resuming from its old token would skip, without a word, every record that came back
        // below it. Checked first: past the end or not, a token of another log is refused as
        // such, so the department learns to start over rather than to wait.
        // Position 0, the start, is the same in every log.
        if req.resume_token > 0 && !req.log_id.is_empty() && req.log_id != log_id {
            return Err(bounded(Status::out_of_range(format!(
                "token {} is a position in change log {}, but this hub's log is {log_id} (its store was rebuilt or replaced since); resume from 0 to receive every record again",
                req.resume_token, req.log_id
            ))));
        }
        // A token past the log's end is from another hub or a store restored from an older
        // backup: the records it would skip are never sent, so it is refused, as a node's
        // watch refuses such a position, rather than answered with an empty feed.
        // Not taken as a sign that the log went back (only a node's report is, `FeedLog`):
        // anyone may write a large number into a token file.
        if req.resume_token > end {
            return Err(Status::out_of_range(format!(
                "token {} is past the end of the hub's change log ({end}); resume from a token this hub sent, or from 0",
                req.resume_token
            )));
        }
        let (tx, rx) = mpsc::channel(64);
        let farewell = tx.clone();
        let feed = feed::run(
            self.office.clone(),
            self.directory.clone(),
            filter,
            req.resume_token,
            log_id,
            tx,
        );
        // A feed only reads, so it may be dropped anywhere; dropping its senders ends the
        // stream, after a last word so the caller resumes from its token rather than taking
        // the end for being caught up (not waited for: the hub is stopping).
        let stopped = self.stopped();
        tokio::spawn(async move {
            tokio::select! {
                () = feed => {}
                () = stopped => {
                    let _ = farewell.try_send(Err(Status::unavailable(
                        "the hub is shutting down; subscribe again from the last token received",
                    )));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
