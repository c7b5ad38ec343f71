//! TLS configuration: the server's and the client's rustls configurations,
//! built from PEM files (certificate chain, private key, CA certificates).
//!
//! It owns reading those files and turning them into `rustls` configurations
//! (TLS 1.2 and 1.3 only, rustls's default cipher suites, the `ring`
//! provider). It must never put the contents of a key file into an error,
//! a log line or anything else a user can see: errors name the path and what
//! was wrong, never the bytes. Configurations are built once on the main
//! thread and shared read-only (`Arc`) by every shard.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The files the native listener's TLS is made of.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used. The message names the file and the
/// problem, never the file's contents.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {problem}")]
pub struct TlsError {
    pub what: &'static str,
    pub path: String,
    pub problem: String,
}

impl TlsError {
    pub fn name(&self) -> &'static str {
        "TLS_CONFIG_INVALID"
    }

    pub fn fix(&self) -> &'static str {
        "check tls_cert_file / tls_key_file / tls_client_ca_file (and the CLI's --tls-* flags): each must exist, be readable, hold PEM, and the key must be the certificate's (docs/security.md)"
    }

    fn new(what: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
        TlsError {
            what,
            path: path.display().to_string(),
            problem: problem.into(),
        }
    }
}

/// The `ring` provider. rustls 0.23.48 marks it deprecated for lacking
/// post-quantum key exchange; the alternative, aws-lc-rs, needs cmake and a C
/// toolchain at build time, which the project does not require. Classical
/// X25519/P-256 key exchange is what TLS 1.2/1.3 clients expect today.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::io::tls_files::read(path)
        .map_err(|e| TlsError::new(what, path, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file (at least one).
fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::new(what, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            what,
            path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file. The parser's own error is not
/// passed on: it could quote a line of the file.
fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        TlsError::new(
            what,
            path,
            "holds no readable private key (expected PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        store
            .add(cert)
            .map_err(|e| TlsError::new(what, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The native listener's configuration. Fails when a file is missing,
/// unreadable, not PEM, or the key does not match the certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("tls_cert_file", &files.cert)?;
    let key = load_key("tls_key_file", &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| TlsError::new("tls_cert_file", &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("tls_client_ca_file", ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::new("tls_client_ca_file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // with_single_cert checks that the key is the certificate's.
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::new(
            "tls_key_file",
            &files.key,
            format!("does not fit tls_cert_file {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Arc::new(config))
}

/// The native listener's current TLS configuration, replaced whole on
/// reload (SIGHUP). Shards take the current one at each accept, so a reload
/// applies to new connections and leaves established sessions alone.
#[derive(Debug)]
pub struct TlsHandle {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsHandle {
    /// Load the files (see [`server_config`]).
    pub fn load(files: TlsFiles) -> Result<TlsHandle, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsHandle {
            files,
            current: RwLock::new(config),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a whole configuration (the writer only
        // swaps an Arc).
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the files again; on success new connections use them, on
    /// failure the previous configuration stays (the caller logs why).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

/// A client's configuration: trust the CAs in `ca_file`; present
/// `client_cert` (certificate chain file, key file) when the server asks.
pub fn client_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| TlsError::new("tls_ca_file", ca_file, e.to_string()))?
        .with_root_certificates(roots("tls_ca_file", ca_file)?);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                load_certs("tls_cert_file", cert)?,
                load_key("tls_key_file", key)?,
            )
            .map_err(|e| TlsError::new("tls_key_file", key, format!("does not fit: {e}")))?,
    };
    Ok(Arc::new(config))
}

/// `name` as the server name a certificate is checked against (a DNS name
/// or an IP address).
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name:?} is not a DNS name or IP address: {e}"))
}
