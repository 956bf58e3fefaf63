//! The invariants. One is checked after every step (no record reaches a node that is not its
//! party); the rest once the faults have stopped and the district has gone quiet: every party
//! holds the hub's heads, every acknowledged change is in every party's history, the hub's
//! convergence tracker agrees, and delivering old frames again changes nothing.

use std::collections::BTreeMap;

use automerge::ReadDoc;
use linkage_node::replica::{Replica, Summary};
use linkage_node::store::Store;

use super::world::Sim;

/// How long the district may take to go quiet after the faults stop (virtual time).
pub const QUIET_LIMIT_MS: i64 = 900_000;
/// How many earlier frames are delivered again at the end.
const REPLAYS: usize = 4;

impl Sim {
    /// Every change-log entry since the last check, on every node, must be a record the node's
    /// organisation was made a party to by some acknowledged write.
    pub fn check_parties(&mut self) {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let entries = node
                .store
                .changed_since(node.checked_seq, usize::MAX)
                .unwrap();
            let Some(last) = entries.last().map(|e| e.seq) else {
                continue;
            };
            for entry in entries {
                if !self
                    .entitled
                    .get(&entry.doc)
                    .is_some_and(|orgs| orgs.contains(&node.org))
                {
                    let parties = self.entitled.get(&entry.doc).cloned().unwrap_or_default();
                    self.violations.push(format!(
                        "record {} reached {} ({}) at {} ms, which is not among its parties {parties:?}",
                        entry.doc,
                        node.name,
                        node.org,
                        self.end_ms()
                    ));
                }
            }
            self.nodes[i].checked_seq = last;
        }
    }

    /// The end state: identical heads at every party, no acknowledged change missing, and the
    /// hub's tracker reporting the district converged.
    pub fn check_converged(&mut self) {
        let Some(hub) = self.hub_replica().cloned() else {
            self.violations.push("the hub is down at the end".into());
            return;
        };
        let summaries: BTreeMap<String, Summary> = hub
            .summaries()
            .unwrap()
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let mut found = Vec::new();
        for id in &self.records {
            if !summaries.contains_key(id) {
                found.push(format!("the hub never received record {id}"));
            }
        }

        for (id, summary) in &summaries {
            let hub_heads = sorted(hub.read(id, |d| d.get_heads()).unwrap().unwrap());
            for node in &self.nodes {
                if !summary.is_party(&node.org) {
                    continue;
                }
                let replica = node.replica.as_ref().expect("every node runs at the end");
                match replica.read(id, |d| d.get_heads()).unwrap() {
                    None => found.push(format!(
                        "{} ({}) is a party to {id} but does not hold it",
                        node.name, node.org
                    )),
                    Some(heads) if sorted(heads.clone()) != hub_heads => found.push(format!(
                        "{} holds {id} at heads {} but the hub at {}",
                        node.name,
                        short(&heads),
                        short(&hub_heads)
                    )),
                    Some(_) => {}
                }
            }
        }

        for ack in &self.acks {
            let Some(summary) = summaries.get(&ack.record) else {
                continue;
            };
            let holders = std::iter::once(("hub", &hub)).chain(
                self.nodes
                    .iter()
                    .filter(|n| summary.is_party(&n.org))
                    .map(|n| (n.name.as_str(), n.replica.as_ref().expect("running"))),
            );
            for (name, replica) in holders {
                let missing = replica
                    .read(&ack.record, |d| {
                        ack.heads
                            .iter()
                            .filter(|h| d.get_change_by_hash(h).is_none())
                            .count()
                    })
                    .unwrap();
                if missing != Some(0) {
                    found.push(format!(
                        "{name} lacks the change {} ({}) acknowledged by {} for {}",
                        short(&ack.heads),
                        ack.what,
                        self.nodes[ack.node].name,
                        ack.record
                    ));
                }
            }
        }

        for node in &self.nodes {
            for (key, note) in node.store.meta_prefix("rejection/").unwrap() {
                found.push(format!(
                    "the hub refused {}'s changes to {}: {}",
                    node.name,
                    key.trim_start_matches("rejection/"),
                    String::from_utf8_lossy(&note)
                ));
            }
        }

        if let Some(registry) = &self.hub.registry {
            let report = registry.report().unwrap();
            for node in report.nodes.iter().filter(|n| !n.converged) {
                found.push(format!(
                    "the hub's tracker calls {} ({}) not converged: connected {}, {} to send, {} to receive, {} heads mismatched{}",
                    node.node_id,
                    node.org,
                    node.connected,
                    node.pending_to_node,
                    node.pending_from_node,
                    node.heads_mismatch,
                    shared_heads_mismatches(&hub, &summaries, &node.node_id, &node.org)
                ));
            }
        }
        self.violations.extend(found);
    }

    /// Delivers a few earlier frames again, to the current session of the same node and side,
    /// and checks that no replica's change log moved: a replayed message adds nothing.
    pub fn check_replay(&mut self) {
        if self.delivered.is_empty() {
            return;
        }
        let before = self.log_heads();
        for _ in 0..REPLAYS {
            let index = self.rng.index(self.delivered.len());
            let earlier = self.delivered[index].clone();
            self.redeliver(&earlier);
            self.settle();
            self.reap();
        }
        if self.run_until_quiet(QUIET_LIMIT_MS).is_none() {
            self.violations
                .push("the district did not go quiet again after frames were replayed".into());
        }
        let after = self.log_heads();
        for ((name, seq), (_, again)) in before.iter().zip(&after) {
            if seq != again {
                let store = self.store_named(name);
                let changed: Vec<String> = store
                    .changed_since(*seq, 16)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.doc)
                    .collect();
                self.violations.push(format!(
                    "replaying earlier frames changed {name}'s records {changed:?}"
                ));
            }
        }
    }

    fn log_heads(&self) -> Vec<(String, u64)> {
        std::iter::once(("hub".to_owned(), self.hub.store.last_seq()))
            .chain(
                self.nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.store.last_seq())),
            )
            .collect()
    }

    fn store_named(&self, name: &str) -> &dyn Store {
        if name == "hub" {
            return self.hub.store.as_ref();
        }
        let node = self.nodes.iter().find(|n| n.name == name).expect("a node");
        node.store.as_ref()
    }
}

