//! The node's configuration: flags alone, or a TOML file with the same keys, with flags
//! overriding the file and `LINKAGE_*` environment variables overriding neither-set keys.
//! Also the pieces the hub's configuration shares: TLS keys, reading a TOML file, and the
//! `[periods]` table that sets how periods become due times.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::calendar::{CalendarError, PeriodPolicies, PeriodPolicy, parse_delay, parse_end_of_day};
use crate::org::Directory;
use crate::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} could not be read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {detail}")]
    Parse { path: String, detail: String },
    #[error("missing setting {0}: pass --{0} or set it in the config file")]
    Missing(&'static str),
    #[error("cache-docs {0} is too small: a server keeps at least {min} documents in memory", min = crate::replica::MIN_CACHED_DOCS)]
    CacheTooSmall(usize),
    #[error(
        "--listen {addr} is not a loopback address; without TLS (--tls-ca, --tls-cert, --tls-key) a server listens on loopback only (see deploy/README.md)"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("organisation {0:?} is not in the organisation directory")]
    UnknownOrg(String),
    #[error(
        "the hub address {url:?} is not usable ({reason}); expected e.g. http://127.0.0.1:7400, or https://HOST:PORT with mutual TLS"
    )]
    BadHubUrl { url: String, reason: String },
    #[error("[periods.organisations.{0}]: organisation {0:?} is not in the organisation directory")]
    UnknownPeriodsOrg(String),
    #[error("{key}: {source}")]
    BadPeriodSetting {
        /// The setting's full TOML key, e.g. `periods.organisations.130304100.end_of_day`.
        key: String,
        source: CalendarError,
    },
    #[error(transparent)]
    Directory(#[from] crate::org::DirectoryError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// `linkage-node`: an office's node.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "linkage-node",
    version,
    about = "Linkage office node: records as Automerge documents in RocksDB, served over gRPC"
)]
pub struct NodeArgs {
    /// TOML file with any of the keys below (org, data_dir, listen, hub, orgs_file), and the
    /// district's [periods] table (see deploy/linkage-node.toml).
    #[arg(long, env = "LINKAGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The organisation this node serves, e.g. 130304100 (Haibin Town).
    #[arg(long, env = "LINKAGE_ORG")]
    pub org: Option<String>,
    /// Folder of the node's RocksDB store; created if missing.
    #[arg(long, env = "LINKAGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve gRPC on, e.g. 127.0.0.1:7401 (port 0 picks a free port).
    #[arg(long, env = "LINKAGE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The district hub, e.g. http://127.0.0.1:7400; without it the node works alone.
    #[arg(long, env = "LINKAGE_HUB")]
    pub hub: Option<String>,
    /// Organisation directory replacing the embedded Beidaihe one.
    #[arg(long, env = "LINKAGE_ORGS_FILE")]
    pub orgs_file: Option<PathBuf>,
    /// Write the bound address to this file once listening (for scripts using port 0).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Documents kept in memory at once (default 4096, at least 16).
    #[arg(long, env = "LINKAGE_CACHE_DOCS")]
    pub cache_docs: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Mutual TLS settings, shared by the node, the hub and the CLI. All three or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// The district CA certificate (PEM); peers must present certificates it signed.
    #[arg(long, env = "LINKAGE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This organisation's certificate (PEM), issued by the district CA.
    #[arg(long, env = "LINKAGE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This organisation's private key (PEM).
    #[arg(long, env = "LINKAGE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Flags first, then the config file's keys.
    pub fn resolve(&self, file: &TlsFile) -> Result<Option<TlsFiles>, ConfigError> {
        Ok(TlsFiles::from_parts(
            self.tls_ca.clone().or(file.tls_ca.clone()),
            self.tls_cert.clone().or(file.tls_cert.clone()),
            self.tls_key.clone().or(file.tls_key.clone()),
        )?)
    }
}

