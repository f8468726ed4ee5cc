//! The pod annotation write, atomic against the pod's UID (SPEC 6.2).
//!
//! One JSON Patch carries the preconditions and the write, so the apiserver applies it to the
//! current object or not at all (it re-applies a patch on a resourceVersion conflict, re-checking
//! every `test`):
//! - `test /metadata/uid == uid`: a pod deleted and re-created under the same name fails it;
//! - `test <annotation> == null`: the apiserver's JSON Patch (evanphx/json-patch) treats a missing
//!   member as null, so this passes only when the annotation is absent: never overwrite;
//! - `add <annotation>`.
//!
//! `add` needs the parent `/metadata/annotations` map to exist. When the pod has none, the
//! apiserver answers 422 like for a failed `test`, so a failed patch is followed by a read of
//! the pod's metadata that decides what happened; when the map is missing, a second patch tests
//! that it is still absent (null) and adds it whole, so concurrent writers of other annotations
//! are never clobbered. The read only classifies; it never licenses a write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::cluster::AnnotateOutcome;
use super::views::PRIVATE_IPV4_ADDRESS;

/// JSON Pointer escaping of one reference token (RFC 6901).
pub(crate) fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn annotation_path() -> String {
    format!(
        "/metadata/annotations/{}",
        escape_pointer_token(PRIVATE_IPV4_ADDRESS)
    )
}

/// The patch for a pod that has an annotations map.
pub(crate) fn patch_into_existing_map(uid: &str, value: &str) -> Value {
    let path = annotation_path();
    json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": path, "value": null},
        {"op": "add", "path": path, "value": value},
    ])
}

/// The patch for a pod without an annotations map.
pub(crate) fn patch_with_new_map(uid: &str, value: &str) -> Value {
    json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": "/metadata/annotations", "value": null},
        {"op": "add", "path": "/metadata/annotations", "value": {PRIVATE_IPV4_ADDRESS: value}},
    ])
}

/// What to do after a patch was refused, given the pod's current metadata (`None`: not found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextStep {
    Done(AnnotateOutcome),
    PatchIntoExistingMap,
    PatchWithNewMap,
}

pub(crate) fn next_step(meta: Option<&ObjectMeta>, uid: &str) -> NextStep {
    let Some(meta) = meta else {
        return NextStep::Done(AnnotateOutcome::PodGone);
    };
    if meta.uid.as_deref() != Some(uid) {
        return NextStep::Done(AnnotateOutcome::PodGone);
    }
    match meta.annotations.as_ref() {
        None => NextStep::PatchWithNewMap,
        Some(map) => existing(map)
            .map(|v| NextStep::Done(AnnotateOutcome::AlreadyAnnotated(v)))
            .unwrap_or(NextStep::PatchIntoExistingMap),
    }
}

fn existing(map: &BTreeMap<String, String>) -> Option<String> {
    map.get(PRIVATE_IPV4_ADDRESS).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escaping() {
        assert_eq!(
            escape_pointer_token("vpc.amazonaws.com/PrivateIPv4Address"),
            "vpc.amazonaws.com~1PrivateIPv4Address"
        );
        assert_eq!(escape_pointer_token("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn patches_test_uid_first_and_absence_before_adding() {
        let p = patch_into_existing_map("u1", "10.0.0.5/19");
        assert_eq!(
            p[0],
            json!({"op": "test", "path": "/metadata/uid", "value": "u1"})
        );
        assert_eq!(
            p[1],
            json!({"op": "test", "path": "/metadata/annotations/vpc.amazonaws.com~1PrivateIPv4Address", "value": null})
        );
        assert_eq!(p[2]["op"], "add");
        assert_eq!(p[2]["value"], "10.0.0.5/19");

        let q = patch_with_new_map("u1", "10.0.0.5/32");
        assert_eq!(q[0]["path"], "/metadata/uid");
        assert_eq!(
            q[1],
            json!({"op": "test", "path": "/metadata/annotations", "value": null})
        );
        assert_eq!(
            q[2]["value"],
            json!({"vpc.amazonaws.com/PrivateIPv4Address": "10.0.0.5/32"})
        );
        // Both must parse as the JSON Patch kube sends.
        for patch in [p, q] {
            let parsed: Result<kube::api::Patch<()>, _> =
                serde_json::from_value(patch).map(kube::api::Patch::Json);
            assert!(parsed.is_ok());
        }
    }

    fn meta(uid: &str, annotations: Option<&[(&str, &str)]>) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            annotations: annotations.map(|a| {
                a.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn classification_after_a_refused_patch() {
        assert_eq!(
            next_step(None, "u1"),
            NextStep::Done(AnnotateOutcome::PodGone)
        );
        assert_eq!(
            next_step(Some(&meta("u2", None)), "u1"),
            NextStep::Done(AnnotateOutcome::PodGone)
        );
        assert_eq!(
            next_step(Some(&meta("u1", None)), "u1"),
            NextStep::PatchWithNewMap
        );
        assert_eq!(
            next_step(Some(&meta("u1", Some(&[("other", "x")]))), "u1"),
            NextStep::PatchIntoExistingMap
        );
        assert_eq!(
            next_step(
                Some(&meta("u1", Some(&[(PRIVATE_IPV4_ADDRESS, "10.0.0.9/19")]))),
                "u1"
            ),
            NextStep::Done(AnnotateOutcome::AlreadyAnnotated("10.0.0.9/19".into()))
        );
    }
}
