//! Unit tests of the pool's pod operations: assign, release, cool-downs, adoption, tallies.
//! How it applies EC2's answers is in `pool_ec2_tests`.

use std::time::Duration;

use super::config::{KEY_COOLDOWN, KEY_PREFIX_DELEGATION};
use super::plan::Action;
use super::pool::{AddressKind, AdoptOutcome, AssignOutcome, Assignment, NodePool};
use super::pool_ec2::Ec2Addresses;
use super::test_support::*;
use super::types::EniSnapshot;

pub(super) fn pool_with_ips(ips: &[u8]) -> NodePool {
    NodePool::new(limits(10, true), config(&[]), &eni_snapshot(ips, &[]))
}

pub(super) fn assigned(outcome: AssignOutcome) -> Assignment {
    match outcome {
        AssignOutcome::Assigned(a) => a,
        other => panic!("expected a new assignment, got {other:?}"),
    }
}

#[test]
fn assign_is_idempotent_per_uid_and_never_shares() {
    let mut pool = pool_with_ips(&[10, 11]);
    let now = secs(0);
    let a = assigned(pool.assign(&uid(1), now));
    assert_eq!(
        a,
        Assignment {
            addr: ip(10),
            kind: AddressKind::Secondary
        }
    );
    assert_eq!(pool.assign(&uid(1), now), AssignOutcome::Existing(a));
    assert_eq!(assigned(pool.assign(&uid(2), now)).addr, ip(11));
    assert_eq!(pool.assign(&uid(3), now), AssignOutcome::Exhausted);
}

#[test]
fn the_primary_address_is_never_a_pod_address() {
    let mut pool = pool_with_ips(&[4]);
    assert!(pool.secondary_ips().is_empty());
    assert_eq!(pool.assign(&uid(1), secs(0)), AssignOutcome::Exhausted);
    let new = pool.apply_assign_ok(&Ec2Addresses::Ips(vec![PRIMARY, ip(9)]), secs(0));
    assert_eq!(new, 1);
}

#[test]
fn released_addresses_cool_down() {
    let mut pool = pool_with_ips(&[10]);
    let now = secs(0);
    assigned(pool.assign(&uid(1), now));
    assert_eq!(pool.release(&uid(1), now), Some(ip(10)));
    assert_eq!(
        pool.release(&uid(1), now),
        None,
        "second release is a no-op"
    );
    assert_eq!(
        pool.assign(&uid(2), now.plus(Duration::from_secs(29))),
        AssignOutcome::Exhausted
    );
    let until = now.plus(Duration::from_secs(30));
    assert_eq!(pool.cooldowns(now), vec![(ip(10), until)]);
    assert_eq!(assigned(pool.assign(&uid(2), until)).addr, ip(10));
}

#[test]
fn configured_cooldown_is_used() {
    let mut pool = pool_with_ips(&[10]);
    pool.set_config(config(&[(KEY_COOLDOWN, "5")]));
    assigned(pool.assign(&uid(1), secs(0)));
    pool.release(&uid(1), secs(0));
    assert_eq!(pool.cooldowns(secs(0)), vec![(ip(10), secs(5))]);
}

#[test]
fn addresses_whose_pods_went_while_away_cool_down_from_the_restart() {
    // The previous leader recorded 10, 11 and 12 as used; 20 is not on the ENI.
    let mut pool = pool_with_ips(&[10, 11, 12, 13]);
    let uid_a = uid(1);
    assert_eq!(pool.adopt(&uid_a, ip(11), secs(0)), AdoptOutcome::Ok);
    pool.restore_cooldown(ip(12), secs(500));
    let cooled = pool.cool_released_while_away(&[ip(10), ip(11), ip(12), ip(20)], secs(100));
    // 11 is still held, 20 is not on the ENI; 10 and 12 cool (12 keeps its later record),
    // 10 for the orphan hold (60 s), longer than the default 30 s cool-down.
    assert_eq!(cooled, 2);
    assert_eq!(
        pool.cooldowns(secs(100)),
        vec![(ip(10), secs(160)), (ip(12), secs(500))]
    );
    assert_eq!(pool.used_addresses(), vec![ip(11)]);
    // Only 13 is free meanwhile.
    assert_eq!(assigned(pool.assign(&uid(2), secs(100))).addr, ip(13));
    assert_eq!(pool.assign(&uid(3), secs(159)), AssignOutcome::Exhausted);
    assert_eq!(assigned(pool.assign(&uid(3), secs(160))).addr, ip(10));
}

