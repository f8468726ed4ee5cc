//! Trimmed, Kubernetes-free views of the objects the controller watches.
//!
//! A full `Pod` is several kilobytes; 150k of them would not fit comfortably in memory. Watch
//! events are mapped to these views as soon as they are decoded and the full objects are dropped.
//! The conversions are pure functions so the compatibility rules of SPEC section 2 are unit-tested.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Node};

use super::pod_fields::PodFields;

use crate::ipam::PodUid;

/// Pod annotation and node extended resource (SPEC section 2).
pub const PRIVATE_IPV4_ADDRESS: &str = "vpc.amazonaws.com/PrivateIPv4Address";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const BETA_OS_LABEL: &str = "beta.kubernetes.io/os";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
pub const BETA_INSTANCE_TYPE_LABEL: &str = "beta.kubernetes.io/instance-type";
/// `"false"` leaves a Windows node to another IPAM (README, Configuration).
pub const MANAGED_LABEL: &str = "winipam.dev/managed";
/// `"auto"` on nodes that EKS Auto Mode manages: the VPC Resource Controller leaves them alone.
pub const COMPUTE_TYPE_LABEL: &str = "eks.amazonaws.com/compute-type";

/// What the controller needs of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub uid: String,
    /// The EC2 instance id from `spec.providerID`; `None` when absent or not an `i-<hex>` id.
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub windows: bool,
    /// The node's labels leave it to another IPAM (see [`opt_out`]).
    pub opt_out: Option<OptOut>,
    /// The current value of the extended resource in `status.capacity`, as written there.
    pub advertised_capacity: Option<String>,
    /// `status.capacity.pods`: the kubelet's `--max-pods` (`None` when absent or not a count).
    pub max_pods: Option<u32>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `spec.unschedulable` (`kubectl cordon`, `kubectl drain`).
    pub unschedulable: bool,
    /// The keys of the node's taints that say it is on its way out ([`LEAVING_TAINTS`]), in
    /// the node's order; other taints are not kept.
    pub leaving_taints: Vec<String>,
}

/// Taints (any effect) that mark a node on its way out: cordoned, disrupted by Karpenter,
/// scaled down by the Cluster Autoscaler.
pub const LEAVING_TAINTS: [&str; 3] = [
    "node.kubernetes.io/unschedulable",
    "karpenter.sh/disrupted",
    "ToBeDeletedByClusterAutoscaler",
];

/// Pod phase, as far as IP management cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Pending") | None => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some(_) => PodPhase::Unknown,
        }
    }

    /// Succeeded or Failed: the pod's containers will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// What the controller needs of a bound Pod.
///
/// Compact, because a large cluster's controller holds one per pod: the UID in 16 bytes (exact
/// for any string, see [`PodUid`]), namespace and node name as shared strings (the dispatcher
/// interns them), no spare capacity in the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub uid: PodUid,
    pub namespace: Arc<str>,
    pub name: Box<str>,
    pub node_name: Arc<str>,
    pub phase: PodPhase,
    pub host_network: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The value of the `vpc.amazonaws.com/PrivateIPv4Address` annotation, if any.
    pub ip_annotation: Option<Box<str>>,
    /// The pod has an annotations map (any annotation at all): decides which form of the
    /// annotation patch to try first.
    pub has_annotations: bool,
}

/// A ConfigMap's identity (for Events about it) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub data: BTreeMap<String, String>,
}

/// The instance id is the last `/`-separated segment of the providerID
/// (`aws:///us-west-2a/i-0abc...`); anything but `i-` followed by hex digits is rejected, so a
/// Fargate or non-AWS node is never sent to EC2.
pub fn instance_id_from_provider_id(provider_id: &str) -> Option<String> {
    let last = provider_id.rsplit('/').next()?;
    let hex = last.strip_prefix("i-")?;
    let valid = !hex.is_empty() && hex.len() <= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| last.to_string())
}

/// `kubernetes.io/os=windows`; the beta label counts only when the GA label is absent.
pub fn is_windows(labels: &BTreeMap<String, String>) -> bool {
    match labels.get(OS_LABEL) {
        Some(os) => os == "windows",
        None => labels.get(BETA_OS_LABEL).is_some_and(|os| os == "windows"),
    }
}

