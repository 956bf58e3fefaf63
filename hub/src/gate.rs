//! What the hub lets through a node's session: a record goes only to nodes of its parties, and
//! a node's changes are admitted only if signed by its own organisation's actors and allowed by
//! the mechanism's rules ([`linkage_node::workflow::admit_change`]). While the hub is refilled
//! from the nodes after losing its store, a node may also hand over the other parties' changes
//! it holds, each checked as an act of its author.

use std::sync::Arc;

use automerge::{ActorId, Automerge, Change, ChangeHash, ChangeMetadata, ReadDoc};
use linkage_node::org::{Directory, OrgKind};
use linkage_node::record::Record;
use linkage_node::record::doc::{DocError, hydrate_record, org_of_actor};
use linkage_node::replica::Summary;
use linkage_node::sync::session::{Before, Gate};
use linkage_node::workflow::{self, RuleViolation};
use tracing::info;

/// Rule ID for a change whose actor is not bound to the sending node's organisation.
pub const RULE_ACTOR: &str = "actor";

#[derive(Debug)]
pub struct HubGate {
    /// The organisation of the node at the other end of the session.
    pub org: String,
    pub directory: Arc<Directory>,
    /// The hub is being refilled from the nodes after losing its store (`--refill-from-nodes`):
    /// a node may also hand over changes that other parties of a record made, since its copy
    /// may be the only one left. Off, a node's changes must all be its own organisation's.
    pub refill: bool,
}

impl Gate for HubGate {
    fn may_offer(&self, summary: &Summary) -> bool {
        summary.is_party(&self.org)
    }

    fn admit(
        &self,
        id: &str,
        before: Before<'_>,
        after: &Automerge,
        added: &[ChangeMetadata<'_>],
    ) -> Result<Option<Record>, RuleViolation> {
        let mut relayed: Vec<String> = Vec::new();
        for change in added {
            if let Some(org) = self.author_of(id, &change.hash, &change.actor)?
                && !relayed.contains(&org)
            {
                relayed.push(org);
            }
        }

        let unreadable = |what: &str, e: &DocError| RuleViolation {
            rule: "schema",
            message: format!("{what} of record {id} is not a readable record: {e}"),
        };
        let document = after;
        let after = hydrate_record(document).map_err(|e| unreadable("the changed copy", &e))?;
        if after.envelope.id != id {
            return Err(RuleViolation {
                rule: "schema",
                message: format!(
                    "record {id} claims id {:?} in its envelope",
                    after.envelope.id
                ),
            });
        }
        if let Some(outsider) = relayed.iter().find(|org| !after.envelope.is_party(org)) {
            return Err(RuleViolation {
                rule: RULE_ACTOR,
                message: format!(
                    "{} hands over changes to {id} made by {outsider}, which is not a party to it",
                    self.org
                ),
            });
        }
        let (directory, org) = (&self.directory, self.org.as_str());
        match before {
            Before::Nothing => {
                refuse_odd_root(id, document)?;
                workflow::admit_relayed_change(directory, org, &relayed, None, &after)?
            }
            Before::Read(read) => {
                let before = read.map_err(|e| unreadable("the hub's copy", e))?;
                refuse_odd_root(id, document)?;
                workflow::admit_relayed_change(directory, org, &relayed, Some(before), &after)?
            }
            Before::BodyFieldsPut => workflow::admit_body_fields_put(directory, org, &after)?,
        }
        if !relayed.is_empty() {
            info!(record = %id, relayed_by = %self.org, authors = ?relayed, "admitted changes a node handed over for other parties (refilling from the nodes)");
        }
        Ok(Some(after))
    }

    fn admit_taken(
        &self,
        id: &str,
        changes: &[Change],
        after: &Record,
    ) -> Option<Result<(), RuleViolation>> {
        // Refilling, a node may hand over other parties' changes, which `admit` checks
        // against the record's parties with the document at hand.
        if self.refill {
            return None;
        }
        // The envelope is the one the record had before: no put of a body field reaches it.
        Some(
            changes
                .iter()
                .try_for_each(|change| {
                    self.author_of(id, &change.hash(), change.actor_id())?;
                    Ok(())
                })
                .and_then(|()| workflow::admit_body_fields_put(&self.directory, &self.org, after)),
        )
    }
}

impl HubGate {
    /// Checks that change `hash` to record `id` is signed by an actor of the session's
    /// organisation, or, refilling, of another organisation of the district, which it returns
    /// (the change is then handed over for that party).
    fn author_of(
        &self,
        id: &str,
        hash: &ChangeHash,
        actor: &ActorId,
    ) -> Result<Option<String>, RuleViolation> {
        match org_of_actor(actor) {
            Some(org) if org == self.org => Ok(None),
            Some(org) if self.refill && self.directory.org(&org).is_some() => Ok(Some(org)),
            Some(org) => Err(RuleViolation {
                rule: RULE_ACTOR,
                message: format!(
                    "change {hash} to {id} is signed by an actor of {org}, but this session belongs to {}; an office writes only as itself",
                    self.org
                ),
            }),
            None => Err(RuleViolation {
                rule: RULE_ACTOR,
                message: format!(
                    "change {hash} to {id} has an actor id not bound to any organisation"
                ),
            }),
        }
    }
}

/// The keys a record's document holds at its root, in Automerge's order.
const ROOT_LAYOUT: [&str; 3] = ["body", "envelope", "events"];

/// Refuses a record whose document's root, after a peer's changes, is not laid out as a
/// record's: exactly an envelope, a body and events, each one value. A second body laid out
/// beside the first by a concurrent change loses to it and reads as nothing, so comparing the
/// records before and after would never check it, nor the edits later made inside it; a key
/// beside the three reads as nothing too (found by break-tests). A change that replaces one
/// of the three outright keeps the layout and is compared as any other. Changes that only put
/// values into body fields (`Before::BodyFieldsPut`) cannot touch the root and are not looked
/// at again.
fn refuse_odd_root(id: &str, document: &Automerge) -> Result<(), RuleViolation> {
    let odd = |what: String| RuleViolation {
        rule: "schema",
        message: format!(
            "record {id} {what}; a record's root holds its envelope, body and events, each once"
        ),
    };
    if let Some(stray) = document
        .keys(automerge::ROOT)
        .find(|key| !ROOT_LAYOUT.contains(&key.as_str()))
    {
        return Err(odd(format!("holds {stray:?} at its root")));
    }
    for key in ROOT_LAYOUT {
        let values = document
            .get_all(automerge::ROOT, key)
            .map_err(|e| odd(format!("cannot be read at {key:?}: {e}")))?
            .len();
        if values != 1 {
            return Err(odd(format!("holds {values} values at {key:?}")));
        }
    }
    Ok(())
}

/// Whether `org` may read a record's feed entry: its parties, and the District People's
/// Government, which oversees the whole mechanism (O-1) through the command platform (S-3).
pub fn may_read(directory: &Directory, org: &str, summary: &Summary) -> bool {
    summary.is_party(org) || directory.kind_of(org) == Some(OrgKind::DistrictGovernment)
}
