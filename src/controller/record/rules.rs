//! The write-ahead rules: which writes wait for a NodeAddressPool status, and when a status
//! must be written at once. The status is what a new leader rebuilds from (see `restore`), so
//! anything a restart must not lose is in a written status before its effect can be seen:
//! - status before annotation: a pod's annotation names an address only once a written status
//!   lists that address as used, for that pod (a new leader then cools it down if the pod went
//!   while no controller ran, SPEC 5.3, 6.3);
//! - status before release: slots go back to EC2 only once a written status lists them as
//!   releasing (a new leader whose first describe is older than the call would otherwise count
//!   them as free).
//!
//! `written` is what the last successful write said (`None`: nothing written by this worker).

use std::net::Ipv4Addr;

use super::Published;
use crate::ipam::{Action, NodePool, Timestamp};

/// Status before annotation: the annotation naming `addr` may be written. The written status
/// must list `addr` as used, and have been written after `addr` last changed hands: one
/// written for the pod before lists the same address, and a new leader whose pod cache lags
/// would take it for that pod's and give it away.
pub(crate) fn may_annotate(written: Option<&Published>, pool: &NodePool, addr: Ipv4Addr) -> bool {
    written
        .and_then(|p| p.pool.as_ref())
        .is_some_and(|facts| facts.lists(addr))
        && pool.same_holder_since_published(addr)
}

/// Status before release: the EC2 call `action` may go out. A release waits for a written
/// status listing every slot it gives back; any other call goes at once.
pub(crate) fn may_call(written: Option<&Published>, action: &Action) -> bool {
    if !is_release(action) {
        return true;
    }
    written
        .and_then(|p| p.pool.as_ref())
        .is_some_and(|facts| facts.lists_release(action))
}

/// A status write cannot wait for the coalescing interval: nothing was written yet, or `pool`
/// (the node's, once built) holds what the written status does not list: an address in use,
/// a running cool-down record, a slot being released, or an address that changed hands since.
/// Annotations and releases wait for that write, and a restart depends on it.
pub(crate) fn write_at_once(
    written: Option<&Published>,
    pool: Option<&NodePool>,
    now: Timestamp,
) -> bool {
    match (written, pool) {
        (None, _) => true,
        (Some(published), Some(pool)) => {
            !published.pool.as_ref().is_some_and(|facts| {
                facts.lists_all_used(pool)
                    && facts.lists_all_cooling(pool, now)
                    && facts.lists_all_releasing(pool, now)
            }) || pool.changed_hands_since_published()
        }
        // No pool yet: what is written back are the previous leader's records, unchanged.
        (Some(_), None) => false,
    }
}

/// Pausing for a foreign IPAM, the status cannot wait either: from then on the VPC Resource
/// Controller hands out what it finds free on the ENI, and winipam's webhook keeps from it only
/// what a written status lists as cooling or used (`webhook::handback`). So the first write
/// that says `blocked` goes at once, and with it every record the pool holds (issue 17).
pub(crate) fn pausing(written: Option<&Published>, blocked: bool) -> bool {
    blocked && written.is_some_and(|p| !p.blocked)
}

/// `action` gives slots back to EC2.
pub(crate) fn is_release(action: &Action) -> bool {
    matches!(action, Action::ReleaseIps(_) | Action::ReleasePrefixes(_))
}

#[cfg(test)]
mod tests {
    use ipnet::Ipv4Net;

    use super::super::test_support::{facts, prefix_pool, ready};
    use super::super::{Published, Stage};
    use super::*;
    use crate::ipam::{AdoptOutcome, PodUid};

    const NOW: Timestamp = Timestamp(1_000_000);

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn adopt(pool: &mut NodePool, uid: &str, a: &str) {
        assert_eq!(
            pool.adopt(&PodUid::new(uid), addr(a), NOW),
            AdoptOutcome::Ok
        );
    }

    /// A record of a node with no pool (initialising).
    fn init() -> Published {
        Published {
            stage: Stage::Init,
            blocked: false,
            subnet_held: false,
            error_at: None,
            pool: None,
            kept: Some(Default::default()),
        }
    }

