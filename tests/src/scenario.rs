//! The Beidaihe National Day 2026 scenario (`shared/scenarios/beidaihe-national-day-2026.md`),
//! played through public interfaces: every office on its own node process, one hub, real gRPC,
//! real RocksDB, links cut and healed by a proxy per node.
//!
//! [`District::start`] brings the district up; [`play`] records the week's events and returns
//! what happened, so the district runner prints it and the end-to-end test asserts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use linkage_node::calendar;
use linkage_node::org::Directory;
use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use serde_json::json;

use crate::proxy::Proxy;
use crate::{HubProcess, NodeProcess, channel, eventually};

/// How long sync gets to carry a change everywhere before the scenario gives up.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

pub const HAIBIN: &str = "130304100";
pub const HAIBIN_TEAM: &str = "130304100-zhzfd";
pub const DAIHE: &str = "130304101";
pub const NIUTOUYA: &str = "130304103";
pub const DONGSHAN: &str = "130304002";
pub const MARKET: &str = "bdh-scjg";
pub const URBAN: &str = "bdh-cgzf";
pub const ECOLOGY: &str = "bdh-sthj";
pub const EMERGENCY: &str = "bdh-yjgl";
/// The Emergency Management Bureau's second device (a field laptop): its own node and replica,
/// the same organisation.
pub const EMERGENCY_LAPTOP: &str = "bdh-yjgl#laptop";
pub const JUSTICE: &str = "bdh-sfj";
pub const XISHAN: &str = "130304001";
pub const GOVERNMENT: &str = "bdh-gov";

/// "2026-09-28 10:20" in Beijing time, as Unix milliseconds.
pub fn bj(text: &str) -> i64 {
    calendar::parse_instant(text)
        .expect("scenario instants are well formed")
        .timestamp_millis()
}

/// Wall-clock instant for progress lines.
fn describe_ms(ms: i64) -> String {
    calendar::from_unix_millis(ms)
        .map(calendar::format_instant)
        .unwrap_or_else(|_| "-".into())
}

/// One office's node and the proxy its hub link runs through.
#[derive(Debug)]
pub struct Office {
    pub node: NodeProcess,
    pub link: Proxy,
}

impl Office {
    pub async fn records(
        &self,
    ) -> anyhow::Result<pb::records_client::RecordsClient<tonic::transport::Channel>> {
        self.node.records().await
    }
}

/// A hub and a node for every organisation of the directory, plus the Emergency Management
/// Bureau's second device.
#[derive(Debug)]
pub struct District {
    pub root: PathBuf,
    pub hub: HubProcess,
    pub offices: BTreeMap<String, Office>,
}

impl District {
    pub async fn start(root: &Path, say: &mut dyn FnMut(String)) -> anyhow::Result<Self> {
        let hub = HubProcess::start(&root.join("hub"), "127.0.0.1:0")?;
        say(format!(
            "hub listening on {} (data in {})",
            hub.addr,
            hub.data_dir.display()
        ));
        let upstream = hub.addr.parse().context("hub address")?;
        let directory = Directory::beidaihe();
        let mut names: Vec<(String, String)> = directory
            .orgs()
            .map(|o| (o.id.clone(), o.id.clone()))
            .collect();
        names.push((EMERGENCY_LAPTOP.to_owned(), EMERGENCY.to_owned()));

        let mut offices = BTreeMap::new();
        for (name, org) in names {
            let link = Proxy::start(upstream).await?;
            let folder = root.join("nodes").join(name.replace('#', "-"));
            let node = NodeProcess::start(&org, &folder, Some(&link.url()))?;
            say(format!(
                "node {name:<18} {:<28} on {}",
                directory
                    .describe(&org)
                    .chars()
                    .take(40)
                    .collect::<String>(),
                node.addr
            ));
            offices.insert(name, Office { node, link });
        }
        Ok(District {
            root: root.to_owned(),
            hub,
            offices,
        })
    }

