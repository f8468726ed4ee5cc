//! AdmissionReview in and out: parsing the apiserver's body, and the responses.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Resource};
use serde::de::DeserializeOwned;

/// A body that is not an AdmissionReview with a request: answered with HTTP 400 and this
/// message (the apiserver then applies the webhook's failurePolicy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Parses an `admission.k8s.io/v1` AdmissionReview of a `kind` and takes its request out.
pub fn parse_request<T>(body: &[u8], kind: &str) -> Result<AdmissionRequest<T>, BadRequest>
where
    T: Resource + DeserializeOwned,
{
    let review: AdmissionReview<T> = serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "the request body is not an admission.k8s.io/v1 AdmissionReview of a {kind}: {e}"
        ))
    })?;
    review
        .try_into()
        .map_err(|_| BadRequest("the AdmissionReview has no `request`".to_owned()))
}

/// A denial as the apiserver shows it to the user: HTTP 403 Forbidden with `message`.
pub fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".to_owned();
    response
}

pub type Review = AdmissionReview<DynamicObject>;
