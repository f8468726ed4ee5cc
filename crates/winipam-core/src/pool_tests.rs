//! Unit tests of the pool's pod operations and of how it applies EC2 answers.

use std::time::Duration;

use super::config::{KEY_COOLDOWN, KEY_FALLBACK, KEY_PREFIX_DELEGATION};
use super::plan::Action;
use super::pool::{AddressKind, AdoptOutcome, AssignOutcome, Assignment, NodePool};
use super::pool_ec2::{
    BACKOFF_BASE, BACKOFF_MAX, Ec2Addresses, FailureEffect, LostAddress, backoff_delay,
};
use super::test_support::*;
use super::types::{Ec2ErrorClass, EniSnapshot, Timestamp};

fn pool_with_ips(ips: &[u8]) -> NodePool {
    NodePool::new(limits(10, true), config(&[]), &eni_snapshot(ips, &[]))
}

fn assigned(outcome: AssignOutcome) -> Assignment {
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
fn describe_is_the_truth_outside_the_grace() {
    let mut pool = pool_with_ips(&[10, 11, 12]);
    let t0 = secs(0);
    assigned(pool.assign(&uid(1), t0));
    // We just assigned 13 ourselves.
    pool.begin(&Action::AssignIps(1), t0);
    pool.apply_assign_ok(&Ec2Addresses::Ips(vec![ip(13)]), t0);
    // A human removed 10 (held) and 11; a describe shows 20 new; 13 not yet visible.
    let snap = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: vec![ip(12), ip(20)],
        prefixes: vec![],
    };
    let out = pool.apply_describe(&snap, secs(5));
    assert_eq!(
        out.lost,
        vec![LostAddress {
            addr: ip(10),
            uids: vec![uid(1)]
        }]
    );
    assert_eq!((out.added, out.removed), (1, 2));
    assert_eq!(pool.secondary_ips(), vec![ip(12), ip(13), ip(20)]);
    // The pod keeps its (now foreign) address; it is not counted as on the ENI.
    assert_eq!(pool.address_of(&uid(1)), Some(ip(10)));
    assert_eq!(pool.counts(secs(5)).used, 0);
    // After the grace, the describe wins for 13 too.
    let out = pool.apply_describe(&snap, secs(61));
    assert_eq!((out.added, out.removed), (0, 1));
    assert_eq!(pool.secondary_ips(), vec![ip(12), ip(20)]);
}

#[test]
fn stale_describe_does_not_resurrect_released_addresses() {
    let mut pool = pool_with_ips(&[10, 11, 12, 13, 14, 15, 16]);
    let t0 = secs(0);
    let action = pool.plan(t0);
    let Action::ReleaseIps(released) = action.clone() else {
        panic!("{action:?}")
    };
    pool.begin(&action, t0);
    // Releasing addresses are not handed out.
    let got = assigned(pool.assign(&uid(1), t0)).addr;
    assert!(!released.contains(&got));
    pool.apply_release_ok(t0);
    let stale = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: [10, 11, 12, 13, 14, 15, 16].map(ip).to_vec(),
        prefixes: vec![],
    };
    pool.apply_describe(&stale, secs(10));
    for a in &released {
        assert!(!pool.on_eni(*a), "{a} came back");
    }
    // After the grace a describe that still shows them is believed.
    pool.apply_describe(&stale, secs(61));
    assert!(released.iter().all(|a| pool.on_eni(*a)));
}