#[test]
fn restored_cooldowns_are_never_shortened() {
    let mut pool = pool_with_ips(&[10, 11]);
    pool.restore_cooldown(ip(10), secs(100));
    pool.restore_cooldown(ip(10), secs(50));
    assert_eq!(pool.cooldowns(secs(0)), vec![(ip(10), secs(100))]);
    // A release during a restored cool-down keeps the later end.
    assigned(pool.assign(&uid(1), secs(0)));
    assert_eq!(pool.address_of(&uid(1)), Some(ip(11)));
    pool.restore_cooldown(ip(11), secs(200));
    pool.release(&uid(1), secs(0));
    assert_eq!(pool.cooldowns(secs(0))[1], (ip(11), secs(200)));
    pool.advance(secs(150));
    assert_eq!(pool.cooldowns(secs(150)), vec![(ip(11), secs(200))]);
}

#[test]
fn cancel_frees_at_once() {
    let mut pool = pool_with_ips(&[10]);
    assigned(pool.assign(&uid(1), secs(0)));
    assert_eq!(pool.cancel(&uid(1)), Some(ip(10)));
    assert_eq!(assigned(pool.assign(&uid(2), secs(0))).addr, ip(10));
}

#[test]
fn adopt_outcomes() {
    let mut pool = pool_with_ips(&[10, 11, 12]);
    let now = secs(0);
    assert_eq!(pool.adopt(&uid(1), ip(10), now), AdoptOutcome::Ok);
    assert_eq!(
        pool.adopt(&uid(1), ip(10), now),
        AdoptOutcome::Ok,
        "idempotent"
    );
    assert_eq!(pool.adopt(&uid(2), ip(99), now), AdoptOutcome::NotOnEni);
    assert_eq!(pool.adopt(&uid(3), ip(11), now), AdoptOutcome::Ok);
    assert_eq!(
        pool.adopt(&uid(4), ip(11), now),
        AdoptOutcome::Duplicate(vec![uid(3)])
    );
    assert_eq!(pool.duplicates(), vec![ip(11)]);
    // Only 12 is free.
    assert_eq!(assigned(pool.assign(&uid(5), now)).addr, ip(12));
    assert_eq!(pool.assign(&uid(6), now), AssignOutcome::Exhausted);
    // A duplicate stays blocked until both pods are gone.
    pool.release(&uid(3), now);
    assert_eq!(pool.holders_of(ip(11)), vec![uid(4)]);
    pool.release(&uid(4), now);
    assert_eq!(
        pool.assign(&uid(6), now),
        AssignOutcome::Exhausted,
        "cooling"
    );
    assert_eq!(assigned(pool.assign(&uid(6), secs(30))).addr, ip(11));
    // A not-on-ENI address that later appears is still never handed out.
    let snap = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: vec![ip(10), ip(11), ip(12), ip(99)],
        prefixes: vec![],
    };
    pool.apply_describe(&snap, secs(30));
    assert_eq!(pool.assign(&uid(7), secs(30)), AssignOutcome::Exhausted);
    assert_eq!(pool.counts(secs(30)).used, 4);
}

#[test]
fn adopting_a_cooling_address_makes_it_used() {
    let mut pool = pool_with_ips(&[10]);
    pool.restore_cooldown(ip(10), secs(100));
    assert_eq!(pool.adopt(&uid(1), ip(10), secs(0)), AdoptOutcome::Ok);
    let c = pool.counts(secs(0));
    assert_eq!((c.used, c.cooling), (1, 0));
}

#[test]
fn prefix_addresses_are_prefix_kind() {
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    eni.settle(&mut pool, secs(0));
    let a = assigned(pool.assign(&uid(1), secs(0)));
    assert_eq!(a.kind, AddressKind::Prefix);
    assert_eq!(a.addr.to_string(), "10.1.0.0");
    assert_eq!(a.kind.annotation(a.addr, 19), "10.1.0.0/32");
    assert_eq!(
        AddressKind::Secondary.annotation(ip(15), 19),
        "10.0.0.15/19"
    );
}

