//! One contract for both EC2 backends, through the same `Ec2Client`: the real SDK backend over
//! HTTP against moto on 127.0.0.1, and the simulated EC2. Each case is a generic async fn; the
//! macro at the bottom runs every case against both.

use std::net::Ipv4Addr;
use std::sync::Arc;

use prometheus::Registry;
use winipam::ec2::aws::{AwsEc2, AwsEc2Options};
use winipam::ec2::{Ec2Backend, Ec2Client, Ec2ClientConfig, Operation, Urgency};
use winipam::ipam::{Ec2ErrorClass, InstanceTypeLimits};
use winipam::sim::ec2::{ConsistencyModel, LimitsSource, SimEc2, SimEc2Config};

use crate::support::moto::{self, Moto};

/// A client over a backend, with one m5.large instance in one subnet.
pub struct World<B: Ec2Backend> {
    pub client: Ec2Client<B>,
    pub subnet_id: String,
    pub subnet_cidr: ipnet::Ipv4Net,
    pub az: String,
    pub instance_id: String,
}

pub async fn moto_world() -> World<AwsEc2> {
    let moto = Moto::shared();
    let sdk = moto.sdk();
    let az = "us-east-1a".to_string();
    let subnet_id = moto::create_subnet(&sdk, "10.0.0.0/16", "10.0.1.0/24", &az).await;
    let instance_id = moto::run_instances(&sdk, &subnet_id, "m5.large", 1)
        .await
        .remove(0);
    let backend = AwsEc2::from_config(moto.sdk_config(), &AwsEc2Options::default());
    World {
        client: Ec2Client::new(backend, Ec2ClientConfig::default(), &Registry::new()).unwrap(),
        subnet_id,
        subnet_cidr: "10.0.1.0/24".parse().unwrap(),
        az,
        instance_id,
    }
}

/// The instance types of the tests, by hand (m5.large: 10 per ENI, Nitro; c5.4xlarge: 30,
/// Nitro; m4.large: 10, Xen).
pub fn test_limits() -> LimitsSource {
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

pub async fn sim_world() -> World<SimEc2> {
    // The realistic model (latency, account throttling) on the paused clock; describes strongly
    // consistent so the contract's read-after-write holds as it does on moto.
    let config = SimEc2Config {
        consistency: ConsistencyModel::strong(),
        ..SimEc2Config::default()
    };
    let sim = SimEc2::new(config, test_limits());
    let az = "us-east-1a".to_string();
    let subnet_cidr = "10.0.1.0/24".parse().unwrap();
    let subnet_id = sim.add_subnet(subnet_cidr, &az).unwrap();
    let instance_id = sim
        .add_instance("m5.large", &subnet_id)
        .unwrap()
        .instance_id;
    World {
        client: Ec2Client::new(sim, Ec2ClientConfig::default(), &Registry::new()).unwrap(),
        subnet_id,
        subnet_cidr,
        az,
        instance_id,
    }
}

async fn describes_the_instance_and_its_primary_eni<B: Ec2Backend>(w: &World<B>) {
    let i = w.client.describe_instance(&w.instance_id).await.unwrap();
    assert_eq!(i.instance_id, w.instance_id);
    assert_eq!(i.instance_type, "m5.large");
    assert_eq!(i.availability_zone, w.az);
    let eni = &i.primary_eni;
    assert!(eni.eni_id.starts_with("eni-"), "{}", eni.eni_id);
    assert_eq!(eni.subnet_id, w.subnet_id);
    assert!(
        w.subnet_cidr.contains(&eni.primary_ip),
        "{}",
        eni.primary_ip
    );
    // AWS reserves the first four addresses of a subnet.
    assert!(u32::from(eni.primary_ip) >= u32::from(w.subnet_cidr.network()) + 4);
    assert!(eni.secondary_ips.is_empty());
    assert!(eni.prefixes.is_empty());
    // The resync form returns the same.
    let all = w
        .client
        .describe_instances(std::slice::from_ref(&w.instance_id))
        .await
        .unwrap();
    assert_eq!(all, vec![i]);
}

async fn describes_the_subnet<B: Ec2Backend>(w: &World<B>) {
    let s = w.client.subnet(&w.subnet_id).await.unwrap();
    assert_eq!(s.subnet_id, w.subnet_id);
    assert_eq!(s.cidr, w.subnet_cidr);
    assert_eq!(s.availability_zone, w.az);
    // A /24 has 251 usable addresses; the instance holds one.
    assert_eq!(s.available_ips, 250);
    // Cached: a second lookup costs no request.
    w.client.subnet(&w.subnet_id).await.unwrap();
    assert_eq!(
        w.client.metrics().requests_any(Operation::DescribeSubnets),
        1
    );
    let refreshed = w.client.refresh_subnets().await.unwrap();
    assert_eq!(refreshed, vec![s]);
    assert_eq!(
        w.client.metrics().requests_any(Operation::DescribeSubnets),
        2
    );
}

async fn describes_instance_types<B: Ec2Backend>(w: &World<B>) {
    let (m5, c5, unknown) = tokio::join!(
        w.client.instance_type_limits("m5.large"),
        w.client.instance_type_limits("c5.4xlarge"),
        w.client.instance_type_limits("zz.huge"),
    );
    let m5 = m5.unwrap().unwrap();
    assert_eq!(m5.ipv4_per_interface, 10);
    assert!(m5.nitro);
    assert_eq!(c5.unwrap().unwrap().ipv4_per_interface, 30);
    // EC2 does not know it: the caller falls back to the embedded table.
    assert_eq!(unknown.unwrap(), None);
    // Cached, unknown types included.
    let before = w
        .client
        .metrics()
        .requests_any(Operation::DescribeInstanceTypes);
    assert!(
        w.client
            .instance_type_limits("zz.huge")
            .await
            .unwrap()
            .is_none()
    );
    w.client.instance_type_limits("m5.large").await.unwrap();
    assert_eq!(
        w.client
            .metrics()
            .requests_any(Operation::DescribeInstanceTypes),
        before
    );
}

async fn assigns_and_unassigns_secondary_ips<B: Ec2Backend>(w: &World<B>) {
    let i = w.client.describe_instance(&w.instance_id).await.unwrap();
    let eni = i.primary_eni.eni_id.clone();
    let mut known = vec![i.primary_eni.primary_ip];
    let first = w
        .client
        .assign_ips(&eni, &known, 3, &Urgency::default())
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(!first.contains(&i.primary_eni.primary_ip));
    assert!(first.iter().all(|ip| w.subnet_cidr.contains(ip)));
    known.extend(&first);
    // A second Assign returns only the new addresses, even where the emulator lists them all.
    let second = w
        .client
        .assign_ips(&eni, &known, 2, &Urgency::default())
        .await
        .unwrap();
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|ip| !known.contains(ip)));
    let mut on_eni = sorted(
        w.client
            .describe_instance(&w.instance_id)
            .await
            .unwrap()
            .primary_eni
            .secondary_ips,
    );
    let mut expected: Vec<Ipv4Addr> = first.iter().chain(&second).copied().collect();
    expected.sort();
    assert_eq!(on_eni, expected);

    w.client.unassign_ips(&eni, &first).await.unwrap();
    on_eni = sorted(
        w.client
            .describe_instance(&w.instance_id)
            .await
            .unwrap()
            .primary_eni
            .secondary_ips,
    );
    assert_eq!(on_eni, sorted(second.clone()));
    w.client.unassign_ips(&eni, &second).await.unwrap();
    let after = w.client.describe_instance(&w.instance_id).await.unwrap();
    assert!(after.primary_eni.secondary_ips.is_empty());
    assert_eq!(after.primary_eni.primary_ip, i.primary_eni.primary_ip);
    let m = w.client.metrics();
    assert_eq!(
        m.requests(Operation::AssignPrivateIpAddresses, "success"),
        2
    );
    assert_eq!(
        m.requests(Operation::UnassignPrivateIpAddresses, "success"),
        2
    );
}

