//! Plays one seed: the world, the schedule's steps with the invariants checked after each step
//! and every simulated second in between, crashes and restarts, then quiescence (faults off, a
//! live leader, time for cool-downs and resyncs to pass) and the final checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::gate::Tally;
use super::invariants::{Tracker, Violation, check_quiescent};
use super::process::{LeaderLog, Process, lease_timings};
use super::schedule::{Action, ApiChaos, ApiFaultKind, Ec2FaultKind, NodeExit, Schedule};
use super::world::ChaosWorld;
use crate::ipam::Config;
use crate::k8s::ClusterError;
use crate::sim::cluster::{ApiFaults, WriteFault};
use crate::sim::ec2::{Fault, RandomFaults};
use crate::sim::lease::SimLease;
use crate::sim::scenario::policy::{CONFIG_NAME, CONFIG_NAMESPACE};

mod in_force;
mod replicas;

use in_force::InForce;
use replicas::Slot;

/// Lines of the run's history a failure report shows.
const RECENT: usize = 40;
/// Invariants are checked at least this often while time passes.
const TICK: Duration = Duration::from_secs(1);
/// Time given at quiescence: a subnet hold (2 min) after the last InsufficientFreeAddresses,
/// the longest cool-down, a few resyncs and init retries.
const SETTLE: Duration = Duration::from_secs(240);

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    pub steps: usize,
    /// Actions taken, by kind (faults, crashes, workload).
    pub actions: BTreeMap<&'static str, u64>,
    pub violation: Option<Violation>,
    /// The last lines of the run's history.
    pub recent: Vec<String>,
}

/// Plays `seed` (with apiserver trouble, for half the seeds two replicas with failovers, for
/// half nodes cordoned and uncordoned)
/// on a fresh current-thread runtime with paused (virtual) time.
pub fn run_seed(seed: u64) -> std::io::Result<SeedOutcome> {
    run_schedule(
        Schedule::from_seed(seed)
            .with_api_chaos()
            .with_failover()
            .with_node_exits(),
    )
}

/// Plays a schedule on a fresh current-thread runtime with paused (virtual) time.
pub fn run_schedule(schedule: Schedule) -> std::io::Result<SeedOutcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    Ok(runtime.block_on(play(schedule)))
}

struct Runner {
    world: ChaosWorld,
    tracker: Tracker,
    tally: Arc<Tally>,
    /// One replica, or two campaigning on `lease`.
    slots: Vec<Slot>,
    lease: Option<SimLease>,
    leader_log: LeaderLog,
    /// Entries of `leader_log` already checked, and who leads after them.
    leader_seen: usize,
    leading: std::collections::BTreeSet<u32>,
    /// The configuration in force, per process, and the leader's for the cool-down invariant.
    in_force: InForce,
    /// Partitions to heal: (when, identity).
    heals: Vec<(tokio::time::Instant, String)>,
    /// Crashed processes: kept so their tasks stay parked (never stopped cleanly).
    dead: Vec<Process>,
    next_id: u32,
    /// The last valid ConfigMap written (put back at quiescence if an invalid one is there).
    config: Config,
    config_valid: bool,
    foreign_set: bool,
    recent: VecDeque<String>,
    /// Annotation writes already in `recent`.
    log_noted: usize,
    actions: BTreeMap<&'static str, u64>,
}

