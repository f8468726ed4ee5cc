use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> Config {
    Config::parse(&map(pairs)).expect("valid").config
}

fn ips(warm: u32, minimum: u32) -> Targets {
    Targets::Ips { warm, minimum }
}

#[test]
fn empty_map_is_all_defaults() {
    let parsed = Config::parse(&BTreeMap::new()).expect("valid");
    assert_eq!(parsed.config, Config::default());
    assert!(parsed.unknown_keys.is_empty());
    let c = parsed.config;
    assert_eq!(c.cooldown, Duration::from_secs(30));
    assert!(!c.prefix_delegation && !c.prefix_fallback_to_secondary && c.release_terminal_pods);
    assert_eq!(c.requested_mode(), Mode::Secondary);
}

#[test]
fn every_key_is_read() {
    let c = parse(&[
        (KEY_PREFIX_DELEGATION, "true"),
        (KEY_WARM_IP, "5"),
        (KEY_MINIMUM_IP, "7"),
        (KEY_WARM_PREFIX, "2"),
        (KEY_COOLDOWN, "45"),
        (KEY_FALLBACK, "true"),
        (KEY_RELEASE_TERMINAL, "false"),
    ]);
    assert_eq!(
        c,
        Config {
            prefix_delegation: true,
            warm_ip_target: Some(5),
            minimum_ip_target: Some(7),
            warm_prefix_target: Some(2),
            cooldown: Duration::from_secs(45),
            prefix_fallback_to_secondary: true,
            release_terminal_pods: false,
        }
    );
    assert_eq!(c.requested_mode(), Mode::Prefix);
}

/// (ConfigMap, mode, capacity, expected targets)
type TargetCase = (Vec<(&'static str, &'static str)>, Mode, u32, Targets);

#[test]
fn target_rules() {
    let big = 1000;
    let cases: Vec<TargetCase> = vec![
        // Defaults per mode.
        (vec![], Mode::Secondary, big, ips(3, 3)),
        (vec![], Mode::Prefix, big, ips(1, 3)),
        // Setting only the minimum keeps the default warm target (not 0 as in the VPC RC).
        (
            vec![(KEY_MINIMUM_IP, "10")],
            Mode::Secondary,
            big,
            ips(3, 10),
        ),
        (vec![(KEY_MINIMUM_IP, "20")], Mode::Prefix, big, ips(1, 20)),
        // Setting only warm keeps the default minimum.
        (vec![(KEY_WARM_IP, "5")], Mode::Secondary, big, ips(5, 3)),
        (vec![(KEY_WARM_IP, "5")], Mode::Prefix, big, ips(5, 3)),
        // Warm 0 in secondary mode means 1.
        (vec![(KEY_WARM_IP, "0")], Mode::Secondary, big, ips(1, 3)),
        (
            vec![(KEY_WARM_IP, "0"), (KEY_MINIMUM_IP, "0")],
            Mode::Secondary,
            big,
            ips(1, 0),
        ),
        // Warm-prefix is ignored in secondary mode.
        (
            vec![(KEY_WARM_PREFIX, "4")],
            Mode::Secondary,
            big,
            ips(3, 3),
        ),
        // Prefix mode: only warm-prefix set -> it drives.
        (
            vec![(KEY_WARM_PREFIX, "2")],
            Mode::Prefix,
            big,
            Targets::Prefixes { warm_prefixes: 2 },
        ),
        // Warm-ip or minimum-ip set (> 0) -> they drive, warm-prefix ignored.
        (
            vec![(KEY_WARM_PREFIX, "2"), (KEY_WARM_IP, "4")],
            Mode::Prefix,
            big,
            ips(4, 3),
        ),
        (
            vec![(KEY_WARM_PREFIX, "2"), (KEY_MINIMUM_IP, "9")],
            Mode::Prefix,
            big,
            ips(1, 9),
        ),
        // Set to 0 does not count as set: warm-prefix still drives.
        (
            vec![
                (KEY_WARM_PREFIX, "2"),
                (KEY_WARM_IP, "0"),
                (KEY_MINIMUM_IP, "0"),
            ],
            Mode::Prefix,
            big,
            Targets::Prefixes { warm_prefixes: 2 },
        ),
        // Warm-prefix 0 alone drives nothing: prefix defaults.
        (vec![(KEY_WARM_PREFIX, "0")], Mode::Prefix, big, ips(1, 3)),
        // Everything 0 in prefix mode: on demand (the waiting term still grows the pool).
        (
            vec![
                (KEY_WARM_PREFIX, "0"),
                (KEY_WARM_IP, "0"),
                (KEY_MINIMUM_IP, "0"),
            ],
            Mode::Prefix,
            big,
            ips(0, 0),
        ),
        // Capped by capacity.
        (
            vec![(KEY_WARM_IP, "50"), (KEY_MINIMUM_IP, "60")],
            Mode::Secondary,
            9,
            ips(9, 9),
        ),
        (
            vec![(KEY_MINIMUM_IP, "500")],
            Mode::Prefix,
            144,
            ips(1, 144),
        ),
        (
            vec![(KEY_WARM_PREFIX, "20")],
            Mode::Prefix,
            144,
            Targets::Prefixes { warm_prefixes: 9 },
        ),
        (vec![], Mode::Secondary, 1, ips(1, 1)),
        (vec![], Mode::Secondary, 0, ips(0, 0)),
    ];
    for (pairs, mode, capacity, expected) in cases {
        let c = parse(&pairs);
        assert_eq!(
            c.targets(mode, capacity),
            expected,
            "{pairs:?} in {mode} mode, capacity {capacity}"
        );
    }
}

