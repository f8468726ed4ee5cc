//! The controller as a process: `winipam run` started from the test binary's sibling executable,
//! with its logs in a file (printed when a test fails), its `/readyz` and `/metrics` read over
//! plain HTTP, and stopped with SIGTERM or SIGKILL.
//!
//! The process runs under a small shell watchdog that reads the test's pipe: when the test binary
//! exits, however it exits, the pipe closes and the watchdog kills the controller, so no
//! controller outlives the tests. The watchdog itself exits as soon as the controller does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How one controller process is started.
#[derive(Debug, Clone)]
pub struct WinipamOptions {
    /// The controller's namespace (ConfigMap, Lease, its ServiceAccount).
    pub namespace: String,
    /// A kubeconfig of the `winipam` ServiceAccount (exactly the RBAC of the rendered base).
    pub kubeconfig: PathBuf,
    pub ec2_endpoint: String,
    pub region: String,
    /// Replica name: lease identity and Events' reporting instance.
    pub pod_name: String,
    pub resync_period: String,
    pub lease_duration: String,
    pub renew_deadline: String,
    pub retry_period: String,
    pub log_level: String,
    /// Serve the admission webhooks (`--webhook-*` flags in `extra_args`); off by default, since
    /// most tests drive the controller alone.
    pub webhooks: bool,
    /// Further `--flag value` pairs or environment variables.
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
}

/// A running (or stopped) controller process.
pub struct Winipam {
    name: String,
    watchdog: Child,
    lifeline: Option<ChildStdin>,
    pid: u32,
    metrics_addr: SocketAddr,
    webhook_addr: SocketAddr,
    log_path: PathBuf,
    exited: bool,
}

impl Winipam {
    /// Starts the process; returns once it runs (not once it is ready: see [`Self::wait_ready`]).
    pub fn start(options: &WinipamOptions) -> Winipam {
        let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let webhook_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let dir = std::env::temp_dir().join("winipam-e2e-logs");
        std::fs::create_dir_all(&dir).expect("create the log directory");
        let log_path = dir.join(format!(
            "{}-{}-{}.log",
            options.namespace,
            options.pod_name,
            metrics_addr.port()
        ));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--namespace".into(),
            options.namespace.clone(),
            "--pod-name".into(),
            options.pod_name.clone(),
            "--metrics-addr".into(),
            metrics_addr.to_string(),
            // A free port keeps parallel processes apart when webhooks are served.
            "--webhook-addr".into(),
            webhook_addr.to_string(),
            "--ec2-endpoint".into(),
            options.ec2_endpoint.clone(),
            "--region".into(),
            options.region.clone(),
            "--resync-period".into(),
            options.resync_period.clone(),
            "--lease-duration".into(),
            options.lease_duration.clone(),
            "--renew-deadline".into(),
            options.renew_deadline.clone(),
            "--retry-period".into(),
            options.retry_period.clone(),
            "--log-format".into(),
            "text".into(),
            "--log-level".into(),
            options.log_level.clone(),
        ];
        if !options.webhooks {
            args.push("--disable-webhooks".into());
        }
        args.extend(options.extra_args.iter().cloned());

