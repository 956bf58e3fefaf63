//! `linkage`: the command-line client for people and scripts. Every record operation of a
//! node, the district's convergence and feeds on the hub, and deadline checks by hand.
//! Tables for people by default; `--json` for scripts. Errors go to stderr with exit code 1.

mod render;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use linkage_node::calendar::{self, Calendar, Period, PeriodPolicy};
use linkage_node::tls::TlsFiles;
use linkage_proto::v1 as pb;
use linkage_proto::v1::district_client::DistrictClient;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_proto::v1::records_client::RecordsClient;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(
    name = "linkage",
    version,
    about = "Linkage client: records, obligations, convergence and feeds"
)]
struct Cli {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "LINKAGE_NODE",
        default_value = "http://127.0.0.1:7401"
    )]
    node: String,
    /// The hub, for `status`, `counts`, `feed`, and `obligations` or `report` with
    /// `--district`.
    #[arg(
        long,
        global = true,
        env = "LINKAGE_HUB",
        default_value = "http://127.0.0.1:7400"
    )]
    hub: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The district CA certificate, for servers running mutual TLS (use https:// URLs).
    #[arg(long, global = true, env = "LINKAGE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Your organisation's certificate, issued by the district CA.
    #[arg(long, global = true, env = "LINKAGE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Your organisation's private key.
    #[arg(long, global = true, env = "LINKAGE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a record: `linkage create transfer --body @transfer.json --parties bdh-scjg`.
    Create {
        /// case, transfer, complaint, shared_info, urgent_notice, consultation, assistance,
        /// dispute, liaison_directory, calendar.
        kind: String,
        /// The body as JSON, `@FILE` to read a file, or `-` for standard input. Fields named
        /// `*_at_ms` take Unix milliseconds or an instant such as "2026-09-28 10:20".
        #[arg(long)]
        body: String,
        /// Organisations entitled to the record besides this node's own (comma-separated).
        #[arg(long, value_delimiter = ',')]
        parties: Vec<String>,
        #[command(flatten)]
        act: ActArgs,
    },
    /// Show one record with its events, status and conflicts.
    Get {
        /// The record id, e.g. TR-... as `create` and `list` show it.
        id: String,
    },
    /// List records, newest last.
    List {
        /// Only records of this kind, e.g. transfer.
        #[arg(long)]
        kind: Option<String>,
        /// Only records this organisation is a party to.
        #[arg(long)]
        party: Option<String>,
        /// Only records in this status, e.g. awaiting_receipt, accepted.
        #[arg(long)]
        status: Option<String>,
        /// Created at or after (RFC 3339 or "YYYY-MM-DD HH:MM", Beijing time).
        #[arg(long)]
        since: Option<String>,
        /// Created before (RFC 3339 or "YYYY-MM-DD HH:MM", Beijing time).
        #[arg(long)]
        until: Option<String>,
        /// At most this many records (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Append a workflow event: `linkage event TR-... received`.
    Event {
        /// The record id.
        id: String,
        /// received, accepted, objected, shared, extended, dispatched, ... (see README).
        action: String,
        #[command(flatten)]
        act: ActArgs,
        /// Why: the grounds an objection (T-5) or an extension (S-2, A-3) must state.
        #[arg(long)]
        reason: Option<String>,
        /// Working days of an extension (S-2, A-3).
        #[arg(long)]
        extension_wd: Option<u32>,
        /// Names of attached documents (minutes, evidence), repeatable.
        #[arg(long = "attach")]
        attachments: Vec<String>,
    },
    /// Set body fields from a JSON object: `linkage edit ID --patch '{"assessment":"..."}'`.
    Edit {
        /// The record id.
        id: String,
        /// The fields to set, as a JSON object, `@FILE` or `-`; `*_at_ms` fields take an
        /// instant as `--body` does.
        #[arg(long)]
        patch: String,
    },
    /// Add organisations to a record's parties.
    AddParties {
        /// The record id.
        id: String,
        /// Organisation ids, e.g. bdh-zrzy.
        #[arg(required = true)]
        parties: Vec<String>,
    },
    /// Who changed a record, when: one line per Automerge change.
    History {
        /// The record id.
        id: String,
    },
    /// Obligations: what an organisation owes, by when, under which rule.
    Obligations {
        /// The instant to evaluate at (default: now).
        #[arg(long)]
        at: Option<String>,
        /// Organisation (default: the node's own; `all` for every one the node knows of).
        #[arg(long)]
        org: Option<String>,
        /// Include met and superseded obligations.
        #[arg(long)]
        all_states: bool,
        /// Ask the hub for the district's obligations instead of a node.
        #[arg(long)]
        district: bool,
    },
    /// The accountability report (O-1): per organisation, what fell due in a period and how it
    /// was met.
    Report {
        /// Start of the period (exclusive), e.g. "2026-09-01 00:00".
        #[arg(long)]
        from: String,
        /// End of the period (inclusive).
        #[arg(long)]
        to: String,
        /// Organisation (default: the node's own; `all` for every one).
        #[arg(long)]
        org: Option<String>,
        /// Judge states at this instant (default: now).
        #[arg(long)]
        at: Option<String>,
        /// Ask the hub for the district's report instead of a node.
        #[arg(long)]
        district: bool,
    },
    /// The district certificate authority: create it, and issue each organisation's
    /// certificate (mutual TLS; the hub takes a node's organisation from it).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Working-day calendar checks, computed locally.
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// This node: organisation, hub link, pending changes.
    Info,
    /// Follow this node's records as they change (created here, edited, or arrived from the
    /// hub), one line each, until interrupted.
    Watch {
        /// Start after this position (default 0: every record first, then live changes).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Changes the hub refused, with the reason.
    Rejections,
    /// The hub's convergence view: is every node up to date, and who is behind.
    Status {
        /// Exit with code 3 when the district has not converged (for scripts and monitoring;
        /// the view is printed either way).
        #[arg(long)]
        check: bool,
    },
    /// Records held by the hub per organisation and kind.
    Counts,
    /// Retire an offline node from the hub's convergence view (a node started again on an
    /// empty data folder is a new node; its old entry stays offline until forgotten).
    ForgetNode {
        /// The node's id, or enough of its start to name one node (`status` shows the start).
        node: String,
    },
    /// Pull a department feed from the hub, from a saved token.
    Feed {
        /// The organisation whose entitlement the feed follows.
        #[arg(long)]
        org: String,
        #[arg(long, value_delimiter = ',')]
        /// Record kinds to deliver (comma-separated; default: every kind), of the records
        /// the organisation may read.
        kinds: Vec<String>,
        /// S-1 categories (1..8) of shared information.
        #[arg(long, value_delimiter = ',')]
        categories: Vec<u32>,
        /// Resume after this token (default 0: from the start); with --token-file, only
        /// until that file holds a token.
        #[arg(long, default_value_t = 0)]
        token: u64,
        /// Keep the token here, with the hub change log it belongs to: read at start (it then
        /// wins over --token), written after each delivery. Its folder must exist.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Keep following live changes instead of stopping once caught up.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the district CA (`ca.pem`, `ca.key`) in a folder; keep the key off the network.
    Init {
        #[arg(long)]
        /// The folder to write the CA into.
        dir: PathBuf,
        /// The district's code or name, written into the CA's name.
        #[arg(long, default_value = "130304")]
        district: String,
    },
    /// Issue an organisation's certificate (`ORG.pem`, `ORG.key`) signed by the CA in `--dir`.
    Issue {
        #[arg(long)]
        /// The CA's folder (from `ca init`); the certificate and key are written there.
        dir: PathBuf,
        /// The organisation id, e.g. 130304100; becomes the certificate's common name.
        #[arg(long)]
        org: String,
        /// Host names and IP addresses the organisation's server is reached at.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CalendarCommand {
    /// When a period from an instant ends: `linkage calendar due --from "2026-09-28 10:20" --period 3wd`.
    Due {
        /// The instant the period runs from, RFC 3339 or "YYYY-MM-DD HH:MM" in Beijing time.
        #[arg(long)]
        from: String,
        /// 3wd, 24h, 2h, at-once, same-day; hours also as minutes (120m, 1h60m) when they come
        /// to whole hours.
        #[arg(long)]
        period: String,
        /// Also use the years the Justice Bureau published, read from the node.
        #[arg(long)]
        published: bool,
        /// The office's end of day, HH:MM in Beijing time (default 24:00), as its node's
        /// [periods] table sets it: working-day and same-day periods end then.
        #[arg(long, value_name = "HH:MM")]
        end_of_day: Option<String>,
        /// What "at once" gives (default 2h), e.g. 1h, 90m, 1h30m.
        #[arg(long, value_name = "DURATION")]
        at_once: Option<String>,
    },
    /// Whether a date is a working day.
    Day {
        /// The date, YYYY-MM-DD.
        date: String,
    },
}

#[derive(Debug, Args)]
struct ActArgs {
    /// When the act happened (default: now), RFC 3339 or "YYYY-MM-DD HH:MM" in Beijing time.
    #[arg(long)]
    at: Option<String>,
    /// The internal unit that did the work.
    #[arg(long)]
    unit: Option<String>,
    /// The member of staff who acted (经办人), as written in the file.
    #[arg(long, default_value = "", hide_default_value = true)]
    person: String,
    /// A free-text note kept with the event, e.g. what was sent or said.
    #[arg(long, default_value = "", hide_default_value = true)]
    note: String,
}

/// An error for the person at the terminal.
#[derive(Debug)]
struct CliError(String);

/// Whether `status` is tonic's report of a connection that broke mid-answer: `Unknown`,
/// naming the transport.
fn connection_broke(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unknown
        && (status.message().starts_with("h2 protocol error")
            || status.message().starts_with("transport error"))
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let kind = if connection_broke(&status) {
            "连接中断 connection lost"
        } else {
            failure_kind(status.code())
        };
        let detail = match status.message() {
            // A server without the service answers with no message at all: most often a node
            // command sent to the hub, or a hub command to a node.
            "" if status.code() == tonic::Code::Unimplemented => {
                "--node must name a node and --hub the hub".to_owned()
            }
            "" => "the server gave no reason".to_owned(),
            message => message.to_owned(),
        };
        CliError(format!("{kind}: {detail} ({:?})", status.code()))
    }
}

/// What kind of failure a gRPC code means, for office staff and in English.
fn failure_kind(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "输入有误 invalid input",
        Code::OutOfRange => "超出范围 out of range",
        // A cooperation rule (the message names it, `T-1: ...`) or an operator's precondition
        // (forgetting a node that is still connected): both are "not now, not like this".
        Code::FailedPrecondition => "不允许此操作 not allowed",
        Code::NotFound => "未找到 not found",
        Code::AlreadyExists => "已存在 already exists",
        Code::PermissionDenied | Code::Unauthenticated => "无权操作 not permitted",
        Code::ResourceExhausted => "超出限制 over a limit",
        Code::Unavailable => "服务器不可用 server unavailable",
        Code::DeadlineExceeded => "超时 timed out",
        Code::Unimplemented => "该服务器不提供此命令 this server does not offer this command",
        Code::Cancelled | Code::Aborted => "已中断 interrupted",
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Ok => "服务器故障 server failure",
    }
}

impl From<calendar::CalendarError> for CliError {
    fn from(e: calendar::CalendarError) -> Self {
        CliError::input(e)
    }
}

impl CliError {
    /// Input the command refused before anything was sent.
    fn input(detail: impl std::fmt::Display) -> Self {
        CliError(format!("输入有误 invalid input: {detail}"))
    }

    /// A local file or stream that could not be read or written.
    fn file(detail: impl std::fmt::Display) -> Self {
        CliError(format!("文件读写失败 file error: {detail}"))
    }

    /// Certificates and keys for mutual TLS.
    fn tls(detail: impl std::fmt::Display) -> Self {
        CliError(format!("证书设置有误 TLS settings: {detail}"))
    }
}

type CliResult<T = ()> = Result<T, CliError>;

fn instant_ms(text: &str) -> CliResult<i64> {
    Ok(calendar::parse_instant(text)?.timestamp_millis())
}

fn optional_instant(text: Option<&str>) -> CliResult<Option<i64>> {
    text.map(instant_ms).transpose()
}

/// Reads `--body` or `--patch` (named by `flag` in errors): inline JSON, `@FILE`, or `-` for
/// standard input. Checked to be JSON here so a typo is reported before anything is sent, and
/// instants written in `*_at_ms` fields turned into the milliseconds the record types hold.
fn read_json_arg(flag: &str, arg: &str) -> CliResult<String> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::file(format!("could not read standard input: {e}")))?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::file(format!("could not read {path}: {e}")))?
    } else {
        arg.to_owned()
    };
    let mut value = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| CliError::input(format!("invalid JSON: {e}")))?;
    if instants_to_millis(flag, &mut value)? {
        return Ok(value.to_string());
    }
    Ok(text)
}

