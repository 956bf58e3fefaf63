//! A record body as the CLI and the `Records` service hand it over: JSON for one kind. Any
//! panic, or memory or time past libFuzzer's limits, is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkage_node::record::{Body, RecordKind};

fuzz_target!(|bytes: &[u8]| {
    let Some((&kind, json)) = bytes.split_first() else {
        return;
    };
    let kind = RecordKind::ALL[usize::from(kind) % RecordKind::ALL.len()];
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    if let Ok(body) = Body::from_json(kind, json) {
        let _ = body.to_json_value();
    }
});
