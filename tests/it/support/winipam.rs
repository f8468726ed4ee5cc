//! The `winipam` binary as a process against a test control plane, with the RBAC of `deploy/`:
//! it runs as the `winipam` ServiceAccount (a token kubeconfig), logs to a file in the control
//! plane's directory, and is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::process::{Child, Command};

use super::controlplane::ControlPlane;

pub struct Winipam {
    child: Child,
    log: PathBuf,
}

/// The controller's namespace in `deploy/rbac`.
pub const NAMESPACE: &str = "winipam-system";

impl Winipam {
    /// Creates the controller's namespace, applies `deploy/rbac` and the CRDs, and starts
    /// `winipam run` with `args` (after `--namespace` and a free metrics port).
    pub async fn start(cp: &ControlPlane, args: &[&str]) -> Winipam {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let existing = cp.kubectl(&["get", "namespace", NAMESPACE]).await;
        if !existing.status.success() {
            cp.kubectl_ok(&["create", "namespace", NAMESPACE]).await;
        }
        cp.install_crds(&root.join("crds")).await;
        cp.kubectl_ok(&[
            "apply",
            "-f",
            root.join("deploy/rbac").to_str().expect("utf-8"),
        ])
        .await;
        let kubeconfig = cp
            .write_service_account_kubeconfig(NAMESPACE, "winipam")
            .await;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = cp.dir().join(format!(
            "winipam-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("create the controller's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_winipam"))
            .arg("run")
            .args(["--namespace", NAMESPACE, "--metrics-addr", "127.0.0.1:0"])
            .args(["--log-format", "text", "--log-level", "info,winipam=debug"])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start winipam run");
        Winipam { child, log }
    }

    /// What the controller has logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