async fn unknown_eni_is_not_found<B: Ec2Backend>(w: &World<B>) {
    let e = w
        .client
        .assign_ips("eni-0123456789abcdef0", &[], 1, &Urgency::default())
        .await
        .unwrap_err();
    assert_eq!(e.class, Ec2ErrorClass::NotFound);
    assert_eq!(
        e.code.as_deref(),
        Some("InvalidNetworkInterfaceID.NotFound")
    );
    assert_eq!(
        w.client
            .metrics()
            .requests(Operation::AssignPrivateIpAddresses, "not_found"),
        1
    );
}

async fn unknown_instance_is_not_found<B: Ec2Backend>(w: &World<B>) {
    let gone = "i-0123456789abcdef0".to_string();
    let (known, unknown) = tokio::join!(
        w.client.describe_instance(&w.instance_id),
        w.client.describe_instance(&gone),
    );
    assert_eq!(known.unwrap().instance_id, w.instance_id);
    assert_eq!(unknown.unwrap_err().class, Ec2ErrorClass::NotFound);
    // Resync leaves the unknown one out instead of failing.
    let found = w
        .client
        .describe_instances(&[gone.clone(), w.instance_id.clone()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].instance_id, w.instance_id);
}

fn sorted(mut v: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    v.sort();
    v
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod on_moto {
            $(
                #[tokio::test]
                async fn $case() {
                    let w = super::moto_world().await;
                    super::$case(&w).await;
                }
            )*
        }
        mod on_sim {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    let w = super::sim_world().await;
                    super::$case(&w).await;
                }
            )*
        }
    };
}

contract!(
    describes_the_instance_and_its_primary_eni,
    describes_the_subnet,
    describes_instance_types,
    assigns_and_unassigns_secondary_ips,
    unknown_eni_is_not_found,
    unknown_instance_is_not_found,
);

/// moto answers DescribeInstances 100 reservations a page, with a NextToken, even when the
/// request names its instances (AWS answers those in one page): the adapter reads every page.
/// Read as one page, the instances past the first 100 were "not found" (R3 at 1,000 nodes).
#[tokio::test]
async fn on_moto_describes_instances_beyond_one_page() {
    let w = moto_world().await;
    let sdk = Moto::shared().sdk();
    let mut ids = vec![w.instance_id.clone()];
    // One reservation each, as nodes launched one by one.
    for _ in 0..120 {
        ids.extend(moto::run_instances(&sdk, &w.subnet_id, "m5.large", 1).await);
    }
    let found = w.client.describe_instances(&ids).await.unwrap();
    assert_eq!(found.len(), ids.len());
    let last = ids.last().unwrap();
    assert_eq!(
        w.client.describe_instance(last).await.unwrap().instance_id,
        *last
    );
}
