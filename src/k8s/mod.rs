//! The Kubernetes side of the controller, behind the [`Cluster`] trait.
//!
//! - [`views`]: trimmed, Kubernetes-free views of Nodes, Pods and ConfigMaps, and the pure rules
//!   of SPEC section 2 (Windows labels, instance id from the providerID).
//! - [`pod_fields`]: the fields of a Pod winipam decodes from the apiserver's JSON.
//! - [`cluster`]: the trait the controller is written against, and its domain types.
//! - [`KubeCluster`]: the trait on a real apiserver.

mod annotate;
pub mod cluster;
pub mod error;
mod kube_cluster;
mod pod_fields;
pub mod views;
#[cfg(test)]
mod views_fuzz_tests;
mod watch;

pub use cluster::{
    AnnotateOutcome, Cluster, EnsureOutcome, EventSeverity, ObjectKind, ObjectRef, PoolRead,
    WatchEvent,
};
pub use error::ClusterError;
pub use kube_cluster::{
    CONTROLLER_NAME, FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE, KubeCluster, REQUEST_TIMEOUT,
    bounded,
};
pub use views::{ConfigMapView, LEAVING_TAINTS, NodeView, OptOut, PodPhase, PodView};
