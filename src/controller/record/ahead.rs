//! The addresses a status lists ahead: free addresses a worker may hand out next, written
//! before the pods that take them arrive. A pod that takes one needs one apiserver write on
//! its path, its annotation; a new leader treats a listed address as
//! possibly in use (no live pod's annotation names it: it cools down from the leader's start,
//! `NodePool::cool_released_while_away`).
//!
//! How many: from the node's recent pod rate, enough for two coalescing intervals of the
//! pods it took lately (a status write covers that many pods), at least [`AHEAD_MIN`] (an idle
//! node's next pods), at most [`AHEAD_MAX`] (the status stays small). Not from the warm
//! target: in prefix mode that is 1 address, and a busy node takes far more between two
//! writes. The cost is at a leader change: the free addresses listed ahead cool down once, so
//! the set is no larger than the recent rate asks, and the other free addresses stay usable at
//! once.

use std::net::Ipv4Addr;

use super::PoolFacts;
use crate::ipam::capacity::ADDRESSES_PER_PREFIX;
use crate::ipam::{Mode, NodePool, Targets, Timestamp};

/// Free addresses never listed ahead: the node's warm target. A new leader cools the listed
/// ones down from its start; these it hands out at once, with no Assign (and no surplus /28
/// to give back when the cool-down ends, which S4's restart showed on every node).
///
/// Except, in prefix mode, at or below the warm line (no more free addresses than the target):
/// there the next pod takes one of the reserve whatever is listed, and the pool grows with it
/// (the plan keeps `warm` free), so a new leader would Assign too. Then the reserve gives
/// [`AHEAD_MIN`] of its addresses to the list, written as a refill off the pods' path, and the
/// pod at the line and those that come while the Assign is in flight or throttled need no
/// status write of their own. In R2 at 50 pods/s with a warm target of 16, every node reached
/// the line while its first cool-downs still ran: about 200 of the 15,000 pods of its 5
/// minutes waited for a status write on their path; with this, 8-26 (docs/benchmarks.md). A
/// pool of /28s is at its line only on the way down to a new /28 (above, it holds up to 15
/// more), so a leader killed with its nodes above the line (R3, S4) finds the whole reserve
/// unlisted. Not in secondary mode: there the plan keeps exactly `warm` free, every node is at
/// its line for good, and each would hold back listed addresses after a crash (the takeover
/// test's nodes Assigned and wrote at once).
///
/// And, in prefix mode, on a node whose pods are being replaced (an address cools down): the
/// reserve gives the list whatever the list's `size` wants beyond the other free addresses.
/// Its pods come at the rate `size` follows, so the pool reaches its line before the next
/// status anyway; kept back, the last address cost a refill of its own just before the new
/// /28's (two status writes per /28 the pool grows by; in the suite's small R2, 100 status
/// writes for 60 Assigns, 60 with this). The cost is at a leader change: a new leader holds
/// every free address of such a node and Assigns a /28 for its next pods, as it would a few
/// pods later. A node filling up (nothing cooling) keeps its reserve: S4 restarts its leader
/// right after its scale-out, and each node Assigned a /28 it gave back after the hold.
fn reserve(pool: &NodePool, size: usize, now: Timestamp) -> usize {
    let warm = match pool.targets(now) {
        Targets::Ips { warm, .. } => warm as usize,
        Targets::Prefixes { warm_prefixes } => (warm_prefixes * ADDRESSES_PER_PREFIX) as usize,
    };
    if pool.mode() != Mode::Prefix {
        return warm;
    }
    let counts = pool.counts(now);
    let free = counts.free as usize;
    if counts.cooling > 0 {
        warm.min(free.saturating_sub(size.max(AHEAD_MIN)))
    } else if free <= warm {
        free.saturating_sub(AHEAD_MIN)
    } else {
        warm
    }
}

/// Addresses listed ahead on a node that took no pod lately.
pub(crate) const AHEAD_MIN: usize = 2;
/// At most this many addresses are listed ahead.
pub(crate) const AHEAD_MAX: usize = 64;

/// How many addresses to list ahead, from how many the node handed out in the last
/// coalescing interval (the larger of the current and the last whole one).
pub(crate) fn ahead_size(recently_assigned: u32) -> usize {
    (2 * recently_assigned as usize).clamp(AHEAD_MIN, AHEAD_MAX)
}

