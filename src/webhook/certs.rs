//! Self-managed certificates: the CA and serving certificate live in one Secret of the
//! controller's namespace (`winipam-webhook-tls`: `ca.crt`, `ca.key`, `tls.crt`, `tls.key`), and
//! the CA goes into the `caBundle` of every webhook of the two configurations named `winipam`.
//!
//! Every replica runs the same loop: read the Secret; create it when absent, renew the serving
//! certificate when it nears expiry (same CA, so the caBundle does not change); serve what the
//! Secret holds; make the caBundles match. Writes are optimistic (create, or replace at the
//! read resourceVersion): a replica that loses a race (409) re-reads and adopts the winner's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, TestOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::ca::{self, Ca, Material, Plan, ServingNames};
use super::tls::{CertResolver, PemPair, certified_key};
use super::{SelfManagedCerts, WebhookError};

pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
/// Conflicting writes tolerated in one pass before giving up until the next.
const MAX_CONFLICTS: usize = 5;
/// First retry delay after a failed pass; doubles up to the check interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The Secret and the two webhook configurations, through the API.
pub struct SelfManaged {
    secrets: Api<Secret>,
    mutating: Api<MutatingWebhookConfiguration>,
    validating: Api<ValidatingWebhookConfiguration>,
    cfg: SelfManagedCerts,
    names: ServingNames,
}

