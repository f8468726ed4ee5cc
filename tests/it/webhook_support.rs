//! Shared parts of the webhook tests: the webhook server in-process on 127.0.0.1 with
//! self-managed certificates, the configurations of `deploy/kustomize/base` turned into a `url`
//! variant pointing at it, and pods to admit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use winipam::webhook::ca::{self, ServingNames};
use winipam::webhook::placement::IP_RESOURCE;
use winipam::webhook::{CertSource, SelfManagedCerts, WebhookConfig, WebhookError, WebhookServer};

use crate::support::controlplane::ControlPlane;
use crate::support::deploy;
use crate::support::e2e::Env;
use crate::support::winipam::WinipamOptions;

/// The controller's namespace and ServiceAccount, as in `deploy/kustomize/base`.
pub const NAMESPACE: &str = "winipam-system";
pub const SERVICE_ACCOUNT: &str = "winipam";
pub const CONTROLLER_USER: &str = "system:serviceaccount:winipam-system:winipam";

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kustomize/base")
}

fn read_yaml<K: serde::de::DeserializeOwned>(file: &str) -> K {
    let path = deploy_dir().join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The `service` client config of the base as a `url` to 127.0.0.1:`port`, same path.
fn to_url(config: &mut WebhookClientConfig, port: u16) {
    let service = config
        .service
        .take()
        .expect("the base uses a service clientConfig");
    let path = service.path.expect("the service has a path");
    config.url = Some(format!("https://127.0.0.1:{port}{path}"));
}

/// The validating webhook configuration the chart renders with `values`: the full guard with
/// `annotationGuard=webhook`; by default (a ValidatingAdmissionPolicy guards the annotation)
/// the hand-back guard alone.
fn validating_configuration(values: &[&str]) -> ValidatingWebhookConfiguration {
    let yaml = deploy::helm_template(NAMESPACE, values);
    let objects = deploy::documents(&yaml);
    let object = objects
        .into_iter()
        .find(|o| deploy::kind(o) == "ValidatingWebhookConfiguration")
        .expect("the chart renders a ValidatingWebhookConfiguration");
    serde_json::from_value(object).expect("a ValidatingWebhookConfiguration")
}

/// The full guard, as `annotationGuard=webhook` renders it.
const FULL_GUARD: &[&str] = &["--set", "annotationGuard=webhook"];

/// The two configurations of the chart, pointed at a test server on 127.0.0.1:`port`.
pub fn url_configurations(
    port: u16,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let mut mutating: MutatingWebhookConfiguration = read_yaml("mutatingwebhookconfiguration.yaml");
    for hook in mutating.webhooks.iter_mut().flatten() {
        to_url(&mut hook.client_config, port);
    }
    let mut validating = validating_configuration(FULL_GUARD);
    for hook in validating.webhooks.iter_mut().flatten() {
        to_url(&mut hook.client_config, port);
    }
    (mutating, validating)
}

pub async fn register_configurations(client: &Client, port: u16) {
    let (mutating, validating) = url_configurations(port);
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .expect("create the MutatingWebhookConfiguration");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &validating)
        .await
        .expect("create the ValidatingWebhookConfiguration");
}

/// The caBundles of every webhook of both configurations.
pub async fn ca_bundles(client: &Client) -> Vec<Option<ByteString>> {
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("winipam")
        .await
        .expect("get the MutatingWebhookConfiguration");
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get("winipam")
        .await
        .expect("get the ValidatingWebhookConfiguration");
    let mut bundles: Vec<_> = mutating
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.client_config.ca_bundle.clone())
        .collect();
    bundles.extend(
        validating
            .webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.ca_bundle.clone()),
    );
    bundles
}

/// Creates the controller's namespace and applies the RBAC of the base.
pub async fn install_controller_rbac(cp: &ControlPlane) {
    let namespaces = Api::<Namespace>::all(cp.admin_client().await);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create namespace {NAMESPACE}: {e}"),
    }
    for file in crate::support::deploy::BASE_RBAC_FILES {
        cp.apply_yaml_file(&deploy_dir().join(file)).await;
    }
}