/// The suffix of body fields that hold an instant as Unix milliseconds (`discovered_at_ms`,
/// `received_at_ms`, ...).
const INSTANT_FIELD_SUFFIX: &str = "_at_ms";

/// Replaces string values of top-level `*_at_ms` fields by Unix milliseconds, read as `--at`
/// reads an instant, so people can write "2026-09-28 10:20" where the record holds a number.
/// Numbers and other values pass unchanged for the node to judge. Returns whether anything
/// was replaced.
fn instants_to_millis(flag: &str, value: &mut serde_json::Value) -> CliResult<bool> {
    let Some(fields) = value.as_object_mut() else {
        return Ok(false);
    };
    let mut replaced = false;
    for (key, field) in fields.iter_mut() {
        if !key.ends_with(INSTANT_FIELD_SUFFIX) {
            continue;
        }
        let Some(text) = field.as_str() else {
            continue;
        };
        let ms = calendar::parse_instant(text)
            .map_err(|why| CliError::input(format!("{flag} field {key}: {why}")))?
            .timestamp_millis();
        *field = serde_json::Value::from(ms);
        replaced = true;
    }
    Ok(replaced)
}

/// Reads `calendar due --period`: what [`Period`] reads (`3wd`, `24h`, `at-once`,
/// `same-day`), and also hours written with minutes as `--at-once` takes them (`120m`,
/// `1h60m`). A period counts whole hours, so `90m` is refused rather than rounded.
fn period_arg(text: &str) -> CliResult<Period> {
    let refused = match text.parse::<Period>() {
        Ok(period) => return Ok(period),
        Err(e) => e,
    };
    let Some(minutes) = minutes_of(text) else {
        return Err(refused.into());
    };
    if minutes % 60 != 0 {
        return Err(CliError::input(format!(
            "--period {text:?} is not a whole number of hours: a period counts working days \
             (3wd) or whole hours (2h), not minutes; only \"at once\" takes minutes, set by \
             --at-once"
        )));
    }
    match u16::try_from(minutes / 60) {
        Ok(0) => Err(CliError::input(format!(
            "--period {text:?} is no time at all: a period is at least 1h"
        ))),
        Ok(hours) => Ok(Period::Hours(hours)),
        Err(_) => Err(CliError::input(format!(
            "--period {text:?} is too long: at most 65535h"
        ))),
    }
}

