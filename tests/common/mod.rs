//! Helpers both test binaries use (`tests/it` and `tests/cluster`), included in each with
//! `#[path]`: waiting for a condition, and reading an ENI's addresses from the EC2 they run.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Ok`, at most `timeout`; panics with the last reason.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_then(what, timeout, check, || {}).await
}

/// [`eventually`], calling `on_timeout` (say, to print what the test sees) before it panics.
pub async fn eventually_then<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    on_timeout: impl FnOnce(),
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => {
                // Said first too: a log cut short for length keeps its head.
                eprintln!("--- {what}: not within {timeout:?}: {reason}");
                on_timeout();
                panic!("{what}: not within {timeout:?}: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Secondary addresses of an ENI, as the EC2 behind `ec2` has them now, sorted.
pub async fn eni_ips(ec2: &aws_sdk_ec2::Client, eni_id: &str) -> Vec<Ipv4Addr> {
    let out = ec2
        .describe_network_interfaces()
        .network_interface_ids(eni_id)
        .send()
        .await
        .expect("DescribeNetworkInterfaces");
    let mut ips: Vec<Ipv4Addr> = out
        .network_interfaces()
        .iter()
        .flat_map(|n| n.private_ip_addresses())
        .filter(|a| a.primary() != Some(true))
        .filter_map(|a| a.private_ip_address()?.parse().ok())
        .collect();
    ips.sort();
    ips
}
