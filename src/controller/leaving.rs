//! Whether a managed Windows node is on its way out (issue 16): cordoned, drained, disrupted by
//! Karpenter, scaled down by the Cluster Autoscaler, or being deleted. Read from the node's view
//! alone; the worker drops the node's targets while it is (`Config::node_targets`).

use crate::k8s::{LEAVING_TAINTS, NodeView};

/// Why a node is on its way out, as its Event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// `metadata.deletionTimestamp`.
    Deleting,
    /// One of [`LEAVING_TAINTS`], by key.
    Taint(String),
    /// `spec.unschedulable`.
    Cordoned,
}

impl Leaving {
    /// The signal, for an Event note and the logs.
    pub(crate) fn signal(&self) -> String {
        match self {
            Leaving::Deleting => "it is being deleted (deletionTimestamp)".into(),
            Leaving::Taint(key) => format!("it has the taint {key}"),
            Leaving::Cordoned => "it is cordoned (spec.unschedulable)".into(),
        }
    }
}

/// Whether a managed node is on its way out, and the most telling signal of it: a deletion,
/// then a taint of the tool removing it (Karpenter, the Cluster Autoscaler), then the cordon
/// itself (`kubectl cordon` sets `spec.unschedulable` and the node controller then adds the
/// `node.kubernetes.io/unschedulable` taint: both name the same thing). A leaving node stays
/// managed: its pods keep their addresses; only the targets stop applying (issue 16).
pub(crate) fn leaving(view: &NodeView) -> Option<Leaving> {
    const CORDON_TAINT: &str = LEAVING_TAINTS[0];
    if view.deleting {
        return Some(Leaving::Deleting);
    }
    let taint = |cordon: bool| {
        (view.leaving_taints.iter())
            .find(|k| (k.as_str() == CORDON_TAINT) == cordon)
            .map(|k| Leaving::Taint(k.clone()))
    };
    taint(false)
        .or_else(|| view.unschedulable.then_some(Leaving::Cordoned))
        .or_else(|| taint(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signals_of_a_node_on_its_way_out() {
        const CORDON: &str = "node.kubernetes.io/unschedulable";
        const KARPENTER: &str = "karpenter.sh/disrupted";
        const AUTOSCALER: &str = "ToBeDeletedByClusterAutoscaler";
        let taint = |k: &str| Some(Leaving::Taint(k.into()));
        // (deleting, spec.unschedulable, leaving taints, what it says)
        type Case = (bool, bool, &'static [&'static str], Option<Leaving>);
        let cases: [Case; 9] = [
            (false, false, &[], None),
            (false, true, &[], Some(Leaving::Cordoned)),
            (false, false, &[CORDON], taint(CORDON)),
            // kubectl cordon: both; the field is named.
            (false, true, &[CORDON], Some(Leaving::Cordoned)),
            (false, false, &[KARPENTER], taint(KARPENTER)),
            (false, false, &[AUTOSCALER], taint(AUTOSCALER)),
            // The tool taking the node away says more than the cordon it also sets.
            (false, true, &[CORDON, KARPENTER], taint(KARPENTER)),
            (false, false, &[CORDON, AUTOSCALER], taint(AUTOSCALER)),
            // A deletion says the most.
            (true, true, &[KARPENTER], Some(Leaving::Deleting)),
        ];
        for (i, (deleting, unschedulable, taints, expected)) in cases.into_iter().enumerate() {
            let view = NodeView {
                name: "a".into(),
                uid: "1".into(),
                instance_id: Some("i-1".into()),
                instance_type: Some("m5.xlarge".into()),
                windows: true,
                opt_out: None,
                advertised_capacity: None,
                max_pods: None,
                deleting,
                unschedulable,
                leaving_taints: taints.iter().map(|t| t.to_string()).collect(),
            };
            assert_eq!(leaving(&view), expected, "case {i}");
        }
    }
}
