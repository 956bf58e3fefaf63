//! The hub's configuration: flags alone, or a TOML file with the same keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use linkage_node::config::{ConfigError, TlsArgs, TlsFile, read_toml, require_loopback};
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
    /// TOML file with any of the keys below (data_dir, listen, orgs_file).
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
    /// Documents kept in memory at once.
    #[arg(long)]
    pub cache_docs: Option<usize>,
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
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub directory: Directory,
    pub addr_file: Option<PathBuf>,
    pub cache_docs: usize,
    /// Mutual TLS; with it the hub takes each node's organisation from its certificate.
    pub tls: Option<TlsFiles>,
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
        Ok(HubConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .ok_or(ConfigError::Missing("data-dir"))?,
            listen,
            directory,
            addr_file: args.addr_file,
            cache_docs: args.cache_docs.or(file.cache_docs).unwrap_or(16_384),
            tls,
        })
    }
}
