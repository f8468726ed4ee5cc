//! The dispatcher: consumes the watches (on every replica, so a new leader starts from warm
//! caches) into the index of Windows nodes and bound pods (`index`) and delivers what changed to
//! the node workers; applies configuration and the foreign-IPAM safety check, and, while
//! leading, runs one worker per node and the periodic resync.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::context::Ctx;
use super::index::{Index, Route};
use super::reasons;
use super::record::{Restored, restore};
use super::state::{NodeMsg, NodeWorker, WorkerHandle};
use crate::ec2::Ec2Backend;
use crate::ipam::{Config, InstanceInfo};
use crate::k8s::views::foreign_ipam_enabled;
use crate::k8s::{Cluster, ConfigMapView, EventSeverity, NodeView, ObjectRef, PodView, WatchEvent};

/// The controller process's IPAM loop.
pub struct Controller<C, B: Ec2Backend> {
    ctx: Arc<Ctx<C, B>>,
    config_namespace: String,
    config_name: String,
}

enum Input {
    Nodes(WatchEvent<NodeView>),
    Pods(WatchEvent<PodView>),
    Config(Option<ConfigMapView>),
    Foreign(Option<ConfigMapView>),
    Leader(bool),
    Resync,
    Described(Vec<InstanceInfo>),
    Shutdown,
}

impl<C: Cluster, B: Ec2Backend> Controller<C, B> {
    pub fn new(ctx: Arc<Ctx<C, B>>, config_namespace: &str, config_name: &str) -> Self {
        Controller {
            ctx,
            config_namespace: config_namespace.to_string(),
            config_name: config_name.to_string(),
        }
    }

    /// Runs until `shutdown` resolves. `leader` says whether this replica may write; workers
    /// exist only while it is true, and are rebuilt from the cluster and EC2 each time it
    /// becomes true (SPEC 6.3).
    pub async fn run(
        self,
        mut leader: watch::Receiver<bool>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let cluster = self.ctx.cluster.clone();
        let mut nodes = cluster.watch_nodes().boxed();
        let mut pods = cluster.watch_pods().boxed();
        let mut config = cluster
            .watch_config(&self.config_namespace, &self.config_name)
            .boxed();
        let mut foreign = cluster.watch_foreign_ipam().boxed();
        let (described_tx, mut described_rx) = mpsc::unbounded_channel::<Vec<InstanceInfo>>();
        let mut state = State {
            ctx: self.ctx.clone(),
            index: Index::default(),
            workers: BTreeMap::new(),
            config: Arc::new(Config::default()),
            config_object: None,
            foreign: false,
            leading: *leader.borrow_and_update(),
            started: false,
            described_tx,
        };
        // The elector may have answered before this loop started.
        self.ctx.metrics.set_leader(state.leading);
        self.ctx.readiness.set_leader(state.leading);
        let mut elector_alive = true;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut next_resync = tokio::time::Instant::now() + state.resync_delay();
        loop {
            // `biased`: inputs are taken in a fixed order (shutdown first, nodes before their
            // pods), so a simulated run is reproducible from its seed; each branch is drained
            // quickly, so none starves.
            let input = tokio::select! {
                biased;
                _ = &mut shutdown => Input::Shutdown,
                Some(ev) = nodes.next() => Input::Nodes(ev),
                Some(ev) = pods.next() => Input::Pods(ev),
                Some(cm) = config.next() => Input::Config(cm),
                Some(f) = foreign.next() => Input::Foreign(f),
                changed = leader.changed(), if elector_alive => match changed {
                    Ok(()) => Input::Leader(*leader.borrow_and_update()),
                    // The elector is gone: we cannot know that we lead (and the closed channel
                    // must not be polled again: it would answer at once, forever).
                    Err(_) => {
                        elector_alive = false;
                        Input::Leader(false)
                    }
                },
                Some(infos) = described_rx.recv() => Input::Described(infos),
                _ = tokio::time::sleep_until(next_resync) => Input::Resync,
            };
            match input {
                Input::Nodes(ev) => state.on_nodes(ev),
                Input::Pods(ev) => state.on_pods(ev),
                Input::Config(cm) => state.on_config(cm).await,
                Input::Foreign(f) => state.on_foreign(f).await,
                Input::Leader(l) => {
                    state.leading = l;
                    self.ctx.metrics.set_leader(l);
                    self.ctx.readiness.set_leader(l);
                    if !l {
                        tracing::warn!("leadership lost: stopping all node workers");
                        state.stop_all().await;
                    }
                }
                Input::Resync => {
                    next_resync = tokio::time::Instant::now() + state.resync_delay();
                    state.resync();
                }
                Input::Described(infos) => state.route_resync(infos),
                Input::Shutdown => {
                    if state.leading && !state.workers.is_empty() {
                        tracing::info!(
                            nodes = state.workers.len(),
                            "stepping down: node workers finish their EC2 calls and write a last status listing nothing ahead"
                        );
                    }
                    for w in state.workers.values() {
                        // A closed channel means the worker is ending; nothing to deliver.
                        let _ = w.tx.send(NodeMsg::StepDown);
                    }
                    // The elector still runs while the workers write their last statuses: if
                    // it says the lead went (renewals failing on a slow apiserver), they stop
                    // writing, since the next leader may already have written newer records,
                    // which a late last status would overwrite.
                    let stopping = state.stop_all();
                    let mut stopping = std::pin::pin!(stopping);
                    loop {
                        tokio::select! {
                            () = &mut stopping => break,
                            changed = leader.changed(), if elector_alive => {
                                let leading = changed.is_ok() && *leader.borrow_and_update();
                                elector_alive = changed.is_ok();
                                if !leading {
                                    tracing::warn!("leadership lost while stepping down: last statuses not yet written are not written");
                                    self.ctx.metrics.set_leader(false);
                                    self.ctx.readiness.set_leader(false);
                                }
                            }
                        }
                    }
                    return;
                }
            }
            state.maybe_start().await;
        }
    }
}

