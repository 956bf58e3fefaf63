//! The node's configuration: flags alone, or a TOML file with the same keys, with flags
//! overriding the file and `LINKAGE_*` environment variables overriding neither-set keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

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
    #[error(
        "--listen {addr} is not a loopback address; without TLS (--tls-ca, --tls-cert, --tls-key) a server listens on loopback only (see deploy/README.md)"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("organisation {0:?} is not in the organisation directory")]
    UnknownOrg(String),
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
    /// TOML file with any of the keys below (org, data_dir, listen, hub, orgs_file).
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
    /// Documents kept in memory at once.
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
}

/// A node's settings, complete and checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub org: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub hub: Option<String>,
    pub directory: crate::org::Directory,
    pub addr_file: Option<PathBuf>,
    pub cache_docs: usize,
    /// Mutual TLS for serving and for the hub link; `None` is the loopback-only development
    /// mode.
    pub tls: Option<TlsFiles>,
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

impl NodeConfig {
    pub fn from_args(args: NodeArgs) -> Result<Self, ConfigError> {
        let file: NodeFile = read_toml(args.config.as_deref())?;
        let orgs_file = args.orgs_file.or(file.orgs_file);
        let directory = match orgs_file {
            Some(path) => crate::org::Directory::from_file(&path)?,
            None => crate::org::Directory::beidaihe(),
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
        Ok(NodeConfig {
            org,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .ok_or(ConfigError::Missing("data-dir"))?,
            listen,
            hub: args.hub.or(file.hub),
            directory,
            addr_file: args.addr_file,
            cache_docs: args.cache_docs.or(file.cache_docs).unwrap_or(4096),
            tls,
        })
    }
}
