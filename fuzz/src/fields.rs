//! Small text fields: the ConfigMap, the pod annotation, node/pod/ConfigMap objects from the API,
//! and the command line / environment.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use winipam::ipam::config::KNOWN_KEYS;
use winipam::ipam::{Config, Mode, Targets, parse_annotation};
use winipam::k8s::views::{
    config_map_view, foreign_ipam_enabled, instance_id_from_provider_id, is_windows, node_view,
    pod_view,
};
use winipam::run::RunArgs;
use winipam::run::flags::{check_lease_timings, check_resync_period, parse_duration};

use crate::split_selector;

/// ConfigMap data from `key=value` lines; a key that is one digit stands for the known key of
/// that index, so the fuzzer reaches every key without guessing its name.
fn config_data(text: &str) -> BTreeMap<String, String> {
    text.split('\n')
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            let key = match key.parse::<usize>() {
                Ok(i) if i < KNOWN_KEYS.len() && key.len() == 1 => KNOWN_KEYS[i].to_owned(),
                _ => key.to_owned(),
            };
            (key, value.to_owned())
        })
        .collect()
}

/// The ConfigMap data that says `config` (every key set).
pub fn config_to_data(config: &Config) -> BTreeMap<String, String> {
    use winipam::ipam::config::*;
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        data.insert(k.to_owned(), v);
    };
    put(KEY_PREFIX_DELEGATION, config.prefix_delegation.to_string());
    put(
        KEY_FALLBACK,
        config.prefix_fallback_to_secondary.to_string(),
    );
    put(
        KEY_RELEASE_TERMINAL,
        config.release_terminal_pods.to_string(),
    );
    put(KEY_COOLDOWN, config.cooldown.as_secs().to_string());
    for (key, value) in [
        (KEY_WARM_IP, config.warm_ip_target),
        (KEY_MINIMUM_IP, config.minimum_ip_target),
        (KEY_WARM_PREFIX, config.warm_prefix_target),
    ] {
        if let Some(v) = value {
            put(key, v.to_string());
        }
    }
    data
}

/// Parse; a rejection names every bad key with its value, an acceptance round-trips and gives
/// targets within capacity.
pub fn check_config(data: &BTreeMap<String, String>) {
    match Config::parse(data) {
        Ok(parsed) => {
            for key in &parsed.unknown_keys {
                assert!(
                    !KNOWN_KEYS.contains(&key.as_str()),
                    "{key} reported unknown"
                );
            }
            let again = Config::parse(&config_to_data(&parsed.config)).expect("round trip");
            assert_eq!(again.config, parsed.config);
            for capacity in [0, 1, 15, 16, 110, u32::MAX] {
                for mode in [Mode::Secondary, Mode::Prefix] {
                    match parsed.config.targets(mode, capacity) {
                        Targets::Ips { warm, minimum } => {
                            assert!(warm <= capacity && minimum <= capacity);
                        }
                        Targets::Prefixes { warm_prefixes } => {
                            assert!(warm_prefixes <= capacity / 16);
                        }
                    }
                }
            }
        }
        Err(err) => {
            assert!(!err.problems.is_empty());
            let text = err.to_string();
            for p in &err.problems {
                assert!(KNOWN_KEYS.contains(&p.key.as_str()), "{}", p.key);
                assert_eq!(
                    data.get(&p.key),
                    Some(&p.value),
                    "the problem quotes the value"
                );
                assert!(text.contains(&p.key), "{text} does not name {}", p.key);
            }
        }
    }
}

pub fn config(data: &[u8]) {
    check_config(&config_data(&String::from_utf8_lossy(data)));
}

/// An accepted annotation is `<ip>/<length>` around the address it names.
pub fn annotation(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(ip) = parse_annotation(&text) {
        let (addr, len) = text.trim().split_once('/').expect("a CIDR has a slash");
        assert_eq!(addr, ip.to_string(), "{text:?}");
        assert!(len.parse::<u8>().is_ok_and(|l| l <= 32), "{text:?}");
        assert_eq!(parse_annotation(&format!("{ip}/32")), Some(ip));
    }
}

fn check_provider_id(provider_id: &str) -> Option<String> {
    let id = instance_id_from_provider_id(provider_id)?;
    assert!(provider_id.ends_with(&id), "{provider_id:?} -> {id:?}");
    let hex = id.strip_prefix("i-").expect("i- prefix");
    assert!(!hex.is_empty() && hex.len() <= 32);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    Some(id)
}

/// providerIDs, and Node / Pod / ConfigMap objects as the API sends them (JSON).
pub fn node_fields(data: &[u8]) {
    let Some((selector, rest)) = split_selector(data) else {
        return;
    };
    match selector % 4 {
        0 => {
            check_provider_id(&String::from_utf8_lossy(rest));
        }
        1 => {
            let Ok(node) = serde_json::from_slice::<Node>(rest) else {
                return;
            };
            let view = node_view(&node);
            let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
            assert_eq!(view.instance_id, provider_id.and_then(check_provider_id));
            let labels = node.metadata.labels.clone().unwrap_or_default();
            assert_eq!(view.windows, is_windows(&labels));
        }
        2 => {
            let Ok(pod) = serde_json::from_slice::<Pod>(rest) else {
                return;
            };
            if let Some(view) = pod_view(&pod) {
                assert!(!view.node_name.is_empty());
                if let Some(value) = &view.ip_annotation {
                    annotation(value.as_bytes());
                }
            }
        }
        _ => {
            let Ok(cm) = serde_json::from_slice::<ConfigMap>(rest) else {
                return;
            };
            let view = config_map_view(&cm);
            foreign_ipam_enabled(&view.data);
            check_config(&view.data);
        }
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

/// Durations (flags and env), and whole command lines (arguments separated by NUL).
pub fn flags(data: &[u8]) {
    let Some((selector, rest)) = split_selector(data) else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if selector % 2 == 0 {
        if let Ok(d) = parse_duration(&text) {
            // Every unit is whole milliseconds, so the millisecond form says the same.
            if d < Duration::from_secs(u64::MAX / 1000) {
                let again = parse_duration(&format!("{}ms", d.as_millis()));
                assert_eq!(again, Ok(d), "{text:?}");
            }
        }
        return;
    }
    let args = std::iter::once("winipam").chain(text.split('\0'));
    if let Ok(cli) = Cli::try_parse_from(args) {
        let run = cli.run;
        let verdict = run.validate();
        assert_eq!(
            verdict,
            check_lease_timings(run.lease_duration, run.renew_deadline, run.retry_period)
                .and_then(|()| check_resync_period(run.resync_period))
        );
        if verdict.is_err() {
            return;
        }
        assert!(!run.resync_period.is_zero() && run.resync_period <= Duration::from_secs(86_400));
        assert!(!run.controller_service_accounts().is_empty());
        for rate in [run.ec2_mutating_rate, run.ec2_describe_rate] {
            assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
        }
        assert!(run.ec2_mutating_burst > 0 && run.ec2_describe_burst > 0);
    }
}