    #[test]
    fn an_annotation_waits_for_a_status_listing_its_address_for_its_pod() {
        let mut pool = prefix_pool();
        adopt(&mut pool, "a", "10.0.0.17");
        let listed = ready(&["10.0.0.17"], &[], false);
        let among = ready(&["10.0.0.16", "10.0.0.17", "10.0.0.30"], &[], false);
        let init = init();
        let cases: [(&str, Option<&Published>, &str, bool); 5] = [
            ("nothing written", None, "10.0.0.17", false),
            (
                "written before the pool was built",
                Some(&init),
                "10.0.0.17",
                false,
            ),
            ("listed", Some(&listed), "10.0.0.17", true),
            ("not listed", Some(&listed), "10.0.0.18", false),
            ("listed among others", Some(&among), "10.0.0.17", true),
        ];
        for (case, written, a, want) in cases {
            assert_eq!(may_annotate(written, &pool, addr(a)), want, "{case}");
        }
        // Listed, but for the pod before: it changed hands since that status.
        pool.mark_published();
        pool.cancel(&PodUid::new("a"));
        adopt(&mut pool, "b", "10.0.0.17");
        assert!(!may_annotate(Some(&listed), &pool, addr("10.0.0.17")));
        assert!(
            write_at_once(Some(&listed), Some(&pool), NOW),
            "changed hands"
        );
        // A status written since vouches for the new holder.
        pool.mark_published();
        assert!(may_annotate(Some(&listed), &pool, addr("10.0.0.17")));
    }

    #[test]
    fn a_release_waits_for_a_status_listing_its_slots() {
        let ip = |s: &str| Ipv4Net::from(addr(s));
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let mut written = ready(&[], &[], false);
        if let Some(f) = &mut written.pool {
            // Sorted, as the pool gives them.
            f.releasing = vec![ip("10.0.0.5"), ip("10.0.0.9"), net("10.0.0.32/28")];
        }
        let release_ips = |ips: &[&str]| Action::ReleaseIps(ips.iter().map(|s| addr(s)).collect());
        let release_nets =
            |nets: &[&str]| Action::ReleasePrefixes(nets.iter().map(|s| net(s)).collect());
        let init = init();
        let cases: [(&str, Option<&Published>, Action, bool); 9] = [
            (
                "all IPs listed",
                Some(&written),
                release_ips(&["10.0.0.5", "10.0.0.9"]),
                true,
            ),
            (
                "one IP missing",
                Some(&written),
                release_ips(&["10.0.0.5", "10.0.0.6"]),
                false,
            ),
            (
                "prefix listed",
                Some(&written),
                release_nets(&["10.0.0.32/28"]),
                true,
            ),
            (
                "prefix missing",
                Some(&written),
                release_nets(&["10.0.0.48/28"]),
                false,
            ),
            ("nothing written", None, release_ips(&["10.0.0.5"]), false),
            (
                "no pool in the record",
                Some(&init),
                release_ips(&["10.0.0.5"]),
                false,
            ),
            ("an assign never waits", None, Action::AssignIps(3), true),
            (
                "a prefix assign never waits",
                None,
                Action::AssignPrefixes(1),
                true,
            ),
            ("a describe never waits", None, Action::Describe, true),
        ];
        for (case, written, action, want) in cases {
            assert_eq!(may_call(written, &action), want, "{case}");
        }
    }

