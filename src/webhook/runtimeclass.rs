//! RuntimeClass lookups for the mutating webhook: a watch-fed cache, with a direct read for a
//! name the cache does not (yet) hold.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::AbortOnDrop;

/// A node selector: label key to value.
pub type NodeSelector = BTreeMap<String, String>;
/// A RuntimeClass's node selector, or why it is unknown.
pub type Lookup = Result<Option<NodeSelector>, String>;

/// A RuntimeClass's `scheduling.nodeSelector`, by RuntimeClass name.
pub trait RuntimeClassLookup: Send + Sync {
    /// `Ok(None)`: no such RuntimeClass, or it has no scheduling node selector. `Err`: the
    /// answer is unknown (the webhook then lets the pod through unchanged).
    fn node_selector<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup>;
}

/// How long a direct read may take: well inside the webhook's 5 s timeout.
const GET_TIMEOUT: Duration = Duration::from_secs(2);

/// RuntimeClasses from the API: a reflector keeps every RuntimeClass (clusters have a handful)
/// in memory, so a pod admission normally costs no API call. Needs `get`, `list` and `watch`
/// on `runtimeclasses.node.k8s.io`.
pub struct KubeRuntimeClasses {
    api: Api<RuntimeClass>,
    store: Store<RuntimeClass>,
    _reflector: AbortOnDrop,
}

impl KubeRuntimeClasses {
    /// Starts the watch on the current tokio runtime; it stops when the value is dropped.
    pub fn start(client: Client) -> Self {
        let api = Api::<RuntimeClass>::all(client);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    // The backoff retries; lookups fall back to direct reads meanwhile.
                    tracing::warn!(error = %e, "watching RuntimeClasses failed");
                }
            }
        });
        KubeRuntimeClasses {
            api,
            store,
            _reflector: AbortOnDrop(task),
        }
    }
}

fn scheduling_selector(class: &RuntimeClass) -> Option<NodeSelector> {
    class.scheduling.as_ref()?.node_selector.clone()
}

impl RuntimeClassLookup for KubeRuntimeClasses {
    fn node_selector<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            if let Some(class) = self.store.get(&ObjectRef::new(name)) {
                return Ok(scheduling_selector(&class));
            }
            // Not cached: the watch has not synced yet, or the RuntimeClass is brand new.
            match tokio::time::timeout(GET_TIMEOUT, self.api.get_opt(name)).await {
                Ok(Ok(class)) => Ok(class.as_ref().and_then(scheduling_selector)),
                Ok(Err(e)) => Err(format!("reading RuntimeClass {name} failed: {e}")),
                Err(_) => Err(format!(
                    "reading RuntimeClass {name} took more than {GET_TIMEOUT:?}"
                )),
            }
        })
    }
}
