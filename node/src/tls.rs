//! Mutual TLS with a district certificate authority: issuing the CA and each organisation's
//! certificate, building tonic's server and client TLS settings from PEM files, and reading the
//! organisation back from a peer's certificate.
//!
//! An organisation's certificate carries its id as the subject's common name. The hub takes a
//! node's organisation from the certificate the node presented, not from what the node says.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path} could not be read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS file {path} could not be written: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("peer certificate is not a valid X.509 certificate: {0}")]
    Parse(String),
    #[error("peer certificate names no organisation (no subject common name)")]
    NoOrganisation,
    #[error("TLS needs all three of --tls-ca, --tls-cert and --tls-key; {0} is missing")]
    Incomplete(&'static str),
}

/// The three PEM files of an organisation's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The district CA's certificate: peers must present certificates it signed.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Write {
        path: path.display().to_string(),
        source,
    })
}

impl TlsFiles {
    /// Complete settings from three optional paths: all or none.
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
            (None, _, _) => Err(TlsError::Incomplete("--tls-ca")),
            (_, None, _) => Err(TlsError::Incomplete("--tls-cert")),
            (_, _, None) => Err(TlsError::Incomplete("--tls-key")),
        }
    }

    fn identity(&self) -> Result<Identity, TlsError> {
        Ok(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
    }

    fn ca_certificate(&self) -> Result<Certificate, TlsError> {
        Ok(Certificate::from_pem(read(&self.ca)?))
    }

    /// Serving: present our certificate and require a client certificate signed by the CA.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(self.ca_certificate()?))
    }

    /// Connecting: trust only the district CA and present our certificate.
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(self.ca_certificate()?)
            .identity(self.identity()?))
    }
}

/// The organisation a peer's certificate (DER) was issued to: its subject's common name.
pub fn org_of_certificate(der: &[u8]) -> Result<String, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or(TlsError::NoOrganisation)?;
    let org = cn.as_str().map_err(|e| TlsError::Parse(e.to_string()))?;
    if org.is_empty() {
        return Err(TlsError::NoOrganisation);
    }
    Ok(org.to_owned())
}

/// The organisation of the client that sent `request`, if it connected over mutual TLS.
pub fn org_of_peer<T>(request: &tonic::Request<T>) -> Option<Result<String, TlsError>> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    Some(org_of_certificate(leaf.as_ref()))
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Creates a district CA in `dir` (`ca.pem`, `ca.key`). The key signs every office's
/// certificate: keep it off the network.
pub fn create_ca(dir: &Path, district: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Linkage district CA {district}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    write(&cert_path, &cert.pem())?;
    write(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// The organisation name in the hub's own certificate (and in the hub's actor ids): the name
/// the hub knows its operator by (`linkage forget-node` over mutual TLS).
pub const HUB_ORG: &str = "district-hub";

/// Issues `org`'s certificate, signed by the CA in `dir`, valid as server and client for
/// `hosts` (names or IP addresses the org's node or hub is reached at). Writes `ORG.pem` and
/// `ORG.key` beside the CA.
pub fn issue(dir: &Path, org: &str, hosts: &[String]) -> Result<TlsFiles, TlsError> {
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?).map_err(generate)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&dir.join("ca.pem"))?, ca_key).map_err(generate)?;

    let mut params = CertificateParams::new(hosts.to_vec()).map_err(generate)?;
    params.distinguished_name.push(DnType::CommonName, org);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{org}.pem")),
        key: dir.join(format!("{org}.key")),
    };
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_its_organisation() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path(), "130304").unwrap();
        let files = issue(
            dir.path(),
            "130304100",
            &["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
        let pem = std::fs::read_to_string(&files.cert).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(org_of_certificate(&der).unwrap(), "130304100");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            org_of_certificate(b"not a certificate"),
            Err(TlsError::Parse(_))
        ));
    }

    #[test]
    fn tls_settings_are_all_or_nothing() {
        assert_eq!(TlsFiles::from_parts(None, None, None).unwrap(), None);
        let err = TlsFiles::from_parts(Some("ca".into()), None, Some("k".into())).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }
}
