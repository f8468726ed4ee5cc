//! `winipam run`: builds the process from its flags (logging, clients, metrics, HTTP server,
//! leader election, the controller) and runs it until SIGTERM, then shuts down in order: stop
//! taking work, let EC2 calls in flight finish and write each node's last status (listing
//! nothing ahead), give up the lease, serve the webhooks to the end of the drain
//! (`--shutdown-drain`, with /readyz failing), stop serving.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::RunArgs;
use crate::clock::SystemClock;
use crate::controller::{Controller, Ctx, Settings};
use crate::ec2::aws::{AwsEc2, AwsEc2Options};
use crate::ec2::ratelimit::BucketConfig;
use crate::ec2::{Ec2Backend, Ec2Client, Ec2ClientConfig};
use crate::k8s::{KubeCluster, REQUEST_TIMEOUT, bounded};
use crate::leader::{
    LeaderElector, LeaseElector, LeaseTimings, lease_client_config, unique_identity,
};
use crate::metrics::Metrics;
use crate::server::{Readiness, ServerState};
use crate::shutdown::{shutdown_channel, termination_signal};
use crate::sim::provision::NodeBackedEc2;

/// Why the process could not start (or stopped badly). Each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid flags: {0}")]
    Flags(String),
    #[error("logging: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {0}")]
    Kube(#[from] kube::Error),
    #[error("no Kubernetes API configuration (in-cluster service account or KUBECONFIG): {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("admission webhook server: {0}")]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error("simulated EC2: {0}")]
    SimulatedEc2(#[from] crate::ec2::Ec2Error),
}

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let log_level = crate::telemetry::init(args.log_format, args.log_level.as_deref())?;
    args.validate().map_err(RunError::Flags)?;
    let namespace = args.namespace();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), %namespace, "winipam starting");

    let kube_config = kube::Config::infer().await?;
    let client = kube::Client::try_from(kube_config.clone())?;
    // Requests are bounded, watches (on `client`) are not: the controller's and the webhooks'.
    let request_client = kube::Client::try_from(bounded(kube_config.clone(), REQUEST_TIMEOUT))?;
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let (trigger, shutdown) = shutdown_channel();
    // The servers (webhooks, /metrics) stop later than the controller: see `--shutdown-drain`.
    let (stop_serving, serving) = shutdown_channel();

    let ec2_config = Ec2ClientConfig {
        mutating: BucketConfig {
            rate: args.ec2_mutating_rate,
            burst: args.ec2_mutating_burst,
        },
        describe: BucketConfig {
            rate: args.ec2_describe_rate,
            burst: args.ec2_describe_burst,
        },
        ..Ec2ClientConfig::default()
    };

    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.metrics_addr,
            source,
        })?;
    let server = tokio::spawn(crate::server::serve(
        listener,
        ServerState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            log_level: Some(log_level),
        },
        serving.clone(),
    ));

    // Webhooks are served on every replica, leader or not (SPEC 9). A certificate that cannot
    // be loaded or settled stops the process: a replica without its webhook is not healthy.
    let webhooks = if args.disable_webhooks {
        tracing::warn!("admission webhooks disabled (--disable-webhooks)");
        None
    } else {
        let server = crate::webhook::WebhookServer::bind(
            args.webhook_config(client.clone(), request_client.clone()),
        )
        .await?;
        tracing::info!(addr = %args.webhook_addr, "serving admission webhooks");
        let stop = serving.clone();
        Some(tokio::spawn(
            server.run(async move { stop.cancelled().await }),
        ))
    };

    let identity = unique_identity(args.pod_name().as_deref());
    let timings = LeaseTimings {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    let lease_client = kube::Client::try_from(lease_client_config(kube_config, &timings))?;
    let elector = LeaseElector::new(
        lease_client,
        args.lease_namespace(),
        args.lease_name.clone(),
        identity.clone(),
        timings,
    )
    .map_err(RunError::Flags)?;
    let (leader_tx, leader_rx) = watch::channel(false);
    // The lease is given up only once the controller has stopped writing (its workers' last
    // statuses written, EC2 calls in flight finished): a shutdown of its own.
    let (stop_election, election_shutdown) = shutdown_channel();
    let election = tokio::spawn(elector.run(leader_tx, election_shutdown));
    tracing::info!(%identity, lease = %args.lease_name, "campaigning for leadership");

    let signal_trigger = trigger.clone();
    let signal_readiness = readiness.clone();
    let (signalled_tx, signalled) = watch::channel(None::<tokio::time::Instant>);
    let signals = tokio::spawn(async move {
        let result = termination_signal().await;
        tracing::info!("termination signal: shutting down");
        signalled_tx.send_replace(Some(tokio::time::Instant::now()));
        signal_readiness.set_shutting_down();
        signal_trigger.trigger();
        result
    });

    if let Some(delay) = args.test_annotate_delay {
        tracing::warn!(
            ?delay,
            "test hook: every annotation write is delayed (never in a cluster)"
        );
    }
    let cluster = Arc::new(
        KubeCluster::new(request_client, args.pod_name())
            .with_watch_client(client)
            .with_annotate_delay(args.test_annotate_delay),
    );
    let settings = Settings {
        resync_period: args.resync_period,
        status_min_interval: args.status_interval,
        ignore_foreign_ipam: args.ignore_foreign_ipam,
        ..Settings::default()
    };
    let control = Control {
        cluster: cluster.clone(),
        metrics,
        readiness,
        settings,
        namespace,
        config_map: args.config_map.clone(),
        leader_rx,
        shutdown: shutdown.clone(),
    };
    if args.simulated_ec2 {
        tracing::warn!(
            "EC2 is simulated inside this process (--simulated-ec2): no AWS call is made"
        );
        let backend = NodeBackedEc2::new(1)?;
        if args.simulated_ec2_fragmented_subnet {
            backend.fragment_subnet()?;
            tracing::warn!("simulated EC2: the subnet is fragmented (no free /28)");
        }
        let follower = tokio::spawn(backend.clone().follow_nodes(cluster));
        control.run(backend, ec2_config).await?;
        follower.abort();
    } else {
        let backend = AwsEc2::from_env(&AwsEc2Options {
            region: args.region.clone(),
            endpoint: args.ec2_endpoint(),
            ..AwsEc2Options::default()
        })
        .await;
        control.run(backend, ec2_config).await?;
    }

    // The controller has stopped writing: now the lease may go, then the server.
    trigger.trigger();
    stop_election.trigger();
    if let Err(err) = election.await {
        tracing::error!(error = %err, "leader election task failed");
    }
    let signalled_at = *signalled.borrow();
    if let Some(at) = signalled_at
        && webhooks.is_some()
    {
        let drain_end = at + args.shutdown_drain;
        if drain_end > tokio::time::Instant::now() {
            tracing::info!(drain = ?args.shutdown_drain, "serving the webhooks until the apiserver stops routing here");
        }
        tokio::time::sleep_until(drain_end).await;
    }
    stop_serving.trigger();
    if let Ok(Err(err)) = server.await {
        tracing::error!(error = %err, "metrics server failed");
    }
    if let Some(webhooks) = webhooks
        && let Ok(Err(err)) = webhooks.await
    {
        tracing::error!(error = %err, "webhook server failed");
    }
    signals.abort();
    tracing::info!("winipam stopped");
    Ok(())
}

/// The controller's part of the process, whichever EC2 backend it talks to.
struct Control {
    cluster: Arc<KubeCluster>,
    metrics: Metrics,
    readiness: Readiness,
    settings: Settings,
    namespace: String,
    config_map: String,
    leader_rx: watch::Receiver<bool>,
    shutdown: crate::shutdown::Shutdown,
}

impl Control {
    /// Runs the controller until shutdown.
    async fn run<B: Ec2Backend>(self, backend: B, config: Ec2ClientConfig) -> Result<(), RunError> {
        let ec2 = Ec2Client::new(backend, config, self.metrics.registry())?;
        let ctx = Arc::new(Ctx::new(
            self.cluster,
            ec2,
            Arc::new(SystemClock),
            Arc::new(self.metrics),
            self.readiness,
            self.settings,
        ));
        let stop = self.shutdown.clone();
        Controller::new(ctx, &self.namespace, &self.config_map)
            .run(self.leader_rx, async move { stop.cancelled().await })
            .await;
        Ok(())
    }
}
