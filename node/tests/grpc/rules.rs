//! Every rule of `node/src/workflow.rs` that a node checks, through gRPC: each test is named
//! after its rule ID, expects FAILED_PRECONDITION with a message that starts with that ID, and
//! checks that the refused request stored nothing ([`TestNode::refused`]).

use linkage_proto::v1 as pb;
use serde_json::{Value, json};

use crate::support::*;

fn id_of(record: &pb::Record) -> String {
    record.envelope.as_ref().unwrap().id.clone()
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

/// Event 1's transfer, sent by Haibin and held by market supervision too.
async fn transfer_at_market() -> (TestNode, TestNode, String) {
    let haibin = TestNode::start(HAIBIN).await;
    let market = TestNode::start(MARKET).await;
    let id = id_of(
        &haibin
            .create(create(
                "transfer",
                transfer_body(HAIBIN, MARKET),
                "2026-09-28 11:05",
            ))
            .await,
    );
    deliver(&haibin, &market, &id);
    (haibin, market, id)
}

/// A dispute of Urban Management against Dongshan, held by both.
async fn dispute_between_urban_and_dongshan() -> (TestNode, TestNode, String) {
    let urban = TestNode::start(URBAN).await;
    let dongshan = TestNode::start(DONGSHAN).await;
    let id = id_of(
        &urban
            .create(create(
                "dispute",
                dispute_body(URBAN, DONGSHAN),
                "2026-10-10 10:00",
            ))
            .await,
    );
    deliver(&urban, &dongshan, &id);
    (urban, dongshan, id)
}

async fn add_parties(node: &TestNode, id: &str, parties: &[&str]) -> pb::Record {
    node.client()
        .add_parties(pb::AddPartiesRequest {
            id: id.into(),
            parties: parties.iter().map(|p| (*p).to_owned()).collect(),
            note: String::new(),
        })
        .await
        .expect("a party adds parties")
        .into_inner()
}

fn minutes(request: pb::AppendEventRequest) -> pb::AppendEventRequest {
    pb::AppendEventRequest {
        attachments: vec!["纪要 minutes.pdf".into()],
        ..request
    }
}

// ---- Transfers (T) ----

#[tokio::test]
async fn t4_transfer_in_a_units_name_is_refused_naming_who_may_send() {
    let haibin = TestNode::start(HAIBIN).await;
    let message = haibin
        .create_refused_by(
            "T-4",
            create(
                "transfer",
                transfer_body(HAIBIN_TEAM, MARKET),
                "2026-09-28 10:40",
            ),
        )
        .await;
    assert!(
        message.contains("综合行政执法队 Comprehensive Enforcement Team (130304100-zhzfd")
            && message.contains("may not send it"),
        "names the unit refused: {message}"
    );
    assert!(
        message.contains("海滨镇人民政府 Haibin Town (130304100) may"),
        "names who may send: {message}"
    );
}

#[tokio::test]
async fn t4_a_departments_squad_may_not_send_a_transfer_either() {
    let urban = TestNode::start(URBAN).await;
    let message = urban
        .create_refused_by(
            "T-4",
            create(
                "transfer",
                transfer_body(URBAN_SQUAD, DAIHE),
                "2026-09-28 10:40",
            ),
        )
        .await;
    assert!(message.contains("(bdh-cgzf) may"), "{message}");
}

#[tokio::test]
async fn t4_a_transfer_in_another_organisations_name_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    let message = haibin
        .create_refused_by(
            "T-4",
            create("transfer", transfer_body(DAIHE, MARKET), "2026-09-28 10:40"),
        )
        .await;
    assert!(message.contains(HAIBIN), "{message}");
}

#[tokio::test]
async fn t1_a_transfer_goes_between_a_township_and_a_department() {
    let haibin = TestNode::start(HAIBIN).await;
    haibin
        .create_refused_by(
            "T-1",
            create("transfer", transfer_body(HAIBIN, DAIHE), "2026-09-28 10:40"),
        )
        .await;
    let market = TestNode::start(MARKET).await;
    market
        .create_refused_by(
            "T-1",
            create("transfer", transfer_body(MARKET, URBAN), "2026-09-28 10:40"),
        )
        .await;
}

#[tokio::test]
async fn t1_a_transfer_to_its_own_sender_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    haibin
        .create_refused_by(
            "T-1",
            create(
                "transfer",
                transfer_body(HAIBIN, HAIBIN),
                "2026-09-28 10:40",
            ),
        )
        .await;
}

/// A transfer stated as sent before its matter was discovered would count T-1 as met before
/// its clock started.
#[tokio::test]
async fn t1_a_transfer_sent_before_its_discovery_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    // Discovered at 2026-09-28 10:20.
    let message = haibin
        .create_refused_by(
            "T-1",
            create(
                "transfer",
                transfer_body(HAIBIN, MARKET),
                "2026-09-01 10:00",
            ),
        )
        .await;
    assert!(
        message.contains("after the matter is discovered"),
        "{message}"
    );
    haibin
        .create(create(
            "transfer",
            transfer_body(HAIBIN, MARKET),
            "2026-09-28 10:20",
        ))
        .await;
}

#[tokio::test]
async fn t1_a_transfer_without_its_discovery_time_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    let body = with(transfer_body(HAIBIN, MARKET), "discovered_at_ms", json!(0));
    let message = haibin
        .create_refused_by("T-1", create("transfer", body, "2026-09-28 10:40"))
        .await;
    assert!(message.contains("discovered_at_ms"), "{message}");
}

#[tokio::test]
async fn t3_a_transfer_without_a_statement_of_facts_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    let body = with(transfer_body(HAIBIN, MARKET), "facts", json!("  "));
    haibin
        .create_refused_by("T-3", create("transfer", body, "2026-09-28 10:40"))
        .await;
}

#[tokio::test]
async fn t3_a_transfer_without_its_transfer_letter_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    let body = with(
        transfer_body(HAIBIN, MARKET),
        "materials",
        json!([{"kind": "evidence", "name": "photo-1.jpg"}]),
    );
    let message = haibin
        .create_refused_by("T-3", create("transfer", body, "2026-09-28 10:40"))
        .await;
    assert!(message.contains("移送函"), "{message}");
}

