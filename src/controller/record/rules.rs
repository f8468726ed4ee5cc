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
#[path = "rules_tests.rs"]
mod tests;