impl Runner {
    fn note(&mut self, line: String) {
        let t = self.world.cluster.elapsed().as_secs_f64();
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("t={t:8.3}s {line}"));
    }

    fn check(&mut self) -> Result<(), Violation> {
        self.processes();
        let log = self
            .tally
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for w in log.get(self.log_noted..).unwrap_or_default() {
            let line = format!(
                "  process {} wrote {}/{} (UID {}) = {} at {} ms",
                w.process,
                w.namespace,
                w.name,
                w.uid,
                w.value,
                w.at.0 - crate::sim::scenario::world::EPOCH.0
            );
            self.note(line);
        }
        self.log_noted = log.len();
        self.check_leaders()?;
        self.tracker.check(&self.world, &log)
    }

    /// Lets `d` pass, checking every tick.
    async fn pass(&mut self, d: Duration) -> Result<(), Violation> {
        let end = tokio::time::Instant::now() + d;
        loop {
            let now = tokio::time::Instant::now();
            if now >= end {
                return self.check();
            }
            tokio::time::sleep((end - now).min(TICK)).await;
            self.check()?;
        }
    }

    fn set_config(&mut self, data: &BTreeMap<String, String>) {
        self.world
            .cluster
            .set_config_map(CONFIG_NAMESPACE, CONFIG_NAME, data.clone());
        // Which processes read it (and so what is in force) is seen at their watches.
        match Config::parse(data) {
            Ok(parsed) => {
                self.config = parsed.config;
                self.config_valid = true;
            }
            Err(_) => self.config_valid = false,
        }
    }

    fn act(&mut self, action: &Action) {
        *self.actions.entry(action.kind()).or_default() += 1;
        let target = self.target();
        let slot = &mut self.slots[target];
        let w = &mut self.world;
        let t = &mut self.tracker;
        let detail = match action {
            Action::CreatePods { count, pick } => {
                Some(format!("{} pods", w.create_pods(*count, *pick, t)))
            }
            Action::DeletePod { pick } => w.delete_pod(*pick, t),
            Action::RecreatePod { pick } => w.recreate_pod(*pick, t),
            Action::PodSucceeded { pick } => w.pod_succeeded(*pick, t),
            Action::ReplaceNode { pick } => w.replace_node(*pick, t),
            Action::Config(data) | Action::InvalidConfig(data) => {
                self.set_config(data);
                Some(format!("{data:?}"))
            }
            Action::ForeignIpam(on) => {
                w.foreign_ipam(*on);
                self.foreign_set = true;
                None
            }
            Action::ManualUnassign { used, pick } => w.manual_unassign(*used, *pick, t),
            Action::Ec2Fault { op, fault, times } => {
                let fault = match fault {
                    Ec2FaultKind::Error(code) => Fault::error(code),
                    Ec2FaultKind::Timeout => Fault::Timeout,
                    Ec2FaultKind::LostResponse => Fault::LostResponse,
                };
                w.ec2.inject(*op, fault, *times);
                None
            }
            Action::Ec2RandomFaults { rate } => {
                w.ec2.set_random_faults(random_faults(*rate));
                None
            }
            Action::ApiFault { kind, fault, times } => {
                let fault = match fault {
                    ApiFaultKind::Conflict => {
                        WriteFault::Refuse(ClusterError::Conflict("injected conflict".into()))
                    }
                    ApiFaultKind::ServerError => WriteFault::Refuse(server_error()),
                    ApiFaultKind::ApplyThenFail => WriteFault::ApplyThenFail(server_error()),
                };
                w.cluster.inject(*kind, fault, *times);
                None
            }
            Action::Relist => {
                w.cluster.relist_pods();
                w.cluster.relist_nodes();
                None
            }
            Action::Crash { restart_after } => {
                slot.restart_after = *restart_after;
                slot.current.as_ref().map(|p| {
                    p.gate.kill();
                    format!("process {}", p.gate.id)
                })
            }
            Action::CrashAfterMutations { n, restart_after } => {
                slot.restart_after = *restart_after;
                slot.current.as_ref().map(|p| {
                    p.gate.die_after_mutations(*n);
                    format!("process {}", p.gate.id)
                })
            }
            Action::CrashAfterAnnotations { n, restart_after } => {
                slot.restart_after = *restart_after;
                slot.current.as_ref().map(|p| {
                    p.gate.die_after_annotations(*n);
                    format!("process {}", p.gate.id)
                })
            }
        };
        let line = match detail {
            Some(d) => format!("{action:?}: {d}"),
            None => format!("{action:?}"),
        };
        self.note(line);
    }

    fn api(&mut self, api: &ApiChaos) {
        *self.actions.entry(api.kind()).or_default() += 1;
        let cluster = &self.world.cluster;
        match api {
            ApiChaos::RandomWriteFaults {
                conflict,
                server_error,
                apply_then_fail,
            } => cluster.set_random_write_faults(ApiFaults {
                conflict_rate: *conflict,
                server_error_rate: *server_error,
                apply_then_fail_rate: *apply_then_fail,
            }),
            ApiChaos::CutWatches(outage) => cluster.cut_watches(*outage),
            ApiChaos::RelistAll => cluster.relist_all(),
        }
        self.note(format!("{api:?}"));
    }

    fn node_exit(&mut self, exit: &NodeExit) {
        *self.actions.entry(exit.kind()).or_default() += 1;
        const CORDON_TAINT: &str = crate::k8s::LEAVING_TAINTS[0];
        let node = match exit {
            NodeExit::Cordon { pick } => self.world.node_exit(*pick, true, &[CORDON_TAINT]),
            NodeExit::Taint { pick, key } => self.world.node_exit(*pick, false, &[key]),
            NodeExit::Uncordon { pick } => self.world.node_exit(*pick, false, &[]),
        };
        self.note(format!("{exit:?}: {node:?}"));
    }

    /// Faults off, the configuration fixed, a live process; then time passes.
    async fn quiesce(&mut self) -> Result<(), Violation> {
        self.note("quiescence: faults off".into());
        self.world.ec2.clear_faults();
        self.world
            .cluster
            .set_random_write_faults(ApiFaults::default());
        if self.foreign_set {
            self.world.foreign_ipam(false);
        }
        if !self.config_valid {
            let data = config_data(&self.config);
            self.set_config(&data);
        }
        for p in self.slots.iter().filter_map(|s| s.current.as_ref()) {
            p.gate.disarm();
        }
        let now = tokio::time::Instant::now();
        for heal in &mut self.heals {
            heal.0 = now;
        }
        self.processes();
        for i in 0..self.slots.len() {
            if self.slots[i].current.is_none() {
                self.slots[i].restart_at = None;
                self.start_process(i);
            }
        }
        self.pass(SETTLE).await?;
        self.check_one_leader()?;
        let events = self
            .tally
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        check_quiescent(&self.world, &self.config, &events)
    }
}

