//! The real SDK backend against recorded EC2 answers (tests/fixtures/ec2), for what moto cannot
//! show: prefixes (`Ipv4PrefixCount`, `Ipv4Prefix.N`), ENIs beyond the primary, instance types
//! on Nitro/Xen/bare metal, EC2's error documents, throttling inside the SDK, and calls that get
//! no answer. Each test checks the request sent as well as the result read.

use std::net::Ipv4Addr;
use std::time::Duration;

use aws_smithy_http_client::test_util::{NeverClient, ReplayEvent, StaticReplayClient};
use ipnet::Ipv4Net;
use prometheus::Registry;
use winipam::ec2::aws::{AwsEc2, AwsEc2Options};
use winipam::ec2::{Ec2Client, Ec2ClientConfig, Operation, Urgency};
use winipam::ipam::Ec2ErrorClass;

use crate::support::ec2_replay::{self, sdk_config};

const ENI: &str = "eni-0a1b2c3d4e5f60718";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/ec2/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn answer(status: u16, file: &str) -> ReplayEvent {
    ec2_replay::answer(status, fixture(file))
}

fn client_on(events: Vec<ReplayEvent>) -> (Ec2Client<AwsEc2>, StaticReplayClient, Registry) {
    let replay = StaticReplayClient::new(events);
    let backend = AwsEc2::from_config(
        sdk_config().http_client(replay.clone()),
        &AwsEc2Options::default(),
    );
    let registry = Registry::new();
    let client = Ec2Client::new(backend, Ec2ClientConfig::default(), &registry).unwrap();
    (client, replay, registry)
}

/// The form parameters of every request sent, decoded.
fn sent(replay: &StaticReplayClient) -> Vec<Vec<(String, String)>> {
    replay
        .actual_requests()
        .map(|r| {
            let body = std::str::from_utf8(r.body().bytes().expect("buffered body")).unwrap();
            body.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect()
        })
        .collect()
}

fn param<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Percent-decoding of a form value (enough for addresses and ids).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test]
async fn assign_prefixes_sends_ipv4_prefix_count_and_reads_the_prefix_set() {
    let (client, replay, _) = client_on(vec![answer(200, "assign_prefixes.xml")]);
    let got = client
        .assign_prefixes(ENI, &[], 2, &Urgency::default())
        .await
        .unwrap();
    assert_eq!(got, vec![net("10.0.32.48/28"), net("10.0.32.96/28")]);
    let forms = sent(&replay);
    assert_eq!(forms.len(), 1);
    let f = &forms[0];
    assert_eq!(param(f, "Action"), Some("AssignPrivateIpAddresses"));
    assert_eq!(param(f, "NetworkInterfaceId"), Some(ENI));
    assert_eq!(param(f, "Ipv4PrefixCount"), Some("2"));
    assert_eq!(param(f, "SecondaryPrivateIpAddressCount"), None);
}

#[tokio::test]
async fn assign_prefixes_keeps_only_prefixes_not_known_before() {
    let (client, _, _) = client_on(vec![answer(200, "assign_prefixes.xml")]);
    let got = client
        .assign_prefixes(ENI, &[net("10.0.32.48/28")], 1, &Urgency::default())
        .await
        .unwrap();
    assert_eq!(got, vec![net("10.0.32.96/28")]);
}

#[tokio::test]
async fn unassign_prefixes_sends_ipv4_prefix_n() {
    let (client, replay, _) = client_on(vec![answer(200, "unassign.xml")]);
    client
        .unassign_prefixes(ENI, &[net("10.0.32.48/28"), net("10.0.32.96/28")])
        .await
        .unwrap();
    let f = &sent(&replay)[0];
    assert_eq!(param(f, "Action"), Some("UnassignPrivateIpAddresses"));
    assert_eq!(param(f, "NetworkInterfaceId"), Some(ENI));
    assert_eq!(param(f, "Ipv4Prefix.1"), Some("10.0.32.48/28"));
    assert_eq!(param(f, "Ipv4Prefix.2"), Some("10.0.32.96/28"));
    assert_eq!(param(f, "PrivateIpAddress.1"), None);
}