/// The addresses the next status lists ahead (sorted). Every address the last acknowledged
/// status (`written`) lists ahead stays listed while the pool may hand it out (it is on the
/// ENI and no pod holds it; one a pod holds is listed as used): an annotation may be written
/// under that status until the next one is acknowledged, and a write that failed may still
/// have been applied, so every status written must cover what the acknowledged one allowed.
/// Then candidates are added until `size` of them can be handed out now (or none is left),
/// but never more listed than the ENI has room for (`NodePool::room`): a new leader after a
/// crash holds every listed address no pod names for the orphan hold (60 s), and on a node at
/// its ENI's limit new pods would wait that long (the chart test's leader kill, on nodes filled
/// to capacity, waited 75 s instead of 29 s). With room, it assigns others instead.
pub(crate) fn ahead(
    written: Option<&PoolFacts>,
    pool: &NodePool,
    size: usize,
    now: Timestamp,
) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = written
        .map(|w| w.ahead.as_slice())
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(|a| pool.on_eni(*a) && !pool.is_held(*a))
        .collect();
    // Those still cooling do not count: the pods of the next moments need free ones.
    let ready = out
        .iter()
        .filter(|a| pool.may_hand_out_now(**a, now))
        .count();
    let wanted = (size.saturating_sub(ready)).min(pool.room().saturating_sub(out.len()));
    if wanted > 0 {
        let more = pool.ahead_candidates(wanted, &out, reserve(pool, size, now), now);
        out.extend(more);
        out.sort_unstable();
    }
    // Cooling ones too, as many again, the soonest free first: listed in the status that
    // records their pods' going, they are handed out with no write of their own when their
    // cool-down ends. Listed only once free, each freed address cost a status write (a refill,
    // or an uncovered pod's): R2's 5-minute churn on 100 nodes went from 1.51 to 1.44 writes per
    // replacement with this (docs/benchmarks.md). A new leader after a
    // crash cools them from its own start (the orphan hold) rather than to the end of their
    // cool-down; the room rule above bounds what it holds.
    let cooling_listed = out.len()
        - (out.iter())
            .filter(|a| pool.may_hand_out_now(**a, now))
            .count();
    let wanted = (size.saturating_sub(cooling_listed)).min(pool.room().saturating_sub(out.len()));
    if wanted > 0 {
        let more = pool.cooling_candidates(wanted, &out, now);
        out.extend(more);
        out.sort_unstable();
    }
    out
}

