//! Table tests of the placement rules: pod specs written as JSON, as users write them.

use super::*;
use serde_json::{Value, json};

fn spec(value: Value) -> PodSpec {
    let mut value = value;
    if value.get("containers").is_none() {
        value["containers"] = json!([{ "name": "app", "image": "app" }]);
    }
    serde_json::from_value(value).expect("a pod spec")
}

fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    json!({ "key": key, "operator": operator, "values": values })
}

/// A spec with required node affinity made of `terms`, each a list of expressions.
fn affinity(terms: Vec<Vec<Value>>) -> PodSpec {
    let terms: Vec<Value> = terms
        .into_iter()
        .map(|exprs| json!({ "matchExpressions": exprs }))
        .collect();
    spec(json!({ "affinity": { "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": terms }
    }}}))
}

const INJECT_SELECTOR: Injection = Injection::Inject(WindowsBy::NodeSelector);
const INJECT_AFFINITY: Injection = Injection::Inject(WindowsBy::NodeAffinity);
const NOT_WINDOWS: Injection = Injection::Skip(Skip::NotWindows);

#[test]
fn node_selector_table() {
    let table: Vec<(&str, Value, Injection)> = vec![
        (
            "os=windows",
            json!({ OS_LABEL: "windows" }),
            INJECT_SELECTOR,
        ),
        (
            "beta os=windows",
            json!({ BETA_OS_LABEL: "windows" }),
            INJECT_SELECTOR,
        ),
        ("os=linux", json!({ OS_LABEL: "linux" }), NOT_WINDOWS),
        (
            "beta os=linux",
            json!({ BETA_OS_LABEL: "linux" }),
            NOT_WINDOWS,
        ),
        ("other label only", json!({ "disk": "ssd" }), NOT_WINDOWS),
        (
            "value case matters",
            json!({ OS_LABEL: "Windows" }),
            NOT_WINDOWS,
        ),
        (
            "windows plus others",
            json!({ OS_LABEL: "windows", "disk": "ssd" }),
            INJECT_SELECTOR,
        ),
        ("empty selector", json!({}), NOT_WINDOWS),
    ];
    for (name, selector, want) in table {
        let got = injection(&spec(json!({ "nodeSelector": selector })));
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(
        injection(&spec(json!({}))),
        NOT_WINDOWS,
        "no placement at all"
    );
}

#[test]
fn required_affinity_table() {
    let os = OS_LABEL;
    let beta = BETA_OS_LABEL;
    let table: Vec<(&str, Vec<Vec<Value>>, Injection)> = vec![
        (
            "In [windows]",
            vec![vec![expr(os, "In", &["windows"])]],
            INJECT_AFFINITY,
        ),
        (
            "beta In [windows]",
            vec![vec![expr(beta, "In", &["windows"])]],
            INJECT_AFFINITY,
        ),
        (
            "In [windows, windows]",
            vec![vec![expr(os, "In", &["windows", "windows"])]],
            INJECT_AFFINITY,
        ),
        (
            "In [windows, linux] mixes OSes",
            vec![vec![expr(os, "In", &["windows", "linux"])]],
            NOT_WINDOWS,
        ),
        (
            "In [linux]",
            vec![vec![expr(os, "In", &["linux"])]],
            NOT_WINDOWS,
        ),
        (
            "In [] admits nothing known",
            vec![vec![expr(os, "In", &[])]],
            NOT_WINDOWS,
        ),
        (
            "NotIn [linux]",
            vec![vec![expr(os, "NotIn", &["linux"])]],
            INJECT_AFFINITY,
        ),
        (
            "NotIn [linux, darwin]",
            vec![vec![expr(os, "NotIn", &["linux", "darwin"])]],
            INJECT_AFFINITY,
        ),
        (
            "NotIn [windows]",
            vec![vec![expr(os, "NotIn", &["windows"])]],
            NOT_WINDOWS,
        ),
        (
            "NotIn [linux, windows]",
            vec![vec![expr(os, "NotIn", &["linux", "windows"])]],
            NOT_WINDOWS,
        ),
        (
            "NotIn [darwin] admits linux",
            vec![vec![expr(os, "NotIn", &["darwin"])]],
            NOT_WINDOWS,
        ),
        (
            "beta NotIn [linux] admits unlabeled nodes",
            vec![vec![expr(beta, "NotIn", &["linux"])]],
            NOT_WINDOWS,
        ),
        (
            "Exists",
            vec![vec![json!({ "key": os, "operator": "Exists" })]],
            NOT_WINDOWS,
        ),
        (
            "DoesNotExist",
            vec![vec![json!({ "key": os, "operator": "DoesNotExist" })]],
            NOT_WINDOWS,
        ),
        (
            "other key In [windows]",
            vec![vec![expr("disk", "In", &["windows"])]],
            NOT_WINDOWS,
        ),
        (
            "one term, windows ANDed with another constraint",
            vec![vec![
                expr("disk", "In", &["ssd"]),
                expr(os, "In", &["windows"]),
            ]],
            INJECT_AFFINITY,
        ),
        (
            "one term, windows ANDed with linux (admits nothing, never Linux)",
            vec![vec![
                expr(os, "In", &["windows"]),
                expr(beta, "In", &["linux"]),
            ]],
            INJECT_AFFINITY,
        ),
        (
            "two terms, both windows",
            vec![
                vec![expr(os, "In", &["windows"])],
                vec![expr(beta, "In", &["windows"])],
            ],
            INJECT_AFFINITY,
        ),
        (
            "two terms, one admits linux (terms are ORed)",
            vec![
                vec![expr(os, "In", &["windows"])],
                vec![expr(os, "In", &["linux"])],
            ],
            NOT_WINDOWS,
        ),
        (
            "two terms, one does not constrain the OS",
            vec![
                vec![expr(os, "In", &["windows"])],
                vec![expr("disk", "In", &["ssd"])],
            ],
            NOT_WINDOWS,
        ),
        (
            "two terms, one empty",
            vec![vec![expr(os, "In", &["windows"])], vec![]],
            NOT_WINDOWS,
        ),
        ("no terms", vec![], NOT_WINDOWS),
    ];
    for (name, terms, want) in table {
        assert_eq!(injection(&affinity(terms)), want, "{name}");
    }
}

#[test]
fn match_fields_and_preferred_affinity_do_not_count() {
    let fields = spec(json!({ "affinity": { "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
            { "matchFields": [{ "key": "metadata.name", "operator": "In", "values": ["win-1"] }] }
        ]}
    }}}));
    assert_eq!(injection(&fields), NOT_WINDOWS);
    let preferred = spec(json!({ "affinity": { "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 100, "preference": {
            "matchExpressions": [expr(OS_LABEL, "In", &["windows"])]
        }}]
    }}}));
    assert_eq!(injection(&preferred), NOT_WINDOWS);
}

