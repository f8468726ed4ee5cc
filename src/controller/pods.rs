//! The pod side of a node worker (SPEC 6.2): which pods need an address, adopting addresses that
//! annotations already name, handing out addresses and writing them with the UID precondition,
//! and giving addresses back when pods go.

use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;

use super::reasons;
use super::worker::{NodeWorker, Phase, PodEntry};
use crate::ec2::Ec2Backend;
use crate::ipam::{AdoptOutcome, AssignOutcome, PodUid, Timestamp, parse_annotation};
use crate::k8s::{AnnotateOutcome, Cluster, EventSeverity, ObjectRef, PodView};

/// What a pod needs from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: host network, or finished (and terminal pods release), or being deleted unannotated.
    Nothing,
    /// Its annotation names this address: record it as used.
    Holds(Ipv4Addr),
    /// Its annotation is not an address: never touched, reported once.
    BadAnnotation,
    /// An address, then the annotation.
    Address,
}

/// Pure: what `pod` needs, given whether terminal pods give their address back.
pub(crate) fn need(pod: &PodView, release_terminal: bool) -> Need {
    if pod.host_network || (release_terminal && pod.phase.is_terminal()) {
        return Need::Nothing;
    }
    match pod.ip_annotation.as_deref() {
        Some(value) => match parse_annotation(value) {
            Some(addr) => Need::Holds(addr),
            None => Need::BadAnnotation,
        },
        None if pod.deleting || pod.phase.is_terminal() => Need::Nothing,
        None => Need::Address,
    }
}

/// Pure: `need(pod, _) == Need::Address` (whatever `release-terminal-pods` says), without
/// parsing the annotation: asked for every pod on every pass.
pub(crate) fn needs_address(pod: &PodView) -> bool {
    !pod.host_network && pod.ip_annotation.is_none() && !pod.deleting && !pod.phase.is_terminal()
}

/// An annotation to write.
struct Write {
    addr: Ipv4Addr,
    pod: Arc<PodView>,
    value: String,
}

