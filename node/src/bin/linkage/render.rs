//! How the CLI prints: tables with Chinese and English labels for people, JSON for scripts.

use chrono::{DateTime, FixedOffset, NaiveDate};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use linkage_node::calendar::{self, DayKind, DayStatus, Due, Holiday, Period, PeriodPolicy};
use linkage_proto::v1 as pb;
use serde_json::{Value, json};

/// Writes one line to standard output. A reader that went away (`linkage list | head`) ends
/// the program quietly instead of panicking as `println!` would.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: could not write output: {e}");
        std::process::exit(1);
    }
}

macro_rules! say {
    ($($arg:tt)*) => { write_line(format_args!($($arg)*)) };
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

/// "2026-09-28 10:20 +08:00", or "-" for 0 (unset).
fn when(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    calendar::format_millis(ms)
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.iter().copied());
    table
}

/// The start of each id, at least `least` characters and as many more as it takes for no two
/// to read alike (`forget-node` takes any start that names one node).
fn distinct_starts(ids: &[&str], least: usize) -> Vec<String> {
    let start = |id: &str, n: usize| id.chars().take(n).collect::<String>();
    let longest = ids.iter().map(|id| id.chars().count()).max().unwrap_or(0);
    let n = (least..=longest.max(least))
        .find(|&n| {
            let mut seen = std::collections::HashSet::new();
            ids.iter().all(|id| seen.insert(start(id, n)))
        })
        .unwrap_or(longest);
    ids.iter().map(|id| start(id, n)).collect()
}

fn print_json(value: &Value) {
    say!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}

fn envelope_json(e: &pb::Envelope) -> Value {
    json!({
        "id": e.id, "kind": e.kind, "owner": e.owner, "parties": e.parties,
        "created_at_ms": e.created_at_ms, "schema_version": e.schema_version,
    })
}

fn record_json(r: &pb::Record) -> Value {
    let body: Value =
        serde_json::from_str(&r.body_json).unwrap_or(Value::String(r.body_json.clone()));
    json!({
        "envelope": r.envelope.as_ref().map(envelope_json),
        "body": body,
        "status": r.status,
        "events": r.events.iter().map(|e| json!({
            "id": e.id, "action": e.action, "at_ms": e.at_ms, "org": e.org, "unit": e.unit,
            "person": e.person, "note": e.note, "reason": e.reason,
            "extension_wd": e.extension_wd, "attachments": e.attachments,
        })).collect::<Vec<_>>(),
        "conflicts": r.conflicts.iter().map(|c| json!({"path": c.path, "values": c.values})).collect::<Vec<_>>(),
        "heads": r.heads,
    })
}

/// The bilingual label of an obligation state code ("逾期履行 met late" for `met_late`); an
/// unknown code (from a newer server) is shown as it came.
fn obligation_state_label(code: &str) -> String {
    code.parse::<linkage_node::obligation::ObligationState>()
        .map(|s| s.label().to_owned())
        .unwrap_or_else(|_| code.to_owned())
}

fn status_label(code: &str) -> String {
    code.parse::<linkage_node::record::Status>()
        .map(|s| s.label().to_owned())
        .unwrap_or_else(|_| code.to_owned())
}

impl Output {
    pub fn record(&self, r: &pb::Record) {
        if self.json {
            return print_json(&record_json(r));
        }
        let e = r.envelope.clone().unwrap_or_default();
        let kind = e
            .kind
            .parse::<linkage_node::record::RecordKind>()
            .map(|k| k.label().to_owned())
            .unwrap_or(e.kind.clone());
        say!("{}  {}", e.id, kind);
        say!("  状态 status:   {}", status_label(&r.status));
        say!("  所有 owner:    {}", e.owner);
        say!("  各方 parties:  {}", e.parties.join(", "));
        say!("  创建 created:  {}", when(e.created_at_ms));
        let body: Value = serde_json::from_str(&r.body_json).unwrap_or(Value::Null);
        say!(
            "  内容 body:     {}",
            serde_json::to_string_pretty(&body)
                .unwrap_or_default()
                .replace('\n', "\n                 ")
        );
        let mut events = table(&[
            "时间 at",
            "动作 action",
            "单位 org",
            "经办 person",
            "说明 note / reason",
        ]);
        for ev in &r.events {
            let mut note = ev.note.clone();
            if !ev.reason.is_empty() {
                note = format!("{note} [reason: {}]", ev.reason);
            }
            if ev.extension_wd > 0 {
                note = format!("{note} [+{} WD]", ev.extension_wd);
            }
            events.add_row(vec![
                when(ev.at_ms),
                ev.action.clone(),
                if ev.unit.is_empty() {
                    ev.org.clone()
                } else {
                    format!("{} / {}", ev.org, ev.unit)
                },
                ev.person.clone(),
                note,
            ]);
        }
        say!("{events}");
        for c in &r.conflicts {
            say!("  冲突 conflict at {}: {}", c.path, c.values.join(" | "));
        }
    }

