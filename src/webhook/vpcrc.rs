//! Whether the VPC Resource Controller's Windows IPAM is on, for the validating webhook: while
//! `kube-system/amazon-vpc-cni` says `enable-windows-ipam: "true"` that controller writes the
//! address annotation (winipam is paused, SPEC 3.2), so its identities may write it too, as the
//! chart's ValidatingAdmissionPolicy allows them (issue 16). Denying them would stop the VPC
//! Resource Controller's Windows IPAM whenever winipam is installed beside it, as during a
//! migration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::AbortOnDrop;
use crate::k8s::views::foreign_ipam_enabled;
use crate::k8s::{FOREIGN_IPAM_CONFIG_MAP, FOREIGN_IPAM_NAMESPACE};

/// The identities the VPC Resource Controller writes the annotation as: EKS's managed
/// controller, and the ServiceAccounts of the self-installed one (old and new name).
pub const VPC_RESOURCE_CONTROLLER_USERS: [&str; 3] = [
    "eks:vpc-resource-controller",
    "system:serviceaccount:kube-system:vpc-resource-controller",
    "system:serviceaccount:kube-system:eks-vpc-resource-controller",
];

/// The users that may write the annotation: `allowed_users`, and the VPC Resource
/// Controller's identities while its Windows IPAM is on.
pub fn writers(allowed_users: &[String], vpc_rc_on: bool) -> Vec<String> {
    let mut users = allowed_users.to_vec();
    if vpc_rc_on {
        users.extend(VPC_RESOURCE_CONTROLLER_USERS.map(str::to_owned));
    }
    users
}

/// The switch, kept current by a watch of the one ConfigMap (the chart grants get, list and
/// watch on it by name). Off until the watch says otherwise, and off when the ConfigMap is
/// missing: the VPC Resource Controller then does not hand out Windows addresses.
pub struct VpcRcSwitch {
    on: Arc<AtomicBool>,
    _watch: Option<AbortOnDrop>,
}

impl VpcRcSwitch {
    /// A switch that stays where it is put (tests).
    pub fn fixed(on: bool) -> Self {
        VpcRcSwitch {
            on: Arc::new(AtomicBool::new(on)),
            _watch: None,
        }
    }

    /// Starts the watch on the current tokio runtime; it stops when the value is dropped.
    pub fn watch(client: Client) -> Self {
        let api = Api::<ConfigMap>::namespaced(client, FOREIGN_IPAM_NAMESPACE);
        let config =
            watcher::Config::default().fields(&format!("metadata.name={FOREIGN_IPAM_CONFIG_MAP}"));
        let on = Arc::new(AtomicBool::new(false));
        let flag = on.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            // During a relist the last answer stands until the list is complete.
            let mut listed = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => listed = false,
                    Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                        listed = true;
                        let data = cm.data.unwrap_or_default();
                        flag.store(foreign_ipam_enabled(&data), Ordering::Relaxed);
                    }
                    Ok(watcher::Event::InitDone) if !listed => flag.store(false, Ordering::Relaxed),
                    Ok(watcher::Event::InitDone) => {}
                    Ok(watcher::Event::Delete(_)) => flag.store(false, Ordering::Relaxed),
                    // The backoff retries; the last known answer stays meanwhile.
                    Err(e) => {
                        tracing::warn!(error = %e, "watching kube-system/amazon-vpc-cni failed")
                    }
                }
            }
        });
        VpcRcSwitch {
            on,
            _watch: Some(AbortOnDrop(task)),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::validate::check;

    #[test]
    fn the_vpc_resource_controller_writes_only_while_its_ipam_is_on() {
        let controller = vec!["system:serviceaccount:winipam-system:winipam".to_owned()];
        let ip = Some("10.0.0.5/19");
        for user in VPC_RESOURCE_CONTROLLER_USERS {
            assert!(
                check(None, ip, user, &writers(&controller, true)).is_ok(),
                "{user}"
            );
            assert!(
                check(None, ip, user, &writers(&controller, false)).is_err(),
                "{user}"
            );
        }
        for on in [true, false] {
            let users = writers(&controller, on);
            assert!(check(None, ip, "alice", &users).is_err());
            assert!(check(None, ip, &controller[0], &users).is_ok());
        }
        assert!(!VpcRcSwitch::fixed(false).is_on());
        assert!(VpcRcSwitch::fixed(true).is_on());
    }
}
