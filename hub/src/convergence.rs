//! The convergence tracker: which nodes the hub knows, whether each is connected, and how far
//! each is from holding exactly what the hub holds for it; the district is converged only when
//! every known node is connected and nothing is pending either way.
//!
//! An offline node is never reported converged: the hub cannot know what it recorded since.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use automerge::sync::State;
use linkage_node::replica::{Replica, ReplicaError, Summary};
use linkage_node::sync::session::{FiguresHandle, SessionFigures};
use linkage_proto::v1 as pb;
use serde::{Deserialize, Serialize};

const NODE_PREFIX: &str = "node/";

/// What the hub remembers of a node across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    org: String,
    last_contact_ms: i64,
}

#[derive(Debug)]
struct NodeEntry {
    org: String,
    /// Sessions currently open for this node (normally 0 or 1; briefly 2 while a dead link
    /// is being noticed and the node has already reconnected).
    sessions: u32,
    figures: FiguresHandle,
    last_contact_ms: i64,
}

/// The meta entry (key, value) the hub keeps of a node across restarts.
fn node_meta(node_id: &str, org: &str, last_contact_ms: i64) -> (String, Vec<u8>) {
    let record = NodeRecord {
        org: org.to_owned(),
        last_contact_ms,
    };
    let bytes = serde_json::to_vec(&record).expect("plain data");
    (format!("{NODE_PREFIX}{node_id}"), bytes)
}

impl NodeEntry {
    /// Takes in the last contact its session saw, and returns the latest known.
    fn update_last_contact(&mut self) -> i64 {
        let seen = self
            .figures
            .lock()
            .expect("figures lock is never poisoned")
            .last_contact_ms;
        self.last_contact_ms = self.last_contact_ms.max(seen);
        self.last_contact_ms
    }
}

/// Why a node could not be retired.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("no node {0:?} is known to the hub")]
    Unknown(String),
    #[error("{prefix:?} names {} nodes ({}); give more of the id", ids.len(), ids.join(", "))]
    Ambiguous { prefix: String, ids: Vec<String> },
    #[error("node {0} is connected; only an offline node can be forgotten")]
    Connected(String),
    #[error("hub store failed: {0}")]
    Store(#[from] linkage_node::store::StoreError),
}

#[derive(Debug)]
pub struct Registry {
    replica: Arc<Replica>,
    nodes: Mutex<BTreeMap<String, NodeEntry>>,
}

impl Registry {
    /// The registry with every node the hub has ever seen, all offline until they connect.
    pub fn load(replica: Arc<Replica>) -> Result<Self, ReplicaError> {
        let mut nodes = BTreeMap::new();
        for (key, bytes) in replica.store().meta_prefix(NODE_PREFIX)? {
            let Ok(record) = serde_json::from_slice::<NodeRecord>(&bytes) else {
                continue;
            };
            let node_id = key.trim_start_matches(NODE_PREFIX).to_owned();
            nodes.insert(
                node_id,
                NodeEntry {
                    org: record.org,
                    sessions: 0,
                    figures: FiguresHandle::default(),
                    last_contact_ms: record.last_contact_ms,
                },
            );
        }
        Ok(Registry {
            replica,
            nodes: Mutex::new(nodes),
        })
    }

    /// Marks a node connected and returns the figures its session publishes into.
    pub fn connected(&self, node_id: &str, org: &str) -> Result<FiguresHandle, ReplicaError> {
        let now = self.replica.now_ms();
        let figures = {
            let mut nodes = self.nodes.lock().expect("registry lock is never poisoned");
            let entry = nodes
                .entry(node_id.to_owned())
                .or_insert_with(|| NodeEntry {
                    org: org.to_owned(),
                    sessions: 0,
                    figures: FiguresHandle::default(),
                    last_contact_ms: now,
                });
            entry.org = org.to_owned();
            entry.sessions += 1;
            entry.last_contact_ms = now;
            let mut figures = entry
                .figures
                .lock()
                .expect("figures lock is never poisoned");
            *figures = SessionFigures {
                last_contact_ms: now,
                ..SessionFigures::default()
            };
            drop(figures);
            entry.figures.clone()
        };
        if let Err(e) = self.persist(node_id, org, now) {
            // The session is refused: the node must not be shown online for it.
            let mut nodes = self.nodes.lock().expect("registry lock is never poisoned");
            if let Some(entry) = nodes.get_mut(node_id) {
                entry.sessions = entry.sessions.saturating_sub(1);
            }
            return Err(e);
        }
        Ok(figures)
    }