struct State<C, B: Ec2Backend> {
    ctx: Arc<Ctx<C, B>>,
    index: Index,
    /// Ordered so that fan-outs (config, relists, resync) reach workers in the same order on
    /// every run: the simulator reproduces a run from its seed.
    workers: BTreeMap<String, WorkerHandle>,
    config: Arc<Config>,
    config_object: Option<ObjectRef>,
    foreign: bool,
    leading: bool,
    /// Workers were started for this term of leadership.
    started: bool,
    described_tx: mpsc::UnboundedSender<Vec<InstanceInfo>>,
}

impl<C: Cluster, B: Ec2Backend> State<C, B> {
    fn blocked(&self) -> bool {
        self.foreign && !self.ctx.settings.ignore_foreign_ipam
    }

    /// Resync period with ±10% jitter, so replicas and restarts do not line up.
    fn resync_delay(&self) -> Duration {
        let period = self.ctx.settings.resync_period;
        let jitter = (self.ctx.now().as_millis() % 200) as f64 / 1000.0 - 0.1;
        period.mul_f64(1.0 + jitter)
    }

    fn send(&self, node: &str, msg: NodeMsg) {
        if let Some(w) = self.workers.get(node) {
            // A closed channel means the worker is ending; nothing to deliver.
            let _ = w.tx.send(msg);
        }
    }

    fn on_nodes(&mut self, ev: WatchEvent<NodeView>) {
        for route in self.index.on_nodes(ev) {
            self.route(route);
        }
    }

    fn on_pods(&mut self, ev: WatchEvent<PodView>) {
        for route in self.index.on_pods(ev) {
            self.route(route);
        }
    }