#[tokio::test]
async fn transfer_sender_and_receiver_must_be_organisations_in_the_directory() {
    let haibin = TestNode::start(HAIBIN).await;
    haibin
        .create_refused_by(
            "directory",
            create(
                "transfer",
                transfer_body("bdh-nowhere", MARKET),
                "2026-09-28 10:40",
            ),
        )
        .await;
    for receiver in ["bdh-nowhere", URBAN_SQUAD] {
        let message = haibin
            .create_refused_by(
                "directory",
                create(
                    "transfer",
                    transfer_body(HAIBIN, receiver),
                    "2026-09-28 10:40",
                ),
            )
            .await;
        assert!(message.contains(receiver), "{message}");
    }
}

#[tokio::test]
async fn t5_only_the_receiver_accepts() {
    let (haibin, _market, id) = transfer_at_market().await;
    for action in ["received", "accepted", "objected"] {
        let message = haibin
            .append_refused_by(
                "T-5",
                pb::AppendEventRequest {
                    reason: "because".into(),
                    ..event(&id, action, "2026-09-28 12:00")
                },
            )
            .await;
        assert!(
            message.contains("only the receiver 北戴河区市场监督管理局 Market Supervision Bureau"),
            "names the receiver: {message}"
        );
    }
}

#[tokio::test]
async fn t5_receipt_is_acknowledged_before_accepting_or_objecting() {
    let (_haibin, market, id) = transfer_at_market().await;
    let message = market
        .append_refused_by("T-5", event(&id, "accepted", "2026-10-08 09:30"))
        .await;
    assert!(message.contains("送达回证"), "{message}");
    market
        .append_refused_by(
            "T-5",
            pb::AppendEventRequest {
                reason: "not ours".into(),
                ..event(&id, "objected", "2026-10-08 09:30")
            },
        )
        .await;
}

/// An office decides a transfer once: receipt acknowledged once, then accepted or objected to,
/// not both one after the other (both at once is a conflict only two devices unseen by each
/// other can make). Each repeat is refused by name, nothing stored.
#[tokio::test]
async fn t5_the_receiver_decides_a_transfer_once() {
    let (_haibin, market, id) = transfer_at_market().await;
    market
        .append(event(&id, "received", "2026-09-28 14:00"))
        .await;
    let message = market
        .append_refused_by("T-5", event(&id, "received", "2026-09-28 14:05"))
        .await;
    assert!(message.contains("already acknowledged"), "{message}");

    market
        .append(event(&id, "accepted", "2026-09-28 15:00"))
        .await;
    let message = market
        .append_refused_by(
            "T-5",
            pb::AppendEventRequest {
                reason: "not ours".into(),
                ..event(&id, "objected", "2026-09-28 15:10")
            },
        )
        .await;
    assert!(message.contains("already accepted"), "{message}");
    let message = market
        .append_refused_by("T-5", event(&id, "accepted", "2026-09-28 15:20"))
        .await;
    assert!(message.contains("already accepted"), "{message}");
    assert_eq!(market.get(&id).await.status, "accepted");
}

/// An act stated before its record was opened would start clocks before the record existed
/// (a receipt of 2020 made T-5 due in 2020 on a transfer sent in 2026).
#[tokio::test]
async fn an_act_stated_before_the_record_was_opened_is_refused() {
    let (_haibin, market, id) = transfer_at_market().await;
    let message = market
        .append_refused_by("workflow", event(&id, "received", "2020-01-01 09:00"))
        .await;
    assert!(
        message.contains("2020-01-01 09:00") && message.contains("2026-09-28 11:05"),
        "{message}"
    );
    market
        .append(event(&id, "received", "2026-09-28 11:05"))
        .await;
}

#[tokio::test]
async fn t5_an_objection_states_its_reasons() {
    let (_haibin, market, id) = transfer_at_market().await;
    market
        .append(event(&id, "received", "2026-10-08 09:30"))
        .await;
    for reason in ["", "   "] {
        let message = market
            .append_refused_by(
                "T-5",
                pb::AppendEventRequest {
                    reason: reason.into(),
                    ..event(&id, "objected", "2026-10-08 09:40")
                },
            )
            .await;
        assert!(message.contains("reason"), "{message}");
    }
}

#[tokio::test]
async fn edited_transfer_body_is_checked_again_t4() {
    let haibin = TestNode::start(HAIBIN).await;
    let id = id_of(
        &haibin
            .create(create(
                "transfer",
                transfer_body(HAIBIN, MARKET),
                "2026-09-28 11:05",
            ))
            .await,
    );
    haibin
        .refused_by("T-4", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id,
                patch_json: json!({ "sender": HAIBIN_TEAM }).to_string(),
            })
            .await
        })
        .await;
}

// ---- Complaints (C) ----

#[tokio::test]
async fn c1_a_complaint_is_registered_by_the_office_that_received_it() {
    let market = TestNode::start(MARKET).await;
    market
        .create_refused_by(
            "C-1",
            create(
                "complaint",
                complaint_body(URBAN, DAIHE),
                "2026-09-28 15:00",
            ),
        )
        .await;
}

#[tokio::test]
async fn c3_a_complaint_is_handled_by_a_township_not_a_department() {
    let market = TestNode::start(MARKET).await;
    let message = market
        .create_refused_by(
            "C-3",
            create(
                "complaint",
                complaint_body(MARKET, URBAN),
                "2026-09-28 15:00",
            ),
        )
        .await;
    assert!(message.contains("bdh-cgzf"), "{message}");
    market
        .create_refused_by(
            "directory",
            create(
                "complaint",
                complaint_body(MARKET, "130304999"),
                "2026-09-28 15:00",
            ),
        )
        .await;
}

