//! A node's metrics: its own series (capacity, counts, prefixes) and its share of the
//! cluster-wide gauges, kept so those stay right as nodes change state or go.

use crate::ipam::{Mode, NodePool, PoolCounts, Timestamp};
use crate::metrics::{Metrics, NodeIpCounts};

/// This node's share of cluster-wide gauges, so they stay right as nodes change or go.
#[derive(Default)]
pub(crate) struct NodeGauges {
    state: Option<&'static str>,
    waiting: i64,
    duplicates: i64,
    has_series: bool,
    /// The per-node series as last set (capacity, counts, prefixes, leaving): unchanged values
    /// are not set again (a label lookup each, on every pass).
    last: Option<(u32, PoolCounts, u32, bool)>,
}

impl NodeGauges {
    /// Sets the node's series from its `pool` (if built) and its share of the cluster-wide
    /// gauges: `state` (`managed`, `blocked`, `unsupported`...), pods `waiting` for an address.
    pub(crate) fn update(
        &mut self,
        metrics: &Metrics,
        node: &str,
        pool: Option<&NodePool>,
        state: &'static str,
        waiting: i64,
        now: Timestamp,
    ) {
        let mut duplicates = 0;
        if let Some(pool) = pool {
            let c = pool.counts(now);
            let capacity = pool.capacity(now);
            let prefixes = if pool.mode() == Mode::Prefix {
                pool.prefixes_iter().count() as u32
            } else {
                0
            };
            let values = (capacity, c, prefixes, pool.leaving());
            if self.last != Some(values) || !self.has_series {
                metrics.set_node_capacity(node, capacity);
                metrics.set_node_ips(
                    node,
                    NodeIpCounts {
                        used: c.used,
                        free: c.free,
                        cooling: c.cooling,
                        pending: c.pending,
                    },
                );
                metrics.set_node_prefixes(node, prefixes);
                metrics.set_node_leaving(node, pool.leaving());
                self.last = Some(values);
            }
            self.has_series = true;
            duplicates = pool.duplicate_count() as i64;
        }
        self.set(metrics, state, waiting, duplicates);
    }

    fn set(&mut self, metrics: &Metrics, state: &'static str, waiting: i64, duplicates: i64) {
        if self.state != Some(state) {
            if let Some(old) = self.state {
                metrics.nodes.with_label_values(&[old]).dec();
            }
            metrics.nodes.with_label_values(&[state]).inc();
            self.state = Some(state);
        }
        metrics.pods_waiting_for_ip.add(waiting - self.waiting);
        self.waiting = waiting;
        metrics
            .duplicate_ip_annotations
            .add(duplicates - self.duplicates);
        self.duplicates = duplicates;
    }

    /// Takes this node's share back out of the cluster-wide gauges (the worker ends).
    pub(crate) fn clear(&mut self, metrics: &Metrics) {
        if let Some(old) = self.state.take() {
            metrics.nodes.with_label_values(&[old]).dec();
        }
        metrics.pods_waiting_for_ip.sub(self.waiting);
        metrics.duplicate_ip_annotations.sub(self.duplicates);
        self.waiting = 0;
        self.duplicates = 0;
        self.last = None;
    }

    /// The node's own series were set (they are removed when the worker ends).
    pub(crate) fn had_series(&self) -> bool {
        self.has_series
    }
}
