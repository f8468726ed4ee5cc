//! End to end, the pool targets of the ConfigMap (SPEC 3.1, 5.2), read live: what EC2 holds on
//! each ENI follows the warm and minimum targets, and setting only the minimum keeps the
//! default warm target.

use std::time::Duration;

use crate::support::e2e::{Env, TestNode, eventually};

const SETTLE: Duration = Duration::from_secs(20);

/// The ENI still holds `count` after a resync period or two (the pool does not drift).
async fn stays(env: &Env, node: &TestNode, count: usize) {
    env.wait_eni_len(node, count, SETTLE).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        env.eni_ips(&node.eni_id).await.len(),
        count,
        "{} drifted",
        node.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_and_minimum_targets_shape_each_pool() {
    let env = Env::new("e2e-targets").await;

    // Warm 5 with 2 pods: 2 used + 5 free.
    env.set_config(&[("windows-warm-ip-target", "5")]).await;
    let warm = env.add_node("warm", "m5.large").await;
    let _winipam = env.start("winipam-0").await;
    env.create_pod("warm-0", &warm.name).await;
    env.create_pod("warm-1", &warm.name).await;
    env.wait_annotated(&["warm-0".into(), "warm-1".into()], SETTLE)
        .await;
    stays(&env, &warm, 7).await;

    // Minimum 6 (warm back to its default 3): a node without pods holds 6; the first node,
    // 2 used + 5 free, gives one back (max(2 + 3, 6) = 6).
    env.set_config(&[("windows-minimum-ip-target", "6")]).await;
    let minimum = env.add_node("minimum", "m5.large").await;
    stays(&env, &minimum, 6).await;
    stays(&env, &warm, 6).await;

    // Only the minimum set, below the warm default: the default warm target of 3 still
    // applies (the VPC Resource Controller would drop to warm 0 and leave new pods waiting).
    env.set_config(&[("windows-minimum-ip-target", "1")]).await;
    let only_minimum = env.add_node("only-minimum", "m5.large").await;
    env.create_pod("om-0", &only_minimum.name).await;
    env.create_pod("om-1", &only_minimum.name).await;
    env.wait_annotated(&["om-0".into(), "om-1".into()], SETTLE)
        .await;
    stays(&env, &only_minimum, 5).await;
    // No pods: warm 3 alone.
    env.wait_eni_len(&minimum, 3, SETTLE).await;
    // 2 pods: 2 used + 3 free.
    env.wait_eni_len(&warm, 5, SETTLE).await;
    // The status follows (counts that change without a new address in use are written at
    // most every 10 s).
    eventually("status 2 used, 3 free", Duration::from_secs(15), || async {
        let status = env.pool(&only_minimum.name).await.and_then(|p| p.status);
        let counts = status.map(|s| s.counts).unwrap_or_default();
        if (counts.used, counts.free) == (2, 3) {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
}
