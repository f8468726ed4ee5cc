//! Unit tests of the slots a pool lists as being given back to EC2 (written to the status before
//! a release goes out) and of how a rebuilt pool takes the previous leader's list back.

use std::time::Duration;

use ipnet::Ipv4Net;

use super::config::{KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION, KEY_WARM_IP};
use super::plan::Action;
use super::pool::NodePool;
use super::pool_ec2::DESCRIBE_GRACE;
use super::test_support::*;
use super::types::Ec2ErrorClass;

fn slot(last: u8) -> Ipv4Net {
    Ipv4Net::from(ip(last))
}

#[test]
fn a_release_is_listed_from_its_start_until_the_describe_grace_ends() {
    let mut pool = NodePool::new(
        limits(10, true),
        config(&[(KEY_WARM_IP, "1"), (KEY_MINIMUM_IP, "0")]),
        &eni_snapshot(&[10, 11, 12], &[]),
    );
    let t0 = secs(100);
    assert!(pool.releasing_slots(t0).is_empty());
    let action = pool.plan(t0);
    let Action::ReleaseIps(ips) = action.clone() else {
        panic!("expected a release, got {action:?}");
    };
    pool.begin(&action, t0);
    let mut listed: Vec<Ipv4Net> = ips.iter().map(|a| Ipv4Net::from(*a)).collect();
    listed.sort();
    assert_eq!(
        pool.releasing_slots(t0),
        listed,
        "listed while the call is out"
    );
    let done = t0.plus(Duration::from_secs(2));
    pool.apply_release_ok(done);
    assert_eq!(
        pool.releasing_slots(done),
        listed,
        "listed while a describe may lag"
    );
    let later = done.plus(DESCRIBE_GRACE);
    assert!(
        pool.releasing_slots(later).is_empty(),
        "dropped after the grace"
    );
}

#[test]
fn a_release_with_an_unknown_outcome_stays_listed_and_a_failed_one_is_not() {
    let mut pool = NodePool::new(
        limits(10, true),
        config(&[(KEY_WARM_IP, "0")]),
        &eni_snapshot(&[10, 11], &[]),
    );
    let t0 = secs(100);
    let action = Action::ReleaseIps(vec![ip(10)]);
    pool.begin(&action, t0);
    pool.apply_failure(&Ec2ErrorClass::UnknownOutcome, t0);
    assert_eq!(pool.releasing_slots(t0), vec![slot(10)]);

    let action = Action::ReleaseIps(vec![ip(11)]);
    pool.begin(&action, t0);
    pool.apply_failure(&Ec2ErrorClass::Throttled, t0);
    assert_eq!(
        pool.releasing_slots(t0),
        vec![slot(10)],
        "a refused call released nothing"
    );
}

#[test]
fn an_abandoned_release_frees_its_slots_and_lists_nothing() {
    let mut pool = NodePool::new(limits(10, true), config(&[]), &eni_snapshot(&[10, 11], &[]));
    let t0 = secs(100);
    pool.begin(&Action::ReleaseIps(vec![ip(10)]), t0);
    pool.abandon_release();
    assert!(pool.in_flight().is_none());
    assert!(pool.releasing_slots(t0).is_empty());
    assert!(pool.secondary_ips().contains(&ip(10)));
    // Only a release is abandoned: an assign in flight stays.
    pool.begin(&Action::AssignIps(1), t0);
    pool.abandon_release();
    assert!(pool.in_flight().is_some());
}

#[test]
fn a_rebuilt_pool_keeps_the_previous_leaders_releases_out_until_a_later_describe() {
    // The rebuild's describe was served before the previous leader's release landed: it
    // still shows 10.0.0.10 and the /28.
    let prefix = "10.1.0.16/28";
    let mut pool = NodePool::new(
        limits(10, true),
        config(&[(KEY_PREFIX_DELEGATION, "true")]),
        &eni_snapshot(&[10], &["10.1.0.0/28", prefix]),
    );
    let t0 = secs(100);
    let left = pool.restore_releasing(&[slot(10), net(prefix), slot(99)], t0);
    assert_eq!(
        left, 2,
        "the IP and the /28 leave; 10.0.0.99 was not in the pool"
    );
    assert!(!pool.secondary_ips().contains(&ip(10)));
    assert_eq!(pool.prefixes(), vec![net("10.1.0.0/28")]);
    // Listed again by the new leader until its own grace ends.
    assert_eq!(pool.releasing_slots(t0).len(), 3);
    // A stale describe within the grace does not bring them back ...
    let stale = eni_snapshot(&[10], &["10.1.0.0/28", prefix]);
    pool.apply_describe(&stale, t0.plus(Duration::from_secs(30)));
    assert!(!pool.secondary_ips().contains(&ip(10)));
    assert_eq!(pool.prefixes().len(), 1);
    // ... one after it does (the release never happened).
    let after = t0.plus(DESCRIBE_GRACE);
    pool.apply_describe(&stale, after);
    assert!(pool.secondary_ips().contains(&ip(10)));
    assert_eq!(pool.prefixes().len(), 2);
    assert!(pool.releasing_slots(after).is_empty());
}

#[test]
fn a_listed_slot_a_pod_holds_stays_in_the_pool() {
    // No release gives back an address in use: a record that says otherwise is not obeyed.
    let mut pool = NodePool::new(limits(10, true), config(&[]), &eni_snapshot(&[10, 11], &[]));
    let t0 = secs(100);
    assert!(matches!(
        pool.adopt(&uid(1), ip(10), t0),
        super::pool::AdoptOutcome::Ok
    ));
    assert_eq!(pool.restore_releasing(&[slot(10), slot(11)], t0), 1);
    assert!(pool.secondary_ips().contains(&ip(10)));
    assert!(!pool.secondary_ips().contains(&ip(11)));
}
