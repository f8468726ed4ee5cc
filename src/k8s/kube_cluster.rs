//! [`Cluster`] on a real apiserver, through kube.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

use super::annotate::{NextStep, next_step, patch_into_existing_map, patch_with_new_map};
use super::cluster::{
    AnnotateOutcome, Cluster, EnsureOutcome, EventSeverity, ObjectRef, PoolRead, WatchEvent,
};
use super::error::ClusterError;
use super::pod_fields::PodFields;
use super::views::{
    BETA_OS_LABEL, ConfigMapView, NodeView, OS_LABEL, PRIVATE_IPV4_ADDRESS, PodView,
    config_map_view, is_windows, node_view, pod_view,
};
use super::watch::{merge_node_streams, single_object, view_stream};
use crate::crd::{NodeAddressPool, NodeAddressPoolSpec, NodeAddressPoolStatus};

/// The name Events are reported under, and the field manager of every write.
pub const CONTROLLER_NAME: &str = "winipam";

/// ConfigMap of the VPC CNI whose `enable-windows-ipam` says whether the VPC Resource Controller
/// manages Windows IPs (SPEC 3.2).
pub const FOREIGN_IPAM_NAMESPACE: &str = "kube-system";
pub const FOREIGN_IPAM_CONFIG_MAP: &str = "amazon-vpc-cni";

/// Attempts of the annotation write: each refused patch is followed by a read that picks the
/// next patch, so more than a few means someone else keeps rewriting the pod's annotations.
const ANNOTATE_ATTEMPTS: usize = 4;
/// Page size for listing NodeAddressPools.
const LIST_PAGE: u32 = 500;
/// events.k8s.io limits: note 1 kB, reason 128 characters.
const NOTE_MAX_BYTES: usize = 1024;
const REASON_MAX_BYTES: usize = 128;

/// Every request of the controller and of the webhooks' self-managed certificates but the
/// watches is bounded by this (see [`bounded`]): the apiserver answers a status write or an
/// annotation in milliseconds, and a request that hangs on a dead connection would stall its
/// node's worker (and a leader's step-down), or a replica's certificate, for good.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `config` with every request bounded by `bound`: connecting, sending, and waiting for the
/// answer, counted from the request (not from when its pooled connection went idle). kube sets
/// no bound by default; a request that times out is an error, and the next try goes on a new
/// connection. Not for watches, which stay idle for minutes by design.
pub fn bounded(mut config: kube::Config, bound: std::time::Duration) -> kube::Config {
    config.connect_timeout = Some(bound);
    config.read_timeout = Some(bound);
    config.write_timeout = Some(bound);
    config.reset_reader_on_write = true;
    config
}

/// The real cluster.
#[derive(Clone)]
pub struct KubeCluster {
    /// Requests: reads, writes, Events.
    client: Client,
    /// The watches (the same client unless [`KubeCluster::with_watch_client`]).
    watch_client: Client,
    recorder: Recorder,
    /// Test hook (`--test-annotate-delay`): a pause before each annotation write.
    annotate_delay: Option<std::time::Duration>,
}

impl KubeCluster {
    /// `instance` names this replica in Events (the pod name); `None` uses the host name.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = match instance {
            Some(instance) => Reporter {
                controller: CONTROLLER_NAME.into(),
                instance: Some(instance),
            },
            None => Reporter::from(CONTROLLER_NAME),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        KubeCluster {
            watch_client: client.clone(),
            client,
            recorder,
            annotate_delay: None,
        }
    }

    /// Watches go through `client` (one without a request bound, see [`bounded`]); every other
    /// request through the client given to [`KubeCluster::new`].
    pub fn with_watch_client(mut self, client: Client) -> Self {
        self.watch_client = client;
        self
    }

    /// For end-to-end tests only: every annotation write waits `delay` first, which opens the
    /// window in which a test deletes and re-creates the pod.
    pub fn with_annotate_delay(mut self, delay: Option<std::time::Duration>) -> Self {
        self.annotate_delay = delay;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_NAME.into()),
        ..Default::default()
    }
}

fn json_patch(ops: serde_json::Value) -> Result<Patch<()>, ClusterError> {
    Ok(Patch::Json(serde_json::from_value(ops)?))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn node_owner(node_name: &str, node_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.into(),
        uid: node_uid.into(),
        // Not a controller reference, and no foreground-deletion blocking (which would need
        // update on nodes/finalizers): the pool only has to go when the Node goes.
        controller: None,
        block_owner_deletion: None,
    }
}

fn some_node_view(node: &Node) -> Option<NodeView> {
    Some(node_view(node))
}

fn some_config_map_view(cm: &ConfigMap) -> Option<ConfigMapView> {
    Some(config_map_view(cm))
}

/// One ConfigMap selected by name, so RBAC `resourceNames` can allow its list and watch.
fn config_map_stream(
    client: Client,
    namespace: &str,
    name: &str,
    what: &'static str,
) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    view_stream(api, config, some_config_map_view, what).map(single_object)
}

