//! The write-ahead rules, tested as pure functions: a written status and a pool in, whether
//! an annotation, a release or a status write may go out.

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
    // Nothing free outside the list (the node's pods are being replaced: the warm reserve is
    // listed too, `ahead::reserve`): no refill however low it runs.
    let mut all = written.clone();
    if let Some(f) = &mut all.pool {
        // The written list stays (10.0.0.18 cools down, covered as listed ahead).
        f.ahead = super::super::ahead::ahead(Some(&*f), &pool, 16, NOW);
        assert_eq!(
            f.ahead.len(),
            16,
            "the 14 free, and the two cooling (10.0.0.17, 10.0.0.18)"
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