/// C-5: a record travels whole to every party's node, so a complaint that names its
/// complainant takes no party but the receiving unit and the handling township, at creation
/// or later; refused by name, nothing stored. An anonymous complaint may be shared.
#[tokio::test]
async fn c5_a_complaint_naming_its_complainant_has_only_its_handlers_as_parties() {
    let market = TestNode::start(MARKET).await;
    let mut wider = create(
        "complaint",
        complaint_body(MARKET, DAIHE),
        "2026-09-28 15:00",
    );
    wider.parties = vec![DAIHE.into(), HAIBIN.into()];
    let message = market.create_refused_by("C-5", wider).await;
    assert!(message.contains(HAIBIN), "{message}");

    let id = id_of(
        &market
            .create(create(
                "complaint",
                complaint_body(MARKET, DAIHE),
                "2026-09-28 15:00",
            ))
            .await,
    );
    let message = market
        .refused_by("C-5", |mut c| {
            let id = id.clone();
            async move {
                c.add_parties(pb::AddPartiesRequest {
                    id,
                    parties: vec![HAIBIN.into()],
                    note: String::new(),
                })
                .await
            }
        })
        .await;
    assert!(
        message.contains(HAIBIN) && message.contains(&id),
        "{message}"
    );

    let mut anonymous = complaint_body(MARKET, DAIHE);
    anonymous["complainant"] = Value::Null;
    let shared = id_of(
        &market
            .create(create("complaint", anonymous, "2026-09-28 15:00"))
            .await,
    );
    let widened = add_parties(&market, &shared, &[HAIBIN]).await;
    assert!(
        widened
            .envelope
            .as_ref()
            .is_some_and(|e| e.parties.iter().any(|p| p == HAIBIN))
    );
}

/// Event 2: market supervision registers, tells the complainant and notifies Daihe Town.
#[tokio::test]
async fn c3_a_department_forwards_a_complaint_and_a_township_may_not() {
    let market = TestNode::start(MARKET).await;
    let id = id_of(
        &market
            .create(create(
                "complaint",
                complaint_body(MARKET, DAIHE),
                "2026-09-28 15:00",
            ))
            .await,
    );
    let forwarded = market
        .append(event(&id, "forwarded", "2026-09-28 15:10"))
        .await;
    assert_eq!(forwarded.status, "forwarded");
    market
        .append(event(&id, "material_handed_over", "2026-09-28 15:20"))
        .await;

    let daihe = TestNode::start(DAIHE).await;
    let own = id_of(
        &daihe
            .create(create(
                "complaint",
                complaint_body(DAIHE, DAIHE),
                "2026-09-28 15:00",
            ))
            .await,
    );
    let message = daihe
        .append_refused_by("C-3", event(&own, "forwarded", "2026-09-28 15:10"))
        .await;
    assert!(message.contains("department forwards"), "{message}");
}

#[tokio::test]
async fn c2_only_the_handling_township_accepts_answers_and_reports() {
    let market = TestNode::start(MARKET).await;
    let daihe = TestNode::start(DAIHE).await;
    let id = id_of(
        &market
            .create(create(
                "complaint",
                complaint_body(MARKET, DAIHE),
                "2026-09-28 15:00",
            ))
            .await,
    );
    for action in [
        "accepted",
        "answered",
        "case_opened",
        "transferred",
        "result_told",
        "result_reported",
    ] {
        let message = market
            .append_refused_by("C-2", event(&id, action, "2026-09-28 16:00"))
            .await;
        assert!(message.contains("戴河镇人民政府 Daihe Town"), "{message}");
    }
    deliver(&market, &daihe, &id);
    daihe
        .append(event(&id, "accepted", "2026-09-29 09:00"))
        .await;
    let answered = daihe
        .append(event(&id, "answered", "2026-09-30 09:00"))
        .await;
    assert_eq!(answered.status, "answered");
}

// ---- Information sharing (S) ----

#[tokio::test]
async fn s1_information_category_is_1_to_8() {
    let dongshan = TestNode::start(DONGSHAN).await;
    for category in [0, 9] {
        let message = dongshan
            .create_refused_by(
                "S-1",
                create(
                    "shared_info",
                    shared_info_body(category),
                    "2026-09-30 14:00",
                ),
            )
            .await;
        assert!(message.contains(&category.to_string()), "{message}");
    }
}

#[tokio::test]
async fn s2_information_needs_the_time_it_was_formed() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let body = with(shared_info_body(3), "formed_at_ms", json!(0));
    dongshan
        .create_refused_by("S-2", create("shared_info", body, "2026-09-30 14:00"))
        .await;
}

/// Event 5: Dongshan cannot share its decision the same day and extends, with a reason.
#[tokio::test]
async fn s2_extension_needs_a_reason_and_at_most_15_wd() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let id = id_of(
        &dongshan
            .create(create(
                "shared_info",
                shared_info_body(3),
                "2026-09-30 14:00",
            ))
            .await,
    );
    let extension = |reason: &str, wd: u32| pb::AppendEventRequest {
        reason: reason.into(),
        extension_wd: wd,
        ..event(&id, "extended", "2026-09-30 14:10")
    };
    let no_reason = dongshan.append_refused_by("S-2", extension("", 15)).await;
    assert!(no_reason.contains("reason"), "{no_reason}");
    let too_long = dongshan
        .append_refused_by("S-2", extension("node offline", 16))
        .await;
    assert!(too_long.contains("at most 15"), "{too_long}");
    let no_length = dongshan
        .append_refused_by("S-2", extension("node offline", 0))
        .await;
    assert!(no_length.contains("extension_wd"), "{no_length}");

    let extended = dongshan
        .append(extension("节点离线 node offline over the holiday", 15))
        .await;
    assert_eq!(extended.status, "extended");
    assert_eq!(extended.events[1].extension_wd, 15);
    let again = dongshan
        .append_refused_by("S-2", extension("still offline", 1))
        .await;
    assert!(again.contains("only once"), "{again}");
}