impl KubeCluster {
    async fn try_annotate(
        &self,
        api: &Api<PodFields>,
        name: &str,
        patch: serde_json::Value,
    ) -> Result<Option<AnnotateOutcome>, ClusterError> {
        match api.patch(name, &patch_params(), &json_patch(patch)?).await {
            Ok(_) => Ok(Some(AnnotateOutcome::Written)),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Ok(Some(AnnotateOutcome::PodGone))
            }
            // A failed `test` and a missing parent path both come back as 422 Unprocessable
            // Entity; the caller reads the pod to tell which.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::debug!(pod = name, reason = %status.reason, message = %status.message, "annotation patch refused");
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }
}

impl Cluster for KubeCluster {
    async fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        value: &str,
        has_annotations: bool,
    ) -> Result<AnnotateOutcome, ClusterError> {
        if let Some(delay) = self.annotate_delay {
            tokio::time::sleep(delay).await;
        }
        // The answer is the whole Pod: only the fields winipam reads are decoded.
        let api: Api<PodFields> = Api::namespaced(self.client.clone(), namespace);
        // Most new pods have no annotations at all: adding the whole map then lands at once.
        let mut step = if has_annotations {
            NextStep::PatchIntoExistingMap
        } else {
            NextStep::PatchWithNewMap
        };
        for _ in 0..ANNOTATE_ATTEMPTS {
            let patch = match &step {
                NextStep::Done(outcome) => return Ok(outcome.clone()),
                NextStep::PatchIntoExistingMap => patch_into_existing_map(uid, value),
                NextStep::PatchWithNewMap => patch_with_new_map(uid, value),
            };
            if let Some(outcome) = self.try_annotate(&api, name, patch).await? {
                return Ok(outcome);
            }
            let meta = api.get_metadata_opt(name).await?.map(|m| m.metadata);
            let next = next_step(meta.as_ref(), uid);
            if next == step {
                // The pod looks as the patch expected, yet it was refused: not a race we can
                // resolve by choosing another patch.
                return Err(ClusterError::Rejected {
                    code: 422,
                    reason: "Invalid".into(),
                    message: format!("annotation patch on {namespace}/{name} refused"),
                });
            }
            step = next;
        }
        Err(ClusterError::Conflict(format!(
            "annotations of {namespace}/{name} kept changing during the write"
        )))
    }

    async fn set_node_capacity(
        &self,
        node: &str,
        capacity: Option<u32>,
    ) -> Result<(), ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        // A JSON merge patch creates `status.capacity` if it is missing and removing an absent
        // key is a no-op, so this is idempotent; only our key is touched.
        let value = capacity.map(|c| json!(c.to_string()));
        let patch = json!({"status": {"capacity": {PRIVATE_IPV4_ADDRESS: value}}});
        api.patch_status(node, &patch_params(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn ensure_pool_object(
        &self,
        node_name: &str,
        node_uid: &str,
    ) -> Result<EnsureOutcome, ClusterError> {
        let api: Api<NodeAddressPool> = Api::all(self.client.clone());
        let mut pool = NodeAddressPool::new(node_name, NodeAddressPoolSpec {});
        pool.metadata.owner_references = Some(vec![node_owner(node_name, node_uid)]);
        let post = PostParams {
            field_manager: Some(CONTROLLER_NAME.into()),
            ..Default::default()
        };
        match api.create(&post, &pool).await {
            Ok(_) => return Ok(EnsureOutcome::Created),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
        let existing = api.get_metadata(node_name).await?.metadata;
        let owned = existing
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Node" && o.uid == node_uid);
        if owned {
            return Ok(EnsureOutcome::Existed);
        }
        // Left over from an earlier node of the same name: point it at this one. The
        // resourceVersion makes the patch conditional on what we just read.
        let patch = json!({"metadata": {
            "resourceVersion": existing.resource_version,
            "ownerReferences": [node_owner(node_name, node_uid)],
        }});
        api.patch(node_name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        Ok(EnsureOutcome::Adopted)
    }

    async fn write_pool_status(
        &self,
        node_name: &str,
        status: &NodeAddressPoolStatus,
    ) -> Result<(), ClusterError> {
        let api: Api<NodeAddressPool> = Api::all(self.client.clone());
        // `add /status` replaces the whole status: fields we no longer report (an ended
        // cool-down, a cleared error) disappear, which a merge patch would not do.
        let patch = json_patch(json!([{"op": "add", "path": "/status", "value": status}]))?;
        api.patch_status(node_name, &patch_params(), &patch).await?;
        Ok(())
    }

    async fn read_pool_statuses(&self) -> Result<Vec<PoolRead>, ClusterError> {
        let api: Api<NodeAddressPool> = Api::all(self.client.clone());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(LIST_PAGE);
            if let Some(t) = token.take() {
                params = params.continue_token(&t);
            }
            let page = api.list(&params).await?;
            for pool in page.items {
                let owner_uid = (pool.metadata.owner_references.iter().flatten())
                    .find(|o| o.kind == "Node")
                    .map(|o| o.uid.clone());
                out.push(PoolRead {
                    node: pool.metadata.name.unwrap_or_default(),
                    owner_uid,
                    status: pool.status.unwrap_or_default(),
                });
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    async fn read_pool_status(
        &self,
        node_name: &str,
    ) -> Result<Option<NodeAddressPoolStatus>, ClusterError> {
        let api: Api<NodeAddressPool> = Api::all(self.client.clone());
        Ok(api.get_opt(node_name).await?.and_then(|pool| pool.status))
    }

    async fn publish_event(
        &self,
        object: &ObjectRef,
        severity: EventSeverity,
        reason: &str,
        note: &str,
    ) -> Result<(), ClusterError> {
        let reference = ObjectReference {
            api_version: Some(object.kind.api_version().into()),
            kind: Some(object.kind.as_str().into()),
            name: Some(object.name.clone()),
            namespace: object.namespace.clone(),
            uid: Some(object.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: match severity {
                EventSeverity::Normal => EventType::Normal,
                EventSeverity::Warning => EventType::Warning,
            },
            reason: truncate(reason, REASON_MAX_BYTES),
            note: Some(truncate(note, NOTE_MAX_BYTES)),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.recorder.publish(&event, &reference).await?;
        Ok(())
    }

    fn watch_nodes(&self) -> impl Stream<Item = WatchEvent<NodeView>> + Send + 'static {
        let api: Api<Node> = Api::all(self.watch_client.clone());
        let reader: Api<Node> = Api::all(self.client.clone());
        let ga = watcher::Config::default().labels(&format!("{OS_LABEL}=windows"));
        let beta =
            watcher::Config::default().labels(&format!("{BETA_OS_LABEL}=windows,!{OS_LABEL}"));
        // A deletion not yet contradicted by the other watch: is the node still there, and
        // still a Windows node? Unknown (an error) counts as gone.
        let still_windows = move |name: String| {
            let reader = reader.clone();
            async move {
                match reader.get_metadata_opt(&name).await {
                    Ok(Some(node)) => is_windows(&node.metadata.labels.unwrap_or_default()),
                    Ok(None) => false,
                    Err(err) => {
                        tracing::debug!(node = %name, error = %err, "cannot re-read a deleted node");
                        false
                    }
                }
            }
        };
        merge_node_streams(
            view_stream(api.clone(), ga, some_node_view, "nodes"),
            view_stream(api, beta, some_node_view, "nodes (beta label)"),
            still_windows,
        )
    }

    fn watch_pods(&self) -> impl Stream<Item = WatchEvent<PodView>> + Send + 'static {
        let api: Api<PodFields> = Api::all(self.watch_client.clone());
        let config = watcher::Config::default().fields("spec.nodeName!=");
        view_stream(api, config, pod_view, "pods")
    }

    fn watch_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
        config_map_stream(self.watch_client.clone(), namespace, name, "config")
    }

    fn watch_foreign_ipam(&self) -> impl Stream<Item = Option<ConfigMapView>> + Send + 'static {
        config_map_stream(
            self.watch_client.clone(),
            FOREIGN_IPAM_NAMESPACE,
            FOREIGN_IPAM_CONFIG_MAP,
            "amazon-vpc-cni",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // 'é' is two bytes: cutting inside it backs off to the boundary.
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn owner_reference_does_not_block_deletion() {
        let o = node_owner("n1", "uid-1");
        assert_eq!((o.kind.as_str(), o.api_version.as_str()), ("Node", "v1"));
        assert_eq!((o.name.as_str(), o.uid.as_str()), ("n1", "uid-1"));
        assert_eq!(o.block_owner_deletion, None);
        assert_eq!(o.controller, None);
    }

    /// The apiserver behind a live socket that never answers, as both followers' Lease GETs
    /// met in the chart test (`leader/lease.rs`): a bounded request fails within its bound, so
    /// its caller retries on a new connection; an unbounded one waits for good.
    #[tokio::test]
    async fn a_bounded_request_to_an_apiserver_that_never_answers_fails() {
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url: http::Uri = format!("http://{}", listener.local_addr().expect("an address"))
            .parse()
            .expect("a URL");
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let get = |config: kube::Config| {
            let api =
                Api::<ConfigMap>::namespaced(Client::try_from(config).expect("a client"), "x");
            async move { api.get_opt("y").await }
        };
        let unbounded =
            tokio::time::timeout(Duration::from_secs(2), get(kube::Config::new(url.clone()))).await;
        assert!(
            unbounded.is_err(),
            "kube sets no bound by default: {unbounded:?}"
        );
        let within = tokio::time::timeout(
            Duration::from_secs(10),
            get(bounded(kube::Config::new(url), Duration::from_millis(500))),
        )
        .await;
        silent.abort();
        assert!(
            matches!(within, Ok(Err(_))),
            "the bounded request fails, well within 10 s: {within:?}"
        );
    }
}
