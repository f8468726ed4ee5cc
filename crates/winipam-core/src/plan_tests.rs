//! Table tests of the plan against SPEC 5.2 / 5.4.

use std::time::Duration;

use super::config::{KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION, KEY_WARM_IP, KEY_WARM_PREFIX};
use super::plan::{Action, IpMaths, free_prefixes_needed, prefixes_needed};
use super::pool::AssignOutcome;
use super::test_support::*;
use super::types::Mode;

#[test]
fn secondary_maths_table() {
    // (used, free, cooling, waiting, warm, minimum) -> (short, over)
    let cases = [
        ((2, 0, 0, 0, 5, 3), (5, 0)),   // warm 5 with 2 pods: 7 in all
        ((0, 0, 0, 0, 3, 6), (6, 0)),   // minimum 6, no pods
        ((0, 3, 0, 40, 3, 3), (40, 0)), // surge: 40 waiting with warm 3 free
        ((5, 3, 4, 0, 3, 3), (0, 0)),   // cooling is not free, but counts in total
        ((0, 0, 6, 0, 3, 3), (3, 0)),   // all cooling: warm still wanted
        ((2, 9, 0, 0, 3, 3), (0, 6)),   // surplus
        ((0, 9, 0, 0, 3, 6), (0, 3)),   // surplus stops at the minimum
        ((0, 9, 0, 8, 3, 3), (2, 0)),   // waiting pods keep free addresses
    ];
    for ((used, free, cooling, waiting, warm, minimum), expected) in cases {
        let m = IpMaths {
            used,
            free,
            cooling,
            waiting,
            warm,
            minimum,
        };
        assert_eq!((m.short(), m.over()), expected, "{m:?}");
    }
}

#[test]
fn prefix_maths_table() {
    assert_eq!(prefixes_needed(0, 0, 0, 1, 3), 1);
    assert_eq!(prefixes_needed(0, 0, 0, 1, 20), 2);
    assert_eq!(prefixes_needed(33, 0, 0, 1, 20), 3);
    assert_eq!(prefixes_needed(15, 0, 0, 1, 3), 1);
    assert_eq!(prefixes_needed(15, 1, 0, 1, 3), 2);
    assert_eq!(prefixes_needed(0, 0, 100, 1, 3), 7);
    assert_eq!(free_prefixes_needed(2, 0, 0), 2);
    assert_eq!(free_prefixes_needed(2, 20, 5), 3);
    assert_eq!(free_prefixes_needed(0, 3, 5), 0);
}

#[test]
fn warm_five_with_two_pods_holds_seven() {
    let (mut pool, mut eni) = empty_pool(limits(30, true), config(&[(KEY_WARM_IP, "5")]));
    let now = secs(0);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (5, 0));
    assert_eq!(bind(&mut pool, 0..2, now), 0);
    assert_eq!(pool.plan(now), Action::AssignIps(2));
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (7, 0));
    let c = pool.counts(now);
    assert_eq!((c.used, c.free, c.cooling, c.pending), (2, 5, 0, 0));
}

#[test]
fn minimum_six_without_pods_holds_six() {
    let (mut pool, mut eni) = empty_pool(limits(30, true), config(&[(KEY_MINIMUM_IP, "6")]));
    assert_eq!(pool.plan(secs(0)), Action::AssignIps(6));
    eni.settle(&mut pool, secs(0));
    assert_eq!(on_eni(&pool), (6, 0));
    assert_eq!(pool.plan(secs(0)), Action::None);
}

#[test]
fn surge_is_one_assign_capped_by_capacity() {
    // m5.4xlarge: 30 IPv4 per ENI -> capacity 29.
    let (mut pool, _eni) = empty_pool(limits(30, true), config(&[]));
    let now = secs(0);
    assert_eq!(bind(&mut pool, 0..40, now), 40);
    assert_eq!(pool.capacity(now), 29);
    assert_eq!(pool.plan(now), Action::AssignIps(29));

    // Same burst on a warmed pool: 3 free taken at once, then one call for the rest.
    let (mut pool, mut eni) = empty_pool(limits(30, true), config(&[]));
    eni.settle(&mut pool, now);
    assert_eq!(bind(&mut pool, 0..40, now), 37);
    assert_eq!(pool.plan(now), Action::AssignIps(26));
    let calls = eni.settle(&mut pool, now);
    assert_eq!(calls, [Action::AssignIps(26)]);
    assert_eq!(bind(&mut pool, 0..40, now), 11);
    assert_eq!(pool.plan(now), Action::None, "full: nothing more to ask");
}

