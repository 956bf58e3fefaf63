//! Requests a node must refuse without storing anything: each gets an error that names what
//! was wrong, and the node's records and change log are exactly as before
//! ([`TestNode::refused`] compares both).

use linkage_node::office::MAX_FIELD_BYTES;
use linkage_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::*;

/// A node of Haibin Town holding one transfer, so "nothing changed" has something to keep.
async fn haibin_with_a_transfer() -> (TestNode, String) {
    let haibin = TestNode::start(HAIBIN).await;
    let id = haibin
        .create(create(
            "transfer",
            transfer_body(HAIBIN, MARKET),
            "2026-09-28 11:05",
        ))
        .await
        .envelope
        .unwrap()
        .id;
    (haibin, id)
}

#[tokio::test]
async fn unknown_kind_is_invalid_and_lists_the_known_ones() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let request = create("parcel", json!({}), "2026-09-28 11:05");
    let message = haibin
        .invalid("parcel", |mut c| async move { c.create(request).await })
        .await;
    assert!(message.contains("liaison_directory"), "{message}");
    haibin
        .invalid("parcel", |mut c| async move {
            c.list(pb::ListRecordsRequest {
                kind: "parcel".into(),
                ..Default::default()
            })
            .await
        })
        .await;
}

#[tokio::test]
async fn unknown_organisation_as_a_party_is_refused() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let request = pb::CreateRecordRequest {
        parties: vec!["bdh-nowhere".into()],
        ..create("case", case_body(), "2026-09-28 11:05")
    };
    let message = haibin
        .refused_by("directory", |mut c| async move { c.create(request).await })
        .await;
    assert!(message.contains("bdh-nowhere"), "{message}");
}

#[tokio::test]
async fn a_unit_as_a_party_is_refused_naming_its_organisation() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let request = pb::CreateRecordRequest {
        parties: vec![URBAN_SQUAD.into()],
        ..create("case", case_body(), "2026-09-28 11:05")
    };
    let message = haibin
        .refused_by("directory", |mut c| async move { c.create(request).await })
        .await;
    assert!(
        message.contains(URBAN_SQUAD) && message.contains("Urban Management"),
        "{message}"
    );
}

#[tokio::test]
async fn a_body_field_over_64_kib_is_invalid() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let mut body = case_body();
    body["facts"] = json!("事".repeat(MAX_FIELD_BYTES / 3 + 1));
    let request = create("case", body.clone(), "2026-09-28 11:05");
    let message = haibin
        .invalid("facts", |mut c| async move { c.create(request).await })
        .await;
    assert!(message.contains("65536"), "names the limit: {message}");

    body["facts"] = json!("x".repeat(MAX_FIELD_BYTES));
    haibin
        .create(create("case", body, "2026-09-28 11:05"))
        .await;
}

#[tokio::test]
async fn an_event_note_over_64_kib_is_invalid() {
    let (haibin, id) = haibin_with_a_transfer().await;
    let request = pb::AppendEventRequest {
        note: "n".repeat(MAX_FIELD_BYTES + 1),
        ..event(&id, "updated", "2026-09-28 12:00")
    };
    haibin
        .invalid("note", |mut c| async move { c.append_event(request).await })
        .await;
}

#[tokio::test]
async fn an_edit_over_64_kib_is_invalid() {
    let (haibin, id) = haibin_with_a_transfer().await;
    haibin
        .invalid("facts", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id,
                patch_json: json!({ "facts": "f".repeat(MAX_FIELD_BYTES + 1) }).to_string(),
            })
            .await
        })
        .await;
}

/// A patch whose value does not fit its field is refused naming that field, not a position in
/// the body the patch was merged into, which its sender never wrote.
#[tokio::test]
async fn a_patch_of_the_wrong_type_names_its_field() {
    let (haibin, id) = haibin_with_a_transfer().await;
    let message = haibin
        .invalid("title", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id,
                patch_json: json!({ "place": "海滨镇", "title": null }).to_string(),
            })
            .await
        })
        .await;
    assert!(!message.contains("column"), "{message}");
}

#[tokio::test]
async fn a_request_over_the_4_mib_message_limit_is_refused_before_decoding() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let request = create(
        "case",
        json!({ "facts": "x".repeat(5 << 20) }),
        "2026-09-28 11:05",
    );
    // tonic answers OUT_OF_RANGE for a message past `max_decoding_message_size`.
    let status = haibin
        .refused(
            Code::OutOfRange,
            |mut c| async move { c.create(request).await },
        )
        .await;
    assert!(status.message().contains("4194304"), "{status:?}");
}

#[tokio::test]
async fn body_json_with_an_unknown_field_is_invalid_naming_it() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let mut body = transfer_body(HAIBIN, MARKET);
    body["colour"] = json!("red");
    let request = create("transfer", body, "2026-09-28 11:05");
    haibin
        .invalid("colour", |mut c| async move { c.create(request).await })
        .await;
}