#[tokio::test]
async fn s2_sharing_is_not_extended_once_shared() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let id = id_of(
        &dongshan
            .create(create(
                "shared_info",
                shared_info_body(3),
                "2026-09-30 14:00",
            ))
            .await,
    );
    dongshan
        .append(event(&id, "shared", "2026-09-30 15:00"))
        .await;
    dongshan
        .append_refused_by(
            "S-2",
            pb::AppendEventRequest {
                reason: "late".into(),
                extension_wd: 2,
                ..event(&id, "extended", "2026-09-30 16:00")
            },
        )
        .await;
}

/// An extension recorded after the day the item was formed would be stored but never counted
/// (the obligation stays due at 24:00 of that day), so the office refuses it.
#[tokio::test]
async fn s2_an_extension_after_the_day_it_was_formed_is_refused() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let id = id_of(
        &dongshan
            .create(create(
                "shared_info",
                shared_info_body(3),
                "2026-09-30 14:00",
            ))
            .await,
    );
    let message = dongshan
        .append_refused_by(
            "S-2",
            pb::AppendEventRequest {
                reason: "materials still being collated".into(),
                extension_wd: 5,
                ..event(&id, "extended", "2026-10-08 09:00")
            },
        )
        .await;
    assert!(message.contains("2026-09-30 24:00 +08:00"), "{message}");
    assert!(message.contains("2026-10-08 09:00 +08:00"), "{message}");
}

// ---- Joint enforcement (J) ----

#[tokio::test]
async fn j3_an_urgent_notice_is_sent_by_this_nodes_organisation() {
    let niutouya = TestNode::start(NIUTOUYA).await;
    niutouya
        .create_refused_by(
            "J-3",
            create(
                "urgent_notice",
                urgent_notice_body(DAIHE, EMERGENCY),
                "2026-09-29 09:00",
            ),
        )
        .await;
    let message = niutouya
        .create_refused_by(
            "directory",
            create(
                "urgent_notice",
                urgent_notice_body(NIUTOUYA, URBAN_SQUAD),
                "2026-09-29 09:00",
            ),
        )
        .await;
    assert!(message.contains("receiver"), "{message}");
    niutouya
        .create_refused_by(
            "J-3",
            create(
                "urgent_notice",
                urgent_notice_body(NIUTOUYA, NIUTOUYA),
                "2026-09-29 09:00",
            ),
        )
        .await;
}

/// Event 3: Niutouya notifies, only the Emergency Management Bureau dispatches or refuses,
/// and Niutouya's report brings in the District People's Government.
#[tokio::test]
async fn j3_only_the_notified_department_dispatches_or_refuses() {
    let niutouya = TestNode::start(NIUTOUYA).await;
    let emergency = TestNode::start(EMERGENCY).await;
    let id = id_of(
        &niutouya
            .create(create(
                "urgent_notice",
                urgent_notice_body(NIUTOUYA, EMERGENCY),
                "2026-09-29 09:00",
            ))
            .await,
    );
    for action in ["dispatched", "refused"] {
        niutouya
            .append_refused_by("J-3", event(&id, action, "2026-09-29 09:30"))
            .await;
    }
    let reported = niutouya
        .append(event(&id, "reported_to_government", "2026-09-29 11:20"))
        .await;
    assert_eq!(reported.status, "reported_to_government");
    assert!(
        reported
            .envelope
            .as_ref()
            .unwrap()
            .parties
            .contains(&GOVERNMENT.to_owned())
    );
    deliver(&niutouya, &emergency, &id);
    emergency
        .append(event(&id, "dispatched", "2026-09-29 14:05"))
        .await;
}

#[tokio::test]
async fn j1_a_meeting_is_convened_by_this_nodes_organisation() {
    let daihe = TestNode::start(DAIHE).await;
    daihe
        .create_refused_by(
            "J-1",
            create(
                "consultation",
                consultation_body(MARKET, "regular"),
                "2026-09-25 09:00",
            ),
        )
        .await;
}

#[tokio::test]
async fn j1_minutes_are_attached_or_written_in_the_note() {
    let daihe = TestNode::start(DAIHE).await;
    let id = id_of(
        &daihe
            .create(create(
                "consultation",
                consultation_body(DAIHE, "ad_hoc"),
                "2026-09-25 09:00",
            ))
            .await,
    );
    daihe
        .append_refused_by("J-1", event(&id, "minuted", "2026-09-25 11:00"))
        .await;
    let minuted = daihe
        .append(pb::AppendEventRequest {
            note: "各方同意节日联合巡查 all agree to joint patrols".into(),
            ..event(&id, "minuted", "2026-09-25 11:00")
        })
        .await;
    assert_eq!(minuted.status, "minuted");
}

#[tokio::test]
async fn j2_a_special_meeting_is_convened_by_a_township() {
    let market = TestNode::start(MARKET).await;
    market
        .create_refused_by(
            "J-2",
            create(
                "consultation",
                consultation_body(MARKET, "special"),
                "2026-09-25 09:00",
            ),
        )
        .await;
    market
        .create(create(
            "consultation",
            consultation_body(MARKET, "regular"),
            "2026-09-25 09:00",
        ))
        .await;
}

#[tokio::test]
async fn j4_an_organisation_names_only_its_own_liaisons() {
    let urban = TestNode::start(URBAN).await;
    let message = urban
        .create_refused_by(
            "J-4",
            create(
                "liaison_directory",
                liaison_body(MARKET),
                "2026-09-01 09:00",
            ),
        )
        .await;
    assert!(message.contains(MARKET), "{message}");
}

// ---- Assistance (A) ----

#[tokio::test]
async fn a1_assistance_is_requested_by_a_township_in_its_own_name() {
    let daihe = TestNode::start(DAIHE).await;
    daihe
        .create_refused_by(
            "A-1",
            create(
                "assistance",
                assistance_body(HAIBIN, ECOLOGY),
                "2026-09-29 14:30",
            ),
        )
        .await;
    let market = TestNode::start(MARKET).await;
    let message = market
        .create_refused_by(
            "A-1",
            create(
                "assistance",
                assistance_body(MARKET, ECOLOGY),
                "2026-09-29 14:30",
            ),
        )
        .await;
    assert!(message.contains("requested by a township"), "{message}");
}

