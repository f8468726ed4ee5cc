//! The HTTPS server of the webhooks: `/mutate-pods` and `/validate-pods` on their own address,
//! on every replica. TLS handshakes run off the accept loop (a slow client cannot stall
//! others); axum serves the established connections.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::certs::SelfManaged;
use super::pool_records::{HandBack, PoolRecords};
use super::review::{BadRequest, Review};
use super::runtimeclass::{KubeRuntimeClasses, RuntimeClassLookup};
use super::tls::{CertFiles, CertResolver, certified_key, server_config};
use super::vpcrc::{self, VpcRcSwitch};
use super::{AbortOnDrop, CertSource, WebhookConfig, WebhookError, mutate, validate};

pub const MUTATE_PATH: &str = "/mutate-pods";
pub const VALIDATE_PATH: &str = "/validate-pods";
/// An AdmissionReview carries the pod twice (object, oldObject); pods are at most ~1.5 MiB.
const MAX_BODY: usize = 8 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown, connections still busy are given this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
pub struct Handlers {
    pub runtime_classes: Arc<dyn RuntimeClassLookup>,
    pub allowed_users: Vec<String>,
    /// The VPC Resource Controller's identities may write the annotation while it is on.
    pub vpc_rc: VpcRcSwitch,
    /// Judges that controller's writes while it is on (`None`: every such write allowed).
    pub hand_back: Option<Box<dyn HandBack>>,
}

/// The routes, over any [`RuntimeClassLookup`] (tests pass a fake one).
pub fn router(handlers: Arc<Handlers>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_pods))
        .route(VALIDATE_PATH, post(validate_pods))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(handlers)
}

async fn mutate_pods(State(handlers): State<Arc<Handlers>>, body: Bytes) -> Response {
    respond(
        MUTATE_PATH,
        mutate::review(&body, handlers.runtime_classes.as_ref()).await,
    )
}

async fn validate_pods(State(handlers): State<Arc<Handlers>>, body: Bytes) -> Response {
    respond(
        VALIDATE_PATH,
        validate::review(
            &body,
            &vpcrc::writers(&handlers.allowed_users, handlers.vpc_rc.is_on()),
            handlers
                .hand_back
                .as_deref()
                .filter(|_| handlers.vpc_rc.is_on()),
        ),
    )
}

fn respond(path: &str, result: Result<Review, BadRequest>) -> Response {
    match result {
        Ok(review) => Json(review).into_response(),
        Err(BadRequest(message)) => {
            tracing::warn!(path, %message, "bad admission request");
            (StatusCode::BAD_REQUEST, message).into_response()
        }
    }
}

/// A bound webhook server, not yet serving; [`WebhookServer::run`] serves it.
pub struct WebhookServer {
    listener: TlsListener,
    router: Router,
    /// Certificate reload or maintenance; stops with the server.
    _certificates: AbortOnDrop,
}

impl WebhookServer {
    /// Loads (or, self-managed, settles) the certificate, starts the RuntimeClass cache and the
    /// watches of the VPC Resource Controller's switch and of the NodeAddressPools, and binds the address. Fails when the certificate cannot be had or the address is taken.
    pub async fn bind(cfg: WebhookConfig) -> Result<Self, WebhookError> {
        let (resolver, certificates) = match cfg.certs {
            CertSource::Files { dir, poll_interval } => {
                let files = CertFiles { dir };
                let (pair, key) = files.load()?;
                let resolver = CertResolver::new(key);
                let task = tokio::spawn(files.watch(pair, resolver.clone(), poll_interval));
                (resolver, task)
            }
            CertSource::SelfManaged(settings) => {
                let manager = SelfManaged::new(cfg.requests, settings);
                let stored = manager.ensure_secret(SystemTime::now()).await?;
                let resolver = CertResolver::new(certified_key(&stored.serving)?);
                let task = tokio::spawn(manager.maintain(resolver.clone(), stored));
                (resolver, task)
            }
        };
        let certificates = AbortOnDrop(certificates);
        let handlers = Handlers {
            runtime_classes: Arc::new(KubeRuntimeClasses::start(cfg.client.clone())),
            allowed_users: cfg.allowed_users,
            vpc_rc: VpcRcSwitch::watch(cfg.client.clone()),
            hand_back: Some(Box::new(PoolRecords::watch(cfg.client))),
        };
        let tcp = TcpListener::bind(cfg.addr)
            .await
            .map_err(|source| WebhookError::Io {
                addr: cfg.addr,
                source,
            })?;
        let acceptor = TlsAcceptor::from(Arc::new(server_config(resolver)?));
        let listener = TlsListener::start(tcp, acceptor).map_err(|source| WebhookError::Io {
            addr: cfg.addr,
            source,
        })?;
        Ok(WebhookServer {
            listener,
            router: router(Arc::new(handlers)),
            _certificates: certificates,
        })
    }

    /// The bound address (the port, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr
    }

    /// Serves until `shutdown` completes; then stops accepting (the port closes) and gives
    /// running requests [`DRAIN_TIMEOUT`] to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebhookError> {
        let addr = self.listener.local_addr;
        tracing::info!(%addr, "admission webhooks serving");
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let server = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(signal)
            .into_future();
        let drain_deadline = async move {
            if stopping.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        let result = tokio::select! {
            result = server => result.map_err(|source| WebhookError::Io { addr, source }),
            () = drain_deadline => Ok(()),
        };
        tracing::info!(%addr, "admission webhooks stopped");
        result
    }
}

/// Accepts TCP connections and completes their TLS handshakes in tasks of their own.
struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    _acceptor: AbortOnDrop,
}

impl TlsListener {
    fn start(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, connections) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accepting a webhook connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            // Fails only when the server stopped meanwhile.
                            let _ = tx.send((tls, peer)).await;
                        }
                        // A caller that does not trust the certificate (a stale caBundle) ends
                        // up here: worth seeing.
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "webhook TLS handshake failed")
                        }
                        Err(_) => tracing::warn!(%peer, "webhook TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            connections,
            local_addr,
            _acceptor: AbortOnDrop(task),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept task never ends on its own; if it did, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
