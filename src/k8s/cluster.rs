//! The controller's whole view of the Kubernetes API, as one small trait.
//!
//! Signatures carry only domain types (views, [`ObjectRef`], the CRD's status), so the
//! simulator can implement the trait in-process and the controller never sees a kube type.

use std::future::Future;

use futures::Stream;

use super::error::ClusterError;
use super::views::{ConfigMapView, NodeView, PodView};
use crate::crd::NodeAddressPoolStatus;

/// One change seen by a watch, already mapped to a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent<T> {
    /// Created or modified.
    Applied(T),
    /// Deleted (or no longer matches the watch's selector).
    Deleted(T),
    /// The complete current set, after the first list and after every relist (for example when
    /// the apiserver answered 410 Gone and the watch restarted): anything known before and absent
    /// here is gone.
    Resynced(Vec<T>),
}

/// Result of [`Cluster::annotate_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotateOutcome {
    /// The annotation now holds the value, on the pod with the given UID.
    Written,
    /// No pod with that name and UID exists any more (deleted, or deleted and re-created under the
    /// same name): nothing was written.
    PodGone,
    /// The pod already has the annotation (with this value); it was not changed.
    AlreadyAnnotated(String),
}

/// Result of [`Cluster::ensure_pool_object`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureOutcome {
    Created,
    /// It existed, owned by this node.
    Existed,
    /// It existed, owned by an earlier node of the same name; it now names the current node as
    /// owner (otherwise the garbage collector would delete it).
    Adopted,
}

/// A NodeAddressPool as read at leadership start ([`Cluster::read_pool_statuses`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRead {
    /// Its name: the node's.
    pub node: String,
    /// The UID of the Node its ownerReference names, if any.
    pub owner_uid: Option<String>,
    /// Empty if it has none yet.
    pub status: NodeAddressPoolStatus,
}

/// Kinds of object the controller writes Events about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Node,
    Pod,
    ConfigMap,
    NodeAddressPool,
}

impl ObjectKind {
    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::Node | ObjectKind::Pod | ObjectKind::ConfigMap => "v1",
            ObjectKind::NodeAddressPool => "winipam.dev/v1alpha1",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Node => "Node",
            ObjectKind::Pod => "Pod",
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::NodeAddressPool => "NodeAddressPool",
        }
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub name: String,
    /// `None` for cluster-scoped objects (their Events go to the `default` namespace).
    pub namespace: Option<String>,
    pub uid: String,
}

impl ObjectRef {
    pub fn node(view: &NodeView) -> Self {
        ObjectRef {
            kind: ObjectKind::Node,
            name: view.name.clone(),
            namespace: None,
            uid: view.uid.clone(),
        }
    }
    pub fn pod(view: &PodView) -> Self {
        ObjectRef {
            kind: ObjectKind::Pod,
            name: view.name.to_string(),
            namespace: Some(view.namespace.to_string()),
            uid: view.uid.to_string(),
        }
    }
    pub fn config_map(view: &ConfigMapView) -> Self {
        ObjectRef {
            kind: ObjectKind::ConfigMap,
            name: view.name.clone(),
            namespace: Some(view.namespace.clone()),
            uid: view.uid.clone(),
        }
    }
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSeverity {
    Normal,
    Warning,
}

/// Everything the controller reads from and writes to Kubernetes.
///
/// Watches never end and never fail: errors are logged and the watch resumes with backoff; a
/// relist shows up as [`WatchEvent::Resynced`].
pub trait Cluster: Send + Sync + 'static {
    /// Writes the pod annotation `vpc.amazonaws.com/PrivateIPv4Address: value` in one request
    /// that applies only to the pod with this UID and only if the annotation is absent: a pod
    /// re-created under the same name never gets the old pod's address, and an existing
    /// annotation is never overwritten. Other annotations are preserved. `has_annotations` is
    /// whether the pod had an annotations map when last seen: only a hint that picks the first
    /// form of the write (a wrong hint costs a read and a second request, never correctness).
    fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        value: &str,
        has_annotations: bool,
    ) -> impl Future<Output = Result<AnnotateOutcome, ClusterError>> + Send;

    /// Sets (`Some`) or removes (`None`) the extended resource
    /// `vpc.amazonaws.com/PrivateIPv4Address` in the node's `status.capacity`.
    fn set_node_capacity(
        &self,
        node: &str,
        capacity: Option<u32>,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Creates the node's NodeAddressPool (same name, owned by the Node) if it does not exist.
    fn ensure_pool_object(
        &self,
        node_name: &str,
        node_uid: &str,
    ) -> impl Future<Output = Result<EnsureOutcome, ClusterError>> + Send;

    /// Replaces the NodeAddressPool's status (fields absent from `status` are cleared).
    fn write_pool_status(
        &self,
        node_name: &str,
        status: &NodeAddressPoolStatus,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Every NodeAddressPool, with its status and owner (read on start for the cool-down
    /// records; one owned by its node needs no create).
    fn read_pool_statuses(
        &self,
    ) -> impl Future<Output = Result<Vec<PoolRead>, ClusterError>> + Send;

    /// One node's NodeAddressPool status (`None`: no such object or no status yet), read when
    /// a node comes under management after the pools were rebuilt (a node managed again).
    fn read_pool_status(
        &self,
        node_name: &str,
    ) -> impl Future<Output = Result<Option<NodeAddressPoolStatus>, ClusterError>> + Send;

    /// Records an Event about `object`. Repeats of the same reason for the same object within a
    /// few minutes are folded into one Event with a count (the note of the first is kept).
    fn publish_event(
        &self,
        object: &ObjectRef,
        severity: EventSeverity,
        reason: &str,
        note: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Windows nodes (SPEC section 2 labels).
    fn watch_nodes(&self) -> impl Stream<Item = WatchEvent<NodeView>> + Send + 'static;

    /// Pods bound to a node, in every namespace.
    fn watch_pods(&self) -> impl Stream<Item = WatchEvent<PodView>> + Send + 'static;

    /// The one ConfigMap `namespace/name`: its current state each time it changes (`None`: it
    /// does not exist).
    fn watch_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static;

    /// `kube-system/amazon-vpc-cni`, whose `enable-windows-ipam` says whether the VPC Resource
    /// Controller hands out Windows IPs (see [`super::views::foreign_ipam_enabled`]): its
    /// current state each time it changes (`None`: it does not exist).
    fn watch_foreign_ipam(&self) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static;
}
