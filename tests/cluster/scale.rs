//! R1 of the real-apiserver scale harness, small: `winipam run --simulated-ec2` on the host
//! against the cluster's apiserver (with the audit log of its writes), 20 KWOK m5.xlarge nodes
//! in prefix mode, and `winipam scale-probe`'s driver scaling a Deployment to 300 pods at
//! 50/s through the real scheduler. What holds deterministically is asserted: every pod
//! annotated, no address named by two live pods, and the controller's apiserver writes per pod
//! within what today's write protocol makes (one status patch and one annotation patch per pod,
//! 2.03 in all with the lease renewals); the latencies are printed, not asserted (they vary
//! with the load of the machine).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use winipam::scale::drive::{Controller, Probe};
use winipam::scale::{Scenario, report};

use crate::support::{Cluster, repo_root, turn};

const NODES: u32 = 20;
const PODS: u32 = 300;
/// Today's protocol: two writes on every pod's path, plus the lease's renewals: 2.03 measured.
/// The margin is for renewals on a slow machine (one every 2 s, however long the phase).
const MAX_WRITES_PER_POD: f64 = 2.5;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_r1_small_every_pod_annotated_once_with_bounded_writes() {
    let _turn = turn().await;
    let cluster = Cluster::start();
    let crds = repo_root().join("crds");
    cluster.kubectl(&["apply", "-f", crds.to_str().expect("UTF-8 path")]);
    cluster.kubectl(&["create", "namespace", "winipam-system"]);
    cluster.kubectl(&[
        "-n",
        "winipam-system",
        "create",
        "configmap",
        "winipam",
        "--from-literal=enable-windows-prefix-delegation=true",
    ]);
    let port = free_port();
    let log = std::env::temp_dir().join("winipam-scale-controller.log");
    let log_file = std::fs::File::create(&log).expect("create the controller's log");
    let child = Command::new(env!("CARGO_BIN_EXE_winipam"))
        .args(["run", "--simulated-ec2", "--disable-webhooks"])
        .args(["--namespace", "winipam-system", "--pod-name", "scale-1"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json", "--log-level", "warn"])
        .env(
            "KUBECONFIG",
            cluster.var("WINIPAM_CLUSTER_CONTROLLER_KUBECONFIG"),
        )
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start winipam run");
    let controller = Process(child);
    let probe = Probe {
        client: cluster.client().await,
        nodes: NODES,
        pods: PODS,
        rate: 50.0,
        churn: Duration::ZERO,
        controllers: vec![Controller {
            name: "scale-1".to_owned(),
            pid: controller.0.id(),
            metrics: ([127, 0, 0, 1], port).into(),
        }],
        controller_namespace: "winipam-system".to_owned(),
        apiserver_pid: pid_of(&cluster, "kube-apiserver"),
        etcd_pid: pid_of(&cluster, "etcd"),
        audit_log: Some(cluster.var("WINIPAM_CLUSTER_AUDIT_LOG").into()),
        controller_user: "winipam-controller".to_owned(),
        moto: None,
    };
    let run = probe.run(Scenario::R1).await;
    drop(controller);
    let report = run.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!(
            "the scale run failed: {e}\ncontroller log (tail):\n{}",
            tail(&log)
        )
    });
    eprintln!("MEASURE\n{}", report::markdown(&report));
    let phase = &report.phases[0];
    assert_eq!(
        (phase.pods, phase.annotated),
        (u64::from(PODS), u64::from(PODS))
    );
    assert!(
        phase.shared_addresses.is_empty(),
        "addresses shared: {:?}",
        phase.shared_addresses
    );
    let per_pod = phase
        .writes_per_pod
        .expect("writes counted from the audit log");
    let annotations = phase.writes_by_kind.get("patch pods").copied().unwrap_or(0);
    assert_eq!(
        annotations,
        u64::from(PODS),
        "one annotation write per pod: {:?}",
        phase.writes_by_kind
    );
    assert!(
        per_pod <= MAX_WRITES_PER_POD,
        "{per_pod:.2} controller writes per pod (at most {MAX_WRITES_PER_POD}): {:?}",
        phase.writes_by_kind
    );
    cluster.stop();
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
