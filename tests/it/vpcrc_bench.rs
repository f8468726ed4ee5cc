//! The benchmark against the real VPC Resource Controller (issue 17, item 4): the same workloads
//! played against the real controller (v1.8.2, Windows IPAM enabled, its webhooks registered)
//! and against `winipam run` (webhooks on), each controller's EC2 being moto behind the project's
//! proxy playing EC2's latency and account throttling (SPEC 12, [`AccountSpec::spec12`]).
//!
//! Ignored in the normal run: `scripts/bench-vpcrc.sh` runs each `bench_*` test in a process
//! of its own (a fresh apiserver, with an audit log, and moto), writes one JSON per run to
//! `$WINIPAM_BENCH_OUT`, then `bench_table` turns them into the markdown table of
//! docs/benchmarks.md. Workloads, on 20 m5.large Windows nodes in secondary mode:
//! - burst: 8 pods per node created at once;
//! - churn: 4 pods per node, a minute's pause, then for 2 minutes one pod replaced per second
//!   (delete the node's oldest, create one on the same node) on a node drawn at random (seeded),
//!   as the simulator's churn draws it: round the nodes in turn, no node would ever need more
//!   than its warm pool, which hides the cool-down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::PostParams;
use serde::{Deserialize, Serialize};
use winipam::scale::measure::cpu_seconds;

use crate::support::bench::{
    EniSampler, Latency, Load, LoadSampler, PodClock, api_writes, secondary_addresses,
};
use crate::support::e2e::{Env, TestNode, windows_pod};
use crate::support::ec2_account::{AccountSpec, next_u64};
use crate::support::ec2_proxy::Ec2Proxy;
use crate::support::vpcrc::{SERVICE_ACCOUNT, VpcRc, give_kubelet_status, set_windows_ipam};
use crate::support::winipam::Winipam;
use crate::webhook_support::{FileCerts, register, wait_until_injecting};

const NODES: usize = 20;
const INSTANCE_TYPE: &str = "m5.large";
/// m5.large in secondary mode: 10 addresses per ENI, the primary one the node's own.
const CAPACITY: &str = "9";
const BURST_PER_NODE: usize = 8;
const CHURN_PER_NODE: usize = 4;
const CHURN_PER_SEC: f64 = 1.0;
const CHURN_FOR: Duration = Duration::from_secs(120);
/// Between the initial pods annotated and the churn, as the simulator's churn waits.
const BEFORE_CHURN: Duration = Duration::from_secs(60);
/// After the last pod is annotated: long enough for a 30 s cool-down checked every 30 s.
const SETTLE: Duration = Duration::from_secs(65);
const ANNOTATE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    VpcRc,
    Winipam,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::VpcRc => "vpc-rc-v1.8.2",
            Contender::Winipam => "winipam",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Burst,
    Churn,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Burst => "w1-burst",
            Work::Churn => "w2-churn",
        }
    }
}

/// One run's figures (one JSON file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunReport {
    workload: String,
    controller: String,
    nodes: usize,
    /// The pods measured (burst: all; churn: the replacements).
    latency: Latency,
    /// Churn only: the initial pods.
    initial_latency: Option<Latency>,
    ec2_calls: BTreeMap<String, u64>,
    ec2_throttled: BTreeMap<String, u64>,
    ec2_refused: BTreeMap<String, u64>,
    addresses_held_peak: usize,
    addresses_held_end: usize,
    pods_live_end: usize,
    /// From the apiserver's audit log, by resource.
    api_writes: BTreeMap<String, u64>,
    controller_ready_s: f64,
    /// The controller process's user + system CPU from the workload's start to the end of
    /// the settle (its webhooks, watches, EC2 calls and writes); `None`: not read.
    #[serde(default)]
    controller_cpu_s: Option<f64>,
    /// Pods created by the workload (the burst's, or the churn's initial ones and
    /// replacements), which `controller_cpu_s` is divided by.
    #[serde(default)]
    pods_created: usize,
    workload_s: f64,
    run_s: f64,
    load: Load,
}

/// A controller in charge, behind its own proxy.
enum Running {
    VpcRc(Box<VpcRc>),
    Winipam {
        winipam: Box<Winipam>,
        /// Served by winipam's webhooks for its life.
        _certs: FileCerts,
    },
}

