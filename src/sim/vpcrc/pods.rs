//! The pod reconciler (20 workers): a bound pod on a ready node gets an address from the warm
//! pool and its annotation, or is requeued after 600 ms / 20 s / 2 min by why it got none (with
//! a Warning Event each time, as `pkg/handler/warm.go`); a deleted or finished pod's address goes
//! to the cool-down queue.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pool::PoolError;
use super::{Job, NodePhase, PodItem, PodKey, Shared, submit, wake_parked};
use crate::ec2::Ec2Backend;
use crate::ipam::parse_annotation;
use crate::k8s::{AnnotateOutcome, Cluster, EventSeverity, ObjectKind, ObjectRef};

pub(super) async fn worker<C: Cluster, B: Ec2Backend + Clone>(s: Arc<Shared<C, B>>) {
    loop {
        let item = s.pods_q.get().await;
        match &item {
            PodItem::Sync(key) => sync(&s, key).await,
            PodItem::Deleted(_, uid, node, annotation) => {
                free(&s, uid, node, annotation.as_deref());
            }
        }
        s.pods_q.done(&item);
    }
}

/// `HandleDelete`: the address (from the annotation, else the pool's record) cools down.
fn free<C, B>(s: &Shared<C, B>, uid: &str, node: &str, annotation: Option<&str>) {
    let mut st = s.lock();
    let Some(NodePhase::Ready(r)) = st.nodes.get_mut(node).map(|n| &mut n.phase) else {
        return;
    };
    let ip = annotation
        .and_then(parse_annotation)
        .or_else(|| r.pool.assigned(uid));
    let Some(ip) = ip else { return };
    if !r.pool.free(uid, ip, Instant::now()) {
        return;
    }
    let prefix = r.prefix;
    let next = r.pool.reconcile();
    wake_parked(s, &mut st, node);
    if let Some(job) = next {
        submit(s, &mut st, node, prefix, Job::Pool(job));
    }
}

fn requeue_delay<C, B>(s: &Shared<C, B>, e: PoolError) -> Duration {
    match e {
        PoolError::Cooling | PoolError::AtCapacity => s.params.requeue_cooling,
        PoolError::NoCidrBlocks => s.params.requeue_no_prefix,
        PoolError::Empty | PoolError::BeingCreated | PoolError::AlreadyAssigned => {
            s.params.requeue_empty
        }
    }
}

fn pod_ref(key: &PodKey, uid: &str) -> ObjectRef {
    ObjectRef {
        kind: ObjectKind::Pod,
        name: key.1.clone(),
        namespace: Some(key.0.clone()),
        uid: uid.to_string(),
    }
}

/// What `sync` decided under the lock.
enum Step {
    Nothing,
    Free(String, String, Option<String>),
    Annotate {
        uid: String,
        node: String,
        value: String,
        ip: Ipv4Addr,
    },
    Failed {
        uid: String,
        error: PoolError,
    },
}

async fn sync<C: Cluster, B: Ec2Backend + Clone>(s: &Shared<C, B>, key: &PodKey) {
    let step = decide(s, key);
    match step {
        Step::Nothing => {}
        Step::Free(uid, node, annotation) => free(s, &uid, &node, annotation.as_deref()),
        Step::Failed { uid, error } => {
            let note = match error {
                PoolError::Cooling => {
                    "Resource vpc.amazonaws.com/PrivateIPv4Address are being cooled down, will retry in 20s"
                }
                PoolError::NoCidrBlocks => {
                    "Warm pool for resource vpc.amazonaws.com/PrivateIPv4Address is currently empty because the specified subnet does not have enough free cidr blocks, will retry in 2m0s"
                }
                _ => {
                    "Warm pool for resource vpc.amazonaws.com/PrivateIPv4Address is currently empty, will retry in 600ms"
                }
            };
            let _ = s
                .cluster
                .publish_event(
                    &pod_ref(key, &uid),
                    EventSeverity::Warning,
                    "ResourceAllocationFailed",
                    note,
                )
                .await;
        }
        Step::Annotate {
            uid,
            node,
            value,
            ip,
        } => {
            let written = s
                .cluster
                .annotate_pod(&key.0, &key.1, &uid, &value, false)
                .await;
            if !matches!(written, Ok(AnnotateOutcome::Written)) {
                // `FreeResource` after a failed patch: the address cools down.
                let mut st = s.lock();
                if let Some(NodePhase::Ready(r)) = st.nodes.get_mut(&node).map(|n| &mut n.phase) {
                    r.pool.free(&uid, ip, Instant::now());
                }
                return;
            }
            let note = format!(
                "Allocated Resource vpc.amazonaws.com/PrivateIPv4Address: {value} to the pod"
            );
            let _ = s
                .cluster
                .publish_event(
                    &pod_ref(key, &uid),
                    EventSeverity::Normal,
                    "ResourceAllocated",
                    &note,
                )
                .await;
        }
    }
}

fn decide<C, B>(s: &Shared<C, B>, key: &PodKey) -> Step {
    let mut st = s.lock();
    let Some(pod) = st.pods.get(key) else {
        return Step::Nothing;
    };
    if pod.host_network {
        return Step::Nothing;
    }
    let (uid, node_name) = (pod.uid.clone(), pod.node.clone());
    if pod.phase.is_terminal() {
        return Step::Free(uid, node_name, pod.annotation.clone());
    }
    if pod.annotation.is_some() {
        return Step::Nothing;
    }
    let now = Instant::now();
    let Some(node) = st.nodes.get_mut(&node_name) else {
        // Not known (yet): `PodRequeueRequest`.
        drop(st);
        s.pods_q
            .add_after(PodItem::Sync(key.clone()), s.params.requeue_node_not_ready);
        return Step::Nothing;
    };
    let r = match &mut node.phase {
        NodePhase::Pending { waiting } => {
            waiting.entry(key.clone()).or_insert(now);
            return Step::Nothing;
        }
        NodePhase::Unmanaged => return Step::Nothing,
        NodePhase::Ready(r) => r,
    };
    let prefix = r.prefix;
    match r.pool.assign(&uid) {
        Ok((ip, reconcile)) => {
            let value = if prefix {
                format!("{ip}/32")
            } else {
                format!("{ip}/{}", r.subnet_len)
            };
            let next = if reconcile { r.pool.reconcile() } else { None };
            if let Some(job) = next {
                submit(s, &mut st, &node_name, prefix, Job::Pool(job));
            }
            Step::Annotate {
                uid,
                node: node_name,
                value,
                ip,
            }
        }
        Err((PoolError::AlreadyAssigned, _)) => Step::Nothing,
        Err((error, reconcile)) => {
            let delay = requeue_delay(s, error);
            r.parked.insert(key.clone(), (now, delay));
            let next = if reconcile { r.pool.reconcile() } else { None };
            if let Some(job) = next {
                submit(s, &mut st, &node_name, prefix, Job::Pool(job));
            }
            Step::Failed { uid, error }
        }
    }
}