/// (ConfigMap, mode, capacity, targets while the node stays, targets while it leaves)
type LeavingCase = (
    Vec<(&'static str, &'static str)>,
    Mode,
    u32,
    Targets,
    Targets,
);

#[test]
fn a_leaving_node_keeps_no_target() {
    let none = Targets::Prefixes { warm_prefixes: 0 };
    let cases: Vec<LeavingCase> = vec![
        // Secondary defaults (warm 0 means 1 for a staying node; 0 for a leaving one).
        (vec![], Mode::Secondary, 1000, ips(3, 3), ips(0, 0)),
        (
            vec![(KEY_WARM_IP, "0"), (KEY_MINIMUM_IP, "0")],
            Mode::Secondary,
            1000,
            ips(1, 0),
            ips(0, 0),
        ),
        // A minimum above every use: dropped too (issue 16: "the minimum no longer applies").
        (
            vec![(KEY_MINIMUM_IP, "20"), (KEY_WARM_IP, "5")],
            Mode::Secondary,
            1000,
            ips(5, 20),
            ips(0, 0),
        ),
        (vec![], Mode::Prefix, 1000, ips(1, 3), ips(0, 0)),
        (
            vec![(KEY_MINIMUM_IP, "40")],
            Mode::Prefix,
            1000,
            ips(1, 40),
            ips(0, 0),
        ),
        // Warm-prefix keeps its shape: no whole free /28 is wanted.
        (
            vec![(KEY_WARM_PREFIX, "2")],
            Mode::Prefix,
            1000,
            Targets::Prefixes { warm_prefixes: 2 },
            none,
        ),
        // Nothing to drop on a node with no capacity.
        (vec![], Mode::Secondary, 0, ips(0, 0), ips(0, 0)),
    ];
    for (pairs, mode, capacity, staying, leaving) in cases {
        let c = parse(&pairs);
        let what = format!("{pairs:?} in {mode} mode, capacity {capacity}");
        assert_eq!(c.node_targets(mode, capacity, false), staying, "{what}");
        assert_eq!(
            c.node_targets(mode, capacity, false),
            c.targets(mode, capacity)
        );
        assert_eq!(
            c.node_targets(mode, capacity, true),
            leaving,
            "{what} leaving"
        );
    }
}

#[test]
fn values_are_trimmed() {
    let c = parse(&[(KEY_WARM_IP, " 5\n"), (KEY_PREFIX_DELEGATION, "\ttrue ")]);
    assert_eq!((c.warm_ip_target, c.prefix_delegation), (Some(5), true));
}

