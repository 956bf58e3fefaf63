//! The hub's configuration: flags alone, or a TOML file with the same keys. The `[periods]`
//! table is the nodes' own ([`PeriodsFile`]): the hub answers the district's obligations and
//! must turn periods into due times as the nodes do.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use linkage_node::calendar::PeriodPolicies;
use linkage_node::config::{
    ConfigError, PeriodsFile, TlsArgs, TlsFile, cache_docs, read_toml, require_loopback,
};
use linkage_node::org::Directory;
use linkage_node::tls::TlsFiles;
use serde::Deserialize;

/// `linkage-hub`: the district hub.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "linkage-hub",
    version,
    about = "Linkage district hub: merges, redistributes, tracks convergence, serves feeds"
)]
pub struct HubArgs {
    /// TOML file with any of the keys below (data_dir, listen, orgs_file), and the district's
    /// [periods] table, the same as every node's (see deploy/linkage-hub.toml).
    #[arg(long, env = "LINKAGE_HUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder of the hub's RocksDB store; created if missing.
    #[arg(long, env = "LINKAGE_HUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "LINKAGE_HUB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Organisation directory replacing the embedded Beidaihe one.
    #[arg(long, env = "LINKAGE_ORGS_FILE")]
    pub orgs_file: Option<PathBuf>,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Documents kept in memory at once (default 2048, at least 16; about 50 KiB each).
    #[arg(long, env = "LINKAGE_HUB_CACHE_DOCS")]
    pub cache_docs: Option<usize>,
    /// Records whose frontier is kept in memory (default 16384, 0 for none; a few KiB each):
    /// an office's edit of such a record's body fields is checked and stored without loading
    /// the record.
    #[arg(long, env = "LINKAGE_HUB_CACHE_FRONTIERS")]
    pub cache_frontiers: Option<usize>,
    /// This hub's store was lost and starts empty: admit the changes a node hands over for a
    /// record's other parties (its copy may be the only one left), each checked as its
    /// author's act. Off by default: a node may otherwise send only its own organisation's
    /// changes. Restart without it once `linkage status` shows the district converged.
    #[arg(long, env = "LINKAGE_HUB_REFILL_FROM_NODES")]
    pub refill_from_nodes: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubFile {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    orgs_file: Option<PathBuf>,
    cache_docs: Option<usize>,
    cache_frontiers: Option<usize>,
    #[serde(default)]
    refill_from_nodes: bool,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    periods: PeriodsFile,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub directory: Directory,
    pub addr_file: Option<PathBuf>,
    pub cache_docs: usize,
    /// Records whose frontier the replica keeps (`Replica::keep_frontiers`).
    pub cache_frontiers: usize,
    /// Mutual TLS; with it the hub takes each node's organisation from its certificate.
    pub tls: Option<TlsFiles>,
    /// How periods become due times in the district's obligations, from `[periods]`.
    pub periods: PeriodPolicies,
    /// Admit the changes nodes hand over for other parties: see [`HubArgs::refill_from_nodes`].
    pub refill_from_nodes: bool,
}

impl HubConfig {
    pub fn from_args(args: HubArgs) -> Result<Self, ConfigError> {
        let file: HubFile = read_toml(args.config.as_deref())?;
        let directory = match args.orgs_file.or(file.orgs_file) {
            Some(path) => Directory::from_file(&path)?,
            None => Directory::beidaihe(),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7400)));
        let tls = args.tls.resolve(&TlsFile {
            tls_ca: file.tls_ca,
            tls_cert: file.tls_cert,
            tls_key: file.tls_key,
        })?;
        require_loopback(listen, tls.as_ref())?;
        let periods = file.periods.resolve(&directory)?;
        Ok(HubConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .ok_or(ConfigError::Missing("data-dir"))?,
            listen,
            directory,
            addr_file: args.addr_file,
            // A loaded document costs ~50 KiB; 2,048 keep the hub near 150 MiB however many
            // records it holds, and a record's offers to every party come together, so they
            // find it loaded (benchmark: 16,384 took the hub to 560 MiB at 10,000 records).
            cache_docs: cache_docs(args.cache_docs.or(file.cache_docs).unwrap_or(2_048))?,
            // Every record of a city's year fits (10,000 frontiers of the benchmark's records
            // took about 40 MiB), so an office reconnecting after a day finds its records' there.
            cache_frontiers: args
                .cache_frontiers
                .or(file.cache_frontiers)
                .unwrap_or(16_384),
            tls,
            periods,
            refill_from_nodes: args.refill_from_nodes || file.refill_from_nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, TimeDelta};
    use linkage_node::calendar::PeriodPolicy;

    use super::*;

    fn hub_config(toml: &str) -> Result<HubConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, format!("data_dir = \"/tmp/unused\"\n{toml}")).unwrap();
        let args =
            HubArgs::try_parse_from(["linkage-hub", "--config", path.to_str().unwrap()]).unwrap();
        HubConfig::from_args(args)
    }

    #[test]
    fn the_hub_reads_the_same_periods_table_as_a_node() {
        let config = hub_config(
            r#"
[periods]
at_once = "1h"
[periods.organisations.130304100]
end_of_day = "17:30"
"#,
        )
        .unwrap();
        assert_eq!(
            config.periods.for_org("bdh-scjg").at_once,
            TimeDelta::hours(1)
        );
        assert_eq!(
            config.periods.for_org("130304100"),
            &PeriodPolicy {
                at_once: TimeDelta::hours(1),
                end_of_day: NaiveTime::from_hms_opt(17, 30, 0).unwrap(),
            }
        );
        assert_eq!(hub_config("").unwrap().periods, PeriodPolicies::default());
    }

    #[test]
    fn frontiers_are_kept_for_a_citys_records_unless_turned_off() {
        assert_eq!(hub_config("").unwrap().cache_frontiers, 16_384);
        assert_eq!(
            hub_config("cache_frontiers = 0").unwrap().cache_frontiers,
            0
        );
        assert_eq!(
            hub_config("cache_frontiers = 50").unwrap().cache_frontiers,
            50
        );
    }

    #[test]
    fn the_deploy_example_carries_the_same_periods_table_as_the_node_example() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, include_str!("../../deploy/linkage-hub.toml")).unwrap();
        let args =
            HubArgs::try_parse_from(["linkage-hub", "--config", path.to_str().unwrap()]).unwrap();
        let hub = HubConfig::from_args(args).unwrap();

        let periods_of = |toml: &str| -> PeriodsFile {
            toml::from_str::<toml::Table>(toml).unwrap()["periods"]
                .clone()
                .try_into()
                .unwrap()
        };
        assert_eq!(
            periods_of(include_str!("../../deploy/linkage-hub.toml")),
            periods_of(include_str!("../../deploy/linkage-node.toml"))
        );
        assert_eq!(hub.periods, PeriodPolicies::default());
    }

    #[test]
    fn the_hub_refuses_an_unknown_organisation_or_a_bad_value_in_periods() {
        let unknown = hub_config("[periods.organisations.nobody]\nat_once = \"1h\"\n").unwrap_err();
        assert!(unknown.to_string().contains("nobody"), "{unknown}");
        let bad = hub_config("[periods]\nend_of_day = \"17h30\"\n").unwrap_err();
        let message = bad.to_string();
        assert!(
            message.contains("periods.end_of_day") && message.contains("\"17h30\""),
            "{message}"
        );
    }
}
