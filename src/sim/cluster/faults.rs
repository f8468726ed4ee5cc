//! Apiserver faults of the simulated cluster: planned faults on the next writes of a kind,
//! random write faults drawn from the seed, and watch outages ending in a relist.
//!
//! Every error is built as the apiserver's `Status` and converted the way the real adapter
//! converts it (`ClusterError::from(kube::Error::Api(..))`), so the controller meets exactly the
//! values it would meet against a real apiserver for the same HTTP code.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::watch::Watchers;
use super::{Inner, SimCluster, State};
use crate::k8s::ClusterError;
use crate::sim::rng::SplitMix64;

/// Kinds of write a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Annotate,
    NodeCapacity,
    PoolCreate,
    PoolStatus,
    Event,
}

impl WriteKind {
    /// The resource as the apiserver names it in its messages.
    fn resource(self) -> &'static str {
        match self {
            WriteKind::Annotate => "pods",
            WriteKind::NodeCapacity => "nodes",
            WriteKind::PoolCreate | WriteKind::PoolStatus => "nodeaddresspools.winipam.dev",
            WriteKind::Event => "events.events.k8s.io",
        }
    }
}

/// What an injected fault does to one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFault {
    /// Refused before anything is applied (a 409 or a 500).
    Refuse(ClusterError),
    /// Applied, then the answer is lost: the caller sees the error.
    ApplyThenFail(ClusterError),
}

/// Probabilities, per write of any kind, of each random fault (their sum at most 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApiFaults {
    /// Refused with 409 Conflict (a concurrent writer changed the object).
    pub conflict_rate: f64,
    /// Refused with 500 InternalError.
    pub server_error_rate: f64,
    /// Applied, then answered with 504 Timeout (the apiserver's "may still be processing").
    pub apply_then_fail_rate: f64,
}

impl ApiFaults {
    fn total(&self) -> f64 {
        self.conflict_rate + self.server_error_rate + self.apply_then_fail_rate
    }
}

/// The random faults in force and their own stream of the seed.
pub(super) struct RandomFaults {
    faults: ApiFaults,
    rng: SplitMix64,
}

/// Mixed into the seed for the fault stream: faults never shift the latency draws, so a run with
/// faults differs from one without only by the faults.
const FAULT_STREAM: u64 = 0xFA17_5EED_0A91_5E7E;

pub(super) struct PlannedFault {
    kind: WriteKind,
    fault: WriteFault,
    remaining: u32,
}

/// Watch subscribers cut off until `until`.
pub(super) struct Outage {
    until: Instant,
    subscribers: Watchers,
}

/// The apiserver's answer with this code, reason and message, as the real adapter converts it.
fn api_error(code: u16, reason: &str, message: String) -> ClusterError {
    let status = kube::core::Status::failure(&message, reason).with_code(code);
    ClusterError::from(kube::Error::Api(status.boxed()))
}

/// 409 for a write on `kind` `name`.
pub fn conflict(kind: WriteKind, name: &str) -> ClusterError {
    api_error(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.resource()
        ),
    )
}

/// 500 for a write on `kind` `name`.
pub fn server_error(kind: WriteKind, name: &str) -> ClusterError {
    api_error(
        500,
        "InternalError",
        format!(
            "Internal error occurred: {} \"{name}\": etcdserver: leader changed",
            kind.resource()
        ),
    )
}

/// 504 after the write was applied: the apiserver's request timeout.
pub fn lost_answer_error() -> ClusterError {
    api_error(
        504,
        "Timeout",
        "Timeout: request did not complete within requested timeout - context deadline exceeded"
            .to_string(),
    )
}

impl State {
    /// The fault for this write, if any: a planned one first, else a random draw (made only
    /// while random faults are configured, so a run without them draws nothing).
    pub(super) fn write_fault(&mut self, kind: WriteKind, name: &str) -> Option<WriteFault> {
        if let Some(planned) = take_planned(&mut self.faults, kind) {
            return Some(planned);
        }
        let random = self.random.as_mut()?;
        let total = random.faults.total();
        if total <= 0.0 {
            return None;
        }
        let x = random.rng.next_f64();
        let f = random.faults;
        if x < f.conflict_rate {
            Some(WriteFault::Refuse(conflict(kind, name)))
        } else if x < f.conflict_rate + f.server_error_rate {
            Some(WriteFault::Refuse(server_error(kind, name)))
        } else if x < total {
            Some(WriteFault::ApplyThenFail(lost_answer_error()))
        } else {
            None
        }
    }
}

