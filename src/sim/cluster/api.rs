//! The [`Cluster`] trait on the simulated cluster: each request takes a few (virtual)
//! milliseconds, is counted, may meet an injected fault, and changes what the watches show.

use std::time::Duration;

use futures::Stream;

use super::faults::{lost_answer, refused};
use super::store::uid_string;
use super::watch::{self, ConfigWatcher};
use super::{SimCluster, State, WriteKind};
use crate::crd::NodeAddressPoolStatus;
use crate::k8s::{
    AnnotateOutcome, Cluster, ClusterError, ConfigMapView, EnsureOutcome, EventSeverity,
    FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE, NodeView, ObjectRef, PodView, PoolRead,
    WatchEvent,
};

use super::store::{EventRecord, PoolObject};

impl SimCluster {
    /// One request's latency, drawn from the seed.
    fn latency(&self) -> Duration {
        let cfg = &self.inner.config;
        if cfg.write_median.is_zero() {
            return Duration::ZERO;
        }
        let mut st = self.lock();
        let secs = st
            .store
            .rng
            .log_normal(cfg.write_median.as_secs_f64(), cfg.write_sigma)
            .min(cfg.write_max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    async fn request(&self) {
        let d = self.latency();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl Cluster for SimCluster {
    async fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        value: &str,
        // Only decides the first form of the real patch; one request here either way.
        _has_annotations: bool,
    ) -> Result<AnnotateOutcome, ClusterError> {
        self.request().await;
        let now = self.now_ms();
        let mut st = self.lock();
        st.store.counts.annotate += 1;
        let fault = st.write_fault(WriteKind::Annotate, name);
        if let Some(e) = refused(&mut st, &fault) {
            return Err(e);
        }
        let State {
            store, watchers, ..
        } = &mut *st;
        let outcome = match store.pod_mut(namespace, name) {
            Some(pod) if uid_string(pod.uid) == uid => match &pod.annotation {
                Some(existing) => AnnotateOutcome::AlreadyAnnotated(existing.to_string()),
                None => {
                    pod.annotation = Some(Box::from(value));
                    let bound = pod.bound_at_ms;
                    let view = pod.view(namespace, name);
                    store.time_to_ip.push((
                        u32::try_from(bound).unwrap_or(u32::MAX),
                        u32::try_from(now.saturating_sub(bound)).unwrap_or(u32::MAX),
                    ));
                    store.annotated_pods += 1;
                    watchers.pod(WatchEvent::Applied(view));
                    AnnotateOutcome::Written
                }
            },
            // Gone, or re-created under the same name: the precondition on the UID fails.
            _ => AnnotateOutcome::PodGone,
        };
        match &outcome {
            AnnotateOutcome::Written => store.counts.annotate_written += 1,
            AnnotateOutcome::PodGone => store.counts.annotate_pod_gone += 1,
            AnnotateOutcome::AlreadyAnnotated(_) => store.counts.annotate_already += 1,
        }
        lost_answer(&mut st, fault)?;
        Ok(outcome)
    }

    async fn set_node_capacity(
        &self,
        node: &str,
        capacity: Option<u32>,
    ) -> Result<(), ClusterError> {
        self.request().await;
        let mut st = self.lock();
        st.store.counts.node_capacity += 1;
        let fault = st.write_fault(WriteKind::NodeCapacity, node);
        if let Some(e) = refused(&mut st, &fault) {
            return Err(e);
        }
        let State {
            store, watchers, ..
        } = &mut *st;
        let Some(n) = store.nodes.get_mut(node) else {
            return Err(ClusterError::NotFound(format!(
                "nodes \"{node}\" not found"
            )));
        };
        n.capacity = capacity.map(|c| c.to_string());
        if n.windows {
            watchers.node(WatchEvent::Applied(n.view()));
        }
        lost_answer(&mut st, fault)
    }

    async fn ensure_pool_object(
        &self,
        node_name: &str,
        node_uid: &str,
    ) -> Result<EnsureOutcome, ClusterError> {
        self.request().await;
        let mut st = self.lock();
        st.store.counts.pool_create += 1;
        let fault = st.write_fault(WriteKind::PoolCreate, node_name);
        if let Some(e) = refused(&mut st, &fault) {
            return Err(e);
        }
        let outcome = match st.store.pools.get_mut(node_name) {
            Some(pool) if pool.owner_uid == node_uid => EnsureOutcome::Existed,
            Some(pool) => {
                pool.owner_uid = node_uid.to_string();
                EnsureOutcome::Adopted
            }
            None => {
                st.store.pools.insert(
                    node_name.to_string(),
                    PoolObject {
                        owner_uid: node_uid.to_string(),
                        status: None,
                    },
                );
                EnsureOutcome::Created
            }
        };
        lost_answer(&mut st, fault)?;
        Ok(outcome)
    }

    async fn write_pool_status(
        &self,
        node_name: &str,
        status: &NodeAddressPoolStatus,
    ) -> Result<(), ClusterError> {
        self.request().await;
        let mut st = self.lock();
        st.store.counts.pool_status += 1;
        let fault = st.write_fault(WriteKind::PoolStatus, node_name);
        if let Some(e) = refused(&mut st, &fault) {
            return Err(e);
        }
        let Some(pool) = st.store.pools.get_mut(node_name) else {
            return Err(ClusterError::NotFound(format!(
                "nodeaddresspools.winipam.dev \"{node_name}\" not found"
            )));
        };
        pool.status = Some(status.clone());
        lost_answer(&mut st, fault)
    }

    async fn read_pool_statuses(&self) -> Result<Vec<PoolRead>, ClusterError> {
        self.request().await;
        let mut st = self.lock();
        st.store.counts.pool_list += 1;
        Ok(st
            .store
            .pools
            .iter()
            .map(|(name, p)| PoolRead {
                node: name.clone(),
                owner_uid: Some(p.owner_uid.clone()),
                status: p.status.clone().unwrap_or_default(),
            })
            .collect())
    }

    async fn read_pool_status(
        &self,
        node_name: &str,
    ) -> Result<Option<NodeAddressPoolStatus>, ClusterError> {
        self.request().await;
        let mut st = self.lock();
        st.store.counts.pool_get += 1;
        Ok(st.store.pools.get(node_name).and_then(|p| p.status.clone()))
    }

    async fn publish_event(
        &self,
        object: &ObjectRef,
        severity: EventSeverity,
        reason: &str,
        note: &str,
    ) -> Result<(), ClusterError> {
        self.request().await;
        let mut st = self.lock();
        let fault = st.write_fault(WriteKind::Event, &object.name);
        if let Some(e) = refused(&mut st, &fault) {
            return Err(e);
        }
        let created = st.store.events.record(EventRecord {
            kind: object.kind,
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: object.uid.clone(),
            severity,
            reason: reason.to_string(),
            note: note.to_string(),
            count: 1,
        });
        if created {
            st.store.counts.event_create += 1;
        } else {
            st.store.counts.event_patch += 1;
        }
        lost_answer(&mut st, fault)
    }

    fn watch_nodes(&self) -> impl Stream<Item = WatchEvent<NodeView>> + Send + 'static {
        let (tx, rx) = watch::channel();
        let mut st = self.lock();
        let _ = tx.send(WatchEvent::Resynced(st.store.windows_node_views()));
        st.watchers.nodes.push(tx);
        watch::stream(rx)
    }

    fn watch_pods(&self) -> impl Stream<Item = WatchEvent<PodView>> + Send + 'static {
        let (tx, rx) = watch::channel();
        let mut st = self.lock();
        let views = st.store.pod_views();
        st.watchers.pod_events += views.len() as u64;
        let _ = tx.send(WatchEvent::Resynced(views));
        st.watchers.pods.push(tx);
        watch::stream(rx)
    }

    fn watch_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
        let (tx, rx) = watch::channel();
        let mut st = self.lock();
        let current = st
            .store
            .config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        let _ = tx.send(current);
        st.watchers.configs.push(ConfigWatcher {
            namespace: namespace.to_string(),
            name: name.to_string(),
            tx,
        });
        watch::stream(rx)
    }

    fn watch_foreign_ipam(&self) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
        let (tx, rx) = watch::channel();
        let mut st = self.lock();
        let current = st
            .store
            .config_maps
            .get(&(
                FOREIGN_IPAM_NAMESPACE.to_string(),
                FOREIGN_IPAM_CONFIG_MAP.to_string(),
            ))
            .cloned();
        let _ = tx.send(current);
        st.watchers.foreign.push(tx);
        watch::stream(rx)
    }
}
