//! The kustomize base's RBAC applied for a controller in a test's own namespace.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use super::controlplane::ControlPlane;

/// Applies the base's RBAC for a controller in `namespace`: the files as they are, with the
/// namespace `winipam-system` replaced, and the bindings outside it (cluster-wide and in
/// kube-system) renamed per namespace so tests do not take them from each other.
pub async fn apply_rbac(cp: &ControlPlane, namespace: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kustomize/base");
    let files: Vec<PathBuf> = super::deploy::BASE_RBAC_FILES
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut items = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read an RBAC file");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut object = Value::deserialize(doc).expect("valid YAML");
            if object.is_null() {
                continue;
            }
            retarget(&mut object, namespace);
            items.push(object);
        }
    }
    assert!(
        items.len() >= 6,
        "the base holds the ServiceAccount, roles and bindings"
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let path = cp.dir().join(format!("rbac-{namespace}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&list).expect("JSON")).expect("write RBAC");
    cp.apply_yaml_file(&path).await;
}

fn retarget(object: &mut Value, namespace: &str) {
    const DEPLOYED: &str = "winipam-system";
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let meta = &mut object["metadata"];
    let own_namespace = meta["namespace"].as_str() == Some(DEPLOYED);
    if own_namespace {
        meta["namespace"] = json!(namespace);
    }
    if kind.ends_with("Binding") {
        if !own_namespace {
            let name = meta["name"].as_str().unwrap_or("winipam").to_owned();
            meta["name"] = json!(format!("{name}-{namespace}"));
        }
        if let Some(subjects) = object["subjects"].as_array_mut() {
            for s in subjects {
                if s["namespace"].as_str() == Some(DEPLOYED) {
                    s["namespace"] = json!(namespace);
                }
            }
        }
    }
}