/// Logs of the server under test, shown for failing tests (`RUST_LOG` filters, default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Self-managed certificates for a server reached at 127.0.0.1, re-checked every second.
pub fn self_managed() -> CertSource {
    let mut settings = SelfManagedCerts::new(NAMESPACE);
    settings.extra_ip_addresses = vec!["127.0.0.1".parse().expect("an IP")];
    settings.check_interval = Duration::from_secs(1);
    CertSource::SelfManaged(settings)
}

/// A webhook server running in this process; stopped (port closed) by [`RunningServer::stop`].
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), WebhookError>>,
}

impl RunningServer {
    /// Binds on 127.0.0.1 (`port` 0: a free one) and serves.
    pub async fn start(
        client: Client,
        port: u16,
        certs: CertSource,
        allowed: &[&str],
    ) -> RunningServer {
        init_tracing();
        let cfg = WebhookConfig {
            requests: client.clone(),
            client,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            certs,
            allowed_users: allowed.iter().map(|s| s.to_string()).collect(),
        };
        let server = WebhookServer::bind(cfg)
            .await
            .expect("bind the webhook server");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        RunningServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the server stops within 20 s")
            .expect("the server task does not panic");
        result.expect("the server ends without error");
    }
}

pub async fn secret(client: &Client) -> Secret {
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get("winipam-webhook-tls")
        .await
        .expect("the webhook Secret exists")
}

pub fn secret_value(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .unwrap_or_else(|| panic!("the Secret has no {key}"))
}

/// A pod in `namespace` from a JSON spec (containers default to one `app` container).
pub fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] =
            json!([{ "name": "app", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022" }]);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": spec
    }))
    .expect("a pod")
}

pub fn windows_spec() -> Value {
    json!({ "nodeSelector": { "kubernetes.io/os": "windows" } })
}

/// The IP resource of the first container: (request, limit).
pub fn ip_resource(pod: &Pod) -> (Option<String>, Option<String>) {
    let resources = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.resources.as_ref());
    let get = |map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| { map.and_then(|m| m.get(IP_RESOURCE)).map(|q| q.0.clone()) };
    (
        get(resources.and_then(|r| r.requests.as_ref())),
        get(resources.and_then(|r| r.limits.as_ref())),
    )
}

pub fn has_ip_resource(pod: &Pod) -> bool {
    ip_resource(pod) == (Some("1".to_owned()), Some("1".to_owned()))
}

