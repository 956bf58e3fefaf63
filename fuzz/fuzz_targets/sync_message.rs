//! A peer's sync message as the session treats it: decoded, checked by the guard, and only then
//! applied to a document, with Automerge panics contained as `session::receive` contains them.
//! What libFuzzer can still find here is an input that passes the guard and exhausts memory or
//! time (`-rss_limit_mb`, `-timeout`), or a panic outside Automerge.
#![no_main]

use automerge::Automerge;
use automerge::sync::{Message, State, SyncDoc};
use libfuzzer_sys::fuzz_target;
use linkage_node::sync::guard;

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = Message::decode(bytes) else {
        return;
    };
    if guard::check_message(&message).is_err() {
        return;
    }
    let _ = std::panic::catch_unwind(move || {
        let mut doc = Automerge::new();
        let mut state = State::new();
        if doc.receive_sync_message(&mut state, message).is_ok() {
            let _ = doc.generate_sync_message(&mut state);
        }
    });
});
