use super::*;
use crate::ipam::Ec2ErrorClass;

/// The three types of the brief, by hand (the embedded table is wired in by the simulator).
fn limits() -> LimitsSource {
    Arc::new(|t: &str| {
        let (ipv4, nitro) = match t {
            "m5.large" => (10, true),
            "c5.4xlarge" => (30, true),
            "m4.large" => (10, false),
            _ => return None,
        };
        Some(InstanceTypeLimits {
            instance_type: t.to_string(),
            ipv4_per_interface: ipv4,
            nitro,
        })
    })
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn instant_sim() -> SimEc2 {
    SimEc2::new(SimEc2Config::instant(7), limits())
}

#[tokio::test(start_paused = true)]
async fn m5_large_eni_refuses_an_eleventh_address() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.0.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let eni = &i.primary_eni.eni_id;
    // 10 addresses per ENI: the primary and 9 secondaries.
    let got = sim.assign_private_ips(eni, 9).await.unwrap();
    assert_eq!(got.len(), 9);
    let e = sim.assign_private_ips(eni, 1).await.unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::EniLimit);
    assert_eq!(e.code.as_deref(), Some("PrivateIpAddressLimitExceeded"));
    // Asking for 10 at once on an empty ENI is refused too, and nothing is assigned.
    let j = sim.add_instance("m5.large", &subnet).unwrap();
    let e = sim
        .assign_private_ips(&j.primary_eni.eni_id, 10)
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::EniLimit);
    assert!(
        sim.instance(&j.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips
            .is_empty()
    );
    // Secondary addresses and prefixes share the slots.
    sim.assign_prefixes(&j.primary_eni.eni_id, 5).await.unwrap();
    sim.assign_private_ips(&j.primary_eni.eni_id, 4)
        .await
        .unwrap();
    let e = sim
        .assign_prefixes(&j.primary_eni.eni_id, 1)
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::EniLimit);
}

#[tokio::test(start_paused = true)]
async fn fragmented_subnet_refuses_prefixes_but_gives_addresses() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.1.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("c5.4xlarge", &subnet).unwrap();
    let eni = &i.primary_eni.eni_id;
    // Something else holds one address in each /28 but the first (which has the reserved ones
    // and our primary) and the last.
    let others: Vec<Ipv4Addr> = (1..15)
        .map(|k| ip(&format!("10.0.1.{}", k * 16 + 9)))
        .collect();
    sim.occupy(&subnet, &others).unwrap();
    let free = sim.subnet(&subnet).unwrap().available_ips;
    assert_eq!(free, 251 - 1 - 14);
    let e = sim.assign_prefixes(eni, 1).await.unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::NoCidrBlock);
    assert_eq!(e.code.as_deref(), Some("InsufficientCidrBlocks"));
    // Free /32s remain and can be had.
    assert_eq!(sim.assign_private_ips(eni, 20).await.unwrap().len(), 20);
}

#[tokio::test(start_paused = true)]
async fn prefixes_are_aligned_28s() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.2.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("c5.4xlarge", &subnet).unwrap();
    let got = sim.assign_prefixes(&i.primary_eni.eni_id, 3).await.unwrap();
    assert_eq!(
        got,
        vec![
            net("10.0.2.16/28"),
            net("10.0.2.32/28"),
            net("10.0.2.48/28")
        ]
    );
    assert_eq!(sim.subnet(&subnet).unwrap().available_ips, 251 - 1 - 48);
    sim.unassign_prefixes(&i.primary_eni.eni_id, &got[1..2])
        .await
        .unwrap();
    let now = sim.instance(&i.instance_id).unwrap();
    assert_eq!(now.primary_eni.prefixes, vec![got[0], got[2]]);
}

