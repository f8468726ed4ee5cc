//! AdmissionReview bodies through the mutating and validating handlers.

use futures::future::BoxFuture;
use serde_json::Value;
use winipam::webhook::placement::{IP_RESOURCE, OS_LABEL};
use winipam::webhook::runtimeclass::{Lookup, RuntimeClassLookup};
use winipam::webhook::validate::IP_ANNOTATION;
use winipam::webhook::{mutate, validate};

use crate::split_selector;

const CONTROLLER: &str = "system:serviceaccount:winipam-system:winipam";

/// RuntimeClasses by name: `windows*` select Windows, `broken*` fail, others select nothing.
struct Classes;

impl RuntimeClassLookup for Classes {
    fn node_selector<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup> {
        let answer = if name.starts_with("windows") {
            Ok(Some([(OS_LABEL.to_owned(), "windows".to_owned())].into()))
        } else if name.starts_with("broken") {
            Err("lookup failed".to_owned())
        } else {
            Ok(None)
        };
        Box::pin(async move { answer })
    }
}

/// The first byte picks the handler; the rest is the body.
pub fn admission(data: &[u8]) {
    let Some((selector, body)) = split_selector(data) else {
        return;
    };
    let allowed = vec![CONTROLLER.to_owned()];
    let mutating = selector % 2 == 1;
    let result = if mutating {
        futures::executor::block_on(mutate::review(body, &Classes))
    } else {
        validate::review(body, &allowed)
    };
    // A body the handler cannot read is a 400 with a message; that is the whole contract.
    let Ok(review) = result else { return };
    let out = serde_json::to_value(&review).expect("a review serializes");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    // serde_json skips fields a type ignores without checking their escapes, so a body the
    // handler reads may still not be a JSON value (a lone surrogate in such a field).
    let Ok(input) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let request = &input["request"];
    let response = &out["response"];
    assert_eq!(
        response["uid"], request["uid"],
        "the response answers the request"
    );
    if mutating {
        check_mutation(request, response);
    } else {
        check_validation(request, response);
    }
}

/// Never denies; a patch applies to the object sent and puts the resource on the first container.
fn check_mutation(request: &Value, response: &Value) {
    assert_eq!(
        response["allowed"], true,
        "the mutating webhook never denies"
    );
    let Some(patch) = response.get("patch") else {
        return;
    };
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(response["patchType"], "JSONPatch");
    // kube-core writes the bytes as a JSON array of numbers (Go's decoder takes both forms).
    let bytes: Vec<u8> = serde_json::from_value(patch.clone()).expect("the patch bytes");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let mut pod = request["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod");
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"][IP_RESOURCE], "1");
    assert_eq!(resources["limits"][IP_RESOURCE], "1");
}

/// The handler applies the rule to what the request says: the annotation before and after
/// (CREATE has no before) and the user; other operations are not judged.
fn check_validation(request: &Value, response: &Value) {
    fn annotation(object: &Value) -> Option<&str> {
        object["metadata"]["annotations"][IP_ANNOTATION].as_str()
    }
    let operation = request["operation"].as_str().unwrap_or_default();
    let old = match operation {
        "UPDATE" => annotation(&request["oldObject"]),
        _ => None,
    };
    let user = request["userInfo"]["username"].as_str().unwrap_or_default();
    let verdict = validate::check(
        old,
        annotation(&request["object"]),
        user,
        &[CONTROLLER.to_owned()],
    );
    let judged = matches!(operation, "CREATE" | "UPDATE");
    assert_eq!(
        response["allowed"],
        !judged || verdict.is_ok(),
        "{operation} by {user}"
    );
    if let (true, Err(message)) = (judged, verdict) {
        assert_eq!(response["status"]["message"], message.as_str());
    }
}