    /// Delivers what an index change means to the workers.
    fn route(&mut self, route: Route) {
        match route {
            Route::NodeApplied(view) => self.node_applied(view),
            Route::NodeGone(name) => self.stop_worker(&name),
            Route::PodApplied(view) => {
                let node = Arc::clone(&view.node_name);
                self.send(&node, NodeMsg::PodApplied(view));
            }
            Route::PodDeleted { node, uid } => self.send(&node, NodeMsg::PodDeleted(Box::new(uid))),
            Route::PodsResynced => {
                for (node, w) in &self.workers {
                    let list = self.index.pods_of(node);
                    // A closed channel means the worker is ending; nothing to deliver.
                    let _ = w.tx.send(NodeMsg::PodsResynced(Box::new(list)));
                }
            }
        }
    }

    fn node_applied(&mut self, view: NodeView) {
        let name = view.name.clone();
        // Same name, new object (deleted and re-created, maybe on a new instance): start over.
        if self
            .workers
            .get(&name)
            .is_some_and(|w| w.node_uid != view.uid)
        {
            self.stop_worker(&name);
        }
        if self.workers.contains_key(&name) {
            self.send(&name, NodeMsg::Node(Box::new(view)));
        } else if self.running() {
            // Not restored here: the worker reads its own NodeAddressPool before building.
            self.start_worker(view, None, false);
        }
    }

    async fn on_config(&mut self, cm: Option<ConfigMapView>) {
        self.index.config_seen();
        let Some(cm) = cm else {
            self.config_object = None;
            self.set_config(Config::default());
            return;
        };
        let object = ObjectRef::config_map(&cm);
        self.config_object = Some(object.clone());
        match Config::parse(&cm.data) {
            Ok(parsed) => {
                if !parsed.unknown_keys.is_empty() {
                    tracing::warn!(keys = ?parsed.unknown_keys, "ConfigMap has keys winipam does not know (typos?); they are ignored");
                }
                self.set_config(parsed.config);
            }
            Err(err) => {
                self.ctx.metrics.config_errors_total.inc();
                let note = format!(
                    "configuration rejected, the previous one stays in force: {err}. Fix the \
                     value in ConfigMap {}/{}",
                    cm.namespace, cm.name
                );
                self.ctx
                    .event(
                        &object,
                        EventSeverity::Warning,
                        reasons::CONFIG_REJECTED,
                        &note,
                    )
                    .await;
            }
        }
    }

    fn set_config(&mut self, config: Config) {
        if *self.config == config {
            return;
        }
        tracing::info!(?config, "configuration in force");
        self.config = Arc::new(config);
        for w in self.workers.values() {
            let _ = w.tx.send(NodeMsg::Config(self.config.clone()));
        }
    }

    /// `kube-system/amazon-vpc-cni` changed (`None`: it does not exist).
    async fn on_foreign(&mut self, cm: Option<ConfigMapView>) {
        self.index.foreign_seen();
        let foreign = cm.as_ref().is_some_and(|c| foreign_ipam_enabled(&c.data));
        let was = self.blocked();
        self.foreign = foreign;
        let blocked = self.blocked();
        self.ctx.metrics.set_blocked(blocked);
        if foreign && self.ctx.settings.ignore_foreign_ipam {
            tracing::warn!(
                "kube-system/amazon-vpc-cni enables the VPC Resource Controller's Windows IPAM; ignored because of --ignore-foreign-ipam"
            );
        }
        if blocked == was {
            return;
        }
        if blocked {
            let note = "kube-system/amazon-vpc-cni has enable-windows-ipam: \"true\": the VPC \
                        Resource Controller hands out Windows pod IPs, so winipam assigns and \
                        releases nothing. Set it to \"false\" (or remove it) to let winipam \
                        manage them, or start winipam with --ignore-foreign-ipam if it is stale";
            // On the VPC CNI's ConfigMap that causes it, and on winipam's own if there is one.
            let objects = cm
                .as_ref()
                .map(ObjectRef::config_map)
                .into_iter()
                .chain(self.config_object.clone());
            for object in objects {
                self.ctx
                    .event(
                        &object,
                        EventSeverity::Warning,
                        reasons::FOREIGN_IPAM_ENABLED,
                        note,
                    )
                    .await;
            }
        } else {
            tracing::info!("Windows IPAM of the VPC Resource Controller is off: winipam resumes");
        }
        for w in self.workers.values() {
            let _ = w.tx.send(NodeMsg::Blocked(blocked));
        }
    }