#[tokio::test]
async fn assign_and_unassign_secondary_ips_send_their_parameters() {
    let (client, replay, _) = client_on(vec![
        answer(200, "assign_private_ips.xml"),
        answer(200, "unassign.xml"),
    ]);
    // .21 was known already (an emulator lists every address): only .22 is new.
    let got = client
        .assign_ips(
            ENI,
            &[ip("10.0.32.10"), ip("10.0.32.21")],
            2,
            &Urgency::default(),
        )
        .await
        .unwrap();
    assert_eq!(got, vec![ip("10.0.32.22")]);
    client.unassign_ips(ENI, &[ip("10.0.32.22")]).await.unwrap();
    let forms = sent(&replay);
    assert_eq!(
        param(&forms[0], "SecondaryPrivateIpAddressCount"),
        Some("2")
    );
    assert_eq!(param(&forms[0], "Ipv4PrefixCount"), None);
    assert_eq!(param(&forms[1], "PrivateIpAddress.1"), Some("10.0.32.22"));
    assert_eq!(param(&forms[1], "Ipv4Prefix.1"), None);
}

#[tokio::test]
async fn describe_reads_the_primary_eni_only_with_its_prefixes() {
    let (client, replay, _) = client_on(vec![answer(200, "describe_instances_prefixes.xml")]);
    let i = client
        .describe_instance("i-0123456789abcdef0")
        .await
        .unwrap();
    assert_eq!(i.instance_type, "c5.4xlarge");
    assert_eq!(i.availability_zone, "us-east-1c");
    let eni = &i.primary_eni;
    // Device index 0 on card 0, although it is listed second.
    assert_eq!(eni.eni_id, ENI);
    assert_eq!(eni.subnet_id, "subnet-0abc1234def567890");
    assert_eq!(eni.primary_ip, ip("10.0.32.10"));
    assert_eq!(eni.secondary_ips, vec![ip("10.0.32.21")]);
    assert_eq!(
        eni.prefixes,
        vec![net("10.0.32.48/28"), net("10.0.32.96/28")]
    );
    let f = &sent(&replay)[0];
    assert_eq!(param(f, "Action"), Some("DescribeInstances"));
    assert_eq!(param(f, "InstanceId.1"), Some("i-0123456789abcdef0"));
}

/// An instance with two network cards (c6in.32xlarge): each card has an ENI at device index 0,
/// and EC2 lists them in no set order. The primary is device 0 on card 0 (SPEC 6.1); here it
/// comes after card 1's device 0 and card 0's device 1, so taking the first device 0, or the
/// first ENI of card 0, picks the wrong one.
#[tokio::test]
async fn describe_picks_device_0_on_network_card_0_among_several_cards() {
    let (client, _, _) = client_on(vec![answer(200, "describe_instances_network_cards.xml")]);
    let i = client
        .describe_instance("i-0fedcba9876543210")
        .await
        .unwrap();
    assert_eq!(i.instance_type, "c6in.32xlarge");
    let eni = &i.primary_eni;
    assert_eq!(eni.eni_id, "eni-0c0c0c0c0c0c0c0c0");
    assert_eq!(eni.primary_ip, ip("10.0.48.10"));
    assert_eq!(eni.secondary_ips, vec![ip("10.0.48.11"), ip("10.0.48.12")]);
    assert!(eni.prefixes.is_empty());
}

#[tokio::test]
async fn instance_types_read_nitro_xen_and_bare_metal() {
    let (client, replay, _) = client_on(vec![answer(200, "describe_instance_types.xml")]);
    let (c5, m4, metal) = tokio::join!(
        client.instance_type_limits("c5.4xlarge"),
        client.instance_type_limits("m4.large"),
        client.instance_type_limits("c5.metal"),
    );
    let (c5, m4, metal) = (
        c5.unwrap().unwrap(),
        m4.unwrap().unwrap(),
        metal.unwrap().unwrap(),
    );
    assert_eq!((c5.ipv4_per_interface, c5.nitro), (30, true));
    assert_eq!((m4.ipv4_per_interface, m4.nitro), (10, false));
    assert_eq!((metal.ipv4_per_interface, metal.nitro), (50, true));
    // One batched request for the three.
    let forms = sent(&replay);
    assert_eq!(forms.len(), 1);
    let mut asked: Vec<&str> = (1..=3)
        .filter_map(|n| param(&forms[0], &format!("InstanceType.{n}")))
        .collect();
    asked.sort();
    assert_eq!(asked, vec!["c5.4xlarge", "c5.metal", "m4.large"]);
}

#[tokio::test]
async fn subnet_feeds_the_free_address_metric() {
    let (client, _, registry) = client_on(vec![answer(200, "describe_subnets.xml")]);
    let s = client.subnet("subnet-0abc1234def567890").await.unwrap();
    assert_eq!(s.cidr, net("10.0.32.0/19"));
    assert_eq!(s.available_ips, 8034);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"winipam_subnet_available_ips{az="us-east-1c",subnet="subnet-0abc1234def567890"} 8034"#),
        "{text}"
    );
}