/// First retry of a failed annotation write; doubles per failure in a row.
const ANNOTATE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
const ANNOTATE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    pub(crate) fn pod_applied(&mut self, mut view: Arc<PodView>, now: Timestamp) {
        if let Some(entry) = self.pods.get_mut(&view.uid) {
            // A watch view older than our own write must not make us write again (this copy
            // of the view is then ours alone, no longer the dispatcher's).
            if view.ip_annotation.is_none() && entry.written.is_some() {
                Arc::make_mut(&mut view).ip_annotation = entry.written.clone();
            }
            entry.view = view;
        } else {
            self.pods.insert(
                view.uid.clone(),
                PodEntry {
                    view,
                    seen: now,
                    written: None,
                    pending_reported: false,
                    maybe_written: false,
                    annotation_reported: false,
                    adopted: None,
                },
            );
        }
    }

    pub(crate) fn pod_deleted(&mut self, uid: &PodUid, now: Timestamp) {
        self.pods.remove(uid);
        if let Phase::Ready(ready) = &mut self.phase {
            if ready.pool.address_of(uid).is_none() {
                // Seen without an address, it may still have held one the previous leader
                // gave it (chaos seed 36974).
                ready.pool.possible_holder_left(now);
            } else if !self.blocked {
                ready.pool.release(uid, now);
            }
        }
    }

    /// Records every address that annotations name (restart, new node, pods annotated by an
    /// earlier leader). Called before any address is handed out.
    pub(crate) async fn adopt_annotated(&mut self, now: Timestamp) {
        let Phase::Ready(ready) = &mut self.phase else {
            return;
        };
        let release_terminal = self.config.release_terminal_pods;
        let mut reports: Vec<(ObjectRef, &'static str, String)> = Vec::new();
        // (address, every pod UID naming it), reported below on each of those pods.
        let mut duplicates: Vec<(std::net::Ipv4Addr, Vec<PodUid>)> = Vec::new();
        for entry in self.pods.values_mut() {
            // The common case, on every pass: the annotation we wrote and already recorded
            // (it never changes while the pod lives). Nothing to parse or compare.
            if entry.adopted.is_some()
                && entry.written.is_some()
                && entry.view.ip_annotation == entry.written
                && !entry.view.phase.is_terminal()
            {
                continue;
            }
            let uid = || entry.view.uid.clone();
            match need(&entry.view, release_terminal) {
                Need::Holds(addr) if entry.adopted != Some(addr) => {
                    let uid = uid();
                    entry.adopted = Some(addr);
                    match ready.pool.adopt(&uid, addr, now) {
                        AdoptOutcome::Ok => {}
                        AdoptOutcome::NotOnEni => reports.push((
                            ObjectRef::pod(&entry.view),
                            reasons::IP_NOT_ON_ENI,
                            format!(
                                "annotation names {addr}, which is not on node {}'s ENI {}: the \
                                 pod's network will not work; delete the pod so it gets a new \
                                 address (winipam never hands {addr} out)",
                                entry.view.node_name, ready.instance.primary_eni.eni_id
                            ),
                        )),
                        AdoptOutcome::Duplicate(others) => {
                            let mut involved = vec![uid];
                            involved.extend(others);
                            duplicates.push((addr, involved));
                        }
                    }
                }
                Need::BadAnnotation if !entry.annotation_reported => {
                    entry.annotation_reported = true;
                    reports.push((
                        ObjectRef::pod(&entry.view),
                        reasons::INVALID_IP_ANNOTATION,
                        format!(
                            "annotation vpc.amazonaws.com/PrivateIPv4Address is {:?}, not an IPv4 \
                             CIDR: the Windows CNI cannot wire this pod; delete the pod",
                            entry.view.ip_annotation.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                Need::Nothing
                    if release_terminal
                        && entry.view.phase.is_terminal()
                        && !self.blocked
                        && ready.pool.address_of(&uid()).is_some() =>
                {
                    ready.pool.release(&uid(), now);
                }
                _ => {}
            }
        }
        for (addr, involved) in duplicates {
            reports.extend(self.duplicate_reports(addr, &involved));
        }
        for (object, reason, note) in reports {
            self.ctx
                .event(&object, EventSeverity::Warning, reason, &note)
                .await;
        }
    }

    /// `DuplicateIPAnnotation` on every pod of `involved` (SPEC 6.3: both Events), each naming
    /// the others.
    fn duplicate_reports(
        &self,
        addr: std::net::Ipv4Addr,
        involved: &[PodUid],
    ) -> Vec<(ObjectRef, &'static str, String)> {
        let describe = |uid: &PodUid| match self.pods.get(uid) {
            Some(e) => format!("{}/{} (UID {uid})", e.view.namespace, e.view.name),
            None => format!("UID {uid}"),
        };
        let mut out = Vec::new();
        for uid in involved {
            let Some(entry) = self.pods.get(uid) else {
                continue;
            };
            let peers: Vec<String> = involved
                .iter()
                .filter(|u| *u != uid)
                .map(describe)
                .collect();
            out.push((
                ObjectRef::pod(&entry.view),
                reasons::DUPLICATE_IP_ANNOTATION,
                format!(
                    "address {addr} is also named by pod(s) {}: two pods cannot share an \
                     address; delete all but one of them. winipam does not hand {addr} out \
                     again until they are all gone",
                    peers.join(", ")
                ),
            ));
        }
        out
    }

    /// Hands out addresses to pods that need one and writes them. Returns the number of pods
    /// still waiting (the surge term of the plan).
    pub(crate) async fn assign_and_annotate(&mut self, now: Timestamp) -> u32 {
        let Phase::Ready(ready) = &mut self.phase else {
            return 0;
        };
        let subnet_len = ready.subnet.cidr.prefix_len();
        let mut writes = Vec::new();
        let mut waiting = 0;
        // Oldest first: pods are served in the order they were bound. Only pods that need an
        // address are looked at (usually none or a few of the node's pods).
        let mut order: Vec<(Timestamp, PodUid)> = self
            .pods
            .iter()
            .filter(|(_, e)| needs_address(&e.view))
            .map(|(uid, e)| (e.seen, uid.clone()))
            .collect();
        order.sort();
        for (_, uid) in order {
            let Some(entry) = self.pods.get(&uid) else {
                continue;
            };
            match ready.pool.assign(&uid, now) {
                AssignOutcome::Assigned(a) | AssignOutcome::Existing(a) => {
                    tracing::debug!(pod = %entry.view.name, namespace = %entry.view.namespace,
                        %uid, address = %a.addr, "address chosen; writing the annotation");
                    writes.push(Write {
                        addr: a.addr,
                        pod: Arc::clone(&entry.view),
                        value: a.kind.annotation(a.addr, subnet_len),
                    })
                }
                AssignOutcome::Exhausted => waiting += 1,
            }
        }
        if writes.is_empty() {
            return waiting;
        }
        // An annotation is written only once a status listing its address as used has been
        // written: if this process dies and the pod goes before the next leader starts, the
        // next leader still knows the address was in use and cools it down (SPEC 5.3, 6.3).
        // One status write covers every pod of the pass. If it fails, the pods keep their
        // addresses in the pool and their annotations wait: the next pass (a retry of the
        // status write is scheduled, see `write_status`) writes the status, then them.
        // The status must also have been written after the address last changed hands: one
        // written for the pod before lists the same address, and a new leader whose pod cache
        // lags would take it for that pod's and give it away.
        if writes.iter().any(|w| !self.status_lists_holder(w.addr)) {
            self.write_status(now).await;
        }
        let before = writes.len();
        writes.retain(|w| self.status_lists_holder(w.addr));
        if writes.len() < before {
            tracing::debug!(node = %self.node.name, held = before - writes.len(),
                "annotations wait for a status that lists their addresses");
        }
        if writes.is_empty() {
            return waiting;
        }

        let cluster = self.ctx.cluster.clone();
        let results: Vec<(Write, _)> = futures::stream::iter(writes)
            .map(|w| {
                let cluster = cluster.clone();
                async move {
                    let p = &w.pod;
                    let uid = p.uid.to_string();
                    let outcome = cluster
                        .annotate_pod(&p.namespace, &p.name, &uid, &w.value, p.has_annotations)
                        .await;
                    (w, outcome)
                }
            })
            .buffer_unordered(self.ctx.settings.annotate_concurrency.max(1))
            .collect()
            .await;

        let now = self.ctx.now();
        // A failed write is retried on a pass of its own, 1 s later, doubling up to 30 s.
        if results.iter().any(|(_, outcome)| outcome.is_err()) {
            let delay = ANNOTATE_RETRY.saturating_mul(1 << self.annotate_failures.min(5));
            self.annotate_failures = self.annotate_failures.saturating_add(1);
            self.annotate_retry_at = Some(now.plus(delay.min(ANNOTATE_RETRY_MAX)));
        } else {
            self.annotate_failures = 0;
            self.annotate_retry_at = None;
        }
        let Phase::Ready(ready) = &mut self.phase else {
            return waiting;
        };
        for (w, outcome) in results {
            let uid = &w.pod.uid;
            match outcome {
                Ok(AnnotateOutcome::Written) => {
                    if let Some(entry) = self.pods.get_mut(uid) {
                        let seconds = now.since(entry.seen).as_secs_f64();
                        self.ctx.metrics.pod_ip_assign_seconds.observe(seconds);
                        let value: Box<str> = w.value.as_str().into();
                        entry.adopted = parse_annotation(&value);
                        // Until the watch shows the write, this view is the worker's own.
                        Arc::make_mut(&mut entry.view).ip_annotation = Some(value.clone());
                        entry.written = Some(value);
                    }
                }
                Ok(AnnotateOutcome::AlreadyAnnotated(existing)) => {
                    // Someone (an earlier leader, or our own write whose answer was lost) was
                    // first: the annotation wins, whatever it says.
                    let ours = existing == w.value;
                    if !ours {
                        ready.pool.cancel(uid);
                    }
                    if let Some(entry) = self.pods.get_mut(uid) {
                        entry.adopted = if ours {
                            parse_annotation(&existing)
                        } else {
                            None
                        };
                        Arc::make_mut(&mut entry.view).ip_annotation = Some(existing.into());
                    }
                }
                Ok(AnnotateOutcome::PodGone) => {
                    // This write certainly did not happen, but an earlier one that failed may
                    // have: the pod may have run with the address, so it cools down (SPEC 6.2).
                    // Taking it back at once let the pod re-created under the same name get it
                    // 5 s into a 10 s cool-down.
                    let maybe_written = self.pods.get(uid).is_some_and(|e| e.maybe_written);
                    tracing::info!(pod = %w.pod.name, namespace = %w.pod.namespace, %uid,
                        address = %w.value, maybe_written, "pod gone (or re-created) before its annotation was written; address taken back");
                    if maybe_written {
                        ready.pool.release(uid, now);
                    } else {
                        ready.pool.cancel(uid);
                    }
                }
                Err(err) => {
                    // The write may have happened: the pod keeps the address (the next pass
                    // writes the same one again, or adopts what was written), and if the pod
                    // goes it cools down. Releasing it here let a short cool-down end and the
                    // address leave the ENI while the annotation named it.
                    tracing::warn!(pod = %w.pod.name, namespace = %w.pod.namespace, error = %err,
                        "annotation write failed; the address stays the pod's");
                    if let Some(entry) = self.pods.get_mut(uid) {
                        entry.maybe_written = true;
                    }
                }
            }
        }
        // Adopt what others wrote before the next assignment round.
        self.adopt_annotated(now).await;
        waiting
    }

    /// `IPAllocationPending` for pods waiting longer than the threshold; returns when the next
    /// one is due.
    pub(crate) async fn report_pending(&mut self, now: Timestamp) -> Option<Timestamp> {
        let after = self.ctx.settings.pending_event_after;
        let mut due = Vec::new();
        let mut next: Option<Timestamp> = None;
        for entry in self.pods.values_mut() {
            if entry.pending_reported || !needs_address(&entry.view) {
                continue;
            }
            let at = entry.seen.plus(after);
            if at <= now {
                entry.pending_reported = true;
                due.push(ObjectRef::pod(&entry.view));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if due.is_empty() {
            return next;
        }
        let note = self.pending_note(now);
        for object in due {
            self.ctx
                .event(
                    &object,
                    EventSeverity::Warning,
                    reasons::IP_ALLOCATION_PENDING,
                    &note,
                )
                .await;
        }
        next
    }

    fn pending_note(&self, now: Timestamp) -> String {
        if self.blocked {
            return "waiting for an IPv4 address: winipam is paused because \
                    kube-system/amazon-vpc-cni has enable-windows-ipam: \"true\" (another controller \
                    manages Windows IPs); set it to false or remove it"
                .to_string();
        }
        match &self.phase {
            Phase::Ready(ready) => {
                let c = ready.pool.counts(now);
                let capacity = ready.pool.capacity(now);
                let full = c.used + c.free + c.cooling + c.pending >= capacity;
                let what = match (full, c.cooling > 0) {
                    (true, true) => "the node is at capacity: the pod gets a cooling address \
                                     when its cool-down (ip-cooldown-seconds) ends"
                        .to_string(),
                    (true, false) => "the node is at capacity: more pods are bound to it than \
                                      it has pod IPs; make sure pods request \
                                      vpc.amazonaws.com/PrivateIPv4Address (the webhook adds it) \
                                      so the scheduler respects the capacity"
                        .to_string(),
                    (false, _) => "winipam is growing the pool (see the node's Events and \
                                   NodeAddressPool for EC2 errors)"
                        .to_string(),
                };
                format!(
                    "waiting for an IPv4 address on node {}: {} free, {} being assigned, {} \
                     cooling, {} used of capacity {capacity}; {what}",
                    self.node.name, c.free, c.pending, c.cooling, c.used,
                )
            }
            _ => format!(
                "waiting for an IPv4 address: node {} is not ready for winipam yet (see its Events)",
                self.node.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::PodPhase;

    fn pod(phase: PodPhase, annotation: Option<&str>) -> PodView {
        PodView {
            uid: "u".into(),
            namespace: "ns".into(),
            name: "p".into(),
            node_name: "n".into(),
            phase,
            host_network: false,
            deleting: false,
            ip_annotation: annotation.map(Into::into),
            has_annotations: annotation.is_some(),
        }
    }

    #[test]
    fn needs_address_agrees_with_need() {
        for phase in [
            PodPhase::Pending,
            PodPhase::Running,
            PodPhase::Succeeded,
            PodPhase::Failed,
            PodPhase::Unknown,
        ] {
            for annotation in [None, Some("10.0.0.5/19"), Some("bogus")] {
                for (host_network, deleting, release) in [
                    (false, false, true),
                    (true, false, true),
                    (false, true, true),
                    (false, false, false),
                ] {
                    let mut p = pod(phase, annotation);
                    p.host_network = host_network;
                    p.deleting = deleting;
                    assert_eq!(
                        needs_address(&p),
                        need(&p, release) == Need::Address,
                        "{p:?} release {release}"
                    );
                }
            }
        }
    }

    #[test]
    fn need_follows_spec_6_2() {
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert_eq!(need(&pod(PodPhase::Pending, None), true), Need::Address);
        assert_eq!(
            need(&pod(PodPhase::Running, Some("10.0.0.5/19")), true),
            Need::Holds(ip)
        );
        assert_eq!(
            need(&pod(PodPhase::Running, Some("bogus")), true),
            Need::BadAnnotation
        );
        // Terminal pods give their address back when configured to...
        assert_eq!(
            need(&pod(PodPhase::Succeeded, Some("10.0.0.5/19")), true),
            Need::Nothing
        );
        // ...and keep it otherwise, but never get a new one.
        assert_eq!(
            need(&pod(PodPhase::Failed, Some("10.0.0.5/19")), false),
            Need::Holds(ip)
        );
        assert_eq!(need(&pod(PodPhase::Failed, None), false), Need::Nothing);
        let mut host = pod(PodPhase::Pending, None);
        host.host_network = true;
        assert_eq!(need(&host, true), Need::Nothing);
        let mut deleting = pod(PodPhase::Running, None);
        deleting.deleting = true;
        assert_eq!(need(&deleting, true), Need::Nothing);
        deleting.ip_annotation = Some("10.0.0.5/32".into());
        assert_eq!(need(&deleting, true), Need::Holds(ip));
    }
}