#[tokio::test]
async fn a1_assistance_is_asked_of_a_department() {
    let daihe = TestNode::start(DAIHE).await;
    let message = daihe
        .create_refused_by(
            "A-1",
            create(
                "assistance",
                assistance_body(DAIHE, NIUTOUYA),
                "2026-09-29 14:30",
            ),
        )
        .await;
    assert!(message.contains("Niutouya"), "{message}");
}

/// Event 4: Daihe asks the Ecology and Environment Branch; only the Branch answers.
#[tokio::test]
async fn a1_only_the_department_asked_gives_opinions_guidance_or_officers() {
    let daihe = TestNode::start(DAIHE).await;
    let ecology = TestNode::start(ECOLOGY).await;
    let id = id_of(
        &daihe
            .create(create(
                "assistance",
                assistance_body(DAIHE, ECOLOGY),
                "2026-09-29 14:30",
            ))
            .await,
    );
    for action in [
        "opinion_given",
        "third_party_needed",
        "guidance_given",
        "officers_sent",
    ] {
        daihe
            .append_refused_by("A-1", event(&id, action, "2026-10-09 10:00"))
            .await;
    }
    deliver(&daihe, &ecology, &id);
    let third_party = ecology
        .append(event(&id, "third_party_needed", "2026-10-09 10:00"))
        .await;
    assert_eq!(third_party.status, "awaiting_guidance");
    let guided = ecology
        .append(event(&id, "guidance_given", "2026-10-09 16:00"))
        .await;
    assert_eq!(guided.status, "opinion_given");
}

#[tokio::test]
async fn a3_an_extension_is_announced_in_advance_with_reason_and_length() {
    let daihe = TestNode::start(DAIHE).await;
    let ecology = TestNode::start(ECOLOGY).await;
    let id = id_of(
        &daihe
            .create(create(
                "assistance",
                assistance_body(DAIHE, ECOLOGY),
                "2026-09-29 14:30",
            ))
            .await,
    );
    deliver(&daihe, &ecology, &id);
    let announce = |reason: &str, wd: u32| pb::AppendEventRequest {
        reason: reason.into(),
        extension_wd: wd,
        ..event(&id, "extension_announced", "2026-09-30 10:00")
    };
    let no_reason = ecology.append_refused_by("A-3", announce("", 5)).await;
    assert!(no_reason.contains("reason"), "{no_reason}");
    let no_length = ecology
        .append_refused_by("A-3", announce("long appraisal", 0))
        .await;
    assert!(no_length.contains("extension_wd"), "{no_length}");
    let announced = ecology.append(announce("长期鉴定 long appraisal", 5)).await;
    assert_eq!(announced.events[1].extension_wd, 5);
}

/// A-3's "事先告知": an extension announced after the opinion fell due (12 Oct 24:00) is
/// refused rather than stored and ignored.
#[tokio::test]
async fn a3_an_extension_announced_after_the_due_time_is_refused() {
    let daihe = TestNode::start(DAIHE).await;
    let ecology = TestNode::start(ECOLOGY).await;
    let id = id_of(
        &daihe
            .create(create(
                "assistance",
                assistance_body(DAIHE, ECOLOGY),
                "2026-09-29 14:30",
            ))
            .await,
    );
    deliver(&daihe, &ecology, &id);
    let message = ecology
        .append_refused_by(
            "A-3",
            pb::AppendEventRequest {
                reason: "长期鉴定 long appraisal".into(),
                extension_wd: 5,
                ..event(&id, "extension_announced", "2026-10-13 09:00")
            },
        )
        .await;
    assert!(message.contains("2026-10-12 24:00 +08:00"), "{message}");
}

/// The notice gives A-3 no bound; extensions add up to at most 15 WD (the default taken in
/// `workflow::MAX_ASSISTANCE_EXTENSION_WD`), so +200 WD, or +10 then +6, is refused.
#[tokio::test]
async fn a3_extensions_add_up_to_at_most_15_wd() {
    let daihe = TestNode::start(DAIHE).await;
    let ecology = TestNode::start(ECOLOGY).await;
    let id = id_of(
        &daihe
            .create(create(
                "assistance",
                assistance_body(DAIHE, ECOLOGY),
                "2026-09-29 14:30",
            ))
            .await,
    );
    deliver(&daihe, &ecology, &id);
    let announce = |wd: u32, at: &str| pb::AppendEventRequest {
        reason: "长期鉴定 long appraisal".into(),
        extension_wd: wd,
        ..event(&id, "extension_announced", at)
    };
    let message = ecology
        .append_refused_by("A-3", announce(200, "2026-09-30 10:00"))
        .await;
    assert!(message.contains("at most 15"), "{message}");
    ecology.append(announce(10, "2026-09-30 10:00")).await;
    let message = ecology
        .append_refused_by("A-3", announce(6, "2026-10-09 10:00"))
        .await;
    assert!(message.contains("10 already announced"), "{message}");
    assert!(message.contains("at most 5 more"), "{message}");
    let last = ecology.append(announce(5, "2026-10-09 10:00")).await;
    assert_eq!(last.events.len(), 3);
}

// ---- Disputes (D) ----

#[tokio::test]
async fn d1_a_dispute_is_opened_in_this_nodes_name_against_an_organisation() {
    let dongshan = TestNode::start(DONGSHAN).await;
    dongshan
        .create_refused_by(
            "D-1",
            create("dispute", dispute_body(HAIBIN, URBAN), "2026-10-12 09:00"),
        )
        .await;
    dongshan
        .create_refused_by(
            "directory",
            create(
                "dispute",
                dispute_body(DONGSHAN, URBAN_SQUAD),
                "2026-10-12 09:00",
            ),
        )
        .await;
    dongshan
        .create_refused_by(
            "D-1",
            create(
                "dispute",
                dispute_body(DONGSHAN, DONGSHAN),
                "2026-10-12 09:00",
            ),
        )
        .await;
    // The field that named an unknown organisation is named, not the parties it implied.
    let message = dongshan
        .create_refused_by(
            "directory",
            create(
                "dispute",
                dispute_body(DONGSHAN, "nobody"),
                "2026-10-12 09:00",
            ),
        )
        .await;
    assert!(message.contains("respondent"), "{message}");
}