    pub fn office(&self, name: &str) -> &Office {
        &self.offices[name]
    }

    pub async fn convergence(&self) -> anyhow::Result<pb::ConvergenceReport> {
        Ok(self
            .hub
            .district()
            .await?
            .convergence(pb::ConvergenceRequest {})
            .await?
            .into_inner())
    }

    /// Waits until the hub reports the whole district converged.
    pub async fn wait_converged(&self) -> anyhow::Result<pb::ConvergenceReport> {
        eventually("the district to converge", SYNC_TIMEOUT, || async {
            let report = self.convergence().await?;
            Ok(report.converged.then_some(report))
        })
        .await
    }

    /// Waits until `name`'s node holds record `id` with at least `events` events.
    pub async fn wait_holds(
        &self,
        name: &str,
        id: &str,
        events: usize,
    ) -> anyhow::Result<pb::Record> {
        let office = self.office(name);
        eventually(
            &format!("{name} to hold {id} with {events} events"),
            SYNC_TIMEOUT,
            || async {
                match office
                    .records()
                    .await?
                    .get(pb::GetRecordRequest { id: id.to_owned() })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        Ok((r.events.len() >= events).then_some(r))
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(s.into()),
                }
            },
        )
        .await
    }

    /// Ids of the records `name`'s node holds.
    pub async fn held(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let list = self
            .office(name)
            .records()
            .await?
            .list(pb::ListRecordsRequest::default())
            .await?
            .into_inner();
        Ok(list
            .records
            .into_iter()
            .filter_map(|s| s.envelope.map(|e| e.id))
            .collect())
    }
}

/// What the week produced, for printing and for asserting.
#[derive(Debug, Default)]
pub struct Outcome {
    pub t4_refusal: String,
    pub haibin_transfer: String,
    pub complaint: String,
    pub urgent_notice: String,
    pub assistance: String,
    pub decision: String,
    pub dongshan_transfer: String,
    pub dispute: String,
    pub pre_holiday_decision: String,
    pub dongshan_while_offline: pb::NodeConvergence,
    pub feed_token_before_holiday: u64,
    /// The hub log that token is a position in, saved beside it.
    pub feed_log_before_holiday: String,
    pub feed_deliveries: Vec<pb::FeedEvent>,
    pub notice_after_offline_edits: pb::Record,
    pub dispute_final: pb::Record,
    pub obligations_12_oct: pb::ObligationsResponse,
}

fn create(
    kind: &str,
    parties: &[&str],
    body: serde_json::Value,
    at: &str,
) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        kind: kind.into(),
        parties: parties.iter().map(|p| (*p).to_owned()).collect(),
        body_json: body.to_string(),
        at_ms: Some(bj(at)),
        unit: String::new(),
        person: String::new(),
        note: String::new(),
    }
}

fn event(id: &str, action: &str, at: &str, person: &str) -> pb::AppendEventRequest {
    pb::AppendEventRequest {
        id: id.into(),
        action: action.into(),
        at_ms: Some(bj(at)),
        person: person.into(),
        ..Default::default()
    }
}

fn id_of(record: &pb::Record) -> String {
    record
        .envelope
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_default()
}

/// Pulls the category-3 feed of the Market Supervision Bureau's case system from `token` of the
/// hub log `log_id` (empty: unchecked) until caught up.
pub async fn pull_feed(
    district: &District,
    token: u64,
    log_id: &str,
) -> anyhow::Result<Vec<pb::FeedEvent>> {
    let mut feeds = FeedsClient::new(channel(&district.hub.url()).await?);
    let request = pb::FeedRequest {
        org: MARKET.into(),
        kinds: vec![],
        categories: vec![3],
        resume_token: token,
        catch_up_only: true,
        log_id: log_id.to_owned(),
    };
    let mut stream = feeds.subscribe(request).await?.into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event);
    }
    Ok(events)
}