impl Running {
    fn proxy_counts(&self, proxy: Option<&Ec2Proxy>) -> ProxyCounts {
        let proxy = match (self, proxy) {
            (Running::VpcRc(v), _) => &v.proxy,
            (Running::Winipam { .. }, Some(p)) => p,
            (Running::Winipam { .. }, None) => return ProxyCounts::default(),
        };
        ProxyCounts {
            calls: proxy.calls(),
            throttled: proxy.throttled(),
            refused: proxy.refused(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Running::VpcRc(v) => v.pid(),
            Running::Winipam { winipam, .. } => winipam.pid(),
        }
    }

    async fn stop(&mut self, env: &Env) {
        match self {
            Running::VpcRc(v) => v.stop(&env.client).await,
            Running::Winipam { winipam, .. } => winipam.stop().await,
        }
    }
}

#[derive(Default)]
struct ProxyCounts {
    calls: BTreeMap<String, u64>,
    throttled: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
}

async fn start(env: &Env, contender: Contender) -> (Running, Option<Ec2Proxy>) {
    let proxy = Ec2Proxy::start_with_account(env.moto, AccountSpec::spec12());
    match contender {
        Contender::VpcRc => (
            Running::VpcRc(Box::new(VpcRc::start_with(env, proxy).await)),
            None,
        ),
        Contender::Winipam => {
            let certs = FileCerts::new();
            let mut options = env.options("winipam-0");
            certs.serve(&mut options);
            options.ec2_endpoint = proxy.endpoint();
            options.log_level = "info".into();
            options.resync_period = "60s".into();
            let mut winipam = Winipam::start(&options);
            winipam.wait_ready(Duration::from_secs(60)).await;
            register(env, winipam.webhook_addr().port(), &certs.ca).await;
            (
                Running::Winipam {
                    winipam: Box::new(winipam),
                    _certs: certs,
                },
                Some(proxy),
            )
        }
    }
}

fn user(env: &Env, contender: Contender) -> String {
    match contender {
        Contender::VpcRc => format!("system:serviceaccount:kube-system:{SERVICE_ACCOUNT}"),
        Contender::Winipam => format!("system:serviceaccount:{}:winipam", env.namespace),
    }
}

/// Creates the pods named on their nodes all at once (20 requests in flight).
async fn create_all(env: &Env, clock: &PodClock, pods: &[(String, String)]) {
    let api = env.pods_api();
    futures::stream::iter(pods.iter().map(|(name, node)| {
        let api = api.clone();
        async move {
            clock.created(name);
            api.create(&PostParams::default(), &windows_pod(name, node))
                .await
                .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        }
    }))
    .buffer_unordered(20)
    .collect::<Vec<()>>()
    .await;
}

fn names(pods: &[(String, String)]) -> Vec<String> {
    pods.iter().map(|(n, _)| n.clone()).collect()
}

async fn run(contender: Contender, work: Work) {
    let run_started = Instant::now();
    let env = Env::new(&format!("bench-{}", work.name())).await;
    let load = LoadSampler::start();
    if contender == Contender::VpcRc {
        set_windows_ipam(&env.client, true).await;
    }
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..NODES {
        let node = env.add_node(&format!("n{i:02}"), INSTANCE_TYPE).await;
        give_kubelet_status(&env.client, &node.name).await;
        nodes.push(node);
    }
    let started = Instant::now();
    let (mut running, winipam_proxy) = start(&env, contender).await;
    env.wait_capacity(&nodes, CAPACITY, Duration::from_secs(180))
        .await;
    wait_until_injecting(&env.pods_api()).await;
    let ready = started.elapsed();

    let clock = PodClock::start(&env).await;
    let enis: Vec<String> = nodes.iter().map(|n| n.eni_id.clone()).collect();
    let sampler = EniSampler::start(env.ec2.clone(), enis.clone());
    let work_started = Instant::now();
    let cpu_before = cpu_seconds(running.pid());
    let per_node = match work {
        Work::Burst => BURST_PER_NODE,
        Work::Churn => CHURN_PER_NODE,
    };
    let initial: Vec<(String, String)> = (0..per_node)
        .flat_map(|i| nodes.iter().enumerate().map(move |(n, node)| (n, i, node)))
        .map(|(n, i, node)| (format!("p-{n:02}-{i:03}"), node.name.clone()))
        .collect();
    create_all(&env, &clock, &initial).await;
    let waiting = clock.wait_all(&names(&initial), ANNOTATE_TIMEOUT).await;
    let initial_latency = Latency::of(&clock.latencies(&names(&initial)), waiting);

    let mut pods_created = initial.len();
    let (latency, initial_latency) = match work {
        Work::Burst => (initial_latency, None),
        Work::Churn => {
            tokio::time::sleep(BEFORE_CHURN).await;
            let replaced = churn(&env, &clock, &nodes, &initial).await;
            pods_created += replaced.len();
            let waiting = clock.wait_all(&replaced, ANNOTATE_TIMEOUT).await;
            (
                Latency::of(&clock.latencies(&replaced), waiting),
                Some(initial_latency),
            )
        }
    };
    let workload_s = work_started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let (peak, _) = sampler.held();
    let end = secondary_addresses(&env.ec2, &enis).await.unwrap_or(0);
    let counts = running.proxy_counts(winipam_proxy.as_ref());
    let pods_live_end = env.pods().await.len();
    let controller_cpu_s = cpu_before
        .zip(cpu_seconds(running.pid()))
        .map(|(before, after)| after - before);
    running.stop(&env).await;
    // Blocking audit mode: every write is in the file once answered.
    let writes = api_writes(&env.cp.dir().join("audit.log"), &user(&env, contender));
    let report = RunReport {
        workload: work.name().to_owned(),
        controller: contender.name().to_owned(),
        nodes: NODES,
        latency,
        initial_latency,
        ec2_calls: counts.calls,
        ec2_throttled: counts.throttled,
        ec2_refused: counts.refused,
        addresses_held_peak: peak.max(end),
        addresses_held_end: end,
        pods_live_end,
        api_writes: writes,
        controller_ready_s: ready.as_secs_f64(),
        controller_cpu_s,
        pods_created,
        workload_s,
        run_s: run_started.elapsed().as_secs_f64(),
        load: load.summary(),
    };
    let text = serde_json::to_string_pretty(&report).expect("JSON");
    eprintln!("{text}");
    let dir = out_dir();
    std::fs::create_dir_all(&dir).expect("create the benchmark's output directory");
    let file = dir.join(format!("{}-{}.json", work.name(), contender.name()));
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    assert_eq!(
        report.latency.not_annotated,
        0,
        "{} left pods without an address",
        contender.name()
    );
}

/// One replacement per `1 / CHURN_PER_SEC` for `CHURN_FOR`, each on a node drawn at random
/// (the same seeded draws for both controllers) and in a task of its own, so a slow request
/// does not hold the rate back. Returns the new pods' names.
async fn churn(
    env: &Env,
    clock: &PodClock,
    nodes: &[TestNode],
    initial: &[(String, String)],
) -> Vec<String> {
    // Per node, its pods oldest first.
    let mut by_node: Vec<std::collections::VecDeque<String>> = nodes
        .iter()
        .map(|node| {
            initial
                .iter()
                .filter(|(_, n)| *n == node.name)
                .map(|(p, _)| p.clone())
                .collect()
        })
        .collect();
    let replacements = (CHURN_FOR.as_secs_f64() * CHURN_PER_SEC) as usize;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / CHURN_PER_SEC));
    let mut tasks = Vec::new();
    let mut created = Vec::new();
    let mut draws = 0x5EED_u64;
    for k in 0..replacements {
        ticks.tick().await;
        let n = (next_u64(&mut draws) % nodes.len() as u64) as usize;
        let Some(old) = by_node[n].pop_front() else {
            continue;
        };
        let name = format!("r-{n:02}-{k:04}");
        by_node[n].push_back(name.clone());
        created.push(name.clone());
        let node = nodes[n].name.clone();
        clock.created(&name);
        let api = env.pods_api();
        let deleting = env.pods_api();
        tasks.push(tokio::spawn(async move {
            let _ = deleting
                .delete(&old, &kube::api::DeleteParams::default().grace_period(0))
                .await;
            api.create(&PostParams::default(), &windows_pod(&name, &node))
                .await
                .map(|_| ())
                .map_err(|e| format!("create pod {name}: {e}"))
        }));
    }
    for task in tasks {
        if let Ok(Err(e)) = task.await {
            panic!("{e}");
        }
    }
    created
}