#[tokio::test]
async fn d1_negotiation_is_minuted_and_between_the_disputing_parties() {
    let (urban, dongshan, id) = dispute_between_urban_and_dongshan().await;
    let message = dongshan
        .append_refused_by("D-1", event(&id, "negotiation_failed", "2026-10-12 16:00"))
        .await;
    assert!(message.contains("minuted"), "{message}");

    add_parties(&urban, &id, &[JUSTICE]).await;
    let justice = TestNode::start(JUSTICE).await;
    deliver(&urban, &justice, &id);
    justice
        .append_refused_by(
            "D-1",
            minutes(event(&id, "negotiation_agreed", "2026-10-12 16:00")),
        )
        .await;
    let agreed = urban
        .append(minutes(event(
            &id,
            "negotiation_agreed",
            "2026-10-12 16:00",
        )))
        .await;
    assert_eq!(agreed.status, "agreed");
}

#[tokio::test]
async fn d2_coordination_is_applied_for_after_negotiation_fails() {
    let (_urban, dongshan, id) = dispute_between_urban_and_dongshan().await;
    let message = dongshan
        .append_refused_by(
            "D-2",
            event(&id, "coordination_applied", "2026-10-13 09:00"),
        )
        .await;
    assert!(message.contains("D-1"), "{message}");
    dongshan
        .append(minutes(event(
            &id,
            "negotiation_failed",
            "2026-10-12 16:00",
        )))
        .await;
    dongshan
        .append(event(&id, "coordination_applied", "2026-10-13 09:00"))
        .await;
}

#[tokio::test]
async fn d2_the_justice_bureau_records_the_outcome_of_coordination() {
    let (urban, dongshan, id) = dispute_between_urban_and_dongshan().await;
    add_parties(&urban, &id, &[JUSTICE]).await;
    let justice = TestNode::start(JUSTICE).await;
    deliver(&urban, &justice, &id);
    let not_applied = justice
        .append_refused_by("D-2", event(&id, "coordination_failed", "2026-10-14 09:00"))
        .await;
    assert!(not_applied.contains("applied"), "{not_applied}");
    justice
        .append_refused_by(
            "D-2",
            event(&id, "coordination_applied", "2026-10-14 09:00"),
        )
        .await;

    dongshan
        .append(minutes(event(
            &id,
            "negotiation_failed",
            "2026-10-12 16:00",
        )))
        .await;
    dongshan
        .append(event(&id, "coordination_applied", "2026-10-13 09:00"))
        .await;
    for action in ["coordination_agreed", "coordination_failed"] {
        let message = dongshan
            .append_refused_by("D-2", event(&id, action, "2026-10-14 09:00"))
            .await;
        assert!(message.contains("Justice Bureau"), "{message}");
    }
    deliver(&dongshan, &justice, &id);
    let agreed = justice
        .append(event(&id, "coordination_agreed", "2026-10-14 09:00"))
        .await;
    assert_eq!(agreed.status, "agreed");
}

#[tokio::test]
async fn d3_the_proposal_follows_failed_coordination_and_the_government_decides() {
    let (urban, dongshan, id) = dispute_between_urban_and_dongshan().await;
    add_parties(&urban, &id, &[JUSTICE, GOVERNMENT]).await;
    let justice = TestNode::start(JUSTICE).await;
    let government = TestNode::start(GOVERNMENT).await;
    deliver(&urban, &justice, &id);
    deliver(&urban, &government, &id);
    justice
        .append_refused_by("D-3", event(&id, "proposal_submitted", "2026-10-20 09:00"))
        .await;
    government
        .append_refused_by("D-3", event(&id, "government_decided", "2026-10-28 09:00"))
        .await;
    dongshan
        .append_refused_by("D-3", event(&id, "proposal_submitted", "2026-10-20 09:00"))
        .await;

    deliver(&urban, &dongshan, &id);
    dongshan
        .append(minutes(event(
            &id,
            "negotiation_failed",
            "2026-10-12 16:00",
        )))
        .await;
    dongshan
        .append(event(&id, "coordination_applied", "2026-10-13 09:00"))
        .await;
    deliver(&dongshan, &justice, &id);
    justice
        .append(event(&id, "coordination_failed", "2026-10-19 09:00"))
        .await;
    let message = government
        .append_refused_by("D-3", event(&id, "government_decided", "2026-10-28 09:00"))
        .await;
    assert!(message.contains("proposal"), "{message}");
    let proposed = justice
        .append(event(&id, "proposal_submitted", "2026-10-20 09:00"))
        .await;
    assert_eq!(proposed.status, "awaiting_decision");
    let decided_elsewhere = dongshan
        .append_refused_by("D-3", event(&id, "government_decided", "2026-10-28 09:00"))
        .await;
    assert!(
        decided_elsewhere.contains("Government"),
        "{decided_elsewhere}"
    );
    deliver(&justice, &government, &id);
    let decided = government
        .append(event(&id, "government_decided", "2026-10-28 09:00"))
        .await;
    assert_eq!(decided.status, "decided");
}

// ---- Calendar, directory, parties and the workflow table ----