/// Minutes in `90m`, `1h30m` or `2h` (case and surrounding spaces ignored), the forms
/// `--at-once` takes; `None` for anything else.
fn minutes_of(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let count = |digits: &str| -> Option<u64> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let (hours, minutes) = match text.split_once('h') {
        Some((hours, "")) => (count(hours)?, 0),
        Some((hours, rest)) => (count(hours)?, count(rest.strip_suffix('m')?)?),
        None => (0, count(text.strip_suffix('m')?)?),
    };
    hours.checked_mul(60)?.checked_add(minutes)
}

async fn connect(cli: &Cli, url: &str, what: &str) -> CliResult<Channel> {
    // Without a scheme the address parses, and fails later as a bare transport error.
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError(format!(
            "地址有误 bad address: the {what} address {url:?} must start with http:// or https://, e.g. http://{}",
            url.split_once("://").map_or(url, |(_, rest)| rest)
        )));
    }
    let mut endpoint = Channel::from_shared(url.to_owned())
        .map_err(|e| CliError(format!("地址有误 bad address: {what} address {url:?}: {e}")))?;
    // A port past 65535, or 0, parses as an address and fails later as a bare transport error.
    // (`Uri::port` is `None` for a port that is not a u16, so the authority is read as text;
    // an IPv6 host's colons are inside its brackets.)
    let port = endpoint.uri().authority().and_then(|authority| {
        let (_, port) = authority.as_str().rsplit_once(':')?;
        (!port.contains(']')).then(|| port.to_owned())
    });
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|port| port > 0)
    {
        return Err(CliError(format!(
            "地址有误 bad address: the {what} address {url:?} names port {port}; a port is 1 to 65535"
        )));
    }
    let tls = TlsFiles::from_parts(
        cli.tls_ca.clone(),
        cli.tls_cert.clone(),
        cli.tls_key.clone(),
    )
    .map_err(CliError::tls)?;
    if let Some(tls) = tls {
        let config = tls.client_config().map_err(CliError::tls)?;
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| CliError::tls(format!("for {url}: {e}")))?;
    }
    // HTTP/2 pings on idle connections too: a link that goes silent without closing (a frozen
    // middlebox, a cable pulled far away) otherwise leaves `feed --follow` or `watch` waiting
    // for good, where a broken one is noticed at once.
    endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| CliError(format!("无法连接 cannot reach the {what} at {url}: {e}")))
}

