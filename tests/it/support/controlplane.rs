//! A real Kubernetes control plane (etcd + kube-apiserver) on free 127.0.0.1 ports.
//!
//! `scripts/controlplane.sh run DIR --lifeline` is the one place that generates the certificates,
//! chooses the flags and starts the processes (the dev cluster uses the same script); this file
//! starts it, waits for its `ready` line and hands out clients. The script's stdin is the
//! lifeline: when this process ends, however it ends, the pipe closes and the script kills etcd
//! and kube-apiserver and removes DIR. Dropping a [`ControlPlane`] does the same at once.
//!
//! Tests share one control plane per test binary ([`ControlPlane::shared`]) and isolate
//! themselves with their own namespace ([`ControlPlane::create_namespace`]) and object names.
//! A test that stops or breaks the control plane starts its own ([`ControlPlane::start`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const BIN_VARS: [&str; 3] = [
    "WINIPAM_ETCD_BIN",
    "WINIPAM_KUBE_APISERVER_BIN",
    "WINIPAM_KUBECTL_BIN",
];

/// Field manager of everything the harness applies.
const FIELD_MANAGER: &str = "winipam-tests";

pub struct ControlPlane {
    dir: PathBuf,
    kubectl: PathBuf,
    runner: Mutex<Option<Child>>,
    /// Write end of the runner's stdin; dropping it stops the control plane.
    lifeline: Mutex<Option<ChildStdin>>,
}

impl ControlPlane {
    /// Starts a control plane of its own, stopped when the value is dropped.
    pub async fn start() -> ControlPlane {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The control plane shared by every test of this binary, started by the first caller and
    /// stopped when the test process exits.
    pub async fn shared() -> &'static ControlPlane {
        // tokio's OnceCell: callers from other tests' runtimes wait for the first start.
        static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(Self::start).await
    }

    fn start_blocking() -> ControlPlane {
        let bins: Vec<PathBuf> = BIN_VARS
            .iter()
            .map(|var| match std::env::var_os(var) {
                Some(path) => PathBuf::from(path),
                None => panic!(
                    "{var} is not set: run the tests with scripts/test.sh, or first \
                     `eval \"$(scripts/controlplane.sh env)\"`"
                ),
            })
            .collect();
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("winipam-controlplane-")
            .tempdir()
            .expect("create a temporary directory")
            // The runner removes it when it stops, which may be after this process exits.
            .keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/controlplane.sh");
        let mut command = Command::new(&script);
        command.arg("run").arg(&dir).arg("--lifeline");
        for (var, bin) in BIN_VARS.iter().zip(&bins) {
            command.env(var, bin);
        }
        let mut runner = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let lifeline = runner.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = runner.stdout.take() {
            // Read errors end up as a missing `ready` line, reported below with stderr.
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let control_plane = ControlPlane {
            dir,
            kubectl: bins[2].clone(),
            runner: Mutex::new(Some(runner)),
            lifeline: Mutex::new(lifeline),
        };
        if line.trim() != "ready" {
            let stderr = control_plane.take_runner().map(|mut runner| {
                let mut text = String::new();
                if let Some(mut stderr) = runner.stderr.take() {
                    let _ = stderr.read_to_string(&mut text);
                }
                let _ = runner.wait();
                text
            });
            panic!(
                "the control plane did not start:\n{}",
                stderr.unwrap_or_default()
            );
        }
        eprintln!(
            "control plane ready in {:.1} s at {}",
            started.elapsed().as_secs_f64(),
            control_plane.dir.display()
        );
        control_plane
    }

    fn take_runner(&self) -> Option<Child> {
        self.runner.lock().map(|mut r| r.take()).unwrap_or(None)
    }

    /// The directory holding certificates, logs and the kubeconfig; removed on stop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig with the admin credential (a client certificate in `system:masters`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The CA that signed the apiserver's serving certificate and the client certificates.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("certs/ca.crt")
    }

