//! Fuzzing of the two texts the pure core reads from outside: ConfigMap data and the pod address
//! annotation. Valid-looking values with mutations (signs, whitespace of every kind, unicode
//! digits, huge numbers, empty) and arbitrary text; each result is checked against an oracle
//! written independently of the parser. They sit in this crate rather than in winipam-core to
//! share the generators of `fuzz_support` with the other fuzz tests; they use only the core's
//! public API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;

use crate::fuzz_support::padding;
use crate::ipam::annotation::parse_annotation;
use crate::ipam::config::{
    Config, KEY_COOLDOWN, KEY_FALLBACK, KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION,
    KEY_RELEASE_TERMINAL, KEY_WARM_IP, KEY_WARM_PREFIX, KNOWN_KEYS, Targets,
};
use crate::ipam::types::Mode;

const INT_KEYS: [&str; 4] = [KEY_WARM_IP, KEY_MINIMUM_IP, KEY_WARM_PREFIX, KEY_COOLDOWN];
const BOOL_KEYS: [&str; 3] = [KEY_PREFIX_DELEGATION, KEY_FALLBACK, KEY_RELEASE_TERMINAL];

/// Integer-looking values: valid ones, and the mutations a person or a tool might write.
fn int_value() -> impl Strategy<Value = String> {
    let core = prop_oneof![
        any::<u32>().prop_map(|n| n.to_string()),
        (0u32..200).prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| format!("+{n}")),
        any::<u32>().prop_map(|n| format!("00{n}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        (0u32..100).prop_map(|n| format!("{n}.5")),
        (0u32..100).prop_map(|n| format!("{n}e2")),
        (0u32..100).prop_map(|n| format!("0x{n:x}")),
        (0u32..100).prop_map(|n| format!("{n} {n}")),
        Just("３".to_owned()),
        Just("٣".to_owned()),
        Just("++1".to_owned()),
        Just("-0".to_owned()),
        Just(String::new()),
        Just("4294967296".to_owned()),
        Just("4294967295".to_owned()),
        "[0-9]{0,40}",
        any::<String>(),
    ];
    (padding(), core, padding()).prop_map(|(a, c, b)| format!("{a}{c}{b}"))
}

fn bool_value() -> impl Strategy<Value = String> {
    let core = prop_oneof![
        prop::sample::select(vec![
            "true",
            "True",
            "TRUE",
            "false",
            "False",
            "FALSE",
            "tRUE",
            "fALSE",
            "1",
            "0",
            "t",
            "f",
            "yes",
            "no",
            "",
            "true\u{0}",
            "ｔｒｕｅ",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    (padding(), core, padding()).prop_map(|(a, c, b)| format!("{a}{c}{b}"))
}

/// The integer rule of SPEC 3.1, written without `str::parse`: optional `+`, decimal digits,
/// at most u32::MAX, surrounding whitespace ignored.
fn oracle_int(raw: &str) -> Option<u32> {
    let t = raw.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: u64 = 0;
    for b in digits.bytes() {
        value = value * 10 + u64::from(b - b'0');
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    u32::try_from(value).ok()
}

fn oracle_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A ConfigMap: some known keys with mutated values, some unknown keys.
fn config_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::collection::vec(prop::option::of(int_value()), 4),
        prop::collection::vec(prop::option::of(bool_value()), 3),
        prop::collection::btree_map("[a-z-]{0,30}|\\PC{0,10}", "\\PC{0,10}", 0..3),
    )
        .prop_map(|(ints, bools, extra)| {
            let mut data: BTreeMap<String, String> = extra
                .into_iter()
                .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
                .collect();
            for (key, value) in INT_KEYS.iter().zip(ints) {
                if let Some(v) = value {
                    data.insert((*key).to_owned(), v);
                }
            }
            for (key, value) in BOOL_KEYS.iter().zip(bools) {
                if let Some(v) = value {
                    data.insert((*key).to_owned(), v);
                }
            }
            data
        })
}

/// ConfigMap data that says `config`, every key written.
fn to_data(c: &Config) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        (KEY_PREFIX_DELEGATION, c.prefix_delegation.to_string()),
        (KEY_FALLBACK, c.prefix_fallback_to_secondary.to_string()),
        (KEY_RELEASE_TERMINAL, c.release_terminal_pods.to_string()),
        (KEY_COOLDOWN, c.cooldown.as_secs().to_string()),
    ]);
    for (key, value) in [
        (KEY_WARM_IP, c.warm_ip_target),
        (KEY_MINIMUM_IP, c.minimum_ip_target),
        (KEY_WARM_PREFIX, c.warm_prefix_target),
    ] {
        if let Some(v) = value {
            data.insert(key, v.to_string());
        }
    }
    data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn check_targets(config: &Config) {
    for capacity in [0, 1, 15, 16, 17, 110, 4096, u32::MAX] {
        for mode in [Mode::Secondary, Mode::Prefix] {
            match config.targets(mode, capacity) {
                Targets::Ips { warm, minimum } => {
                    assert!(warm <= capacity && minimum <= capacity, "{config:?}");
                }
                Targets::Prefixes { warm_prefixes } => {
                    assert_eq!(mode, Mode::Prefix);
                    assert!(warm_prefixes <= capacity / 16);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8_000, ..ProptestConfig::default() })]

    /// Accepted exactly when every known value is valid; an acceptance reads the values the
    /// oracle reads, a rejection lists exactly the bad keys (in key order) and quotes each.
    #[test]
    fn config_map_values_match_the_oracle(data in config_map()) {
        let bad: Vec<&str> = KNOWN_KEYS
            .iter()
            .copied()
            .filter(|k| match data.get(*k) {
                None => false,
                Some(v) if INT_KEYS.contains(k) => oracle_int(v).is_none(),
                Some(v) => oracle_bool(v).is_none(),
            })
            .collect();
        match Config::parse(&data) {
            Ok(parsed) => {
                prop_assert!(bad.is_empty(), "accepted bad keys {bad:?}");
                let c = &parsed.config;
                let int = |k: &str| data.get(k).and_then(|v| oracle_int(v));
                prop_assert_eq!(c.warm_ip_target, int(KEY_WARM_IP));
                prop_assert_eq!(c.minimum_ip_target, int(KEY_MINIMUM_IP));
                prop_assert_eq!(c.warm_prefix_target, int(KEY_WARM_PREFIX));
                prop_assert_eq!(
                    c.cooldown,
                    Duration::from_secs(u64::from(int(KEY_COOLDOWN).unwrap_or(30)))
                );
                let boolean = |k: &str, d: bool| data.get(k).and_then(|v| oracle_bool(v)).unwrap_or(d);
                prop_assert_eq!(c.prefix_delegation, boolean(KEY_PREFIX_DELEGATION, false));
                prop_assert_eq!(c.prefix_fallback_to_secondary, boolean(KEY_FALLBACK, false));
                prop_assert_eq!(c.release_terminal_pods, boolean(KEY_RELEASE_TERMINAL, true));
                let unknown: Vec<&String> =
                    data.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).collect();
                prop_assert_eq!(parsed.unknown_keys.iter().collect::<Vec<_>>(), unknown);
                check_targets(c);
            }
            Err(err) => {
                let mut keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
                prop_assert!(keys.is_sorted(), "{keys:?}");
                keys.sort_unstable();
                let mut expected = bad.clone();
                expected.sort_unstable();
                prop_assert_eq!(keys, expected);
                let text = err.to_string();
                for p in &err.problems {
                    prop_assert_eq!(Some(&p.value), data.get(&p.key));
                    prop_assert!(text.contains(&p.key), "{} not named in {}", p.key, text);
                }
            }
        }
    }

    /// Every configuration survives being written to a ConfigMap and read back.
    #[test]
    fn config_round_trips(
        ints in prop::collection::vec(prop::option::of(any::<u32>()), 3),
        cooldown in any::<u32>(),
        bools in any::<[bool; 3]>(),
    ) {
        let config = Config {
            prefix_delegation: bools[0],
            warm_ip_target: ints[0],
            minimum_ip_target: ints[1],
            warm_prefix_target: ints[2],
            cooldown: Duration::from_secs(cooldown.into()),
            prefix_fallback_to_secondary: bools[1],
            release_terminal_pods: bools[2],
        };
        let parsed = Config::parse(&to_data(&config)).expect("written by us");
        prop_assert_eq!(parsed.config, config);
        prop_assert!(parsed.unknown_keys.is_empty());
    }

    /// Arbitrary maps, arbitrary text under the known keys: no panic, and the error names keys.
    #[test]
    fn arbitrary_config_maps(
        data in prop::collection::btree_map(
            prop_oneof![prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned), any::<String>()],
            any::<String>(),
            0..8,
        )
    ) {
        match Config::parse(&data) {
            Ok(parsed) => check_targets(&parsed.config),
            Err(err) => {
                prop_assert!(!err.problems.is_empty());
                let text = err.to_string();
                for p in &err.problems {
                    prop_assert!(KNOWN_KEYS.contains(&p.key.as_str()));
                    prop_assert!(text.contains(&p.key));
                }
            }
        }
    }

    /// `<ip>/<len>` (len 0..=32, any surrounding whitespace) names `ip`.
    #[test]
    fn annotation_round_trips(ip in any::<u32>(), len in 0u8..=32, a in padding(), b in padding()) {
        let ip = Ipv4Addr::from(ip);
        let value = format!("{a}{ip}/{len}{b}");
        let trimmed_padding = value.trim() == format!("{ip}/{len}");
        prop_assert_eq!(parse_annotation(&value), trimmed_padding.then_some(ip), "{:?}", value);
    }

    /// Mutated annotations: whatever is accepted is exactly `<canonical ip>/<decimal len <= 32>`,
    /// so the Windows CNI (Go's net.ParseCIDR) reads the same address.
    #[test]
    fn annotation_mutations(value in annotation_value()) {
        if let Some(ip) = parse_annotation(&value) {
            let (addr, len) = value.trim().split_once('/').expect("a CIDR has a slash");
            prop_assert_eq!(addr, ip.to_string(), "{:?}", value);
            prop_assert!(!len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()), "{:?}", value);
            prop_assert!(len.parse::<u32>().is_ok_and(|l| l <= 32), "{:?}", value);
        }
    }
}

