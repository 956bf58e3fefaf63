//! A node under test: real RocksDB in a temporary folder, the real gRPC server on a loopback
//! listener the test bound itself, and a client to it. Also the scenario's organisations, the
//! bodies the tests start from, and the assertions that a refused request names its rule and
//! changed nothing stored.

use std::future::Future;
use std::net::SocketAddr;

use linkage_node::config::NodeConfig;
use linkage_node::office::Office;
use linkage_node::org::Directory;
use linkage_node::replica::ReplicaError;
use linkage_node::server;
use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

// Organisations of `node/data/beidaihe-orgs.toml` that the scenario names.
pub const HAIBIN: &str = "130304100";
pub const HAIBIN_TEAM: &str = "130304100-zhzfd";
pub const DAIHE: &str = "130304101";
pub const DONGSHAN: &str = "130304002";
pub const NIUTOUYA: &str = "130304103";
pub const MARKET: &str = "bdh-scjg";
pub const URBAN: &str = "bdh-cgzf";
pub const URBAN_SQUAD: &str = "bdh-cgzf-1zd";
pub const ECOLOGY: &str = "bdh-sthj";
pub const EMERGENCY: &str = "bdh-yjgl";
pub const JUSTICE: &str = "bdh-sfj";
pub const GOVERNMENT: &str = "bdh-gov";

/// Unix milliseconds of a Beijing wall-clock time such as "2026-09-28 10:20".
pub fn bj(text: &str) -> i64 {
    linkage_node::calendar::parse_instant(text)
        .unwrap_or_else(|e| panic!("{text:?} is not an instant: {e}"))
        .timestamp_millis()
}

/// One office's node, served in-process. Dropping it stops the server with the test's runtime.
#[derive(Debug)]
pub struct TestNode {
    pub org: String,
    /// The node's own office, for tests that play the hub between two nodes.
    pub office: Office,
    client: RecordsClient<Channel>,
    _stop: oneshot::Sender<()>,
    _dir: TempDir,
}