/// The records whose sync state, as the hub persisted it for `node_id`, names other shared
/// heads than the record's: what the tracker counts as "heads mismatched".
fn shared_heads_mismatches(
    hub: &Replica,
    summaries: &BTreeMap<String, Summary>,
    node_id: &str,
    org: &str,
) -> String {
    let mut text = String::new();
    let peer_key = linkage_hub::incarnation::last_peer_key(hub.store().as_ref(), node_id).unwrap();
    for (id, _) in summaries.iter().filter(|(_, s)| s.is_party(org)) {
        let shared = peer_key
            .as_ref()
            .and_then(|key| hub.store().peer_state(key, id).unwrap())
            .and_then(|bytes| automerge::sync::State::decode(&bytes).ok())
            .map(|state| sorted(state.shared_heads))
            .unwrap_or_default();
        let heads = sorted(hub.read(id, |d| d.get_heads()).unwrap().unwrap_or_default());
        if shared != heads {
            text.push_str(&format!(
                "; {id}: shared {} but heads {}",
                short(&shared),
                short(&heads)
            ));
        }
    }
    text
}

fn sorted(mut heads: Vec<automerge::ChangeHash>) -> Vec<automerge::ChangeHash> {
    heads.sort();
    heads
}

fn short(heads: &[automerge::ChangeHash]) -> String {
    let hex: Vec<String> = heads
        .iter()
        .map(|h| h.to_string()[..8].to_owned())
        .collect();
    format!("[{}]", hex.join(","))
}