    pub fn summaries(&self, rows: &[pb::RecordSummary]) {
        if self.json {
            let rows: Vec<Value> = rows
                .iter()
                .map(|s| json!({"envelope": s.envelope.as_ref().map(envelope_json), "status": s.status, "title": s.title, "updated_at_ms": s.updated_at_ms, "conflicted": s.conflicted}))
                .collect();
            return print_json(&Value::Array(rows));
        }
        let mut t = table(&[
            "编号 id",
            "类型 kind",
            "状态 status",
            "所有 owner",
            "标题 title",
            "创建 created",
        ]);
        for s in rows {
            let e = s.envelope.clone().unwrap_or_default();
            let status = if s.conflicted {
                format!("{} ⚠", status_label(&s.status))
            } else {
                status_label(&s.status)
            };
            t.add_row(vec![
                e.id,
                e.kind,
                status,
                e.owner,
                s.title.clone(),
                when(e.created_at_ms),
            ]);
        }
        say!("{t}");
        say!("{} record(s)", rows.len());
    }

    pub fn history(&self, entries: &[pb::HistoryEntry]) {
        if self.json {
            let rows: Vec<Value> = entries.iter().map(|h| json!({"change_hash": h.change_hash, "actor": h.actor, "org": h.org, "at_ms": h.at_ms, "message": h.message, "seq": h.seq})).collect();
            return print_json(&Value::Array(rows));
        }
        let mut t = table(&["时间 at", "单位 org", "变更 change", "actor", "hash"]);
        for h in entries {
            t.add_row(vec![
                when(h.at_ms),
                h.org.clone(),
                h.message.clone(),
                h.actor.chars().take(16).collect(),
                h.change_hash.chars().take(12).collect(),
            ]);
        }
        say!("{t}");
    }

    pub fn obligations(&self, response: &pb::ObligationsResponse) {
        if self.json {
            let rows: Vec<Value> = response
                .obligations
                .iter()
                .map(|o| json!({"record_id": o.record_id, "kind": o.kind, "owner": o.owner, "rule": o.rule, "duty": o.duty, "due_ms": o.due_ms, "state": o.state, "provisional": o.provisional, "met_at_ms": o.met_at_ms, "title": o.title}))
                .collect();
            return print_json(&json!({"at_ms": response.at_ms, "obligations": rows}));
        }
        say!("obligations at {}", when(response.at_ms));
        let mut t = table(&[
            "规则 rule",
            "义务 duty",
            "责任单位 owner",
            "期限 due",
            "状态 state",
            "记录 record",
        ]);
        for o in &response.obligations {
            let due = if o.due_ms == 0 {
                "-".to_owned()
            } else if o.provisional {
                format!("{} (provisional)", when(o.due_ms))
            } else {
                when(o.due_ms)
            };
            t.add_row(vec![
                o.rule.clone(),
                o.duty.clone(),
                o.owner.clone(),
                due,
                obligation_state_label(&o.state),
                format!("{} {}", o.record_id, o.title),
            ]);
        }
        say!("{t}");
    }

    pub fn accountability(&self, report: &pb::AccountabilityResponse) {
        if self.json {
            let rows: Vec<Value> = report
                .rows
                .iter()
                .map(|r| json!({"org": r.org, "met_on_time": r.met_on_time, "met_late": r.met_late, "overdue": r.overdue, "open": r.open,
                    "oldest_overdue": r.oldest_overdue.as_ref().map(|o| json!({"record_id": o.record_id, "rule": o.rule, "duty": o.duty, "due_ms": o.due_ms}))}))
                .collect();
            return print_json(
                &json!({"from_ms": report.from_ms, "to_ms": report.to_ms, "at_ms": report.at_ms, "rows": rows}),
            );
        }
        say!(
            "accountability (O-1): obligations due after {} up to {}, judged at {}",
            when(report.from_ms),
            when(report.to_ms),
            when(report.at_ms)
        );
        let mut t = table(&[
            "责任单位 org",
            "按时 on time",
            "逾期办结 met late",
            "逾期未办 overdue",
            "未到期 open",
            "最早逾期 oldest overdue",
        ]);
        for r in &report.rows {
            let oldest = r
                .oldest_overdue
                .as_ref()
                .map(|o| format!("{} {} due {}", o.rule, o.record_id, when(o.due_ms)))
                .unwrap_or_default();
            t.add_row(vec![
                r.org.clone(),
                r.met_on_time.to_string(),
                r.met_late.to_string(),
                r.overdue.to_string(),
                r.open.to_string(),
                oldest,
            ]);
        }
        say!("{t}");
    }

