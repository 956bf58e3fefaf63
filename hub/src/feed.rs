//! Department feeds: a read-only changes feed of the records an organisation is entitled to,
//! filtered by kind and S-1 category, resumable from a token the caller saved.
//!
//! A token is a position in the hub's change log, which keeps one entry per record at its
//! latest change; a feed from token `t` delivers every entitled record whose latest change is
//! after `t`, once, in log order. Each event names the log (the hub store's id) its token is a
//! position in, and a request naming another log is refused: a rebuilt hub's positions name
//! other records. The complainant's identity (C-5) is masked for every reader
//! that is not handling the complaint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use linkage_node::office::{Office, RecordView};
use linkage_node::org::Directory;
use linkage_node::record::{Body, RecordKind};
use linkage_node::replica::Summary;
use linkage_node::service::record_to_pb;
use linkage_node::store::{Seq, Store, StoreError};
use linkage_node::sync::session::LogWatch;
use linkage_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, error, instrument, warn};

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

/// Meta key of the feed log's id, once the hub has started a new one.
const FEED_LOG_KEY: &str = "feed-log-id";
/// Meta key of the ids of the logs the hub replaced, one per line, oldest first.
const REPLACED_LOGS_KEY: &str = "feed-logs-replaced";

/// The hub's change log as feeds name it (`FeedEvent.log_id`): the store's id, until the hub
/// starts a new log for the feeds.
///
/// A hub restored from an older copy keeps its store id, but its log is shorter than the one
/// departments read, and the records that come back land at positions they already passed: a
/// saved token would skip them. So a new log starts, once per run, when the hub starts
/// refilling from the nodes (`--refill-from-nodes`, as the README asks after a restore), or
/// when a node says it saw the log reach further than it does ([`LogWatch`]). Old tokens are
/// then refused and departments start over. A department's token past the end is refused
/// but proves nothing: anyone can write a large number into a token file.
#[derive(Debug)]
pub struct FeedLog {
    store: Arc<dyn Store>,
    id: RwLock<String>,
    /// The logs this hub replaced: a node that saw one of them reach further than the current
    /// log (offline while the hub renewed, back after a restart) brings old news.
    replaced: RwLock<Vec<String>>,
    /// Whether this run has started a new log: one is enough, and the nodes that saw the old
    /// log's end go on saying so until the log grows past it.
    renewed: AtomicBool,
}

impl FeedLog {
    /// The feed log of `store`; a new one if `refilling`. Blocking: reads (and then writes)
    /// the store.
    pub fn open(store: Arc<dyn Store>, refilling: bool) -> Result<Self, StoreError> {
        let id = match store.meta(FEED_LOG_KEY)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => store.store_id(),
        };
        let replaced = store
            .meta(REPLACED_LOGS_KEY)?
            .map(|ids| {
                String::from_utf8_lossy(&ids)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let log = FeedLog {
            store,
            id: RwLock::new(id),
            replaced: RwLock::new(replaced),
            renewed: AtomicBool::new(false),
        };
        if refilling {
            log.renew()?;
            warn!(
                log_id = %log.id(),
                "refilling: feeds start a new log, so departments' saved tokens are refused and they start over from 0"
            );
        }
        Ok(log)
    }

    pub fn id(&self) -> String {
        self.id
            .read()
            .expect("feed log lock is never poisoned")
            .clone()
    }

    /// Starts a new log, unless this run already has; returns whether it did.
    fn renew(&self) -> Result<bool, StoreError> {
        if self.renewed.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        let id = uuid::Uuid::new_v4().to_string();
        if let Err(e) = self.store.put_meta(FEED_LOG_KEY, id.as_bytes()) {
            // Not started after all: the next report tries again.
            self.renewed.store(false, Ordering::SeqCst);
            return Err(e);
        }
        let old = std::mem::replace(
            &mut *self.id.write().expect("feed log lock is never poisoned"),
            id,
        );
        // Written after the new id: listed first, the current log would be taken for replaced.
        let mut replaced = self
            .replaced
            .write()
            .expect("feed log lock is never poisoned");
        replaced.push(old);
        if let Err(e) = self
            .store
            .put_meta(REPLACED_LOGS_KEY, replaced.join("\n").as_bytes())
        {
            warn!(error = %e, "could not write which feed log was replaced; an office offline through this may make departments start over once more");
        }
        Ok(true)
    }
}

impl LogWatch for FeedLog {
    fn log_name(&self) -> String {
        self.id()
    }

    fn replaced(&self, name: &str) -> bool {
        self.replaced
            .read()
            .expect("feed log lock is never poisoned")
            .iter()
            .any(|replaced| replaced == name)
    }

    fn went_back(&self, seen: Seq, end: Seq) {
        match self.renew() {
            Ok(true) => warn!(
                seen,
                end,
                log_id = %self.id(),
                "the hub's change log went back (its store was restored from an older copy): feeds start a new log, so departments start over instead of skipping what comes back; restart the hub with --refill-from-nodes to take back the records the nodes hold for other parties"
            ),
            Ok(false) => {}
            Err(e) => {
                error!(error = %e, "could not start a new feed log after the change log went back; department tokens past {end} may skip records")
            }
        }
    }
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
        let entries =
            match tokio::task::spawn_blocking(move || replica.published_since(after, FEED_BATCH))
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
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let plain = FeedLog::open(store.clone(), false).unwrap();
        assert_eq!(plain.id(), store.store_id());
        let refilled = FeedLog::open(store.clone(), true).unwrap().id();
        assert_ne!(refilled, store.store_id());
        assert_eq!(
            FeedLog::open(store.clone(), false).unwrap().id(),
            refilled,
            "kept after the refill"
        );
        assert_ne!(
            FeedLog::open(store, true).unwrap().id(),
            refilled,
            "each refill starts anew"
        );
    }

    #[test]
    fn a_log_that_went_back_starts_a_new_feed_log_once_per_run() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let log = FeedLog::open(store.clone(), false).unwrap();
        log.went_back(120, 100);
        let renewed = log.id();
        assert_ne!(renewed, store.store_id());
        log.went_back(130, 100);
        assert_eq!(log.id(), renewed, "a second report in the same run");
        assert_eq!(
            FeedLog::open(store.clone(), false).unwrap().id(),
            renewed,
            "kept across a restart"
        );

        let refilling = FeedLog::open(store.clone(), true).unwrap();
        let started = refilling.id();
        refilling.went_back(120, 100);
        assert_eq!(
            refilling.id(),
            started,
            "a refill already started a new log"
        );

        // Every log this hub replaced is known as such across restarts; the current one and
        // names it never gave are not.
        let reopened = FeedLog::open(store.clone(), false).unwrap();
        for old in [store.store_id(), renewed] {
            assert!(reopened.replaced(&old), "{old}");
        }
        assert!(!reopened.replaced(&started));
        assert!(!reopened.replaced("a-log-from-another-copy"));
    }
}
