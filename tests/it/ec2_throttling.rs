//! The client's rate limits and its reaction to `RequestLimitExceeded`, on the simulated EC2 and
//! tokio's paused clock: counts against virtual time, never wall time.

use std::time::Duration;

use ipnet::Ipv4Net;
use prometheus::Registry;
use tokio::time::Instant;
use winipam::ec2::{Ec2Client, Ec2ClientConfig, Operation, Urgency};
use winipam::ipam::Ec2ErrorClass;
use winipam::sim::ec2::{Fault, SimEc2, SimEc2Config};

use crate::ec2_contract::test_limits;

fn sim(config: SimEc2Config) -> (SimEc2, String) {
    let sim = SimEc2::new(config, test_limits());
    let subnet: Ipv4Net = "10.8.0.0/16".parse().unwrap();
    let subnet_id = sim.add_subnet(subnet, "us-east-1a").unwrap();
    (sim, subnet_id)
}

/// Seconds from `start` at which each future finished, sorted.
async fn finish_times<F: std::future::Future<Output = bool>>(
    start: Instant,
    futs: Vec<F>,
) -> Vec<f64> {
    let results = futures::future::join_all(futs.into_iter().map(|f| async move {
        assert!(f.await, "a request failed");
        start.elapsed().as_secs_f64()
    }))
    .await;
    let mut times = results;
    times.sort_by(f64::total_cmp);
    times
}

