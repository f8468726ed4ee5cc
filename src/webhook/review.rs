//! AdmissionReview in and out: parsing the apiserver's body, and the responses.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Resource};
use serde::de::DeserializeOwned;

const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

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
    // The response repeats the request's apiVersion and kind, so anything but the version the
    // webhook configurations register (v1) would be answered with a review the apiserver
    // cannot read.
    let types = &review.types;
    if types.api_version != REVIEW_API_VERSION || types.kind != REVIEW_KIND {
        return Err(BadRequest(format!(
            "the request body is a {:?} of apiVersion {:?}, not an {REVIEW_API_VERSION} \
             {REVIEW_KIND}",
            types.kind, types.api_version
        )));
    }
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
