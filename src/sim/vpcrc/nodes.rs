//! Node initialisation ("node async workers"): describe the instance (3 DescribeInstances, as
//! the node, the IP provider and the prefix provider each load it) and its subnet, take the
//! capacity from the static table, rebuild the pool from the ENI and the pods' annotations,
//! advertise the capacity, submit the first pool job and the cool-down check.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ipnet::Ipv4Net;
use tokio::time::Instant;

use super::pool::{PoolTargets, WarmPool};
use super::{Job, ModelNode, NodePhase, PodKey, ReadyNode, Shared, requeue_at, submit};
use crate::ec2::Ec2Backend;
use crate::ipam::{InstanceInfo, capacity, parse_annotation};
use crate::k8s::{Cluster, EventSeverity, ObjectRef};

pub(super) async fn worker<C: Cluster, B: Ec2Backend + Clone>(s: Arc<Shared<C, B>>) {
    loop {
        let name = s.nodes_q.get().await;
        init(&s, &name).await;
        s.nodes_q.done(&name);
    }
}

/// Marks the node as no longer pending (initialised, or not manageable).
fn settle<C, B>(
    s: &Shared<C, B>,
    node: &mut ModelNode,
    phase: NodePhase,
) -> Vec<(PodKey, Instant)> {
    let old = std::mem::replace(&mut node.phase, phase);
    match old {
        NodePhase::Pending { waiting } => {
            s.ready.0.pending.fetch_sub(1, Ordering::SeqCst);
            waiting.into_iter().collect()
        }
        _ => Vec::new(),
    }
}

async fn describe<C: Cluster, B: Ec2Backend + Clone>(
    s: &Shared<C, B>,
    instance_id: &str,
) -> Option<InstanceInfo> {
    let ids: &[String] = &[instance_id.to_string()];
    let mut info = None;
    for _ in 0..s.params.init_describe_instances.max(1) {
        match s
            .client
            .call(|b| async move { b.describe_instances(ids).await })
            .await
        {
            Ok(mut found) => info = found.pop(),
            Err(err) => {
                tracing::debug!(instance = instance_id, error = %err, "vpc-rc model: describe failed");
                return None;
            }
        }
    }
    info
}

async fn init<C: Cluster, B: Ec2Backend + Clone>(s: &Shared<C, B>, name: &str) {
    let view = match s.lock().nodes.get(name) {
        Some(ModelNode {
            view,
            phase: NodePhase::Pending { .. },
        }) => view.clone(),
        _ => return,
    };
    let Some(instance_id) = view.instance_id.clone() else {
        if let Some(node) = s.lock().nodes.get_mut(name) {
            settle(s, node, NodePhase::Unmanaged);
        }
        return;
    };
    let Some(info) = describe(s, &instance_id).await else {
        s.nodes_q.add_after(name.to_string(), s.params.init_retry);
        return;
    };
    let subnet_ids: &[String] = std::slice::from_ref(&info.primary_eni.subnet_id);
    let mut subnet_len = 32;
    for _ in 0..s.params.init_describe_subnets {
        match s
            .client
            .call(|b| async move { b.describe_subnets(subnet_ids).await })
            .await
        {
            Ok(found) => {
                if let Some(sub) = found.first() {
                    subnet_len = sub.cidr.prefix_len();
                }
            }
            Err(_) => {
                s.nodes_q.add_after(name.to_string(), s.params.init_retry);
                return;
            }
        }
    }
    // The VPC RC's limits come from a table compiled into it (`pkg/aws/vpc/limits.go`).
    let Some(limits) = capacity::lookup(&info.instance_type) else {
        let object = ObjectRef::node(&view);
        let note = format!(
            "The instance type {} is not supported for Windows",
            info.instance_type
        );
        let _ = s
            .cluster
            .publish_event(&object, EventSeverity::Warning, "Unsupported", &note)
            .await;
        if let Some(node) = s.lock().nodes.get_mut(name) {
            settle(s, node, NodePhase::Unmanaged);
        }
        return;
    };
    let prefix = s.lock().prefix_delegation && limits.nitro;
    let slots = limits.ipv4_per_interface.saturating_sub(1);
    let capacity = if prefix { slots * 16 } else { slots };
    if view.advertised_capacity.as_deref() != Some(capacity.to_string().as_str())
        && let Err(err) = s.cluster.set_node_capacity(name, Some(capacity)).await
    {
        tracing::debug!(node = name, error = %err, "vpc-rc model: capacity not advertised");
    }

    let mut st = s.lock();
    // Pods already annotated on this node (`GetRunningPodsOnNode`).
    let used: Vec<(String, Ipv4Addr)> = st
        .pods
        .values()
        .filter(|p| p.node == name)
        .filter_map(|p| Some((p.uid.clone(), parse_annotation(p.annotation.as_deref()?)?)))
        .collect();
    let eni = &info.primary_eni;
    let groups: Vec<Ipv4Net> = if prefix {
        eni.prefixes.clone()
    } else {
        eni.secondary_ips
            .iter()
            .filter_map(|ip| Ipv4Net::new(*ip, 32).ok())
            .collect()
    };
    let targets = if prefix {
        PoolTargets {
            warm: s.params.prefix_warm_ip,
            minimum: s.params.prefix_minimum_ip,
            max_deviation: 0,
        }
    } else {
        PoolTargets {
            warm: s.params.secondary_warm,
            minimum: s.params.secondary_minimum,
            max_deviation: s.params.secondary_max_deviation,
        }
    };
    let mut pool = WarmPool::new(prefix, capacity, targets, s.params.cooldown, &groups, &used);
    let first_job = pool.reconcile();
    let ready = ReadyNode {
        instance_id,
        eni_id: eni.eni_id.clone(),
        prefix,
        subnet_len,
        pool,
        parked: BTreeMap::new(),
    };
    let Some(node) = st.nodes.get_mut(name) else {
        return;
    };
    let waiting = settle(s, node, NodePhase::Ready(Box::new(ready)));
    if let Some(job) = first_job {
        submit(s, &mut st, name, prefix, Job::Pool(job));
    }
    st.job_seq += 1;
    let check = super::JobItem {
        seq: st.job_seq,
        node: name.to_string(),
        job: Job::Cooldown,
    };
    s.jobs_q[usize::from(prefix)].add_after(check, s.params.cooldown_check);
    drop(st);
    // Pods that found the node not ready retry at their next requeue (every second).
    let now = Instant::now();
    for (key, since) in waiting {
        let at = requeue_at(since, s.params.requeue_node_not_ready, now);
        s.pods_q.add_after(super::PodItem::Sync(key), at - now);
    }
}