/// The largest answer the CLI reads. tonic's default of 4 MiB is less than a record may be as
/// JSON (the servers send whatever they hold), which made such a record unreadable and a
/// department's feed stop at it.
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

async fn hub_district(cli: &Cli) -> CliResult<DistrictClient<Channel>> {
    Ok(DistrictClient::new(connect(cli, &cli.hub, "hub").await?)
        .max_decoding_message_size(MAX_ANSWER_BYTES))
}

async fn records(cli: &Cli) -> CliResult<RecordsClient<Channel>> {
    Ok(RecordsClient::new(connect(cli, &cli.node, "node").await?)
        .max_decoding_message_size(MAX_ANSWER_BYTES))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(Verdict::Done) => ExitCode::SUCCESS,
        Ok(Verdict::NotConverged) => ExitCode::from(NOT_CONVERGED),
        Err(CliError(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `linkage status --check`'s exit code when the district has not converged: apart from 1,
/// which is every failure to answer.
const NOT_CONVERGED: u8 = 3;

/// How a command that answered ends.
enum Verdict {
    Done,
    /// `status --check` found the district not converged.
    NotConverged,
}

async fn run(cli: &Cli) -> CliResult<Verdict> {
    let out = render::Output { json: cli.json };
    match &cli.command {
        Command::Create {
            kind,
            body,
            parties,
            act,
        } => {
            let body_json = read_json_arg("--body", body)?;
            let request = pb::CreateRecordRequest {
                kind: kind.clone(),
                parties: parties.clone(),
                body_json,
                at_ms: optional_instant(act.at.as_deref())?,
                unit: act.unit.clone().unwrap_or_default(),
                person: act.person.clone(),
                note: act.note.clone(),
            };
            let record = records(cli).await?.create(request).await?.into_inner();
            out.record(&record);
        }
        Command::Get { id } => {
            let record = records(cli)
                .await?
                .get(pb::GetRecordRequest { id: id.clone() })
                .await?
                .into_inner();
            out.record(&record);
        }
        Command::List {
            kind,
            party,
            status,
            since,
            until,
            limit,
        } => {
            let request = pb::ListRecordsRequest {
                kind: kind.clone().unwrap_or_default(),
                party: party.clone().unwrap_or_default(),
                status: status.clone().unwrap_or_default(),
                since_ms: optional_instant(since.as_deref())?,
                until_ms: optional_instant(until.as_deref())?,
                limit: *limit,
            };
            let list = records(cli).await?.list(request).await?.into_inner();
            out.summaries(&list.records);
        }
        Command::Event {
            id,
            action,
            act,
            reason,
            extension_wd,
            attachments,
        } => {
            let request = pb::AppendEventRequest {
                id: id.clone(),
                action: action.clone(),
                at_ms: optional_instant(act.at.as_deref())?,
                unit: act.unit.clone().unwrap_or_default(),
                person: act.person.clone(),
                note: act.note.clone(),
                reason: reason.clone().unwrap_or_default(),
                extension_wd: extension_wd.unwrap_or(0),
                attachments: attachments.clone(),
            };
            let record = records(cli)
                .await?
                .append_event(request)
                .await?
                .into_inner();
            out.record(&record);
        }
        Command::Edit { id, patch } => {
            let patch_json = read_json_arg("--patch", patch)?;
            let record = records(cli)
                .await?
                .edit_body(pb::EditBodyRequest {
                    id: id.clone(),
                    patch_json,
                })
                .await?
                .into_inner();
            out.record(&record);
        }
        Command::AddParties { id, parties } => {
            let request = pb::AddPartiesRequest {
                id: id.clone(),
                parties: parties.clone(),
                note: String::new(),
            };
            let record = records(cli).await?.add_parties(request).await?.into_inner();
            out.record(&record);
        }
        Command::History { id } => {
            let history = records(cli)
                .await?
                .history(pb::HistoryRequest { id: id.clone() })
                .await?
                .into_inner();
            out.history(&history.entries);
        }
        Command::Obligations {
            at,
            org,
            all_states,
            district,
        } => {
            // The server checks `--org` against its own organisation directory, which
            // `--orgs-file` may have replaced: the CLI cannot know which one it runs.
            let request = pb::ObligationsRequest {
                at_ms: optional_instant(at.as_deref())?,
                org: org.clone().unwrap_or_default(),
                include_met: *all_states,
            };
            let response = if *district {
                hub_district(cli)
                    .await?
                    .obligations(request)
                    .await?
                    .into_inner()
            } else {
                records(cli).await?.obligations(request).await?.into_inner()
            };
            out.obligations(&response);
        }
        Command::Report {
            from,
            to,
            org,
            at,
            district,
        } => {
            let request = pb::AccountabilityRequest {
                from_ms: instant_ms(from)?,
                to_ms: instant_ms(to)?,
                org: org.clone().unwrap_or_default(),
                at_ms: optional_instant(at.as_deref())?,
            };
            let report = if *district {
                hub_district(cli)
                    .await?
                    .accountability(request)
                    .await?
                    .into_inner()
            } else {
                records(cli)
                    .await?
                    .accountability(request)
                    .await?
                    .into_inner()
            };
            out.accountability(&report);
        }
        Command::Ca { command } => ca_command(command)?,
        Command::Calendar { command } => calendar_command(cli, command, &out).await?,
        Command::Info => {
            let info = records(cli)
                .await?
                .node_info(pb::NodeInfoRequest {})
                .await?
                .into_inner();
            out.node_info(&info);
        }
        Command::Rejections => {
            let list = records(cli)
                .await?
                .rejections(pb::RejectionsRequest {})
                .await?
                .into_inner();
            out.rejections(&list.rejections);
        }
        Command::Status { check } => {
            let report = hub_district(cli)
                .await?
                .convergence(pb::ConvergenceRequest {})
                .await?
                .into_inner();
            out.convergence(&report);
            if *check && !report.converged {
                return Ok(Verdict::NotConverged);
            }
        }
        Command::ForgetNode { node } => {
            let forgotten = hub_district(cli)
                .await?
                .forget_node(pb::ForgetNodeRequest {
                    node_id: node.clone(),
                })
                .await?
                .into_inner();
            out.forgotten_node(&forgotten);
        }
        Command::Counts => {
            let counts = hub_district(cli)
                .await?
                .record_counts(pb::RecordCountsRequest {})
                .await?
                .into_inner();
            out.counts(&counts.counts);
        }
        Command::Watch { after } => {
            let mut stream = records(cli)
                .await?
                .watch(pb::WatchRequest { after: *after })
                .await?
                .into_inner();
            out.record_change_header();
            let mut last = *after;
            loop {
                match stream.message().await {
                    Ok(Some(change)) => {
                        last = change.position;
                        out.record_change(&change);
                    }
                    Ok(None) => break,
                    // Whoever watches wants to pick up where the stream broke off.
                    Err(status) => {
                        let CliError(message) = status.into();
                        return Err(CliError(format!(
                            "{message}; 已显示至位置 {last} shown up to position {last}: \
                             resume with `linkage watch --after {last}`"
                        )));
                    }
                }
            }
        }
        Command::Feed {
            org,
            kinds,
            categories,
            token,
            token_file,
            follow,
        } => {
            feed(
                cli,
                &out,
                org,
                kinds,
                categories,
                *token,
                token_file.as_deref(),
                *follow,
            )
            .await?;
        }
    }
    Ok(Verdict::Done)
}

async fn calendar_command(cli: &Cli, command: &CalendarCommand, out: &render::Output) -> CliResult {
    let mut calendar = Calendar::official();
    match command {
        CalendarCommand::Due {
            from,
            period,
            published,
            end_of_day,
            at_once,
        } => {
            let from = calendar::parse_instant(from)?;
            let period = period_arg(period)?;
            let mut policy = PeriodPolicy::default();
            if let Some(text) = end_of_day {
                policy.end_of_day = calendar::parse_end_of_day(text)?;
            }
            if let Some(text) = at_once {
                policy.at_once = calendar::parse_delay(text)?;
            }
            if *published {
                add_published_years(cli, &mut calendar).await?;
            }
            let due = calendar.due(from, period, &policy)?;
            out.due(from, period, &policy, &due);
        }
        CalendarCommand::Day { date } => {
            let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
                CliError::input(format!("{date:?} is not a date (expected YYYY-MM-DD)"))
            })?;
            let kind = calendar.is_working_day(day);
            out.day(day, &kind, calendar.holiday(day));
        }
    }
    Ok(())
}

fn ca_command(command: &CaCommand) -> CliResult {
    let tls_error = |e: linkage_node::tls::TlsError| CliError::tls(e);
    match command {
        CaCommand::Init { dir, district } => {
            let (cert, key) = linkage_node::tls::create_ca(dir, district).map_err(tls_error)?;
            render::write_line(format_args!(
                "district CA written: {} and {} (keep the key offline)",
                cert.display(),
                key.display()
            ));
        }
        CaCommand::Issue { dir, org, hosts } => {
            if org != linkage_node::tls::HUB_ORG
                && linkage_node::org::Directory::beidaihe().org(org).is_none()
            {
                eprintln!("warning: {org} is not in the embedded Beidaihe directory");
            }
            let files = linkage_node::tls::issue(dir, org, hosts).map_err(tls_error)?;
            render::write_line(format_args!(
                "certificate for {org}: {} and {}",
                files.cert.display(),
                files.key.display()
            ));
        }
    }
    Ok(())
}

/// Adds the calendar years published as records (by the Justice Bureau) that the node holds.
async fn add_published_years(cli: &Cli, calendar: &mut Calendar) -> CliResult {
    let mut client = records(cli).await?;
    let list = client
        .list(pb::ListRecordsRequest {
            kind: "calendar".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    for summary in list.records {
        let Some(envelope) = summary.envelope else {
            continue;
        };
        let record = client
            .get(pb::GetRecordRequest {
                id: envelope.id.clone(),
            })
            .await?
            .into_inner();
        let year = serde_json::from_str::<linkage_node::record::CalendarBody>(&record.body_json)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                calendar::YearCalendar::from_dates(b.year, &b.off_days, &b.make_up_days)
                    .map(|y| y.with_source(b.source))
                    .map_err(|e| e.to_string())
            });
        match year {
            Ok(year) => {
                calendar.add_year(year);
            }
            // An invalid record cannot be published through a node (the Justice Bureau's node
            // checks it); one that got here anyway is skipped, not trusted.
            Err(e) => eprintln!("warning: calendar record {} skipped: {e}", envelope.id),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per flag of the subcommand
async fn feed(
    cli: &Cli,
    out: &render::Output,
    org: &str,
    kinds: &[String],
    categories: &[u32],
    token: u64,
    token_file: Option<&std::path::Path>,
    follow: bool,
) -> CliResult {
    let saved = match token_file {
        Some(path) => saved_token(path)?,
        None => None,
    };
    if let (Some(saved), Some(path)) = (&saved, token_file)
        && saved.token > 0
        && saved.log_id.is_empty()
    {
        // The hub cannot check a position without its log; the file is rewritten with it as
        // soon as an event arrives.
        eprintln!(
            "warning: 令牌文件未注明变更日志 the token file names no change log: {} was written by an older linkage, so the hub cannot tell whether position {} is still in its log; if the hub was rebuilt or restored since, write 0 in it to receive every record again",
            path.display(),
            saved.token
        );
    }
    let mut resume = saved.unwrap_or(SavedToken {
        token,
        log_id: String::new(),
    });
    // Once following, a hub that stops or a link that breaks is waited for: the feed goes on
    // from the last event received when the hub is back, as a department's system expects of
    // a feed it follows. The first subscription's failure is reported at once (a wrong
    // address, a hub that is not there).
    let mut subscribed = false;
    let mut wait = FOLLOW_RETRY_FIRST;
    let mut retrying = false;
    loop {
        let mut took = false;
        let pulled = pull_feed(
            cli,
            out,
            org,
            kinds,
            categories,
            &mut resume,
            token_file,
            (follow, retrying),
            &mut took,
        );
        let pulled = pulled.await;
        // A hub that took the subscription was back: the next wait starts short again.
        if took {
            subscribed = true;
            wait = FOLLOW_RETRY_FIRST;
        }
        let lost = match pulled {
            Ok(()) if !follow => return Ok(()),
            // A followed stream does not end while the hub serves it.
            Ok(()) => CliError("连接中断 connection lost: the hub ended the feed".into()),
            Err(Pull::Lost(error)) if follow && subscribed => error,
            Err(Pull::Lost(error) | Pull::Failed(error)) => return Err(error),
        };
        let CliError(message) = lost;
        eprintln!(
            "{message}; 重新连接 reconnecting in {} s, from position {}",
            wait.as_secs(),
            resume.token
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(FOLLOW_RETRY_MAX);
        retrying = true;
    }
}

/// How long `feed --follow` waits before its first attempt to reach the hub again, doubled on
/// each failure up to [`FOLLOW_RETRY_MAX`].
const FOLLOW_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const FOLLOW_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Why one subscription to the feed ended early.
enum Pull {
    /// The hub could not be reached, stopped or the link broke: following, try again.
    Lost(CliError),
    /// Anything else (a refused position, a bad request, a file that cannot be written).
    Failed(CliError),
}

/// Whether a status means the hub is (for now) out of reach rather than refusing the request.
fn hub_out_of_reach(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(status.code(), Code::Unavailable | Code::Cancelled) || connection_broke(status)
}

/// One subscription to the feed from `resume`, printing its events and moving `resume` (and
/// the token file) past each; returns once the hub has sent everything (`--follow`: once the
/// stream ends). `subscribed` is set once the hub has taken a subscription; one taken after a
/// lost link (`retrying`) is said on stderr, where the loss was.
#[allow(clippy::too_many_arguments)] // the feed's flags, where it stands, whether it began
async fn pull_feed(
    cli: &Cli,
    out: &render::Output,
    org: &str,
    kinds: &[String],
    categories: &[u32],
    resume: &mut SavedToken,
    token_file: Option<&std::path::Path>,
    (follow, retrying): (bool, bool),
    subscribed: &mut bool,
) -> Result<(), Pull> {
    let request = pb::FeedRequest {
        org: org.to_owned(),
        kinds: kinds.to_vec(),
        categories: categories.to_vec(),
        resume_token: resume.token,
        catch_up_only: !follow,
        log_id: resume.log_id.clone(),
    };
    let channel = connect(cli, &cli.hub, "hub").await.map_err(Pull::Lost)?;
    let answer = FeedsClient::new(channel)
        .max_decoding_message_size(MAX_ANSWER_BYTES)
        .subscribe(request)
        .await;
    let mut stream = match (answer, token_file) {
        (Ok(response), _) => {
            *subscribed = true;
            if retrying {
                eprintln!(
                    "已重新连接 reconnected: the feed goes on from position {}",
                    resume.token
                );
            }
            response.into_inner()
        }
        // The saved position is not one in the hub's log: starting over is the caller's
        // decision (the file wins over --token), so say how.
        (Err(status), Some(path)) if status.code() == tonic::Code::OutOfRange => {
            let CliError(message) = status.into();
            return Err(Pull::Failed(CliError(format!(
                "{message}; to start over, delete {} or write 0 in it",
                path.display()
            ))));
        }
        (Err(status), _) if hub_out_of_reach(&status) => return Err(Pull::Lost(status.into())),
        (Err(status), _) => return Err(Pull::Failed(status.into())),
    };
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(status) if hub_out_of_reach(&status) => return Err(Pull::Lost(status.into())),
            Err(status) => return Err(Pull::Failed(status.into())),
        };
        out.feed_event(&event);
        resume.token = event.token;
        resume.log_id = event.log_id.clone();
        if let Some(path) = token_file {
            std::fs::write(path, resume.to_string()).map_err(|e| {
                Pull::Failed(CliError::file(format!(
                    "could not save token to {}: {e}",
                    path.display()
                )))
            })?;
        }
    }
}

/// A feed position as a token file keeps it: the token, then the hub change log it is a
/// position in (files written before logs were named hold the token alone).
#[derive(Debug, PartialEq)]
struct SavedToken {
    token: u64,
    log_id: String,
}

impl std::fmt::Display for SavedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}", self.token, self.log_id)
    }
}

