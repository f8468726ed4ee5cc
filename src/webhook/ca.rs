//! The self-managed CA, pure: create a CA, issue the serving certificate from it, and check that
//! a stored serving certificate still chains to the CA and names the service for long enough.
//! No I/O; time comes in as an argument.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::WebhookError;
use super::tls::{PemPair, certified_key, provider};
use super::x509_time::not_after;

/// The CA outlives many serving certificates: renewing those never touches the caBundle.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A serving certificate is re-issued when it expires within this margin.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start an hour in the past: clocks of the apiserver and winipam may differ.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_COMMON_NAME: &str = "winipam-webhook-ca";

/// The names the serving certificate must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// `SERVICE.NAMESPACE.svc` (what the apiserver dials for a `service` clientConfig) and its
    /// `.cluster.local` form, plus extra names (say, `127.0.0.1` for a `url` clientConfig).
    pub fn for_service(
        service: &str,
        namespace: &str,
        extra_dns: &[String],
        ips: &[IpAddr],
    ) -> Self {
        let mut dns = vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        dns.extend(
            extra_dns
                .iter()
                .filter(|d| !dns.contains(d))
                .cloned()
                .collect::<Vec<_>>(),
        );
        ServingNames {
            dns,
            ips: ips.to_vec(),
        }
    }
}

/// A CA: its certificate and key in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> WebhookError + '_ {
    move |e| WebhookError::Certificate(format!("{what}: {e}"))
}

/// The CA's subject and usages. Rebuilt identically to sign with a stored CA key, so a
/// serving certificate issued after a restart names the stored CA certificate as its issuer.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Creates a new CA valid from `now` (backdated) for [`CA_VALIDITY`].
pub fn new_ca(now: SystemTime) -> Result<Ca, WebhookError> {
    let key = KeyPair::generate().map_err(rcgen_error("generating the CA key"))?;
    let mut params = ca_params();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let cert = params
        .self_signed(&key)
        .map_err(rcgen_error("signing the CA certificate"))?;
    Ok(Ca {
        cert: cert.pem().into_bytes(),
        key: key.serialize_pem().into_bytes(),
    })
}

/// Issues a serving certificate for `names` from `ca`, valid for [`SERVING_VALIDITY`].
pub fn issue_serving(
    ca: &Ca,
    names: &ServingNames,
    now: SystemTime,
) -> Result<PemPair, WebhookError> {
    let ca_key_pem = std::str::from_utf8(&ca.key)
        .map_err(|_| WebhookError::Certificate("the CA key is not PEM text".to_owned()))?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(rcgen_error("reading the CA key"))?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let key = KeyPair::generate().map_err(rcgen_error("generating the serving key"))?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    if let Some(first) = names.dns.first() {
        subject.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = subject;
    for dns in &names.dns {
        let name = dns
            .clone()
            .try_into()
            .map_err(rcgen_error("a DNS name of the serving certificate"))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params
        .subject_alt_names
        .extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + SERVING_VALIDITY).into();
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_error("signing the serving certificate"))?;
    Ok(PemPair {
        cert: cert.pem().into_bytes(),
        key: key.serialize_pem().into_bytes(),
    })
}