    /// Pids of etcd and kube-apiserver, as the runner recorded them.
    pub fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dir.join("pids")).expect("read the pids file");
        text.lines()
            .filter(|line| !line.starts_with("runner "))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// Client configuration with the admin credential. Build clients per test: a
    /// [`kube::Client`] belongs to the tokio runtime it was created in.
    pub async fn admin_config(&self) -> Config {
        let kubeconfig =
            Kubeconfig::read_from(self.kubeconfig_path()).expect("read the kubeconfig");
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("load the kubeconfig")
    }

    pub async fn admin_client(&self) -> Client {
        Client::try_from(self.admin_config().await).expect("build the admin client")
    }

    /// Creates a namespace with a name unique in this control plane, starting with `prefix`.
    pub async fn create_namespace(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.admin_client().await)
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// A token for service account `namespace/name` (created if absent), from the TokenRequest
    /// API: whoever uses it has exactly the RBAC bound to that service account.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let accounts = Api::<ServiceAccount>::namespaced(self.admin_client().await, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("create service account {namespace}/{name}: {e}"),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("request a token for {namespace}/{name}: {e}"));
        response
            .status
            .map(|status| status.token)
            .unwrap_or_else(|| panic!("no token in the TokenRequest for {namespace}/{name}"))
    }

    /// The admin kubeconfig with the credential replaced by a token of service account
    /// `namespace/name` (created if absent), and that namespace as the default.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Kubeconfig {
        let token = self.service_account_token(namespace, name).await;
        let mut kubeconfig =
            Kubeconfig::read_from(self.kubeconfig_path()).expect("read the kubeconfig");
        for user in &mut kubeconfig.auth_infos {
            // A fresh AuthInfo drops the admin client certificate: only the token authenticates.
            user.auth_info = Some(
                serde_json::from_value::<AuthInfo>(serde_json::json!({ "token": token }))
                    .expect("an AuthInfo with a token"),
            );
        }
        for context in &mut kubeconfig.contexts {
            if let Some(context) = context.context.as_mut() {
                context.namespace = Some(namespace.to_owned());
            }
        }
        kubeconfig
    }

    /// A client acting as service account `namespace/name` (created if absent).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let kubeconfig = self.service_account_kubeconfig(namespace, name).await;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("load the service account kubeconfig");
        Client::try_from(config).expect("build the service account client")
    }

    /// Writes a kubeconfig file acting as service account `namespace/name` (created if
    /// absent), for processes such as the controller that must run with exactly its RBAC.
    pub async fn write_service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let kubeconfig = self.service_account_kubeconfig(namespace, name).await;
        let path = self.dir.join(format!("kubeconfig-{namespace}-{name}"));
        // JSON is YAML: kubectl and kube read it as a kubeconfig.
        let text = serde_json::to_vec_pretty(&kubeconfig).expect("serialize the kubeconfig");
        std::fs::write(&path, text).expect("write the service account kubeconfig");
        path
    }

    /// Runs kubectl with the admin kubeconfig.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig_path(), args).await
    }

    /// Runs kubectl with another kubeconfig (say, a service account's).
    pub async fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {}: {e}", self.kubectl.display()))
    }

    /// Runs kubectl with the admin kubeconfig; panics with its stderr unless it succeeds.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args).await;
        assert!(
            output.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Server-side applies every object of a YAML (or JSON) file; returns them as
    /// `kind.group/name`, as kubectl names them.
    pub async fn apply_yaml_file(&self, path: &Path) -> Vec<String> {
        let path = path.to_str().expect("a UTF-8 path");
        let manager = format!("--field-manager={FIELD_MANAGER}");
        let args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager,
            "-o",
            "name",
            "-f",
            path,
        ];
        self.kubectl_ok(&args)
            .await
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Applies every `*.yaml`/`*.yml`/`*.json` file of `dir` (none if `dir` does not exist) and
    /// waits until each CustomResourceDefinition among them is Established. Returns the CRD
    /// names (`plural.group`).
    pub async fn install_crds(&self, dir: &Path) -> Vec<String> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|entry| entry.expect("read the CRD directory").path())
                .filter(|path| {
                    path.extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", dir.display()),
        };
        files.sort();
        let mut crds = Vec::new();
        for file in files {
            for object in self.apply_yaml_file(&file).await {
                if let Some(name) =
                    object.strip_prefix("customresourcedefinition.apiextensions.k8s.io/")
                {
                    crds.push(name.to_owned());
                }
            }
        }
        if !crds.is_empty() {
            let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
            let qualified: Vec<String> = crds.iter().map(|name| format!("crd/{name}")).collect();
            args.extend(qualified.iter().map(String::as_str));
            self.kubectl_ok(&args).await;
        }
        crds
    }

    /// Stops etcd and kube-apiserver and removes the directory; waits until they are gone.
    fn stop(&self) {
        // EOF on the runner's stdin: it kills both processes and removes the directory.
        if let Ok(mut lifeline) = self.lifeline.lock() {
            lifeline.take();
        }
        let Some(mut runner) = self.take_runner() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match runner.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    // The runner hangs: kill what it started, then the runner itself.
                    if let Ok(text) = std::fs::read_to_string(self.dir.join("pids")) {
                        for pid in text.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                            let _ = Command::new("kill").args(["-KILL", pid]).status();
                        }
                    }
                    let _ = runner.kill();
                    let _ = runner.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