/// Why a node's labels leave it to another IPAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOut {
    /// `winipam.dev/managed: "false"`.
    Label,
    /// `eks.amazonaws.com/compute-type: auto`: EKS Auto Mode manages the node's networking.
    AutoMode,
}

/// `winipam.dev/managed` set to `false` (also `False`/`FALSE`, the spellings the ConfigMap's
/// booleans accept), or an EKS Auto Mode node. Any other value of the label, or none, leaves the
/// node managed: a typo must not silently take a node's pods off their addresses' owner.
pub fn opt_out(labels: &BTreeMap<String, String>) -> Option<OptOut> {
    if labels
        .get(MANAGED_LABEL)
        .is_some_and(|v| matches!(v.trim(), "false" | "False" | "FALSE"))
    {
        return Some(OptOut::Label);
    }
    (labels.get(COMPUTE_TYPE_LABEL).map(String::as_str) == Some("auto")).then_some(OptOut::AutoMode)
}

pub fn node_view(node: &Node) -> NodeView {
    let meta = &node.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    NodeView {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        instance_id: node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(instance_id_from_provider_id),
        instance_type: labels
            .get(INSTANCE_TYPE_LABEL)
            .or_else(|| labels.get(BETA_INSTANCE_TYPE_LABEL))
            .cloned(),
        windows: is_windows(labels),
        opt_out: opt_out(labels),
        advertised_capacity: node
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get(PRIVATE_IPV4_ADDRESS))
            .map(|q| q.0.clone()),
        max_pods: node
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("pods"))
            .and_then(|q| q.0.trim().parse().ok()),
        deleting: meta.deletion_timestamp.is_some(),
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        leaving_taints: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| LEAVING_TAINTS.contains(&t.key.as_str()))
            .map(|t| t.key.clone())
            .collect(),
    }
}

/// `None` for a pod that is not bound to a node (or has no identity): nothing to manage.
pub fn pod_view(pod: &PodFields) -> Option<PodView> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref()?;
    let node_name = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
    Some(PodView {
        uid: PodUid::new(meta.uid.as_deref()?),
        namespace: meta.namespace.as_deref().unwrap_or_default().into(),
        name: meta.name.as_deref()?.into(),
        node_name: node_name.into(),
        phase: PodPhase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
        host_network: spec.host_network.unwrap_or(false),
        deleting: meta.deletion_timestamp.is_some(),
        ip_annotation: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRIVATE_IPV4_ADDRESS))
            .map(|v| v.as_str().into()),
        has_annotations: meta.annotations.as_ref().is_some_and(|a| !a.is_empty()),
    })
}

pub fn config_map_view(cm: &ConfigMap) -> ConfigMapView {
    let meta = &cm.metadata;
    ConfigMapView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        data: cm.data.clone().unwrap_or_default(),
    }
}