/// Plays the week. `say` receives one line per step, for people watching.
pub async fn play(d: &District, say: &mut dyn FnMut(String)) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();

    // The Emergency Management Bureau's devices are offline from the start of event 3's
    // morning; Dongshan goes offline on 30 Sep.
    d.office(EMERGENCY).link.cut();
    d.office(EMERGENCY_LAPTOP).link.cut();

    // Before the holiday, Xishan shares a penalty decision with the Market Supervision Bureau,
    // whose case system pulls the category-3 feed and saves its token.
    let mut xishan = d.office(XISHAN).records().await?;
    let earlier = xishan
        .create(create(
            "shared_info",
            &[MARKET],
            json!({
                "category": 3, "title": "行政处罚决定书 penalty decision: unlicensed barbecue stall",
                "content": "Decision no. 2026-15: fine of 2,000 yuan.", "formed_at_ms": bj("2026-09-25 16:00"),
            }),
            "2026-09-25 16:00",
        ))
        .await?
        .into_inner();
    out.pre_holiday_decision = id_of(&earlier);
    xishan
        .append_event(event(
            &out.pre_holiday_decision,
            "shared",
            "2026-09-25 16:05",
            "钱 Qian",
        ))
        .await?;
    d.wait_holds(MARKET, &out.pre_holiday_decision, 2).await?;
    let before = eventually(
        "the pre-holiday decision in the feed",
        SYNC_TIMEOUT,
        || async {
            let events = pull_feed(d, 0, "").await?;
            Ok(events
                .iter()
                .any(|e| {
                    e.record
                        .as_ref()
                        .and_then(|r| r.envelope.as_ref())
                        .is_some_and(|en| en.id == out.pre_holiday_decision)
                })
                .then_some(events))
        },
    )
    .await?;
    out.feed_token_before_holiday = before.last().map_or(0, |e| e.token);
    out.feed_log_before_holiday = before.last().map(|e| e.log_id.clone()).unwrap_or_default();
    say(format!(
        "Market Supervision's case system pulled {} category-3 record(s) and saved feed token {} before the holiday",
        before.len(),
        out.feed_token_before_holiday
    ));

    // Event 1 (T-4, T-3, T-1).
    let mut haibin = d.office(HAIBIN).records().await?;
    let materials = json!([
        {"kind": "transfer_letter", "name": "移送函 transfer letter"},
        {"kind": "case_source", "name": "现场检查笔录 on-site inspection record"},
        {"kind": "evidence", "name": "照片1 photo 1"},
        {"kind": "evidence", "name": "照片2 photo 2"}
    ]);
    let transfer_body = |sender: &str| {
        json!({
            "sender": sender, "receiver": MARKET, "title": "销售超过保质期食品 food sold past its use-by date",
            "matter": "food safety", "place": "Haibin, stall 12", "facts": "A stall sells packaged food past its use-by date.",
            "discovered_at_ms": bj("2026-09-28 10:20"), "materials": materials,
        })
    };
    let mut as_team = create(
        "transfer",
        &[MARKET],
        transfer_body(HAIBIN_TEAM),
        "2026-09-28 10:50",
    );
    as_team.unit = HAIBIN_TEAM.into();
    match haibin.create(as_team).await {
        Ok(_) => {
            bail!("a transfer in the enforcement team's own name was accepted; T-4 forbids it")
        }
        Err(status) => out.t4_refusal = status.message().to_owned(),
    }
    say(format!("event 1: refused as expected → {}", out.t4_refusal));
    let transfer = haibin
        .create(create(
            "transfer",
            &[MARKET],
            transfer_body(HAIBIN),
            "2026-09-28 11:05",
        ))
        .await?
        .into_inner();
    out.haibin_transfer = id_of(&transfer);
    say(format!(
        "event 1: Haibin Town sent transfer {} to the Market Supervision Bureau at 11:05",
        out.haibin_transfer
    ));

    // Event 2 (C-3, C-5).
    let mut market = d.office(MARKET).records().await?;
    let complaint = market
        .create(create(
            "complaint",
            &[DAIHE],
            json!({
                "received_by": MARKET, "handler": DAIHE, "channel": "phone",
                "subject": "占道经营 shop occupying the pavement", "place": "Daihe Town, Main Street 8",
                "received_at_ms": bj("2026-09-28 15:00"),
                "complainant": {"name": "王女士 Ms Wang", "phone": "13800000000"},
            }),
            "2026-09-28 15:00",
        ))
        .await?
        .into_inner();
    out.complaint = id_of(&complaint);
    let mut notify = event(&out.complaint, "forwarded", "2026-09-28 15:20", "李 Li");
    notify.note =
        "书面告知戴河镇 notified Daihe Town in writing; complainant told to turn to Daihe Town"
            .into();
    market.append_event(notify).await?;
    say(format!(
        "event 2: Market Supervision registered complaint {} and notified Daihe Town (C-3)",
        out.complaint
    ));

    // Event 3 (J-3): the Bureau's devices are offline; nobody dispatches.
    let mut niutouya = d.office(NIUTOUYA).records().await?;
    let notice = niutouya
        .create(create(
            "urgent_notice",
            &[EMERGENCY],
            json!({
                "sender": NIUTOUYA, "receiver": EMERGENCY, "hazard": "液化气瓶存放于餐馆地下室 gas cylinders stored in a restaurant basement",
                "place": "Niutouya, Harbour Road 3", "found_at_ms": bj("2026-09-29 09:00"),
            }),
            "2026-09-29 09:00",
        ))
        .await?
        .into_inner();
    out.urgent_notice = id_of(&notice);
    let mut report = event(
        &out.urgent_notice,
        "reported_to_government",
        "2026-09-29 11:20",
        "赵 Zhao",
    );
    report.note =
        "应急管理局未出警，已报区政府 no dispatch by 11:00; reported to the District Government"
            .into();
    niutouya.append_event(report).await?;
    say(format!(
        "event 3: Niutouya sent urgent notice {}; no dispatch by 11:00, reported to the government at 11:20",
        out.urgent_notice
    ));

    // Event 4.
    let mut daihe = d.office(DAIHE).records().await?;
    let assistance = daihe
        .create(create(
            "assistance",
            &[ECOLOGY],
            json!({
                "requester": DAIHE, "provider": ECOLOGY, "assistance_kind": "technical_support",
                "matter": "噪声检测 noise measurement", "requested_at_ms": bj("2026-09-29 14:30"),
            }),
            "2026-09-29 14:30",
        ))
        .await?
        .into_inner();
    out.assistance = id_of(&assistance);
    say(format!(
        "event 4: Daihe Town asked the Ecology and Environment Branch for a noise measurement ({})",
        out.assistance
    ));

    // Event 8 (first half): the Bureau's devices come back at 14:00, receive the notice, go
    // out again and both edit it offline.
    for device in [EMERGENCY, EMERGENCY_LAPTOP] {
        d.office(device).link.heal();
    }
    for device in [EMERGENCY, EMERGENCY_LAPTOP] {
        d.wait_holds(device, &out.urgent_notice, 2).await?;
    }
    for device in [EMERGENCY, EMERGENCY_LAPTOP] {
        d.office(device).link.cut();
    }
    d.office(EMERGENCY)
        .records()
        .await?
        .edit_body(pb::EditBodyRequest {
            id: out.urgent_notice.clone(),
            patch_json: json!({"assessment": "12瓶，阀门完好 12 cylinders, valves intact"})
                .to_string(),
        })
        .await?;
    d.office(EMERGENCY_LAPTOP)
        .records()
        .await?
        .edit_body(pb::EditBodyRequest {
            id: out.urgent_notice.clone(),
            patch_json: json!({"assessment": "1瓶泄漏 one cylinder leaking", "measures": "疏散并封闭地下室 basement evacuated and sealed"}).to_string(),
        })
        .await?;
    say("event 8: the Emergency Management Bureau's office PC and field laptop both edited the hazard record offline".into());

    // Event 5: Dongshan offline from 30 Sep 12:00.
    d.office(DONGSHAN).link.cut();
    let mut dongshan = d.office(DONGSHAN).records().await?;
    let decision = dongshan
        .create(create(
            "shared_info",
            &[MARKET],
            json!({
                "category": 3, "title": "行政处罚决定书 penalty decision: unlicensed food stall",
                "content": "Decision no. 2026-17: fine of 5,000 yuan.", "formed_at_ms": bj("2026-09-30 14:00"),
            }),
            "2026-09-30 14:00",
        ))
        .await?
        .into_inner();
    out.decision = id_of(&decision);
    let mut extension = event(&out.decision, "extended", "2026-09-30 14:10", "孙 Sun");
    extension.reason = "网络中断，无法当日共享 network down, cannot share the same day".into();
    extension.extension_wd = 15;
    dongshan.append_event(extension).await?;
    say(format!(
        "event 5: Dongshan (offline) recorded penalty decision {} and extended its sharing by 15 WD",
        out.decision
    ));
    let offline = d.convergence().await?;
    out.dongshan_while_offline = offline
        .nodes
        .iter()
        .find(|n| n.org == DONGSHAN)
        .cloned()
        .unwrap_or_default();
    // The hub notes contacts on this machine's clock, not on the scenario's hand-set dates:
    // said as such, so that today's date does not read as a day of the 2026 holiday.
    say(format!(
        "hub during the holiday: district converged = {}; Dongshan {} (the hub last heard from it at {} by this machine's clock)",
        offline.converged,
        if out.dongshan_while_offline.connected {
            "connected"
        } else {
            "OFFLINE"
        },
        describe_ms(out.dongshan_while_offline.last_contact_ms)
    ));

    // The Bureau's devices reconnect; both edits meet at the hub.
    for device in [EMERGENCY, EMERGENCY_LAPTOP] {
        d.office(device).link.heal();
    }

    // Event 6 (T-5): 8 Oct.
    d.wait_holds(MARKET, &out.haibin_transfer, 1).await?;
    market
        .append_event(event(
            &out.haibin_transfer,
            "received",
            "2026-10-08 09:30",
            "李 Li",
        ))
        .await?;
    market
        .append_event(event(
            &out.haibin_transfer,
            "accepted",
            "2026-10-08 09:31",
            "李 Li",
        ))
        .await?;
    say("event 6: Market Supervision acknowledged receipt of Haibin's transfer and accepted it (T-5)".into());

    // Event 5 (second half): Dongshan reconnects on 8 Oct 09:00.
    d.office(DONGSHAN).link.heal();
    dongshan
        .append_event(event(&out.decision, "shared", "2026-10-08 09:00", "孙 Sun"))
        .await?;
    d.wait_holds(MARKET, &out.decision, 3).await?;
    let back = eventually("Dongshan to converge", SYNC_TIMEOUT, || async {
        let report = d.convergence().await?;
        Ok(report
            .nodes
            .iter()
            .find(|n| n.org == DONGSHAN && n.converged)
            .cloned())
    })
    .await?;
    say(format!(
        "event 5: Dongshan reconnected; its decision reached the hub and the Market Supervision Bureau; the hub shows Dongshan {} (last contact {})",
        if back.converged {
            "converged"
        } else {
            "behind"
        },
        describe_ms(back.last_contact_ms)
    ));

    // Event 4 (second half): 9 Oct.
    d.wait_holds(ECOLOGY, &out.assistance, 1).await?;
    let mut ecology = d.office(ECOLOGY).records().await?;
    let mut third_party = event(
        &out.assistance,
        "third_party_needed",
        "2026-10-09 10:00",
        "周 Zhou",
    );
    third_party.note = "需有资质的第三方检测 a qualified third party must measure (A-2)".into();
    ecology.append_event(third_party).await?;
    let mut guidance = event(
        &out.assistance,
        "guidance_given",
        "2026-10-09 16:00",
        "周 Zhou",
    );
    guidance.attachments = vec!["检测指导意见 written guidance".into()];
    ecology.append_event(guidance).await?;
    say("event 4: the Ecology Branch said a third party must measure and gave written guidance at 16:00 on 9 Oct (A-2)".into());

    // Event 7 (T-5, D-1, D-2).
    let transfer_7 = dongshan
        .create(create(
            "transfer",
            &[URBAN],
            json!({
                "sender": DONGSHAN, "receiver": URBAN, "title": "违法建设 unauthorised construction",
                "matter": "urban planning", "place": "Dongshan, Lianfeng Road 21",
                "facts": "A two-storey extension built without a permit.", "discovered_at_ms": bj("2026-10-09 08:30"),
                "materials": [{"kind": "transfer_letter", "name": "移送函 transfer letter"}, {"kind": "evidence", "name": "照片 photos"}],
            }),
            "2026-10-09 10:00",
        ))
        .await?
        .into_inner();
    out.dongshan_transfer = id_of(&transfer_7);
    d.wait_holds(URBAN, &out.dongshan_transfer, 1).await?;
    let mut urban = d.office(URBAN).records().await?;
    urban
        .append_event(event(
            &out.dongshan_transfer,
            "received",
            "2026-10-10 09:00",
            "吴 Wu",
        ))
        .await?;
    let mut objection = event(
        &out.dongshan_transfer,
        "objected",
        "2026-10-10 10:00",
        "吴 Wu",
    );
    objection.reason = "该事项已下放乡镇 the matter was devolved to the township".into();
    urban.append_event(objection).await?;
    let disputes = urban
        .list(pb::ListRecordsRequest {
            kind: "dispute".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    out.dispute = disputes
        .records
        .iter()
        .filter_map(|s| s.envelope.as_ref())
        .map(|e| e.id.clone())
        .next()
        .context("the objection opened no dispute")?;
    say(format!(
        "event 7: Urban Management objected to Dongshan's transfer {} on Sat 10 Oct; dispute {} opened",
        out.dongshan_transfer, out.dispute
    ));

    d.wait_holds(DONGSHAN, &out.dispute, 1).await?;
    let mut failed = event(
        &out.dispute,
        "negotiation_failed",
        "2026-10-12 16:00",
        "孙 Sun",
    );
    failed.attachments = vec!["协商纪要 minutes of the negotiation, 12 Oct".into()];
    dongshan.append_event(failed).await?;

    // What the hub shows at Mon 12 Oct 18:00 (before the 13 Oct application).
    d.wait_converged().await?;
    let mut district = d.hub.district().await?;
    out.obligations_12_oct = district
        .obligations(pb::ObligationsRequest {
            at_ms: Some(bj("2026-10-12 18:00")),
            org: "all".into(),
            include_met: true,
        })
        .await?
        .into_inner();

    dongshan
        .append_event(event(
            &out.dispute,
            "coordination_applied",
            "2026-10-13 09:00",
            "孙 Sun",
        ))
        .await?;
    out.dispute_final = d.wait_holds(JUSTICE, &out.dispute, 3).await?;
    say(format!(
        "event 7: negotiation failed on 12 Oct (minuted); Dongshan applied to the Justice Bureau on 13 Oct; the dispute reached the Justice Bureau at stage {}",
        out.dispute_final.status
    ));

    d.wait_converged().await?;
    out.notice_after_offline_edits = d.wait_holds(NIUTOUYA, &out.urgent_notice, 2).await?;
    out.feed_deliveries = pull_feed(
        d,
        out.feed_token_before_holiday,
        &out.feed_log_before_holiday,
    )
    .await?;
    say(format!(
        "Market Supervision's case system resumed its feed from token {} and received {} record(s)",
        out.feed_token_before_holiday,
        out.feed_deliveries.len()
    ));
    Ok(out)
}