#[test]
fn warm_prefix_two_then_three_after_one_pod() {
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true"), (KEY_WARM_PREFIX, "2")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    let now = secs(0);
    assert_eq!(pool.plan(now), Action::AssignPrefixes(2));
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 2));
    bind(&mut pool, 0..1, now);
    assert_eq!(pool.plan(now), Action::AssignPrefixes(1));
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 3));
    // The pod leaves; once cooled, the /28 it used is whole again and one is released.
    pool.release(&uid(0), now);
    assert_eq!(pool.plan(now), Action::None, "cooling /28 is not released");
    let later = now.plus(Duration::from_secs(30));
    assert!(matches!(pool.plan(later), Action::ReleasePrefixes(ref n) if n.len() == 1));
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (0, 2));
}

#[test]
fn minimum_ip_twenty_in_prefix_mode() {
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true"), (KEY_MINIMUM_IP, "20")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    let now = secs(0);
    assert_eq!(pool.plan(now), Action::AssignPrefixes(2));
    eni.settle(&mut pool, now);
    assert_eq!(bind(&mut pool, 0..33, now), 1);
    eni.settle(&mut pool, now);
    assert_eq!(bind(&mut pool, 0..33, now), 0);
    assert_eq!(on_eni(&pool), (0, 3));
    assert_eq!(pool.counts(now).used, 33);
    for n in 0..33 {
        pool.release(&uid(n), now);
    }
    assert_eq!(pool.plan(now), Action::None, "all cooling");
    let later = now.plus(Duration::from_secs(31));
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (0, 2));
}