/// Creates throwaway Windows pods until one comes back with the IP resource: the apiserver has
/// picked up the configurations and trusts the served certificate. Panics after 30 s.
pub async fn wait_until_injecting(pods: &Api<Pod>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = format!("probe-{attempt}");
        let created = pods
            .create(&PostParams::default(), &pod(&name, windows_spec()))
            .await
            .expect("create a probe pod");
        let _ = pods.delete(&name, &DeleteParams::default()).await;
        if has_ip_resource(&created) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the mutating webhook was not called within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Tries to create a pod carrying the address annotation (as whoever `pods` acts as) until the
/// validating webhook refuses it: the apiserver has picked up that configuration too.
pub async fn wait_until_guarding(pods: &Api<Pod>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = pod("guard-probe", json!({}));
    probe.metadata.annotations = Some(
        [(
            "vpc.amazonaws.com/PrivateIPv4Address".to_owned(),
            "10.0.0.1/19".to_owned(),
        )]
        .into(),
    );
    loop {
        match pods.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(status)) if status.message.contains("managed by winipam") => {
                return;
            }
            Ok(_) => {
                let _ = pods.delete("guard-probe", &DeleteParams::default()).await;
            }
            Err(e) => panic!("probing the validating webhook: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the validating webhook was not called within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Registers the base's two configurations, pointed at `port` on 127.0.0.1 with `ca` trusted
/// (the validating one as `annotationGuard=webhook` renders it: the full guard).
pub async fn register(env: &Env, port: u16, ca: &[u8]) {
    let (mutating, validating) = url_configurations(port);
    register_these(env, mutating, validating, ca).await;
}

/// Registers the two configurations the default chart renders (its validating one is the
/// hand-back guard alone), pointed at `port` on 127.0.0.1 with `ca` trusted. The chart's
/// ValidatingAdmissionPolicies are not installed: winipam runs as the test's admin here.
pub async fn register_default_chart(env: &Env, port: u16, ca: &[u8]) {
    let (mutating, _) = url_configurations(port);
    let mut validating = validating_configuration(&[]);
    for hook in validating.webhooks.iter_mut().flatten() {
        to_url(&mut hook.client_config, port);
    }
    register_these(env, mutating, validating, ca).await;
}

async fn register_these(
    env: &Env,
    mut mutating: MutatingWebhookConfiguration,
    mut validating: ValidatingWebhookConfiguration,
    ca: &[u8],
) {
    for hook in mutating.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(ByteString(ca.to_vec()));
    }
    for hook in validating.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(ByteString(ca.to_vec()));
    }
    let m = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
    let v = Api::<ValidatingWebhookConfiguration>::all(env.client.clone());
    let _ = m.delete("winipam", &DeleteParams::default()).await;
    let _ = v.delete("winipam", &DeleteParams::default()).await;
    m.create(&PostParams::default(), &mutating)
        .await
        .expect("create the mutating webhook");
    v.create(&PostParams::default(), &validating)
        .await
        .expect("create the validating webhook");
}

/// A CA and a serving certificate for 127.0.0.1 in files, for `winipam run` serving its
/// webhooks with `--webhook-cert-mode files`.
pub struct FileCerts {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM), for the caBundle.
    pub ca: Vec<u8>,
}

impl FileCerts {
    pub fn new() -> FileCerts {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let now = SystemTime::now();
        let authority = ca::new_ca(now).expect("a CA");
        let names = ServingNames {
            dns: vec!["winipam-webhook.winipam-system.svc".to_owned()],
            ips: vec!["127.0.0.1".parse().expect("an IP")],
        };
        let pair = ca::issue_serving(&authority, &names, now).expect("a serving certificate");
        std::fs::write(dir.path().join("tls.crt"), &pair.cert).expect("write tls.crt");
        std::fs::write(dir.path().join("tls.key"), &pair.key).expect("write tls.key");
        FileCerts {
            dir,
            ca: authority.cert,
        }
    }

    /// Makes `options` serve the webhooks from these files.
    pub fn serve(&self, options: &mut WinipamOptions) {
        options.webhooks = true;
        options.extra_args.extend([
            "--webhook-cert-mode".to_owned(),
            "files".to_owned(),
            "--webhook-cert-dir".to_owned(),
            self.dir.path().display().to_string(),
        ]);
    }
}

/// The message of an API error.
pub fn api_error_message<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("expected the API to refuse, got {other:?}"),
    }
}

/// What [`https_post`] got back.
pub struct HttpsResponse {
    /// `HTTP/1.1 200 OK` and the like.
    pub status: String,
    pub body: String,
    /// The DER of the certificate the server presented.
    pub leaf: Vec<u8>,
    /// The TLS version negotiated.
    pub version: String,
}

/// One HTTPS POST to `addr` trusting only `ca_pem` (and, if given, only these TLS versions).
/// `Err` when the connection or the handshake fails.
pub async fn https_post(
    addr: SocketAddr,
    ca_pem: &[u8],
    versions: Option<&[&'static SupportedProtocolVersion]>,
    path: &str,
    body: &[u8],
) -> Result<HttpsResponse, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ));
    let builder = match versions {
        Some(versions) => builder.with_protocol_versions(versions),
        None => builder.with_safe_default_protocol_versions(),
    }
    .map_err(|e| e.to_string())?;
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let version = session
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(body).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A server closing without close_notify still delivered the response.
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok(HttpsResponse {
        status: head.lines().next().unwrap_or_default().to_owned(),
        body: body.to_owned(),
        leaf,
        version,
    })
}