fn server_error() -> ClusterError {
    ClusterError::Rejected {
        code: 500,
        reason: "InternalError".into(),
        message: "injected".into(),
    }
}

fn random_faults(rate: f64) -> RandomFaults {
    RandomFaults {
        error_rate: rate / 2.0,
        error_code: "RequestLimitExceeded".into(),
        timeout_rate: rate / 4.0,
        lost_response_rate: rate / 4.0,
        describe_timeout_rate: rate / 4.0,
    }
}

/// ConfigMap data that parses to `config` (the last good one, put back at quiescence).
fn config_data(config: &Config) -> BTreeMap<String, String> {
    use crate::ipam::config::*;
    let mut data = BTreeMap::new();
    data.insert(
        KEY_PREFIX_DELEGATION.to_string(),
        config.prefix_delegation.to_string(),
    );
    for (key, value) in [
        (KEY_WARM_IP, config.warm_ip_target),
        (KEY_MINIMUM_IP, config.minimum_ip_target),
        (KEY_WARM_PREFIX, config.warm_prefix_target),
    ] {
        if let Some(v) = value {
            data.insert(key.to_string(), v.to_string());
        }
    }
    data.insert(
        KEY_COOLDOWN.to_string(),
        config.cooldown.as_secs().to_string(),
    );
    data
}

/// `config-rejected`: every invalid ConfigMap a live process received was answered by a
/// ConfigRejected Event. Counted on what the processes received, not on what was written: one
/// overwritten during a watch outage, or before a new process read it, is never seen (and each
/// replica reads, and rejects, on its own).
fn check_rejected(tally: &Tally) -> Result<(), Violation> {
    let received = tally
        .invalid_configs
        .load(std::sync::atomic::Ordering::SeqCst);
    let events = tally.events.lock().unwrap_or_else(|e| e.into_inner());
    let rejected = events
        .iter()
        .filter(|(_, reason)| reason == crate::controller::reasons::CONFIG_REJECTED)
        .count() as u64;
    if rejected < received {
        return Err(Violation {
            invariant: "config-rejected",
            detail: format!(
                "{received} invalid ConfigMaps received and {rejected} ConfigRejected Events"
            ),
        });
    }
    Ok(())
}

async fn play(schedule: Schedule) -> SeedOutcome {
    let seed = schedule.seed;
    let world = ChaosWorld::new(seed, schedule.ec2_latency, schedule.stale_describes);
    let mut runner = Runner {
        world,
        tracker: Tracker::default(),
        tally: Arc::new(Tally::default()),
        slots: (0..if schedule.two_replicas { 2 } else { 1 })
            .map(|_| Slot::default())
            .collect(),
        lease: schedule
            .two_replicas
            .then(|| SimLease::new(lease_timings())),
        leader_log: LeaderLog::default(),
        leader_seen: 0,
        leading: Default::default(),
        in_force: InForce::default(),
        heals: Vec::new(),
        dead: Vec::new(),
        next_id: 1,
        config: Config::default(),
        config_valid: true,
        foreign_set: false,
        recent: VecDeque::new(),
        log_noted: 0,
        actions: BTreeMap::new(),
    };
    runner.note(format!(
        "world: nodes {:?}, {} pods, EC2 latency {}, stale describes {}, replicas {}",
        schedule.instance_types,
        schedule.initial_pods,
        schedule.ec2_latency,
        schedule.stale_describes,
        runner.slots.len()
    ));
    runner.set_config(&schedule.config);
    for (i, instance_type) in schedule.instance_types.iter().enumerate() {
        runner.world.launch(&format!("win-{i}"), instance_type);
    }
    let names: Vec<String> = runner.world.nodes.keys().cloned().collect();
    for i in 0..schedule.initial_pods as usize {
        runner
            .world
            .bind(&names[i % names.len()], &mut runner.tracker);
    }
    for slot in 0..runner.slots.len() {
        runner.start_process(slot);
    }
    let mut result = Ok(());
    for step in &schedule.steps {
        runner.act(&step.action);
        if let Some(api) = &step.api {
            runner.api(api);
        }
        if let Some(failover) = &step.failover {
            runner.failover(failover);
        }
        if let Some(exit) = &step.exit {
            runner.node_exit(exit);
        }
        result = runner.pass(step.wait).await;
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = runner.quiesce().await;
    }
    if result.is_ok() {
        result = check_rejected(&runner.tally);
    }
    SeedOutcome {
        seed,
        steps: schedule.steps.len(),
        actions: runner.actions,
        violation: result.err(),
        recent: runner.recent.into_iter().collect(),
    }
}