/// Is the VPC Resource Controller's Windows IPAM switched on in `kube-system/amazon-vpc-cni`?
/// The VPC RC reads the key with Go's `strconv.ParseBool`, so every spelling it takes as true
/// counts here too: missing a "True" would let two controllers hand out the same addresses.
pub fn foreign_ipam_enabled(data: &BTreeMap<String, String>) -> bool {
    data.get("enable-windows-ipam")
        .is_some_and(|v| matches!(v.trim(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

#[cfg(test)]
mod tests {
    use super::super::pod_fields::{SpecFields, StatusFields};
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, Taint};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn provider_id_forms() {
        assert_eq!(
            instance_id_from_provider_id("aws:///us-west-2a/i-0abc"),
            Some("i-0abc".into())
        );
        assert_eq!(
            instance_id_from_provider_id("aws:///us-west-2a/i-0123456789abcdef0"),
            Some("i-0123456789abcdef0".into())
        );
        assert_eq!(
            instance_id_from_provider_id("i-0abc"),
            Some("i-0abc".into())
        );
        assert_eq!(instance_id_from_provider_id(""), None);
        assert_eq!(instance_id_from_provider_id("garbage"), None);
        assert_eq!(instance_id_from_provider_id("aws:///us-west-2a/"), None);
        assert_eq!(instance_id_from_provider_id("aws:///us-west-2a/i-"), None);
        assert_eq!(
            instance_id_from_provider_id("aws:///us-west-2a/i-xyz"),
            None
        );
        assert_eq!(
            instance_id_from_provider_id("aws:///us-west-2a/fargate-ip-10-0-0-1"),
            None
        );
        assert_eq!(instance_id_from_provider_id("aws:///i-0abc/extra"), None);
    }

    #[test]
    fn labels_that_leave_a_node_to_another_ipam() {
        // (labels, what they say)
        type Case = (&'static [(&'static str, &'static str)], Option<OptOut>);
        let cases: [Case; 10] = [
            (&[], None),
            (&[(MANAGED_LABEL, "false")], Some(OptOut::Label)),
            (&[(MANAGED_LABEL, "False")], Some(OptOut::Label)),
            (&[(MANAGED_LABEL, " FALSE ")], Some(OptOut::Label)),
            // Anything else keeps the node managed: a typo must not drop it.
            (&[(MANAGED_LABEL, "true")], None),
            (&[(MANAGED_LABEL, "no")], None),
            (&[(MANAGED_LABEL, "")], None),
            (&[(COMPUTE_TYPE_LABEL, "auto")], Some(OptOut::AutoMode)),
            (&[(COMPUTE_TYPE_LABEL, "ec2")], None),
            // Both: the explicit label is named.
            (
                &[(MANAGED_LABEL, "false"), (COMPUTE_TYPE_LABEL, "auto")],
                Some(OptOut::Label),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(opt_out(&labels(pairs)), want, "{pairs:?}");
        }
        let mut n = node(&[(OS_LABEL, "windows"), (MANAGED_LABEL, "false")], None);
        assert_eq!(node_view(&n).opt_out, Some(OptOut::Label));
        n.metadata.labels = None;
        assert_eq!(node_view(&n).opt_out, None);
    }

    #[test]
    fn windows_label_then_beta_label() {
        assert!(is_windows(&labels(&[(OS_LABEL, "windows")])));
        assert!(is_windows(&labels(&[(BETA_OS_LABEL, "windows")])));
        assert!(!is_windows(&labels(&[(OS_LABEL, "linux")])));
        // The GA label wins when both are present.
        assert!(!is_windows(&labels(&[
            (OS_LABEL, "linux"),
            (BETA_OS_LABEL, "windows")
        ])));
        assert!(is_windows(&labels(&[
            (OS_LABEL, "windows"),
            (BETA_OS_LABEL, "linux")
        ])));
        assert!(!is_windows(&labels(&[])));
    }

    fn node(labels_: &[(&str, &str)], provider_id: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("ip-10-0-0-1".into()),
                uid: Some("node-uid".into()),
                labels: Some(labels(labels_)),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: provider_id.map(String::from),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn node_view_reads_every_field() {
        let mut n = node(
            &[
                (OS_LABEL, "windows"),
                (INSTANCE_TYPE_LABEL, "m5.large"),
                (BETA_INSTANCE_TYPE_LABEL, "m4.large"),
            ],
            Some("aws:///us-west-2a/i-0abc"),
        );
        n.status = Some(NodeStatus {
            capacity: Some(BTreeMap::from([
                (PRIVATE_IPV4_ADDRESS.to_string(), Quantity("9".into())),
                ("pods".to_string(), Quantity("110".into())),
            ])),
            ..Default::default()
        });
        let v = node_view(&n);
        assert_eq!(
            v,
            NodeView {
                name: "ip-10-0-0-1".into(),
                uid: "node-uid".into(),
                instance_id: Some("i-0abc".into()),
                instance_type: Some("m5.large".into()),
                windows: true,
                opt_out: None,
                advertised_capacity: Some("9".into()),
                max_pods: Some(110),
                deleting: false,
                unschedulable: false,
                leaving_taints: Vec::new(),
            }
        );
        // A pods quantity that is not a plain count is not guessed at.
        for odd in ["1k", "", "-3"] {
            n.status = Some(NodeStatus {
                capacity: Some(BTreeMap::from([("pods".to_string(), Quantity(odd.into()))])),
                ..Default::default()
            });
            assert_eq!(node_view(&n).max_pods, None, "{odd:?}");
        }
    }

    #[test]
    fn node_view_beta_instance_type_missing_provider_and_deleting() {
        let mut n = node(
            &[
                (BETA_OS_LABEL, "windows"),
                (BETA_INSTANCE_TYPE_LABEL, "c5.xlarge"),
            ],
            None,
        );
        n.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let v = node_view(&n);
        assert_eq!(v.instance_id, None);
        assert_eq!(v.instance_type.as_deref(), Some("c5.xlarge"));
        assert!(v.windows);
        assert!(v.deleting);
        assert_eq!(v.advertised_capacity, None);
        assert_eq!(v.max_pods, None);

        let garbage = node_view(&node(&[], Some("garbage")));
        assert_eq!(garbage.instance_id, None);
        assert!(!garbage.windows);
        assert_eq!(garbage.instance_type, None);
    }

    #[test]
    fn node_view_keeps_the_signals_of_a_node_on_its_way_out() {
        let taint = |key: &str, effect: &str| Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        };
        let mut n = node(&[(OS_LABEL, "windows")], None);
        let v = node_view(&n);
        assert!(!v.unschedulable);
        assert!(v.leaving_taints.is_empty());
        if let Some(spec) = n.spec.as_mut() {
            spec.unschedulable = Some(true);
            spec.taints = Some(vec![
                taint("dedicated", "NoSchedule"),
                taint("ToBeDeletedByClusterAutoscaler", "NoSchedule"),
                taint("karpenter.sh/disrupted", "NoExecute"),
                // Other taints of the node lifecycle are not a way out.
                taint("node.kubernetes.io/not-ready", "NoExecute"),
                taint("node.kubernetes.io/unschedulable", "PreferNoSchedule"),
            ]);
        }
        let v = node_view(&n);
        assert!(v.unschedulable);
        assert_eq!(
            v.leaving_taints,
            [
                "ToBeDeletedByClusterAutoscaler",
                "karpenter.sh/disrupted",
                "node.kubernetes.io/unschedulable"
            ]
        );
    }

    fn pod(node_name: Option<&str>) -> PodFields {
        PodFields {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("apps".into()),
                uid: Some("pod-uid".into()),
                annotations: Some(labels(&[
                    (PRIVATE_IPV4_ADDRESS, "10.0.37.15/19"),
                    ("other", "x"),
                ])),
                ..Default::default()
            },
            spec: Some(SpecFields {
                node_name: node_name.map(String::from),
                ..Default::default()
            }),
            status: Some(StatusFields {
                phase: Some("Running".into()),
            }),
        }
    }

    #[test]
    fn pod_view_of_bound_pod() {
        let v = pod_view(&pod(Some("ip-10-0-0-1"))).unwrap();
        assert_eq!(
            v,
            PodView {
                uid: "pod-uid".into(),
                namespace: "apps".into(),
                name: "web-0".into(),
                node_name: "ip-10-0-0-1".into(),
                phase: PodPhase::Running,
                host_network: false,
                deleting: false,
                ip_annotation: Some("10.0.37.15/19".into()),
                has_annotations: true,
            }
        );
    }

    #[test]
    fn pod_view_unbound_host_network_and_phases() {
        assert_eq!(pod_view(&pod(None)), None);
        assert_eq!(pod_view(&pod(Some(""))), None);

        let mut p = pod(Some("n"));
        if let Some(spec) = p.spec.as_mut() {
            spec.host_network = Some(true);
        }
        p.status = None;
        p.metadata.annotations = None;
        p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let v = pod_view(&p).unwrap();
        assert!(v.host_network);
        assert!(v.deleting);
        assert_eq!(v.phase, PodPhase::Pending);
        assert_eq!(v.ip_annotation, None);
        assert!(!v.has_annotations);

        assert_eq!(PodPhase::parse(Some("Failed")), PodPhase::Failed);
        assert!(PodPhase::parse(Some("Succeeded")).is_terminal());
        assert!(!PodPhase::parse(Some("Running")).is_terminal());
        assert_eq!(PodPhase::parse(Some("Weird")), PodPhase::Unknown);
    }

    #[test]
    fn foreign_ipam_flag_follows_go_parse_bool() {
        for yes in ["true", "True", "TRUE", "t", "1", " true "] {
            assert!(
                foreign_ipam_enabled(&labels(&[("enable-windows-ipam", yes)])),
                "{yes}"
            );
        }
        for no in ["false", "0", "", "yes", "enabled"] {
            assert!(
                !foreign_ipam_enabled(&labels(&[("enable-windows-ipam", no)])),
                "{no}"
            );
        }
        assert!(!foreign_ipam_enabled(&labels(&[])));
    }
}
