//! The kubelet's `--max-pods` against the node's pod IP capacity (issue 16, item 3): while they
//! disagree, a per-node gauge says so, and a Warning Event on the node gives the value to set.
//! The Event goes out once per change of either number, not on every pass: a node group left
//! at the wrong value would otherwise flood the Events of every node every resync.

use super::reasons;
use super::state::{NodeWorker, Phase};
use crate::ec2::Ec2Backend;
use crate::ipam::Mode;
use crate::ipam::capacity;
use crate::ipam::max_pods::{MaxPodsMismatch, compare_max_pods};
use crate::k8s::{Cluster, EventSeverity, ObjectRef};

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// Compares the node's `status.capacity.pods` with its IP capacity when either changed.
    /// The capacity compared is the steady one of the node's mode, not the one advertised during
    /// a mode switch (which shrinks while the old mode drains, and would warn for nothing).
    pub(crate) async fn check_max_pods(&mut self) {
        let Phase::Ready(ready) = &self.phase else {
            return;
        };
        // Blocked, the VPC Resource Controller owns the node's capacity, and the advice with it.
        if self.blocked {
            return;
        }
        let Some(max_pods) = self.node.max_pods else {
            if self.max_pods_checked.take().is_some() {
                self.ctx.metrics.remove_node_max_pods(&self.node.name);
            }
            return;
        };
        let mode = ready.pool.mode();
        let ip_capacity = capacity::pod_capacity(ready.pool.limits(), mode).pods;
        // The most host-network pods seen at once: a DaemonSet rollout that briefly runs one
        // fewer must not turn an agreed max-pods into a warning and back.
        let host_network =
            u32::try_from(self.pods.values().filter(|p| p.view.host_network).count())
                .unwrap_or(u32::MAX);
        let host_network = host_network.max(self.max_pods_checked.map_or(0, |c| c.2));
        let checked = (max_pods, ip_capacity, host_network);
        if self.max_pods_checked == Some(checked) {
            return;
        }
        self.max_pods_checked = Some(checked);
        let mismatch = compare_max_pods(max_pods, ip_capacity, host_network);
        let metrics = &self.ctx.metrics;
        metrics.set_node_max_pods(&self.node.name, max_pods, mismatch.is_some());
        let Some(mismatch) = mismatch else {
            return;
        };
        let note = mismatch_note(&mismatch, &ready.instance.instance_type, mode);
        let node_ref = ObjectRef::node(&self.node);
        self.ctx
            .event(
                &node_ref,
                EventSeverity::Warning,
                reasons::MAX_PODS_MISMATCH,
                &note,
            )
            .await;
    }
}

/// What the admin reads: both numbers, what goes wrong, the value to set and where it comes from.
pub(crate) fn mismatch_note(mismatch: &MaxPodsMismatch, instance_type: &str, mode: Mode) -> String {
    let (mode_text, flag) = match mode {
        Mode::Prefix => ("prefix delegation", " --prefix-delegation"),
        Mode::Secondary => ("secondary IPv4", ""),
    };
    let advice = format!(
        "set the kubelet's --max-pods={} on this node group (`winipam capacity {instance_type} \
         --max-pods{flag}`), plus the host-network (HostProcess) pods it runs per node",
        mismatch.recommended()
    );
    match *mismatch {
        MaxPodsMismatch::Below {
            max_pods,
            ip_capacity,
            ..
        } => format!(
            "kubelet --max-pods is {max_pods} but this {instance_type} node has {ip_capacity} pod \
             IPs ({mode_text}): {} addresses can never be used by a pod; {advice}",
            ip_capacity - max_pods.min(ip_capacity)
        ),
        MaxPodsMismatch::Above {
            max_pods,
            ip_capacity,
            ..
        } => format!(
            "kubelet --max-pods is {max_pods} but this {instance_type} node has only \
             {ip_capacity} pod IPs ({mode_text}): pods beyond {ip_capacity} are refused for want \
             of an address instead of by max-pods, and a pod the webhook missed is placed here \
             and waits for one; {advice}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_give_both_numbers_and_the_value_to_set() {
        let below = compare_max_pods(29, 144, 0).expect("a mismatch");
        let note = mismatch_note(&below, "m5.large", Mode::Prefix);
        assert!(note.contains("--max-pods is 29"), "{note}");
        assert!(note.contains("144 pod IPs (prefix delegation)"), "{note}");
        assert!(note.contains("115 addresses can never be used"), "{note}");
        assert!(note.contains("--max-pods=110"), "{note}");
        assert!(
            note.contains("winipam capacity m5.large --max-pods --prefix-delegation"),
            "{note}"
        );

        let above = compare_max_pods(110, 9, 0).expect("a mismatch");
        let note = mismatch_note(&above, "m5.large", Mode::Secondary);
        assert!(note.contains("--max-pods is 110"), "{note}");
        assert!(note.contains("only 9 pod IPs (secondary IPv4)"), "{note}");
        assert!(note.contains("--max-pods=9 "), "{note}");
        assert!(
            note.contains("`winipam capacity m5.large --max-pods`"),
            "{note}"
        );
    }
}