    /// Workers run only while leading, and only once every watch has listed everything, so a
    /// pool is never built without the annotations that name its addresses.
    fn running(&self) -> bool {
        self.leading && self.started
    }

    async fn maybe_start(&mut self) {
        self.ctx.readiness.set_caches_synced(self.index.synced());
        if !self.leading || self.started || !self.index.synced() {
            return;
        }
        // Cool-down records and addresses in use of the previous leader (or of our previous
        // life).
        let mut restored: HashMap<String, Restored> = HashMap::new();
        match self.ctx.cluster.read_pool_statuses().await {
            Ok(statuses) => {
                for read in statuses {
                    let mut records = restore(&read.status);
                    records.owner_uid = read.owner_uid;
                    restored.insert(read.node, records);
                }
            }
            Err(err) => {
                // Without them a restart could shorten cool-downs: try again on the next event.
                tracing::warn!(error = %err, "reading NodeAddressPool statuses failed; pools wait");
                return;
            }
        }
        let nodes: Vec<NodeView> = self.index.nodes().cloned().collect();
        tracing::info!(nodes = nodes.len(), "leading: rebuilding node pools");
        self.started = true;
        if nodes.is_empty() {
            self.ctx.readiness.set_pools_rebuilt(true);
        }
        for view in nodes {
            let records = restored.remove(&view.name).unwrap_or_default();
            self.start_worker(view, Some(records), true);
        }
    }

    /// `restored`: the node's records as read at leadership start; `None`, the worker reads them.
    fn start_worker(&mut self, view: NodeView, restored: Option<Restored>, rebuild: bool) {
        let name = view.name.clone();
        let pods = self.index.pods_of(&name);
        let handle = NodeWorker::spawn(
            self.ctx.clone(),
            view,
            pods,
            self.config.clone(),
            self.blocked(),
            restored,
            rebuild,
        );
        self.workers.insert(name, handle);
    }

    /// Dropping the sender ends the worker after its EC2 call in flight.
    fn stop_worker(&mut self, name: &str) {
        if let Some(handle) = self.workers.remove(name) {
            handle
                .retired
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn stop_all(&mut self) {
        self.started = false;
        // Every worker is told at once, then awaited: told one by one, a worker kept reconciling
        // (and calling EC2 as if it led) while an earlier one finished its EC2 call in flight,
        // seconds after the lead went and while the next leader already ran.
        let tasks: Vec<_> = std::mem::take(&mut self.workers)
            .into_values()
            .map(|h| h.task)
            .collect();
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "node worker ended abnormally");
            }
        }
    }

    /// SPEC 6.4: every ENI re-described in batches of 1,000; subnets refreshed (free-IP metric).
    fn resync(&self) {
        if !self.leading || self.workers.is_empty() {
            return;
        }
        let ids: Vec<String> = self
            .workers
            .keys()
            .filter_map(|n| self.index.node(n)?.instance_id.clone())
            .collect();
        let ec2 = self.ctx.ec2.clone();
        let tx = self.described_tx.clone();
        tokio::spawn(async move {
            match ec2.describe_instances(&ids).await {
                Ok(infos) => {
                    let _ = tx.send(infos);
                }
                Err(err) => tracing::warn!(error = %err, "resync describe failed"),
            }
            if let Err(err) = ec2.refresh_subnets().await {
                tracing::warn!(error = %err, "subnet refresh failed");
            }
        });
    }

    fn route_resync(&self, infos: Vec<InstanceInfo>) {
        let by_instance: HashMap<&str, &str> = (self.index.nodes())
            .filter_map(|n| Some((n.instance_id.as_deref()?, n.name.as_str())))
            .collect();
        for info in infos {
            if let Some(node) = by_instance.get(info.instance_id.as_str()) {
                self.send(node, NodeMsg::Resync(Box::new(info.clone())));
            }
        }
    }
}
