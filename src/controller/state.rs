//! What a node worker holds, and the messages it takes: types only. The behaviour is in the files
//! named after what it does (`pass` runs it, in order); each of them imports from here, from
//! `context` and from the leaf modules (`need`, `record`, `gauges`, `reasons`), never from
//! another behaviour file, so no import goes in a circle.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::context::Ctx;
use super::gauges::NodeGauges;
use super::record::{Published, Restored};
use crate::crd::NodeAddressPoolStatus;
use crate::ec2::{Ec2Backend, Ec2Error, Urgency};
use crate::ipam::{
    Config, Ec2Addresses, InstanceInfo, LostAddress, NodePool, PodUid, SubnetInfo, Timestamp,
};
use crate::k8s::{NodeView, PodView};

/// What the dispatcher tells a worker. Payloads are behind one pointer (16 bytes a message):
/// every worker's channel keeps blocks of 32 messages allocated, which for thousands of nodes
/// adds up. Pod views are shared with the dispatcher's index, which keeps the same view.
#[derive(Debug)]
pub(crate) enum NodeMsg {
    Node(Box<NodeView>),
    PodApplied(Arc<PodView>),
    PodDeleted(Box<PodUid>),
    /// The complete set of the node's bound pods (after a relist).
    #[allow(
        clippy::box_collection,
        reason = "one pointer keeps every message, queued or not, at 16 bytes"
    )]
    PodsResynced(Box<Vec<Arc<PodView>>>),
    Config(Arc<Config>),
    Blocked(bool),
    /// The periodic re-describe of the instance (SPEC 6.4).
    Resync(Box<InstanceInfo>),
    /// The leader is stepping down (SIGTERM): hand out nothing more, finish the EC2 call in
    /// flight, write a last status that lists nothing ahead, and end.
    StepDown,
}

/// The dispatcher's handle on a worker.
pub(crate) struct WorkerHandle {
    pub(crate) node_uid: String,
    pub(crate) tx: mpsc::UnboundedSender<NodeMsg>,
    pub(crate) task: JoinHandle<()>,
    /// Set when the dispatcher stops the worker (node deleted or re-created).
    pub(crate) retired: Arc<AtomicBool>,
}

/// Where a node stands.
pub(crate) enum Phase {
    /// Not yet described (or the last try failed): retry at the given time.
    Init {
        retry_at: Timestamp,
        failures: u32,
    },
    Ready(Box<ReadyNode>),
    /// Not manageable until the Node object changes (no instance id, unknown type, instance gone).
    Parked {
        state: &'static str,
    },
}

/// A node whose pool is built.
pub(crate) struct ReadyNode {
    pub(crate) pool: NodePool,
    pub(crate) instance: InstanceInfo,
    pub(crate) subnet: SubnetInfo,
}

/// What the worker remembers of a pod beyond its view.
pub(crate) struct PodEntry {
    /// Shared with the dispatcher's index while the two agree (one copy per pod).
    pub(crate) view: Arc<PodView>,
    /// When the worker first saw it bound (start of time-to-IP).
    pub(crate) seen: Timestamp,
    /// The annotation value we wrote, kept across stale watch views.
    pub(crate) written: Option<Box<str>>,
    pub(crate) pending_reported: bool,
    pub(crate) annotation_reported: bool,
    /// An annotation write for this pod failed in a way that may have applied it: the
    /// address may have been seen, so it is never taken back without a cool-down.
    pub(crate) maybe_written: bool,
    /// An address we adopted from its annotation (so a changed view is noticed).
    pub(crate) adopted: Option<Ipv4Addr>,
}

/// An annotation to write: chosen by `assign`, written by `annotate` once a status lists it.
pub(crate) struct AnnotationWrite {
    pub(crate) addr: Ipv4Addr,
    pub(crate) pod: Arc<PodView>,
    pub(crate) value: String,
}

/// The outcome of one EC2 call, handed back to the worker.
#[derive(Debug)]
pub(crate) enum Ec2Done {
    Assigned(Result<Ec2Addresses, Ec2Error>),
    Released(Result<(), Ec2Error>),
    Described(Result<InstanceInfo, Ec2Error>),
}

