//! The write-ahead rules: which writes wait for a NodeAddressPool status, and when a status
//! must be written at once. The status is what a new leader rebuilds from (see `restore`), so
//! anything a restart must not lose is in a written status before its effect can be seen:
//! - status before annotation: a pod's annotation names an address only once a written status
//!   covers it in a way that survives the change of hands: listed ahead (written before the pod
//!   arrived, see `ahead`) or as used, and not let go by another pod since that status. A new
//!   leader cools such an address down from its own start unless a live pod's annotation names
//!   it (SPEC 5.3, 6.3);
//! - status before release: slots go back to EC2 only once a written status lists them as
//!   releasing (a new leader whose first describe is older than the call would otherwise count
//!   them as free).
//!
//! `written` is what the last successful write said (`None`: nothing written by this worker).

use std::net::Ipv4Addr;

use super::{Published, ahead};
use crate::ipam::{Action, NodePool, Timestamp};

/// Status before annotation: the annotation naming `addr` may be written. The written status
/// must list `addr` ahead or as used, and have been written after `addr` last changed hands:
/// one written while the pod before held it (or before that pod took it from the ahead list)
/// names the same address, and a new leader whose pod cache lags would take it for that pod's,
/// cool it down from that pod's deletion only, and give it away while the new holder runs.
/// A cool-down record alone does not do: a new leader hands the address out once it ends.
pub(crate) fn may_annotate(written: Option<&Published>, pool: &NodePool, addr: Ipv4Addr) -> bool {
    written
        .and_then(|p| p.pool.as_ref())
        .is_some_and(|facts| facts.lists(addr) || facts.lists_ahead(addr))
        && pool.same_holder_since_published(addr)
}

/// A status write failed: the apiserver may still have applied it (a timeout, an error after
/// the commit), so what is surely stored is only what both the acknowledged status
/// (`published`) and the failed one (`attempted`) say. An address the acknowledged one lists
/// ahead and the failed one does not stops counting as listed (`may_annotate`) until a write
/// succeeds. Chaos seed 1911, under a variant of `ahead::reserve` that listed warm addresses
/// in secondary mode (not kept, so the seed holds either way now): an address listed ahead went
/// from the ENI (an Unassign by hand), a status without it was applied and answered with an
/// error, the address came back with the next Assign, and a pod was annotated with it under
/// the acknowledged status that listed it, while the stored one did not. Addresses in use need
/// no such care: a pod that lets one go makes the next holder wait for a write that succeeds
/// (`same_holder_since_published`).
pub(crate) fn after_failed_write(published: &mut Published, attempted: &Published) {
    if let Some(facts) = published.pool.as_mut() {
        let still = attempted.pool.as_ref();
        facts
            .ahead
            .retain(|a| still.is_some_and(|f| f.lists_ahead(*a)));
    }
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
/// (the node's, once built) holds what the written status does not cover: an address in use
/// listed neither as used nor ahead, a running cool-down record whose address is not listed
/// at all, a slot being released, or an address that changed hands since; or the addresses
/// listed ahead run low (`ahead::refill_due`, with `ahead_size`). Annotations and releases wait
/// for that write, and a restart depends on it. A pod's going needs none: its address stays
/// covered as used by the gone pod. Except while `blocked` (another IPAM takes the node's
/// pods): then every running cool-down record is written as one at once, for the hand-back;
/// and except when a new leader would hold back more than the ENI has room to replace
/// (`PoolFacts::holds_back_beyond_room`).
pub(crate) fn at_once(
    written: Option<&Published>,
    pool: Option<&NodePool>,
    now: Timestamp,
    blocked: bool,
    ahead_size: usize,
) -> Option<AtOnce> {
    match (written, pool) {
        (None, _) => Some(AtOnce::First),
        (Some(published), Some(pool)) => match &published.pool {
            None => Some(AtOnce::First),
            Some(facts) => {
                if !facts.covers_all_used(pool)
                    || !facts.covers_all_cooling(pool, now)
                    || !facts.lists_all_releasing(pool, now)
                    || pool.changed_hands_since_published()
                    || (blocked && !facts.lists_all_cooling(pool, now))
                {
                    Some(AtOnce::Uncovered)
                } else if facts.holds_back_beyond_room(pool) {
                    Some(AtOnce::HeldBack)
                } else if !blocked && ahead::refill_due(facts, pool, ahead_size, now) {
                    Some(AtOnce::Refill)
                } else {
                    None
                }
            }
        },
        // No pool yet: what is written back are the previous leader's records, unchanged.
        (Some(_), None) => None,
    }
}

/// A new leader's first status may wait for the coalescing interval, as later ones do, while
/// nothing it did needs it: the node's NodeAddressPool exists and holds the previous leader's
/// records (`object_read`), which a leader after this one rebuilds from just as this one did
/// (the same annotations, the same addresses held back, from its own start); no release waits
/// for it (`may_call`); not `blocked` (a pause hands back on it). A pod's annotation does need
/// it (`may_annotate`), and the pass writes it at once then. On taking the lead with 1,000
/// nodes, the first statuses of nodes with no new pod went first and held the pods of the
/// others back: R3 gave 25.1 s from the kill to the last new pod annotated, 1,000 first writes.
pub(crate) fn first_may_wait(object_read: bool, pool: Option<&NodePool>, blocked: bool) -> bool {
    object_read
        && !blocked
        && pool.is_some_and(|pool| {
            !pool
                .in_flight()
                .is_some_and(|(action, _)| is_release(action))
        })
}

/// Why a status write could not wait for the coalescing interval (`at_once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtOnce {
    /// Nothing written by this worker yet (or before its pool was built).
    First,
    /// The written status does not cover something a restart needs.
    Uncovered,
    /// A new leader would hold back more than the ENI has room for.
    HeldBack,
    /// The addresses listed ahead run low.
    Refill,
}