#[test]
fn selector_and_affinity_are_anded() {
    // The selector alone decides: the affinity cannot widen it.
    let both = spec(json!({
        "nodeSelector": { OS_LABEL: "windows" },
        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchExpressions": [expr("disk", "In", &["ssd"])] }]
        }}}
    }));
    assert_eq!(injection(&both), INJECT_SELECTOR);
    let linux_selector_windows_affinity = spec(json!({
        "nodeSelector": { "disk": "ssd" },
        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchExpressions": [expr(OS_LABEL, "NotIn", &["linux"])] }]
        }}}
    }));
    assert_eq!(injection(&linux_selector_windows_affinity), INJECT_AFFINITY);
}

#[test]
fn skips_come_first() {
    let host = spec(json!({ "hostNetwork": true, "nodeSelector": { OS_LABEL: "windows" } }));
    assert_eq!(injection(&host), Injection::Skip(Skip::HostNetwork));
    let host_false = spec(json!({ "hostNetwork": false, "nodeSelector": { OS_LABEL: "windows" } }));
    assert_eq!(injection(&host_false), INJECT_SELECTOR);
    let none = spec(json!({ "containers": [], "nodeSelector": { OS_LABEL: "windows" } }));
    assert_eq!(injection(&none), Injection::Skip(Skip::NoContainer));
    for (field, resources) in [
        ("requests", json!({ "requests": { IP_RESOURCE: "1" } })),
        ("limits", json!({ "limits": { IP_RESOURCE: "2" } })),
    ] {
        let pod = spec(json!({
            "nodeSelector": { OS_LABEL: "windows" },
            "containers": [{ "name": "a", "resources": resources }]
        }));
        assert_eq!(
            injection(&pod),
            Injection::Skip(Skip::AlreadyRequested),
            "{field}"
        );
    }
    // Only the first container counts: a later one with the resource does not stop injection.
    let second = spec(json!({
        "nodeSelector": { OS_LABEL: "windows" },
        "containers": [
            { "name": "a", "resources": { "limits": { "cpu": "1" } } },
            { "name": "b", "resources": { "limits": { IP_RESOURCE: "1" } } }
        ]
    }));
    assert_eq!(injection(&second), INJECT_SELECTOR);
}

#[test]
fn runtime_class_table() {
    let pod = spec(json!({ "runtimeClassName": "windows-2022" }));
    assert_eq!(
        injection(&pod),
        Injection::AskRuntimeClass("windows-2022".into())
    );
    // Asked only when the spec did not decide.
    let decided = spec(json!({ "runtimeClassName": "x", "nodeSelector": { OS_LABEL: "windows" } }));
    assert_eq!(injection(&decided), INJECT_SELECTOR);
    let empty_name = spec(json!({ "runtimeClassName": "" }));
    assert_eq!(injection(&empty_name), NOT_WINDOWS);

    let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let table = [
        (
            "os=windows",
            Some(sel(&[(OS_LABEL, "windows")])),
            Injection::Inject(WindowsBy::RuntimeClass),
        ),
        (
            "beta os=windows",
            Some(sel(&[(BETA_OS_LABEL, "windows")])),
            Injection::Inject(WindowsBy::RuntimeClass),
        ),
        ("os=linux", Some(sel(&[(OS_LABEL, "linux")])), NOT_WINDOWS),
        ("no os label", Some(sel(&[("disk", "ssd")])), NOT_WINDOWS),
        ("no scheduling or not found", None, NOT_WINDOWS),
    ];
    for (name, selector, want) in table {
        assert_eq!(runtime_class_injection(selector.as_ref()), want, "{name}");
    }
}