#[tokio::test]
async fn calendar_is_published_only_by_the_justice_bureau() {
    let market = TestNode::start(MARKET).await;
    let message = market
        .create_refused_by(
            "calendar",
            create("calendar", calendar_body(2027), "2026-12-01 09:00"),
        )
        .await;
    assert!(message.contains("Justice Bureau"), "{message}");
    let justice = TestNode::start(JUSTICE).await;
    justice
        .create_refused_by(
            "calendar",
            create("calendar", calendar_body(1999), "2026-12-01 09:00"),
        )
        .await;
    let mut misdated = calendar_body(2027);
    misdated["off_days"] = json!(["2027-02-30"]);
    let message = justice
        .create_refused_by("calendar", create("calendar", misdated, "2026-12-01 09:00"))
        .await;
    assert!(message.contains("2027-02-30"), "{message}");
    let mut doubled = calendar_body(2027);
    doubled["off_days"] = json!(["2027-01-01", "2027-01-01"]);
    let message = justice
        .create_refused_by("calendar", create("calendar", doubled, "2026-12-01 09:00"))
        .await;
    assert!(message.contains("2027-01-01 is listed twice"), "{message}");
    let published = justice
        .create(create("calendar", calendar_body(2027), "2026-12-01 09:00"))
        .await;
    assert_eq!(published.status, "published");
}

/// The reviewer's record: a 2026 calendar with no days off, which would have moved every
/// deadline over National Day. 2021–2026 are official (embedded); a record may only repeat
/// them.
#[tokio::test]
async fn calendar_an_official_year_is_refused_unless_it_repeats_the_notice() {
    let justice = TestNode::start(JUSTICE).await;
    let empty = json!({
        "year": 2026, "off_days": [], "make_up_days": [],
        "source": "国务院办公厅通知 State Council notice",
    });
    let message = justice
        .create_refused_by("calendar", create("calendar", empty, "2026-12-01 09:00"))
        .await;
    assert!(message.contains("2026"), "{message}");
    assert!(message.contains("already official"), "{message}");
    assert!(message.contains("官方"), "bilingual: {message}");

    let without_national_day = json!({
        "year": 2026, "off_days": ["2026-01-01"], "make_up_days": [],
        "source": "国务院办公厅通知 State Council notice",
    });
    justice
        .create_refused_by(
            "calendar",
            create("calendar", without_national_day, "2026-12-01 09:00"),
        )
        .await;

    let official = linkage_node::calendar::Calendar::official();
    let notice = official.years().find(|y| y.year() == 2026).unwrap();
    let repeated = json!({
        "year": 2026,
        "off_days": notice.off_days().map(|d| d.to_string()).collect::<Vec<_>>(),
        "make_up_days": notice.make_up_days().map(|d| d.to_string()).collect::<Vec<_>>(),
        "source": notice.source(),
    });
    justice
        .create(create("calendar", repeated, "2026-12-01 09:00"))
        .await;
}

/// A provisional year (2027) stays publishable and re-issuable (the newest wins), but each
/// record names its notice and lists at least one statutory holiday.
#[tokio::test]
async fn calendar_a_record_names_its_source_and_lists_a_holiday() {
    let justice = TestNode::start(JUSTICE).await;
    let without_source = with(calendar_body(2027), "source", json!("  "));
    let message = justice
        .create_refused_by(
            "calendar",
            create("calendar", without_source, "2026-12-01 09:00"),
        )
        .await;
    assert!(message.contains("source"), "{message}");
    let without_holidays = with(calendar_body(2027), "off_days", json!([]));
    let message = justice
        .create_refused_by(
            "calendar",
            create("calendar", without_holidays, "2026-12-01 09:00"),
        )
        .await;
    assert!(message.contains("off_days"), "{message}");
    let next_year = with(calendar_body(2027), "off_days", json!(["2028-01-01"]));
    let message = justice
        .create_refused_by(
            "calendar",
            create("calendar", next_year, "2026-12-01 09:00"),
        )
        .await;
    assert!(message.contains("2028-01-01"), "{message}");

    justice
        .create(create("calendar", calendar_body(2027), "2026-12-01 09:00"))
        .await;
    let reissued = with(
        calendar_body(2027),
        "off_days",
        json!(["2027-01-01", "2027-02-08"]),
    );
    justice
        .create(create("calendar", reissued, "2026-12-02 09:00"))
        .await;
}

// ---- Stated instants (schema) ----

/// Year 9999, `i64::MAX` and 1 ms after 1970 were stored, and the T-1 duty never appeared or
/// fell due in 1970. Each is refused naming the field and showing the value in Beijing time.
#[tokio::test]
async fn schema_an_impossible_instant_in_a_body_is_refused_naming_the_field() {
    let haibin = TestNode::start(HAIBIN).await;
    for (value, shown) in [
        (json!(i64::MAX), "no representable instant"),
        (json!(bj("9999-12-31 12:00")), "9999-12-31 12:00 +08:00"),
        (json!(1), "1970-01-01 08:00:00.001 +08:00"),
    ] {
        let body = with(transfer_body(HAIBIN, MARKET), "discovered_at_ms", value);
        let message = haibin
            .create_refused_by("schema", create("transfer", body, "2026-09-28 11:05"))
            .await;
        assert!(message.contains("discovered_at_ms"), "{message}");
        assert!(message.contains(shown), "{message}");
    }
    let body = with(
        transfer_body(HAIBIN, MARKET),
        "non_jurisdiction_at_ms",
        json!(bj("2100-01-01 00:00")),
    );
    let message = haibin
        .create_refused_by("schema", create("transfer", body, "2026-09-28 11:05"))
        .await;
    assert!(message.contains("non_jurisdiction_at_ms"), "{message}");

    let dongshan = TestNode::start(DONGSHAN).await;
    let far_future = with(
        shared_info_body(3),
        "formed_at_ms",
        json!(bj("2300-01-01 09:00")),
    );
    let message = dongshan
        .create_refused_by(
            "schema",
            create("shared_info", far_future, "2026-09-30 14:00"),
        )
        .await;
    assert!(message.contains("formed_at_ms"), "{message}");
    assert!(message.contains("2300-01-01 09:00 +08:00"), "{message}");
}

#[tokio::test]
async fn schema_an_impossible_instant_is_refused_on_a_body_edit() {
    let dongshan = TestNode::start(DONGSHAN).await;
    let id = id_of(
        &dongshan
            .create(create(
                "shared_info",
                shared_info_body(3),
                "2026-09-30 14:00",
            ))
            .await,
    );
    let message = dongshan
        .refused_by("schema", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id,
                patch_json: json!({ "formed_at_ms": bj("9999-01-01 00:00") }).to_string(),
            })
            .await
        })
        .await;
    assert!(message.contains("formed_at_ms"), "{message}");
}

