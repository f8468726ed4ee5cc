//! The mutating webhook (`/mutate-pods`, pod CREATE): a pod that will land on Windows gets
//! `vpc.amazonaws.com/PrivateIPv4Address: "1"` in the requests and limits of its first
//! container, so the scheduler counts it against the node's pod-IP capacity (SPEC section 9).
//!
//! It never denies: a pod it cannot decide about (RuntimeClass lookup failed) is let through
//! unchanged and logged, as failurePolicy Ignore would do.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::admission::{AdmissionResponse, Operation};
use serde_json::{Value, json};

use super::placement::{self, IP_RESOURCE, Injection};
use super::review::{BadRequest, Review, parse_request};
use super::runtimeclass::RuntimeClassLookup;

/// The resource quantity added: one address per pod.
const ONE: &str = "1";

/// Answers one AdmissionReview body.
pub async fn review(
    body: &[u8],
    runtime_classes: &dyn RuntimeClassLookup,
) -> Result<Review, BadRequest> {
    let request = parse_request::<Pod>(body, "Pod")?;
    let response = AdmissionResponse::from(&request);
    let pod = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => pod,
        _ => return Ok(response.into_review()),
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(response.into_review());
    };
    let who = format!(
        "{}/{}",
        request.namespace.as_deref().unwrap_or_default(),
        pod_name(pod)
    );
    let mut decision = placement::injection(spec);
    if let Injection::AskRuntimeClass(name) = &decision {
        decision = match runtime_classes.node_selector(name).await {
            Ok(selector) => placement::runtime_class_injection(selector.as_ref()),
            Err(e) => {
                tracing::warn!(pod = %who, error = %e, "cannot tell whether the pod lands on Windows; admitted without the IP resource");
                return Ok(response.into_review());
            }
        };
    }
    let Injection::Inject(by) = decision else {
        tracing::debug!(pod = %who, ?decision, "pod left alone");
        return Ok(response.into_review());
    };
    // `injection` returned Inject, so there is a first container.
    let Some(first) = spec.containers.first() else {
        return Ok(response.into_review());
    };
    let patch = resource_patch(first);
    match response.clone().with_patch(patch) {
        Ok(patched) => {
            tracing::debug!(pod = %who, ?by, "Windows pod: IP resource added to its first container");
            Ok(patched.into_review())
        }
        Err(e) => {
            tracing::error!(pod = %who, error = %e, "cannot serialize the patch; admitted unchanged");
            Ok(response.into_review())
        }
    }
}

/// `metadata.name`, or `generateName*` for a pod whose name the apiserver has yet to generate.
fn pod_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => String::new(),
    }
}

/// JSON Patch adding the IP resource to the requests and limits of the first container,
/// creating `resources`, `requests` and `limits` where absent (an `add` into a missing parent
/// fails, so the parent is added whole instead).
pub fn resource_patch(first: &Container) -> Patch {
    let container = ["spec", "containers", "0"];
    let add = |tokens: &[&str], value: Value| {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(container.iter().chain(tokens).copied()),
            value,
        })
    };
    let Some(resources) = first.resources.as_ref() else {
        return Patch(vec![add(
            &["resources"],
            json!({ "requests": { IP_RESOURCE: ONE }, "limits": { IP_RESOURCE: ONE } }),
        )]);
    };
    let operations = [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ]
    .into_iter()
    .map(|(field, map)| match map {
        // The token is unescaped: jsonptr encodes `/` as `~1`.
        Some(_) => add(&["resources", field, IP_RESOURCE], json!(ONE)),
        None => add(&["resources", field], json!({ IP_RESOURCE: ONE })),
    })
    .collect();
    Patch(operations)
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
