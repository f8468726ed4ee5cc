//! moto, the EC2 emulator, on a free 127.0.0.1 port.
//!
//! `scripts/moto.sh env` installs it and exports `WINIPAM_MOTO_SERVER_BIN`; without the variable
//! the harness looks in the script's cache directory. The server runs under a small shell
//! watchdog reading the test process's pipe: when the test binary exits (even killed), the pipe
//! closes and the watchdog stops moto, so no server outlives the tests.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{BehaviorVersion, Builder as ConfigBuilder, Credentials, Region};
use aws_sdk_ec2::types::{InstanceType, Tenancy};

/// An AMI id moto ships with.
pub const AMI: &str = "ami-03cf127a";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    port: u16,
    watchdog: Child,
    pipe: Option<ChildStdin>,
    log: PathBuf,
}

impl Moto {
    /// Starts a server of its own (stopped on drop), ready and warmed up.
    pub fn start() -> Moto {
        let bin = server_bin();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("winipam-moto-{port}.log"));
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#""$1" -H 127.0.0.1 -p "$2" >"$3" 2>&1 & child=$!; read _; kill $child; wait $child; rm -f "$3""#)
            .arg("moto-watchdog")
            .arg(&bin)
            .arg(port.to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pipe = watchdog.stdin.take();
        let moto = Moto {
            port,
            watchdog,
            pipe,
            log,
        };
        moto.wait_ready();
        moto.warm_up();
        moto
    }

    /// One server for the whole test binary (tests isolate themselves by creating their own
    /// VPC and subnets; they never reset it).
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(Moto::start)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let (status, body) = self.post("/moto-api/reset", &[], "");
        assert_eq!(status, 200, "moto reset: {body}");
    }

    /// An SDK configuration pointing at this server, with dummy credentials.
    pub fn sdk_config(&self) -> ConfigBuilder {
        ConfigBuilder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .http_client(winipam::ec2::aws::https_client())
            .endpoint_url(self.endpoint())
    }

    /// A plain SDK client on this server, for preparing resources.
    pub fn sdk(&self) -> Client {
        Client::from_conf(self.sdk_config().build())
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen on port {} within 60 s; log: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// moto loads its data on the first EC2 call (~3 s); pay that once, here.
    fn warm_up(&self) {
        let answer =
            self.query("Action=DescribeInstanceTypes&Version=2016-11-15&InstanceType.1=m5.large");
        assert!(matches!(answer, Ok((200, _))), "moto warm-up: {answer:?}");
    }

    /// One EC2 Query call (`form` is the URL-encoded body) with a dummy signature (moto reads
    /// only the region and account from it): (status, body).
    pub fn query(&self, form: &str) -> std::io::Result<(u16, String)> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ec2/aws4_request, SignedHeaders=host, Signature=00"
        );
        self.try_post(
            "/",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form.as_bytes(),
        )
    }

    /// A minimal HTTP/1.0 POST (the harness needs no HTTP client of its own): the whole
    /// response, head and body.
    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        self.try_post(path, headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("POST {path} to moto: {e}"))
    }

    /// [`Self::post`] that reports failures, for callers that must not panic (the EC2 proxy's
    /// threads): (status, body).
    pub fn try_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut req = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        stream.write_all(body)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        Ok((status, body))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog stop moto; then reap the watchdog.
        drop(self.pipe.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WINIPAM_MOTO_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    let bin = cache.join("winipam/moto-venv/bin/moto_server");
    assert!(
        bin.exists(),
        "moto is not installed: run `eval \"$(scripts/moto.sh env)\"` (or scripts/test.sh) first"
    );
    bin
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A VPC and one subnet in it; returns the subnet id.
pub async fn create_subnet(sdk: &Client, vpc_cidr: &str, subnet_cidr: &str, az: &str) -> String {
    let vpc = sdk
        .create_vpc()
        .cidr_block(vpc_cidr)
        .instance_tenancy(Tenancy::Default)
        .send()
        .await
        .expect("CreateVpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let subnet = sdk
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block(subnet_cidr)
        .availability_zone(az)
        .send()
        .await
        .expect("CreateSubnet");
    subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_string()
}

/// `count` instances of `instance_type` in `subnet_id` (one RunInstances); returns their ids.
pub async fn run_instances(
    sdk: &Client,
    subnet_id: &str,
    instance_type: &str,
    count: i32,
) -> Vec<String> {
    let out = sdk
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::from(instance_type))
        .subnet_id(subnet_id)
        .min_count(count)
        .max_count(count)
        .send()
        .await
        .expect("RunInstances");
    out.instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}
