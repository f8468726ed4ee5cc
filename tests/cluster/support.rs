//! The cluster of these tests: `scripts/cluster.sh run --lifeline` (a real node, the scheduler,
//! the controller-manager, KWOK and moto), started once per test binary. The script tears the
//! cluster down when this process's end of its stdin closes, so even a killed test run leaves
//! nothing behind; [`Cluster::stop`] does it at once and waits.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Builder as ConfigBuilder, Credentials, Region};

pub const ANNOTATION: &str = "vpc.amazonaws.com/PrivateIPv4Address";
pub const REGION: &str = "us-east-1";
pub const AZ: &str = "us-east-1a";
/// An AMI id moto ships with.
pub const AMI: &str = "ami-03cf127a";

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One cluster per host: the tests that start one take turns.
pub async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

pub struct Cluster {
    runner: Mutex<Option<(Child, ChildStdin)>>,
    pub env: BTreeMap<String, String>,
    pub up_in: Duration,
}

impl Cluster {
    /// Starts the cluster and waits until its node is Ready (the script's `ready`).
    pub fn start() -> Cluster {
        let started = Instant::now();
        let script = repo_root().join("scripts/cluster.sh");
        let log = std::env::temp_dir().join("winipam-cluster-run.log");
        let log_file = std::fs::File::create(&log).expect("create the cluster script's log");
        let mut child = Command::new(&script)
            .args(["run", "--lifeline"])
            // The apiserver's audit log of the host-run controller's writes (the scale test).
            .env("WINIPAM_CLUSTER_AUDIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut env = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the cluster script's output");
            if line == "ready" {
                return Cluster {
                    runner: Mutex::new(Some((child, stdin))),
                    env,
                    up_in: started.elapsed(),
                };
            }
            if let Some((name, value)) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
            {
                env.insert(name.to_owned(), unquote(value));
            }
        }
        let status = child.wait().expect("wait for the cluster script");
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("scripts/cluster.sh run ended before the cluster was ready ({status}):\n{output}")
    }

    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("scripts/cluster.sh did not export {name}"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("client config");
        kube::Client::try_from(config).expect("client")
    }

    /// Runs a command with the cluster's environment (KUBECONFIG, PATH with its kubectl).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        for (name, value) in &self.env {
            if name == "PATH" {
                let path = std::env::var("PATH").unwrap_or_default();
                command.env(
                    "PATH",
                    value.replace("\"$PATH\"", &path).replace("$PATH", &path),
                );
            } else {
                command.env(name, value);
            }
        }
        command
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// Runs and panics with its output unless it succeeds; returns its stdout.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.run_ok("kubectl", args)
    }

    pub fn helm(&self, args: &[&str]) -> String {
        let helm = self.var("WINIPAM_HELM_BIN").to_owned();
        self.run_ok(&helm, args)
    }

    /// `ctr` on the node's containerd, in the namespace the kubelet uses.
    pub fn ctr(&self, args: &[&str]) -> String {
        let socket = self.var("WINIPAM_CLUSTER_CONTAINERD_SOCKET").to_owned();
        let mut all = vec!["--address", &socket, "--namespace", "k8s.io"];
        all.extend_from_slice(args);
        self.run_ok("ctr", &all)
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = ConfigBuilder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .http_client(winipam::ec2::aws::https_client())
            .endpoint_url(self.var("WINIPAM_CLUSTER_EC2_ENDPOINT"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// Tears the cluster down and waits until the script is done.
    pub fn stop(&self) {
        if let Some(status) = self.shutdown() {
            assert!(status.success(), "the cluster's teardown failed: {status}");
        }
    }

    fn shutdown(&self) -> Option<std::process::ExitStatus> {
        let (mut child, mut stdin) = self.runner.lock().ok()?.take()?;
        let _ = stdin.flush();
        drop(stdin);
        child.wait().ok()
    }
}

/// A failed test still waits for the teardown, so the next step finds a clean host.
impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn unquote(value: &str) -> String {
    // `printf %q` of our paths and URLs quotes nothing but a few characters with backslashes.
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => {}
            c => out.push(c),
        }
    }
    out
}

pub use crate::common::eventually;

/// What a failed wait prints: the NodeAddressPools, the pods and the recent Events.
pub fn diagnose(cluster: &Cluster) {
    for args in [
        &["get", "nodeaddresspools", "-o", "yaml"][..],
        &["get", "nodes", "-o", "wide"][..],
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "custom-columns=NAME:.metadata.name,RESOURCE:.spec.containers[0].resources.limits,RESTARTS:.status.containerStatuses[0].restartCount",
        ][..],
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,ADDRESS:.metadata.annotations.vpc\\.amazonaws\\.com/PrivateIPv4Address,CREATED:.metadata.creationTimestamp",
        ][..],
        &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
    ] {
        print_kubectl(cluster, args);
    }
    print_webhook_calls_failed();
}

/// The apiserver's lines about calling a webhook: a Windows pod admitted without the IP
/// resource is a call that failed under failurePolicy Ignore, and only the apiserver says why
/// (a CI run had 3 such pods on an idle replica set, and nothing in the replicas' logs).
fn print_webhook_calls_failed() {
    let dir = std::env::var("WINIPAM_CLUSTER_DIR").unwrap_or("/var/tmp/winipam-cluster".into());
    let path = std::path::Path::new(&dir).join("kube-apiserver.log");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("webhook")).collect();
    eprintln!(
        "--- {} lines of {} about webhooks (the last 40):\n{}",
        lines.len(),
        path.display(),
        lines[lines.len().saturating_sub(40)..].join("\n")
    );
}

/// Runs `kubectl args` and prints what it said, for a failed wait.
pub fn print_kubectl(cluster: &Cluster, args: &[&str]) {
    let out = cluster.run("kubectl", args);
    eprintln!(
        "--- kubectl {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`eventually`], printing [`diagnose`] before it fails.
pub async fn eventually_in<T, F, Fut>(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    crate::common::eventually_then(what, timeout, check, || diagnose(cluster)).await
}

/// Percentile `p` (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}
