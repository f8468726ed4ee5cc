//! An HTTP proxy in front of moto that answers the first requests of one EC2 action with EC2
//! errors moto never returns (`RequestLimitExceeded`, ...), so the series counting them exist in
//! `/metrics`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An EC2 error answer: HTTP status and error code.
pub type Fault = (u16, &'static str);

struct Shared {
    upstream: SocketAddr,
    action: String,
    /// The answers to the first requests of `action`, in order.
    faults: Vec<Fault>,
    /// Requests of `action` seen so far.
    seen: AtomicU32,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards to `upstream` (moto's `host:port`), except that the first requests whose form
    /// body names `Action=<action>` get `faults`, one each.
    pub async fn start(upstream: SocketAddr, action: &str, faults: Vec<Fault>) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream,
            action: format!("Action={action}&"),
            faults,
            seen: AtomicU32::new(0),
        });
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the proxy");
        });
        FaultProxy { addr, shared, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests of the action seen so far (refused or forwarded).
    pub fn seen(&self) -> u32 {
        self.shared.seen.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 16 << 20)
        .await
        .expect("read the request body");
    if String::from_utf8_lossy(&body).contains(&shared.action) {
        let index = shared.seen.fetch_add(1, Ordering::SeqCst) as usize;
        if let Some(&(status, code)) = shared.faults.get(index) {
            // EC2's error body (the Query protocol's), as in tests/fixtures/ec2/error_*.xml.
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                 <Message>injected by the test proxy</Message></Error></Errors>\
                 <RequestID>00000000-0000-4000-8000-00000000000{index}</RequestID></Response>"
            );
            return Response::builder()
                .status(StatusCode::from_u16(status).expect("a status"))
                .header("content-type", "text/xml;charset=UTF-8")
                .body(Body::from(body))
                .expect("a response");
        }
    }
    // HTTP/1.0 to moto: one request per connection, the response ends when it closes.
    let mut head = format!(
        "{} {} HTTP/1.0\r\n",
        parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "content-length"
        ) {
            continue;
        }
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut stream = TcpStream::connect(shared.upstream)
        .await
        .expect("connect to moto");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write to moto");
    stream.write_all(&body).await.expect("write to moto");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read from moto");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head from moto");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line from moto");
    let mut response = Response::builder().status(status);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value.trim()),
        ) {
            response = response.header(n, v);
        }
    }
    response
        .body(Body::from(raw[split + 4..].to_vec()))
        .expect("a response")
}
