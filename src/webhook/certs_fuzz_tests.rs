//! Fuzzing of certificate material read from files and the self-managed Secret: winipam's own
//! DER walk for the CA's notAfter (checked against an independent calendar), PEM pairs with
//! damage, and Secrets with any subset of keys.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::civil::date;
use k8s_openapi::jiff::tz::TimeZone;
use proptest::prelude::*;

use super::ca::{Ca, ServingNames, ca_not_after, check_serving, issue_serving, new_ca};
use super::certs::{CA_CERT_KEY, CA_KEY_KEY, TLS_CERT_KEY, TLS_KEY_KEY, read_secret};
use super::tls::{PemPair, certified_key};
use super::x509_time::not_after;
use crate::fuzz_support::damage;

/// One DER tag-length-value, with the long length form when needed.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The skeleton of a certificate: just enough for the walk to reach `validity`.
fn certificate(
    not_after_tag: u8,
    not_after_text: &str,
    with_version: bool,
    issuer_len: usize,
) -> Vec<u8> {
    let mut tbs = Vec::new();
    if with_version {
        tbs.extend(tlv(0xa0, &tlv(0x02, &[2])));
    }
    tbs.extend(tlv(0x02, &[1, 2, 3]));
    tbs.extend(tlv(0x30, &tlv(0x06, &[42, 134, 72])));
    tbs.extend(tlv(0x30, &vec![0x05; issuer_len]));
    let validity = [
        tlv(0x17, b"200101000000Z"),
        tlv(not_after_tag, not_after_text.as_bytes()),
    ]
    .concat();
    tbs.extend(tlv(0x30, &validity));
    tlv(
        0x30,
        &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(0x03, &[0])].concat(),
    )
}

/// The instant of a UTC civil time, computed by jiff (not by the code under test).
fn oracle_time(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Option<SystemTime> {
    let ts = date(y, mo, d)
        .at(h, mi, s, 0)
        .to_zoned(TimeZone::UTC)
        .ok()?
        .timestamp();
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

struct Material {
    ca: Ca,
    serving: PemPair,
    now: SystemTime,
}

/// A real CA and serving pair, generated once (key generation is slow in debug builds).
fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ca = new_ca(now).unwrap();
        let serving = issue_serving(&ca, &names(), now).unwrap();
        Material { ca, serving, now }
    })
}

fn names() -> ServingNames {
    ServingNames::for_service("winipam-webhook", "winipam-system", &[], &[])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// Every valid time in either encoding is read as the calendar says; nonsense is `None`.
    #[test]
    fn not_after_reads_both_time_forms(
        y in 1950i16..=9999, mo in 1i8..=12, d in 1i8..=28, h in 0i8..=23, mi in 0i8..=59, s in 0i8..=59,
        utc in any::<bool>(), with_version in any::<bool>(), issuer_len in prop_oneof![0usize..4, 120usize..300, 60_000usize..70_000],
    ) {
        let (tag, text, expected) = if utc && y < 2050 {
            (0x17, format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100), oracle_time(y, mo, d, h, mi, s))
        } else {
            (0x18, format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z"), oracle_time(y, mo, d, h, mi, s))
        };
        prop_assert_eq!(not_after(&certificate(tag, &text, with_version, issuer_len)), expected, "{}", text);
    }

    #[test]
    fn not_after_of_mutated_times(text in "[0-9Z+\\-. ]{0,20}|\\PC{0,20}", tag in prop::sample::select(vec![0x17u8, 0x18, 0x13, 0x04])) {
        if let Some(t) = not_after(&certificate(tag, &text, true, 3)) {
            // Accepted only in the two forms RFC 5280 allows.
            prop_assert!(text.ends_with('Z') && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit()), "{:?}", text);
            prop_assert!(t >= UNIX_EPOCH);
        }
    }

    /// Damaged real certificates and arbitrary bytes: the walk never panics and never reads
    /// past its input.
    #[test]
    fn not_after_of_damaged_der(how in any::<u8>(), at in 0.0..1.0f64, byte in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let real = CertificateDerOf::pem(&material().ca.cert);
        let _ = not_after(&damage(&real, how, at, byte));
        let _ = not_after(&bytes);
        let mut prefixed = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
        prefixed.extend(&bytes);
        let _ = not_after(&prefixed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Damaged PEM (certificate or key) is rejected with an error, never a panic; the intact
    /// pair verifies.
    #[test]
    fn damaged_pem_pairs(how in any::<u8>(), at in 0.0..1.0f64, byte in any::<u8>(), in_key in any::<bool>()) {
        let m = material();
        let mut pair = m.serving.clone();
        let target = if in_key { &mut pair.key } else { &mut pair.cert };
        *target = damage(target, how, at, byte);
        let _ = certified_key(&pair);
        let _ = check_serving(&m.ca.cert, &pair, &names(), m.now);
        let _ = ca_not_after(&Ca { cert: damage(&m.ca.cert, how, at, byte), key: m.ca.key.clone() });
    }

    /// A Secret holds a CA (or a serving pair) exactly when both of its keys are present and
    /// non-empty; what it holds is passed on byte for byte.
    #[test]
    fn secrets_with_any_keys(present in prop::collection::vec(0u8..3, 4), extra in prop::option::of("\\PC{0,8}")) {
        let m = material();
        let values = [&m.ca.cert, &m.ca.key, &m.serving.cert, &m.serving.key];
        let keys = [CA_CERT_KEY, CA_KEY_KEY, TLS_CERT_KEY, TLS_KEY_KEY];
        let mut data = std::collections::BTreeMap::new();
        for ((key, value), how) in keys.iter().zip(values).zip(&present) {
            match how {
                0 => {}
                1 => { data.insert((*key).to_owned(), ByteString(Vec::new())); }
                _ => { data.insert((*key).to_owned(), ByteString(value.clone())); }
            }
        }
        if let Some(k) = extra {
            data.insert(k, ByteString(b"x".to_vec()));
        }
        let secret = Secret { data: Some(data), ..Secret::default() };
        let (ca, serving) = read_secret(&secret);
        prop_assert_eq!(ca.is_some(), present[0] == 2 && present[1] == 2);
        prop_assert_eq!(serving.is_some(), present[2] == 2 && present[3] == 2);
        if let (Some(ca), Some(serving)) = (ca, serving) {
            prop_assert_eq!(&ca, &m.ca);
            prop_assert!(check_serving(&ca.cert, &serving, &names(), m.now).is_ok());
        }
    }
}

/// The DER inside a PEM certificate.
struct CertificateDerOf;

impl CertificateDerOf {
    fn pem(pem: &[u8]) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem).unwrap().to_vec()
    }
}

#[test]
fn generated_ca_expiry_is_read() {
    let m = material();
    let end = ca_not_after(&m.ca).expect("a readable CA");
    assert_eq!(end, m.now + super::ca::CA_VALIDITY);
}