#[test]
fn failure_reactions() {
    let now = secs(0);
    let mut pool = pool_with_ips(&[]);
    // Throttled: exponential backoff, jittered into [d/2, d]; plan waits, next_wakeup says
    // until when.
    for (n, expected) in [(1, 1000), (2, 2000), (3, 4000)] {
        pool.begin(&Action::AssignIps(3), now);
        let effect = pool.apply_failure(&Ec2ErrorClass::Throttled, now);
        let FailureEffect::Backoff { until } = effect else {
            panic!("failure {n}: {effect:?}");
        };
        let delay = until.since(now);
        let bounds = Duration::from_millis(expected / 2)..=Duration::from_millis(expected);
        assert!(bounds.contains(&delay), "failure {n}: {delay:?}");
        assert_eq!(pool.plan(now), Action::None);
        assert_eq!(pool.next_wakeup(now), Some(until));
        assert_eq!(pool.plan(until), Action::AssignIps(3));
    }
    assert!(backoff_delay(30, 7) <= Duration::from_secs(60));
    assert!(backoff_delay(30, 7) >= Duration::from_secs(30));
    // Success resets the backoff sequence.
    pool.begin(&Action::AssignIps(3), now);
    pool.apply_assign_ok(&Ec2Addresses::Ips(vec![ip(10)]), now);
    pool.begin(&Action::AssignIps(2), now);
    let effect = pool.apply_failure(
        &Ec2ErrorClass::Other {
            code: "X".into(),
            message: "y".into(),
        },
        now,
    );
    let FailureEffect::Backoff { until } = effect else {
        panic!("{effect:?}");
    };
    assert!(until.since(now) <= Duration::from_secs(1), "{effect:?}");

    // EniLimit and UnknownOutcome: describe next, never a blind retry.
    let mut pool = pool_with_ips(&[]);
    pool.begin(&Action::AssignIps(3), now);
    assert_eq!(
        pool.apply_failure(&Ec2ErrorClass::UnknownOutcome, now),
        FailureEffect::Redescribe
    );
    assert_eq!(pool.plan(now), Action::Describe);
    pool.begin(&Action::Describe, now);
    assert_eq!(pool.plan(now), Action::None);
    // A describe that times out is retried after a backoff.
    let effect = pool.apply_failure(&Ec2ErrorClass::UnknownOutcome, now);
    assert!(matches!(effect, FailureEffect::Backoff { .. }));
    assert_eq!(
        pool.plan(now.plus(Duration::from_secs(1))),
        Action::Describe
    );
    pool.begin(&Action::AssignIps(3), now);
    assert_eq!(
        pool.apply_failure(&Ec2ErrorClass::EniLimit, now),
        FailureEffect::Redescribe
    );
    assert!(pool.needs_describe());

    // SubnetFull: no assign for 2 minutes.
    let mut pool = pool_with_ips(&[]);
    pool.begin(&Action::AssignIps(3), now);
    let until = now.plus(Duration::from_secs(120));
    assert_eq!(
        pool.apply_failure(&Ec2ErrorClass::SubnetFull, now),
        FailureEffect::NoAssignUntil { until }
    );
    assert_eq!(pool.plan(now.plus(Duration::from_secs(119))), Action::None);
    assert_eq!(pool.plan(until), Action::AssignIps(3));

    // NotFound: the node is gone, nothing more.
    pool.begin(&Action::AssignIps(3), until);
    assert_eq!(
        pool.apply_failure(&Ec2ErrorClass::NotFound, until),
        FailureEffect::NodeGone
    );
    assert!(pool.node_gone());
    assert_eq!(
        pool.plan(until.plus(Duration::from_secs(3600))),
        Action::None
    );
}

#[test]
fn unknown_outcome_of_a_release_stops_using_those_addresses() {
    let mut pool = pool_with_ips(&[10, 11, 12, 13, 14, 15]);
    let action = pool.plan(secs(0));
    let Action::ReleaseIps(ref released) = action else {
        panic!("{action:?}")
    };
    let released = released.clone();
    pool.begin(&action, secs(0));
    pool.apply_failure(&Ec2ErrorClass::UnknownOutcome, secs(0));
    assert!(released.iter().all(|a| !pool.on_eni(*a)));
    assert_eq!(pool.plan(secs(0)), Action::Describe);
}

