//! Fuzzing of flag and environment values: durations, rates, and whole command lines with
//! mutated values. Whatever `winipam run` accepts must be usable: no later panic on a duration
//! or rate that parsing let through.

use std::time::{Duration, Instant};

use clap::Parser;
use proptest::prelude::*;

use super::*;
use crate::fuzz_support::padding;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn unit() -> impl Strategy<Value = (&'static str, u64)> {
    prop::sample::select(vec![
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
    ])
}

/// Durations as people write them, and as they mistype them.
fn duration_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![0u64..1000, any::<u64>()];
    let part = prop_oneof![
        6 => (number.clone(), unit()).prop_map(|(n, (u, _))| format!("{n}{u}")),
        1 => (number, prop::sample::select(vec!["", "sec", "M", "H", "µs", "ns", "d", "S", "mss", " s"])).prop_map(|(n, u)| format!("{n}{u}")),
        1 => prop::sample::select(vec!["-1s", "1.5s", "+1s", "s", "", "１s", "1e3s", " "]).prop_map(str::to_owned),
    ];
    prop_oneof![
        4 => (padding(), prop::collection::vec(part, 1..4), padding()).prop_map(|(a, p, b)| format!("{a}{}{b}", p.concat())),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<String>(),
    ]
}

/// The value the parts mean, in milliseconds, saturating (`None`: not a duration).
fn oracle_millis(text: &str) -> Option<u128> {
    let t = text.trim();
    // A bare number is seconds, with an optional `+` (as Rust and Go integer parsing allow).
    let bare = t.strip_prefix('+').unwrap_or(t);
    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        return Some(u128::from(bare.parse::<u64>().ok()?) * 1000);
    }
    let mut total: u128 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(|b| !b.is_ascii_digit())
            .count();
        let n: u64 = rest[..digits].parse().ok()?;
        let scale = match &rest[digits..digits + unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total += u128::from(n) * scale;
        rest = &rest[digits + unit_len..];
    }
    Some(total)
}