impl std::str::FromStr for SavedToken {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let mut words = text.split_whitespace();
        let token = words.next().ok_or(())?.parse().map_err(|_| ())?;
        let log_id = words.next().unwrap_or_default().to_owned();
        if words.next().is_some() {
            return Err(());
        }
        Ok(SavedToken { token, log_id })
    }
}

/// The token saved in `path`, or `None` if there is no such file yet. Whether the token can be
/// kept is checked now, before anything is delivered: a token that cannot be saved would make
/// the next run start over, or skip what this one printed.
fn saved_token(path: &std::path::Path) -> Result<Option<SavedToken>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.parse().map(Some).map_err(|()| {
            CliError::input(format!(
                "token file {} does not hold a token (a number, then the hub log it came from)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = match path.parent() {
                Some(folder) if !folder.as_os_str().is_empty() => folder,
                _ => std::path::Path::new("."),
            };
            if folder.is_dir() {
                Ok(None)
            } else {
                Err(CliError::file(format!(
                    "token file {}: its folder {} does not exist",
                    path.display(),
                    folder.display()
                )))
            }
        }
        Err(e) => Err(CliError::file(format!(
            "could not read token file {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_token_file_keeps_the_log_and_reads_files_without_one() {
        let saved = SavedToken {
            token: 42,
            log_id: "hub-store-1".into(),
        };
        assert_eq!(saved.to_string().parse::<SavedToken>(), Ok(saved));
        assert_eq!(
            "17\n".parse::<SavedToken>(),
            Ok(SavedToken {
                token: 17,
                log_id: String::new()
            })
        );
        for bad in ["", "seventeen", "17 log extra", "-1 log"] {
            assert_eq!(bad.parse::<SavedToken>(), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn only_strings_in_top_level_at_ms_fields_become_milliseconds() {
        let ms = instant_ms("2026-09-28 10:20").unwrap();
        let mut body = json!({
            "discovered_at_ms": "2026-09-28 10:20",
            "received_at_ms": 1_790_000_000_000_i64,
            "non_jurisdiction_at_ms": null,
            "title": "2026-09-28 10:20",
            "complainant": {"called_at_ms": "2026-09-28 10:20"},
        });
        assert!(instants_to_millis("--body", &mut body).unwrap());
        assert_eq!(
            body,
            json!({
                "discovered_at_ms": ms,
                "received_at_ms": 1_790_000_000_000_i64,
                "non_jurisdiction_at_ms": null,
                "title": "2026-09-28 10:20",
                "complainant": {"called_at_ms": "2026-09-28 10:20"},
            })
        );

        let mut unchanged = json!({"found_at_ms": 5});
        assert!(!instants_to_millis("--patch", &mut unchanged).unwrap());
        assert!(!instants_to_millis("--body", &mut json!(["2026-09-28 10:20"])).unwrap());
    }

    #[test]
    fn periods_in_minutes_count_whole_hours_only() {
        assert_eq!(period_arg("120m").unwrap(), Period::Hours(2));
        assert_eq!(period_arg(" 1H60M ").unwrap(), Period::Hours(2));
        assert_eq!(period_arg("48h").unwrap(), Period::Hours(48));
        assert_eq!(period_arg("2880m").unwrap(), Period::Hours(48));
        assert_eq!(period_arg("3wd").unwrap(), Period::WorkingDays(3));
        for refused in [
            "90m",
            "1h30m",
            "0m",
            "3932160m",
            "18446744073709551615m",
            "m",
            "1h3",
        ] {
            assert!(period_arg(refused).is_err(), "{refused}");
        }
        assert_eq!(minutes_of("18446744073709551615h"), None);
    }
}
