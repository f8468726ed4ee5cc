//! What a pod needs from its node's pool (SPEC 6.2), decided from its view alone.

use std::net::Ipv4Addr;

use crate::ipam::parse_annotation;
use crate::k8s::PodView;

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
