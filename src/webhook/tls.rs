//! TLS for the webhook server: rustls on the ring provider, TLS 1.2 and 1.3, with a certificate
//! that can be swapped while serving (files rewritten by cert-manager, or a renewed
//! self-managed certificate) without dropping the listener.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};

use super::WebhookError;

/// The file names of a `kubernetes.io/tls` Secret mounted as a volume (cert-manager's too).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// The crypto provider of every TLS piece of winipam: ring, as kube's and the AWS client's.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A certificate and key in PEM, as stored in files and Secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PemPair {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("cert_bytes", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// Parses a PEM chain (leaf first) and key into what rustls serves; fails when the key does not
/// belong to the leaf certificate.
pub fn certified_key(pair: &PemPair) -> Result<CertifiedKey, WebhookError> {
    let chain = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Certificate(format!("cannot read the certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(WebhookError::Certificate(
            "the certificate PEM holds no certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&pair.key)
        .map_err(|e| WebhookError::Certificate(format!("cannot read the private key PEM: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| WebhookError::Certificate(format!("unusable certificate and key: {e}")))
}

/// The certificate being served; [`CertResolver::set`] swaps it for the next handshakes.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
        })
    }

    pub fn set(&self, key: CertifiedKey) {
        // A poisoned lock still holds a valid Arc: replace it anyway.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server side: TLS 1.2+ only (rustls has nothing older), HTTP/1.1 by ALPN (the apiserver
/// falls back to it from HTTP/2), the certificate from `resolver`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, WebhookError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| WebhookError::Certificate(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `tls.crt` and `tls.key` in a directory.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub dir: PathBuf,
}

impl CertFiles {
    pub fn read(&self) -> Result<PemPair, WebhookError> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read(&path).map_err(|e| {
                WebhookError::Certificate(format!("cannot read {}: {e}", path.display()))
            })
        };
        Ok(PemPair {
            cert: read(CERT_FILE)?,
            key: read(KEY_FILE)?,
        })
    }

    /// Reads and parses both files, for the first certificate served.
    pub fn load(&self) -> Result<(PemPair, CertifiedKey), WebhookError> {
        let pair = self.read()?;
        let key = certified_key(&pair).map_err(|e| in_dir(e, &self.dir))?;
        Ok((pair, key))
    }

    /// Re-reads the files every `interval` and serves their new content once both parse and
    /// match. Comparing contents, not mtimes, also catches the atomic symlink swap of a Secret
    /// volume. A half-written pair is kept out until the next poll completes it.
    pub async fn watch(self, mut loaded: PemPair, resolver: Arc<CertResolver>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let pair = match self.read() {
                Ok(pair) if pair == loaded => continue,
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificate files unreadable; serving the previous certificate");
                    continue;
                }
            };
            match certified_key(&pair) {
                Ok(key) => {
                    resolver.set(key);
                    loaded = pair;
                    tracing::info!(dir = %self.dir.display(), "webhook certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %in_dir(e, &self.dir), "new webhook certificate files unusable (yet); serving the previous certificate");
                }
            }
        }
    }
}

fn in_dir(e: WebhookError, dir: &Path) -> WebhookError {
    match e {
        WebhookError::Certificate(m) => {
            WebhookError::Certificate(format!("{}: {m}", dir.display()))
        }
        other => other,
    }
}