/// Flags and values a command line may hold, valid or not.
fn command_line() -> impl Strategy<Value = Vec<String>> {
    let flag = prop::sample::select(vec![
        "--lease-duration",
        "--renew-deadline",
        "--retry-period",
        "--resync-period",
        "--status-interval",
        "--ec2-mutating-rate",
        "--ec2-describe-rate",
        "--ec2-mutating-burst",
        "--ec2-describe-burst",
        "--namespace",
        "--controller-service-accounts",
        "--webhook-addr",
        "--metrics-addr",
        "--webhook-cert-mode",
        "--log-format",
    ]);
    let value = prop_oneof![
        duration_text(),
        prop::sample::select(vec![
            "0",
            "-1",
            "1e-300",
            "1e308",
            "inf",
            "NaN",
            "0.0001",
            "5",
            "4294967296",
            "",
            " ",
            ",",
            "self-managed",
            "json",
            "0.0.0.0:0",
            "[::1]:99999"
        ])
        .prop_map(str::to_owned),
        any::<f64>().prop_map(|f| f.to_string()),
        "\\PC{0,12}",
    ];
    prop::collection::vec((flag, value), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .flat_map(|(f, v)| [f.to_owned(), v])
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn durations_match_the_oracle(text in duration_text()) {
        let expected = oracle_millis(&text).map(|ms| {
            let ms = u64::try_from(ms).unwrap_or(u64::MAX);
            // The parser saturates at Duration::MAX; past u64::MAX ms the oracle saturates too.
            Duration::from_millis(ms)
        });
        match parse_duration(&text) {
            Ok(d) => {
                let want = expected.ok_or_else(|| TestCaseError::fail(format!("accepted {text:?}")))?;
                if want < Duration::from_millis(u64::MAX) {
                    prop_assert_eq!(d, want, "{:?}", text);
                } else {
                    prop_assert!(d >= want, "{:?}", text);
                }
            }
            Err(message) => {
                prop_assert!(expected.is_none(), "rejected {:?}: {}", text, message);
                prop_assert!(!message.is_empty());
            }
        }
    }

    #[test]
    fn rates_are_positive_and_finite(text in prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        prop::sample::select(vec!["inf", "-inf", "NaN", "1e309", "1e-320", "0", "-0", "+5", "5.", ".5", "0x10"]).prop_map(str::to_owned),
        any::<String>(),
    ]) {
        if let Ok(rate) = parse_rate(&text) {
            prop_assert!(rate.is_finite() && rate > 0.0, "{:?} -> {}", text, rate);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// A command line `winipam run` accepts (parsed and validated) yields values the controller
    /// can use as they are: resync jitter and deadlines computable, a Lease duration the API
    /// takes, non-empty service accounts, positive rates.
    #[test]
    fn accepted_command_lines_are_usable(args in command_line()) {
        let full = std::iter::once("winipam".to_owned()).chain(args);
        let Ok(cli) = Cli::try_parse_from(full) else { return Ok(()) };
        let run = cli.run;
        if run.validate().is_err() {
            return Ok(());
        }
        for rate in [run.ec2_mutating_rate, run.ec2_describe_rate] {
            prop_assert!(rate.is_finite() && rate > 0.0);
        }
        prop_assert!(run.ec2_mutating_burst > 0 && run.ec2_describe_burst > 0);
        // What the dispatcher computes for the next resync (±10% jitter).
        let longest = run.resync_period.checked_mul(2).map(|d| d.mul_f64(0.55));
        prop_assert!(longest.is_some_and(|d| Instant::now().checked_add(d).is_some()));
        prop_assert!(!run.resync_period.is_zero());
        prop_assert!(run.status_interval >= Duration::from_secs(1));
        prop_assert!(i32::try_from(run.lease_duration.as_secs()).is_ok());
        prop_assert!(!run.controller_service_accounts().is_empty());
    }
}

/// `flag` refuses each of `bad` at start, naming itself, and takes each of `good`.
fn rejected_at_start(flag: &str, bad: &[&str], good: &[&str]) {
    for value in bad {
        let cli = Cli::try_parse_from(["winipam", flag, value]).unwrap();
        let err = cli.run.validate().expect_err(value);
        assert!(err.contains(flag), "{err}");
    }
    for value in good {
        let cli = Cli::try_parse_from(["winipam", flag, value]).unwrap();
        assert_eq!(cli.run.validate(), Ok(()), "{flag} {value}");
    }
}

/// `--resync-period 0` made the dispatcher resync (describe every instance) in a busy loop, and a
/// huge one panicked computing the jittered delay; both are now rejected at start.
#[test]
fn resync_period_zero_or_huge_is_rejected() {
    rejected_at_start(
        "--resync-period",
        &["0", "0s", "18446744073709551615", "1000000h"],
        &["1s", "60s", "24h"],
    );
}

/// `--status-interval 0` would rewrite every node's status on every pass: rejected at start, as
/// is one so long that the status says nothing of the present.
#[test]
fn status_interval_zero_or_huge_is_rejected() {
    rejected_at_start(
        "--status-interval",
        &["0", "500ms", "11m", "1000000h"],
        &["1s", "30s", "10m"],
    );
}

/// A Lease counts its duration in int32 seconds: a longer `--lease-duration` was accepted and
/// then every Lease write failed, so no replica ever led.
#[test]
fn lease_duration_beyond_int32_seconds_is_rejected() {
    let s = Duration::from_secs;
    let too_long = s(u64::from(i32::MAX.unsigned_abs()) + 1);
    let err = check_lease_timings(too_long, s(10), s(2)).unwrap_err();
    assert!(err.contains("--lease-duration"), "{err}");
    assert!(check_lease_timings(s(u64::from(i32::MAX.unsigned_abs())), s(10), s(2)).is_ok());
}