/// The TLS keys of a config file.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TlsFile {
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The `[periods]` table of a node's or the hub's config file: the district's "at once" and
/// end of day, and organisations whose own differ. A key left out keeps the district's value
/// (for an organisation) or the mission's default (for the district: 2h, 24:00).
///
/// Every node computes every party's obligations, so all nodes and the hub of a district
/// must carry the same table, or they show different due times for one duty.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodsFile {
    /// "At once" (T-2, J-3, A-4), e.g. "2h", "90m", "1h30m".
    pub at_once: Option<String>,
    /// When a day ends in Beijing time, e.g. "24:00", "17:30".
    pub end_of_day: Option<String>,
    /// By organisation id.
    #[serde(default)]
    pub organisations: BTreeMap<String, OrgPeriodsFile>,
}

/// One organisation's entry under `[periods.organisations.ID]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPeriodsFile {
    pub at_once: Option<String>,
    pub end_of_day: Option<String>,
}

impl PeriodsFile {
    /// Checks every value and organisation id against `directory`; an error names the key
    /// and the value, or the unknown organisation.
    pub fn resolve(&self, directory: &Directory) -> Result<PeriodPolicies, ConfigError> {
        let district = policy_from(
            "periods",
            &PeriodPolicy::default(),
            self.at_once.as_deref(),
            self.end_of_day.as_deref(),
        )?;
        let mut organisations = BTreeMap::new();
        for (org, entry) in &self.organisations {
            if directory.org(org).is_none() {
                return Err(ConfigError::UnknownPeriodsOrg(org.clone()));
            }
            let policy = policy_from(
                &format!("periods.organisations.{org}"),
                &district,
                entry.at_once.as_deref(),
                entry.end_of_day.as_deref(),
            )?;
            organisations.insert(org.clone(), policy);
        }
        Ok(PeriodPolicies {
            district,
            organisations,
        })
    }
}

/// `base` with the values given under `table` replaced.
fn policy_from(
    table: &str,
    base: &PeriodPolicy,
    at_once: Option<&str>,
    end_of_day: Option<&str>,
) -> Result<PeriodPolicy, ConfigError> {
    let bad = |name: &str| {
        let key = format!("{table}.{name}");
        move |source| ConfigError::BadPeriodSetting { key, source }
    };
    let mut policy = *base;
    if let Some(text) = at_once {
        policy.at_once = parse_delay(text).map_err(bad("at_once"))?;
    }
    if let Some(text) = end_of_day {
        policy.end_of_day = parse_end_of_day(text).map_err(bad("end_of_day"))?;
    }
    Ok(policy)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    org: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    hub: Option<String>,
    orgs_file: Option<PathBuf>,
    cache_docs: Option<usize>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    periods: PeriodsFile,
}

/// A node's settings, complete and checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub org: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub hub: Option<String>,
    pub directory: Directory,
    pub addr_file: Option<PathBuf>,
    pub cache_docs: usize,
    /// Mutual TLS for serving and for the hub link; `None` is the loopback-only development
    /// mode.
    pub tls: Option<TlsFiles>,
    /// How periods become due times, from the `[periods]` table.
    pub periods: PeriodPolicies,
}

pub fn read_toml<T: for<'de> Deserialize<'de> + Default>(
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Refuses a non-loopback listen address without TLS: the development mode without
/// certificates must not be reachable from the network.
pub fn require_loopback(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<(), ConfigError> {
    if tls.is_some() || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ConfigError::NotLoopback { addr })
    }
}

/// The `cache-docs` setting, refused below what the replica would keep anyway: a smaller
/// number was raised silently, so the setting said one thing and the server did another.
pub fn cache_docs(docs: usize) -> Result<usize, ConfigError> {
    if docs < crate::replica::MIN_CACHED_DOCS {
        return Err(ConfigError::CacheTooSmall(docs));
    }
    Ok(docs)
}