fn kube_error(what: String) -> impl FnOnce(kube::Error) -> WebhookError {
    move |source| WebhookError::Kube { what, source }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

impl SelfManaged {
    pub fn new(client: Client, cfg: SelfManagedCerts) -> Self {
        let names = ServingNames::for_service(
            &cfg.service_name,
            &cfg.namespace,
            &cfg.extra_dns_names,
            &cfg.extra_ip_addresses,
        );
        SelfManaged {
            secrets: Api::namespaced(client.clone(), &cfg.namespace),
            mutating: Api::all(client.clone()),
            validating: Api::all(client),
            cfg,
            names,
        }
    }

    fn secret_ref(&self) -> String {
        format!("Secret {}/{}", self.cfg.namespace, self.cfg.secret_name)
    }

    /// Reads the Secret and settles it: created when absent, renewed when due.
    pub async fn ensure_secret(&self, now: SystemTime) -> Result<Material, WebhookError> {
        for _ in 0..MAX_CONFLICTS {
            let existing = self
                .secrets
                .get_opt(&self.cfg.secret_name)
                .await
                .map_err(kube_error(format!("reading {}", self.secret_ref())))?;
            let (stored_ca, stored_serving) = match &existing {
                Some(secret) => read_secret(secret),
                None => (None, None),
            };
            let (stored, new_ca) = match ca::plan(stored_ca, stored_serving, &self.names, now)? {
                Plan::Keep(material) => return Ok(material),
                Plan::Write { material, new_ca } => (material, new_ca),
            };
            let result = match existing {
                None => {
                    let secret = self.secret(ObjectMeta::default(), &stored);
                    self.secrets.create(&PostParams::default(), &secret).await
                }
                Some(existing) => {
                    // Keeps the resourceVersion read above: a concurrent write makes this 409.
                    let secret = self.secret(existing.metadata, &stored);
                    self.secrets
                        .replace(&self.cfg.secret_name, &PostParams::default(), &secret)
                        .await
                }
            };
            match result {
                Ok(_) => {
                    tracing::info!(secret = %self.secret_ref(), new_ca, "webhook certificate written");
                    return Ok(stored);
                }
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(secret = %self.secret_ref(), "another replica wrote the webhook certificate first; re-reading");
                }
                Err(e) => return Err(kube_error(format!("writing {}", self.secret_ref()))(e)),
            }
        }
        Err(WebhookError::Certificate(format!(
            "{} kept changing under {MAX_CONFLICTS} attempts to settle it",
            self.secret_ref()
        )))
    }

    fn secret(&self, mut metadata: ObjectMeta, stored: &Material) -> Secret {
        // The apiserver keeps its own record of field managers when none is sent.
        metadata.managed_fields = None;
        metadata.name = Some(self.cfg.secret_name.clone());
        metadata.namespace = Some(self.cfg.namespace.clone());
        metadata.labels.get_or_insert_with(BTreeMap::new).insert(
            "app.kubernetes.io/managed-by".to_owned(),
            "winipam".to_owned(),
        );
        let data = [
            (CA_CERT_KEY, &stored.ca.cert),
            (CA_KEY_KEY, &stored.ca.key),
            (TLS_CERT_KEY, &stored.serving.cert),
            (TLS_KEY_KEY, &stored.serving.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone())))
        .collect();
        Secret {
            metadata,
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// Makes the caBundle of every webhook of both configurations equal to `ca_cert`. Returns
    /// how many webhooks were patched.
    pub async fn patch_ca_bundles(&self, ca_cert: &[u8]) -> Result<usize, WebhookError> {
        let name = &self.cfg.configuration_name;
        let mutating = patch_configuration(&self.mutating, name, ca_cert, Required, |c| {
            let hooks = c.webhooks.iter().flatten();
            hooks
                .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                .collect()
        });
        // The chart renders a validating configuration in both guard modes (with the policy, the
        // hand-back guard alone), but an install from an older chart may lack it: its absence is
        // no failure.
        let validating = patch_configuration(&self.validating, name, ca_cert, Optional, |c| {
            let hooks = c.webhooks.iter().flatten();
            hooks
                .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                .collect()
        });
        let (mutating, validating) = futures::join!(mutating, validating);
        let mut patched = 0;
        let mut errors = Vec::new();
        for result in [mutating, validating] {
            match result {
                Ok(n) => patched += n,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(patched)
        } else {
            Err(WebhookError::Certificate(errors.join("; ")))
        }
    }

    /// Every `interval`: settle the Secret, serve a renewed certificate, fix the caBundles. A
    /// failed pass is retried sooner (1 s, doubling up to `interval`). Runs until dropped.
    pub async fn maintain(self, resolver: Arc<CertResolver>, mut current: Material) {
        let interval = self.cfg.check_interval;
        let mut retry = FIRST_RETRY;
        let mut delay = Duration::ZERO;
        loop {
            tokio::time::sleep(delay).await;
            match self.pass(&resolver, &mut current).await {
                Ok(patched) => {
                    if patched > 0 {
                        tracing::info!(webhooks = patched, "webhook caBundle updated");
                    }
                    retry = FIRST_RETRY;
                    delay = interval;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "maintaining the self-managed webhook certificate failed");
                    delay = retry;
                    retry = (retry * 2).min(interval);
                }
            }
        }
    }

    async fn pass(
        &self,
        resolver: &CertResolver,
        current: &mut Material,
    ) -> Result<usize, WebhookError> {
        let stored = self.ensure_secret(SystemTime::now()).await?;
        if stored.serving != current.serving {
            resolver.set(certified_key(&stored.serving)?);
            tracing::info!(secret = %self.secret_ref(), "serving the renewed webhook certificate");
        }
        *current = stored;
        self.patch_ca_bundles(&current.ca.cert).await
    }
}

/// Whether a webhook configuration must exist: a missing required one fails the pass (it is
/// retried soon, as when Helm creates it after the Deployment); a missing optional one counts as
/// no webhook to patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}
use Presence::{Optional, Required};

/// Patches the caBundles of one configuration; returns how many webhooks changed.
async fn patch_configuration<K>(
    api: &Api<K>,
    name: &str,
    ca_cert: &[u8],
    presence: Presence,
    webhooks: impl Fn(&K) -> Vec<(String, Option<ByteString>)>,
) -> Result<usize, String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading {kind} {name}: {e}"))?;
    let config = match (found, presence) {
        (Some(config), _) => config,
        (None, Optional) => return Ok(0),
        (None, Required) => return Err(format!("{kind} {name} does not exist (yet)")),
    };
    let hooks = webhooks(&config);
    let ops = ca_bundle_patch(hooks.iter().map(|(n, b)| (n.as_str(), b.as_ref())), ca_cert);
    if ops.is_empty() {
        return Ok(0);
    }
    let changed = ops.len() / 2;
    let patch = Patch::Json::<()>(json_patch::Patch(ops));
    api.patch(name, &PatchParams::default(), &patch)
        .await
        .map_err(|e| format!("patching the caBundle of {kind} {name}: {e}"))?;
    Ok(changed)
}