#[test]
fn prefix_packing_and_only_whole_free_prefixes_released() {
    let cfg = config(&[
        (KEY_PREFIX_DELEGATION, "true"),
        (KEY_WARM_IP, "1"),
        (KEY_MINIMUM_IP, "1"),
    ]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    let now = secs(0);
    eni.settle(&mut pool, now);
    bind(&mut pool, 0..40, now);
    eni.settle(&mut pool, now);
    assert_eq!(bind(&mut pool, 0..40, now), 0);
    assert_eq!(on_eni(&pool), (0, 3));
    // Keep one pod in each /28: nothing can be released however many addresses are free.
    let keep: Vec<_> = pool
        .prefixes()
        .iter()
        .map(|n| {
            (0..40)
                .find(|&i| n.contains(&pool.address_of(&uid(i)).expect("held")))
                .expect("a pod")
        })
        .collect();
    for n in (0..40).filter(|n| !keep.contains(n)) {
        pool.release(&uid(n), now);
    }
    let later = now.plus(Duration::from_secs(60));
    assert_eq!(pool.plan(later), Action::None);
    // Free two pods: their /28s become idle and both go, the third stays.
    pool.release(&uid(keep[0]), later);
    pool.release(&uid(keep[1]), later);
    let much_later = later.plus(Duration::from_secs(31));
    assert!(matches!(pool.plan(much_later), Action::ReleasePrefixes(ref v) if v.len() == 2));
    eni.settle(&mut pool, much_later);
    assert_eq!(on_eni(&pool), (0, 1));
}

#[test]
fn packing_prefers_the_fullest_prefix() {
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true"), (KEY_MINIMUM_IP, "32")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    let now = secs(0);
    eni.settle(&mut pool, now);
    let [a, b] = pool.prefixes()[..] else {
        panic!("two prefixes")
    };
    // Occupy 3 addresses of b and 1 of a by adopting, then assign: it must land in b.
    let at = |n: ipnet::Ipv4Net, i: u32| std::net::Ipv4Addr::from(u32::from(n.network()) + i);
    pool.adopt(&uid(100), at(a, 0), now);
    for i in 0..3 {
        pool.adopt(&uid(101 + i as usize), at(b, i), now);
    }
    match pool.assign(&uid(1), now) {
        AssignOutcome::Assigned(x) => assert!(b.contains(&x.addr), "{x:?} not in {b}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mode_switch_drains_old_mode() {
    let (mut pool, mut eni) = empty_pool(limits(10, true), config(&[]));
    let now = secs(0);
    eni.settle(&mut pool, now);
    bind(&mut pool, 0..2, now);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (5, 0));
    assert_eq!(pool.capacity(now), 9);

    // Switch to prefix mode: free secondaries go, used ones stay until their pods go.
    pool.set_config(config(&[(KEY_PREFIX_DELEGATION, "true")]));
    assert_eq!(pool.mode(), Mode::Prefix);
    assert_eq!(pool.capacity(now), (9 - 2) * 16);
    let calls = eni.settle(&mut pool, now);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.contains(&Action::AssignPrefixes(1)));
    assert_eq!(on_eni(&pool), (2, 1));
    // New pods get /28 addresses at once.
    match pool.assign(&uid(10), now) {
        AssignOutcome::Assigned(a) => assert_eq!(a.kind, super::pool::AddressKind::Prefix),
        other => panic!("{other:?}"),
    }
    // Old pods leave: after the cool-down their IPs are released and capacity is whole again.
    pool.release(&uid(0), now);
    pool.release(&uid(1), now);
    assert_eq!(
        pool.capacity(now),
        (9 - 2) * 16,
        "cooling still holds slots"
    );
    let later = now.plus(Duration::from_secs(30));
    assert_eq!(pool.capacity(later), 9 * 16);
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (0, 1));

    // And back: idle /28s go, the used one drains.
    pool.set_config(config(&[]));
    assert_eq!(pool.capacity(later), 8);
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (3, 1));
    pool.release(&uid(10), later);
    let end = later.plus(Duration::from_secs(30));
    eni.settle(&mut pool, end);
    assert_eq!(on_eni(&pool), (3, 0));
    assert_eq!(pool.capacity(end), 9);
}

#[test]
fn non_nitro_node_stays_secondary_in_prefix_cluster() {
    let (mut pool, mut eni) = empty_pool(
        limits(10, false),
        config(&[(KEY_PREFIX_DELEGATION, "true")]),
    );
    assert!(pool.mode_downgraded());
    assert_eq!(pool.mode(), Mode::Secondary);
    assert_eq!(pool.capacity(secs(0)), 9);
    eni.settle(&mut pool, secs(0));
    assert_eq!(on_eni(&pool), (3, 0));
}

#[test]
fn cooling_addresses_are_not_free_so_churn_does_not_wait() {
    let (mut pool, mut eni) = empty_pool(limits(30, true), config(&[]));
    let now = secs(0);
    eni.settle(&mut pool, now);
    bind(&mut pool, 0..3, now);
    eni.settle(&mut pool, now);
    for n in 0..3 {
        pool.release(&uid(n), now);
    }
    // 3 cooling + 3 free: warm is met by the free ones, nothing to do.
    assert_eq!(pool.plan(now), Action::None);
    let c = pool.counts(now);
    assert_eq!((c.used, c.free, c.cooling), (0, 3, 3));
    // After the cool-down: 6 free, minimum 3, warm 3 -> release 3.
    let later = now.plus(Duration::from_secs(30));
    assert!(matches!(pool.plan(later), Action::ReleaseIps(ref v) if v.len() == 3));
    assert_eq!(pool.next_wakeup(now), Some(later));
}

#[test]
fn one_call_in_flight_at_most() {
    let (mut pool, _eni) = empty_pool(limits(30, true), config(&[]));
    let now = secs(0);
    let a = pool.plan(now);
    assert_eq!(a, Action::AssignIps(3));
    pool.begin(&a, now);
    assert_eq!(pool.plan(now), Action::None);
    assert_eq!(pool.counts(now).pending, 3);
    bind(&mut pool, 0..10, now);
    assert_eq!(pool.plan(now), Action::None, "still in flight");
}