fn annotation_value() -> impl Strategy<Value = String> {
    let octet = prop_oneof![
        (0u32..=255).prop_map(|n| n.to_string()),
        (0u32..=255).prop_map(|n| format!("0{n}")),
        (256u32..100_000).prop_map(|n| n.to_string()),
        Just("+1".to_owned()),
        Just("-1".to_owned()),
        Just("".to_owned()),
        Just("１".to_owned()),
        "\\PC{0,3}",
    ];
    let len = prop_oneof![
        (0u32..=40).prop_map(|n| n.to_string()),
        (0u32..=32).prop_map(|n| format!("0{n}")),
        (0u32..=32).prop_map(|n| format!("+{n}")),
        Just("".to_owned()),
        Just("-1".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        "\\PC{0,3}",
    ];
    let sep = prop::sample::select(vec![".", ".", ".", ",", ""]);
    let shaped = (
        prop::collection::vec((octet, sep), 2..6),
        prop::sample::select(vec!["/", "/", "", "//", "\\"]),
        len,
        padding(),
        padding(),
    )
        .prop_map(|(octets, slash, len, a, b)| {
            let mut ip: String = octets.into_iter().map(|(o, s)| format!("{o}{s}")).collect();
            ip.pop();
            format!("{a}{ip}{slash}{len}{b}")
        });
    // Four octets, each valid or nearly so, and a length: what a person or tool may write.
    let near = (
        prop::collection::vec(
            prop_oneof![
                3 => (0u32..=255).prop_map(|n| n.to_string()),
                1 => (0u32..=255).prop_map(|n| format!("0{n}")),
                1 => (256u32..1000).prop_map(|n| n.to_string()),
            ],
            4,
        ),
        prop_oneof![
            (0u32..=33).prop_map(|n| n.to_string()),
            (0u32..=32).prop_map(|n| format!("0{n}"))
        ],
    )
        .prop_map(|(octets, len)| format!("{}/{len}", octets.join(".")));
    prop_oneof![3 => near, 3 => shaped, 1 => any::<String>()]
}
