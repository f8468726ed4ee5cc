//! The NodeAddressPool custom resource: one per managed node, same name as the node, owned by the
//! Node (garbage-collected with it). Status only: the controller writes it for people and
//! dashboards; the one thing read back to decide is the cool-down records, so a restart or a
//! failover honours cool-downs that were running (SPEC section 8).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec is empty: everything about a node's pool is decided from the cluster and EC2.
// clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "winipam.dev",
    version = "v1alpha1",
    kind = "NodeAddressPool",
    plural = "nodeaddresspools",
    singular = "nodeaddresspool",
    shortname = "nap",
    category = "winipam",
    status = "NodeAddressPoolStatus",
    doc = "Pod IPv4 addresses winipam manages on one Windows node's primary ENI.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(name = "Capacity", type_ = "integer", json_path = ".status.capacity"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.counts.used"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.counts.free"),
    printcolumn(
        name = "Cooling",
        type_ = "integer",
        json_path = ".status.counts.cooling"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct NodeAddressPoolSpec {}

/// What winipam knows of the node's addresses, as of its last reconcile.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddressPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_cidr: Option<String>,
    /// `secondary` or `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Pod addresses the ENI can give in the current mode (the extended resource's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub counts: AddressCounts,
    /// /28 prefixes on the ENI (prefix mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Addresses pods hold, as of this status (written before their annotations). Read back on
    /// restart: one whose pod went away while no controller ran cools down from the restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_addresses: Vec<String>,
    /// Free addresses the controller may hand out next, listed before pods take
    /// them so that a pod's annotation needs no status write of its own. Read back on restart
    /// as possibly in use: one no live pod's annotation names cools down from the restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ahead_addresses: Vec<String>,
    /// Addresses freed and not yet reusable, with the time they may be reused (RFC 3339).
    /// Read back on restart so a cool-down is never shortened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cooldowns: Vec<CooldownRecord>,
    /// Secondary IPs (as /32) and /28 prefixes being given back to EC2, listed before the call
    /// goes out and for 60 s after it (EC2's describes may show them that long). Read back on
    /// restart: a new leader does not count them as free until a later describe shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releasing: Vec<String>,
    /// Ready, Unsupported, SubnetExhausted, Blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ec2_error: Option<Ec2ErrorRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddressCounts {
    pub used: u32,
    pub free: u32,
    pub cooling: u32,
    /// Addresses being assigned by an EC2 call in flight.
    pub pending: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CooldownRecord {
    pub address: String,
    /// RFC 3339 time after which the address may be handed out again.
    pub until: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Ec2ErrorRecord {
    pub operation: String,
    pub code: String,
    pub message: String,
    /// RFC 3339.
    pub time: String,
}

/// The CRD as YAML, as `winipam crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    let body = serde_yaml_ng::to_string(&NodeAddressPool::crd())?;
    Ok(format!(
        "# Generated by `winipam crd` from src/crd.rs: do not edit by hand.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is what admins and the Helm chart install: it must be what the types generate.
    #[test]
    fn crds_dir_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/nodeaddresspool.yaml");
        let generated = crd_yaml().unwrap();
        if std::env::var_os("WINIPAM_UPDATE_CRDS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "crds/nodeaddresspool.yaml is out of date: run \
             `WINIPAM_UPDATE_CRDS=1 cargo test --lib crd` (or `winipam crd > crds/nodeaddresspool.yaml`)"
        );
    }

    #[test]
    fn crd_is_cluster_scoped_with_status_and_short_name() {
        use kube::CustomResourceExt;
        let crd = NodeAddressPool::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["nap".to_string()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Mode", "Capacity", "Used", "Free", "Cooling", "Ready", "Age"
            ]
        );
    }
}