impl TestNode {
    pub async fn start(org: &str) -> TestNode {
        let dir = TempDir::new().expect("a temporary folder");
        let config = NodeConfig {
            org: org.to_owned(),
            data_dir: dir.path().join("store"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub: None,
            directory: Directory::beidaihe(),
            addr_file: None,
            cache_docs: 64,
            tls: None,
            periods: Default::default(),
        };
        let office = server::open(&config)
            .await
            .expect("the node opens its store");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, office.clone(), None, async move {
            let _ = stopped.await;
        }));
        // The listener is bound already, so the connection is queued until the server accepts:
        // nothing to wait for.
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a valid URL")
            .connect()
            .await
            .expect("the node accepts connections");
        TestNode {
            org: org.to_owned(),
            office,
            client: RecordsClient::new(channel),
            _stop: stop,
            _dir: dir,
        }
    }

    pub fn client(&self) -> RecordsClient<Channel> {
        self.client.clone()
    }

    pub async fn try_create(&self, request: pb::CreateRecordRequest) -> Result<pb::Record, Status> {
        self.client()
            .create(request)
            .await
            .map(Response::into_inner)
    }

    pub async fn create(&self, request: pb::CreateRecordRequest) -> pb::Record {
        let kind = request.kind.clone();
        self.try_create(request)
            .await
            .unwrap_or_else(|s| panic!("{} could not create a {kind}: {s:?}", self.org))
    }

    pub async fn try_append(&self, request: pb::AppendEventRequest) -> Result<pb::Record, Status> {
        self.client()
            .append_event(request)
            .await
            .map(Response::into_inner)
    }

    pub async fn append(&self, request: pb::AppendEventRequest) -> pb::Record {
        let action = request.action.clone();
        self.try_append(request)
            .await
            .unwrap_or_else(|s| panic!("{} could not record {action}: {s:?}", self.org))
    }

    pub async fn get(&self, id: &str) -> pb::Record {
        self.client()
            .get(pb::GetRecordRequest { id: id.into() })
            .await
            .unwrap_or_else(|s| panic!("{} could not get {id}: {s:?}", self.org))
            .into_inner()
    }

    pub async fn list(&self, request: pb::ListRecordsRequest) -> Vec<pb::RecordSummary> {
        self.client()
            .list(request)
            .await
            .expect("list answers")
            .into_inner()
            .records
    }

    pub async fn history(&self, id: &str) -> Vec<pb::HistoryEntry> {
        self.client()
            .history(pb::HistoryRequest { id: id.into() })
            .await
            .expect("history answers")
            .into_inner()
            .entries
    }

    pub async fn last_seq(&self) -> u64 {
        self.client()
            .node_info(pb::NodeInfoRequest {})
            .await
            .expect("node info answers")
            .into_inner()
            .last_seq
    }

    /// What the node shows of its store: the change log's head and every record's summary.
    async fn stored(&self) -> (u64, Vec<pb::RecordSummary>) {
        (
            self.last_seq().await,
            self.list(pb::ListRecordsRequest::default()).await,
        )
    }

    /// Sends a request that must fail with `code`, and checks that nothing was stored.
    pub async fn refused<T, F, Fut>(&self, code: Code, call: F) -> Status
    where
        T: std::fmt::Debug,
        F: FnOnce(RecordsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let before = self.stored().await;
        let status = match call(self.client()).await {
            Ok(answer) => panic!("expected {code:?}, but the node answered {answer:?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "wrong code: {status:?}");
        assert!(
            !status.message().trim().is_empty(),
            "a refusal says why: {status:?}"
        );
        assert_eq!(
            self.stored().await,
            before,
            "a refused request changed what {} stores",
            self.org
        );
        status
    }

    /// Expects a refusal by `rule` (message "RULE: ..."), with nothing stored: INVALID_ARGUMENT
    /// for the rules about the request's shape and names (`schema`, `directory`),
    /// FAILED_PRECONDITION for the cooperation rules.
    pub async fn refused_by<T, F, Fut>(&self, rule: &str, call: F) -> String
    where
        T: std::fmt::Debug,
        F: FnOnce(RecordsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let code = match rule {
            "schema" | "directory" => Code::InvalidArgument,
            _ => Code::FailedPrecondition,
        };
        let status = self.refused(code, call).await;
        assert!(
            status.message().starts_with(&format!("{rule}: ")),
            "the refusal should name rule {rule}: {:?}",
            status.message()
        );
        status.message().to_owned()
    }

    /// Expects a create refused by `rule`.
    pub async fn create_refused_by(&self, rule: &str, request: pb::CreateRecordRequest) -> String {
        self.refused_by(rule, |mut c| async move { c.create(request).await })
            .await
    }

    /// Expects an event refused by `rule`.
    pub async fn append_refused_by(&self, rule: &str, request: pb::AppendEventRequest) -> String {
        self.refused_by(rule, |mut c| async move { c.append_event(request).await })
            .await
    }

    /// Expects a malformed request refused with INVALID_ARGUMENT naming `what`.
    pub async fn invalid<T, F, Fut>(&self, what: &str, call: F) -> String
    where
        T: std::fmt::Debug,
        F: FnOnce(RecordsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let status = self.refused(Code::InvalidArgument, call).await;
        assert!(
            status.message().contains(what),
            "the error should name {what:?}: {:?}",
            status.message()
        );
        status.message().to_owned()
    }
}

/// Stands in for the hub: hands every change `from` holds of record `id` to `to`, as sync does
/// once the hub has admitted them. The receiving replica stores them durably like any change.
pub fn deliver(from: &TestNode, to: &TestNode, id: &str) {
    let bytes = from
        .office
        .replica()
        .read(id, |doc| doc.save())
        .expect("the sender's store reads")
        .unwrap_or_else(|| panic!("{} does not hold {id}", from.org));
    to.office
        .replica()
        .change(id, true, |doc| {
            doc.load_incremental(&bytes)
                .map(drop)
                .map_err(|e| ReplicaError::Corrupt {
                    id: id.to_owned(),
                    detail: e.to_string(),
                })
        })
        .unwrap_or_else(|e| panic!("{} could not take {id}: {e}", to.org));
}

/// A create request for `kind` with `body`, stated to have happened at Beijing time `at`.
pub fn create(kind: &str, body: Value, at: &str) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        kind: kind.into(),
        body_json: body.to_string(),
        at_ms: Some(bj(at)),
        person: "测试 tester".into(),
        ..Default::default()
    }
}

/// An event request: `action` on record `id` at Beijing time `at`.
pub fn event(id: &str, action: &str, at: &str) -> pb::AppendEventRequest {
    pb::AppendEventRequest {
        id: id.into(),
        action: action.into(),
        at_ms: Some(bj(at)),
        person: "测试 tester".into(),
        ..Default::default()
    }
}