/// Whether `serving` can be served at `at`: its key matches, it chains to `ca_cert`, it is valid
/// at `at` and holds every name. Pass `now + RENEW_BEFORE` to ask "good for another month?".
pub fn check_serving(
    ca_cert: &[u8],
    serving: &PemPair,
    names: &ServingNames,
    at: SystemTime,
) -> Result<(), String> {
    let served = certified_key(serving).map_err(|e| e.to_string())?;
    let leaf = served.end_entity_cert().map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_cert) {
        let ca = ca.map_err(|e| format!("cannot read the CA certificate: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
        .build()
        .map_err(|e| format!("cannot verify against the CA: {e}"))?;
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let time = UnixTime::since_unix_epoch(since_epoch);
    let intermediates = served.cert.get(1..).unwrap_or_default();
    let dns = names.dns.iter().map(|d| {
        ServerName::try_from(d.as_str())
            .map(|n| n.to_owned())
            .map_err(|e| format!("{d}: {e}"))
    });
    let ips = names
        .ips
        .iter()
        .map(|ip| Ok(ServerName::IpAddress((*ip).into())));
    for name in dns.chain(ips) {
        let name = name?;
        verifier
            .verify_server_cert(leaf, intermediates, &name, &[], time)
            .map_err(|e| format!("serving certificate for {name:?}: {e}"))?;
    }
    Ok(())
}

/// When the CA certificate expires; `None` when it is unreadable.
pub fn ca_not_after(ca: &Ca) -> Option<SystemTime> {
    let der = CertificateDer::from_pem_slice(&ca.cert).ok()?;
    not_after(&der)
}

/// `now + RENEW_BEFORE`, the instant a stored serving certificate must still be valid at.
pub fn renewal_horizon(now: SystemTime) -> SystemTime {
    now + RENEW_BEFORE
}

/// A CA with the serving certificate it issued: what the Secret holds once settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub ca: Ca,
    pub serving: PemPair,
}

/// What to do with what a Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Good past the renewal horizon: serve it as it is.
    Keep(Material),
    /// Store (then serve) this: a fresh serving certificate from the stored CA, or, when that
    /// CA cannot sign for long enough (or is missing or unreadable), from a new CA.
    Write { material: Material, new_ca: bool },
}