    pub fn due(
        &self,
        from: DateTime<FixedOffset>,
        period: Period,
        policy: &PeriodPolicy,
        due: &Due,
    ) {
        if self.json {
            return print_json(&json!({
                "from": calendar::format_instant(from), "period": period.to_string(),
                "at_once": calendar::format_delay(policy.at_once),
                "end_of_day": calendar::format_end_of_day(policy.end_of_day),
                "due": calendar::format_instant(due.at), "due_ms": due.at.timestamp_millis(),
                "provisional": due.provisional,
            }));
        }
        say!("from     {}", calendar::format_instant(from));
        say!("period   {period}");
        say!("policy   {policy}");
        say!("due      {due}");
    }

    pub fn day(&self, day: NaiveDate, kind: &DayKind, holiday: Option<&Holiday>) {
        let name = holiday
            .map(|h| format!("{} {}", h.name, h.name_en))
            .unwrap_or_default();
        if self.json {
            return print_json(
                &json!({"date": day.to_string(), "working": kind.is_working(), "status": format!("{:?}", kind.status), "provisional": kind.provisional, "holiday": name}),
            );
        }
        let what = if kind.is_working() {
            "工作日 working day"
        } else {
            "休息日 rest day"
        };
        let provisional = match kind.unlisted {
            Some(why) => format!(" ({why})"),
            None => String::new(),
        };
        let status = match kind.status {
            DayStatus::Workday => "平日 weekday",
            DayStatus::MakeUpWorkday => "调休上班 make-up working day",
            DayStatus::Weekend => "周末 weekend",
            DayStatus::Holiday => "放假 holiday",
        };
        say!("{day} {what} ({status}) {name}{provisional}");
    }

    pub fn node_info(&self, info: &pb::NodeInfoResponse) {
        if self.json {
            return print_json(
                &json!({"org": info.org, "node_id": info.node_id, "hub": info.hub, "hub_connected": info.hub_connected, "last_seq": info.last_seq, "records": info.records, "pending_to_hub": info.pending_to_hub}),
            );
        }
        say!("organisation   {}", info.org);
        say!("node id        {}", info.node_id);
        let link = if info.hub.is_empty() {
            "none (working alone)".to_owned()
        } else if info.hub_connected {
            format!("{} 已连接 connected", info.hub)
        } else {
            format!("{} 未连接 offline", info.hub)
        };
        say!("hub            {link}");
        say!("records        {}", info.records);
        say!(
            "change log     {} (pending to hub: {})",
            info.last_seq,
            info.pending_to_hub
        );
    }

    pub fn rejections(&self, rows: &[pb::Rejection]) {
        if self.json {
            let rows: Vec<Value> = rows.iter().map(|r| json!({"record_id": r.record_id, "rule": r.rule, "reason": r.reason, "at_ms": r.at_ms})).collect();
            return print_json(&Value::Array(rows));
        }
        let mut t = table(&["记录 record", "规则 rule", "原因 reason", "时间 at"]);
        for r in rows {
            t.add_row(vec![
                r.record_id.clone(),
                r.rule.clone(),
                r.reason.clone(),
                when(r.at_ms),
            ]);
        }
        say!("{t}");
    }

