//! Describes that go first. A new leader rebuilds every node at once, and EC2 answers one
//! DescribeInstances of 1,000 instances in seconds (4.2 s against moto in #18's R3 at 1,000
//! nodes). The nodes whose pods wait for an address are described in a batch of their own, and
//! an ordinary batch waits for those asked before it left: the waiting pods get their addresses
//! after a describe of their own nodes, not of the whole fleet. It costs at most one more
//! DescribeInstances per rebuild.
//!
//! Invariant: an ordinary batch waits only for the lookups that began before it, so lookups that
//! go first cannot starve it. The counts are totals, not per lookup, so a later lookup that ends
//! early can release it before an earlier one ends: it then only goes sooner, which costs time
//! and never correctness.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    began: u64,
    ended: u64,
}

/// How many lookups that go first began and how many ended.
pub(crate) struct Precedence {
    counts: watch::Sender<Counts>,
}

impl Precedence {
    pub(crate) fn new() -> Self {
        Precedence {
            counts: watch::Sender::new(Counts::default()),
        }
    }

    /// Marks a lookup that goes first, until the guard drops (answered, failed or given up).
    pub(crate) fn begin(&self) -> GoesFirst<'_> {
        self.counts.send_modify(|c| c.began += 1);
        GoesFirst { precedence: self }
    }

    /// Returns once as many lookups that go first have ended as had begun when it was called.
    pub(crate) async fn after_earlier(&self) {
        let began = self.counts.borrow().began;
        let mut counts = self.counts.subscribe();
        // The sender is `self`: it outlives this wait, so the channel cannot close under it.
        let _ = counts.wait_for(|c| c.ended >= began).await;
    }
}

/// A lookup that goes first, in flight.
pub(crate) struct GoesFirst<'a> {
    precedence: &'a Precedence,
}

impl Drop for GoesFirst<'_> {
    fn drop(&mut self) {
        self.precedence.counts.send_modify(|c| c.ended += 1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus::Registry;

    use super::*;
    use crate::ec2::{Ec2Client, Ec2ClientConfig, Operation};
    use crate::ipam::InstanceTypeLimits;
    use crate::sim::ec2::{SimEc2, SimEc2Config};

    async fn released_within(p: &Precedence, wait: Duration) -> bool {
        tokio::time::timeout(wait, p.after_earlier()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn an_ordinary_describe_waits_for_the_earlier_ones_only() {
        let p = Arc::new(Precedence::new());
        // Nothing goes first: no wait.
        assert!(released_within(&p, Duration::ZERO).await);

        let first = p.begin();
        assert!(!released_within(&p, Duration::from_secs(60)).await);

        // A lookup that began after the ordinary batch left does not hold it back.
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.after_earlier().await })
        };
        tokio::task::yield_now().await;
        let later = p.begin();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released once the earlier lookup ended")
            .expect("waiter task");

        // A new ordinary batch waits for the one still in flight.
        assert!(!released_within(&p, Duration::from_secs(60)).await);
        drop(later);
        assert!(released_within(&p, Duration::ZERO).await);
    }

    /// Through the client: the nodes with waiting pods are asked last and answered first, in a
    /// request of their own.
    #[tokio::test(start_paused = true)]
    async fn waiting_nodes_are_described_before_the_batch_asked_before_them() {
        let mut config = SimEc2Config::instant(3);
        config.latency.describe_median = Duration::from_millis(120);
        let sim = SimEc2::new(
            config,
            Arc::new(|t: &str| {
                Some(InstanceTypeLimits {
                    instance_type: t.to_string(),
                    ipv4_per_interface: 15,
                    nitro: true,
                })
            }),
        );
        let subnet = sim
            .add_subnet("10.0.0.0/20".parse().expect("cidr"), "us-east-1a")
            .expect("subnet");
        let ids: Vec<String> = (0..6)
            .map(|_| sim.add_instance("m5.xlarge", &subnet).expect("instance"))
            .map(|i| i.instance_id)
            .collect();
        let client = Ec2Client::new(sim.clone(), Ec2ClientConfig::default(), &Registry::new())
            .expect("fresh registry");
        let start = tokio::time::Instant::now();
        let lookup = |id: &String, first: bool| {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move {
                let answer = if first {
                    client.describe_instance_first(&id).await
                } else {
                    client.describe_instance(&id).await
                };
                (answer.map(|i| i.instance_id == id), start.elapsed())
            })
        };
        let ordinary: Vec<_> = ids[..4].iter().map(|id| lookup(id, false)).collect();
        tokio::task::yield_now().await;
        let first: Vec<_> = ids[4..].iter().map(|id| lookup(id, true)).collect();
        let mut first_done = Duration::ZERO;
        for task in first {
            let (answer, at) = task.await.expect("lookup task");
            assert!(answer.expect("no EC2 error"));
            first_done = first_done.max(at);
        }
        for task in ordinary {
            let (answer, at) = task.await.expect("lookup task");
            assert!(answer.expect("no EC2 error"));
            // One describe's latency after the waiting nodes' answer.
            assert!(
                at >= first_done + Duration::from_millis(100),
                "{at:?} {first_done:?}"
            );
        }
        assert_eq!(sim.calls(Operation::DescribeInstances), 2);
    }
}