#[tokio::test(start_paused = true)]
async fn full_subnet_refuses_secondary_addresses() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.3.0/28"), "us-east-1b").unwrap();
    // 11 usable addresses: one primary, 9 secondaries on the first ENI, one primary more.
    let a = sim.add_instance("m5.large", &subnet).unwrap();
    sim.assign_private_ips(&a.primary_eni.eni_id, 9)
        .await
        .unwrap();
    let b = sim.add_instance("m5.large", &subnet).unwrap();
    assert_eq!(sim.subnet(&subnet).unwrap().available_ips, 0);
    let e = sim
        .assign_private_ips(&b.primary_eni.eni_id, 1)
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::SubnetFull);
    assert_eq!(e.code.as_deref(), Some("InsufficientFreeAddressesInSubnet"));
    // Addresses come back when an instance goes.
    assert!(sim.remove_instance(&a.instance_id));
    assert_eq!(sim.subnet(&subnet).unwrap().available_ips, 10);
    assert_eq!(
        sim.assign_private_ips(&b.primary_eni.eni_id, 9)
            .await
            .unwrap()
            .len(),
        9
    );
}

#[tokio::test(start_paused = true)]
async fn non_nitro_instance_gets_no_prefix() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.4.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m4.large", &subnet).unwrap();
    let e = sim
        .assign_prefixes(&i.primary_eni.eni_id, 1)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("InvalidParameterValue"));
    assert_eq!(
        sim.assign_private_ips(&i.primary_eni.eni_id, 9)
            .await
            .unwrap()
            .len(),
        9
    );
}

#[tokio::test(start_paused = true)]
async fn unassign_checks_like_ec2() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.5.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let eni = &i.primary_eni.eni_id;
    let got = sim.assign_private_ips(eni, 3).await.unwrap();
    // Not on the ENI: refused, and nothing is removed (all or nothing).
    let e = sim
        .unassign_private_ips(eni, &[got[0], ip("10.0.5.200")])
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("InvalidParameterValue"));
    assert_eq!(
        sim.instance(&i.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips
            .len(),
        3
    );
    // The primary cannot be unassigned.
    let e = sim
        .unassign_private_ips(eni, &[i.primary_eni.primary_ip])
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("InvalidParameterValue"));
    sim.unassign_private_ips(eni, &got[..2]).await.unwrap();
    assert_eq!(
        sim.instance(&i.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips,
        vec![got[2]]
    );
    // Unknown prefix.
    let e = sim
        .unassign_prefixes(eni, &[net("10.0.5.64/28")])
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("InvalidParameterValue"));
}

#[tokio::test(start_paused = true)]
async fn unknown_ids_are_not_found() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.6.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let e = sim
        .assign_private_ips("eni-0000000000000dead", 1)
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::NotFound);
    let e = sim
        .describe_instances(&[i.instance_id.clone(), "i-0000000000000dead".into()])
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::NotFound);
    let e = sim
        .describe_subnets(&["subnet-0000000000000dead".into()])
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("InvalidSubnetID.NotFound"));
    let e = sim
        .describe_instance_types(&["m5.large".into(), "zz.huge".into()])
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("InvalidInstanceType"));
    assert!(sim.add_instance("zz.huge", &subnet).is_err());
    assert!(sim.remove_instance(&i.instance_id));
    let e = sim
        .describe_instances(std::slice::from_ref(&i.instance_id))
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::NotFound);
}

#[tokio::test(start_paused = true)]
async fn describes_report_what_ec2_would() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.7.0/24"), "eu-west-1c").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    assert_eq!(i.availability_zone, "eu-west-1c");
    assert_eq!(i.primary_eni.primary_ip, ip("10.0.7.4"));
    assert_eq!(i.primary_eni.subnet_id, subnet);
    assert!(i.instance_id.starts_with("i-") && i.instance_id.len() == 19);
    assert!(i.primary_eni.eni_id.starts_with("eni-"));
    let got = sim
        .assign_private_ips(&i.primary_eni.eni_id, 2)
        .await
        .unwrap();
    let d = sim
        .describe_instances(std::slice::from_ref(&i.instance_id))
        .await
        .unwrap();
    assert_eq!(d[0].primary_eni.secondary_ips, got);
    let s = sim
        .describe_subnets(std::slice::from_ref(&subnet))
        .await
        .unwrap();
    assert_eq!(s[0].cidr, net("10.0.7.0/24"));
    assert_eq!(s[0].available_ips, 251 - 3);
    let t = sim
        .describe_instance_types(&["c5.4xlarge".into()])
        .await
        .unwrap();
    assert_eq!(t[0].ipv4_per_interface, 30);
    assert!(t[0].nitro);
    assert_eq!(sim.calls(Operation::DescribeInstances), 1);
    assert_eq!(sim.calls(Operation::AssignPrivateIpAddresses), 1);
}

