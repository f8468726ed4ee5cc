//! R1, R2 and R3 of the real-apiserver scale harness, small: `winipam run` on the host against
//! the cluster's apiserver (with the audit log of its writes), KWOK m5.xlarge nodes, and
//! `winipam scale-probe`'s driver scaling a Deployment through the real scheduler. What holds
//! deterministically is asserted: every pod annotated, no address named by two live pods, the
//! controller's apiserver writes per pod within what today's write protocol makes, and for R3
//! every new pod annotated again within the lease duration + 5 s of the leader's SIGKILL with
//! at most 5 DescribeInstances. The latencies are printed, not asserted (they vary with the
//! load of the machine). The write bounds are today's figures with a margin for a slow machine,
//! where a phase lasts longer and so holds more of the lease's renewals (one every 2 s) and of
//! the coalesced status writes (one per node per 30 s at most, plus refills of the addresses
//! listed ahead). The write protocol before the addresses listed ahead (a status write before
//! every annotation and at every deletion) fails them: 2.03 and 3.03 per pod (#18 item 3).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use winipam::scale::drive::{Controller, Probe};
use winipam::scale::report::{PhaseReport, ScaleReport};
use winipam::scale::{Scenario, report};

use crate::support::{Cluster, repo_root, turn};

/// The chart's default lease duration, which R3's kill waits out.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// The controller process, SIGKILLed if the test fails before it stops it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn pid_of(cluster: &Cluster, name: &str) -> Option<u32> {
    let path = std::path::Path::new(cluster.var("WINIPAM_CLUSTER_DIR")).join(format!("{name}.pid"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One small run.
struct Run {
    scenario: Scenario,
    nodes: u32,
    pods: u32,
    churn: Duration,
    /// `ip-cooldown-seconds`, when not the default.
    cooldown: Option<u32>,
}

/// Starts a cluster and the run's controllers (two for R3, on the cluster's moto in
/// secondary-IP mode, which outlives the leader; one with EC2 simulated in its process and
/// prefix mode otherwise), runs the probe, and returns its report with the cluster stopped.
async fn run(run: Run) -> ScaleReport {
    let _turn = turn().await;
    let cluster = Cluster::start();
    let crds = repo_root().join("crds");
    cluster.kubectl(&["apply", "-f", crds.to_str().expect("UTF-8 path")]);
    cluster.kubectl(&["create", "namespace", "winipam-system"]);
    let moto = (run.scenario == Scenario::R3)
        .then(|| cluster.var("WINIPAM_CLUSTER_EC2_ENDPOINT").to_owned());
    let prefix = format!(
        "--from-literal=enable-windows-prefix-delegation={}",
        moto.is_none()
    );
    let cooldown = (run.cooldown).map(|s| format!("--from-literal=ip-cooldown-seconds={s}"));
    let mut configmap = vec![
        "-n",
        "winipam-system",
        "create",
        "configmap",
        "winipam",
        &prefix,
    ];
    configmap.extend(cooldown.as_deref());
    cluster.kubectl(&configmap);
    let name = format!("{:?}", run.scenario).to_lowercase();
    let replicas = if moto.is_some() { 2 } else { 1 };
    let mut processes = Vec::new();
    let mut controllers = Vec::new();
    let mut logs = Vec::new();
    for i in 1..=replicas {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("winipam-scale-{name}-controller-{i}.log"));
        let log_file = std::fs::File::create(&log).expect("create the controller's log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_winipam"));
        command
            .args(["run", "--disable-webhooks"])
            .args([
                "--namespace",
                "winipam-system",
                "--pod-name",
                &format!("scale-{i}"),
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json", "--log-level", "warn"])
            .env(
                "KUBECONFIG",
                cluster.var("WINIPAM_CLUSTER_CONTROLLER_KUBECONFIG"),
            )
            .stdout(Stdio::null())
            .stderr(log_file);
        match &moto {
            Some(endpoint) => command
                .args(["--ec2-endpoint", endpoint, "--region", "us-east-1"])
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing"),
            None => command.arg("--simulated-ec2"),
        };
        let child = command.spawn().expect("start winipam run");
        controllers.push(Controller {
            name: format!("scale-{i}"),
            pid: child.id(),
            metrics: ([127, 0, 0, 1], port).into(),
        });
        processes.push(Process(child));
        logs.push(log);
        // The first one leads: R3 kills a leader that built the pools from the start.
        if i == 1 && replicas > 1 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    let probe = Probe {
        client: cluster.client().await,
        nodes: run.nodes,
        pods: run.pods,
        rate: 50.0,
        churn: run.churn,
        controllers,
        controller_namespace: "winipam-system".to_owned(),
        apiserver_pid: pid_of(&cluster, "kube-apiserver"),
        etcd_pid: pid_of(&cluster, "etcd"),
        audit_log: Some(cluster.var("WINIPAM_CLUSTER_AUDIT_LOG").into()),
        controller_user: "winipam-controller".to_owned(),
        moto,
    };
    let result = probe.run(run.scenario).await;
    drop(processes);
    let report = result.unwrap_or_else(|e| {
        let tails: Vec<String> = logs
            .iter()
            .map(|log| {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                format!("{}:\n{}", log.display(), tail(&text))
            })
            .collect();
        panic!(
            "the scale run failed: {e}\ncontroller logs (tail):\n{}",
            tails.join("\n")
        )
    });
    eprintln!("MEASURE\n{}", report::markdown(&report));
    cluster.stop();
    report
}

/// Every pod of the phase annotated, no address shared, at most `max_per_pod` controller
/// writes per pod.
fn assert_phase(phase: &PhaseReport, pods: u64, max_per_pod: f64) {
    assert_eq!(
        (phase.pods, phase.annotated),
        (pods, pods),
        "{}: pods of the phase, annotated",
        phase.name
    );
    assert!(
        phase.shared_addresses.is_empty(),
        "{}: addresses shared: {:?}",
        phase.name,
        phase.shared_addresses
    );
    let per_pod = phase
        .writes_per_pod
        .expect("writes counted from the audit log");
    assert!(
        per_pod <= max_per_pod,
        "{}: {per_pod:.2} controller writes per pod (at most {max_per_pod}): {:?}",
        phase.name,
        phase.writes_by_kind
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_r1_small_every_pod_annotated_once_with_bounded_writes() {
    const PODS: u32 = 300;
    let report = run(Run {
        scenario: Scenario::R1,
        nodes: 20,
        pods: PODS,
        churn: Duration::ZERO,
        cooldown: None,
    })
    .await;
    let phase = &report.phases[0];
    // One annotation patch per pod, the statuses coalesced: 1.16 in all with the lease
    // renewals (40 status patches for 300 pods on 20 nodes, every one a refill of the
    // addresses listed ahead; 2.03 with a status write before each annotation).
    assert_phase(phase, u64::from(PODS), 1.4);
    let annotations = phase.writes_by_kind.get("patch pods").copied().unwrap_or(0);
    assert_eq!(
        annotations,
        u64::from(PODS),
        "one annotation write per pod: {:?}",
        phase.writes_by_kind
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_r2_small_churn_annotates_every_replacement_without_sharing() {
    const PODS: u32 = 300;
    let report = run(Run {
        scenario: Scenario::R2,
        nodes: 20,
        pods: PODS,
        churn: Duration::from_secs(30),
        cooldown: Some(10),
    })
    .await;
    assert_phase(&report.phases[0], u64::from(PODS), 1.4);
    let churn = &report.phases[1];
    assert!(churn.pods > 0, "no pod replaced");
    // #18's target: at most 1.1 writes per replacement. A replacement costs its annotation;
    // the leaver's address stays covered as used by the gone pod, and is listed ahead as it
    // cools in the next status. The churn lasts three 10 s cool-downs, so that most of it is
    // the steady state of R2's 5 minutes, not the pools' growth while the first cool-downs
    // run (one status per /28 Assigned): 1.06 measured twice (80 status patches, 40 Assigns,
    // 1,500 replacements at 50/s). With the default 30 s cool-down and 15 s of churn, all
    // growth: 1.09 (1.14 before the warm reserve went to the list on churning nodes).
    assert_phase(churn, churn.pods, 1.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_r3_small_leader_killed_every_new_pod_annotated_within_the_lease() {
    // moto's secondary-IP mode: 14 pods per m5.xlarge.
    const PODS: u32 = 300;
    let report = run(Run {
        scenario: Scenario::R3,
        nodes: 30,
        pods: PODS,
        churn: Duration::ZERO,
        cooldown: None,
    })
    .await;
    // moto's nodes start empty: most pods wait for addresses from EC2, each written to a
    // status (listed ahead) before its annotation: 1.98 per pod.
    assert_phase(&report.phases[0], u64::from(PODS), 2.5);
    let kill = &report.phases[1];
    assert_phase(kill, u64::from(PODS / 10), R3_MAX_WRITES_PER_POD);
    let again = kill
        .reannotated_after_kill_seconds
        .expect("R3 measures the time to annotate again");
    let bound = (LEASE_DURATION + Duration::from_secs(5)).as_secs_f64();
    assert!(
        again <= bound,
        "every new pod annotated again {again:.1} s after the kill (at most {bound} s)"
    );
    let describes = kill
        .ec2_calls
        .get("DescribeInstances")
        .copied()
        .unwrap_or(0);
    // The phase runs until the new leader has rebuilt every pool, so its describes are the
    // whole rebuild's, including the fleet's batch after the nodes whose pods waited.
    let rebuilt = kill
        .rebuilt_after_kill_seconds
        .expect("R3 waits for the new leader's rebuild");
    assert!(
        rebuilt <= bound,
        "every pool rebuilt {rebuilt:.1} s after the kill (at most {bound} s)"
    );
    assert!(
        (1..=5).contains(&describes),
        "{describes} DescribeInstances on the rebuild (1 to 5): {:?}",
        kill.ec2_calls
    );
}

/// R3's new pods are one per node here, and the new leader writes each node's first status
/// (its rebuilt record, the addresses it assigned listed ahead) before that node's pod: 2.13-2.23
/// per new pod measured (31-34 status patches, 30 annotations, 3 lease renewals; no creates of
/// the pools it read, 30 before).
const R3_MAX_WRITES_PER_POD: f64 = 3.0;

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
