//! Watching an office's records change: the change log from a position on, then live, as
//! summaries. What an office's screen (and the benchmark) follows instead of listing again
//! and again.
//!
//! The change log keeps one entry per record at its latest change, so a watcher that falls
//! behind is sent each changed record once, at its newest state, and a watcher that resumes
//! from the last position it received misses nothing.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{debug, instrument};

use crate::replica::{Replica, ReplicaError, Summary};
use crate::store::Seq;

/// Change-log entries read per trip to the store.
const WATCH_BATCH: usize = 256;

/// Why a watch stream ended before its watcher hung up.
#[derive(Debug, thiserror::Error)]
pub enum WatchEnd {
    #[error(transparent)]
    Store(#[from] ReplicaError),
    #[error("the node is shutting down")]
    Stopping,
}

/// A record's summary at its position in the change log.
#[derive(Debug, Clone)]
pub struct RecordChange {
    pub position: Seq,
    pub summary: Arc<Summary>,
}

/// Sends every record changed after `after` into `tx`, then each change as it is made durable,
/// until the receiver goes away or `stopping` turns true (the server is shutting down, and
/// waits for every open stream to end). A store failure is sent as the stream's last item.
#[instrument(skip_all, fields(org = %replica.org(), after))]
pub async fn run(
    replica: Arc<Replica>,
    mut after: Seq,
    tx: mpsc::Sender<Result<RecordChange, WatchEnd>>,
    mut stopping: watch::Receiver<bool>,
) {
    // A watcher told why its stream ended resumes from its last position instead of taking
    // the end for the end of the log. Not waited for: the server is stopping.
    let stopped = |tx: &mpsc::Sender<_>| drop(tx.try_send(Err(WatchEnd::Stopping)));
    let mut changes = replica.subscribe();
    loop {
        if *stopping.borrow() {
            return stopped(&tx);
        }
        // Marked seen before reading, so a change made during the read wakes the next turn.
        changes.borrow_and_update();
        let reader = replica.clone();
        let batch = tokio::task::spawn_blocking(move || read_after(&reader, after)).await;
        let batch = match batch {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                let _ = tx.send(Err(WatchEnd::Store(e))).await;
                return;
            }
            // The runtime is shutting down.
            Err(_) => return,
        };
        let caught_up = batch.len() < WATCH_BATCH;
        for (position, summary) in batch {
            after = position;
            let Some(summary) = summary else {
                continue;
            };
            debug!(record = %summary.id, position, "watch delivery");
            tokio::select! {
                sent = tx.send(Ok(RecordChange { position, summary })) => if sent.is_err() {
                    return;
                },
                _ = stopping.wait_for(|stop| *stop) => return stopped(&tx),
            }
        }
        if !caught_up {
            continue;
        }
        // Idle until something changes; a watcher that hung up meanwhile, or a server shutting
        // down, ends the task here rather than at the next send, which may never come.
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return;
            },
            () = tx.closed() => return,
            _ = stopping.wait_for(|stop| *stop) => return stopped(&tx),
        }
    }
}

/// A change-log position and the summary of the record changed there (`None` for an entry
/// whose summary is gone, which the watcher skips).
type Entry = (Seq, Option<Arc<Summary>>);

/// The next change-log entries after `after`, each with its record's summary.
fn read_after(replica: &Replica, after: Seq) -> Result<Vec<Entry>, ReplicaError> {
    replica
        .published_since(after, WATCH_BATCH)?
        .into_iter()
        .map(|entry| Ok((entry.seq, replica.summary(&entry.doc)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::replica::SystemClock;
    use crate::store::MemoryStore;

    fn replica() -> Arc<Replica> {
        let store = Arc::new(MemoryStore::new());
        Arc::new(Replica::open("130304100", store, Arc::new(SystemClock), 16).unwrap())
    }

    #[tokio::test]
    async fn an_idle_watch_ends_when_its_watcher_hangs_up() {
        let (tx, rx) = mpsc::channel(4);
        let (_stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(replica(), 0, tx, stopping));
        // Caught up at once (nothing stored); nothing will ever be sent.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends without waiting for a change")
            .unwrap();
    }

    #[tokio::test]
    async fn a_watch_ends_when_the_server_stops_saying_so() {
        let (tx, mut rx) = mpsc::channel(4);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(replica(), 0, tx, stopping));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends on shutdown")
            .unwrap();
        assert!(
            matches!(rx.recv().await, Some(Err(WatchEnd::Stopping))),
            "the watcher is told why"
        );
        assert!(rx.recv().await.is_none(), "the stream ends");
    }
}
