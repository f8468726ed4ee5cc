//! Describes of many nodes seen together share requests (SPEC 6.1): counted on moto, through the
//! real SDK backend, by the client's request counter.

use prometheus::Registry;
use winipam::ec2::aws::{AwsEc2, AwsEc2Options};
use winipam::ec2::{Ec2Client, Ec2ClientConfig, Operation};
use winipam::ipam::Ec2ErrorClass;

use crate::support::moto::{self, Moto};

async fn client_with_instances(
    vpc: &str,
    subnet: &str,
    n: i32,
) -> (Ec2Client<AwsEc2>, Vec<String>) {
    let moto = Moto::shared();
    let sdk = moto.sdk();
    let subnet_id = moto::create_subnet(&sdk, vpc, subnet, "us-east-1b").await;
    let ids = moto::run_instances(&sdk, &subnet_id, "m5.large", n).await;
    assert_eq!(ids.len(), n as usize);
    let backend = AwsEc2::from_config(moto.sdk_config(), &AwsEc2Options::default());
    let client = Ec2Client::new(backend, Ec2ClientConfig::default(), &Registry::new()).unwrap();
    (client, ids)
}

#[tokio::test]
async fn three_hundred_concurrent_describes_cost_one_request() {
    let (client, ids) = client_with_instances("10.1.0.0/16", "10.1.0.0/22", 300).await;
    let answers =
        futures::future::join_all(ids.iter().map(|id| client.describe_instance(id))).await;
    for (id, answer) in ids.iter().zip(answers) {
        let info = answer.unwrap();
        assert_eq!(&info.instance_id, id);
        assert!(info.primary_eni.eni_id.starts_with("eni-"));
    }
    assert_eq!(
        client.metrics().requests_any(Operation::DescribeInstances),
        1
    );
}

#[tokio::test]
async fn an_unknown_instance_in_a_batch_costs_a_few_requests_not_the_batch() {
    let (client, mut ids) = client_with_instances("10.2.0.0/16", "10.2.0.0/23", 100).await;
    ids.push("i-0123456789abcdef0".to_string());
    let answers =
        futures::future::join_all(ids.iter().map(|id| client.describe_instance(id))).await;
    let (ok, missing): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a.is_ok());
    assert_eq!(ok.len(), 100);
    assert_eq!(missing.len(), 1);
    assert_eq!(
        missing[0].as_ref().unwrap_err().class,
        Ec2ErrorClass::NotFound
    );
    // The batch is halved until the unknown id is alone: at most 1 + 2 * ceil(log2(101)) calls.
    let calls = client.metrics().requests_any(Operation::DescribeInstances);
    assert!((2..=15).contains(&calls), "{calls} requests");
}