/// The addresses listed ahead are running out: fewer than a quarter of `size` (at least one)
/// can be handed out now, and the pool has another free address to list (beyond the warm
/// reserve, within the ENI's room). A status write is
/// due at once (after the pass's annotations, off the pods' path), not at the coalescing
/// interval, so the next pods find listed addresses.
pub(crate) fn refill_due(
    written: &PoolFacts,
    pool: &NodePool,
    size: usize,
    now: Timestamp,
) -> bool {
    if size == 0 {
        return false;
    }
    let low = (size / 4).max(1);
    let available = (written.ahead.iter())
        .filter(|a| pool.may_hand_out_now(**a, now))
        .count();
    available < low
        && pool.room() > written.ahead.len()
        && (pool
            .ahead_candidates(1, &written.ahead, reserve(pool, size, now), now)
            .first())
        .is_some_and(|a| pool.may_hand_out_now(*a, now))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{facts, prefix_pool, prefix_pool_on};
    use super::*;
    use crate::ipam::{Config, EniSnapshot, PodUid};
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_size_follows_the_recent_rate_within_bounds() {
        assert_eq!(ahead_size(0), AHEAD_MIN);
        assert_eq!(ahead_size(5), 10);
        assert_eq!(ahead_size(1000), AHEAD_MAX);
    }

    #[test]
    fn what_was_listed_ahead_stays_listed_until_a_pod_holds_it() {
        let mut pool = prefix_pool();
        let first = ahead(None, &pool, 3, NOW);
        assert_eq!(first.len(), 3);
        let mut written = facts(&[]);
        written.ahead = first.clone();
        // A smaller size drops nothing the written status allowed.
        assert_eq!(ahead(Some(&written), &pool, 1, NOW), first);
        // A pod takes one: it is listed as used from now on, and another one is added.
        pool.assign_preferring(&PodUid::new("a"), &written.ahead, NOW);
        let next = ahead(Some(&written), &pool, 3, NOW);
        assert_eq!(next.len(), 3);
        assert!(!next.contains(&first[0]), "{next:?}");
        assert!(next.contains(&first[1]) && next.contains(&first[2]));
        // Released to cool-down, it is listed again as a cooling one, not as a free one.
        pool.release(&PodUid::new("a"), NOW);
        assert_eq!(pool.ahead_candidates(16, &[], 1, NOW).len(), 14);
        let all = ahead(None, &pool, 4, NOW);
        assert_eq!(all.len(), 5, "4 free, and the cooling one");
        assert!(all.contains(&first[0]));
        // The warm target (1 in prefix mode) is kept out: a new leader hands it out at once.
        assert_eq!(pool.ahead_candidates(16, &[], 0, NOW).len(), 15);
    }

    #[test]
    fn cooling_addresses_are_listed_ahead_and_taken_without_a_write_once_free() {
        let mut pool = prefix_pool();
        let gone: Vec<Ipv4Addr> = (0..3)
            .map(|i| {
                let uid = PodUid::new(&format!("p{i}"));
                pool.assign(&uid, NOW);
                let a = pool.address_of(&uid).unwrap();
                pool.release(&uid, NOW.plus(Duration::from_secs(i)));
                a
            })
            .collect();
        // The soonest free first, at most `n`, none already listed.
        assert_eq!(pool.cooling_candidates(2, &[], NOW), gone[..2].to_vec());
        assert_eq!(
            pool.cooling_candidates(8, &gone[..1], NOW),
            gone[1..].to_vec()
        );
        // Listed with the free ones: `size` free ones, and as many cooling ones.
        let listed = ahead(None, &pool, 2, NOW);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(gone[..2].iter().all(|a| listed.contains(a)), "{listed:?}");
        // Once their cool-down is over, a pod takes one it finds listed: no status write.
        let later = NOW.plus(Duration::from_secs(60));
        let mut written = facts(&[]);
        written.ahead = listed.clone();
        pool.mark_published();
        let uid = PodUid::new("next");
        pool.assign_preferring(&uid, &written.ahead, later);
        let taken = pool.address_of(&uid).unwrap();
        assert!(listed.contains(&taken));
        assert!(pool.same_holder_since_published(taken));
        // No room on the ENI: nothing is listed, cooling or not.
        let mut full = prefix_pool_on(2);
        let uid = PodUid::new("x");
        full.assign(&uid, NOW);
        full.release(&uid, NOW);
        assert_eq!(full.cooling_candidates(8, &[], NOW).len(), 1);
        assert!(ahead(None, &full, 8, NOW).is_empty());
    }

    #[test]
    fn no_more_is_listed_than_the_eni_has_room_for() {
        // The /28 takes the ENI's one slot: whatever a new leader held back after a crash, it
        // could not replace, so nothing is listed (pods pay a status write each instead).
        let full = prefix_pool_on(2);
        assert_eq!(full.room(), 0);
        assert!(ahead(None, &full, 8, NOW).is_empty());
        let written = facts(&[]);
        assert!(!refill_due(&written, &full, 8, NOW), "nothing to list");
        // What a written status listed stays listed (annotations may go on under it).
        let mut listed = facts(&[]);
        listed.ahead = vec![addr("10.0.0.17"), addr("10.0.0.18")];
        assert_eq!(ahead(Some(&listed), &full, 8, NOW), listed.ahead);
        // Room for one more /28: at most 16 listed, whatever the rate asks.
        let roomy = prefix_pool_on(3);
        assert_eq!(roomy.room(), 16);
        assert_eq!(
            ahead(None, &roomy, 64, NOW).len(),
            15,
            "16 free, one kept back"
        );
        let mut some = facts(&[]);
        some.ahead = ahead(None, &roomy, 16, NOW);
        assert_eq!(some.ahead.len(), 15);
        assert_eq!(ahead(Some(&some), &roomy, 64, NOW), some.ahead);
    }

    #[test]
    fn at_the_warm_line_the_reserve_gives_the_list_two_addresses() {
        // Warm 16 on two /28s: above the line the whole reserve stays unlisted.
        let eni = EniSnapshot {
            eni_id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            primary_ip: addr("10.0.0.4"),
            secondary_ips: vec![],
            prefixes: vec![
                "10.0.0.16/28".parse().unwrap(),
                "10.0.0.32/28".parse().unwrap(),
            ],
        };
        let config = Config {
            prefix_delegation: true,
            warm_ip_target: Some(16),
            ..Config::default()
        };
        let mut pool = NodePool::new(prefix_pool().limits().clone(), config, &eni);
        assert_eq!(pool.counts(NOW).free, 32);
        let mut written = facts(&[]);
        written.ahead = ahead(None, &pool, 64, NOW);
        assert_eq!(written.ahead.len(), 16, "32 free, the warm 16 kept back");
        // Pods take the 16 listed: the pool is at its line, and the next pod takes one of the
        // reserve. Two of it are listed now, as a refill, before that pod comes.
        for i in 0..16 {
            pool.assign_preferring(&PodUid::new(&format!("p{i}")), &written.ahead, NOW);
        }
        assert_eq!(pool.counts(NOW).free, 16);
        assert!(refill_due(&written, &pool, 64, NOW));
        written.ahead = ahead(Some(&written), &pool, 64, NOW);
        let ready = |w: &PoolFacts, pool: &NodePool| {
            (w.ahead.iter())
                .filter(|a| pool.may_hand_out_now(**a, NOW))
                .count()
        };
        assert_eq!(ready(&written, &pool), 2);
        assert!(!refill_due(&written, &pool, 64, NOW), "two is all it gives");
        // Below the line (the pool grows meanwhile) each refill gives two more.
        for i in 16..18 {
            let uid = PodUid::new(&format!("p{i}"));
            pool.assign_preferring(&uid, &written.ahead, NOW);
            assert!(written.lists_ahead(pool.address_of(&uid).unwrap()));
        }
        assert!(refill_due(&written, &pool, 64, NOW));
        written.ahead = ahead(Some(&written), &pool, 64, NOW);
        assert_eq!(ready(&written, &pool), 2);
        // The default warm target, 1: the last free address is listed, not kept back.
        let mut one = prefix_pool();
        for i in 0..15 {
            one.assign(&PodUid::new(&format!("q{i}")), NOW);
        }
        assert_eq!(one.counts(NOW).free, 1);
        assert_eq!(ahead(None, &one, 2, NOW).len(), 1);
        assert_eq!(
            ahead(None, &prefix_pool(), 2, NOW).len(),
            2,
            "above the line: as before"
        );
    }

    #[test]
    fn a_node_whose_pods_are_replaced_lists_its_reserve_with_the_rest() {
        // Warm 1 on one /28, 13 pods: filling up (nothing cooling), the last free address is
        // kept back while the pool is above its line.
        let mut pool = prefix_pool();
        for i in 0..13 {
            pool.assign(&PodUid::new(&format!("p{i}")), NOW);
        }
        assert_eq!(pool.counts(NOW).free, 3);
        assert_eq!(ahead(None, &pool, 64, NOW).len(), 2, "one kept back");
        // One pod replaced: its address cools down, and the reserve goes to the list with the
        // rest, as the list's size covers every free address: the next status is the /28's
        // next one, not a refill for the last address first (the suite's small R2: 100 -> 60
        // status writes, one per Assign).
        pool.release(&PodUid::new("p0"), NOW);
        let mut churning = facts(&[]);
        churning.ahead = ahead(None, &pool, 64, NOW);
        assert_eq!(churning.ahead.len(), 4, "three free and the cooling one");
        assert!(!refill_due(&churning, &pool, 64, NOW));
        // A list smaller than the free addresses keeps the reserve back as before.
        assert_eq!(
            ahead(None, &pool, 2, NOW).len(),
            3,
            "two free and the cooling one"
        );
    }

    #[test]
    fn a_refill_is_due_when_the_listed_addresses_run_low() {
        let mut pool = prefix_pool();
        let mut written = facts(&[]);
        written.ahead = ahead(None, &pool, 4, NOW);
        assert!(!refill_due(&written, &pool, 4, NOW), "all four free");
        for (i, a) in written.ahead.clone().into_iter().enumerate() {
            let uid = PodUid::new(&format!("p{i}"));
            pool.assign_preferring(&uid, &written.ahead, NOW);
            assert_eq!(pool.address_of(&uid), Some(a), "listed ones first");
        }
        assert!(refill_due(&written, &pool, 4, NOW), "none left, 12 free");
        // Only the warm reserve left free outside the list: nothing to refill with.
        let mut most = facts(&[]);
        most.ahead = ahead(None, &pool, 16, NOW);
        assert_eq!(most.ahead.len(), 11);
        assert!(!refill_due(&most, &pool, 64, NOW));
        // Nothing else free: nothing to refill with.
        assert!(!most.ahead.contains(&addr("10.0.0.16")), "in use");
    }
}
