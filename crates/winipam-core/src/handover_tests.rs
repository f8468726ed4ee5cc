//! The hand-over rule (`handover.rs`): after another IPAM lets go, nothing it may still name,
//! release or be assigning is handed out (issue 17).

use super::config::KEY_COOLDOWN;
use super::plan::Action;
use super::pool::{AssignOutcome, NodePool};
use super::test_support::*;
use super::types::Timestamp;

fn taken_over(ips: &[u8]) -> NodePool {
    let mut pool = NodePool::new(limits(10, true), config(&[]), &eni_snapshot(ips, &[]));
    // The other IPAM's pod keeps 10.0.0.10.
    pool.adopt(&uid(1), ip(10), secs(0));
    pool
}

/// Runs the describe the plan asks for at `at`, answered with `ips`.
fn describe(pool: &mut NodePool, at: Timestamp, ips: &[u8]) {
    pool.advance(at);
    assert_eq!(
        pool.plan(at),
        Action::Describe,
        "a describe is asked for at {at:?}"
    );
    pool.begin(&Action::Describe, at);
    pool.apply_describe(&eni_snapshot(ips, &[]), at);
}

#[test]
fn what_the_other_ipam_left_is_not_handed_out_before_the_hold_and_a_describe_after_it() {
    let mut pool = taken_over(&[10, 11, 12]);
    assert_eq!(
        pool.foreign_let_go(secs(0)),
        2,
        "11 and 12: no pod names them"
    );
    assert!(pool.handing_over());
    assert_eq!(pool.assign(&uid(2), secs(0)), AssignOutcome::Exhausted);

    // Its late assign put 13 on the ENI: it may be writing 13 into one of its pods.
    describe(&mut pool, secs(1), &[10, 11, 12, 13]);
    assert_eq!(pool.assign(&uid(2), secs(1)), AssignOutcome::Exhausted);
    // Pods do not wait for the hold: the plan asks EC2 for addresses of our own.
    pool.set_waiting(1);
    assert!(matches!(pool.plan(secs(1)), Action::AssignIps(n) if n > 0));
    pool.set_waiting(0);

    // The hold is over, but the last describe is older than its late release of 11.
    pool.advance(secs(30));
    assert_eq!(pool.assign(&uid(2), secs(30)), AssignOutcome::Exhausted);
    describe(&mut pool, secs(30), &[10, 12, 13]);
    assert!(!pool.handing_over());
    let got = match pool.assign(&uid(2), secs(30)) {
        AssignOutcome::Assigned(a) => a.addr,
        other => panic!("a confirmed address is handed out: {other:?}"),
    };
    assert!([ip(12), ip(13)].contains(&got), "{got} is on the ENI");
}

#[test]
fn a_describe_begun_before_the_hold_ended_does_not_confirm_it() {
    let mut pool = taken_over(&[10, 11]);
    pool.foreign_let_go(secs(0));
    describe(&mut pool, secs(0), &[10, 11]);
    pool.advance(secs(29));
    pool.begin(&Action::Describe, secs(29));
    pool.advance(secs(31));
    pool.apply_describe(&eni_snapshot(&[10, 11], &[]), secs(31));
    assert!(
        pool.handing_over(),
        "begun at 29 s, before the hold ended at 30 s"
    );
    assert_eq!(pool.assign(&uid(2), secs(31)), AssignOutcome::Exhausted);
    describe(&mut pool, secs(31), &[10, 11]);
    assert!(
        matches!(pool.assign(&uid(2), secs(31)), AssignOutcome::Assigned(a) if a.addr == ip(11))
    );
}

#[test]
fn the_hold_is_the_cool_down_when_longer() {
    let mut pool = NodePool::new(
        limits(10, true),
        config(&[(KEY_COOLDOWN, "45")]),
        &eni_snapshot(&[11], &[]),
    );
    pool.foreign_let_go(secs(0));
    describe(&mut pool, secs(0), &[11]);
    pool.advance(secs(40));
    assert_eq!(pool.assign(&uid(2), secs(40)), AssignOutcome::Exhausted);
    describe(&mut pool, secs(45), &[11]);
    assert!(matches!(
        pool.assign(&uid(2), secs(45)),
        AssignOutcome::Assigned(_)
    ));
}