/// The CA and serving pair of a Secret, each `None` when incomplete.
pub fn read_secret(secret: &Secret) -> (Option<Ca>, Option<PemPair>) {
    let get = |key: &str| -> Option<Vec<u8>> {
        let value = secret.data.as_ref()?.get(key)?;
        (!value.0.is_empty()).then(|| value.0.clone())
    };
    let ca = match (get(CA_CERT_KEY), get(CA_KEY_KEY)) {
        (Some(cert), Some(key)) => Some(Ca { cert, key }),
        _ => None,
    };
    let serving = match (get(TLS_CERT_KEY), get(TLS_KEY_KEY)) {
        (Some(cert), Some(key)) => Some(PemPair { cert, key }),
        _ => None,
    };
    (ca, serving)
}

/// JSON Patch setting `caBundle` on each webhook whose bundle differs from `ca_cert`: a `test`
/// of the webhook's name at its index guards against the list changing in between (the patch
/// then fails and the next pass re-reads).
pub fn ca_bundle_patch<'a>(
    webhooks: impl Iterator<Item = (&'a str, Option<&'a ByteString>)>,
    ca_cert: &[u8],
) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    for (index, (name, bundle)) in webhooks.enumerate() {
        if bundle.is_some_and(|b| b.0 == ca_cert) {
            continue;
        }
        let index = index.to_string();
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["webhooks", index.as_str(), "name"]),
            value: json!(name),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["webhooks", index.as_str(), "clientConfig", "caBundle"]),
            // ByteString serializes as base64, as the API wants `caBundle`.
            value: serde_json::to_value(ByteString(ca_cert.to_vec())).unwrap_or_default(),
        }));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_patch_touches_only_differing_webhooks() {
        let ca = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let same = ByteString(ca.to_vec());
        let old = ByteString(b"old".to_vec());
        let hooks = [
            ("a.winipam.dev", Some(&same)),
            ("b.winipam.dev", Some(&old)),
            ("c.winipam.dev", None),
        ];
        let ops = ca_bundle_patch(hooks.into_iter(), ca);
        let value = serde_json::to_value(&ops).unwrap();
        let mut doc = json!({ "webhooks": [
            { "name": "a.winipam.dev", "clientConfig": { "caBundle": "x" } },
            { "name": "b.winipam.dev", "clientConfig": { "caBundle": "b2xk" } },
            { "name": "c.winipam.dev", "clientConfig": { "url": "https://127.0.0.1:1/v" } }
        ]});
        assert_eq!(ops.len(), 4, "{value}");
        json_patch::patch(&mut doc, &ops).unwrap();
        let b64 = serde_json::to_value(ByteString(ca.to_vec())).unwrap();
        assert_eq!(
            doc["webhooks"][0]["clientConfig"]["caBundle"], "x",
            "unchanged"
        );
        assert_eq!(doc["webhooks"][1]["clientConfig"]["caBundle"], b64);
        assert_eq!(doc["webhooks"][2]["clientConfig"]["caBundle"], b64);
        assert_eq!(
            doc["webhooks"][2]["clientConfig"]["url"],
            "https://127.0.0.1:1/v"
        );

        // The list changed since it was read: the test operation makes the patch fail whole.
        let mut reordered = json!({ "webhooks": [
            { "name": "x", "clientConfig": {} }, { "name": "y", "clientConfig": {} }, { "name": "z", "clientConfig": {} }
        ]});
        assert!(json_patch::patch(&mut reordered, &ops).is_err());
    }

    #[test]
    fn secret_round_trip() {
        let stored = Material {
            ca: Ca {
                cert: b"ca-cert".to_vec(),
                key: b"ca-key".to_vec(),
            },
            serving: PemPair {
                cert: b"tls-cert".to_vec(),
                key: b"tls-key".to_vec(),
            },
        };
        let data: BTreeMap<String, ByteString> = [
            (CA_CERT_KEY, &stored.ca.cert),
            (CA_KEY_KEY, &stored.ca.key),
            (TLS_CERT_KEY, &stored.serving.cert),
            (TLS_KEY_KEY, &stored.serving.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone())))
        .collect();
        let secret = Secret {
            data: Some(data.clone()),
            ..Secret::default()
        };
        assert_eq!(
            read_secret(&secret),
            (Some(stored.ca.clone()), Some(stored.serving.clone()))
        );
        let mut partial = data;
        partial.remove(CA_KEY_KEY);
        partial.insert(TLS_KEY_KEY.to_owned(), ByteString(Vec::new()));
        let secret = Secret {
            data: Some(partial),
            ..Secret::default()
        };
        assert_eq!(read_secret(&secret), (None, None));
    }
}
