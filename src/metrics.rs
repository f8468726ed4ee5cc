//! The controller's Prometheus metrics (SPEC section 10), in one registry that `/metrics` serves.
//! The EC2 adapter registers its own metrics into the same [`Registry`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets of `winipam_pod_ip_assign_seconds`: 5 ms to 5 min. Most pods should land in the
/// first few: an address from the warm pool costs one apiserver write, a few ms on an idle
/// control plane, and the target is 50 ms (issue 18), so the buckets resolve below it; a cold
/// EC2 Assign costs about a second; a throttled or exhausted subnet shows in the long tail.
pub const ASSIGN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Address counts of one node's pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeIpCounts {
    pub used: u32,
    pub free: u32,
    pub cooling: u32,
    pub pending: u32,
}

/// Node counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStateCounts {
    pub managed: u32,
    pub unsupported: u32,
    pub blocked: u32,
}

/// Every metric of the controller.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub node_capacity_ips: IntGaugeVec,
    pub node_ips: IntGaugeVec,
    pub node_prefixes: IntGaugeVec,
    pub node_leaving: IntGaugeVec,
    pub node_kubelet_max_pods: IntGaugeVec,
    pub node_max_pods_mismatch: IntGaugeVec,
    pub pods_waiting_for_ip: IntGauge,
    pub pod_ip_assign_seconds: Histogram,
    pub allocation_failures_total: IntCounterVec,
    pub config_errors_total: IntCounter,
    pub status_write_failures_total: IntCounterVec,
    pub status_writes_total: IntCounterVec,
    pub duplicate_ip_annotations: IntGauge,
    pub nodes: IntGaugeVec,
    pub leader: IntGauge,
    pub blocked: IntGauge,
    pub build_info: IntGaugeVec,
}