/// Event 1's transfer: Haibin Town to market supervision, with letter, inspection record and
/// two photos (T-3).
pub fn transfer_body(sender: &str, receiver: &str) -> Value {
    json!({
        "sender": sender,
        "receiver": receiver,
        "title": "销售过期食品 stall selling food past its use-by date",
        "matter": "food safety",
        "place": "海滨镇 market street stall",
        "facts": "On inspection the stall offered packaged food past its use-by date.",
        "discovered_at_ms": bj("2026-09-28 10:20"),
        "materials": [
            {"kind": "transfer_letter", "name": "移送函 transfer letter.pdf"},
            {"kind": "case_source", "name": "现场检查笔录 on-site inspection record.pdf"},
            {"kind": "evidence", "name": "photo-1.jpg"},
            {"kind": "evidence", "name": "photo-2.jpg"},
        ],
    })
}

/// Event 2's complaint: received by `received_by`, handled by the township `handler` (C-3).
pub fn complaint_body(received_by: &str, handler: &str) -> Value {
    json!({
        "received_by": received_by,
        "handler": handler,
        "channel": "phone",
        "subject": "占道经营 shop occupying the pavement",
        "place": "戴河镇 main road",
        "received_at_ms": bj("2026-09-28 15:00"),
        "written_material": false,
        "complainant": {"name": "王某 Wang", "phone": "13800000000"},
    })
}

pub fn case_body() -> Value {
    json!({
        "title": "无证经营 unlicensed business",
        "matter": "business licensing",
        "place": "西山 beach road",
        "offender": "a kiosk",
        "found_at_ms": bj("2026-09-28 09:00"),
        "facts": "Trading without a licence.",
    })
}

pub fn shared_info_body(category: u32) -> Value {
    json!({
        "category": category,
        "title": "行政处罚决定 penalty decision",
        "content": "Decision No. 12 and its execution.",
        "formed_at_ms": bj("2026-09-30 14:00"),
    })
}

pub fn urgent_notice_body(sender: &str, receiver: &str) -> Value {
    json!({
        "sender": sender,
        "receiver": receiver,
        "hazard": "液化气钢瓶 gas cylinders stored in a restaurant basement",
        "place": "牛头崖镇 restaurant",
        "found_at_ms": bj("2026-09-29 09:00"),
    })
}

pub fn consultation_body(convener: &str, meeting_kind: &str) -> Value {
    json!({
        "convener": convener,
        "topic": "节日期间联合执法 joint enforcement over the holiday",
        "meeting_kind": meeting_kind,
        "scheduled_at_ms": bj("2026-09-25 09:00"),
    })
}

pub fn assistance_body(requester: &str, provider: &str) -> Value {
    json!({
        "requester": requester,
        "provider": provider,
        "assistance_kind": "technical_support",
        "matter": "噪声检测 noise measurement",
        "requested_at_ms": bj("2026-09-29 14:30"),
    })
}

pub fn dispute_body(applicant: &str, respondent: &str) -> Value {
    json!({
        "applicant": applicant,
        "respondent": respondent,
        "subject": "duties",
        "grounds": "Whether unauthorised construction was devolved.",
    })
}

pub fn liaison_body(org: &str) -> Value {
    json!({
        "org": org,
        "liaisons": [{"name": "李某 Li", "role": "联络员 liaison", "phone": "0335-0000000"}],
    })
}

pub fn calendar_body(year: i32) -> Value {
    json!({
        "year": year,
        "off_days": ["2027-01-01"],
        "make_up_days": [],
        "source": "国务院办公厅通知 State Council notice",
    })
}

/// Every kind, with an organisation that may create it and a body it may create.
pub fn one_of_each_kind() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("case", HAIBIN, case_body()),
        ("transfer", HAIBIN, transfer_body(HAIBIN, MARKET)),
        ("complaint", MARKET, complaint_body(MARKET, DAIHE)),
        ("shared_info", DONGSHAN, shared_info_body(3)),
        (
            "urgent_notice",
            NIUTOUYA,
            urgent_notice_body(NIUTOUYA, EMERGENCY),
        ),
        ("consultation", DAIHE, consultation_body(DAIHE, "special")),
        ("assistance", DAIHE, assistance_body(DAIHE, ECOLOGY)),
        ("dispute", DONGSHAN, dispute_body(DONGSHAN, URBAN)),
        ("liaison_directory", URBAN, liaison_body(URBAN)),
        ("calendar", JUSTICE, calendar_body(2027)),
    ]
}