#[test]
fn assign_results_count_only_new_addresses() {
    let mut pool = pool_with_ips(&[10]);
    pool.begin(&Action::AssignIps(2), secs(0));
    let whole_list = Ec2Addresses::Ips(vec![PRIMARY, ip(10), ip(11), ip(12)]);
    assert_eq!(pool.apply_assign_ok(&whole_list, secs(0)), 2);
    assert_eq!(pool.in_flight(), None);
    assert_eq!(pool.secondary_ips(), vec![ip(10), ip(11), ip(12)]);
    // Not a /28: ignored.
    let bad = Ec2Addresses::Prefixes(vec![net("10.1.0.0/27")]);
    assert_eq!(pool.apply_assign_ok(&bad, secs(0)), 0);
}

#[test]
fn prefix_tallies_walk_agrees_with_each_address() {
    let snap = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: vec![ip(40)],
        prefixes: vec![
            net("10.0.0.16/28"),
            net("10.0.0.48/28"),
            net("10.0.0.80/28"),
        ],
    };
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true")]);
    let mut pool = NodePool::new(limits(10, true), cfg, &snap);
    let now = secs(100);
    // Used in the first and third /28s and the secondary IP between them; cooling (one
    // expired, one also named by a pod's annotation) in the first and second.
    for (n, last) in [(1, 17), (2, 31), (3, 40), (4, 80), (5, 95)] {
        pool.adopt(&uid(n), ip(last), now);
    }
    pool.restore_cooldown(ip(16), secs(130));
    pool.restore_cooldown(ip(17), secs(130));
    pool.restore_cooldown(ip(50), secs(130));
    pool.restore_cooldown(ip(51), secs(90));
    let walked: Vec<_> = pool.prefix_tallies(now).collect();
    let each: Vec<_> = pool
        .prefixes()
        .into_iter()
        .map(|n| (n, pool.tally_prefix(n, now)))
        .collect();
    assert_eq!(walked, each);
    let t: Vec<(u32, u32, u32)> = walked
        .iter()
        .map(|(_, t)| (t.used, t.cooling, t.free))
        .collect();
    assert_eq!(t, vec![(2, 1, 13), (0, 1, 15), (2, 0, 14)]);
    // While the second /28 is being released, its idle addresses are not free.
    pool.begin(&Action::ReleasePrefixes(vec![net("10.0.0.48/28")]), now);
    let walked: Vec<_> = pool.prefix_tallies(now).collect();
    assert_eq!(walked[1].1, pool.tally_prefix(net("10.0.0.48/28"), now));
    assert_eq!((walked[1].1.releasing, walked[1].1.free), (15, 0));
    assert_eq!(walked[2].1.free, 14);
}

#[test]
fn shared_addresses_count_once_in_tallies_and_once_as_duplicates() {
    let snap = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: vec![],
        prefixes: vec![net("10.0.0.16/28")],
    };
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true")]);
    let mut pool = NodePool::new(limits(10, true), cfg, &snap);
    let now = secs(0);
    let used = |pool: &NodePool| pool.prefix_tallies(now).map(|(_, t)| t.used).sum::<u32>();
    for n in 1..=3 {
        pool.adopt(&uid(n), ip(20), now);
    }
    assert_eq!((used(&pool), pool.duplicate_count()), (1, 1));
    pool.release(&uid(1), now);
    pool.release(&uid(2), now);
    assert_eq!((used(&pool), pool.duplicate_count()), (1, 0));
    pool.release(&uid(3), now);
    assert_eq!((used(&pool), pool.duplicate_count()), (0, 0));
    assert!(pool.used_per_block.is_empty());
    // Adopting another address moves the pod's count.
    pool.adopt(&uid(4), ip(21), now);
    pool.adopt(&uid(4), ip(40), now);
    assert_eq!(used(&pool), 0);
    assert_eq!(pool.used_per_block.values().sum::<u32>(), 1);
}