    pub fn convergence(&self, report: &pb::ConvergenceReport) {
        if self.json {
            let nodes: Vec<Value> = report
                .nodes
                .iter()
                .map(|n| json!({"node_id": n.node_id, "org": n.org, "connected": n.connected, "last_contact_ms": n.last_contact_ms, "pending_to_node": n.pending_to_node, "pending_from_node": n.pending_from_node, "oldest_pending_ms": n.oldest_pending_ms, "heads_mismatch": n.heads_mismatch, "refused_from_node": n.refused_from_node, "converged": n.converged}))
                .collect();
            return print_json(
                &json!({"converged": report.converged, "records": report.records, "hub_seq": report.hub_seq, "at_ms": report.at_ms, "nodes": nodes}),
            );
        }
        let refused = report
            .nodes
            .iter()
            .filter(|n| n.refused_from_node > 0)
            .count();
        // Refused changes are not pending, so a node holding some is "converged": say it with
        // the verdict, or the hub lacking them reads as nothing missing.
        let verdict = match (report.converged, refused) {
            (true, 0) => "已收敛 converged",
            (true, _) => "已收敛但有拒收 converged except refused changes",
            (false, _) => "未收敛 NOT converged",
        };
        say!(
            "district: {verdict} — {} record(s) on the hub, as of {}",
            report.records,
            when(report.at_ms)
        );
        if refused > 0 {
            say!(
                "拒收 refused: {refused} node(s) hold changes the hub refused; `linkage rejections` on each says which and why"
            );
        }
        let mut t = table(&[
            "单位 org",
            "节点 node",
            "连接 link",
            "最后联系 last contact",
            "待下发 to node",
            "待上传 from node",
            "最早待同步 oldest pending",
            "版本不一致 heads ≠",
            "拒收 refused",
            "状态 state",
        ]);
        let ids: Vec<&str> = report.nodes.iter().map(|n| n.node_id.as_str()).collect();
        let shown = distinct_starts(&ids, 8);
        for (n, id) in report.nodes.iter().zip(shown) {
            t.add_row(vec![
                n.org.clone(),
                id,
                if n.connected {
                    "在线 online".into()
                } else {
                    "离线 offline".into()
                },
                when(n.last_contact_ms),
                n.pending_to_node.to_string(),
                n.pending_from_node.to_string(),
                when(n.oldest_pending_ms),
                n.heads_mismatch.to_string(),
                n.refused_from_node.to_string(),
                match (n.converged, n.refused_from_node) {
                    (true, 0) => "已收敛 converged".into(),
                    (true, _) => "有拒收 refused changes".into(),
                    (false, _) => "落后 behind".into(),
                },
            ]);
        }
        say!("{t}");
    }

    pub fn forgotten_node(&self, forgotten: &pb::ForgetNodeResponse) {
        if self.json {
            return print_json(&json!({"node_id": forgotten.node_id, "org": forgotten.org}));
        }
        say!(
            "已移除 forgotten: node {} of {}",
            forgotten.node_id,
            forgotten.org
        );
    }

    pub fn counts(&self, counts: &[pb::RecordCount]) {
        if self.json {
            let rows: Vec<Value> = counts
                .iter()
                .map(|c| json!({"org": c.org, "kind": c.kind, "count": c.count}))
                .collect();
            return print_json(&Value::Array(rows));
        }
        let mut t = table(&["单位 org", "类型 kind", "数量 count"]);
        for c in counts {
            t.add_row(vec![c.org.clone(), c.kind.clone(), c.count.to_string()]);
        }
        say!("{t}");
    }

    /// The column names above [`Output::record_change`] lines (none in JSON).
    pub fn record_change_header(&self) {
        if !self.json {
            say!("位置 position  记录 record  类型 kind  状态 status  主办 owner  标题 title");
        }
    }

    pub fn record_change(&self, change: &pb::RecordChange) {
        let summary = change.record.clone().unwrap_or_default();
        let e = summary.envelope.clone().unwrap_or_default();
        if self.json {
            say!(
                "{}",
                json!({"position": change.position, "envelope": envelope_json(&e), "status": summary.status, "title": summary.title, "updated_at_ms": summary.updated_at_ms, "conflicted": summary.conflicted, "heads": summary.heads})
            );
            return;
        }
        say!(
            "{:>6}  {}  {}  {}  {}  {}",
            change.position,
            e.id,
            e.kind,
            status_label(&summary.status),
            e.owner,
            summary.title
        );
    }

    pub fn feed_event(&self, event: &pb::FeedEvent) {
        let record = event.record.clone().unwrap_or_default();
        if self.json {
            say!(
                "{}",
                json!({"token": event.token, "log_id": event.log_id, "record": record_json(&record)})
            );
            return;
        }
        let e = record.envelope.clone().unwrap_or_default();
        say!(
            "token {:>6}  {}  {}  {}  {}",
            event.token,
            e.id,
            e.kind,
            status_label(&record.status),
            e.owner
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_shown_long_enough_to_tell_apart() {
        assert_eq!(
            distinct_starts(&["3f2a9c1b-0001", "77aa0000-0002"], 8),
            ["3f2a9c1b", "77aa0000"]
        );
        assert_eq!(
            distinct_starts(&["fakenode-a1", "fakenode-b2", "other-node"], 8),
            ["fakenode-a", "fakenode-b", "other-node"]
        );
        assert_eq!(distinct_starts(&["short"], 8), ["short"]);
        assert_eq!(distinct_starts(&["same", "same"], 8), ["same", "same"]);
    }
}