        let mut command = watched_command(&log_path, binary());
        command
            .args(&args)
            // Only what the controller needs: no AWS profile or token of the machine leaks in.
            .env("KUBECONFIG", &options.kubeconfig)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", &options.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // No drain: no Service routes to a test process (a test that wants one sets it).
            .env("WINIPAM_SHUTDOWN_DRAIN", "0s");
        for (k, v) in &options.extra_env {
            command.env(k, v);
        }
        let Watched {
            watchdog,
            lifeline,
            pid,
        } = spawn_watched(command, "winipam");
        Winipam {
            name: options.pod_name.clone(),
            watchdog,
            lifeline,
            pid,
            metrics_addr,
            webhook_addr,
            log_path,
            exited: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log_path
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; panics (with the log) after `timeout` or if the
    /// process exits.
    /// Where the admission webhooks are served (when `webhooks` is on).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return;
            }
            if let Ok(Some(status)) = self.watchdog.try_wait() {
                self.exited = true;
                panic!(
                    "winipam {} exited ({status}) before it was ready; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "winipam {} not ready within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until this replica leads and has rebuilt its pools (`winipam_leader` 1, then
    /// `/readyz` 200: a follower is ready as soon as its caches are).
    pub async fn wait_leading(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.metric("winipam_leader", &[]).await != Some(1.0) {
            assert!(
                Instant::now() < deadline,
                "winipam {} does not lead within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_ready(deadline.saturating_duration_since(Instant::now()))
            .await;
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        match self.get("/metrics").await {
            Ok((200, body)) => body,
            other => panic!("GET /metrics of {}: {other:?}", self.name),
        }
    }

    /// One sample of `/metrics` whose labels include `labels` (see [`sample`]).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(&self.metrics().await, name, labels)
    }

    /// A plain HTTP/1.1 GET on the metrics server: (status, body).
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let addr = self.metrics_addr;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || http_get(addr, &path))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The process's resident memory, in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// SIGKILL: no shutdown, no lease release, EC2 calls cut wherever they are.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// SIGTERM and wait for the orderly shutdown.
    pub async fn stop(&mut self) {
        self.terminate();
        self.wait_exit(Duration::from_secs(30)).await;
    }

    /// SIGTERM without waiting: the shutdown (and its drain) goes on while the test looks.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    fn signal(&self, signal: &str) {
        if self.exited {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status();
    }

    async fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.exited {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                self.exited = true;
                return;
            }
            if Instant::now() >= deadline {
                self.signal("KILL");
                let _ = self.watchdog.wait();
                self.exited = true;
                panic!(
                    "winipam {} did not exit within {timeout:?}; log tail:\n{}",
                    self.name,
                    tail(&self.log(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Winipam {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // kube's request lines (kept in the file, for counting writes) drown the rest.
            let log: String = self
                .log()
                .lines()
                .filter(|l| !l.contains("kube_client"))
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "---- winipam {} log ({}, kube requests left out), last 300 lines ----\n{}\n\
                 ---- end of winipam {} log ----",
                self.name,
                self.log_path.display(),
                tail(&log, 300),
                self.name
            );
        }
        if !self.exited {
            self.signal("KILL");
            drop(self.lifeline.take());
            let _ = self.watchdog.wait();
        }
        // A failed test's log stays for a closer look.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// A process under a shell watchdog (see the module doc), and the pipe that keeps it alive.
pub struct Watched {
    pub watchdog: Child,
    pub lifeline: Option<ChildStdin>,
    pub pid: u32,
}

/// The watchdog command for `program`, its output appended to `log`, with an empty environment
/// but `PATH`: the caller adds the program's arguments and environment.
pub fn watched_command(log: &Path, program: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(
            // A background list reads /dev/null unless told otherwise: the lifeline is
            // passed to the reader as fd 3. The reader goes when the process goes, so
            // it never kills a process that reused the pid.
            r#"log=$1; shift; exec 3<&0
               "$@" >>"$log" 2>&1 </dev/null & child=$!
               echo "$child"
               (read _ <&3; kill -KILL "$child" 2>/dev/null) & reader=$!
               wait "$child"; status=$?
               kill "$reader" 2>/dev/null; exit "$status""#,
        )
        .arg("watchdog")
        .arg(log)
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// Starts a [`watched_command`] and reads the pid of the process it started.
pub fn spawn_watched(mut command: Command, what: &str) -> Watched {
    let mut watchdog = command
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what} watchdog: {e}"));
    let lifeline = watchdog.stdin.take();
    let mut line = String::new();
    if let Some(stdout) = watchdog.stdout.take() {
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("read the pid of {what}: {e}"));
    }
    let pid: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the {what} watchdog printed no pid: {line:?}"));
    Watched {
        watchdog,
        lifeline,
        pid,
    }
}

/// The controller binary this test binary was built with (or `$WINIPAM_E2E_BIN`), pinned at
/// first use: a hard link (or a copy) in a private directory, so a later build that replaces
/// `target/debug/winipam` (from another checkout sharing the target directory) cannot swap it
/// under a running test.
fn binary() -> &'static PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let source = std::env::var_os("WINIPAM_E2E_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_winipam")));
        remove_stale_pins();
        let dir = std::env::temp_dir().join(format!("winipam-e2e-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the binary directory");
        let pinned = dir.join("winipam");
        let _ = std::fs::remove_file(&pinned);
        if std::fs::hard_link(&source, &pinned).is_err() {
            std::fs::copy(&source, &pinned).expect("copy the winipam binary");
        }
        let help = Command::new(&pinned)
            .args(["run", "--help"])
            .output()
            .expect("run winipam --help");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("--resync-period"),
            "{} is not this checkout's winipam (another build replaced it?): rebuild and rerun",
            source.display()
        );
        pinned
    })
}

/// Pinned binaries of test processes that have exited.
fn remove_stale_pins() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("winipam-e2e-bin-"))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Labels of a Prometheus text sample line: `name{a="x",b="y"} 3` -> [(a, x), (b, y)].
fn parse_labels(labels: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in labels.split("\",") {
        if let Some((k, v)) = pair.split_once("=\"") {
            out.push((k.trim().to_owned(), v.trim_end_matches('"').to_owned()));
        }
    }
    out
}

/// Every sample of metric `name` (exact name) as (labels, value).
pub fn samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = match series.split_once('{') {
            Some((m, rest)) => (m, parse_labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        if metric == name
            && let Ok(value) = value.parse::<f64>()
        {
            out.push((labels, value));
        }
    }
    out
}

/// The first sample of `name` whose labels include every pair of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find(|(have, _)| {
            labels
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        })
        .map(|(_, v)| v)
}

/// Quantile `q` of a Prometheus histogram, as the upper bound of the first bucket holding it
/// (what `histogram_quantile` would interpolate inside).
pub fn histogram_quantile_upper(text: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = samples(text, &format!("{name}_bucket"))
        .into_iter()
        .filter_map(|(labels, count)| {
            let le = labels.iter().find(|(k, _)| k == "le")?.1.clone();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .into_iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| le)
}