/// Decides from the CA and serving pair a Secret holds (each `None` when absent).
pub fn plan(
    stored_ca: Option<Ca>,
    stored_serving: Option<PemPair>,
    names: &ServingNames,
    now: SystemTime,
) -> Result<Plan, WebhookError> {
    let horizon = renewal_horizon(now);
    // The verifier does not look at the CA's own expiry: check it here.
    let stored_ca = stored_ca.filter(|ca| {
        let lasts = ca_not_after(ca).is_some_and(|end| end > horizon);
        if !lasts {
            tracing::warn!("the stored webhook CA expires within the renewal margin (or is unreadable); creating a new CA");
        }
        lasts
    });
    if let Some(ca) = stored_ca {
        if let Some(serving) = stored_serving
            && check_serving(&ca.cert, &serving, names, horizon).is_ok()
        {
            return Ok(Plan::Keep(Material { ca, serving }));
        }
        match issue_serving(&ca, names, now) {
            Ok(serving) => match check_serving(&ca.cert, &serving, names, horizon) {
                Ok(()) => {
                    let material = Material { ca, serving };
                    return Ok(Plan::Write {
                        material,
                        new_ca: false,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a certificate from the stored webhook CA does not verify; creating a new CA")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "the stored webhook CA is unusable; creating a new CA")
            }
        }
    }
    let ca = new_ca(now)?;
    let serving = issue_serving(&ca, names, now)?;
    let material = Material { ca, serving };
    Ok(Plan::Write {
        material,
        new_ca: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn names() -> ServingNames {
        ServingNames::for_service(
            "winipam-webhook",
            "winipam-system",
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
        )
    }

    #[test]
    fn service_names() {
        let n = names();
        assert_eq!(
            n.dns,
            [
                "winipam-webhook.winipam-system.svc",
                "winipam-webhook.winipam-system.svc.cluster.local",
                "localhost"
            ]
        );
        assert_eq!(n.ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn issued_certificate_chains_to_its_ca_and_names_the_service() {
        let now = SystemTime::now();
        let ca = new_ca(now).unwrap();
        let serving = issue_serving(&ca, &names(), now).unwrap();
        assert_eq!(check_serving(&ca.cert, &serving, &names(), now), Ok(()));
        assert_eq!(
            check_serving(&ca.cert, &serving, &names(), renewal_horizon(now)),
            Ok(())
        );
        // Near the end of its year it is due for renewal.
        let late = now + SERVING_VALIDITY - RENEW_BEFORE + DAY;
        let err = check_serving(&ca.cert, &serving, &names(), renewal_horizon(late)).unwrap_err();
        assert!(err.contains("expired"), "{err}");
    }

    #[test]
    fn reissued_from_the_same_ca_after_a_restart() {
        // The CA as read back from a Secret: only its PEM survives.
        let now = SystemTime::now();
        let stored = new_ca(now).unwrap();
        let later = now + 200 * DAY;
        let serving = issue_serving(&stored.clone(), &names(), later).unwrap();
        assert_eq!(
            check_serving(&stored.cert, &serving, &names(), later),
            Ok(())
        );
    }

    /// The material a plan stores, and whether it made a new CA (`None`: kept as stored).
    fn written(plan: Plan) -> Option<(Material, bool)> {
        match plan {
            Plan::Keep(_) => None,
            Plan::Write { material, new_ca } => Some((material, new_ca)),
        }
    }

    #[test]
    fn plan_keeps_renews_or_replaces() {
        let now = SystemTime::now();
        let (fresh, new) = written(plan(None, None, &names(), now).unwrap()).expect("written");
        assert!(new);
        let Material { ca, serving } = fresh.clone();
        assert_eq!(check_serving(&ca.cert, &serving, &names(), now), Ok(()));
        let end = ca_not_after(&ca).expect("the CA's notAfter");
        let expected = now + CA_VALIDITY;
        let off = end
            .duration_since(expected)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(
            off < Duration::from_secs(2),
            "notAfter {end:?} vs {expected:?}"
        );

        // Good for long enough: kept.
        let kept = plan(Some(ca.clone()), Some(serving.clone()), &names(), now).unwrap();
        assert_eq!(kept, Plan::Keep(fresh));
        // Due for renewal, or lost: same CA, new serving certificate.
        let late = now + SERVING_VALIDITY - DAY;
        for (name, stored) in [("due", Some(serving.clone())), ("lost", None)] {
            let (renewed, new) =
                written(plan(Some(ca.clone()), stored, &names(), late).unwrap()).expect(name);
            assert!(!new, "{name}");
            assert_eq!(renewed.ca, ca, "{name}");
            assert_ne!(renewed.serving, serving, "{name}");
            assert_eq!(
                check_serving(&ca.cert, &renewed.serving, &names(), late),
                Ok(()),
                "{name}"
            );
        }
        // A new name to serve: re-issued from the same CA.
        let mut more = names();
        more.ips.push("10.1.2.3".parse().unwrap());
        let (reissued, new) =
            written(plan(Some(ca.clone()), Some(serving.clone()), &more, now).unwrap())
                .expect("re-issued");
        assert!(!new);
        assert_eq!(reissued.ca, ca);
        // A CA near its end, or an unreadable one: replaced.
        let ca_end = now + CA_VALIDITY - DAY;
        let (replaced, new) =
            written(plan(Some(ca.clone()), Some(serving.clone()), &names(), ca_end).unwrap())
                .expect("new CA");
        assert!(new);
        assert_ne!(replaced.ca, ca);
        let broken = Ca {
            cert: ca.cert.clone(),
            key: b"junk".to_vec(),
        };
        let (replaced, new) =
            written(plan(Some(broken), None, &names(), now).unwrap()).expect("new CA");
        assert!(new);
        assert_ne!(replaced.ca.cert, ca.cert);
    }

    #[test]
    fn foreign_ca_missing_name_and_mismatched_key_are_rejected() {
        let now = SystemTime::now();
        let ca = new_ca(now).unwrap();
        let other = new_ca(now).unwrap();
        let serving = issue_serving(&ca, &names(), now).unwrap();
        assert!(check_serving(&other.cert, &serving, &names(), now).is_err());

        let mut more = names();
        more.dns.push("new.example".to_owned());
        let err = check_serving(&ca.cert, &serving, &more, now).unwrap_err();
        assert!(err.contains("new.example"), "{err}");

        let second = issue_serving(&ca, &names(), now).unwrap();
        let mixed = PemPair {
            cert: serving.cert.clone(),
            key: second.key,
        };
        assert!(check_serving(&ca.cert, &mixed, &names(), now).is_err());
        let garbage = PemPair {
            cert: b"not pem".to_vec(),
            key: serving.key,
        };
        assert!(check_serving(&ca.cert, &garbage, &names(), now).is_err());
    }
}
