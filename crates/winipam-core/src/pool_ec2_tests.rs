//! Unit tests of how the pool applies EC2's answers: describes against the grace, failures and
//! their reactions, fragmented subnets, holds, and the per-node backoff.

use std::time::Duration;

use super::config::{KEY_FALLBACK, KEY_PREFIX_DELEGATION};
use super::plan::Action;
use super::pool::{AddressKind, NodePool};
use super::pool_ec2::{
    BACKOFF_BASE, BACKOFF_MAX, Ec2Addresses, FailureEffect, LostAddress, backoff_delay,
};
use super::pool_tests::{assigned, pool_with_ips};
use super::test_support::*;
use super::types::{Ec2ErrorClass, EniSnapshot, Timestamp};

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
