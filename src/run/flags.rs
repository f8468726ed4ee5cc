//! Flags of `winipam run` (SPEC 3.3). Every flag has a `WINIPAM_*` environment variable; a few
//! also fall back to the variables Kubernetes and the AWS SDK already use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::leader::check_lease_timings;
use crate::telemetry::LogFormat;

/// Where the webhook's serving certificate comes from (SPEC section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertMode {
    /// `tls.crt` and `tls.key` in `--webhook-cert-dir` (cert-manager in the chart).
    Files,
    /// The controller creates a CA and patches the webhook configurations' caBundle.
    SelfManaged,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Namespace of the controller (its ConfigMap, Lease and Events). Default: $POD_NAMESPACE,
    /// then the in-cluster service account's namespace, then `winipam-system`.
    #[arg(long, env = "WINIPAM_NAMESPACE")]
    pub namespace: Option<String>,

    /// Name of this replica (Events' reporting instance, lease identity). Default: $POD_NAME,
    /// then the host name.
    #[arg(long, env = "WINIPAM_POD_NAME")]
    pub pod_name: Option<String>,

    /// The ConfigMap holding the IPAM settings, in the controller's namespace.
    #[arg(long, env = "WINIPAM_CONFIG_MAP", default_value = "winipam")]
    pub config_map: String,

    /// Address of the metrics and health server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "WINIPAM_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address of the admission webhook server (TLS).
    #[arg(long, env = "WINIPAM_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,

    /// Do not serve the admission webhooks (for running beside another webhook deployment, or a
    /// controller-only replica in tests). Pods then need the IP resource from elsewhere.
    #[arg(long, env = "WINIPAM_DISABLE_WEBHOOKS")]
    pub disable_webhooks: bool,

    /// After SIGTERM, how long the webhooks and /metrics keep serving (with /readyz failing)
    /// while the controller hands over the lease. A replica's webhook endpoint leaves the
    /// Service only once the pod is terminating; without this drain the apiserver can call a
    /// replica whose server already closed, and with failurePolicy Ignore the pod is admitted
    /// without the IP resource, which overcommits its node (seen in a rolling upgrade). 15 s:
    /// taking a terminating pod out of the Service's endpoints can lag by more than 5 s on a
    /// loaded control plane (the controller-manager's client is rate-limited), and with a 5 s
    /// drain half the pods created just after an upgrade missed the resource (chart test).
    #[arg(long, env = "WINIPAM_SHUTDOWN_DRAIN", default_value = "15s", value_parser = parse_duration)]
    pub shutdown_drain: Duration,

    /// Directory of the webhook's `tls.crt` and `tls.key`.
    #[arg(
        long,
        env = "WINIPAM_WEBHOOK_CERT_DIR",
        default_value = "/etc/winipam/webhook-certs"
    )]
    pub webhook_cert_dir: PathBuf,

    /// Where the webhook certificate comes from.
    #[arg(
        long,
        env = "WINIPAM_WEBHOOK_CERT_MODE",
        value_enum,
        default_value = "files"
    )]
    pub webhook_cert_mode: CertMode,

    /// ServiceAccounts allowed to set the address annotation (`system:serviceaccount:NS:NAME`,
    /// comma-separated). Default: the controller's own, `winipam` in its namespace.
    #[arg(
        long,
        env = "WINIPAM_CONTROLLER_SERVICE_ACCOUNTS",
        value_delimiter = ','
    )]
    pub controller_service_accounts: Vec<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "WINIPAM_LEASE_NAME", default_value = "winipam")]
    pub lease_name: String,

    /// Namespace of the Lease. Default: the controller's namespace.
    #[arg(long, env = "WINIPAM_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a lease is valid after its last renewal (others may take it after that).
    #[arg(long, env = "WINIPAM_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// The leader stops acting if it could not renew for this long (less than the lease
    /// duration, so a deposed leader stops writing before anyone else may start).
    #[arg(long, env = "WINIPAM_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// Interval between lease renewals and acquisition attempts.
    #[arg(long, env = "WINIPAM_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// EC2 endpoint URL, for an emulator. Default: $AWS_ENDPOINT_URL_EC2, then the SDK's chain.
    #[arg(long, env = "WINIPAM_EC2_ENDPOINT")]
    pub ec2_endpoint: Option<String>,

    /// AWS region. Default: the SDK's chain (AWS_REGION, profile, instance metadata).
    #[arg(long, env = "WINIPAM_REGION")]
    pub region: Option<String>,

    /// Mutating EC2 calls per second (Assign/Unassign), for the whole process.
    #[arg(long, env = "WINIPAM_EC2_MUTATING_RATE", default_value_t = 5.0, value_parser = parse_rate)]
    pub ec2_mutating_rate: f64,

    /// Burst of mutating EC2 calls.
    #[arg(long, env = "WINIPAM_EC2_MUTATING_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub ec2_mutating_burst: u32,

    /// Describe EC2 calls per second, for the whole process.
    #[arg(long, env = "WINIPAM_EC2_DESCRIBE_RATE", default_value_t = 20.0, value_parser = parse_rate)]
    pub ec2_describe_rate: f64,

    /// Burst of describe EC2 calls.
    #[arg(long, env = "WINIPAM_EC2_DESCRIBE_BURST", default_value_t = 80, value_parser = clap::value_parser!(u32).range(1..))]
    pub ec2_describe_burst: u32,

    /// Interval of the periodic re-describe of every ENI (jittered).
    #[arg(long, env = "WINIPAM_RESYNC_PERIOD", default_value = "60s", value_parser = parse_duration)]
    pub resync_period: Duration,

    /// How often, at most, a node's NodeAddressPool status is written for what can wait: pods
    /// gone, counts, expired records, more addresses to list ahead. What a restart needs (an
    /// address handed out that no written status covers, a release, a pause) is written at
    /// once whatever this says. Longer: fewer apiserver writes per pod; shorter: a fresher
    /// status for `kubectl get nodeaddresspools`, and after a crash fewer addresses of pods
    /// gone lately that the next leader holds back for a minute.
    #[arg(long, env = "WINIPAM_STATUS_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub status_interval: Duration,

    /// Threads of the async runtime. Default: one per CPU the process may use (its cgroup's
    /// CPU limit, else every core of the node: dozens on a large node). More threads spend more
    /// CPU waking each other for every watch event (R2's churn on two cores: eight threads 5%
    /// more per pod event than two, one about 10% less; docs/benchmarks.md). With one, the
    /// webhooks and probes wait for whatever the watches are doing. The chart sets 2.
    #[arg(long, env = "WINIPAM_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,

    /// Assign and release even when kube-system/amazon-vpc-cni enables the VPC Resource
    /// Controller's Windows IPAM (for clusters where that key is stale).
    #[arg(long, env = "WINIPAM_IGNORE_FOREIGN_IPAM")]
    pub ignore_foreign_ipam: bool,

    /// TEST ONLY, hidden: wait this long before every pod annotation write, so end-to-end tests
    /// can delete and re-create a pod while its address is being written. Never set it in a
    /// cluster: every pod would wait that much longer for its address.
    #[arg(long, env = "WINIPAM_TEST_ANNOTATE_DELAY", hide = true, value_parser = parse_duration)]
    pub test_annotate_delay: Option<Duration>,

    /// Use a simulated EC2 inside the process instead of AWS (development, end-to-end tests):
    /// each Windows node's instance is launched in it from the node's providerID and
    /// `node.kubernetes.io/instance-type` label.
    #[arg(long, env = "WINIPAM_SIMULATED_EC2")]
    pub simulated_ec2: bool,

    /// Simulation only (with `--simulated-ec2`, development and end-to-end tests): the
    /// simulated subnet starts with one address of every /28 taken, so prefix assigns fail with
    /// `InsufficientCidrBlocks` and `prefix-fallback-to-secondary` can be seen at work.
    #[arg(
        long,
        env = "WINIPAM_SIMULATED_EC2_FRAGMENTED_SUBNET",
        requires = "simulated_ec2"
    )]
    pub simulated_ec2_fragmented_subnet: bool,

    /// Log format. Default: `text` on a terminal, `json` otherwise.
    #[arg(long, env = "WINIPAM_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log level or filter directives (`info`, `winipam=debug,kube=warn`). Default: $RUST_LOG,
    /// then `info`.
    #[arg(long, env = "WINIPAM_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// In-cluster, the namespace of the pod's service account.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
