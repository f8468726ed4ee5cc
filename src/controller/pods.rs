//! The pod side of a node worker (SPEC 6.2): adopting addresses that annotations already name,
//! handing out addresses and writing them with the UID precondition, and giving addresses back
//! when pods go. Which pods need an address is decided in `need`.

use std::sync::Arc;

use futures::StreamExt;

use super::need::{Need, need, needs_address};
use super::reasons;
use super::state::{AnnotationWrite, NodeWorker, Phase, PodEntry};
use crate::ec2::Ec2Backend;
use crate::ipam::{AdoptOutcome, AssignOutcome, PodUid, Timestamp, parse_annotation};
use crate::k8s::{AnnotateOutcome, Cluster, EventSeverity, ObjectRef, PodView};

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
                    let outcome = ready.pool.adopt(&uid, addr, now);
                    if self.blocked && outcome != AdoptOutcome::Ok {
                        // While another IPAM owns the node, winipam's view of the ENI and of who
                        // holds what stands still (nothing is described or released), so an
                        // address it assigned since, or one winipam still records for a pod that
                        // went, is no fault to report: those Events told operators to delete
                        // healthy pods the VPC Resource Controller had served (issue 17). The
                        // pod is held as adopted and looked at again on every pass (adopting
                        // again changes nothing), so once winipam resumes what is still wrong
                        // is reported (chaos seeds 132, 349).
                        entry.adopted = None;
                        continue;
                    }
                    match outcome {
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

    /// Hands out addresses to pods that need one, oldest first, those a written status lists
    /// ahead first (their annotations need no status write). Returns the annotations to
    /// write (once a status covers them, see `pass`) and the number of pods still waiting (the
    /// surge term of the plan).
    pub(crate) fn assign(&mut self, now: Timestamp) -> (Vec<AnnotationWrite>, u32) {
        let Phase::Ready(ready) = &mut self.phase else {
            return (Vec::new(), 0);
        };
        let subnet_len = ready.subnet.cidr.prefix_len();
        let mut writes = Vec::new();
        let mut waiting = 0;
        let mut assigned = 0;
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
            let ahead = (self.status.published.as_ref())
                .and_then(|p| p.pool.as_ref())
                .map_or(&[][..], |f| &f.ahead[..]);
            let outcome = ready.pool.assign_preferring(&uid, ahead, now);
            if matches!(outcome, AssignOutcome::Assigned(_)) {
                assigned += 1;
            }
            match outcome {
                AssignOutcome::Assigned(a) | AssignOutcome::Existing(a) => {
                    tracing::debug!(pod = %entry.view.name, namespace = %entry.view.namespace,
                        %uid, address = %a.addr, "address chosen; writing the annotation");
                    writes.push(AnnotationWrite {
                        addr: a.addr,
                        pod: Arc::clone(&entry.view),
                        value: a.kind.annotation(a.addr, subnet_len),
                    })
                }
                AssignOutcome::Exhausted => waiting += 1,
            }
        }
        let interval = self.ctx.settings.status_min_interval;
        self.status.note_assigned(assigned, now, interval);
        (writes, waiting)
    }

    /// Writes the annotations (with the UID precondition) and takes in the outcome of each.
    /// Called only with addresses a written status lists for their pods (`pass`).
    pub(crate) async fn annotate(&mut self, writes: Vec<AnnotationWrite>) {
        let cluster = self.ctx.cluster.clone();
        let results: Vec<(AnnotationWrite, _)> = futures::stream::iter(writes)
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
            return;
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
    }

    /// Pods waiting for an address, counted without handing any out (blocked).
    pub(crate) fn count_needing_address(&self) -> u32 {
        self.pods
            .values()
            .filter(|e| needs_address(&e.view))
            .count() as u32
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
