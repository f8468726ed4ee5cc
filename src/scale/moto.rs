//! The instances behind the probe's nodes in moto, for runs whose controllers must share one
//! EC2. `--simulated-ec2` keeps EC2 inside each process: after R3's SIGKILL the new leader's
//! simulated EC2 knew nothing the old leader had assigned and handed the same /28s to other
//! nodes (29 of 30 new pods named an address a live pod held, in the first R3 run). moto, one
//! server for both replicas, keeps EC2's state across the kill; it has neither EC2's latency
//! nor its account throttling, and it ignores /28 prefixes (so secondary-IP mode there).

use aws_sdk_ec2::config::{BehaviorVersion, Builder, Credentials, Region};
use aws_sdk_ec2::types::InstanceType;
use futures::StreamExt;

pub const REGION: &str = "us-east-1";
pub const ZONE: &str = "us-east-1a";
/// An AMI id moto ships with.
const AMI: &str = "ami-03cf127a";
/// One /26 per node in the VPC's /16: 64 addresses for an m5.xlarge's 15 in secondary-IP mode
/// (moto draws secondary addresses at random in the subnet, unique on the ENI, and may draw
/// the subnet's first or last: harmless to the pool). A /22 each held only 64 nodes.
pub const MAX_NODES: u32 = 1024;
/// Launches at once (moto answers one request at a time, but the round trips overlap).
const PARALLEL: usize = 8;

/// Launches `count` instances of `instance_type`, each in a subnet of its own (moto draws
/// addresses without looking at other ENIs of a subnet); returns their ids.
pub async fn launch(
    endpoint: &str,
    count: u32,
    instance_type: &str,
) -> Result<Vec<String>, String> {
    if count > MAX_NODES {
        return Err(format!("at most {MAX_NODES} nodes with moto"));
    }
    let config = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "scale"))
        .http_client(crate::ec2::aws::https_client())
        .endpoint_url(endpoint)
        .build();
    let ec2 = aws_sdk_ec2::Client::from_conf(config);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.200.0.0/16")
        .send()
        .await
        .map_err(|e| format!("CreateVpc: {e}"))?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or("CreateVpc: no id")?
        .to_owned();
    let launches = (0..count).map(|i| launch_one(&ec2, &vpc_id, i, instance_type));
    futures::stream::iter(launches)
        .buffered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Node `i`'s subnet (the `i`-th /26 of the VPC) and its instance.
async fn launch_one(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    i: u32,
    instance_type: &str,
) -> Result<String, String> {
    let cidr = format!("10.200.{}.{}/26", i / 4, (i % 4) * 64);
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block(cidr)
        .availability_zone(ZONE)
        .send()
        .await
        .map_err(|e| format!("CreateSubnet: {e}"))?;
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .ok_or("CreateSubnet: no id")?;
    let run = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::from(instance_type))
        .subnet_id(subnet_id)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .map_err(|e| format!("RunInstances: {e}"))?;
    let id = run
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or("RunInstances: no instance")?;
    Ok(id.to_owned())
}