/// Checks the hub's address as the sync link will read it, so a typo stops start-up instead of
/// leaving a node that retries an impossible link forever: an http or https URL with a host.
pub fn check_hub_url(url: String) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::BadHubUrl {
        url: url.clone(),
        reason: reason.to_owned(),
    };
    // The parser of the link's own `Endpoint::from_shared`.
    let uri = url
        .parse::<tonic::transport::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("scheme {other:?}, not http or https"))),
        None => return Err(bad("no scheme: start it with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(url)
}

impl NodeConfig {
    pub fn from_args(args: NodeArgs) -> Result<Self, ConfigError> {
        let file: NodeFile = read_toml(args.config.as_deref())?;
        let orgs_file = args.orgs_file.or(file.orgs_file);
        let directory = match orgs_file {
            Some(path) => Directory::from_file(&path)?,
            None => Directory::beidaihe(),
        };
        let org = args.org.or(file.org).ok_or(ConfigError::Missing("org"))?;
        if directory.org(&org).is_none() {
            return Err(ConfigError::UnknownOrg(org));
        }
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7401)));
        let tls = args.tls.resolve(&TlsFile {
            tls_ca: file.tls_ca,
            tls_cert: file.tls_cert,
            tls_key: file.tls_key,
        })?;
        require_loopback(listen, tls.as_ref())?;
        let periods = file.periods.resolve(&directory)?;
        Ok(NodeConfig {
            org,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .ok_or(ConfigError::Missing("data-dir"))?,
            listen,
            hub: args.hub.or(file.hub).map(check_hub_url).transpose()?,
            directory,
            addr_file: args.addr_file,
            cache_docs: cache_docs(args.cache_docs.or(file.cache_docs).unwrap_or(4096))?,
            tls,
            periods,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, TimeDelta};

    use super::*;

    /// `NodeConfig::from_args` over a config file holding `toml` (org and data_dir
    /// included).
    fn node_config(toml: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let text = format!("org = \"130304100\"\ndata_dir = \"/tmp/unused\"\n{toml}");
        std::fs::write(&path, text).unwrap();
        let args =
            NodeArgs::try_parse_from(["linkage-node", "--config", path.to_str().unwrap()]).unwrap();
        NodeConfig::from_args(args)
    }

    fn hm(hour: u32, minute: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(hour, minute, 0).unwrap()
    }

    /// A cache smaller than the replica keeps is refused, saying what the least is, rather
    /// than raised silently; the least is taken.
    #[test]
    fn cache_docs_below_the_least_a_replica_keeps_is_refused() {
        let error = node_config("cache_docs = 0").unwrap_err();
        assert!(matches!(error, ConfigError::CacheTooSmall(0)), "{error}");
        assert!(error.to_string().contains("at least 16"), "{error}");
        assert_eq!(node_config("cache_docs = 16").unwrap().cache_docs, 16);
        assert_eq!(node_config("").unwrap().cache_docs, 4096);
    }

    #[test]
    fn without_a_periods_table_every_organisation_has_the_missions_defaults() {
        let config = node_config("").unwrap();
        assert_eq!(config.periods, PeriodPolicies::default());
        assert_eq!(
            config.periods.for_org("bdh-scjg").at_once,
            TimeDelta::hours(2)
        );
        assert_eq!(
            config.periods.for_org("bdh-scjg").end_of_day,
            PeriodPolicy::MIDNIGHT
        );
    }

    #[test]
    fn the_deploy_example_and_its_commented_override_parse() {
        let example = include_str!("../../deploy/linkage-node.toml");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let args =
                NodeArgs::try_parse_from(["linkage-node", "--config", path.to_str().unwrap()])
                    .unwrap();
            NodeConfig::from_args(args)
        };
        assert_eq!(read(example).unwrap().periods, PeriodPolicies::default());

        let uncommented = example
            .replace("# [periods.organisations.", "[periods.organisations.")
            .replace("# end_of_day = \"17:30\"", "end_of_day = \"17:30\"");
        let periods = read(&uncommented).unwrap().periods;
        assert_eq!(periods.for_org("130304100").end_of_day, hm(17, 30));
        assert_eq!(periods.for_org("bdh-scjg"), &PeriodPolicy::default());
    }

    #[test]
    fn periods_table_sets_the_district_and_an_organisation_that_inherits_the_rest() {
        let config = node_config(
            r#"
[periods]
at_once = "90m"
end_of_day = "24:00"
[periods.organisations.130304100]
end_of_day = "17:30"
[periods.organisations.bdh-yjgl]
at_once = "1h"
"#,
        )
        .unwrap();
        let district = PeriodPolicy {
            at_once: TimeDelta::minutes(90),
            end_of_day: PeriodPolicy::MIDNIGHT,
        };
        assert_eq!(config.periods.district, district);
        assert_eq!(
            config.periods.for_org("130304100"),
            &PeriodPolicy {
                at_once: TimeDelta::minutes(90),
                end_of_day: hm(17, 30),
            }
        );
        assert_eq!(
            config.periods.for_org("bdh-yjgl"),
            &PeriodPolicy {
                at_once: TimeDelta::hours(1),
                end_of_day: PeriodPolicy::MIDNIGHT,
            }
        );
        assert_eq!(config.periods.for_org("bdh-scjg"), &district);
    }

    #[test]
    fn an_unknown_organisation_in_periods_is_refused_naming_it() {
        let error =
            node_config("[periods.organisations.999999999]\nend_of_day = \"17:30\"\n").unwrap_err();
        assert!(
            matches!(&error, ConfigError::UnknownPeriodsOrg(org) if org == "999999999"),
            "{error:?}"
        );
        assert!(error.to_string().contains("999999999"), "{error}");
    }

    #[test]
    fn a_bad_delay_or_end_of_day_is_refused_naming_the_key_and_the_value() {
        for (toml, key, value) in [
            (
                "[periods]\nat_once = \"2 hours\"\n",
                "periods.at_once",
                "2 hours",
            ),
            (
                "[periods]\nend_of_day = \"25:00\"\n",
                "periods.end_of_day",
                "25:00",
            ),
            (
                "[periods.organisations.130304100]\nend_of_day = \"5pm\"\n",
                "periods.organisations.130304100.end_of_day",
                "5pm",
            ),
            (
                "[periods.organisations.bdh-scjg]\nat_once = \"0m\"\n",
                "periods.organisations.bdh-scjg.at_once",
                "0m",
            ),
        ] {
            let error = node_config(toml).unwrap_err();
            assert!(
                matches!(&error, ConfigError::BadPeriodSetting { key: named, .. } if named == key),
                "{toml}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(key) && message.contains(&format!("{value:?}")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_hub_address_that_is_not_an_http_url_with_a_host_is_refused_naming_it() {
        for url in [
            "not a url",
            "127.0.0.1:7400",
            "ftp://127.0.0.1:7400",
            "http://",
            "http:///path",
            "",
        ] {
            let error = node_config(&format!("hub = {url:?}\n")).unwrap_err();
            assert!(
                matches!(&error, ConfigError::BadHubUrl { url: named, .. } if named == url),
                "{url:?}: {error:?}"
            );
            assert!(error.to_string().contains(&format!("{url:?}")), "{error}");
        }
        for url in ["http://127.0.0.1:7400", "https://hub.example:7400/"] {
            let config = node_config(&format!("hub = {url:?}\n")).unwrap();
            assert_eq!(config.hub.as_deref(), Some(url));
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_in_periods_are_refused_by_name() {
        for (toml, unknown) in [
            ("[periods]\nend_of_the_day = \"17:30\"\n", "end_of_the_day"),
            (
                "[periods.organisations.130304100]\nat_one = \"1h\"\n",
                "at_one",
            ),
            ("[periods]\nat_once = 2\n", "string"),
        ] {
            let error = node_config(toml).unwrap_err();
            assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
            assert!(error.to_string().contains(unknown), "{error}");
        }
    }
}
