//! Will a pod land on Windows? Pure rules over the pod spec, no I/O.
//!
//! A pod gets the IP resource only when the scheduler can place it on Windows nodes *only*: on a
//! Linux node the resource does not exist, so injecting it there would make the pod
//! unschedulable. The rules are therefore conservative; every scheduling constraint is ANDed,
//! so one constraint that admits only Windows suffices:
//!
//! 1. `nodeSelector`: `kubernetes.io/os: windows` or `beta.kubernetes.io/os: windows`.
//! 2. Required node affinity (`requiredDuringSchedulingIgnoredDuringExecution`): its terms are
//!    ORed, so *every* term must admit only Windows. A term's expressions are ANDed, so a term
//!    admits only Windows when at least one of its `matchExpressions` does:
//!    - `kubernetes.io/os` or `beta.kubernetes.io/os` `In` a non-empty list whose values are all
//!      `windows` (`In [windows, linux]` admits Linux);
//!    - `kubernetes.io/os` `NotIn` a list holding `linux` and not `windows`. The kubelet always
//!      sets `kubernetes.io/os` (to the OS it runs on, and kubelets run on Linux or Windows), so
//!      "not Linux" means Windows. Not for the beta label: `NotIn` also admits nodes *without*
//!      the label, and recent kubelets may not set the beta one.
//!
//!    `Exists`, `DoesNotExist`, `Gt`, `Lt`, other keys and `matchFields` do not restrict the OS;
//!    a term without a Windows-only expression (an empty term too) counts as admitting Linux,
//!    and so does an affinity without terms.
//! 3. A RuntimeClass whose `scheduling.nodeSelector` says Windows (rule 1 on that selector). The
//!    RuntimeClass is looked up by the caller; [`injection`] asks for it only when rules 1 and 2
//!    did not already decide. (The apiserver's RuntimeClass admission plugin usually merges that
//!    selector into the pod's `nodeSelector` before webhooks run; the lookup covers clusters
//!    where the plugin is off.)
//!
//! `preferredDuringScheduling…` affinity is ignored: a preference does not stop Linux.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

/// The extended resource (SPEC section 2) the mutating webhook adds.
pub const IP_RESOURCE: &str = "vpc.amazonaws.com/PrivateIPv4Address";
/// The OS label and its deprecated beta form (SPEC section 2).
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const BETA_OS_LABEL: &str = "beta.kubernetes.io/os";
pub const WINDOWS: &str = "windows";
pub const LINUX: &str = "linux";

/// Which constraint made the pod Windows-only (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowsBy {
    NodeSelector,
    NodeAffinity,
    RuntimeClass,
}

/// Why a pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    HostNetwork,
    /// No container to put the resource on (the apiserver rejects such pods anyway).
    NoContainer,
    /// The first container already requests or limits the resource.
    AlreadyRequested,
    /// Nothing restricts the pod to Windows.
    NotWindows,
}

/// What the mutating webhook does with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    Inject(WindowsBy),
    Skip(Skip),
    /// The spec alone does not say Windows, but the pod names this RuntimeClass: decide with
    /// [`runtime_class_injection`] once its `scheduling.nodeSelector` is known.
    AskRuntimeClass(String),
}

/// The decision from the pod spec alone.
pub fn injection(spec: &PodSpec) -> Injection {
    if spec.host_network == Some(true) {
        return Injection::Skip(Skip::HostNetwork);
    }
    let Some(first) = spec.containers.first() else {
        return Injection::Skip(Skip::NoContainer);
    };
    if already_requests(first) {
        return Injection::Skip(Skip::AlreadyRequested);
    }
    if spec.node_selector.as_ref().is_some_and(selector_is_windows) {
        return Injection::Inject(WindowsBy::NodeSelector);
    }
    if required_affinity_is_windows(spec) {
        return Injection::Inject(WindowsBy::NodeAffinity);
    }
    match spec.runtime_class_name.as_deref() {
        Some(name) if !name.is_empty() => Injection::AskRuntimeClass(name.to_owned()),
        _ => Injection::Skip(Skip::NotWindows),
    }
}

/// The decision for a pod that got [`Injection::AskRuntimeClass`], given the RuntimeClass's
/// `scheduling.nodeSelector` (`None`: no such RuntimeClass, or no scheduling section).
pub fn runtime_class_injection(node_selector: Option<&BTreeMap<String, String>>) -> Injection {
    if node_selector.is_some_and(selector_is_windows) {
        Injection::Inject(WindowsBy::RuntimeClass)
    } else {
        Injection::Skip(Skip::NotWindows)
    }
}

/// Whether the container requests or limits the IP resource.
pub fn already_requests(container: &Container) -> bool {
    container.resources.as_ref().is_some_and(|r| {
        let has =
            |m: &Option<BTreeMap<_, _>>| m.as_ref().is_some_and(|m| m.contains_key(IP_RESOURCE));
        has(&r.requests) || has(&r.limits)
    })
}

/// Rule 1: a node selector that only admits Windows nodes.
pub fn selector_is_windows(selector: &BTreeMap<String, String>) -> bool {
    [OS_LABEL, BETA_OS_LABEL]
        .iter()
        .any(|key| selector.get(*key).is_some_and(|v| v == WINDOWS))
}

/// Rule 2: the required node affinity admits only Windows nodes.
pub fn required_affinity_is_windows(spec: &PodSpec) -> bool {
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|s| s.node_selector_terms.as_slice())
        .unwrap_or_default();
    !terms.is_empty() && terms.iter().all(term_is_windows)
}

/// One ORed term admits only Windows nodes: one of its ANDed expressions does.
pub fn term_is_windows(term: &NodeSelectorTerm) -> bool {
    term.match_expressions
        .iter()
        .flatten()
        .any(requirement_is_windows)
}

/// One expression admits only Windows nodes.
pub fn requirement_is_windows(requirement: &NodeSelectorRequirement) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let key = requirement.key.as_str();
    match requirement.operator.as_str() {
        "In" => {
            (key == OS_LABEL || key == BETA_OS_LABEL)
                && !values.is_empty()
                && values.iter().all(|v| v == WINDOWS)
        }
        "NotIn" => {
            key == OS_LABEL
                && values.iter().any(|v| v == LINUX)
                && !values.iter().any(|v| v == WINDOWS)
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
