//! Where the hub keeps what it believes each node holds (the node's change-log cursor and its
//! per-record sync states): under the node and the incarnation of its store, so a node whose
//! store was recreated starts from nothing confirmed.

use linkage_node::store::{Store, StoreError};

/// Meta key recording the store id a node last connected with.
fn incarnation_key(node_id: &str) -> String {
    format!("peer-incarnation/{node_id}")
}

/// The peer key of `node_id` with store `store_id`. Length-prefixed, so no node id and store id
/// pair reads as another.
fn key_of(node_id: &str, store_id: &str) -> String {
    format!("{}:{node_id}{store_id}", node_id.len())
}

/// The key a node's cursor and sync states are kept under in the hub's store: the node and the
/// incarnation of its store.
///
/// A node whose store was recreated (a new store id) holds nothing the hub believed it held, so
/// it starts under a key of its own with nothing confirmed, and the previous incarnation's
/// entries are dropped. A session of the previous incarnation still open (a half-open link)
/// writes its cursor and states under its own key as it ends, where they stay unread: the new
/// incarnation is still offered everything.
pub fn node_peer_key(
    store: &dyn Store,
    node_id: &str,
    store_id: &str,
) -> Result<String, StoreError> {
    let known = store.meta(&incarnation_key(node_id))?;
    if known.as_deref() != Some(store_id.as_bytes()) {
        if let Some(previous) = known {
            store.forget_peer(&key_of(node_id, &String::from_utf8_lossy(&previous)))?;
        }
        // Hubs before incarnations kept a node's entries under its bare id.
        store.forget_peer(node_id)?;
        store.put_meta(&incarnation_key(node_id), store_id.as_bytes())?;
    }
    Ok(key_of(node_id, store_id))
}

/// The peer key of the incarnation of `node_id` the hub last saw connect, if it ever did: what
/// the operator's report reads a node's cursor and sync states under.
pub fn last_peer_key(store: &dyn Store, node_id: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .meta(&incarnation_key(node_id))?
        .map(|store_id| key_of(node_id, &String::from_utf8_lossy(&store_id))))
}

/// Drops everything kept of `node_id`'s sync (its last incarnation's cursor and states, and
/// which incarnation that was): the node is being retired.
pub fn forget_node(store: &dyn Store, node_id: &str) -> Result<(), StoreError> {
    if let Some(key) = last_peer_key(store, node_id)? {
        store.forget_peer(&key)?;
    }
    store.forget_peer(node_id)?;
    store.delete_meta(&incarnation_key(node_id))
}

#[cfg(test)]
mod tests {
    use linkage_node::store::MemoryStore;

    use super::*;

    #[test]
    fn a_recreated_store_starts_clean_and_the_old_sessions_writes_stay_apart() {
        let store = MemoryStore::new();
        let first = node_peer_key(&store, "node-a", "store-1").unwrap();
        store.put_cursor(&first, 40).unwrap();
        store.put_peer_state(&first, "rec-1", b"state").unwrap();
        assert_eq!(
            node_peer_key(&store, "node-a", "store-1").unwrap(),
            first,
            "the same incarnation keeps its key"
        );
        assert_eq!(store.cursor(&first).unwrap(), 40);

        let second = node_peer_key(&store, "node-a", "store-2").unwrap();
        assert_ne!(second, first);
        assert_eq!(
            store.cursor(&first).unwrap(),
            0,
            "the old incarnation is forgotten"
        );
        assert_eq!(store.peer_state(&first, "rec-1").unwrap(), None);
        // A session of the old store, still open, writes back as it ends.
        store.put_cursor(&first, 55).unwrap();
        assert_eq!(
            store.cursor(&second).unwrap(),
            0,
            "the new store is offered everything"
        );
    }

    #[test]
    fn entries_under_a_bare_node_id_are_dropped_on_first_contact() {
        let store = MemoryStore::new();
        store.put_cursor("node-a", 70).unwrap();
        let key = node_peer_key(&store, "node-a", "store-1").unwrap();
        assert_eq!(store.cursor("node-a").unwrap(), 0);
        assert_eq!(store.cursor(&key).unwrap(), 0);
    }

    #[test]
    fn the_report_reads_the_last_incarnation() {
        let store = MemoryStore::new();
        assert_eq!(last_peer_key(&store, "node-a").unwrap(), None);
        node_peer_key(&store, "node-a", "store-1").unwrap();
        let key = node_peer_key(&store, "node-a", "store-2").unwrap();
        assert_eq!(last_peer_key(&store, "node-a").unwrap(), Some(key));
    }

    #[test]
    fn a_forgotten_node_leaves_nothing_behind() {
        let store = MemoryStore::new();
        let key = node_peer_key(&store, "node-a", "store-1").unwrap();
        store.put_cursor(&key, 9).unwrap();
        let other = node_peer_key(&store, "node-b", "store-1").unwrap();
        store.put_cursor(&other, 4).unwrap();

        forget_node(&store, "node-a").unwrap();
        assert_eq!(last_peer_key(&store, "node-a").unwrap(), None);
        assert_eq!(store.cursor(&key).unwrap(), 0);
        assert_eq!(
            store.cursor(&other).unwrap(),
            4,
            "another node's sync stays"
        );
    }

    #[test]
    fn keys_of_different_nodes_never_meet() {
        let store = MemoryStore::new();
        let one = node_peer_key(&store, "ab", "c").unwrap();
        let other = node_peer_key(&store, "a", "bc").unwrap();
        assert_ne!(one, other);
    }
}