    pub fn disconnected(&self, node_id: &str) -> Result<(), ReplicaError> {
        let (org, last) = {
            let mut nodes = self.nodes.lock().expect("registry lock is never poisoned");
            let Some(entry) = nodes.get_mut(node_id) else {
                return Ok(());
            };
            entry.sessions = entry.sessions.saturating_sub(1);
            (entry.org.clone(), entry.update_last_contact())
        };
        self.persist(node_id, &org, last)
    }

    /// Writes the last contact of every connected node, for a hub that restarts without
    /// seeing them go (killed, or its machine lost power): their last contact would otherwise
    /// read as when they connected, possibly days earlier. One unsynced batch: at 2,000 offices
    /// a synced write per node would be the hub's busiest disk work. Returns how many.
    pub fn persist_connected(&self) -> Result<usize, ReplicaError> {
        let records: Vec<(String, Vec<u8>)> = {
            let mut nodes = self.nodes.lock().expect("registry lock is never poisoned");
            nodes
                .iter_mut()
                .filter(|(_, entry)| entry.sessions > 0)
                .map(|(node_id, entry)| {
                    let last_contact_ms = entry.update_last_contact();
                    node_meta(node_id, &entry.org, last_contact_ms)
                })
                .collect()
        };
        self.replica.store().put_metas_unsynced(&records)?;
        Ok(records.len())
    }

    fn persist(&self, node_id: &str, org: &str, last_contact_ms: i64) -> Result<(), ReplicaError> {
        let (key, bytes) = node_meta(node_id, org, last_contact_ms);
        Ok(self.replica.store().put_meta(&key, &bytes)?)
    }

    /// Retires the offline node whose id is `node_id` or starts with it, with what the hub
    /// kept of its sync; returns its id and organisation. Blocking: it writes the store.
    pub fn forget(&self, node_id: &str) -> Result<(String, String), ForgetError> {
        let mut nodes = self.nodes.lock().expect("registry lock is never poisoned");
        // Ids are UUIDs, printed lower-case; one copied from elsewhere may come upper-case.
        let starts = |id: &str| {
            id.len() >= node_id.len()
                && id.as_bytes()[..node_id.len()].eq_ignore_ascii_case(node_id.as_bytes())
        };
        let matching: Vec<&String> = match nodes.get_key_value(node_id) {
            Some((id, _)) => vec![id],
            None if node_id.is_empty() => Vec::new(),
            None => nodes.keys().filter(|id| starts(id)).collect(),
        };
        let id = match matching.as_slice() {
            [] => return Err(ForgetError::Unknown(node_id.to_owned())),
            [id] => (*id).clone(),
            several => {
                return Err(ForgetError::Ambiguous {
                    prefix: node_id.to_owned(),
                    ids: several.iter().map(|id| (*id).clone()).collect(),
                });
            }
        };
        let entry = &nodes[&id];
        if entry.sessions > 0 {
            return Err(ForgetError::Connected(id));
        }
        let org = entry.org.clone();
        // Under the registry's lock, so the node cannot connect halfway through.
        let store = self.replica.store();
        crate::incarnation::forget_node(store.as_ref(), &id)?;
        store.delete_meta(&format!("{NODE_PREFIX}{id}"))?;
        nodes.remove(&id);
        Ok((id, org))
    }