#[tokio::test]
async fn schema_an_impossible_event_time_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    let opened_in_1970 = pb::CreateRecordRequest {
        at_ms: Some(1),
        ..create("case", case_body(), "2026-09-28 09:00")
    };
    let message = haibin.create_refused_by("schema", opened_in_1970).await;
    assert!(message.contains("at_ms of the opened event"), "{message}");

    let id = id_of(
        &haibin
            .create(create("case", case_body(), "2026-09-28 09:00"))
            .await,
    );
    let message = haibin
        .append_refused_by(
            "schema",
            pb::AppendEventRequest {
                at_ms: Some(i64::MAX),
                ..event(&id, "decided", "2026-09-29 10:00")
            },
        )
        .await;
    assert!(message.contains("at_ms of the decided event"), "{message}");
    let message = haibin
        .append_refused_by("schema", event(&id, "decided", "1999-12-31 23:59"))
        .await;
    assert!(message.contains("1999-12-31 23:59 +08:00"), "{message}");
}

#[tokio::test]
async fn an_office_that_is_not_a_party_may_not_act_on_a_record() {
    let (haibin, _market, id) = transfer_at_market().await;
    let daihe = TestNode::start(DAIHE).await;
    deliver(&haibin, &daihe, &id);
    daihe
        .append_refused_by("party", event(&id, "received", "2026-09-28 12:00"))
        .await;
    let edit_id = id.clone();
    daihe
        .refused_by("party", |mut c| async move {
            c.edit_body(pb::EditBodyRequest {
                id: edit_id,
                patch_json: json!({ "title": "mine now" }).to_string(),
            })
            .await
        })
        .await;
    daihe
        .refused_by("party", |mut c| async move {
            c.add_parties(pb::AddPartiesRequest {
                id,
                parties: vec![DAIHE.into()],
                note: String::new(),
            })
            .await
        })
        .await;
}

#[tokio::test]
async fn an_act_in_the_name_of_another_organisations_unit_is_refused() {
    let (_haibin, market, id) = transfer_at_market().await;
    let message = market
        .append_refused_by(
            "directory",
            pb::AppendEventRequest {
                unit: HAIBIN_TEAM.into(),
                ..event(&id, "received", "2026-10-08 09:30")
            },
        )
        .await;
    assert!(message.contains(MARKET), "{message}");
}

/// The same for a record's opening act: `create --unit` names a unit of this organisation
/// (it used to be taken unchecked, another town's team included); a unit of its own is taken.
#[tokio::test]
async fn a_record_opened_in_the_name_of_another_organisations_unit_is_refused() {
    let market = TestNode::start(MARKET).await;
    for unit in [HAIBIN_TEAM, "bdh-scjg-x"] {
        let message = market
            .create_refused_by(
                "directory",
                pb::CreateRecordRequest {
                    unit: unit.into(),
                    ..create("case", case_body(), "2026-09-28 09:00")
                },
            )
            .await;
        assert!(
            message.contains(unit) && message.contains(MARKET),
            "{message}"
        );
    }
    let haibin = TestNode::start(HAIBIN).await;
    haibin
        .create(pb::CreateRecordRequest {
            unit: HAIBIN_TEAM.into(),
            ..create("case", case_body(), "2026-09-28 09:00")
        })
        .await;
}

#[tokio::test]
async fn added_parties_must_be_organisations_in_the_directory() {
    let haibin = TestNode::start(HAIBIN).await;
    let id = id_of(
        &haibin
            .create(create("case", case_body(), "2026-09-28 09:00"))
            .await,
    );
    haibin
        .refused_by("directory", |mut c| async move {
            c.add_parties(pb::AddPartiesRequest {
                id,
                parties: vec![URBAN_SQUAD.into()],
                note: String::new(),
            })
            .await
        })
        .await;
}

#[tokio::test]
async fn a_closed_record_takes_no_further_workflow_events() {
    let haibin = TestNode::start(HAIBIN).await;
    let id = id_of(
        &haibin
            .create(create("case", case_body(), "2026-09-28 09:00"))
            .await,
    );
    assert_eq!(
        haibin
            .append(event(&id, "closed", "2026-10-01 09:00"))
            .await
            .status,
        "closed"
    );
    let message = haibin
        .append_refused_by("workflow", event(&id, "decided", "2026-10-02 09:00"))
        .await;
    assert!(message.contains("closed"), "{message}");
    haibin
        .append(pb::AppendEventRequest {
            note: "archived".into(),
            ..event(&id, "updated", "2026-10-02 09:00")
        })
        .await;
}

#[tokio::test]
async fn an_action_outside_a_kinds_workflow_is_refused() {
    let haibin = TestNode::start(HAIBIN).await;
    let id = id_of(
        &haibin
            .create(create("case", case_body(), "2026-09-28 09:00"))
            .await,
    );
    let message = haibin
        .append_refused_by("workflow", event(&id, "dispatched", "2026-09-28 10:00"))
        .await;
    assert!(message.contains("dispatched"), "{message}");
    let decided = haibin
        .append(event(&id, "decided", "2026-09-29 10:00"))
        .await;
    assert_eq!(decided.status, "decided");
}

#[tokio::test]
async fn a_case_is_decided_only_by_its_owner() {
    let haibin = TestNode::start(HAIBIN).await;
    let market = TestNode::start(MARKET).await;
    let id = id_of(
        &haibin
            .create(pb::CreateRecordRequest {
                parties: vec![MARKET.into()],
                ..create("case", case_body(), "2026-09-28 09:00")
            })
            .await,
    );
    deliver(&haibin, &market, &id);
    let message = market
        .append_refused_by("workflow", event(&id, "decided", "2026-09-29 10:00"))
        .await;
    assert!(message.contains("as another party"), "{message}");
}