/// The worker's side of its NodeAddressPool: what it last wrote, and how writing goes.
#[derive(Default)]
pub(crate) struct StatusState {
    /// What the last successful write said (`None`: nothing written by this worker yet).
    pub(crate) published: Option<Published>,
    /// The status last written: its texts are reused for what did not change, and its
    /// conditions' transition times are kept while they hold.
    pub(crate) written: Option<NodeAddressPoolStatus>,
    pub(crate) written_at: Option<Timestamp>,
    /// The NodeAddressPool is not known to exist (never created by this worker, or a write
    /// found it gone): create it before the next status write.
    pub(crate) object_missing: bool,
    pub(crate) last_error: Option<(Ec2Error, Timestamp)>,
    /// Writes failed in a row, and when to try again.
    pub(crate) failures: u32,
    pub(crate) retry_at: Option<Timestamp>,
    /// When the current run of failures was last reported (`StatusWriteFailed`).
    pub(crate) reported_at: Option<Timestamp>,
    /// Addresses handed out in the current coalescing interval, and in the one before: the
    /// recent pod rate that sizes the list of addresses written ahead.
    pub(crate) assigned: (Option<Timestamp>, u32, u32),
    /// The NodeAddressPool was read at leadership start, owned by this node: the first write
    /// needs no create.
    pub(crate) object_read: bool,
    /// A new leader's first status may wait until then (`rules::first_may_wait`); `None`
    /// once something needs it at once.
    pub(crate) first_due: Option<Timestamp>,
    /// The leader is stepping down and this worker hands out nothing more: its last status
    /// lists nothing ahead, so the next leader holds none of those addresses back.
    pub(crate) stepping_down: bool,
}

pub(crate) struct NodeWorker<C, B: Ec2Backend> {
    pub(crate) ctx: Arc<Ctx<C, B>>,
    pub(crate) node: NodeView,
    pub(crate) pods: BTreeMap<PodUid, PodEntry>,
    pub(crate) phase: Phase,
    pub(crate) config: Arc<Config>,
    pub(crate) blocked: bool,
    /// What the NodeAddressPool status said at leadership start.
    pub(crate) restored: Restored,
    /// Started after leadership start (a node managed again, or a new one): the worker reads
    /// its NodeAddressPool itself before building the pool.
    pub(crate) record_unread: bool,
    pub(crate) ec2_task: Option<JoinHandle<Ec2Done>>,
    /// Raised while pods on this node wait for an address: the Assign in flight then goes before
    /// warm refills in the account's rate limit. A new flag for each call.
    pub(crate) ec2_urgency: Urgency,
    pub(crate) status: StatusState,
    /// Gauge contributions of this node, to keep global gauges right as they change.
    pub(crate) gauges: NodeGauges,
    /// This worker does not (or no longer) hold readiness back.
    pub(crate) init_reported: bool,
    /// Addresses a resync found gone while pods held them, to report on the next pass.
    pub(crate) pending_lost: Vec<LostAddress>,
    /// Annotation writes that failed in a row, and when the next pass retries them (nothing
    /// else may wake the worker: the pods are already known).
    pub(crate) annotate_failures: u32,
    pub(crate) annotate_retry_at: Option<Timestamp>,
    /// The dispatcher stopped this worker: a pass still running (a describe taking its time)
    /// writes no status, which would replace the records of the worker that took its place
    /// (chaos seed 173059).
    pub(crate) retired: Arc<AtomicBool>,
    /// The kubelet's max-pods, the IP capacity and the most host-network pods seen, as last
    /// compared (`max_pods`): an Event goes out only when one of them changes.
    pub(crate) max_pods_checked: Option<(u32, u32, u32)>,
    /// The foreign IPAM let go of this node and its pool has not taken the hand-over hold yet
    /// (`take_over`).
    pub(crate) handover_pending: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_small() {
        // Each worker's channel allocates blocks of 32 messages: one pointer and a tag each.
        assert_eq!(std::mem::size_of::<NodeMsg>(), 16);
    }
}