fn out_dir() -> PathBuf {
    std::env::var_os("WINIPAM_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("winipam-bench-vpcrc"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-vpcrc.sh"]
async fn bench_w1_burst_vpcrc() {
    run(Contender::VpcRc, Work::Burst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-vpcrc.sh"]
async fn bench_w1_burst_winipam() {
    run(Contender::Winipam, Work::Burst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-vpcrc.sh"]
async fn bench_w2_churn_vpcrc() {
    run(Contender::VpcRc, Work::Churn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-vpcrc.sh"]
async fn bench_w2_churn_winipam() {
    run(Contender::Winipam, Work::Churn).await;
}

/// The runs' JSON files of `$WINIPAM_BENCH_OUT` as one markdown table (also written there as
/// `table.md`).
#[test]
#[ignore = "benchmark: scripts/bench-vpcrc.sh"]
fn bench_table() {
    let dir = out_dir();
    let mut runs: Vec<RunReport> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    runs.sort_by(|a, b| (&a.workload, &a.controller).cmp(&(&b.workload, &b.controller)));
    assert!(!runs.is_empty(), "no run in {}", dir.display());
    let table = markdown(&runs);
    println!("{table}");
    std::fs::write(dir.join("table.md"), &table).expect("write table.md");
}

fn markdown(runs: &[RunReport]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&RunReport) -> String| {
        rows.push((label.to_owned(), runs.iter().map(f).collect()));
    };
    let count = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0).to_string();
    row("pods measured", &|r| r.latency.pods.to_string());
    row("created -> annotated p50 (s)", &|r| {
        format!("{:.2}", r.latency.p50_s)
    });
    row("created -> annotated p99 (s)", &|r| {
        format!("{:.2}", r.latency.p99_s)
    });
    row("created -> annotated max (s)", &|r| {
        format!("{:.2}", r.latency.max_s)
    });
    row("not annotated", &|r| r.latency.not_annotated.to_string());
    let mut actions: Vec<String> = runs
        .iter()
        .flat_map(|r| r.ec2_calls.keys().cloned())
        .collect();
    actions.sort();
    actions.dedup();
    for action in &actions {
        row(&format!("EC2 {action}"), &|r| count(&r.ec2_calls, action));
    }
    row("EC2 throttled (RequestLimitExceeded)", &|r| {
        r.ec2_throttled.values().sum::<u64>().to_string()
    });
    row("EC2 refused by the proxy (address limit)", &|r| {
        r.ec2_refused.values().sum::<u64>().to_string()
    });
    row("addresses held, peak", &|r| {
        r.addresses_held_peak.to_string()
    });
    row("addresses held, end", &|r| r.addresses_held_end.to_string());
    row("pods live, end", &|r| r.pods_live_end.to_string());
    let mut resources: Vec<String> = runs
        .iter()
        .flat_map(|r| r.api_writes.keys().cloned())
        .collect();
    resources.sort();
    resources.dedup();
    row("API writes (audit log), total", &|r| {
        r.api_writes.values().sum::<u64>().to_string()
    });
    for resource in &resources {
        row(&format!("  {resource}"), &|r| {
            count(&r.api_writes, resource)
        });
    }
    row("controller ready (s)", &|r| {
        format!("{:.1}", r.controller_ready_s)
    });
    row("workload (s)", &|r| format!("{:.1}", r.workload_s));
    row("controller CPU, workload and settle (s)", &|r| {
        r.controller_cpu_s
            .map_or("-".to_owned(), |s| format!("{s:.2}"))
    });
    row("controller CPU per pod created (ms)", &|r| {
        r.controller_cpu_s
            .filter(|_| r.pods_created > 0)
            .map_or("-".to_owned(), |s| {
                format!("{:.1}", s * 1000.0 / r.pods_created as f64)
            })
    });
    row("load (1 min) start / mean / max", &|r| {
        format!(
            "{:.1} / {:.1} / {:.1}",
            r.load.at_start, r.load.mean, r.load.max
        )
    });
    let header: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {}", r.workload, r.controller))
        .collect();
    let mut out = format!("| figure | {} |\n", header.join(" | "));
    out.push_str(&format!("|---|{}\n", "---:|".repeat(runs.len())));
    for (label, cells) in rows {
        out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    out
}
