//! `winipam scale-probe` (hidden): the driver and watcher of the real-apiserver scale harness
//! (`scripts/scale.sh`, and the small R1 of the cluster tests). Against a running cluster whose
//! controller runs elsewhere (`winipam run --simulated-ec2` on the host), it creates KWOK Windows
//! nodes of the simulator's S1/S2 type, scales a Deployment through the real scheduler at a
//! steady rate, and measures from outside: its own pod watch, `/proc`, the controller's
//! `/metrics` and the apiserver's audit log.
//!
//! - R1 scale-out: the Deployment from 0 to `--pods` at `--rate` pods/s.
//! - R2 churn: R1, then pods deleted at up to `--rate`/s for `--duration` while the Deployment,
//!   which replaces them, keeps all but a second's worth of its pods live.
//! - R3 leader kill: R1, then the Lease holder is SIGKILLed and `--pods`/10 more pods arrive.

pub mod drive;
pub mod measure;
pub mod moto;
pub mod pace;
pub mod plot;
pub mod report;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use drive::{Controller, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    R1,
    R2,
    R3,
}

/// A controller process the probe measures: `NAME=PID@HOST:PORT` (its lease identity, its pid,
/// its metrics address).
fn parse_controller(s: &str) -> Result<Controller, String> {
    let (name, rest) = s.split_once('=').ok_or("expected NAME=PID@ADDR")?;
    let (pid, addr) = rest.split_once('@').ok_or("expected NAME=PID@ADDR")?;
    Ok(Controller {
        name: name.to_owned(),
        pid: pid.parse().map_err(|e| format!("pid {pid}: {e}"))?,
        metrics: addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("address {addr}: {e}"))?,
    })
}

#[derive(Debug, Clone, Args)]
pub struct ScaleProbeArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// KWOK Windows nodes to create (m5.xlarge, prefix mode, as S1/S2).
    #[arg(long, default_value_t = 20)]
    pub nodes: u32,
    /// Pods of the Deployment at full size.
    #[arg(long, default_value_t = 300)]
    pub pods: u32,
    /// Pods created (R1) or replaced (R2) per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// R2: how long the churn lasts.
    #[arg(long, default_value = "30s", value_parser = crate::run::flags::parse_duration)]
    pub duration: Duration,
    /// A controller process, `NAME=PID@HOST:PORT` (repeat for each replica; NAME is its
    /// `--pod-name`, the Lease's holder identity).
    #[arg(long = "controller", value_parser = parse_controller, required = true)]
    pub controllers: Vec<Controller>,
    /// The controller's namespace (its Lease).
    #[arg(long, default_value = "winipam-system")]
    pub controller_namespace: String,
    #[arg(long)]
    pub apiserver_pid: Option<u32>,
    #[arg(long)]
    pub etcd_pid: Option<u32>,
    /// The apiserver's audit log, and the user whose writes it counts.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    #[arg(long, default_value = "winipam-controller")]
    pub controller_user: String,
    /// moto's endpoint: the nodes' instances are launched there (the controllers must use it
    /// as their EC2 rather than `--simulated-ec2`, which two replicas cannot share).
    #[arg(long)]
    pub moto: Option<String>,
    /// Where to write `<scenario>.json`, `<scenario>.md` and `<scenario>.svg`.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Runs the probe with KUBECONFIG's client, writes the JSON and markdown, prints the table.
pub async fn run(args: ScaleProbeArgs) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("KUBECONFIG: {e}"))?;
    let probe = Probe {
        client,
        nodes: args.nodes,
        pods: args.pods,
        rate: args.rate,
        churn: args.duration,
        controllers: args.controllers.clone(),
        controller_namespace: args.controller_namespace.clone(),
        apiserver_pid: args.apiserver_pid,
        etcd_pid: args.etcd_pid,
        audit_log: args.audit_log.clone(),
        controller_user: args.controller_user.clone(),
        moto: args.moto.clone(),
    };
    let report = probe.run(args.scenario).await?;
    let name = format!("{:?}", args.scenario).to_lowercase();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    let table = report::markdown(&report);
    let svg = plot::svg(&report);
    for (ext, text) in [("json", &json), ("md", &table), ("svg", &svg)] {
        let path = args.out.join(format!("{name}.{ext}"));
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("{table}");
    Ok(())
}