const IP_STATES: [&str; 4] = ["used", "free", "cooling", "pending"];

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::with_registry(Registry::new())
    }

    /// Registers every metric in `registry`.
    pub fn with_registry(registry: Registry) -> Result<Self, prometheus::Error> {
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let node_capacity_ips = gauge_vec(
            "winipam_node_capacity_ips",
            "Pod IPv4 addresses the node's primary ENI can give in the current mode.",
            &["node"],
        )?;
        let node_ips = gauge_vec(
            "winipam_node_ips",
            "Pod IPv4 addresses of the node's pool by state (used, free, cooling, pending).",
            &["node", "state"],
        )?;
        let node_prefixes = gauge_vec(
            "winipam_node_prefixes",
            "/28 prefixes on the node's primary ENI.",
            &["node"],
        )?;
        let node_leaving = gauge_vec(
            "winipam_node_leaving",
            "1 while the node is on its way out (cordoned, draining, being deleted): it keeps no \
             warm or minimum addresses and gives back what its pods do not use.",
            &["node"],
        )?;
        let node_kubelet_max_pods = gauge_vec(
            "winipam_node_kubelet_max_pods",
            "The node's status.capacity.pods (the kubelet's --max-pods), as winipam compared it with the node's pod IP capacity.",
            &["node"],
        )?;
        let node_max_pods_mismatch = gauge_vec(
            "winipam_node_max_pods_mismatch",
            "1 while the kubelet's --max-pods disagrees with the node's pod IP capacity (below: addresses never used; above: pods refused by IP); the MaxPodsMismatch Event says the value to set.",
            &["node"],
        )?;
        let pods_waiting_for_ip = gauge(
            "winipam_pods_waiting_for_ip",
            "Pods bound to a managed node that have no address yet.",
        )?;
        let pod_ip_assign_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "winipam_pod_ip_assign_seconds",
                "Time from a pod seen bound to its address annotation written.",
            )
            .buckets(ASSIGN_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(pod_ip_assign_seconds.clone()))?;
        let allocation_failures_total = IntCounterVec::new(
            Opts::new(
                "winipam_allocation_failures_total",
                "Failed attempts to give a pod an address, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(allocation_failures_total.clone()))?;
        let config_errors_total = IntCounter::new(
            "winipam_config_errors_total",
            "ConfigMap versions rejected (the last good configuration stayed in force).",
        )?;
        registry.register(Box::new(config_errors_total.clone()))?;
        let status_write_failures_total = IntCounterVec::new(
            Opts::new(
                "winipam_status_write_failures_total",
                "Failed creations or writes of a NodeAddressPool (its status), by reason \
                 (not_found, forbidden, conflict, rejected, transport, invalid). Annotations wait \
                 for these writes.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(status_write_failures_total.clone()))?;
        // Every reason exported from the start: an alert's rate() sees the first failure.
        for reason in crate::k8s::ClusterError::METRIC_LABELS {
            status_write_failures_total.with_label_values(&[reason]);
        }
        let status_writes_total = IntCounterVec::new(
            Opts::new(
                "winipam_status_writes_total",
                "NodeAddressPool status writes, by why they went when they did: coalesced \
                 (every --status-interval at most), first, uncovered (an address handed out, \
                 freed or released that no written status covered: pods or a release waited), \
                 refill (the addresses listed ahead ran low), held_back (pods gone on a node \
                 whose ENI has no room), pause, step_down.",
            ),
            &["why"],
        )?;
        registry.register(Box::new(status_writes_total.clone()))?;
        let duplicate_ip_annotations = gauge(
            "winipam_duplicate_ip_annotations",
            "Addresses named by the annotations of more than one live pod.",
        )?;
        let nodes = gauge_vec(
            "winipam_nodes",
            "Windows nodes by state (managed, unsupported, blocked).",
            &["state"],
        )?;
        let leader = gauge("winipam_leader", "1 while this replica holds the lease.")?;
        let blocked = gauge(
            "winipam_blocked",
            "1 while another controller manages Windows IPs (amazon-vpc-cni enable-windows-ipam).",
        )?;
        let build_info = gauge_vec(
            "winipam_build_info",
            "Always 1; the version label says which build.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let metrics = Metrics {
            registry,
            node_capacity_ips,
            node_ips,
            node_prefixes,
            node_leaving,
            node_kubelet_max_pods,
            node_max_pods_mismatch,
            pods_waiting_for_ip,
            pod_ip_assign_seconds,
            allocation_failures_total,
            config_errors_total,
            status_write_failures_total,
            status_writes_total,
            duplicate_ip_annotations,
            nodes,
            leader,
            blocked,
            build_info,
        };
        metrics.set_node_states(NodeStateCounts::default());
        Ok(metrics)
    }

    /// The registry, for other components' metrics and for encoding.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn set_node_capacity(&self, node: &str, capacity: u32) {
        self.node_capacity_ips
            .with_label_values(&[node])
            .set(i64::from(capacity));
    }

    pub fn set_node_ips(&self, node: &str, counts: NodeIpCounts) {
        let values = [counts.used, counts.free, counts.cooling, counts.pending];
        for (state, value) in IP_STATES.iter().zip(values) {
            self.node_ips
                .with_label_values(&[node, state])
                .set(i64::from(value));
        }
    }

    pub fn set_node_prefixes(&self, node: &str, prefixes: u32) {
        self.node_prefixes
            .with_label_values(&[node])
            .set(i64::from(prefixes));
    }

    pub fn set_node_leaving(&self, node: &str, leaving: bool) {
        self.node_leaving
            .with_label_values(&[node])
            .set(i64::from(leaving));
    }

    /// The kubelet's `--max-pods` of a node, and whether it disagrees with the IP capacity.
    pub fn set_node_max_pods(&self, node: &str, max_pods: u32, mismatch: bool) {
        self.node_kubelet_max_pods
            .with_label_values(&[node])
            .set(i64::from(max_pods));
        self.node_max_pods_mismatch
            .with_label_values(&[node])
            .set(i64::from(mismatch));
    }

    /// The node no longer says its `--max-pods`: nothing to compare.
    pub fn remove_node_max_pods(&self, node: &str) {
        // Absent series are not an error worth reporting.
        let _ = self.node_kubelet_max_pods.remove_label_values(&[node]);
        let _ = self.node_max_pods_mismatch.remove_label_values(&[node]);
    }

    /// Drops every series of a node that is gone, so dashboards do not show ghosts.
    pub fn remove_node(&self, node: &str) {
        // Absent series are not an error worth reporting.
        let _ = self.node_capacity_ips.remove_label_values(&[node]);
        let _ = self.node_prefixes.remove_label_values(&[node]);
        let _ = self.node_leaving.remove_label_values(&[node]);
        self.remove_node_max_pods(node);
        for state in IP_STATES {
            let _ = self.node_ips.remove_label_values(&[node, state]);
        }
    }

    pub fn set_node_states(&self, counts: NodeStateCounts) {
        for (state, value) in [
            ("managed", counts.managed),
            ("unsupported", counts.unsupported),
            ("blocked", counts.blocked),
        ] {
            self.nodes.with_label_values(&[state]).set(i64::from(value));
        }
    }

    pub fn allocation_failed(&self, reason: &str) {
        self.allocation_failures_total
            .with_label_values(&[reason])
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.set(i64::from(blocked));
    }

    /// Everything in the registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_name() {
        let m = Metrics::new().unwrap();
        m.set_node_capacity("n1", 9);
        m.set_node_ips(
            "n1",
            NodeIpCounts {
                used: 2,
                free: 3,
                cooling: 1,
                pending: 0,
            },
        );
        m.set_node_prefixes("n1", 0);
        m.set_node_leaving("n1", true);
        m.set_node_max_pods("n1", 110, true);
        m.pods_waiting_for_ip.set(4);
        m.pod_ip_assign_seconds.observe(0.2);
        m.allocation_failed("subnet_full");
        m.config_errors_total.inc();
        m.duplicate_ip_annotations.set(0);
        m.set_leader(true);
        m.set_blocked(false);
        let text = m.encode().unwrap();
        for needle in [
            "winipam_node_capacity_ips{node=\"n1\"} 9",
            "winipam_node_ips{node=\"n1\",state=\"used\"} 2",
            "winipam_node_ips{node=\"n1\",state=\"free\"} 3",
            "winipam_node_ips{node=\"n1\",state=\"cooling\"} 1",
            "winipam_node_ips{node=\"n1\",state=\"pending\"} 0",
            "winipam_node_prefixes{node=\"n1\"} 0",
            "winipam_node_leaving{node=\"n1\"} 1",
            "winipam_node_kubelet_max_pods{node=\"n1\"} 110",
            "winipam_node_max_pods_mismatch{node=\"n1\"} 1",
            "winipam_pods_waiting_for_ip 4",
            "winipam_pod_ip_assign_seconds_bucket{le=\"0.05\"} 0",
            "winipam_pod_ip_assign_seconds_bucket{le=\"0.25\"} 1",
            "winipam_pod_ip_assign_seconds_bucket{le=\"300\"} 1",
            "winipam_allocation_failures_total{reason=\"subnet_full\"} 1",
            "winipam_config_errors_total 1",
            "winipam_duplicate_ip_annotations 0",
            "winipam_nodes{state=\"managed\"} 0",
            "winipam_nodes{state=\"unsupported\"} 0",
            "winipam_nodes{state=\"blocked\"} 0",
            "winipam_leader 1",
            "winipam_blocked 0",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
        assert!(text.contains(&format!(
            "winipam_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn a_removed_node_leaves_no_series() {
        let m = Metrics::new().unwrap();
        m.set_node_capacity("gone", 9);
        m.set_node_ips("gone", NodeIpCounts::default());
        m.set_node_prefixes("gone", 1);
        m.set_node_leaving("gone", true);
        m.set_node_max_pods("gone", 29, true);
        m.set_node_capacity("stays", 14);
        m.remove_node("gone");
        m.remove_node("never-seen");
        let text = m.encode().unwrap();
        assert!(!text.contains("node=\"gone\""), "{text}");
        assert!(text.contains("winipam_node_capacity_ips{node=\"stays\"} 14"));
    }

    #[test]
    fn other_components_share_the_registry() {
        let m = Metrics::new().unwrap();
        let c = IntCounter::new("winipam_ec2_requests_total_test", "test").unwrap();
        m.registry().register(Box::new(c.clone())).unwrap();
        c.inc();
        assert!(
            m.encode()
                .unwrap()
                .contains("winipam_ec2_requests_total_test 1")
        );
        // Registering a metric twice is refused, not silently duplicated.
        assert!(Metrics::with_registry(m.registry().clone()).is_err());
    }
}
