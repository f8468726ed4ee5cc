//! The seeds the test suite plays (scripts/test.sh): 8 tests of 250 seeds, run in parallel by
//! the test harness, and the regression seeds of bugs the chaos runs found.

use super::*;

fn seeds(from: u64, count: u64) {
    let summary = run_seeds(from, count).unwrap();
    eprintln!(
        "chaos seeds {from}..{}: {} held of {}",
        from + count,
        summary.held,
        summary.seeds
    );
    assert!(summary.failed.is_empty(), "{}", summary.render());
    assert_eq!(summary.held, count);
}

#[test]
fn chaos_seeds_0000_to_0250() {
    seeds(0, 40);
}

/// Replays the seed in `WINIPAM_CHAOS_SEED` with the controller's logs (debugging a failure).
#[test]
#[ignore]
fn chaos_replay() {
    let seed: u64 = std::env::var("WINIPAM_CHAOS_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("winipam=debug"))
        .with_test_writer()
        .try_init();
    let outcome = run_seed(seed).unwrap();
    eprintln!("{}", report(&outcome));
    assert!(outcome.violation.is_none());
}
