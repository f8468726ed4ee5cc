//! The controller replicas' logs, kept while a phase replaces them. A pod's log files go with
//! the pod, so when a wait across a rolling upgrade or a kill fails, the replicas that held or
//! released the Lease have already taken their logs with them; a follower started before the
//! phase keeps them in a file the failed wait prints.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::ops::RELEASE_NS;
use crate::support::{Cluster, print_kubectl};

/// The chart's selector for the controller pods.
const SELECTOR: &str = "app.kubernetes.io/name=winipam";

pub struct LogTap {
    child: Option<Child>,
    path: PathBuf,
}

impl LogTap {
    /// Follows every controller pod running now (pods started later are read at the failure).
    pub fn start(cluster: &Cluster) -> LogTap {
        let path = std::env::temp_dir().join(format!(
            "winipam-replica-logs-{}-{}.txt",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        let child = std::fs::File::create(&path).ok().and_then(|file| {
            let err = file.try_clone().ok()?;
            cluster
                .command("kubectl")
                .args([
                    "logs",
                    "--follow",
                    "--prefix",
                    "--timestamps",
                    "--max-log-requests=10",
                    "--tail=-1",
                    "-n",
                    RELEASE_NS,
                    "-l",
                    SELECTOR,
                ])
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(err)
                .spawn()
                .ok()
        });
        LogTap { child, path }
    }

    /// Prints the last `lines` lines the tap caught, then the Lease and the logs of the controller
    /// pods running now.
    pub fn print(&self, cluster: &Cluster, lines: usize) {
        let caught: Vec<String> = std::fs::File::open(&self.path)
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default();
        let from = caught.len().saturating_sub(lines);
        eprintln!(
            "--- the replicas' logs since the phase began (last {} of {} lines):",
            caught.len() - from,
            caught.len()
        );
        for line in &caught[from..] {
            eprintln!("{line}");
        }
        let tail = format!("--tail={lines}");
        for args in [
            &[
                "get",
                "lease",
                "-n",
                RELEASE_NS,
                "-o",
                "yaml",
                "--show-managed-fields",
            ][..],
            &["get", "pods", "-n", RELEASE_NS, "-o", "wide"][..],
            &[
                "logs",
                "-n",
                RELEASE_NS,
                "-l",
                SELECTOR,
                "--prefix",
                "--timestamps",
                &tail,
            ][..],
        ] {
            print_kubectl(cluster, args);
        }
    }
}

impl Drop for LogTap {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
