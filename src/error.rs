//! The controller's error type: what can go wrong outside the pure core, each with a stable
//! label for `winipam_allocation_failures_total{reason}` and logs.

use crate::ipam::Ec2ErrorClass;
use crate::k8s::ClusterError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the apiserver failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An EC2 call failed (classified by its error code).
    #[error("EC2 {operation} failed: {class:?}")]
    Ec2 {
        operation: &'static str,
        class: Ec2ErrorClass,
    },
    /// The node has no address to give and none can be had now.
    #[error("no address available on node {node}: {why}")]
    NoAddress { node: String, why: String },
    /// The node cannot be managed (no instance id, unknown instance type...).
    #[error("node {node} is not supported: {why}")]
    Unsupported { node: String, why: String },
    /// Another controller manages Windows IPs (SPEC 3.2).
    #[error(
        "blocked: the VPC Resource Controller's Windows IPAM is enabled in kube-system/amazon-vpc-cni"
    )]
    Blocked,
    /// This replica does not hold the lease.
    #[error("not the leader")]
    NotLeader,
    /// A ConfigMap value was rejected.
    #[error("configuration key {key}: {why}")]
    Config { key: String, why: String },
    /// Startup could not complete (kube config, listeners, AWS config).
    #[error("startup failed: {0}")]
    Startup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Cluster(e) => match e {
                ClusterError::NotFound(_) => "k8s_not_found",
                ClusterError::Forbidden(_) => "k8s_forbidden",
                ClusterError::Conflict(_) => "k8s_conflict",
                ClusterError::Rejected { .. } => "k8s_rejected",
                ClusterError::Transport(_) => "k8s_transport",
                ClusterError::Invalid(_) => "k8s_invalid",
            },
            Error::Ec2 { class, .. } => class.label(),
            Error::NoAddress { .. } => "no_address",
            Error::Unsupported { .. } => "unsupported",
            Error::Blocked => "blocked",
            Error::NotLeader => "not_leader",
            Error::Config { .. } => "config",
            Error::Startup(_) => "startup",
            Error::Io(_) => "io",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct() {
        let errors = [
            Error::Cluster(ClusterError::Transport("x".into())),
            Error::Ec2 {
                operation: "AssignPrivateIpAddresses",
                class: Ec2ErrorClass::SubnetFull,
            },
            Error::NoAddress {
                node: "n".into(),
                why: "w".into(),
            },
            Error::Unsupported {
                node: "n".into(),
                why: "w".into(),
            },
            Error::Blocked,
            Error::NotLeader,
            Error::Config {
                key: "k".into(),
                why: "w".into(),
            },
        ];
        let labels: Vec<_> = errors.iter().map(Error::metric_label).collect();
        assert_eq!(
            labels,
            [
                "k8s_transport",
                "subnet_full",
                "no_address",
                "unsupported",
                "blocked",
                "not_leader",
                "config"
            ]
        );
        assert!(Error::Blocked.to_string().contains("amazon-vpc-cni"));
    }
}