    pub fn summaries(&self) -> Result<Vec<Summary>, ReplicaError> {
        self.replica.summaries()
    }

    /// The convergence report. Blocking: it reads the store.
    pub fn report(&self) -> Result<pb::ConvergenceReport, ReplicaError> {
        let store = self.replica.store();
        let summaries: HashMap<String, Summary> = self
            .replica
            .summaries()?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let snapshot: Vec<(String, String, bool, SessionFigures, i64)> = {
            let nodes = self.nodes.lock().expect("registry lock is never poisoned");
            nodes
                .iter()
                .map(|(id, e)| {
                    let figures = e
                        .figures
                        .lock()
                        .expect("figures lock is never poisoned")
                        .clone();
                    (
                        id.clone(),
                        e.org.clone(),
                        e.sessions > 0,
                        figures,
                        e.last_contact_ms,
                    )
                })
                .collect()
        };

        let mut report = pb::ConvergenceReport {
            nodes: Vec::new(),
            converged: true,
            records: summaries.len() as u64,
            hub_seq: store.last_seq(),
            at_ms: self.replica.now_ms(),
        };
        for (node_id, org, connected, figures, last_contact_ms) in snapshot {
            let peer_key = crate::incarnation::last_peer_key(store.as_ref(), &node_id)?;
            let persisted = match &peer_key {
                Some(key) => store.cursor(key)?,
                None => 0,
            };
            // The live session's cursor runs ahead of the persisted one (written lazily).
            let cursor = persisted.max(figures.cursor);
            let mut pending = 0u64;
            // The oldest last change among the records waiting: how long an offline node has
            // kept them waiting at least (the hub keeps no earlier time for them).
            let mut oldest_waiting = i64::MAX;
            let mut after = cursor;
            loop {
                let entries = store.changed_since(after, 4096)?;
                let Some(last) = entries.last() else { break };
                after = last.seq;
                for summary in entries
                    .iter()
                    .filter_map(|e| summaries.get(&e.doc))
                    .filter(|s| s.is_party(&org))
                {
                    pending += 1;
                    oldest_waiting = oldest_waiting.min(summary.updated_at_ms);
                }
            }
            let mut mismatch = 0u64;
            for summary in summaries.values().filter(|s| s.is_party(&org)) {
                let state = match &peer_key {
                    Some(key) => store.peer_state(key, &summary.id)?,
                    None => None,
                };
                let shared: HashSet<String> = state
                    .and_then(|bytes| State::decode(&bytes).ok())
                    .map(|state| state.shared_heads.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                let ours: HashSet<String> = summary.heads.iter().cloned().collect();
                if shared != ours {
                    mismatch += 1;
                }
            }
            // A connected node's sessions know when each offer went out; an offline node's
            // figures are those of its last session, so the log says instead.
            let oldest = if connected {
                [figures.oldest_pending_ms, figures.peer_oldest_pending_ms]
                    .into_iter()
                    .filter(|t| *t > 0)
                    .min()
                    .unwrap_or(0)
            } else if pending > 0 {
                oldest_waiting
            } else {
                0
            };
            // A node that has not yet reported what it holds back is not known to be level.
            let converged = connected
                && figures.peer_reported
                && pending == 0
                && figures.peer_pending == 0
                && mismatch == 0;
            report.converged &= converged;
            report.nodes.push(pb::NodeConvergence {
                node_id,
                org,
                connected,
                last_contact_ms: last_contact_ms.max(figures.last_contact_ms),
                pending_to_node: pending,
                pending_from_node: figures.peer_pending,
                oldest_pending_ms: oldest,
                heads_mismatch: mismatch,
                converged,
                // The node's own count (its rejection notes) once it has reported; until
                // then, what this connection refused.
                refused_from_node: if figures.peer_reported {
                    figures.peer_refused
                } else {
                    figures.records_rejected
                },
            });
        }
        report
            .nodes
            .sort_by(|a, b| a.org.cmp(&b.org).then_with(|| a.node_id.cmp(&b.node_id)));
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use linkage_node::office::{Act, Office};
    use linkage_node::org::Directory;
    use linkage_node::record::{Body, RecordKind};
    use linkage_node::replica::SystemClock;
    use linkage_node::store::{MemoryStore, Store};

    use super::*;

    /// A hub killed while a node is connected never sees it go: the node's last contact, as
    /// the periodic write left it, is what the restarted hub shows, not when it connected.
    #[test]
    fn a_connected_nodes_last_contact_outlives_a_hub_that_never_saw_it_go() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let replica =
            Arc::new(Replica::open("district-hub", store, Arc::new(SystemClock), 16).unwrap());
        let registry = Registry::load(replica.clone()).unwrap();
        let figures = registry.connected("node-1", "130304100").unwrap();
        let connected_at = figures.lock().unwrap().last_contact_ms;
        // A report an hour later.
        let reported_at = connected_at + 3_600_000;
        figures.lock().unwrap().last_contact_ms = reported_at;
        registry.connected("node-2", "130304101").unwrap();
        registry.disconnected("node-2").unwrap();

        assert_eq!(
            registry.persist_connected().unwrap(),
            1,
            "node-2 is offline"
        );

        let restarted = Registry::load(replica).unwrap();
        let report = restarted.report().unwrap();
        let node = |id: &str| {
            report
                .nodes
                .iter()
                .find(|n| n.node_id == id)
                .unwrap_or_else(|| panic!("{id} is known"))
                .clone()
        };
        assert_eq!(node("node-1").last_contact_ms, reported_at);
        assert!(!node("node-1").connected);
        assert!(node("node-2").last_contact_ms < reported_at);
    }

    /// A node whose session the hub refuses because its store failed (a disk that failed a
    /// sync: a break-test saw every node shown online while each was refused) is not shown
    /// connected.
    #[test]
    fn a_node_refused_for_a_failed_store_is_not_shown_connected() {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = memory.clone();
        let replica =
            Arc::new(Replica::open("district-hub", store, Arc::new(SystemClock), 16).unwrap());
        let registry = Registry::load(replica).unwrap();
        memory.set_syncs_fail(true);

        assert!(registry.connected("node-1", "130304100").is_err());
        let report = registry.report().unwrap();
        let node = report.nodes.iter().find(|n| n.node_id == "node-1");
        assert!(
            node.is_none_or(|node| !node.connected),
            "shown connected: {node:?}"
        );
    }

    /// An offline node with records waiting shows since when at least: the oldest last change
    /// among them (its last session's figures would be stale, and were shown as none).
    #[tokio::test]
    async fn an_offline_nodes_oldest_pending_is_its_oldest_waiting_change() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let replica =
            Arc::new(Replica::open("130304100", store, Arc::new(SystemClock), 16).unwrap());
        let registry = Registry::load(replica.clone()).unwrap();
        registry.connected("market-node", "bdh-scjg").unwrap();
        registry.disconnected("market-node").unwrap();
        let node = |registry: &Registry| {
            registry
                .report()
                .unwrap()
                .nodes
                .into_iter()
                .find(|n| n.node_id == "market-node")
                .expect("known")
        };
        assert_eq!(node(&registry).oldest_pending_ms, 0, "nothing waits");

        let office = Office::new(replica.clone(), Arc::new(Directory::beidaihe()));
        let body =
            Body::from_json(RecordKind::Case, r#"{"title": "shared with the bureau"}"#).unwrap();
        let case = office
            .create(
                RecordKind::Case,
                vec!["bdh-scjg".into()],
                body,
                Act::default(),
            )
            .await
            .unwrap();
        let changed_at = replica
            .summary(case.record.id())
            .unwrap()
            .unwrap()
            .updated_at_ms;

        let offline = node(&registry);
        assert_eq!(offline.pending_to_node, 1);
        assert_eq!(offline.oldest_pending_ms, changed_at);
    }
}