#[test]
fn integer_forms() {
    for (raw, want) in [("0", 0), ("007", 7), ("+3", 3), ("4294967295", u32::MAX)] {
        assert_eq!(
            parse(&[(KEY_WARM_IP, raw)]).warm_ip_target,
            Some(want),
            "{raw}"
        );
    }
    assert_eq!(
        parse(&[(KEY_COOLDOWN, "0")]).cooldown,
        Duration::ZERO,
        "cool-down 0 is allowed"
    );
}

#[test]
fn boolean_forms_are_the_spelled_out_parsebool_ones() {
    for (raw, want) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        assert_eq!(
            parse(&[(KEY_FALLBACK, raw)]).prefix_fallback_to_secondary,
            want
        );
    }
}

#[test]
fn every_rejection() {
    let int_keys = [KEY_WARM_IP, KEY_MINIMUM_IP, KEY_WARM_PREFIX, KEY_COOLDOWN];
    let bad_ints = [
        "-1",
        "abc",
        "1.5",
        "",
        "  ",
        "4294967296",
        "99999999999999999999",
        "-0",
        "3 4",
        "0x10",
        "1e3",
    ];
    for key in int_keys {
        for raw in bad_ints {
            let err = Config::parse(&map(&[(key, raw)])).expect_err(raw);
            assert_eq!(err.problems.len(), 1);
            let p = &err.problems[0];
            assert_eq!(
                (p.key.as_str(), p.value.as_str(), p.expected),
                (key, raw, Expected::NonNegativeInteger)
            );
        }
    }
    let bool_keys = [KEY_PREFIX_DELEGATION, KEY_FALLBACK, KEY_RELEASE_TERMINAL];
    let bad_bools = ["1", "0", "t", "f", "yes", "no", "tRuE", "", "enabled"];
    for key in bool_keys {
        for raw in bad_bools {
            let err = Config::parse(&map(&[(key, raw)])).expect_err(raw);
            assert_eq!(err.problems.len(), 1);
            assert_eq!(err.problems[0].expected, Expected::Boolean, "{key}={raw}");
        }
    }
}

#[test]
fn error_names_key_value_and_what_is_allowed() {
    let err = Config::parse(&map(&[(KEY_WARM_IP, "abc")])).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "1 invalid value: windows-warm-ip-target: \"abc\" is not a non-negative integer; set a whole number such as \"3\""
    );
    let err = Config::parse(&map(&[(KEY_RELEASE_TERMINAL, "yes")])).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "1 invalid value: release-terminal-pods: \"yes\" is not a boolean; set \"true\" or \"false\""
    );
}

#[test]
fn all_bad_keys_are_collected_and_good_ones_do_not_apply() {
    let err = Config::parse(&map(&[
        (KEY_WARM_IP, "-1"),
        (KEY_MINIMUM_IP, "5"),
        (KEY_COOLDOWN, "soon"),
        (KEY_PREFIX_DELEGATION, "on"),
    ]))
    .expect_err("bad");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, [KEY_PREFIX_DELEGATION, KEY_COOLDOWN, KEY_WARM_IP]);
    let text = err.to_string();
    assert!(text.starts_with("3 invalid values: "), "{text}");
    for needle in ["\"-1\"", "\"soon\"", "\"on\""] {
        assert!(text.contains(needle), "{text} lacks {needle}");
    }
}

#[test]
fn long_values_are_truncated_in_messages() {
    let long = "x".repeat(500);
    let err = Config::parse(&map(&[(KEY_WARM_IP, &long)])).expect_err("bad");
    assert_eq!(
        err.problems[0].value, long,
        "the full value is kept for callers"
    );
    assert!(err.to_string().len() < 200);
}

#[test]
fn unknown_keys_are_reported_not_rejected() {
    let parsed = Config::parse(&map(&[
        ("windows-warm-ip-targt", "5"),
        (KEY_WARM_IP, "4"),
        ("enable-windows-ipam", "true"),
    ]))
    .expect("valid");
    assert_eq!(parsed.config.warm_ip_target, Some(4));
    assert_eq!(
        parsed.unknown_keys,
        ["enable-windows-ipam", "windows-warm-ip-targt"]
    );
}
