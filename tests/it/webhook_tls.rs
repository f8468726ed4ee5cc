//! The webhook server over real TLS with certificates from files (as cert-manager mounts them):
//! TLS 1.2 and 1.3, AdmissionReview answers, 400 on a malformed body, reload when the files
//! change (a broken pair keeps the previous certificate), the port closed once stopped.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use kube::Client;
use serde_json::json;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::version::{TLS12, TLS13};
use winipam::webhook::CertSource;
use winipam::webhook::ca::{self, ServingNames};
use winipam::webhook::tls::PemPair;

use crate::webhook_support::*;

fn write_pair(dir: &Path, pair: &PemPair) {
    std::fs::write(dir.join("tls.key"), &pair.key).expect("write tls.key");
    std::fs::write(dir.join("tls.crt"), &pair.cert).expect("write tls.crt");
}

fn leaf(pair: &PemPair) -> Vec<u8> {
    CertificateDer::from_pem_slice(&pair.cert)
        .expect("a PEM certificate")
        .as_ref()
        .to_vec()
}

/// A client whose apiserver does not exist: the RuntimeClass cache retries in the background,
/// which the validating path never needs.
fn unreachable_client() -> Client {
    let config = kube::Config::new("https://127.0.0.1:9".parse().expect("a URL"));
    Client::try_from(config).expect("a client")
}

fn review_setting_annotation(user: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "3f1c", "name": "p", "namespace": "ns", "operation": "CREATE",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "userInfo": { "username": user },
            "object": { "apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "p", "annotations": { "vpc.amazonaws.com/PrivateIPv4Address": "10.0.0.1/19" }
            }, "spec": { "containers": [{ "name": "a" }] } }
        }
    }))
    .expect("JSON")
}

#[tokio::test]
async fn files_mode_serves_tls_reloads_and_rejects_bad_bodies() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let now = SystemTime::now();
    let names = ServingNames {
        dns: vec!["winipam-webhook.winipam-system.svc".to_owned()],
        ips: vec!["127.0.0.1".parse().expect("an IP")],
    };
    let first_ca = ca::new_ca(now).expect("a CA");
    let first = ca::issue_serving(&first_ca, &names, now).expect("a certificate");
    write_pair(dir.path(), &first);
    let certs = CertSource::Files {
        dir: dir.path().to_owned(),
        poll_interval: Duration::from_millis(100),
    };
    let server = RunningServer::start(unreachable_client(), 0, certs, &[CONTROLLER_USER]).await;
    let addr = server.addr;

    // TLS 1.2 and 1.3 both work; the answers are AdmissionReviews.
    for (version, name) in [(&TLS12, "TLSv1_2"), (&TLS13, "TLSv1_3")] {
        let response = https_post(
            addr,
            &first_ca.cert,
            Some(&[version]),
            "/validate-pods",
            &review_setting_annotation("alice"),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.version, name);
        assert!(
            response.status.starts_with("HTTP/1.1 200"),
            "{}",
            response.status
        );
        let review: serde_json::Value = serde_json::from_str(&response.body).expect("a JSON body");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["uid"], "3f1c");
        assert_eq!(review["response"]["allowed"], false);
        assert!(
            review["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("managed by winipam")
        );
        assert_eq!(response.leaf, leaf(&first));
    }
    let controller = https_post(
        addr,
        &first_ca.cert,
        None,
        "/validate-pods",
        &review_setting_annotation(CONTROLLER_USER),
    )
    .await
    .expect("a response");
    let review: serde_json::Value = serde_json::from_str(&controller.body).expect("a JSON body");
    assert_eq!(review["response"]["allowed"], true);

    // Malformed bodies: 400 with a message, on both paths; an unknown path: 404.
    for path in ["/mutate-pods", "/validate-pods"] {
        let response = https_post(addr, &first_ca.cert, None, path, b"{not json")
            .await
            .expect("a response");
        assert!(
            response.status.starts_with("HTTP/1.1 400"),
            "{path}: {}",
            response.status
        );
        assert!(
            response
                .body
                .contains("not an admission.k8s.io/v1 AdmissionReview"),
            "{path}: {}",
            response.body
        );
    }
    let response = https_post(addr, &first_ca.cert, None, "/other", b"{}")
        .await
        .expect("a response");
    assert!(
        response.status.starts_with("HTTP/1.1 404"),
        "{}",
        response.status
    );

    // A broken pair (a key of another certificate) is not served: the previous one stays.
    let second_ca = ca::new_ca(now).expect("a CA");
    let second = ca::issue_serving(&second_ca, &names, now).expect("a certificate");
    write_pair(
        dir.path(),
        &PemPair {
            cert: second.cert.clone(),
            key: first.key.clone(),
        },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = https_post(addr, &first_ca.cert, None, "/validate-pods", b"{}")
        .await
        .expect("still the first certificate");
    assert_eq!(response.leaf, leaf(&first));

    // Rotated files are served without a restart.
    write_pair(dir.path(), &second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match https_post(addr, &second_ca.cert, None, "/validate-pods", b"{}").await {
            Ok(response) => {
                assert_eq!(response.leaf, leaf(&second));
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new certificate is not served after 10 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = https_post(addr, &first_ca.cert, None, "/validate-pods", b"{}").await;
    assert!(
        old.is_err_and(|e| e.starts_with("TLS")),
        "the old CA no longer verifies"
    );

    server.stop().await;
    let stopped = https_post(addr, &second_ca.cert, None, "/validate-pods", b"{}").await;
    assert!(
        stopped.is_err_and(|e| e.starts_with("connect")),
        "the port is closed once stopped"
    );
}
