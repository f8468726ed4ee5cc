//! The validating webhook (`/validate-pods`, pod CREATE and UPDATE): the address annotation
//! `vpc.amazonaws.com/PrivateIPv4Address` is winipam's alone. Setting, changing or removing it is
//! denied unless the request comes from one of the controller's ServiceAccounts: the Windows CNI
//! wires the pod with that address, so it must never change while the pod lives (SPEC 2, 9).
//! While winipam is paused for it, the VPC Resource Controller's writes are also judged against
//! winipam's records of the pod's node ([`super::handback`]).

use std::net::Ipv4Addr;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::handback::PodWrite;
use super::pool_records::HandBack;
use super::review::{BadRequest, Review, deny, parse_request};
use super::vpcrc::VPC_RESOURCE_CONTROLLER_USERS;

/// The pod annotation holding the address (SPEC section 2).
pub const IP_ANNOTATION: &str = "vpc.amazonaws.com/PrivateIPv4Address";

/// Answers one AdmissionReview body; `allowed_users` are the usernames
/// (`system:serviceaccount:NS:NAME`) that may write the annotation. `hand_back` is given while
/// the VPC Resource Controller's Windows IPAM is on: it judges that controller's writes.
pub fn review(
    body: &[u8],
    allowed_users: &[String],
    hand_back: Option<&dyn HandBack>,
) -> Result<Review, BadRequest> {
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
    let judged =
        check(old.as_deref(), new.as_deref(), username, allowed_users).and_then(
            |()| match hand_back {
                Some(hand_back)
                    if VPC_RESOURCE_CONTROLLER_USERS.contains(&username) && old != new =>
                {
                    judge_hand_back(&request, old.as_deref(), new.as_deref(), hand_back)
                }
                _ => Ok(()),
            },
        );
    match judged {
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

/// The VPC Resource Controller sets or changes the address from `old` to `new`: judged against
/// winipam's records of the pod's node. A pod not bound to a node, or an annotation without an
/// address, has nothing of winipam's to keep.
fn judge_hand_back(
    request: &AdmissionRequest<DynamicObject>,
    old: Option<&str>,
    new: Option<&str>,
    hand_back: &dyn HandBack,
) -> Result<(), String> {
    let (Some(node), Some(addr)) = (node_of(&request.object), address(new)) else {
        return Ok(());
    };
    let metadata = request.object.as_ref().map(|o| &o.metadata);
    hand_back.judge(&PodWrite {
        namespace: request.namespace.as_deref().unwrap_or_default(),
        name: &request.name,
        uid: metadata.and_then(|m| m.uid.as_deref()).unwrap_or_default(),
        node,
        current: address(old),
        addr,
    })
}

/// The node a pod is bound to (`spec.nodeName`).
fn node_of(object: &Option<DynamicObject>) -> Option<&str> {
    object.as_ref()?.data.get("spec")?.get("nodeName")?.as_str()
}

/// The address of an annotation value (`10.0.37.15/19`, or a bare address).
fn address(annotation: Option<&str>) -> Option<Ipv4Addr> {
    let value = annotation?;
    value.split('/').next()?.trim().parse().ok()
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
        let review = review(body, &allowed(), None).expect("a review");
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

    /// Denies every write it is asked about, and notes what it was asked.
    struct DenyAll(std::sync::Mutex<Vec<String>>);

    impl HandBack for DenyAll {
        fn judge(&self, w: &PodWrite<'_>) -> Result<(), String> {
            let asked = format!(
                "{}/{} {} on {} {:?} -> {}",
                w.namespace, w.name, w.uid, w.node, w.current, w.addr
            );
            self.0.lock().unwrap().push(asked);
            Err("kept from reuse".to_owned())
        }
    }

    #[test]
    fn the_vpc_resource_controllers_writes_are_judged_only_when_they_set_or_change_it() {
        let vpc_rc = "system:serviceaccount:kube-system:eks-vpc-resource-controller";
        let users = super::super::vpcrc::writers(&allowed(), true);
        let bound = |operation: &str, user: &str, old: Option<&str>, new: Option<&str>| {
            let mut value: Value =
                serde_json::from_slice(&body(operation, user, old, new)).unwrap();
            value["request"]["object"]["spec"]["nodeName"] = json!("n0");
            value["request"]["object"]["metadata"]["uid"] = json!("u-9");
            serde_json::to_vec(&value).unwrap()
        };
        let hand_back = DenyAll(Default::default());
        let allowed_by = |body: &[u8], hand_back: Option<&dyn HandBack>| -> bool {
            let review = review(body, &users, hand_back).expect("a review");
            serde_json::to_value(&review).unwrap()["response"]["allowed"] == true
        };
        let ip = Some("10.0.0.5/19");
        // (case, body, allowed)
        let cases: [(&str, Vec<u8>, bool); 6] = [
            ("sets it", bound("UPDATE", vpc_rc, None, ip), false),
            (
                "changes it",
                bound("UPDATE", vpc_rc, Some("10.0.0.4/19"), ip),
                false,
            ),
            ("leaves it", bound("UPDATE", vpc_rc, ip, ip), true),
            ("removes it", bound("UPDATE", vpc_rc, ip, None), true),
            (
                "winipam sets it",
                bound("UPDATE", CONTROLLER, None, ip),
                true,
            ),
            // Not bound to a node: no record to judge against.
            ("unbound", body("UPDATE", vpc_rc, None, ip), true),
        ];
        for (case, body, want) in &cases {
            assert_eq!(allowed_by(body, Some(&hand_back)), *want, "{case}");
            // With the VPC Resource Controller off (no judge) its writes are not for winipam to judge.
            assert!(allowed_by(body, None), "{case}, no judge");
        }
        assert_eq!(
            *hand_back.0.lock().unwrap(),
            [
                "ns/p u-9 on n0 None -> 10.0.0.5",
                "ns/p u-9 on n0 Some(10.0.0.4) -> 10.0.0.5"
            ]
        );
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [&b"[]"[..], b"null", b"{\"request\": 5}"] {
            let err = review(body, &allowed(), None).expect_err("a bad request");
            assert!(err.0.contains("AdmissionReview"), "{err}");
        }
    }
}