#[tokio::test(start_paused = true)]
async fn account_buckets_refuse_beyond_ec2_limits() {
    let mut config = SimEc2Config::instant(1);
    config.account_mutating = SimEc2Config::default().account_mutating;
    config.account_describe = SimEc2Config::default().account_describe;
    let sim = SimEc2::new(config, limits());
    let subnet = sim.add_subnet(net("10.1.0.0/16"), "us-east-1a").unwrap();
    let enis: Vec<String> = (0..60)
        .map(|_| {
            sim.add_instance("m5.large", &subnet)
                .unwrap()
                .primary_eni
                .eni_id
        })
        .collect();
    let results =
        futures::future::join_all(enis.iter().map(|e| sim.assign_private_ips(e, 1))).await;
    let throttled = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|e| e.class == Ec2ErrorClass::Throttled)
        })
        .count();
    assert_eq!(throttled, 10);
    assert_eq!(
        sim.counts(Operation::AssignPrivateIpAddresses).throttled,
        10
    );
    // A throttled call changes nothing: 50 addresses were assigned.
    assert_eq!(sim.subnet(&subnet).unwrap().available_ips, 65_531 - 60 - 50);
    // One second later five more tokens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let results =
        futures::future::join_all(enis.iter().take(8).map(|e| sim.assign_private_ips(e, 1))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    // Describes have their own bucket of 100.
    let ids = vec![subnet.clone()];
    let d = futures::future::join_all((0..120).map(|_| sim.describe_subnets(&ids))).await;
    assert_eq!(d.iter().filter(|r| r.is_ok()).count(), 100);
}

