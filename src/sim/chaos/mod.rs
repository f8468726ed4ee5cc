//! Chaos mode of the simulator (issue 9): from a seed, a random schedule of faults over a small
//! workload, with the production controller (unchanged code paths) on the simulated cluster and
//! EC2; invariants checked after every step and at quiescence.
//!
//! - [`schedule`]: the world and the steps a seed draws.
//! - [`gate`]: how a simulated process crashes (its calls never return, its watches go quiet).
//! - [`process`]: one winipam process on its gate.
//! - [`world`]: the small world and the workload's and people's actions.
//! - [`invariants`]: what must hold.
//! - [`run`]: plays one seed.

pub mod gate;
pub mod invariants;
pub mod process;
pub mod run;
pub mod schedule;
pub mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use run::{SeedOutcome, run_seed};

/// Seeds `from..from + count` played.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seeds: u64,
    pub held: u64,
    pub failed: Vec<SeedOutcome>,
    pub steps: u64,
    pub actions: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn add(&mut self, outcome: SeedOutcome) {
        self.seeds += 1;
        self.steps += outcome.steps as u64;
        for (kind, n) in &outcome.actions {
            *self.actions.entry(kind).or_default() += n;
        }
        if outcome.violation.is_some() {
            self.failed.push(outcome);
        } else {
            self.held += 1;
        }
    }

    /// One line per count, then each failure in full.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos: {} seeds run, {} held, {} failed, {} steps",
            self.seeds,
            self.held,
            self.failed.len(),
            self.steps
        );
        let kinds: Vec<String> = self
            .actions
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "actions by kind: {}", kinds.join(", "));
        for f in &self.failed {
            out.push_str(&report(f));
        }
        out
    }
}

/// The failure report of one seed: the invariant, the last steps, the command that replays it.
pub fn report(outcome: &SeedOutcome) -> String {
    let mut out = String::new();
    let Some(v) = &outcome.violation else {
        return out;
    };
    let _ = writeln!(
        out,
        "\nseed {} FAILED: invariant {}: {}",
        outcome.seed, v.invariant, v.detail
    );
    let _ = writeln!(out, "last steps:");
    for line in &outcome.recent {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "replay: winipam simulate --chaos --seeds 1 --from {}",
        outcome.seed
    );
    out
}

/// Plays seeds `from..from + count`.
pub fn run_seeds(from: u64, count: u64) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    for seed in from..from.saturating_add(count) {
        summary.add(run_seed(seed)?);
    }
    Ok(summary)
}
