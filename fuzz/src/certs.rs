//! Certificate material from files and the self-managed Secret: PEM, DER (the CA's notAfter is
//! read by winipam's own DER walk) and the Secret object.

use std::time::{Duration, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use winipam::webhook::ca::{Ca, ServingNames, ca_not_after, check_serving};
use winipam::webhook::certs::read_secret;
use winipam::webhook::tls::{PemPair, certified_key};

use crate::{base64_encode, split_selector};

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let body = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

fn names() -> ServingNames {
    ServingNames::for_service("winipam-webhook", "winipam-system", &[], &[])
}

fn check_pair(ca_cert: &[u8], pair: &PemPair) {
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = certified_key(pair);
    let _ = check_serving(ca_cert, pair, &names(), at);
}

/// Byte 0 picks: DER of a CA certificate, a PEM pair (certificate and key split at the first
/// NUL), or a Secret as JSON.
pub fn certs(data: &[u8]) {
    let Some((selector, rest)) = split_selector(data) else {
        return;
    };
    match selector % 3 {
        0 => {
            let ca = Ca {
                cert: pem("CERTIFICATE", rest),
                key: Vec::new(),
            };
            if let Some(end) = ca_not_after(&ca) {
                assert!(end >= UNIX_EPOCH);
            }
        }
        1 => {
            let at = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let (cert, key) = rest.split_at(at);
            let pair = PemPair {
                cert: cert.to_vec(),
                key: key.get(1..).unwrap_or_default().to_vec(),
            };
            check_pair(&pair.cert, &pair);
        }
        _ => {
            let Ok(secret) = serde_json::from_slice::<Secret>(rest) else {
                return;
            };
            let (ca, serving) = read_secret(&secret);
            if let Some(ca) = &ca {
                ca_not_after(ca);
            }
            if let Some(serving) = &serving {
                let ca_cert = ca.as_ref().map(|c| c.cert.as_slice()).unwrap_or_default();
                check_pair(ca_cert, serving);
            }
        }
    }
}