#[tokio::test(start_paused = true)]
async fn describes_lag_behind_changes() {
    let mut config = SimEc2Config::instant(3);
    config.consistency = ConsistencyModel {
        max_lag: Duration::from_secs(2),
        stale_probability: 1.0,
    };
    let sim = SimEc2::new(config, limits());
    let subnet = sim.add_subnet(net("10.0.8.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let ids = vec![i.instance_id.clone()];
    let got = sim
        .assign_private_ips(&i.primary_eni.eni_id, 3)
        .await
        .unwrap();
    // Every describe is stale here, lagging up to 2 s: right after the change none sees it.
    for _ in 0..20 {
        let d = sim.describe_instances(&ids).await.unwrap();
        assert!(d[0].primary_eni.secondary_ips.is_empty());
    }
    // Later than the maximum lag, every describe sees it.
    tokio::time::sleep(Duration::from_millis(2001)).await;
    for _ in 0..20 {
        let d = sim.describe_instances(&ids).await.unwrap();
        assert_eq!(d[0].primary_eni.secondary_ips, got);
    }
    // The true state is current at once.
    sim.manual_unassign(&i.primary_eni.eni_id, &got[..1])
        .unwrap();
    assert_eq!(
        sim.instance(&i.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips,
        got[1..]
    );
    let d = sim.describe_instances(&ids).await.unwrap();
    assert_eq!(d[0].primary_eni.secondary_ips, got);
}

#[tokio::test(start_paused = true)]
async fn injected_faults_behave_as_described() {
    let sim = instant_sim();
    let subnet = sim.add_subnet(net("10.0.9.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let eni = i.primary_eni.eni_id.clone();
    let op = Operation::AssignPrivateIpAddresses;

    // Timeout: not applied, unknown outcome after the timeout.
    sim.inject(op, Fault::Timeout, 1);
    let start = Instant::now();
    let e = sim.assign_private_ips(&eni, 2).await.unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::UnknownOutcome);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(
        sim.instance(&i.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips
            .is_empty()
    );

    // Lost answer: applied, yet the caller sees an unknown outcome.
    sim.inject(op, Fault::LostResponse, 1);
    let e = sim.assign_private_ips(&eni, 2).await.unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::UnknownOutcome);
    assert_eq!(
        sim.instance(&i.instance_id)
            .unwrap()
            .primary_eni
            .secondary_ips
            .len(),
        2
    );

    // An error by code, classified as EC2's would be; only the matching operation gets it.
    sim.inject(op, Fault::error("InsufficientFreeAddressesInSubnet"), 2);
    assert!(
        sim.describe_instances(std::slice::from_ref(&i.instance_id))
            .await
            .is_ok()
    );
    for _ in 0..2 {
        let e = sim.assign_private_ips(&eni, 1).await.unwrap_err();
        assert_eq!(e.class, Ec2ErrorClass::SubnetFull);
    }
    assert_eq!(sim.pending_faults(), 0);
    assert_eq!(sim.assign_private_ips(&eni, 1).await.unwrap().len(), 1);
    assert_eq!(sim.counts(op).faults, 4);
    assert_eq!(sim.calls(op), 5);

    // A describe that times out is not an unknown outcome (nothing could change).
    sim.inject_any(Fault::Timeout, 1);
    let e = sim
        .describe_subnets(std::slice::from_ref(&subnet))
        .await
        .unwrap_err();
    assert_eq!(e.class.label(), "other");
}

#[tokio::test(start_paused = true)]
async fn latency_follows_the_model_on_virtual_time() {
    let mut config = SimEc2Config::default();
    config.latency.sigma = 0.0;
    let sim = SimEc2::new(config, limits());
    let subnet = sim.add_subnet(net("10.0.10.0/24"), "us-east-1a").unwrap();
    let i = sim.add_instance("m5.large", &subnet).unwrap();
    let t = Instant::now();
    let got = sim
        .assign_private_ips(&i.primary_eni.eni_id, 2)
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(200));
    let t = Instant::now();
    sim.unassign_private_ips(&i.primary_eni.eni_id, &got)
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(150));
    let t = Instant::now();
    sim.describe_subnets(std::slice::from_ref(&subnet))
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(120));
}

/// A run under random faults and latency, as a trace of outcomes.
async fn seeded_run(seed: u64) -> Vec<String> {
    let config = SimEc2Config {
        seed,
        random_faults: RandomFaults {
            error_rate: 0.05,
            error_code: "InternalError".into(),
            timeout_rate: 0.05,
            lost_response_rate: 0.05,
            describe_timeout_rate: 0.02,
        },
        ..SimEc2Config::default()
    };
    let sim = SimEc2::new(config, limits());
    let subnet = sim.add_subnet(net("10.2.0.0/20"), "us-east-1a").unwrap();
    let mut trace = Vec::new();
    for _ in 0..30 {
        let i = sim.add_instance("c5.4xlarge", &subnet).unwrap();
        let start = Instant::now();
        let r = sim.assign_private_ips(&i.primary_eni.eni_id, 3).await;
        trace.push(format!(
            "{:?} {:?}",
            r.map_err(|e| e.class),
            start.elapsed()
        ));
    }
    trace
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_run() {
    let a = seeded_run(99).await;
    assert_eq!(a, seeded_run(99).await);
    assert_ne!(a, seeded_run(100).await);
}

#[tokio::test(start_paused = true)]
async fn holds_5000_instances_and_150k_addresses() {
    let sim = instant_sim();
    let subnets: Vec<String> = (0..3)
        .map(|k| {
            sim.add_subnet(net(&format!("10.{}.0.0/16", 10 + k)), "us-east-1a")
                .unwrap()
        })
        .collect();
    let mut enis = Vec::new();
    for n in 0..5000 {
        let i = sim.add_instance("c5.4xlarge", &subnets[n % 3]).unwrap();
        enis.push(i.primary_eni.eni_id);
    }
    for eni in &enis {
        assert_eq!(sim.assign_private_ips(eni, 29).await.unwrap().len(), 29);
    }
    let free: u64 = subnets
        .iter()
        .map(|s| sim.subnet(s).unwrap().available_ips)
        .sum();
    assert_eq!(free, 3 * 65_531 - 5000 * 30);
    assert_eq!(sim.instance_count(), 5000);
}