    #[test]
    fn a_status_is_written_at_once_when_it_misses_what_a_restart_needs() {
        let mut pool = prefix_pool();
        adopt(&mut pool, "a", "10.0.0.17");
        adopt(&mut pool, "b", "10.0.0.20");
        let both = ready(&["10.0.0.17", "10.0.0.20"], &[], false);
        let one_missing = ready(&["10.0.0.17"], &[], false);
        let init = init();
        let cases: [(&str, Option<&Published>, Option<&NodePool>, bool); 5] = [
            ("nothing written yet", None, None, true),
            ("nothing written yet, pool built", None, Some(&pool), true),
            (
                "no pool: the kept records are written back as they are",
                Some(&init),
                None,
                false,
            ),
            ("every address listed", Some(&both), Some(&pool), false),
            (
                "an address in use missing",
                Some(&one_missing),
                Some(&pool),
                true,
            ),
        ];
        for (case, written, pool, want) in cases {
            assert_eq!(write_at_once(written, pool, NOW), want, "{case}");
        }

        // A new cool-down record is missing until listed; an expired one need not be.
        pool.release(&PodUid::new("a"), NOW);
        let records = pool.cooldowns(NOW);
        assert_eq!(records.len(), 1);
        let one = ready(&["10.0.0.20"], &[], false);
        assert!(write_at_once(Some(&one), Some(&pool), NOW), "new cool-down");
        let mut with_record = one.clone();
        if let Some(f) = &mut with_record.pool {
            f.cooldowns = records.clone();
        }
        assert!(!write_at_once(Some(&with_record), Some(&pool), NOW));
        let later = Timestamp(records[0].1.0 + 1);
        assert!(!write_at_once(Some(&one), Some(&pool), later), "expired");

        // A slot being released is missing until listed.
        pool.begin(
            &Action::ReleasePrefixes(vec!["10.0.0.32/28".parse().unwrap()]),
            NOW,
        );
        assert!(
            write_at_once(Some(&with_record), Some(&pool), NOW),
            "releasing"
        );
        if let Some(f) = &mut with_record.pool {
            f.releasing = vec!["10.0.0.32/28".parse().unwrap()];
        }
        assert!(!write_at_once(Some(&with_record), Some(&pool), NOW));
    }

    #[test]
    fn the_first_status_of_a_pause_is_written_at_once() {
        let running = ready(&["10.0.0.17"], &[("10.0.0.18", NOW.0 + 30_000)], false);
        let paused = ready(&["10.0.0.17"], &[("10.0.0.18", NOW.0 + 30_000)], true);
        // (case, written, blocked now, at once)
        let cases: [(&str, Option<&Published>, bool, bool); 5] = [
            ("pausing", Some(&running), true, true),
            ("running", Some(&running), false, false),
            ("paused and written so", Some(&paused), true, false),
            ("resuming (coalesced)", Some(&paused), false, false),
            // Nothing written: write_at_once already says so.
            ("nothing written", None, true, false),
        ];
        for (case, written, blocked, want) in cases {
            assert_eq!(pausing(written, blocked), want, "{case}");
        }
    }

    #[test]
    fn lists_all_used_is_a_subset_test() {
        let mut pool = prefix_pool();
        let written = facts(&["10.0.0.16", "10.0.0.17", "10.0.0.20"]);
        assert!(written.lists_all_used(&pool), "nothing used");
        adopt(&mut pool, "a", "10.0.0.17");
        adopt(&mut pool, "b", "10.0.0.20");
        assert!(written.lists_all_used(&pool), "a subset");
        assert!(!facts(&[]).lists_all_used(&pool));
        assert!(
            !facts(&["10.0.0.17"]).lists_all_used(&pool),
            "the last one missing"
        );
        assert!(
            !facts(&["10.0.0.20"]).lists_all_used(&pool),
            "the first one missing"
        );
        adopt(&mut pool, "c", "10.0.0.18");
        assert!(!written.lists_all_used(&pool), "10.0.0.18 is not listed");
        assert!(written.lists(addr("10.0.0.16")));
        assert!(!written.lists(addr("10.0.0.18")));

        // Cool-down records: a new one is missing until listed; an expired one need not be.
        let mut written = written;
        assert!(written.lists_all_cooling(&pool, NOW));
        pool.release(&PodUid::new("a"), NOW);
        let records = pool.cooldowns(NOW);
        assert_eq!(records.len(), 1);
        assert!(!written.lists_all_cooling(&pool, NOW));
        written.cooldowns = records.clone();
        assert!(written.lists_all_cooling(&pool, NOW));
        let later = Timestamp(records[0].1.0 + 1);
        assert!(facts(&[]).lists_all_cooling(&pool, later));
    }
}