#[test]
fn no_cidr_block_holds_prefixes_or_falls_back() {
    let now = secs(0);
    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true")]);
    let (mut pool, _eni) = empty_pool(limits(10, true), cfg);
    pool.set_waiting(2);
    pool.begin(&Action::AssignPrefixes(1), now);
    let until = now.plus(Duration::from_secs(120));
    assert_eq!(
        pool.apply_failure(&Ec2ErrorClass::NoCidrBlock, now),
        FailureEffect::NoPrefixUntil { until }
    );
    assert_eq!(pool.plan(now), Action::None);
    assert_eq!(pool.next_wakeup(now), Some(until));
    assert_eq!(pool.plan(until), Action::AssignPrefixes(1));

    let cfg = config(&[(KEY_PREFIX_DELEGATION, "true"), (KEY_FALLBACK, "true")]);
    let (mut pool, mut eni) = empty_pool(limits(10, true), cfg);
    pool.set_waiting(2);
    pool.begin(&Action::AssignPrefixes(1), now);
    assert_eq!(
        pool.apply_failure(&Ec2ErrorClass::NoCidrBlock, now),
        FailureEffect::FallbackToSecondaryUntil { until }
    );
    assert!(pool.fallback_active(now));
    // waiting 2 + warm-ip 1 = 3 secondary IPs.
    assert_eq!(pool.plan(now), Action::AssignIps(3));
    eni.settle(&mut pool, now);
    let a = assigned(pool.assign(&uid(1), now));
    assert_eq!(a.kind, AddressKind::Secondary);
    // After the hold: prefixes again, and the free secondaries are released.
    pool.set_waiting(0);
    let calls = eni.settle(&mut pool, until);
    assert!(calls.contains(&Action::AssignPrefixes(1)), "{calls:?}");
    assert_eq!(pool.secondary_ips(), vec![a.addr]);
}

#[test]
fn hold_assigns_from_a_sibling_never_shortens() {
    let mut pool = pool_with_ips(&[]);
    pool.hold_assigns_until(secs(100));
    pool.hold_assigns_until(secs(50));
    assert_eq!(pool.plan(secs(99)), Action::None);
    assert_eq!(pool.plan(secs(100)), Action::AssignIps(3));
}

#[test]
fn describe_in_flight_is_cleared_by_its_answer_only() {
    let mut pool = pool_with_ips(&[10]);
    pool.begin(&Action::AssignIps(2), secs(0));
    let snap = EniSnapshot {
        eni_id: "eni-1".into(),
        subnet_id: "subnet-1".into(),
        primary_ip: PRIMARY,
        secondary_ips: vec![ip(10)],
        prefixes: vec![],
    };
    // A periodic describe while an assign is in flight leaves the assign in flight.
    pool.apply_describe(&snap, secs(1));
    assert!(matches!(pool.in_flight(), Some((Action::AssignIps(2), t)) if t == secs(0)));
    let _: Timestamp = secs(0);
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

/// SPEC 7 asks for jittered backoff: nodes throttled by one burst must not all retry at the same
/// instant. Every delay stays within [d/2, d] of the exponential step d; distinct nodes (ENIs)
/// get distinct delays for the same failure count; one node's delay is the same every time
/// (replayable simulations).
#[test]
fn backoff_is_jittered_per_node_within_its_bounds() {
    use super::pool_ec2::jitter_seed;
    for failures in [1u32, 2, 3, 5, 7, 30] {
        let step = BACKOFF_BASE
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        let delays: std::collections::BTreeSet<Duration> = (0..64)
            .map(|i| {
                let seed = jitter_seed(&format!("eni-{i:017x}"));
                let d = backoff_delay(failures, seed);
                assert!(
                    d >= step / 2 && d <= step,
                    "failures {failures}: {d:?} vs {step:?}"
                );
                assert_eq!(d, backoff_delay(failures, seed), "deterministic per node");
                d
            })
            .collect();
        // Without jitter all 64 nodes would wait the same.
        assert!(
            delays.len() > 48,
            "failures {failures}: {} distinct delays",
            delays.len()
        );
        let spread = *delays.last().unwrap() - *delays.first().unwrap();
        assert!(
            spread > step / 4,
            "failures {failures}: spread {spread:?} of {step:?}"
        );
    }
    // The pools of two nodes back off differently from the same failure.
    let pool_on = |eni: &str| {
        let mut snapshot = eni_snapshot(&[], &[]);
        snapshot.eni_id = eni.to_string();
        NodePool::new(limits(10, true), config(&[]), &snapshot)
    };
    let until = |mut pool: NodePool| {
        pool.begin(&Action::AssignIps(3), secs(0));
        match pool.apply_failure(&Ec2ErrorClass::Throttled, secs(0)) {
            FailureEffect::Backoff { until } => until,
            other => panic!("{other:?}"),
        }
    };
    assert_ne!(
        until(pool_on("eni-0a1b2c3d4e5f60718")),
        until(pool_on("eni-0ffff00001111aaaa"))
    );
}
