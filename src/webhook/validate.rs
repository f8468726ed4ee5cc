//! The validating webhook (`/validate-pods`, pod CREATE and UPDATE): the address annotation
//! `vpc.amazonaws.com/PrivateIPv4Address` is winipam's alone. Setting, changing or removing it is
//! denied unless the request comes from one of the controller's ServiceAccounts: the Windows CNI
//! wires the pod with that address, so it must never change while the pod lives (SPEC 2, 9).

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, Operation};

use super::review::{BadRequest, Review, deny, parse_request};

/// The pod annotation holding the address (SPEC section 2).
pub const IP_ANNOTATION: &str = "vpc.amazonaws.com/PrivateIPv4Address";

/// Answers one AdmissionReview body; `allowed_users` are the usernames
/// (`system:serviceaccount:NS:NAME`) that may write the annotation.
pub fn review(body: &[u8], allowed_users: &[String]) -> Result<Review, BadRequest> {
    let request = parse_request::<DynamicObject>(body, "Pod")?;
    let response = AdmissionResponse::from(&request);
    let annotation = |object: &Option<DynamicObject>| -> Option<String> {
        object
            .as_ref()?
            .metadata
            .annotations
            .as_ref()?
            .get(IP_ANNOTATION)
            .cloned()
    };
    let (old, new) = match request.operation {
        Operation::Create => (None, annotation(&request.object)),
        Operation::Update => (annotation(&request.old_object), annotation(&request.object)),
        _ => return Ok(response.into_review()),
    };
    let username = request.user_info.username.as_deref().unwrap_or_default();
    match check(old.as_deref(), new.as_deref(), username, allowed_users) {
        Ok(()) => Ok(response.into_review()),
        Err(message) => {
            tracing::info!(
                pod = %format!("{}/{}", request.namespace.as_deref().unwrap_or_default(), request.name),
                user = %username,
                "denied a write of the address annotation"
            );
            Ok(deny(response, message).into_review())
        }
    }
}