#[tokio::test]
async fn insufficient_cidr_blocks_is_classified_and_not_retried() {
    let (client, replay, _) = client_on(vec![answer(400, "error_insufficient_cidr_blocks.xml")]);
    let e = client
        .assign_prefixes(ENI, &[], 1, &Urgency::default())
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::NoCidrBlock);
    assert_eq!(e.code.as_deref(), Some("InsufficientCidrBlocks"));
    assert!(e.message.contains("cidr blocks"));
    assert_eq!(sent(&replay).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn throttled_assign_is_not_retried_by_the_sdk_but_by_the_client() {
    let (client, replay, _) = client_on(vec![
        answer(503, "error_request_limit_exceeded.xml"),
        answer(200, "assign_prefixes.xml"),
    ]);
    let op = Operation::AssignPrivateIpAddresses;
    let got = client
        .assign_prefixes(ENI, &[], 2, &Urgency::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(sent(&replay).len(), 2);
    // Counted once, by the interceptor (not again by the client).
    assert_eq!(client.metrics().throttled_count(op), 1);
    assert_eq!(client.metrics().requests(op, "throttled"), 1);
    assert_eq!(client.metrics().requests(op, "success"), 1);
    assert_eq!(client.current_rate(true), 2.5);
}

#[tokio::test(start_paused = true)]
async fn throttled_describe_attempts_inside_the_sdk_are_counted() {
    let (client, replay, _) = client_on(vec![
        answer(503, "error_request_limit_exceeded.xml"),
        answer(503, "error_request_limit_exceeded.xml"),
        answer(200, "describe_subnets.xml"),
    ]);
    let op = Operation::DescribeSubnets;
    let s = client.subnet("subnet-0abc1234def567890").await.unwrap();
    assert_eq!(s.available_ips, 8034);
    // Three attempts on the wire, one request for the client, two throttles counted.
    assert_eq!(sent(&replay).len(), 3);
    assert_eq!(client.metrics().requests_any(op), 1);
    assert_eq!(client.metrics().requests(op, "success"), 1);
    assert_eq!(client.metrics().throttled_count(op), 2);
    assert!(client.current_rate(false) < 20.0);
}

#[tokio::test]
async fn no_answer_to_a_mutating_call_is_an_unknown_outcome() {
    // No recorded answer left: the connection fails.
    let (client, _, _) = client_on(vec![]);
    let e = client
        .assign_ips(ENI, &[], 1, &Urgency::default())
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::UnknownOutcome);
    assert_eq!(e.code, None);
    let e = client
        .unassign_prefixes(ENI, &[net("10.0.32.48/28")])
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::UnknownOutcome);
    // A describe without answer changed nothing: not an unknown outcome.
    let e = client
        .describe_instance("i-0123456789abcdef0")
        .await
        .unwrap_err();
    assert_eq!(e.class.label(), "other");
}

#[tokio::test(start_paused = true)]
async fn timeout_of_a_mutating_call_is_an_unknown_outcome_and_not_retried() {
    let never = NeverClient::new();
    let options = AwsEc2Options {
        mutating_timeout: Duration::from_secs(2),
        ..AwsEc2Options::default()
    };
    let backend = AwsEc2::from_config(sdk_config().http_client(never.clone()), &options);
    let client = Ec2Client::new(backend, Ec2ClientConfig::default(), &Registry::new()).unwrap();
    let start = tokio::time::Instant::now();
    let e = client
        .assign_prefixes(ENI, &[], 1, &Urgency::default())
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::UnknownOutcome);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(never.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn describe_throttled_beyond_the_sdk_retries_is_surfaced_without_more_retries() {
    let (client, replay, _) = client_on(vec![
        answer(503, "error_request_limit_exceeded.xml"),
        answer(503, "error_request_limit_exceeded.xml"),
        answer(503, "error_request_limit_exceeded.xml"),
        answer(200, "describe_subnets.xml"),
    ]);
    let e = client.subnet("subnet-0abc1234def567890").await.unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::Throttled);
    // The SDK's three attempts, and no second layer of retries from the client.
    assert_eq!(sent(&replay).len(), 3);
    assert_eq!(
        client.metrics().throttled_count(Operation::DescribeSubnets),
        3
    );
    assert_eq!(
        client
            .metrics()
            .requests(Operation::DescribeSubnets, "throttled"),
        1
    );
}
