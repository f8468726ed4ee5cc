//! The kubelet's `--max-pods` against a Windows node's pod IP capacity (issue 16, item 3).
//!
//! Every Windows pod (outside the host network) needs an address of the primary ENI, so a node
//! holds at most its IP capacity of such pods. The kubelet refuses pods beyond `--max-pods`
//! (`status.capacity.pods`). When the two disagree, one of them decides where it should not:
//! below, addresses winipam keeps on the ENI can never be used; above, the scheduler places pods
//! that can never get an address (the extended resource refuses them, one by one, where
//! max-pods would have said so plainly).

/// The kubelet's default `--max-pods`, and the pods per node Kubernetes is tested at.
pub const KUBELET_DEFAULT_MAX_PODS: u32 = 110;

/// The kubelet `--max-pods` value for a node with `ip_capacity` pod addresses: no more pods
/// than addresses (each Windows pod needs one), and no more than the kubelet's default.
pub fn kubelet_max_pods(ip_capacity: u32) -> u32 {
    ip_capacity.min(KUBELET_DEFAULT_MAX_PODS)
}

/// How a node's `--max-pods` disagrees with its IP capacity, and the value to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPodsMismatch {
    /// `max_pods` is below [`kubelet_max_pods`] of the capacity: `ip_capacity - max_pods`
    /// addresses can never be used by a pod.
    Below {
        max_pods: u32,
        ip_capacity: u32,
        recommended: u32,
    },
    /// `max_pods` is above the IP capacity: pods are refused for want of an address rather
    /// than by max-pods.
    Above {
        max_pods: u32,
        ip_capacity: u32,
        recommended: u32,
    },
}

impl MaxPodsMismatch {
    /// The `--max-pods` value to set.
    pub fn recommended(&self) -> u32 {
        match *self {
            MaxPodsMismatch::Below { recommended, .. }
            | MaxPodsMismatch::Above { recommended, .. } => recommended,
        }
    }
}

/// Compares the kubelet's `max_pods` with the node's `ip_capacity` (in the mode the node runs
/// in). Between [`kubelet_max_pods`] and the capacity is agreement: above 110 on a prefix-mode
/// node is the admin's choice, and every pod it admits still gets an address. Host-network
/// (HostProcess) pods count against max-pods but take no address, so `host_network_pods` (the
/// most the node was seen to run) widen the upper bound: the README tells admins to add them,
/// and a node set that way must not be warned about.
pub fn compare_max_pods(
    max_pods: u32,
    ip_capacity: u32,
    host_network_pods: u32,
) -> Option<MaxPodsMismatch> {
    let recommended = kubelet_max_pods(ip_capacity);
    if max_pods > ip_capacity.saturating_add(host_network_pods) {
        Some(MaxPodsMismatch::Above {
            max_pods,
            ip_capacity,
            recommended,
        })
    } else if max_pods < recommended {
        Some(MaxPodsMismatch::Below {
            max_pods,
            ip_capacity,
            recommended,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_value_is_the_capacity_up_to_the_default() {
        assert_eq!(kubelet_max_pods(9), 9);
        assert_eq!(kubelet_max_pods(110), 110);
        assert_eq!(kubelet_max_pods(144), 110);
        assert_eq!(kubelet_max_pods(0), 0);
    }

    #[test]
    fn agreement_is_from_the_kubelet_value_to_the_capacity() {
        // m5.large secondary (9 IPs) with max-pods 9; prefix (144) with 110, 120 or 144.
        assert_eq!(compare_max_pods(9, 9, 0), None);
        for max_pods in [110, 120, 144] {
            assert_eq!(compare_max_pods(max_pods, 144, 0), None, "{max_pods}");
        }
    }

    #[test]
    fn below_wastes_addresses_above_refuses_by_ip() {
        // Prefix mode on a kubelet left at 29 (EKS's Linux formula for m5.large).
        assert_eq!(
            compare_max_pods(29, 144, 0),
            Some(MaxPodsMismatch::Below {
                max_pods: 29,
                ip_capacity: 144,
                recommended: 110
            })
        );
        // Secondary mode on a kubelet left at the default.
        let above = compare_max_pods(110, 9, 0);
        assert_eq!(
            above,
            Some(MaxPodsMismatch::Above {
                max_pods: 110,
                ip_capacity: 9,
                recommended: 9
            })
        );
        assert_eq!(above.map(|m| m.recommended()), Some(9));
        // One off either way counts.
        assert!(matches!(
            compare_max_pods(8, 9, 0),
            Some(MaxPodsMismatch::Below { .. })
        ));
        assert!(matches!(
            compare_max_pods(10, 9, 0),
            Some(MaxPodsMismatch::Above { .. })
        ));
        assert!(matches!(
            compare_max_pods(145, 144, 0),
            Some(MaxPodsMismatch::Above {
                recommended: 110,
                ..
            })
        ));
    }

    #[test]
    fn host_network_pods_widen_the_upper_bound_only() {
        // m5.large secondary (9 IPs) with two HostProcess pods: 11 as the README advises.
        assert_eq!(compare_max_pods(11, 9, 2), None);
        assert!(matches!(
            compare_max_pods(12, 9, 2),
            Some(MaxPodsMismatch::Above { recommended: 9, .. })
        ));
        // The lower bound stays: below the capacity still leaves addresses unused.
        assert!(matches!(
            compare_max_pods(8, 9, 2),
            Some(MaxPodsMismatch::Below { .. })
        ));
        assert_eq!(compare_max_pods(u32::MAX, u32::MAX, 5), None);
    }

    #[test]
    fn the_recommended_value_always_agrees() {
        for ip_capacity in 0..=800 {
            let value = kubelet_max_pods(ip_capacity);
            assert_eq!(
                compare_max_pods(value, ip_capacity, 0),
                None,
                "{ip_capacity}"
            );
            if let Some(m) = compare_max_pods(value + 1000, ip_capacity, 0) {
                assert_eq!(m.recommended(), value);
            }
        }
    }
}