/// The rule, pure: the annotation may go from `old` to `new` when it does not change, or when
/// `username` is allowed. `Err` holds the message the user sees.
pub fn check(
    old: Option<&str>,
    new: Option<&str>,
    username: &str,
    allowed_users: &[String],
) -> Result<(), String> {
    if old == new || allowed_users.iter().any(|u| u == username) {
        return Ok(());
    }
    let change = match (old, new) {
        (None, Some(new)) => format!("this request sets it to {new:?}"),
        (Some(old), Some(new)) => format!("this request changes it from {old:?} to {new:?}"),
        (Some(old), None) => format!("this request removes it (it was {old:?})"),
        (None, None) => String::new(),
    };
    let who = match allowed_users {
        [] => "the winipam controller".to_owned(),
        [one] => one.clone(),
        many => many.join(" or "),
    };
    Err(format!(
        "annotation {IP_ANNOTATION} is managed by winipam: only {who} may set or change it \
         (the Windows CNI wires the pod with this address); {change}, as {username}"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const CONTROLLER: &str = "system:serviceaccount:winipam-system:winipam";

    fn allowed() -> Vec<String> {
        vec![CONTROLLER.to_owned()]
    }

    #[test]
    fn check_table() {
        let ip = Some("10.0.37.15/19");
        let other = Some("10.0.37.16/19");
        let table = [
            ("create without", None, None, "alice", true),
            ("create with, by a user", None, ip, "alice", false),
            ("create with, by the controller", None, ip, CONTROLLER, true),
            ("set by a user", None, ip, "alice", false),
            ("set by the controller", None, ip, CONTROLLER, true),
            ("unchanged, by a user", ip, ip, "alice", true),
            ("changed by a user", ip, other, "alice", false),
            ("changed by the controller", ip, other, CONTROLLER, true),
            ("removed by a user", ip, None, "alice", false),
            ("removed by the controller", ip, None, CONTROLLER, true),
            (
                "another service account",
                None,
                ip,
                "system:serviceaccount:default:winipam",
                false,
            ),
            ("empty username", None, ip, "", false),
        ];
        for (name, old, new, user, ok) in table {
            assert_eq!(check(old, new, user, &allowed()).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn messages_say_which_annotation_who_and_why() {
        let set = check(None, Some("10.0.0.5/19"), "alice", &allowed()).unwrap_err();
        assert_eq!(
            set,
            "annotation vpc.amazonaws.com/PrivateIPv4Address is managed by winipam: only \
             system:serviceaccount:winipam-system:winipam may set or change it (the Windows CNI \
             wires the pod with this address); this request sets it to \"10.0.0.5/19\", as alice"
        );
        let removed = check(Some("10.0.0.5/19"), None, "bob", &allowed()).unwrap_err();
        assert!(
            removed.contains("removes it (it was \"10.0.0.5/19\"), as bob"),
            "{removed}"
        );
        let two = vec![
            "system:serviceaccount:a:b".to_owned(),
            CONTROLLER.to_owned(),
        ];
        let changed = check(Some("1.1.1.1/32"), Some("2.2.2.2/32"), "eve", &two).unwrap_err();
        assert!(
            changed.contains(
                "only system:serviceaccount:a:b or system:serviceaccount:winipam-system:winipam may"
            ),
            "{changed}"
        );
    }

    fn body(operation: &str, user: &str, old: Option<&str>, new: Option<&str>) -> Vec<u8> {
        let pod = |ip: Option<&str>| -> Value {
            let annotations = match ip {
                Some(ip) => json!({ IP_ANNOTATION: ip, "other": "x" }),
                None => json!({ "other": "x" }),
            };
            json!({ "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": "p", "namespace": "ns", "annotations": annotations },
                    "spec": { "containers": [{ "name": "a" }] } })
        };
        let old_object = if operation == "UPDATE" {
            pod(old)
        } else {
            Value::Null
        };
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "name": "p", "namespace": "ns", "operation": operation,
                "userInfo": { "username": user, "groups": ["system:authenticated"] },
                "object": pod(new), "oldObject": old_object
            }
        }))
        .unwrap()
    }

    fn response(body: &[u8]) -> Value {
        let review = review(body, &allowed()).expect("a review");
        let value = serde_json::to_value(&review).unwrap();
        assert_eq!(value["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(value["kind"], "AdmissionReview");
        value["response"].clone()
    }

    #[test]
    fn handler_allows_and_denies() {
        let ip = Some("10.0.0.5/19");
        let denied = response(&body("CREATE", "alice", None, ip));
        assert_eq!(denied["uid"], "u-1");
        assert_eq!(denied["allowed"], false);
        assert_eq!(denied["status"]["code"], 403);
        let message = denied["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "annotation vpc.amazonaws.com/PrivateIPv4Address is managed by winipam"
            )
        );

        let patched_on = response(&body("UPDATE", "alice", None, ip));
        assert_eq!(patched_on["allowed"], false);
        let removed = response(&body("UPDATE", "alice", ip, None));
        assert_eq!(removed["allowed"], false);

        for (name, allowed) in [
            (
                "controller sets",
                response(&body("UPDATE", CONTROLLER, None, ip)),
            ),
            (
                "unrelated update",
                response(&body("UPDATE", "alice", ip, ip)),
            ),
            (
                "create without",
                response(&body("CREATE", "alice", None, None)),
            ),
            (
                "delete is not judged",
                response(&body("DELETE", "alice", ip, None)),
            ),
        ] {
            assert_eq!(allowed["allowed"], true, "{name}");
            assert!(allowed.get("patch").is_none(), "{name}");
        }
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [&b"[]"[..], b"null", b"{\"request\": 5}"] {
            let err = review(body, &allowed()).expect_err("a bad request");
            assert!(err.0.contains("AdmissionReview"), "{err}");
        }
    }
}
