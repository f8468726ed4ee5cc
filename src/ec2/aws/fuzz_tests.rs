//! Fuzzing of EC2 answers through the real backend, fed as the recorded-answer tests feed them
//! (tests/fixtures/ec2 through a replaying HTTP client): the SDK parses the body, our code turns
//! the output into domain types or classifies the error. Recorded bodies with damage and any
//! status; DescribeInstances built from random address lists (valid or not) against an oracle;
//! error documents with any code.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proptest::prelude::*;

use super::{AwsEc2, AwsEc2Options};
use crate::ec2::classify::{CLASSIFIED_CODES, classify};
use crate::ec2::{Ec2Backend, Ec2Error};
use crate::fuzz_support::damage;
use crate::ipam::{Ec2ErrorClass, InstanceInfo};
use replay::answering;

#[path = "../../../tests/it/support/ec2_replay.rs"]
mod replay;

const FIXTURES: [&str; 8] = [
    include_str!("../../../tests/fixtures/ec2/describe_instances_prefixes.xml"),
    include_str!("../../../tests/fixtures/ec2/describe_subnets.xml"),
    include_str!("../../../tests/fixtures/ec2/describe_instance_types.xml"),
    include_str!("../../../tests/fixtures/ec2/assign_private_ips.xml"),
    include_str!("../../../tests/fixtures/ec2/assign_prefixes.xml"),
    include_str!("../../../tests/fixtures/ec2/unassign.xml"),
    include_str!("../../../tests/fixtures/ec2/error_request_limit_exceeded.xml"),
    include_str!("../../../tests/fixtures/ec2/error_insufficient_cidr_blocks.xml"),
];
const STATUSES: [u16; 6] = [200, 400, 403, 500, 503, 302];

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

/// A backend whose only HTTP answer is `status` with `body`.
fn backend(status: u16, body: &[u8]) -> AwsEc2 {
    // One attempt: a retry would find no second answer.
    let one_attempt = AwsEc2Options {
        describe_max_attempts: 1,
        ..AwsEc2Options::default()
    };
    AwsEc2::from_config(answering(status, body.to_vec()), &one_attempt)
}

/// What one operation read, reduced to what can be compared.
#[derive(Debug)]
enum Read {
    Instances(Vec<InstanceInfo>),
    Other,
}

/// Runs operation `op % 7` against `status` + `body`.
fn call(op: u8, status: u16, body: &[u8]) -> Result<Read, Ec2Error> {
    let ec2 = backend(status, body);
    let ids = ["i-0123456789abcdef0".to_owned()];
    let ip = [Ipv4Addr::new(10, 0, 32, 21)];
    let prefix: [Ipv4Net; 1] = ["10.0.32.48/28".parse().unwrap()];
    RUNTIME.with(|rt| {
        rt.block_on(async {
            match op % 7 {
                0 => ec2.describe_instances(&ids).await.map(Read::Instances),
                1 => ec2.describe_subnets(&ids).await.map(|_| Read::Other),
                2 => ec2.describe_instance_types(&ids).await.map(|_| Read::Other),
                3 => ec2
                    .assign_private_ips("eni-1", 2)
                    .await
                    .map(|_| Read::Other),
                4 => ec2.assign_prefixes("eni-1", 1).await.map(|_| Read::Other),
                5 => ec2
                    .unassign_private_ips("eni-1", &ip)
                    .await
                    .map(|_| Read::Other),
                _ => ec2
                    .unassign_prefixes("eni-1", &prefix)
                    .await
                    .map(|_| Read::Other),
            }
        })
    })
}

/// An error EC2 answered with a code is classified by that code, whatever else it says.
fn check_error(err: &Ec2Error) -> Result<(), TestCaseError> {
    if let Some(code) = &err.code {
        prop_assert_eq!(&err.class, &classify(code, &err.message));
    }
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One `privateIpAddressesSet` item: the address text and its `primary` flag (absent, true, false).
fn address_item() -> impl Strategy<Value = (String, Option<bool>)> {
    let text = prop_oneof![
        4 => any::<u32>().prop_map(|n| Ipv4Addr::from(n).to_string()),
        1 => (0u32..4).prop_map(|n| format!("10.0.32.{n}")),
        1 => Just("10.0.32.300".to_owned()),
        1 => Just("::1".to_owned()),
        1 => Just(String::new()),
        1 => "\\PC{0,15}",
    ];
    (text, prop::option::of(any::<bool>()))
}

fn prefix_item() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (any::<u32>(), 0u8..=32).prop_map(|(n, l)| format!("{}/{l}", Ipv4Addr::from(n))),
        1 => Just("10.0.32.48/33".to_owned()),
        1 => Just("10.0.32.48".to_owned()),
        1 => "\\PC{0,15}",
    ]
}

