//! The admission webhooks (SPEC section 9), served over TLS on every replica:
//!
//! - [`mutate`] (`/mutate-pods`, pod CREATE): a pod that will land on Windows ([`placement`])
//!   gets `vpc.amazonaws.com/PrivateIPv4Address: "1"` in the requests and limits of its first
//!   container;
//! - [`validate`] (`/validate-pods`, pod CREATE/UPDATE): only the controller's ServiceAccounts
//!   (and the VPC Resource Controller while its Windows IPAM is on: [`vpcrc`]) may set, change
//!   or remove the address annotation; while winipam is paused for the VPC Resource Controller,
//!   that controller's writes of an address winipam still keeps from reuse are denied
//!   ([`handback`], over the NodeAddressPools [`pool_records`] watches).
//!
//! Certificates come from files (`tls.crt`/`tls.key`, reloaded when they change: [`tls`]) or
//! are self-managed ([`certs`]: a CA and serving certificate in a Secret, the CA patched into
//! the configurations' caBundle). The chart (`deploy/helm/winipam`) holds the configurations,
//! the Service and the RBAC this needs.
//!
//! `winipam run` calls [`serve`]; tests bind first ([`WebhookServer::bind`]) to learn the port.

pub mod ca;
pub mod certs;
pub mod handback;
pub mod mutate;
pub mod placement;
pub mod pool_records;
pub mod review;
pub mod runtimeclass;
pub mod server;
pub mod tls;
pub mod validate;
pub mod vpcrc;
mod x509_time;

#[cfg(test)]
mod certs_fuzz_tests;
#[cfg(test)]
mod fuzz_tests;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use server::{MUTATE_PATH, VALIDATE_PATH, WebhookServer};

/// Name of both webhook configurations (mutating and validating) in the chart.
pub const CONFIGURATION_NAME: &str = "winipam";
/// The Service in front of the webhook port.
pub const SERVICE_NAME: &str = "winipam-webhook";
/// The Secret of self-managed certificates, in the controller's namespace.
pub const SECRET_NAME: &str = "winipam-webhook-tls";
pub const DEFAULT_ADDR: &str = "0.0.0.0:9443";

/// Everything [`serve`] needs.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The watches: RuntimeClasses, the VPC Resource Controller's switch, the NodeAddressPools.
    pub client: kube::Client,
    /// Self-managed certificates' reads and writes of the Secret and the caBundles: a client
    /// whose requests are bounded (`k8s::bounded`), so that a request hanging on a dead
    /// connection fails (at the start the process exits and is restarted; a renewal is
    /// retried) instead of holding the replica unready, or its certificate's renewal, for good.
    pub requests: kube::Client,
    /// Where to listen (`--webhook-addr`, default `0.0.0.0:9443`).
    pub addr: SocketAddr,
    pub certs: CertSource,
    /// Usernames allowed to write the address annotation, e.g.
    /// `system:serviceaccount:winipam-system:winipam` (`--controller-service-accounts`).
    pub allowed_users: Vec<String>,
}

/// Where the serving certificate comes from (`--webhook-cert-mode`).
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` in `dir` (cert-manager), re-read every `poll_interval`.
    Files {
        dir: PathBuf,
        poll_interval: Duration,
    },
    SelfManaged(SelfManagedCerts),
}

impl CertSource {
    /// Files in `dir`, polled every 10 s.
    pub fn files(dir: impl Into<PathBuf>) -> Self {
        CertSource::Files {
            dir: dir.into(),
            poll_interval: Duration::from_secs(10),
        }
    }
}

/// Settings of self-managed certificates; [`SelfManagedCerts::new`] has the defaults.
#[derive(Debug, Clone)]
pub struct SelfManagedCerts {
    /// The controller's namespace: the Secret's and the Service's.
    pub namespace: String,
    pub secret_name: String,
    pub service_name: String,
    /// Name of the Mutating- and ValidatingWebhookConfiguration whose caBundles are patched.
    pub configuration_name: String,
    /// Names the serving certificate holds beyond `SERVICE.NAMESPACE.svc[.cluster.local]`.
    pub extra_dns_names: Vec<String>,
    pub extra_ip_addresses: Vec<IpAddr>,
    /// How often the Secret is re-read (renewal, another replica's renewal) and the caBundles
    /// checked. Failures are retried sooner.
    pub check_interval: Duration,
}

impl SelfManagedCerts {
    pub fn new(namespace: impl Into<String>) -> Self {
        SelfManagedCerts {
            namespace: namespace.into(),
            secret_name: SECRET_NAME.to_owned(),
            service_name: SERVICE_NAME.to_owned(),
            configuration_name: CONFIGURATION_NAME.to_owned(),
            extra_dns_names: Vec::new(),
            extra_ip_addresses: Vec::new(),
            check_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook certificate: {0}")]
    Certificate(String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("webhook server on {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Serves the webhooks until `shutdown` completes. Fails at start when the certificate cannot
/// be loaded (files) or settled (self-managed), or the address cannot be bound.
pub async fn serve(
    cfg: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    WebhookServer::bind(cfg).await?.run(shutdown).await
}

/// Aborts a background task when its owner goes away.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
