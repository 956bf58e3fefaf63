//! A record a node is still receiving must read as absent until its changes arrive.
//!
//! The hub's first sync message about a record new to a node carries only heads and a bloom
//! filter, no changes; the changes follow one round trip later. In between, the node must
//! answer a `Get` or an `AppendEvent` on that record with NOT_FOUND, as for any record it does
//! not hold, not with a storage failure. The link-fault tests met this window by chance; here
//! a stand-in hub sends the first message and then holds back, so the window stays open.
//!
//! Everything runs in-process over real gRPC on loopback port 0 with in-memory stores.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{State, SyncDoc};
use futures::Stream;
use linkage_node::office::{Act, Office, OfficeError};
use linkage_node::org::Directory;
use linkage_node::record::doc::{actor_for, new_document};
use linkage_node::record::{
    Action, Body, CaseBody, Envelope, Record, RecordKind, SCHEMA_VERSION, WorkflowEvent,
};
use linkage_node::replica::{Replica, ReplicaError, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_node::sync::PROTOCOL_VERSION;
use linkage_node::sync::client::{LinkStatus, run_forever};
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::sync_server::{Sync, SyncServer};
use linkage_proto::v1::{DocSync, Hello, SyncFrame};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const HAIBIN: &str = "130304100";
const MARKET: &str = "bdh-scjg";

/// A hub that greets the node, sends one prepared frame and then only listens, passing on
/// whatever the node sends.
#[derive(Debug, Clone)]
struct HoldingHub {
    frame: SyncFrame,
    heard: mpsc::Sender<SyncFrame>,
}

type Frames = Pin<Box<dyn Stream<Item = Result<SyncFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Sync for HoldingHub {
    type SessionStream = Frames;

    async fn session(
        &self,
        request: Request<Streaming<SyncFrame>>,
    ) -> Result<Response<Frames>, Status> {
        let mut inbound = request.into_inner();
        inbound.message().await?; // The node's hello.
        let (tx, rx) = mpsc::channel(8);
        let hello = SyncFrame {
            frame: Some(Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                org: String::new(),
                node_id: "holding-hub".into(),
                store_id: "holding-hub".into(),
            })),
        };
        tx.send(Ok(hello)).await.unwrap();
        tx.send(Ok(self.frame.clone())).await.unwrap();
        let heard = self.heard.clone();
        tokio::spawn(async move {
            let _open = tx;
            while let Ok(Some(frame)) = inbound.message().await {
                if heard.send(frame).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A case of the Market Supervision Bureau shared with Haibin Town.
fn market_case() -> (String, automerge::Automerge) {
    let now = 1_790_000_000_000;
    let record = Record {
        envelope: Envelope {
            id: RecordKind::Case.new_record_id(),
            kind: "case".into(),
            owner: MARKET.into(),
            parties: vec![MARKET.into(), HAIBIN.into()],
            created_at_ms: now,
            schema_version: SCHEMA_VERSION,
        },
        body: Body::Case(CaseBody {
            title: "unlicensed food stall".into(),
            ..Default::default()
        }),
        events: vec![WorkflowEvent::new(Action::Opened, now, MARKET)],
    };
    let id = record.envelope.id.clone();
    (id, new_document(&record, actor_for(MARKET), now).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_changes_have_not_arrived_reads_as_not_found() {
    let (id, doc) = market_case();
    let first = doc.generate_sync_message(&mut State::new()).unwrap();
    assert!(
        first.changes.is_empty(),
        "a first message carries no changes"
    );
    let (heard, mut node_said) = mpsc::channel(64);
    let hub = HoldingHub {
        frame: SyncFrame {
            frame: Some(Frame::Doc(DocSync {
                record_id: id.clone(),
                message: first.encode(),
                heads: Vec::new(),
                ..Default::default()
            })),
        },
        heard,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SyncServer::new(hub))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let node = Arc::new(Replica::open(HAIBIN, store, Arc::new(SystemClock), 1024).unwrap());
    tokio::spawn(run_forever(
        node.clone(),
        url,
        Arc::new(LinkStatus::default()),
    ));

    // The node has taken in the first message once it answers it.
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), node_said.recv())
            .await
            .expect("the node never answered the hub's first message")
            .expect("the node hung up");
        if matches!(&frame.frame, Some(Frame::Doc(d)) if d.record_id == id) {
            break;
        }
    }

    assert!(!node.contains(&id).unwrap(), "the node stored nothing yet");
    let office = Office::new(node.clone(), Arc::new(Directory::beidaihe()));
    match office.get(id.clone()).await {
        Err(OfficeError::Replica(ReplicaError::NotFound(_))) => {}
        other => panic!(
            "Get of a record whose changes have not arrived should be NOT_FOUND, got {other:?}"
        ),
    }
    match office
        .append_event(id.clone(), Action::Updated, Act::default())
        .await
    {
        Err(OfficeError::Replica(ReplicaError::NotFound(_))) => {}
        other => panic!(
            "AppendEvent on a record whose changes have not arrived should be NOT_FOUND, got {other:?}"
        ),
    }
}
