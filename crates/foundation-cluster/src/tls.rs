//! Optional TLS for the connections between nodes (rustls, with the `ring`
//! provider), on top of the cluster-secret handshake, not instead of it.
//!
//! Both sides authenticate: each node presents its certificate chain, and
//! accepts a peer only if the peer's certificate chains to the cluster's CA
//! and (for the dialed side) names `server_name` (default `"foundation"`:
//! give node certificates that subject alternative name). Certificates and
//! the key are PEM files. A node with TLS refuses peers without it (their
//! handshake fails and is logged), and vice versa.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use foundation::rt::BoxStream;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The server name node certificates carry by default.
pub const SERVER_NAME_DEFAULT: &str = "foundation";

/// Why a TLS setup or connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificates or key were refused by rustls.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// The TLS handshake with a peer failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// TLS settings for a node (cheap to clone).
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsConfig(server name {:?})", self.server_name)
    }
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: reason.to_string() }
}

impl TlsConfig {
    /// Loads this node's certificate chain (`cert`), its private key (`key`)
    /// and the cluster's CA certificate(s) (`ca`), all PEM.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).map_err(|e| file_err(cert, e))?.collect::<Result<_, _>>().map_err(|e| file_err(cert, e))?;
        if chain.is_empty() {
            return Err(file_err(cert, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
            roots.add(c.map_err(|e| file_err(ca, e))?).map_err(|e| file_err(ca, e))?;
        }
        if roots.is_empty() {
            return Err(file_err(ca, "no CA certificate in the file"));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = |e: rustls::Error| TlsError::Config(e.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config)?;
        let client = ClientConfig::builder_with_provider(provider as Arc<CryptoProvider>)
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config)?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name: ServerName::try_from(SERVER_NAME_DEFAULT).expect("a valid DNS name"),
        })
    }

    /// Expects dialed peers' certificates to name `name` instead.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TlsError> {
        self.server_name = ServerName::try_from(name.to_owned()).map_err(|e| TlsError::Config(format!("server name {name:?}: {e}")))?;
        Ok(self)
    }

    /// Runs the client side of the TLS handshake on a dialed stream.
    pub async fn dial(&self, stream: BoxStream) -> Result<BoxStream, TlsError> {
        let tls = tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        Ok(Box::new(tls))
    }

    /// Runs the server side of the TLS handshake on an accepted stream.
    pub async fn accept(&self, stream: BoxStream) -> Result<BoxStream, TlsError> {
        let tls =
            tokio_rustls::TlsAcceptor::from(self.server.clone()).accept(stream).await.map_err(|e| TlsError::Handshake(e.to_string()))?;
        Ok(Box::new(tls))
    }
}
