//! The warm-pool job workers (2 per IP provider for the whole cluster): create (Assign, then
//! poll the ENI until the new addresses show), delete (Unassign), re-sync after a failure, and
//! the per-node cool-down check requeued every 30 s.

use std::sync::Arc;

use ipnet::Ipv4Net;
use tokio::time::Instant;

use super::pool::PoolJob;
use super::{Job, JobItem, NodePhase, Shared, submit, wake_parked};
use crate::ec2::{Ec2Backend, Ec2Error};
use crate::ipam::{Ec2ErrorClass, InstanceInfo};
use crate::k8s::Cluster;

pub(super) async fn worker<C: Cluster, B: Ec2Backend + Clone>(
    s: Arc<Shared<C, B>>,
    provider: usize,
) {
    loop {
        let item = s.jobs_q[provider].get().await;
        run(&s, &item).await;
        s.jobs_q[provider].done(&item);
    }
}

/// What a job needs of its node: (instance id, ENI id, prefix mode); `None` if it is gone.
fn target<C, B>(s: &Shared<C, B>, node: &str) -> Option<(String, String, bool)> {
    match &s.lock().nodes.get(node)?.phase {
        NodePhase::Ready(r) => Some((r.instance_id.clone(), r.eni_id.clone(), r.prefix)),
        _ => None,
    }
}

/// The ENI's groups as a describe shows them (secondary IPs as /32s, or /28s).
fn groups_of(info: &InstanceInfo, prefix: bool) -> Vec<Ipv4Net> {
    if prefix {
        info.primary_eni.prefixes.clone()
    } else {
        info.primary_eni
            .secondary_ips
            .iter()
            .filter_map(|ip| Ipv4Net::new(*ip, 32).ok())
            .collect()
    }
}

/// After an Assign: describe until every new group shows (first at once, then 250 ms doubling,
/// 7 attempts). Returns the groups seen and whether all were.
async fn wait_attached<C: Cluster, B: Ec2Backend + Clone>(
    s: &Shared<C, B>,
    instance_id: &str,
    prefix: bool,
    created: &[Ipv4Net],
) -> (Vec<Ipv4Net>, bool) {
    let ids: &[String] = &[instance_id.to_string()];
    let mut delay = s.params.poll_first;
    let mut seen = Vec::new();
    for step in 0..s.params.poll_steps.max(1) {
        if step > 0 {
            let jitter = s.lock().rng.next_f64() * s.params.poll_jitter;
            tokio::time::sleep(delay.mul_f64(1.0 + jitter)).await;
            delay = delay.mul_f64(s.params.poll_factor);
        }
        let described = s
            .client
            .call(|b| async move { b.describe_instances(ids).await })
            .await;
        let Ok(Some(info)) = described.map(|mut v| v.pop()) else {
            // Not "not attached yet": the wait ends with what was seen.
            return (seen, false);
        };
        let upstream = groups_of(&info, prefix);
        seen = created
            .iter()
            .filter(|g| upstream.contains(g))
            .copied()
            .collect();
        if seen.len() == created.len() {
            return (seen, true);
        }
    }
    (seen, false)
}

async fn run<C: Cluster, B: Ec2Backend + Clone>(s: &Shared<C, B>, item: &JobItem) {
    let Some((instance_id, eni, prefix)) = target(s, &item.node) else {
        // The node is gone: its jobs are forgotten.
        return;
    };
    let eni = eni.as_str();
    match &item.job {
        Job::Cooldown => {
            let mut st = s.lock();
            if let Some(NodePhase::Ready(r)) = st.nodes.get_mut(&item.node).map(|n| &mut n.phase) {
                r.pool.process_cooldown(Instant::now());
                let next = r.pool.reconcile();
                wake_parked(s, &mut st, &item.node);
                if let Some(job) = next {
                    submit(s, &mut st, &item.node, prefix, Job::Pool(job));
                }
            }
            drop(st);
            s.jobs_q[usize::from(prefix)].add_after(item.clone(), s.params.cooldown_check);
        }
        Job::Pool(job @ PoolJob::Create(n)) => {
            let n = *n;
            let assigned: Result<Vec<Ipv4Net>, Ec2Error> = if prefix {
                s.client
                    .call(|b| async move { b.assign_prefixes(eni, n).await })
                    .await
            } else {
                s.client
                    .call(|b| async move { b.assign_private_ips(eni, n).await })
                    .await
                    .map(|ips| {
                        ips.into_iter()
                            .filter_map(|ip| Ipv4Net::new(ip, 32).ok())
                            .collect()
                    })
            };
            let (groups, ok, no_cidr) = match assigned {
                Ok(created) => {
                    let (seen, all) = wait_attached(s, &instance_id, prefix, &created).await;
                    (seen, all, false)
                }
                Err(e) => (Vec::new(), false, e.class == Ec2ErrorClass::NoCidrBlock),
            };
            finish(s, item, job, &groups, ok, prefix, no_cidr);
        }
        Job::Pool(job @ PoolJob::Delete(groups)) => {
            let result = if prefix {
                s.client
                    .call(|b| async move { b.unassign_prefixes(eni, groups).await })
                    .await
            } else {
                let ips: &[_] = &groups.iter().map(|g| g.addr()).collect::<Vec<_>>();
                s.client
                    .call(|b| async move { b.unassign_private_ips(eni, ips).await })
                    .await
            };
            // Groups that failed to go back stay warm.
            let kept: &[Ipv4Net] = if result.is_ok() { &[] } else { groups };
            finish(s, item, job, kept, result.is_ok(), prefix, false);
        }
        Job::Pool(PoolJob::ReSync) => {
            let ids: &[String] = std::slice::from_ref(&instance_id);
            let described = s
                .client
                .call(|b| async move { b.describe_instances(ids).await })
                .await;
            let mut st = s.lock();
            if let (Ok(mut found), Some(NodePhase::Ready(r))) = (
                described,
                st.nodes.get_mut(&item.node).map(|n| &mut n.phase),
            ) && let Some(info) = found.pop()
            {
                r.pool.resync(&groups_of(&info, prefix));
                let next = r.pool.reconcile();
                wake_parked(s, &mut st, &item.node);
                if let Some(job) = next {
                    submit(s, &mut st, &item.node, prefix, Job::Pool(job));
                }
            }
        }
    }
}

/// `UpdatePool` with the job's outcome, then reconcile if the pool asks for it.
fn finish<C, B>(
    s: &Shared<C, B>,
    item: &JobItem,
    job: &PoolJob,
    groups: &[Ipv4Net],
    ok: bool,
    prefix: bool,
    no_cidr: bool,
) {
    let mut st = s.lock();
    let Some(NodePhase::Ready(r)) = st.nodes.get_mut(&item.node).map(|n| &mut n.phase) else {
        return;
    };
    if no_cidr {
        r.pool.set_no_cidr_blocks();
    }
    let reconcile = r.pool.update(job, groups, ok);
    // The provider reconciles after every update that asks for it; after a successful create
    // the pods' next assignments reconcile.
    let next = if reconcile { r.pool.reconcile() } else { None };
    wake_parked(s, &mut st, &item.node);
    if let Some(job) = next {
        submit(s, &mut st, &item.node, prefix, Job::Pool(job));
    }
}
