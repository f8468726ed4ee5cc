//! Self-managed certificates against the real apiserver: a fresh start creates the Secret and
//! fills the caBundles with no manual step (also when the configurations appear after the
//! server started, and with two replicas racing); a restart keeps the CA; a lost serving
//! certificate is re-issued from the same CA; with the server down, pods are still admitted
//! (failurePolicy Ignore).

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use winipam::webhook::ca::{self, ServingNames};
use winipam::webhook::validate::IP_ANNOTATION;

use crate::support::controlplane::ControlPlane;
use crate::webhook_support::*;

/// `{}` posted to the validating path over TLS trusting only `ca_pem`: (status line, leaf).
async fn get_status(addr: std::net::SocketAddr, ca_pem: &[u8]) -> Result<String, String> {
    https_post(addr, ca_pem, None, "/validate-pods", b"{}")
        .await
        .map(|response| response.status)
}

async fn wait_for_ca_bundles(admin: &Client, ca: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bundles = ca_bundles(admin).await;
        assert_eq!(bundles.len(), 2, "one mutating and one validating webhook");
        if bundles
            .iter()
            .all(|b| b.as_ref().is_some_and(|b| b.0 == ca))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "caBundles not set within 30 s: {bundles:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn self_managed_certificates_and_ignore_when_down() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin_client().await;
    install_controller_rbac(&cp).await;
    let controller = cp.service_account_client(NAMESPACE, SERVICE_ACCOUNT).await;
    let secrets = Api::<Secret>::namespaced(admin.clone(), NAMESPACE);
    assert!(
        secrets
            .get_opt("winipam-webhook-tls")
            .await
            .expect("read")
            .is_none()
    );

    // Two replicas start at once on a cluster without the Secret: both settle on one CA.
    let (first, second) = tokio::join!(
        RunningServer::start(controller.clone(), 0, self_managed(), &[CONTROLLER_USER]),
        RunningServer::start(controller.clone(), 0, self_managed(), &[CONTROLLER_USER]),
    );
    let stored = secret(&admin).await;
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = secret_value(&stored, "ca.crt");
    let tls_crt = secret_value(&stored, "tls.crt");
    assert!(String::from_utf8_lossy(&ca).starts_with("-----BEGIN CERTIFICATE-----"));
    for server in [&first, &second] {
        let status = get_status(server.addr, &ca)
            .await
            .expect("the served certificate chains to ca.crt");
        // `{}` is no AdmissionReview: a 400, not a crash.
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    }
    second.stop().await;

    // The configurations appear after the server started (as with Helm): no manual step.
    register_configurations(&admin, first.addr.port()).await;
    wait_for_ca_bundles(&admin, &ca).await;
    let namespace = cp.create_namespace("certs").await;
    let pods = Api::<Pod>::namespaced(admin.clone(), &namespace);
    wait_until_injecting(&pods).await;
    let port = first.addr.port();

    // Down: pods are still admitted, unchanged (failurePolicy Ignore on both webhooks).
    first.stop().await;
    let created = pods
        .create(&PostParams::default(), &pod("while-down", windows_spec()))
        .await
        .expect("a Windows pod is created while the webhook is down");
    assert_eq!(ip_resource(&created), (None, None));
    let patched = pods
        .patch(
            "while-down",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { IP_ANNOTATION: "10.0.0.9/19" } } }),
            ),
        )
        .await
        .expect("the guard is off while the webhook is down (Ignore)");
    assert!(patched.metadata.annotations.is_some());

    // A restart (same port, so the registered URLs still point at it) keeps the CA and the
    // still-valid serving certificate; the caBundles stay as they were.
    let restarted =
        RunningServer::start(controller.clone(), port, self_managed(), &[CONTROLLER_USER]).await;
    let after = secret(&admin).await;
    assert_eq!(secret_value(&after, "ca.crt"), ca, "a restart keeps the CA");
    assert_eq!(secret_value(&after, "tls.crt"), tls_crt);
    wait_for_ca_bundles(&admin, &ca).await;
    wait_until_injecting(&pods).await;

    // A serving certificate that no longer fits (here: of another CA) is re-issued from the
    // stored CA and served without a restart.
    let now = SystemTime::now();
    let names = ServingNames {
        dns: vec!["elsewhere".to_owned()],
        ips: Vec::new(),
    };
    let foreign =
        ca::issue_serving(&ca::new_ca(now).expect("a CA"), &names, now).expect("a certificate");
    let data = json!({ "data": {
        "tls.crt": ByteString(foreign.cert.clone()),
        "tls.key": ByteString(foreign.key.clone()),
    }});
    secrets
        .patch(
            "winipam-webhook-tls",
            &PatchParams::default(),
            &Patch::Merge(data),
        )
        .await
        .expect("replace the serving certificate");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reissued = loop {
        let current = secret_value(&secret(&admin).await, "tls.crt");
        if current != foreign.cert {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "tls.crt not re-issued within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(reissued, tls_crt);
    assert_eq!(secret_value(&secret(&admin).await, "ca.crt"), ca, "same CA");
    let response = https_post(restarted.addr, &ca, None, "/validate-pods", b"{}")
        .await
        .expect("the re-issued certificate chains to the CA");
    let reissued_der = CertificateDer::from_pem_slice(&reissued).expect("a PEM certificate");
    assert_eq!(
        response.leaf,
        reissued_der.as_ref(),
        "the re-issued certificate is served"
    );
    wait_until_injecting(&pods).await;

    restarted.stop().await;
}