#[tokio::test]
async fn invalid_body_json_is_invalid() {
    let (haibin, _) = haibin_with_a_transfer().await;
    for text in ["{\"title\": ", "not json", "[1, 2]", ""] {
        let request = pb::CreateRecordRequest {
            body_json: text.into(),
            ..create("case", json!({}), "2026-09-28 11:05")
        };
        haibin
            .invalid("not valid JSON for that kind", |mut c| async move {
                c.create(request).await
            })
            .await;
    }
}

#[tokio::test]
async fn a_body_field_of_the_wrong_type_is_invalid() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let request = create(
        "shared_info",
        json!({ "category": "three", "formed_at_ms": 1 }),
        "2026-09-28 11:05",
    );
    haibin
        .invalid(
            "shared_info",
            |mut c| async move { c.create(request).await },
        )
        .await;
}

#[tokio::test]
async fn an_edit_patch_that_is_not_a_json_object_of_known_fields_is_invalid() {
    let (haibin, id) = haibin_with_a_transfer().await;
    for (patch, named) in [
        ("{\"title\": ", "not valid JSON"),
        ("[\"title\"]", "JSON object"),
        ("{\"colour\": \"red\"}", "colour"),
        ("{}", "names no field"),
        ("  { }  ", "names no field"),
    ] {
        let id = id.clone();
        haibin
            .invalid(named, |mut c| async move {
                c.edit_body(pb::EditBodyRequest {
                    id,
                    patch_json: patch.into(),
                })
                .await
            })
            .await;
    }
}

#[tokio::test]
async fn unknown_action_is_invalid_naming_it() {
    let (haibin, id) = haibin_with_a_transfer().await;
    let request = event(&id, "teleported", "2026-09-28 12:00");
    haibin
        .invalid("teleported", |mut c| async move {
            c.append_event(request).await
        })
        .await;
}

#[tokio::test]
async fn too_many_attachments_are_invalid() {
    let (haibin, id) = haibin_with_a_transfer().await;
    let request = pb::AppendEventRequest {
        attachments: vec!["a.pdf".into(); 257],
        ..event(&id, "updated", "2026-09-28 12:00")
    };
    haibin
        .invalid("256 attachment", |mut c| async move {
            c.append_event(request).await
        })
        .await;
}

#[tokio::test]
async fn unknown_record_id_is_not_found_by_every_call() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let missing = "TR-0000000000000000";
    let not_found = |status: tonic::Status| {
        assert!(status.message().contains(missing), "{status:?}");
    };
    not_found(
        haibin
            .refused(Code::NotFound, |mut c| async move {
                c.get(pb::GetRecordRequest { id: missing.into() }).await
            })
            .await,
    );
    not_found(
        haibin
            .refused(Code::NotFound, |mut c| async move {
                c.append_event(event(missing, "received", "2026-09-28 12:00"))
                    .await
            })
            .await,
    );
    not_found(
        haibin
            .refused(Code::NotFound, |mut c| async move {
                c.history(pb::HistoryRequest { id: missing.into() }).await
            })
            .await,
    );
    not_found(
        haibin
            .refused(Code::NotFound, |mut c| async move {
                c.edit_body(pb::EditBodyRequest {
                    id: missing.into(),
                    patch_json: r#"{"title": "noise"}"#.into(),
                })
                .await
            })
            .await,
    );
    not_found(
        haibin
            .refused(Code::NotFound, |mut c| async move {
                c.add_parties(pb::AddPartiesRequest {
                    id: missing.into(),
                    parties: vec![MARKET.into()],
                    note: String::new(),
                })
                .await
            })
            .await,
    );
}

/// A request that names no record is refused as invalid, saying so, rather than answered
/// "record  not found"; a malformed id is shown escaped and, if long, cut short.
#[tokio::test]
async fn an_empty_or_malformed_record_id_is_answered_clearly() {
    let (haibin, _) = haibin_with_a_transfer().await;
    haibin
        .invalid("names no record", |mut c| async move {
            c.get(pb::GetRecordRequest { id: String::new() }).await
        })
        .await;
    haibin
        .invalid("names no record", |mut c| async move {
            c.history(pb::HistoryRequest { id: String::new() }).await
        })
        .await;
    haibin
        .invalid("names no record", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id: String::new(),
                patch_json: r#"{"title":"x"}"#.into(),
            })
            .await
        })
        .await;
    haibin
        .invalid("names no record", |mut c| async move {
            c.append_event(event("", "updated", "2026-09-28 12:00"))
                .await
        })
        .await;
    haibin
        .invalid("names no record", |mut c| async move {
            c.add_parties(pb::AddPartiesRequest {
                id: String::new(),
                parties: vec![MARKET.into()],
                ..Default::default()
            })
            .await
        })
        .await;

    let status = haibin
        .refused(Code::NotFound, |mut c| async move {
            c.get(pb::GetRecordRequest {
                id: "TR-\u{1}abc\nnext line".into(),
            })
            .await
        })
        .await;
    assert_eq!(
        status.message(),
        r#"record "TR-\u{1}abc\nnext line" not found"#
    );

    let long = "X".repeat(5_000);
    let message = haibin
        .invalid("longer than any record id", |mut c| async move {
            c.history(pb::HistoryRequest { id: long }).await
        })
        .await;
    assert!(
        message.len() < 250 && message.contains("(5000 characters) is 5000 bytes"),
        "{message}"
    );
}

