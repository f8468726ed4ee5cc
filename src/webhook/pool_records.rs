//! The NodeAddressPools, for the validating webhook on every replica (not only the leader):
//! while winipam is paused for the VPC Resource Controller, that controller's annotation writes
//! are judged against the records of the pod's node ([`super::handback`]). A reflector keeps
//! every NodeAddressPool in memory (one per Windows node), so an admission costs no API call;
//! the chart grants list and watch on them. Until the first list completes, nothing is denied:
//! failing open, as the webhook's failurePolicy Ignore does.

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::AbortOnDrop;
use super::handback::{self, PodWrite};
use crate::clock::{Clock, SystemClock};
use crate::controller::record::restore;
use crate::crd::NodeAddressPool;

/// Judges the VPC Resource Controller's annotation writes (see [`super::handback`]).
pub trait HandBack: Send + Sync {
    /// `Err` holds the message of a denial.
    fn judge(&self, write: &PodWrite<'_>) -> Result<(), String>;
}

/// The NodeAddressPools from the API, kept current by a watch.
pub struct PoolRecords {
    store: Store<NodeAddressPool>,
    _reflector: AbortOnDrop,
}

impl PoolRecords {
    /// Starts the watch on the current tokio runtime; it stops when the value is dropped.
    pub fn watch(client: Client) -> Self {
        let api = Api::<NodeAddressPool>::all(client);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    // The backoff retries; the last records stay meanwhile.
                    tracing::warn!(error = %e, "watching NodeAddressPools failed");
                }
            }
        });
        PoolRecords {
            store,
            _reflector: AbortOnDrop(task),
        }
    }
}

impl HandBack for PoolRecords {
    fn judge(&self, write: &PodWrite<'_>) -> Result<(), String> {
        let pool = self.store.get(&ObjectRef::new(write.node));
        let record = pool.as_ref().and_then(|p| p.status.as_ref()).map(restore);
        handback::judge(record.as_ref(), write, SystemClock.now())
    }
}
