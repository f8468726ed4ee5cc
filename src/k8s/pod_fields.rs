//! The fields of a Pod winipam reads, decoded from the apiserver's JSON, and nothing else.
//!
//! Every change of a pod reaches the controller as a watch event carrying the whole Pod, and the
//! answer to each annotation PATCH is the whole Pod again: several kilobytes, most of them
//! `managedFields` (a JSON tree per field manager) and the containers' specs and statuses. Decoded
//! as `k8s_openapi`'s `Pod`, all of it was built into maps, strings and vectors only to be
//! dropped when the view was taken (a tenth of the controller's CPU in a profile of the
//! real-apiserver scale harness, #18). Here serde skips what is not named below without
//! building anything; [`crate::k8s::views::pod_view`] reads the rest.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::{Deserialize, Deserializer};

/// A Pod as winipam decodes it: kube's watcher and the annotation PATCH use it in place of
/// `Pod` (`Api<PodFields>`), with the same resource path.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodFields {
    /// Only the fields of [`Meta`]; kube's watcher reads `resourceVersion` from here.
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SpecFields>,
    #[serde(default)]
    pub status: Option<StatusFields>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecFields {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatusFields {
    #[serde(default)]
    pub phase: Option<String>,
}

/// The metadata winipam reads (and the watcher's `resourceVersion`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
}

fn meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        annotations: m.annotations,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

impl Resource for PodFields {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;

    /// A pod as the apiserver sends it: managed fields, containers, conditions and all.
    fn full_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0",
                "generateName": "web-",
                "namespace": "apps",
                "uid": "0d5f6a36-4c3e-4c47-9a6e-1f2b3c4d5e6f",
                "resourceVersion": "4711",
                "creationTimestamp": "2026-12-06T10:00:00Z",
                "deletionTimestamp": "2026-12-06T10:05:00Z",
                "labels": {"app": "web"},
                "annotations": {"vpc.amazonaws.com/PrivateIPv4Address": "10.0.37.15/19"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d9", "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                    "apiVersion": "v1", "time": "2026-12-06T10:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
            },
            "spec": {
                "nodeName": "ip-10-0-0-1",
                "hostNetwork": true,
                "containers": [{"name": "c", "image": "pause", "resources": {},
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                "tolerations": [{"key": "os", "operator": "Equal", "value": "windows"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "podIPs": [{"ip": "10.0.37.15"}]
            }
        })
    }

    #[test]
    fn reads_what_winipam_uses_and_skips_the_rest() {
        let pod: PodFields = serde_json::from_value(full_pod()).expect("a pod");
        let m = &pod.metadata;
        assert_eq!(m.name.as_deref(), Some("web-0"));
        assert_eq!(m.namespace.as_deref(), Some("apps"));
        assert_eq!(
            m.uid.as_deref(),
            Some("0d5f6a36-4c3e-4c47-9a6e-1f2b3c4d5e6f")
        );
        assert_eq!(m.resource_version.as_deref(), Some("4711"));
        assert!(m.deletion_timestamp.is_some());
        assert_eq!(
            m.annotations.as_ref().map(|a| a.len()),
            Some(1),
            "{:?}",
            m.annotations
        );
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.labels, None);
        let spec = pod.spec.as_ref().expect("a spec");
        assert_eq!(spec.node_name.as_deref(), Some("ip-10-0-0-1"));
        assert_eq!(spec.host_network, Some(true));
        let status = pod.status.as_ref().expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }

    /// The same resource path as `Pod`: the watch and the PATCH go where they went.
    #[test]
    fn is_the_pod_resource() {
        assert_eq!(
            PodFields::url_path(&(), Some("apps")),
            Pod::url_path(&(), Some("apps"))
        );
        assert_eq!(PodFields::url_path(&(), None), Pod::url_path(&(), None));
        assert_eq!(PodFields::api_version(&()), Pod::api_version(&()));
        assert_eq!(PodFields::kind(&()), Pod::kind(&()));
    }

    #[test]
    fn absent_parts_are_absent() {
        let pod: PodFields =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("a pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("x"));
        assert!(pod.spec.is_none() && pod.status.is_none());
        let pod: PodFields = serde_json::from_value(json!({})).expect("a pod");
        assert_eq!(pod.metadata, ObjectMeta::default());
        // A null where an object may be is what `Pod` accepts too.
        let pod: PodFields =
            serde_json::from_value(json!({"metadata": {"annotations": null}, "spec": null}))
                .expect("a pod");
        assert!(pod.metadata.annotations.is_none() && pod.spec.is_none());
    }
}