/// A DescribeInstances answer: one instance with a primary ENI built from `items`/`prefixes`
/// (its own `privateIpAddress` is `eni_primary`), and a second ENI that must be ignored.
fn describe_instances_xml(
    items: &[(String, Option<bool>)],
    prefixes: &[String],
    eni_primary: &str,
) -> String {
    let addresses: String = items
        .iter()
        .map(|(ip, primary)| {
            let flag = primary
                .map(|p| format!("<primary>{p}</primary>"))
                .unwrap_or_default();
            format!(
                "<item><privateIpAddress>{}</privateIpAddress>{flag}</item>",
                xml_escape(ip)
            )
        })
        .collect();
    let prefixes: String = prefixes
        .iter()
        .map(|p| format!("<item><ipv4Prefix>{}</ipv4Prefix></item>", xml_escape(p)))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><reservationSet><item><instancesSet><item>
<instanceId>i-0123456789abcdef0</instanceId><instanceType>c5.4xlarge</instanceType>
<placement><availabilityZone>us-east-1c</availabilityZone></placement>
<networkInterfaceSet>
<item><networkInterfaceId>eni-second</networkInterfaceId><subnetId>subnet-2</subnetId>
<attachment><deviceIndex>1</deviceIndex></attachment>
<privateIpAddressesSet><item><privateIpAddress>10.9.9.9</privateIpAddress><primary>true</primary></item></privateIpAddressesSet></item>
<item><networkInterfaceId>eni-primary</networkInterfaceId><subnetId>subnet-1</subnetId>
<privateIpAddress>{}</privateIpAddress>
<attachment><deviceIndex>0</deviceIndex><networkCardIndex>0</networkCardIndex></attachment>
<privateIpAddressesSet>{addresses}</privateIpAddressesSet><ipv4PrefixSet>{prefixes}</ipv4PrefixSet></item>
</networkInterfaceSet></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#,
        xml_escape(eni_primary)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_500, ..ProptestConfig::default() })]

    /// Recorded answers, damaged, with any status, fed to any operation: an error or a
    /// result, never a panic; coded errors are classified by their code.
    #[test]
    fn damaged_recorded_answers(
        fixture in 0..FIXTURES.len(), op in any::<u8>(), status in prop::sample::select(STATUSES.to_vec()),
        damages in prop::collection::vec((any::<u8>(), 0.0..1.0f64, any::<u8>()), 0..4),
    ) {
        let mut body = FIXTURES[fixture].as_bytes().to_vec();
        for (how, at, byte) in damages {
            body = damage(&body, how, at, byte);
        }
        if let Err(err) = call(op, status, &body) {
            check_error(&err)?;
        }
    }

    /// The primary ENI is read as EC2 describes it: the flagged (else the interface's own)
    /// primary address, every other readable address as secondary, every readable prefix;
    /// unreadable entries are skipped, the other ENI is ignored.
    #[test]
    fn describe_instances_addresses(
        items in prop::collection::vec(address_item(), 0..8),
        prefixes in prop::collection::vec(prefix_item(), 0..4),
        eni_primary in prop_oneof![Just("10.0.32.1".to_owned()), Just("bad".to_owned())],
    ) {
        let body = describe_instances_xml(&items, &prefixes, &eni_primary);
        let result = call(0, 200, body.as_bytes());
        let Ok(Read::Instances(instances)) = result else {
            return Err(TestCaseError::fail(format!("{result:?}")));
        };
        let readable: Vec<(Ipv4Addr, bool)> = items
            .iter()
            .filter_map(|(t, p)| Some((t.parse().ok()?, *p == Some(true))))
            .collect();
        let primary = readable
            .iter()
            .rev()
            .find(|(_, p)| *p)
            .map(|(ip, _)| *ip)
            .or_else(|| eni_primary.parse().ok());
        let Some(primary) = primary else {
            // No primary address to name the ENI by: the instance is skipped.
            prop_assert!(instances.is_empty());
            return Ok(());
        };
        prop_assert_eq!(instances.len(), 1);
        let eni = &instances[0].primary_eni;
        prop_assert_eq!(&eni.eni_id, "eni-primary");
        prop_assert_eq!(eni.primary_ip, primary);
        let secondary: Vec<Ipv4Addr> = readable
            .iter()
            .filter(|(ip, p)| !*p && *ip != primary)
            .map(|(ip, _)| *ip)
            .collect();
        prop_assert_eq!(&eni.secondary_ips, &secondary);
        let nets: Vec<Ipv4Net> = prefixes.iter().filter_map(|p| p.parse().ok()).collect();
        prop_assert_eq!(&eni.prefixes, &nets);
    }

    /// EC2 error documents with any code: the code and class come through on every operation.
    #[test]
    fn error_documents(
        code in prop_oneof![
            prop::sample::select(CLASSIFIED_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>()).prop_map(str::to_owned),
            "[A-Za-z][A-Za-z0-9.]{0,40}",
        ],
        message in "\\PC{0,40}",
        op in any::<u8>(),
        status in prop::sample::select(vec![400u16, 403, 500, 503]),
    ) {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{}</Message></Error></Errors><RequestID>r</RequestID></Response>",
            xml_escape(&message)
        );
        let err = call(op, status, body.as_bytes()).expect_err("an error document");
        prop_assert_eq!(err.code.as_deref(), Some(code.as_str()));
        prop_assert_eq!(&err.class, &classify(&code, &err.message));
        if let Ec2ErrorClass::Other { code: c, .. } = &err.class {
            prop_assert_eq!(c, &code);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// A code is known only when it is exactly one of the classified codes.
    #[test]
    fn classify_is_exact(code in prop_oneof![
        prop::sample::select(CLASSIFIED_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>()).prop_map(str::to_owned),
        prop::sample::select(CLASSIFIED_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>())
            .prop_flat_map(|c| (Just(c), 0..c.len(), any::<char>()))
            .prop_map(|(c, i, ch)| { let mut s = c.to_owned(); if s.is_char_boundary(i) { s.insert(i, ch); } s }),
        any::<String>(),
    ], message in any::<String>()) {
        let known = CLASSIFIED_CODES.iter().find(|(c, _)| *c == code).map(|(_, class)| class.clone());
        match known {
            Some(class) => prop_assert_eq!(classify(&code, &message), class),
            None => prop_assert_eq!(
                classify(&code, &message),
                Ec2ErrorClass::Other { code: code.clone(), message: message.clone() }
            ),
        }
    }
}