/// Record ids are at most 256 bytes, on the node's API as in sync sessions: one byte more is
/// refused as invalid by every call that names a record, naming the limit, while an unknown
/// id of exactly 256 bytes is still just not found.
#[tokio::test]
async fn a_record_id_past_256_bytes_is_refused_by_every_call() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let longest = "T".repeat(256);
    let status = haibin
        .refused(Code::NotFound, |mut c| async move {
            c.get(pb::GetRecordRequest { id: longest }).await
        })
        .await;
    assert!(status.message().contains("not found"), "{status:?}");

    // 86 three-byte characters: 258 bytes, though only 86 characters.
    let too_long = "案".repeat(86);
    let limit = "at most 256 bytes";
    let id = too_long.clone();
    haibin
        .invalid(limit, |mut c| async move {
            c.get(pb::GetRecordRequest { id }).await
        })
        .await;
    let id = too_long.clone();
    haibin
        .invalid(limit, |mut c| async move {
            c.history(pb::HistoryRequest { id }).await
        })
        .await;
    let id = too_long.clone();
    haibin
        .invalid(limit, |mut c| async move {
            c.append_event(event(&id, "received", "2026-09-28 12:00"))
                .await
        })
        .await;
    let id = too_long.clone();
    haibin
        .invalid(limit, |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id,
                patch_json: r#"{"title": "noise"}"#.into(),
            })
            .await
        })
        .await;
    haibin
        .invalid(limit, |mut c| async move {
            c.add_parties(pb::AddPartiesRequest {
                id: too_long,
                parties: vec![MARKET.into()],
                ..Default::default()
            })
            .await
        })
        .await;
}

/// A refusal that echoes a very long value (a party, an action, an organisation) is cut short
/// and still says what was wrong: past about 16,000 characters the whole message no longer
/// fitted the response and the client saw only an HTTP/2 protocol error.
#[tokio::test]
async fn a_refusal_echoing_a_huge_value_is_cut_short_and_still_says_why() {
    let (haibin, id) = haibin_with_a_transfer().await;
    let huge = "z".repeat(20_000);
    let cut_short = |message: &str| {
        assert!(
            message.chars().count() < 1_100 && message.contains("cut short"),
            "{} characters: {}…",
            message.chars().count(),
            &message[..200.min(message.len())]
        );
    };

    let (party, at) = (huge.clone(), id.clone());
    let message = haibin
        .refused_by("directory", |mut c| async move {
            c.add_parties(pb::AddPartiesRequest {
                id: at,
                parties: vec![party],
                ..Default::default()
            })
            .await
        })
        .await;
    cut_short(&message);

    let (action, at) = (huge.clone(), id.clone());
    let message = haibin
        .invalid("unknown workflow action", |mut c| async move {
            c.append_event(event(&at, &action, "2026-09-28 12:00"))
                .await
        })
        .await;
    cut_short(&message);

    let org = huge.clone();
    let message = haibin
        .invalid(
            "is not in this node's organisation directory",
            |mut c| async move {
                c.obligations(pb::ObligationsRequest {
                    org,
                    ..Default::default()
                })
                .await
            },
        )
        .await;
    cut_short(&message);
}

/// A body's reference to another record (`related_record`) past 256 bytes, longer than any
/// record id, is refused as invalid, naming the field and the limit, on create and on edit;
/// the record created with a reference of 256 bytes keeps its body.
#[tokio::test]
async fn a_reference_longer_than_any_record_id_is_invalid() {
    let (haibin, _) = haibin_with_a_transfer().await;
    let with_reference = |reference: String| {
        let mut body = shared_info_body(3);
        body["related_record"] = json!(reference);
        create("shared_info", body, "2026-10-09 08:00")
    };
    let request = with_reference("R".repeat(257));
    haibin
        .invalid(
            "related_record is 257 bytes, longer than any record id (at most 256 bytes)",
            |mut c| async move { c.create(request).await },
        )
        .await;

    let info = haibin.create(with_reference("R".repeat(256))).await;
    let id = info.envelope.unwrap().id;
    haibin
        .invalid("related_record is 300 bytes", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id,
                patch_json: json!({ "related_record": "R".repeat(300) }).to_string(),
            })
            .await
        })
        .await;
}
