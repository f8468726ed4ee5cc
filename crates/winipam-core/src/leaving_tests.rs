//! A node on its way out (issue 16): no warm, no minimum, no warm /28; its pods keep their
//! addresses, cooling ones finish their cool-down, and the targets return once it stays.

use std::time::Duration;

use super::config::{KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION, KEY_WARM_IP, KEY_WARM_PREFIX};
use super::plan::Action;
use super::test_support::*;

#[test]
fn secondary_releases_down_to_its_pods_then_grows_back() {
    let cfg = config(&[(KEY_WARM_IP, "4"), (KEY_MINIMUM_IP, "10")]);
    let (mut pool, mut eni) = empty_pool(limits(30, true), cfg);
    let now = secs(0);
    eni.settle(&mut pool, now);
    bind(&mut pool, 0..3, now);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (10, 0), "minimum 10 with 3 pods and warm 4");
    // One pod leaves just before the node is cordoned: its address cools down first.
    pool.release(&uid(2), now);
    pool.set_leaving(true);
    assert!(pool.leaving());
    assert!(matches!(pool.plan(now), Action::ReleaseIps(ref ips) if ips.len() == 7));
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (3, 0), "2 pods and the cooling address");
    let c = pool.counts(now);
    assert_eq!((c.used, c.free, c.cooling), (2, 0, 1));
    let later = now.plus(Duration::from_secs(31));
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (2, 0), "the cooled address goes too");
    // A pod bound while it leaves (a DaemonSet tolerates the taint) still gets an address,
    // and no warm one with it.
    bind(&mut pool, 0..3, later);
    assert_eq!(pool.plan(later), Action::AssignIps(1));
    eni.settle(&mut pool, later);
    bind(&mut pool, 0..3, later);
    assert_eq!(pool.counts(later).free, 0);
    assert_eq!(on_eni(&pool), (3, 0));
    // Uncordoned: the targets apply again.
    pool.set_leaving(false);
    assert_eq!(pool.plan(later), Action::AssignIps(7));
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (10, 0));
}

#[test]
fn prefix_mode_releases_whole_free_prefixes_only() {
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true"), (KEY_MINIMUM_IP, "40")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    let now = secs(0);
    eni.settle(&mut pool, now);
    bind(&mut pool, 0..5, now);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 3), "minimum 40: three /28s");
    pool.set_leaving(true);
    // The five pods pack into one /28: the two others are idle and go in one call.
    assert!(matches!(pool.plan(now), Action::ReleasePrefixes(ref n) if n.len() == 2));
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 1));
    assert_eq!(pool.counts(now).used, 5);
    // The /28 in use stays while any pod uses it, and goes once the last has cooled down.
    for n in 0..5 {
        pool.release(&uid(n), now);
    }
    assert_eq!(
        pool.plan(now),
        Action::None,
        "cooling addresses are not released"
    );
    let later = now.plus(Duration::from_secs(31));
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (0, 0));
    pool.set_leaving(false);
    eni.settle(&mut pool, later);
    assert_eq!(on_eni(&pool), (0, 3));
}

#[test]
fn warm_prefix_keeps_no_free_prefix_while_leaving() {
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true"), (KEY_WARM_PREFIX, "2")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    let now = secs(0);
    bind(&mut pool, 0..1, now);
    eni.settle(&mut pool, now);
    bind(&mut pool, 0..1, now);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 3), "one /28 in use and two free");
    pool.set_leaving(true);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 1));
    pool.set_leaving(false);
    eni.settle(&mut pool, now);
    assert_eq!(on_eni(&pool), (0, 3));
}

#[test]
fn a_leaving_node_does_not_grow_for_warm_after_its_pods_go() {
    // Warm 4 with no pods on a leaving node: nothing is assigned at all.
    let (mut pool, mut eni) = empty_pool(limits(30, true), config(&[(KEY_WARM_IP, "4")]));
    pool.set_leaving(true);
    let now = secs(0);
    assert_eq!(pool.plan(now), Action::None);
    assert!(eni.settle(&mut pool, now).is_empty());
}
