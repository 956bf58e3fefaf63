//! Watching an office's records change: the change log from a position on, then live, as
//! summaries. What an office's screen (and the benchmark) follows instead of listing again
//! and again.
//!
//! The change log keeps one entry per record at its latest change, so a watcher that falls
//! behind is sent each changed record once, at its newest state, and a watcher that resumes
//! from the last position it received misses nothing.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, instrument};

use crate::replica::{Replica, ReplicaError, Summary};
use crate::store::Seq;

/// Change-log entries read per trip to the store.
const WATCH_BATCH: usize = 256;

/// A record's summary at its position in the change log.
#[derive(Debug, Clone)]
pub struct RecordChange {
    pub position: Seq,
    pub summary: Summary,
}

/// Sends every record changed after `after` into `tx`, then each change as it is made durable,
/// until the receiver goes away. A store failure is sent as the stream's last item.
#[instrument(skip_all, fields(org = %replica.org(), after))]
pub async fn run(
    replica: Arc<Replica>,
    mut after: Seq,
    tx: mpsc::Sender<Result<RecordChange, ReplicaError>>,
) {
    let mut changes = replica.subscribe();
    loop {
        // Marked seen before reading, so a change made during the read wakes the next turn.
        changes.borrow_and_update();
        let reader = replica.clone();
        let batch = tokio::task::spawn_blocking(move || read_after(&reader, after)).await;
        let batch = match batch {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e)).await;
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
            if tx
                .send(Ok(RecordChange { position, summary }))
                .await
                .is_err()
            {
                return;
            }
        }
        if caught_up && changes.changed().await.is_err() {
            return;
        }
    }
}

/// The next change-log entries after `after`, each with its record's summary (`None` for an
/// entry whose summary is gone, which the watcher skips).
fn read_after(replica: &Replica, after: Seq) -> Result<Vec<(Seq, Option<Summary>)>, ReplicaError> {
    replica
        .store()
        .changed_since(after, WATCH_BATCH)?
        .into_iter()
        .map(|entry| Ok((entry.seq, replica.summary(&entry.doc)?)))
        .collect()
}