/// The next planned fault for a write of `kind`, if any.
fn take_planned(faults: &mut VecDeque<PlannedFault>, kind: WriteKind) -> Option<WriteFault> {
    let i = faults.iter().position(|f| f.kind == kind)?;
    let planned = &mut faults[i];
    planned.remaining = planned.remaining.saturating_sub(1);
    let fault = planned.fault.clone();
    if planned.remaining == 0 {
        faults.remove(i);
    }
    Some(fault)
}

/// A refusing fault is returned at once; an apply-then-fail one after the change.
pub(super) fn refused(state: &mut State, fault: &Option<WriteFault>) -> Option<ClusterError> {
    match fault {
        Some(WriteFault::Refuse(e)) => {
            state.store.counts.faulted += 1;
            Some(e.clone())
        }
        _ => None,
    }
}

pub(super) fn lost_answer(
    state: &mut State,
    fault: Option<WriteFault>,
) -> Result<(), ClusterError> {
    match fault {
        Some(WriteFault::ApplyThenFail(e)) => {
            state.store.counts.faulted += 1;
            Err(e)
        }
        _ => Ok(()),
    }
}

impl SimCluster {
    /// The next `times` writes of `kind` get `fault` (before any random fault).
    pub fn inject(&self, kind: WriteKind, fault: WriteFault, times: u32) {
        self.lock().faults.push_back(PlannedFault {
            kind,
            fault,
            remaining: times,
        });
    }

    /// Per write (every [`WriteKind`]), drawn from the cluster's seed: refuse with a 409
    /// Conflict, refuse with a 500, or apply then lose the answer (504 Timeout). Replaces the
    /// rates in force; the draws continue the same stream. All zero: no fault, no draw.
    pub fn set_random_write_faults(&self, faults: ApiFaults) {
        let seed = self.inner.config.seed;
        let mut st = self.lock();
        match &mut st.random {
            Some(r) => r.faults = faults,
            None => {
                st.random = Some(RandomFaults {
                    faults,
                    rng: SplitMix64::new(seed ^ FAULT_STREAM),
                });
            }
        }
    }

    /// Every current watch subscriber (nodes, pods, ConfigMaps, the foreign-IPAM ConfigMap)
    /// misses all events for `outage` of (tokio) time, then gets the complete current set: what
    /// kube's watcher does when its stream is cut and it relists after 410 Gone. Subscribers
    /// created during the outage are not affected. A cut during an outage extends it for those
    /// already cut. Must be called within a tokio runtime (a timer ends the outage).
    pub fn cut_watches(&self, outage: Duration) {
        let until = Instant::now() + outage;
        {
            let mut st = self.lock();
            let State {
                watchers, outage, ..
            } = &mut *st;
            let cut = outage.get_or_insert_with(|| Outage {
                until,
                subscribers: Watchers::default(),
            });
            cut.until = cut.until.max(until);
            watchers.move_subscribers_into(&mut cut.subscribers);
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(inner) = weak.upgrade() {
                SimCluster { inner }.end_outage();
            }
        });
    }

    /// Reconnects the cut subscribers if their outage is over (a later cut may have extended
    /// it: that cut's timer ends it then).
    fn end_outage(&self) {
        let mut st = self.lock();
        let State {
            store,
            watchers,
            outage,
            ..
        } = &mut *st;
        if outage.as_ref().is_none_or(|o| o.until > Instant::now()) {
            return;
        }
        if let Some(mut cut) = outage.take() {
            watchers.pod_events += cut.subscribers.relist(store);
            cut.subscribers.move_subscribers_into(watchers);
        }
    }

    /// A 410 Gone on every watch now: every connected subscriber gets the complete current set
    /// (subscribers cut off by [`cut_watches`](Self::cut_watches) get it when they reconnect).
    pub fn relist_all(&self) {
        let mut st = self.lock();
        let State {
            store, watchers, ..
        } = &mut *st;
        let delivered = watchers.relist(store);
        watchers.pod_events += delivered;
    }
}
