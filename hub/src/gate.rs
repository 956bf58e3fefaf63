//! What the hub lets through a node's session: a record goes only to nodes of its parties, and
//! a node's changes are admitted only if signed by its own organisation's actors and allowed by
//! the mechanism's rules ([`linkage_node::workflow::admit_change`]).

use std::sync::Arc;

use automerge::{Automerge, ChangeMetadata};
use linkage_node::org::{Directory, OrgKind};
use linkage_node::record::Record;
use linkage_node::record::doc::{hydrate_record, org_of_actor};
use linkage_node::replica::Summary;
use linkage_node::sync::session::Gate;
use linkage_node::workflow::{self, RuleViolation};

/// Rule ID for a change whose actor is not bound to the sending node's organisation.
pub const RULE_ACTOR: &str = "actor";

#[derive(Debug)]
pub struct HubGate {
    /// The organisation of the node at the other end of the session.
    pub org: String,
    pub directory: Arc<Directory>,
}

impl Gate for HubGate {
    fn may_offer(&self, summary: &Summary) -> bool {
        summary.is_party(&self.org)
    }

    fn admit(
        &self,
        id: &str,
        before: Option<&Automerge>,
        after: &Automerge,
        added: &[ChangeMetadata<'_>],
    ) -> Result<Option<Record>, RuleViolation> {
        for change in added {
            match org_of_actor(&change.actor) {
                Some(org) if org == self.org => {}
                Some(org) => {
                    return Err(RuleViolation {
                        rule: RULE_ACTOR,
                        message: format!(
                            "change {} to {id} is signed by an actor of {org}, but this session belongs to {}; an office writes only as itself",
                            change.hash, self.org
                        ),
                    });
                }
                None => {
                    return Err(RuleViolation {
                        rule: RULE_ACTOR,
                        message: format!(
                            "change {} to {id} has an actor id not bound to any organisation",
                            change.hash
                        ),
                    });
                }
            }
        }

        let unreadable = |what: &str, e: linkage_node::record::doc::DocError| RuleViolation {
            rule: "schema",
            message: format!("{what} of record {id} is not a readable record: {e}"),
        };
        let before = before
            .map(hydrate_record)
            .transpose()
            .map_err(|e| unreadable("the hub's copy", e))?;
        let after = hydrate_record(after).map_err(|e| unreadable("the changed copy", e))?;
        if after.envelope.id != id {
            return Err(RuleViolation {
                rule: "schema",
                message: format!(
                    "record {id} claims id {:?} in its envelope",
                    after.envelope.id
                ),
            });
        }
        workflow::admit_change(&self.directory, &self.org, before.as_ref(), &after)?;
        Ok(Some(after))
    }
}

/// Whether `org` may read a record's feed entry: its parties, and the District People's
/// Government, which oversees the whole mechanism (O-1) through the command platform (S-3).
pub fn may_read(directory: &Directory, org: &str, summary: &Summary) -> bool {
    summary.is_party(org) || directory.kind_of(org) == Some(OrgKind::DistrictGovernment)
}
