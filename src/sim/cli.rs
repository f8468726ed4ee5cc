//! `winipam simulate`: plays a scenario with winipam, the VPC Resource Controller model, or
//! both, and prints the table (both side by side with ratios), optionally the JSON and an SVG.
//!
//! With both policies, each runs in a process of its own (this binary, re-run with a hidden
//! flag), so peak memory and CPU are each policy's own.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::sim::plot;
use crate::sim::progress::Progress;
use crate::sim::report::{self, RunResult};
use crate::sim::scenario::{self, PolicyKind, Scenario, ScenarioKind};

/// Which policies to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyChoice {
    Winipam,
    VpcRcModel,
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Workload to play (SPEC 12): demo, or s1 scale-out, s2 churn, s3 burst, s4 scale+restart;
    /// w1 burst, w2 churn: the workloads of the benchmark against the real VPC Resource
    /// Controller (scripts/bench-vpcrc.sh).
    #[arg(long, value_enum, default_value = "demo")]
    pub scenario: ScenarioKind,
    /// IPAM in charge: winipam, the VPC Resource Controller model, or both side by side.
    #[arg(long, value_enum, default_value = "both")]
    pub policy: PolicyChoice,
    /// Seed of every random choice: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the measurements as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw time-to-IP and addresses held over time into FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The scaled-down scenario the test suite runs.
    #[arg(long)]
    pub small: bool,
    /// Chaos mode: random faults, crashes and churn from each seed, with invariants checked
    /// after every step (issue 9); `--scenario`, `--policy` and the output files do not apply.
    #[arg(long)]
    pub chaos: bool,
    /// Chaos mode: how many seeds to play.
    #[arg(long, default_value_t = 100, requires = "chaos")]
    pub seeds: u64,
    /// Chaos mode: the first seed (seeds FROM..FROM+SEEDS are played).
    #[arg(long, default_value_t = 0, requires = "chaos")]
    pub from: u64,
    /// Run one policy and write its result as JSON to FILE, printing nothing (how `--policy
    /// both` runs each policy in a process of its own).
    #[arg(long, hide = true, value_name = "FILE")]
    pub child_result: Option<PathBuf>,
}

impl SimulateArgs {
    fn scenario(&self) -> Scenario {
        if self.small {
            Scenario::small(self.scenario)
        } else {
            Scenario::standard(self.scenario)
        }
    }

    fn policies(&self) -> Vec<PolicyKind> {
        match self.policy {
            PolicyChoice::Winipam => vec![PolicyKind::Winipam],
            PolicyChoice::VpcRcModel => vec![PolicyKind::VpcRcModel],
            PolicyChoice::Both => vec![PolicyKind::Winipam, PolicyKind::VpcRcModel],
        }
    }
}

/// Runs one policy here, with the progress line on stderr.
fn run_here(args: &SimulateArgs, policy: PolicyKind) -> Result<RunResult, String> {
    let progress = Progress::new(policy.name());
    let drawer = progress.draw_on_stderr();
    let result = scenario::run(&args.scenario(), policy, args.seed, Some(&progress));
    progress.finish(drawer);
    result.map_err(|e| format!("cannot start the simulation runtime: {e}"))
}

/// Runs one policy in a child process (this binary again) and reads its result.
fn run_child(args: &SimulateArgs, policy: PolicyKind) -> Result<RunResult, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let file = std::env::temp_dir().join(format!(
        "winipam-simulate-{}-{}.json",
        std::process::id(),
        policy.name()
    ));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("simulate")
        .arg("--scenario")
        .arg(args.scenario.name())
        .arg("--policy")
        .arg(policy.name())
        .arg("--seed")
        .arg(args.seed.to_string())
        .arg("--child-result")
        .arg(&file);
    if args.small {
        cmd.arg("--small");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run the {} simulation: {e}", policy.name()))?;
    let text = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    if !status.success() {
        return Err(format!(
            "the {} simulation failed ({status})",
            policy.name()
        ));
    }
    let text = text.map_err(|e| format!("cannot read the {} result: {e}", policy.name()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad {} result: {e}", policy.name()))
}

fn write_file(path: &Path, body: &str) -> Result<(), String> {
    std::fs::write(path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The command. `separate_processes`: run each of two policies in a process of its own (the
/// binary does; tests run everything in-process). Returns the exit code.
pub fn simulate(
    args: &SimulateArgs,
    separate_processes: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match simulate_inner(args, separate_processes, out) {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

fn simulate_inner(
    args: &SimulateArgs,
    separate_processes: bool,
    out: &mut dyn Write,
) -> Result<u8, String> {
    if args.chaos {
        return chaos(args, out);
    }
    if let Some(path) = &args.child_result {
        let policy = *args.policies().first().ok_or("no policy")?;
        let result = run_here(args, policy)?;
        let json = serde_json::to_string(&result).map_err(|e| e.to_string())?;
        write_file(path, &json)?;
        return Ok(0);
    }
    let policies = args.policies();
    let mut runs = Vec::new();
    for policy in &policies {
        let result = if separate_processes && policies.len() > 1 {
            run_child(args, *policy)?
        } else {
            run_here(args, *policy)?
        };
        runs.push(result);
    }
    write!(out, "{}", report::render(&runs)).map_err(|e| e.to_string())?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&runs).map_err(|e| e.to_string())?;
        write_file(path, &json)?;
    }
    if let Some(path) = &args.plot {
        write_file(path, &plot::svg(&runs))?;
    }
    // winipam failing its own checks is a bug worth an exit code; the baseline's are findings.
    let ours_failed = runs
        .iter()
        .any(|r| r.policy == PolicyKind::Winipam && !r.checks.ok());
    Ok(u8::from(ours_failed))
}

/// `--chaos`: plays the seeds, prints the summary and each failure; exit code 1 on any failure.
fn chaos(args: &SimulateArgs, out: &mut dyn Write) -> Result<u8, String> {
    let started = std::time::Instant::now();
    let summary = crate::sim::chaos::run_seeds(args.from, args.seeds)
        .map_err(|e| format!("cannot start the simulation runtime: {e}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    write!(out, "{}", summary.render()).map_err(|e| e.to_string())?;
    writeln!(
        out,
        "{:.1} s, {:.1} ms per seed",
        elapsed,
        1000.0 * elapsed / summary.seeds.max(1) as f64
    )
    .map_err(|e| e.to_string())?;
    Ok(u8::from(!summary.failed.is_empty()))
}