fn assert_within_rate(times: &[f64], burst: f64, rate: f64) {
    for t in [0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0] {
        let through = times.iter().filter(|&&x| x <= t).count() as f64;
        assert!(
            through <= burst + rate * t + 1e-9,
            "{through} through after {t} s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_200_assigns_is_held_to_5_per_second() {
    // Realistic EC2 account buckets (50, 5/s) but no latency: the client alone paces the calls.
    let mut config = SimEc2Config::instant(1);
    config.account_mutating = SimEc2Config::default().account_mutating;
    let (sim, subnet) = sim(config);
    let enis: Vec<String> = (0..200)
        .map(|_| {
            sim.add_instance("m5.large", &subnet)
                .unwrap()
                .primary_eni
                .eni_id
        })
        .collect();
    let client = Ec2Client::new(sim.clone(), Ec2ClientConfig::default(), &Registry::new()).unwrap();
    let start = Instant::now();
    let futs: Vec<_> = enis
        .iter()
        .map(|eni| {
            let c = client.clone();
            async move { c.assign_ips(eni, &[], 1, &Urgency::default()).await.is_ok() }
        })
        .collect();
    let times = finish_times(start, futs).await;
    assert_within_rate(&times, 40.0, 5.0);
    // All done at (200 - 40) / 5 = 32 s, and EC2's own bucket (50, 5/s) never refused one.
    assert!((31.9..=32.1).contains(&times[199]), "{}", times[199]);
    assert_eq!(sim.counts(Operation::AssignPrivateIpAddresses).throttled, 0);
    assert_eq!(sim.calls(Operation::AssignPrivateIpAddresses), 200);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_200_describes_is_held_to_20_per_second() {
    let mut config = SimEc2Config::instant(2);
    config.account_describe = SimEc2Config::default().account_describe;
    let (sim, subnet) = sim(config);
    let id = sim.add_instance("m5.large", &subnet).unwrap().instance_id;
    let client = Ec2Client::new(sim.clone(), Ec2ClientConfig::default(), &Registry::new()).unwrap();
    let ids = vec![id];
    let start = Instant::now();
    // The resync form is not batched: 200 requests.
    let futs: Vec<_> = (0..200)
        .map(|_| {
            let (c, ids) = (client.clone(), ids.clone());
            async move { c.describe_instances(&ids).await.is_ok() }
        })
        .collect();
    let times = finish_times(start, futs).await;
    assert_within_rate(&times, 80.0, 20.0);
    assert!((5.9..=6.1).contains(&times[199]), "{}", times[199]);
    assert_eq!(sim.counts(Operation::DescribeInstances).throttled, 0);
}

#[tokio::test(start_paused = true)]
async fn throttled_assign_is_retried_counted_and_lowers_the_rate() {
    let (sim, subnet) = sim(SimEc2Config::instant(3));
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let client = Ec2Client::new(sim.clone(), Ec2ClientConfig::default(), &Registry::new()).unwrap();
    let op = Operation::AssignPrivateIpAddresses;
    sim.inject(op, Fault::error("RequestLimitExceeded"), 2);
    let start = Instant::now();
    let got = client
        .assign_ips(&i.primary_eni.eni_id, &[], 2, &Urgency::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    // Backed off between attempts, and waited for tokens at the halved rate (0.4 s each).
    assert!(start.elapsed() > Duration::ZERO && start.elapsed() < Duration::from_secs(1));
    assert_eq!(sim.calls(op), 3);
    assert_eq!(client.metrics().throttled_count(op), 2);
    assert_eq!(client.metrics().requests(op, "throttled"), 2);
    assert_eq!(client.metrics().requests(op, "success"), 1);
    // Both throttles came within a second: one signal, rate halved once.
    assert_eq!(client.current_rate(true), 2.5);
    assert_eq!(client.current_rate(false), 20.0);
    // Restored after the hold period.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(client.current_rate(true), 5.0);
}

#[tokio::test(start_paused = true)]
async fn throttled_is_surfaced_after_the_retries() {
    let (sim, subnet) = sim(SimEc2Config::instant(4));
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let client = Ec2Client::new(sim.clone(), Ec2ClientConfig::default(), &Registry::new()).unwrap();
    let op = Operation::UnassignPrivateIpAddresses;
    let ips = sim.manual_assign(&i.primary_eni.eni_id, 1).unwrap();
    sim.inject(op, Fault::error("RequestLimitExceeded"), 3);
    let e = client
        .unassign_ips(&i.primary_eni.eni_id, &ips)
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::Throttled);
    assert_eq!(sim.calls(op), 3);
    assert_eq!(client.metrics().throttled_count(op), 3);
    assert!(client.current_rate(true) < 5.0);
    // The addresses are still there: nothing was applied.
    assert_eq!(
        sim.instance(&i.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips,
        ips
    );
}

#[tokio::test(start_paused = true)]
async fn account_throttling_slows_the_client_down() {
    // EC2's account bucket is smaller than the client thinks (another tool shares the account):
    // the client is throttled, lowers its rate, and every request still goes through in the end.
    let mut config = SimEc2Config::instant(5);
    config.account_mutating.capacity = 10;
    config.account_mutating.refill_per_sec = 2.0;
    let (sim, subnet) = sim(config);
    let enis: Vec<String> = (0..60)
        .map(|_| {
            sim.add_instance("m5.large", &subnet)
                .unwrap()
                .primary_eni
                .eni_id
        })
        .collect();
    let client_config = Ec2ClientConfig {
        throttle_attempts: 10,
        ..Ec2ClientConfig::default()
    };
    let client = Ec2Client::new(sim.clone(), client_config, &Registry::new()).unwrap();
    let start = Instant::now();
    let rate_after_first_wave = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.current_rate(true)
    };
    let ordinary = Urgency::default();
    let (results, early_rate) = tokio::join!(
        futures::future::join_all(
            enis.iter()
                .map(|eni| client.assign_ips(eni, &[], 1, &ordinary))
        ),
        rate_after_first_wave,
    );
    // Every request went through in the end, and EC2's refill (10 + 2/s) bounds how fast.
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(
        start.elapsed() >= Duration::from_secs(25),
        "{:?}",
        start.elapsed()
    );
    // The first wave was refused beyond EC2's 10 and the client lowered its rate at once.
    assert!(early_rate < 5.0, "{early_rate}");
    let throttled = client
        .metrics()
        .throttled_count(Operation::AssignPrivateIpAddresses);
    assert_eq!(
        throttled,
        sim.counts(Operation::AssignPrivateIpAddresses).throttled
    );
    // A client that kept its burst of 40 would have had 30 refused in the first wave alone; this
    // one drops its saved burst at the first refusal.
    assert!((1..30).contains(&throttled), "{throttled} throttles");
}
