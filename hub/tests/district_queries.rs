//! The hub's district-wide queries refuse an organisation its directory does not know, as a
//! node does, instead of answering an empty table that reads like "nothing owed".

use std::sync::Arc;

use linkage_hub::convergence::Registry;
use linkage_hub::service::HubService;
use linkage_node::office::Office;
use linkage_node::org::Directory;
use linkage_node::replica::{Replica, SystemClock};
use linkage_node::store::{MemoryStore, Store};
use linkage_proto::v1::district_server::District;
use linkage_proto::v1::{AccountabilityRequest, ObligationsRequest};
use tonic::{Code, Request};

fn hub() -> HubService {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Replica::open("district-hub", store, Arc::new(SystemClock), 64).unwrap());
    let registry = Arc::new(Registry::load(hub.clone()).unwrap());
    HubService::new(Office::new(hub, Arc::new(Directory::beidaihe())), registry)
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
