//! The hub's district-wide queries refuse an organisation its directory does not know, as a
//! node does, instead of answering an empty table that reads like "nothing owed"; a feed
//! refuses a resume token the hub never gave out instead of answering an empty feed.

use std::sync::Arc;

use linkage_hub::convergence::Registry;
use linkage_hub::service::HubService;
use linkage_node::office::Office;
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind};
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_proto::v1::district_server::District;
use linkage_proto::v1::feeds_server::Feeds;
use linkage_proto::v1::{AccountabilityRequest, FeedRequest, ObligationsRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn hub() -> HubService {
    hub_over("district-hub").0
}

/// A hub serving the store of a replica of `org`, and an office writing to that store.
fn hub_over(org: &str) -> (HubService, Office) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Replica::open(org, store, Arc::new(SystemClock), 64).unwrap());
    let registry = Arc::new(Registry::load(hub.clone()).unwrap());
    let office = Office::new(hub, Arc::new(Directory::beidaihe()));
    (HubService::new(office.clone(), registry), office)
}

#[tokio::test]
async fn district_obligations_and_report_refuse_an_unknown_organisation() {
    let hub = hub();
    let refused = hub
        .obligations(Request::new(ObligationsRequest {
            org: "nope".into(),
            ..Default::default()
        }))
        .await
        .expect_err("an unknown organisation is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("nope"), "{}", refused.message());

    let refused = hub
        .accountability(Request::new(AccountabilityRequest {
            org: "nope".into(),
            ..Default::default()
        }))
        .await
        .expect_err("an unknown organisation is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);

    for org in ["all", "", "130304100"] {
        hub.obligations(Request::new(ObligationsRequest {
            org: org.into(),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("org {org:?} is answered: {e}"));
    }
}

/// Opens one case shared with the Market Supervision Bureau, whose feed the tests read. Records
/// reach a hub's store by sync; written here by an office over the same store.
async fn one_case_for_the_market(office: &Office) {
    let body = Body::from_json(RecordKind::Case, r#"{"title": "feed"}"#).unwrap();
    office
        .create(
            RecordKind::Case,
            vec!["bdh-scjg".into()],
            body,
            Default::default(),
        )
        .await
        .unwrap();
}

/// A department system resuming from a token the hub never gave out (another hub's, or one
/// saved before the hub's store was restored from an older backup) would skip every record
/// between; the feed says so instead of answering nothing. The last token given out, and 0,
/// are still answered.
#[tokio::test]
async fn a_feed_from_a_token_past_the_hub_log_is_refused() {
    let (hub, office) = hub_over("130304100");
    one_case_for_the_market(&office).await;
    let request = |token: u64| {
        Request::new(FeedRequest {
            org: "bdh-scjg".into(),
            resume_token: token,
            catch_up_only: true,
            ..Default::default()
        })
    };

    let Err(refused) = hub.subscribe(request(2)).await else {
        panic!("a token past the log's end was answered");
    };
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(
        refused.message().contains("token 2"),
        "{}",
        refused.message()
    );

    let events: Vec<_> = hub
        .subscribe(request(0))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let last = events[0].as_ref().unwrap().token;
    let after: Vec<_> = hub
        .subscribe(request(last))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(after.is_empty(), "nothing after the last token: {after:?}");
}

/// Each event names the hub log its token is a position in; resuming with that log is
/// answered, and with another log's name (a department's token from before the hub's store was
/// rebuilt, whose positions now name other records) refused, naming both logs.
#[tokio::test]
async fn a_feed_resumed_with_another_logs_token_is_refused() {
    let (hub, office) = hub_over("130304100");
    one_case_for_the_market(&office).await;
    let request = |token: u64, log_id: &str| {
        Request::new(FeedRequest {
            org: "bdh-scjg".into(),
            resume_token: token,
            catch_up_only: true,
            log_id: log_id.into(),
            ..Default::default()
        })
    };

    let events: Vec<_> = hub
        .subscribe(request(0, ""))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    let event = events[0].as_ref().unwrap();
    let log_id = office.replica().store().store_id();
    assert_eq!(event.log_id, log_id);

    let resumed: Vec<_> = hub
        .subscribe(request(0, &log_id))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(resumed.len(), 1, "{resumed:?}");

    let Err(refused) = hub.subscribe(request(1, "a-rebuilt-hubs-log")).await else {
        panic!("a token of another log was answered");
    };
    // As a token past the log's end: the caller's position is not one in this log.
    assert_eq!(refused.code(), Code::OutOfRange);
    for named in ["a-rebuilt-hubs-log", log_id.as_str(), "resume from 0"] {
        assert!(refused.message().contains(named), "{}", refused.message());
    }

    // The start is the same in every log: a saved "0 <other log>" starts over.
    let from_start: Vec<_> = hub
        .subscribe(request(0, "a-rebuilt-hubs-log"))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(from_start.len(), 1, "{from_start:?}");
}

/// A report whose period ends before it starts is refused with the two instants written as
/// staff write them, not as Unix milliseconds.
#[tokio::test]
async fn a_report_period_ending_before_it_starts_names_both_instants() {
    let hub = hub();
    let at = |text: &str| {
        linkage_node::calendar::parse_instant(text)
            .unwrap()
            .timestamp_millis()
    };
    let refused = hub
        .accountability(Request::new(AccountabilityRequest {
            org: "130304100".into(),
            from_ms: at("2026-10-12 00:00"),
            to_ms: at("2026-09-29 00:00"),
            ..Default::default()
        }))
        .await
        .expect_err("a reversed period is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("2026-10-11 24:00 +08:00")
            && refused.message().contains("2026-09-28 24:00 +08:00"),
        "{}",
        refused.message()
    );
}
