//! Department feeds: a read-only changes feed of the records an organisation is entitled to,
//! filtered by kind and S-1 category, resumable from a token the caller saved.
//!
//! A token is a position in the hub's change log, which keeps one entry per record at its
//! latest change; a feed from token `t` delivers every entitled record whose latest change is
//! after `t`, once, in log order. Each event names the log (the hub store's id) its token is a
//! position in, and a request naming another log is refused: a rebuilt hub's positions name
//! other records. The complainant's identity (C-5) is masked for every reader
//! that is not handling the complaint.

use std::sync::Arc;

use linkage_node::office::{Office, RecordView};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind};
use linkage_node::replica::Summary;
use linkage_node::service::record_to_pb;
use linkage_node::store::{Store, StoreError};
use linkage_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, instrument};

use crate::gate::may_read;

/// Change-log entries read per step.
const FEED_BATCH: usize = 256;

/// A checked feed request.
#[derive(Debug, Clone)]
pub struct FeedFilter {
    pub org: String,
    pub kinds: Vec<RecordKind>,
    pub categories: Vec<u32>,
    pub follow: bool,
}

impl FeedFilter {
    pub fn from_request(directory: &Directory, req: &pb::FeedRequest) -> Result<Self, Status> {
        if directory.org(&req.org).is_none() {
            return Err(Status::invalid_argument(format!(
                "feed organisation {:?} is not in the directory",
                req.org
            )));
        }
        let kinds = req
            .kinds
            .iter()
            .map(|k| {
                k.parse::<RecordKind>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(bad) = req.categories.iter().find(|c| !(1..=8).contains(*c)) {
            return Err(Status::invalid_argument(format!(
                "S-1 categories are 1 to 8, got {bad}"
            )));
        }
        Ok(FeedFilter {
            org: req.org.clone(),
            kinds,
            categories: req.categories.clone(),
            follow: !req.catch_up_only,
        })
    }

    fn wants(&self, directory: &Directory, summary: &Summary) -> bool {
        if !may_read(directory, &self.org, summary) {
            return false;
        }
        let Some(kind) = summary.record_kind() else {
            return false;
        };
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return false;
        }
        self.categories.is_empty()
            || (kind == RecordKind::SharedInfo && self.categories.contains(&summary.category))
    }
}

/// C-5: only the units handling a complaint see who complained.
pub fn mask_for(view: &mut RecordView, reader: &str) {
    if let Body::Complaint(complaint) = &mut view.record.body {
        let handling = reader == complaint.received_by || reader == complaint.handler;
        if !handling && complaint.complainant.is_some() {
            complaint.complainant = None;
            view.field_conflicts
                .retain(|c| !c.path.starts_with("body.complainant"));
        }
    }
}

/// Meta key of the feed log's id, once the hub has been refilled from the nodes.
const FEED_LOG_KEY: &str = "feed-log-id";

/// The id of the hub's change log as feeds name it (`FeedEvent.log_id`): the store's id, or a
/// new one each time the hub starts refilling from the nodes.
///
/// A hub restored from an older copy keeps its store id, but its log is shorter than the one
/// departments read, and the records that come back land at positions they already passed: a
/// saved token would skip them. Starting to refill (`--refill-from-nodes`, as the README asks
/// after a restore) starts a new log as far as feeds are concerned, so old tokens are refused
/// and departments start over.
pub fn log_id(store: &dyn Store, refilling: bool) -> Result<String, StoreError> {
    if refilling {
        let id = uuid::Uuid::new_v4().to_string();
        store.put_meta(FEED_LOG_KEY, id.as_bytes())?;
        return Ok(id);
    }
    Ok(match store.meta(FEED_LOG_KEY)? {
        Some(id) => String::from_utf8_lossy(&id).into_owned(),
        None => store.store_id(),
    })
}

/// Streams feed events into `tx` from `token` on, until caught up (or forever when following)
/// or until the receiver goes away; each event names `log_id`.
#[instrument(skip_all, fields(org = %filter.org, token))]
pub async fn run(
    office: Office,
    directory: Arc<Directory>,
    filter: FeedFilter,
    mut token: u64,
    log_id: String,
    tx: mpsc::Sender<Result<pb::FeedEvent, Status>>,
) {
    let mut changes = office.replica().subscribe();
    loop {
        let replica = office.replica().clone();
        let after = token;
        let entries = match tokio::task::spawn_blocking(move || {
            replica.store().changed_since(after, FEED_BATCH)
        })
        .await
        {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                let _ = tx
                    .send(Err(Status::internal(format!("hub store failed: {e}"))))
                    .await;
                return;
            }
            Err(_) => return,
        };

        if entries.is_empty() {
            if !filter.follow || changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        for entry in entries {
            token = entry.seq;
            let replica = office.replica().clone();
            let doc = entry.doc.clone();
            let Ok(Ok(Some(summary))) =
                tokio::task::spawn_blocking(move || replica.summary(&doc)).await
            else {
                continue;
            };
            if !filter.wants(&directory, &summary) {
                continue;
            }
            let Ok(mut view) = office.get(entry.doc.clone()).await else {
                continue;
            };
            mask_for(&mut view, &filter.org);
            debug!(record = %entry.doc, token, "feed delivery");
            if tx
                .send(Ok(pb::FeedEvent {
                    token,
                    record: Some(record_to_pb(&view)),
                    log_id: log_id.clone(),
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use linkage_node::store::MemoryStore;

    use super::*;

    #[test]
    fn the_feed_log_is_the_stores_until_a_refill_starts_a_new_one() {
        let store = MemoryStore::new();
        assert_eq!(log_id(&store, false).unwrap(), store.store_id());
        let refilled = log_id(&store, true).unwrap();
        assert_ne!(refilled, store.store_id());
        assert_eq!(
            log_id(&store, false).unwrap(),
            refilled,
            "kept after the refill"
        );
        assert_ne!(
            log_id(&store, true).unwrap(),
            refilled,
            "each refill starts anew"
        );
    }
}