#[test]
fn release_gone_frees_holders_of_pods_that_no_longer_exist_into_cool_down() {
    // Chaos seed 20: a pod deleted while releases were paused kept its address forever.
    let mut pool = pool_with_ips(&[10, 11]);
    let now = secs(0);
    assigned(pool.assign(&uid(1), now));
    assigned(pool.assign(&uid(2), now));
    assert_eq!(pool.release_gone(|u| *u == uid(2), secs(5)), 1);
    assert_eq!(pool.address_of(&uid(1)), None);
    assert_eq!(pool.address_of(&uid(2)), Some(ip(11)));
    // Freed into cool-down, not free at once.
    assert_eq!(
        pool.cooldowns(secs(5)),
        vec![(ip(10), secs(5).plus(Duration::from_secs(30)))]
    );
    assert_eq!(pool.release_gone(|_| true, secs(6)), 0);
}

#[test]
fn an_address_that_changed_hands_is_not_vouched_for_by_the_status_before() {
    // The status written while pod 1 held 10.0.0.10 lists it as used; once pod 1 lets go and
    // pod 2 takes it, that status no longer speaks for pod 2 until one is written again.
    let mut pool = pool_with_ips(&[10]);
    let now = secs(0);
    assigned(pool.assign(&uid(1), now));
    pool.mark_published();
    assert!(pool.same_holder_since_published(ip(10)));
    assert!(!pool.changed_hands_since_published());
    pool.release(&uid(1), now);
    assert!(!pool.same_holder_since_published(ip(10)));
    assert!(
        !pool.changed_hands_since_published(),
        "let go, not yet held again"
    );
    let later = now.plus(Duration::from_secs(60));
    assert_eq!(assigned(pool.assign(&uid(2), later)).addr, ip(10));
    assert!(pool.changed_hands_since_published());
    pool.mark_published();
    assert!(pool.same_holder_since_published(ip(10)));
    assert!(!pool.changed_hands_since_published());
}

#[test]
fn an_orphan_cools_again_when_a_pod_seen_without_an_address_goes() {
    // The previous leader listed 10.0.0.10 as used; at the rebuild no pod was seen holding it
    // (its annotation had not reached our cache), so it cools from the rebuild, for at least
    // the orphan hold. The pod leaves 50 s later: the cool-down starts again from then.
    let mut pool = pool_with_ips(&[10, 11]);
    let rebuild = secs(100);
    assert_eq!(pool.cool_released_while_away(&[ip(10)], rebuild), 1);
    let cooldown = pool.config().cooldown;
    let first = rebuild.plus(cooldown.max(super::pool::ORPHAN_HOLD));
    assert_eq!(pool.cooldowns(rebuild), vec![(ip(10), first)]);
    let left = rebuild.plus(Duration::from_secs(50));
    pool.possible_holder_left(left);
    assert!(
        left.plus(cooldown) > first,
        "the case must extend the cool-down"
    );
    assert_eq!(pool.cooldowns(left), vec![(ip(10), left.plus(cooldown))]);
    // Once its cool-down is over it is an ordinary free address: a later departure changes
    // nothing.
    let over = left.plus(cooldown);
    pool.advance(over);
    pool.possible_holder_left(over);
    assert!(pool.cooldowns(over).is_empty());
    assert_eq!(assigned(pool.assign(&uid(1), over)).addr, ip(10));
}

#[test]
fn an_orphan_is_held_even_with_no_cool_down_configured() {
    // With a 0 s cool-down an orphan would be free at once: a live pod whose annotation our
    // cache has not shown yet would share it with the next pod (chaos seeds 78413, 82447).
    let mut pool = pool_with_ips(&[10]);
    pool.set_config(config(&[(KEY_COOLDOWN, "0")]));
    let rebuild = secs(100);
    pool.cool_released_while_away(&[ip(10)], rebuild);
    assert_eq!(pool.assign(&uid(1), rebuild), AssignOutcome::Exhausted);
    let held = rebuild.plus(super::pool::ORPHAN_HOLD);
    pool.advance(held);
    assert_eq!(assigned(pool.assign(&uid(1), held)).addr, ip(10));
}