const DEFAULT_NAMESPACE: &str = "winipam-system";
/// The ServiceAccount of the chart (deploy/helm/winipam).
pub const SERVICE_ACCOUNT: &str = "winipam";

impl RunArgs {
    /// Checks what clap cannot: the leader-election timings must nest, and the resync period
    /// must be one the dispatcher can schedule.
    pub fn validate(&self) -> Result<(), String> {
        check_lease_timings(self.lease_duration, self.renew_deadline, self.retry_period)?;
        check_resync_period(self.resync_period)?;
        check_status_interval(self.status_interval)
    }

    /// The controller's namespace (see `--namespace`).
    pub fn namespace(&self) -> String {
        resolve_namespace(
            self.namespace.as_deref(),
            |k| std::env::var(k).ok(),
            || std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE).ok(),
        )
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.namespace())
    }

    /// This replica's name (see `--pod-name`).
    pub fn pod_name(&self) -> Option<String> {
        non_empty(self.pod_name.clone())
            .or_else(|| non_empty(std::env::var("POD_NAME").ok()))
            .or_else(|| non_empty(std::env::var("HOSTNAME").ok()))
    }

    /// `--ec2-endpoint`, else `AWS_ENDPOINT_URL_EC2`.
    pub fn ec2_endpoint(&self) -> Option<String> {
        non_empty(self.ec2_endpoint.clone())
            .or_else(|| non_empty(std::env::var("AWS_ENDPOINT_URL_EC2").ok()))
    }

    /// `--controller-service-accounts`, else the controller's own ServiceAccount.
    pub fn controller_service_accounts(&self) -> Vec<String> {
        let given: Vec<String> = self
            .controller_service_accounts
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if given.is_empty() {
            vec![format!(
                "system:serviceaccount:{}:{SERVICE_ACCOUNT}",
                self.namespace()
            )]
        } else {
            given
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn resolve_namespace(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    service_account_file: impl Fn() -> Option<String>,
) -> String {
    non_empty(flag.map(String::from))
        .or_else(|| non_empty(env("POD_NAMESPACE")))
        .or_else(|| non_empty(service_account_file()))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// The longest `--resync-period`: a day (resync is the safety net for missed events; anything
/// longer is a typo, and a far-away deadline would overflow the clock arithmetic).
const MAX_RESYNC_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// At least a second (0 would resync, describing every instance, in a busy loop) and at most
/// [`MAX_RESYNC_PERIOD`].
pub fn check_resync_period(period: Duration) -> Result<(), String> {
    check_span("--resync-period", period, MAX_RESYNC_PERIOD, "24h")
}

/// The longest `--status-interval`: 10 minutes (a status older than that tells an operator
/// little, and a new leader after a crash would hold back every address of the pods gone since).
const MAX_STATUS_INTERVAL: Duration = Duration::from_secs(600);

/// At least a second (the status would be rewritten on every pass) and at most
/// [`MAX_STATUS_INTERVAL`].
pub fn check_status_interval(interval: Duration) -> Result<(), String> {
    check_span("--status-interval", interval, MAX_STATUS_INTERVAL, "10m")
}

/// `value` of `flag` lies between a second and `max` (written `max_text` in the message).
fn check_span(flag: &str, value: Duration, max: Duration, max_text: &str) -> Result<(), String> {
    if value < Duration::from_secs(1) || value > max {
        return Err(format!(
            "{flag} ({value:?}) must be between 1s and {max_text}"
        ));
    }
    Ok(())
}

/// A duration in human form: `500ms`, `15s`, `2m`, `1h`, `1m30s`; a bare number is seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration `{input}`: expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{input}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "invalid duration `{input}`: missing unit (ms, s, m, h)"
                ));
            }
            unit => return Err(format!("invalid duration `{input}`: unknown unit `{unit}`")),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn parse_rate(input: &str) -> Result<f64, String> {
    let rate: f64 = input
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate `{input}`"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(format!(
            "rate must be a positive number of calls per second, got `{input}`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut full = vec!["winipam"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(|c| c.run)
    }

    #[test]
    fn durations_in_human_form() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
        for bad in ["", "s", "15x", "1.5s", "-1s", "m5", "10 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_must_be_positive() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1", "x", "inf", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.config_map, "winipam");
        assert_eq!(a.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(a.webhook_addr, "0.0.0.0:9443".parse().unwrap());
        assert_eq!(a.webhook_cert_mode, CertMode::Files);
        assert_eq!(a.lease_name, "winipam");
        assert_eq!(a.lease_duration, Duration::from_secs(15));
        assert_eq!(a.renew_deadline, Duration::from_secs(10));
        assert_eq!(a.retry_period, Duration::from_secs(2));
        assert_eq!((a.ec2_mutating_rate, a.ec2_mutating_burst), (5.0, 40));
        assert_eq!((a.ec2_describe_rate, a.ec2_describe_burst), (20.0, 80));
        assert_eq!(a.resync_period, Duration::from_secs(60));
        assert_eq!(a.status_interval, Duration::from_secs(30));
        assert!(!a.ignore_foreign_ipam);
        assert_eq!(a.worker_threads, None);
        assert_eq!(a.log_format, None);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn flags_override_defaults() {
        let a = parse(&[
            "--namespace",
            "ops",
            "--lease-duration",
            "30s",
            "--renew-deadline",
            "20s",
            "--retry-period",
            "5s",
            "--ec2-mutating-rate",
            "1.5",
            "--log-format",
            "json",
            "--webhook-cert-mode",
            "self-managed",
            "--controller-service-accounts",
            "system:serviceaccount:a:b, system:serviceaccount:c:d",
            "--ignore-foreign-ipam",
            "--worker-threads",
            "1",
        ])
        .unwrap();
        assert_eq!(a.namespace(), "ops");
        assert_eq!(a.lease_namespace(), "ops");
        assert_eq!(a.lease_duration, Duration::from_secs(30));
        assert_eq!(a.ec2_mutating_rate, 1.5);
        assert_eq!(a.log_format, Some(LogFormat::Json));
        assert_eq!(a.webhook_cert_mode, CertMode::SelfManaged);
        assert_eq!(
            a.controller_service_accounts(),
            ["system:serviceaccount:a:b", "system:serviceaccount:c:d"]
        );
        assert!(a.ignore_foreign_ipam);
        assert_eq!(a.worker_threads, Some(1));
        assert!(a.validate().is_ok());

        let own = parse(&["--namespace", "ops"]).unwrap();
        assert_eq!(
            own.controller_service_accounts(),
            ["system:serviceaccount:ops:winipam"]
        );
        assert!(parse(&["--ec2-describe-burst", "0"]).is_err());
        assert!(parse(&["--resync-period", "soon"]).is_err());
        assert!(parse(&["--status-interval", "often"]).is_err());
        // No runtime without a thread, nor a thread per pod.
        for bad in ["0", "257", "two"] {
            assert!(parse(&["--worker-threads", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn lease_timings_must_nest() {
        let s = Duration::from_secs;
        assert!(check_lease_timings(s(15), s(10), s(2)).is_ok());
        assert!(check_lease_timings(s(15), s(15), s(2)).is_err());
        assert!(check_lease_timings(s(15), s(10), s(10)).is_err());
        assert!(check_lease_timings(s(15), s(10), Duration::ZERO).is_err());
        assert!(check_lease_timings(Duration::from_millis(15_500), s(10), s(2)).is_err());
        let ms = Duration::from_millis;
        assert!(check_lease_timings(s(1), ms(500), ms(100)).is_err());
        assert!(check_lease_timings(s(2), s(1), ms(100)).is_ok());
    }

    #[test]
    fn namespace_resolution_order() {
        let no_env = |_: &str| None;
        let env = |k: &str| (k == "POD_NAMESPACE").then(|| "from-env".to_string());
        let file = || Some("from-file\n".to_string());
        assert_eq!(resolve_namespace(Some("flag"), env, file), "flag");
        assert_eq!(resolve_namespace(None, env, file), "from-env");
        assert_eq!(resolve_namespace(Some(""), no_env, file), "from-file");
        assert_eq!(resolve_namespace(None, no_env, || None), "winipam-system");
    }
}

#[cfg(test)]
#[path = "flags_fuzz_tests.rs"]
mod fuzz_tests;