impl AtOnce {
    /// The `why` label of `winipam_status_writes_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            AtOnce::First => "first",
            AtOnce::Uncovered => "uncovered",
            AtOnce::HeldBack => "held_back",
            AtOnce::Refill => "refill",
        }
    }
}

/// Whether [`at_once`] finds a reason.
#[cfg(test)]
pub(crate) fn write_at_once(
    written: Option<&Published>,
    pool: Option<&NodePool>,
    now: Timestamp,
    blocked: bool,
    ahead_size: usize,
) -> bool {
    at_once(written, pool, now, blocked, ahead_size).is_some()
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

    use super::super::test_support::{facts, prefix_pool, prefix_pool_on, ready};
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
    fn after_a_failed_write_only_what_both_statuses_list_ahead_counts() {
        let mut pool = prefix_pool();
        let mut published = ready(&[], &[], false);
        let listed = [addr("10.0.0.17"), addr("10.0.0.18"), addr("10.0.0.19")];
        published.pool.as_mut().unwrap().ahead = listed.to_vec();
        let mut attempted = published.clone();
        attempted.pool.as_mut().unwrap().ahead = vec![listed[1], listed[2], addr("10.0.0.20")];
        pool.mark_published();
        assert!(may_annotate(Some(&published), &pool, listed[0]));
        after_failed_write(&mut published, &attempted);
        assert!(
            !may_annotate(Some(&published), &pool, listed[0]),
            "the failed write, maybe stored, dropped it"
        );
        assert!(may_annotate(Some(&published), &pool, listed[1]));
        assert!(
            !may_annotate(Some(&published), &pool, addr("10.0.0.20")),
            "maybe not stored"
        );
        // A failed write with no pool facts (the node parked meanwhile) lists nothing ahead.
        let mut parked = init();
        parked.stage = Stage::Parked;
        after_failed_write(&mut published, &parked);
        assert!(!may_annotate(Some(&published), &pool, listed[1]));
    }

    #[test]
    fn a_new_leaders_first_status_waits_only_while_nothing_needs_it() {
        let pool = prefix_pool();
        assert!(
            first_may_wait(true, Some(&pool), false),
            "previous records read"
        );
        assert!(
            !first_may_wait(false, Some(&pool), false),
            "no records to rebuild from"
        );
        assert!(
            !first_may_wait(true, Some(&pool), true),
            "a pause hands back on it"
        );
        assert!(!first_may_wait(true, None, false), "no pool built");
        let mut releasing = prefix_pool();
        let net: Ipv4Net = "10.0.0.16/28".parse().unwrap();
        releasing.begin(&Action::ReleasePrefixes(vec![net]), NOW);
        assert!(
            !first_may_wait(true, Some(&releasing), false),
            "a release waits for it"
        );
        let mut assigning = prefix_pool();
        assigning.begin(&Action::AssignPrefixes(1), NOW);
        assert!(
            first_may_wait(true, Some(&assigning), false),
            "an Assign needs none"
        );
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
            write_at_once(Some(&listed), Some(&pool), NOW, false, 0),
            "changed hands"
        );
        // A status written since vouches for the new holder.
        pool.mark_published();
        assert!(may_annotate(Some(&listed), &pool, addr("10.0.0.17")));
    }

    #[test]
    fn an_annotation_may_go_under_a_status_listing_its_address_ahead() {
        let mut pool = prefix_pool();
        let with_ahead = |ahead: &[&str], cooling: &[(&str, u64)]| {
            let mut p = ready(&[], cooling, false);
            if let Some(f) = &mut p.pool {
                f.ahead = ahead.iter().map(|a| addr(a)).collect();
            }
            p
        };
        let ahead = with_ahead(&["10.0.0.17", "10.0.0.18"], &[]);
        let cooling_only = with_ahead(&[], &[("10.0.0.17", NOW.0 + 30_000)]);
        adopt(&mut pool, "a", "10.0.0.17");
        let cases: [(&str, &Published, &str, bool); 4] = [
            ("listed ahead", &ahead, "10.0.0.17", true),
            ("another address listed ahead", &ahead, "10.0.0.20", false),
            (
                "a cool-down record alone: a new leader hands it out once it ends",
                &cooling_only,
                "10.0.0.17",
                false,
            ),
            ("nothing listed", &with_ahead(&[], &[]), "10.0.0.17", false),
        ];
        for (case, written, a, want) in cases {
            assert_eq!(may_annotate(Some(written), &pool, addr(a)), want, "{case}");
        }
        // Listed ahead, then taken by a pod that let it go before its annotation: the next
        // holder waits for a status written since (a lagging new leader would take the
        // address for the first pod's, and give it away after that pod's cool-down).
        pool.mark_published();
        pool.cancel(&PodUid::new("a"));
        adopt(&mut pool, "b", "10.0.0.17");
        assert!(!may_annotate(Some(&ahead), &pool, addr("10.0.0.17")));
        assert!(write_at_once(Some(&ahead), Some(&pool), NOW, false, 0));
        pool.mark_published();
        assert!(may_annotate(Some(&ahead), &pool, addr("10.0.0.17")));
        assert!(!write_at_once(Some(&ahead), Some(&pool), NOW, false, 0));
    }

    #[test]
    fn a_pods_going_needs_no_write_at_once_unless_blocked() {
        let mut pool = prefix_pool();
        adopt(&mut pool, "a", "10.0.0.17");
        adopt(&mut pool, "b", "10.0.0.18");
        let mut written = ready(&["10.0.0.17"], &[], false);
        if let Some(f) = &mut written.pool {
            f.ahead = vec![addr("10.0.0.18"), addr("10.0.0.19")];
        }
        assert!(!write_at_once(Some(&written), Some(&pool), NOW, false, 0));
        pool.release(&PodUid::new("a"), NOW);
        pool.release(&PodUid::new("b"), NOW);
        // Both cool down; one is covered as used by the gone pod, the other as ahead.
        let cases: [(&str, bool, usize, bool); 4] = [
            ("covered as used or ahead", false, 0, false),
            (
                "blocked: the hand-back reads cool-down records",
                true,
                0,
                true,
            ),
            // One listed address (10.0.0.19) is free: a size of 8 wants two at least.
            ("listed ahead running low", false, 8, true),
            ("one free listed is enough for a size of 4", false, 4, false),
        ];
        for (case, blocked, size, want) in cases {
            assert_eq!(
                write_at_once(Some(&written), Some(&pool), NOW, blocked, size),
                want,
                "{case}"
            );
        }
        // Nothing free outside the list but the warm reserve: no refill however low it runs.
        let mut all = written.clone();
        if let Some(f) = &mut all.pool {
            // The written list stays (10.0.0.18 cools down, covered as listed ahead).
            f.ahead = super::super::ahead::ahead(Some(&*f), &pool, 16, NOW);
            assert_eq!(
                f.ahead.len(),
                15,
                "14 free, one kept back, 10.0.0.18, and 10.0.0.17 (cooling)"
            );
        }
        assert!(!write_at_once(Some(&all), Some(&pool), NOW, false, 64));
    }

    #[test]
    fn a_pods_going_is_written_at_once_when_the_eni_has_no_room_to_replace_it() {
        // The /28 fills the ENI: nothing a new leader holds back can be replaced.
        let mut full = prefix_pool_on(2);
        adopt(&mut full, "a", "10.0.0.17");
        let written = ready(&["10.0.0.17"], &[], false);
        assert!(!write_at_once(Some(&written), Some(&full), NOW, false, 0));
        full.release(&PodUid::new("a"), NOW);
        assert!(
            write_at_once(Some(&written), Some(&full), NOW, false, 0),
            "listed as used by a gone pod, no room"
        );
        // Written again, it is a cool-down record: nothing is held back.
        let mut again = ready(&[], &[("10.0.0.17", NOW.0 + 30_000)], false);
        assert!(!write_at_once(Some(&again), Some(&full), NOW, false, 0));
        // Addresses listed ahead alone never make a write at once (what a written status
        // listed ahead stays listed: writing would change nothing).
        if let Some(f) = &mut again.pool {
            f.ahead = vec![addr("10.0.0.18"), addr("10.0.0.19")];
        }
        assert!(!write_at_once(Some(&again), Some(&full), NOW, false, 0));
        // With room for a /28, the gone pod's address can wait for the coalesced write.
        let mut roomy = prefix_pool_on(3);
        adopt(&mut roomy, "a", "10.0.0.17");
        roomy.release(&PodUid::new("a"), NOW);
        assert!(!write_at_once(Some(&written), Some(&roomy), NOW, false, 0));
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
            assert_eq!(write_at_once(written, pool, NOW, false, 0), want, "{case}");
        }

        // A new cool-down record is missing until listed; an expired one need not be.
        pool.release(&PodUid::new("a"), NOW);
        let records = pool.cooldowns(NOW);
        assert_eq!(records.len(), 1);
        let one = ready(&["10.0.0.20"], &[], false);
        assert!(
            write_at_once(Some(&one), Some(&pool), NOW, false, 0),
            "new cool-down"
        );
        let mut with_record = one.clone();
        if let Some(f) = &mut with_record.pool {
            f.cooldowns = records.clone();
        }
        assert!(!write_at_once(
            Some(&with_record),
            Some(&pool),
            NOW,
            false,
            0
        ));
        let later = Timestamp(records[0].1.0 + 1);
        assert!(
            !write_at_once(Some(&one), Some(&pool), later, false, 0),
            "expired"
        );

        // A slot being released is missing until listed.
        pool.begin(
            &Action::ReleasePrefixes(vec!["10.0.0.32/28".parse().unwrap()]),
            NOW,
        );
        assert!(
            write_at_once(Some(&with_record), Some(&pool), NOW, false, 0),
            "releasing"
        );
        if let Some(f) = &mut with_record.pool {
            f.releasing = vec!["10.0.0.32/28".parse().unwrap()];
        }
        assert!(!write_at_once(
            Some(&with_record),
            Some(&pool),
            NOW,
            false,
            0
        ));
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
