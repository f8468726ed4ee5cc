//! The EC2 proxy the real VPC Resource Controller runs behind mends moto where the controller
//! relies on EC2's behaviour: AssignPrivateIpAddresses answers with the new addresses only, and
//! past the instance type's per-ENI limit the call fails with `PrivateIpAddressLimitExceeded`.

use std::collections::BTreeSet;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;

use crate::support::ec2_proxy::Ec2Proxy;
use crate::support::moto::{Moto, create_subnet, run_instances};

#[tokio::test]
async fn assign_answers_the_new_addresses_and_the_per_eni_limit_holds() {
    let moto = Moto::shared();
    let proxy = Ec2Proxy::start(moto);
    let direct = moto.sdk();
    let ec2 = Client::from_conf(moto.sdk_config().endpoint_url(proxy.endpoint()).build());
    let subnet = create_subnet(&direct, "10.250.0.0/16", "10.250.0.0/20", "us-east-1a").await;
    let instance = run_instances(&direct, &subnet, "m5.large", 1).await;
    let out = direct
        .describe_instances()
        .instance_ids(&instance[0])
        .send()
        .await
        .expect("DescribeInstances");
    let eni = out.reservations()[0].instances()[0].network_interfaces()[0]
        .network_interface_id()
        .expect("the primary ENI")
        .to_owned();

    // m5.large: 10 addresses per ENI, the primary one included. 4 + 5 fit, each answer names
    // only what it added.
    let mut seen = BTreeSet::new();
    for count in [4, 5] {
        let out = ec2
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .secondary_private_ip_address_count(count)
            .send()
            .await
            .expect("AssignPrivateIpAddresses within the limit");
        let added: Vec<String> = out
            .assigned_private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address().map(str::to_owned))
            .collect();
        assert_eq!(
            added.len(),
            count as usize,
            "only the new addresses: {added:?}"
        );
        for address in added {
            assert!(seen.insert(address.clone()), "{address} answered twice");
        }
    }
    let on_eni: BTreeSet<String> = crate::common::eni_ips(&direct, &eni)
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        on_eni, seen,
        "the answers name exactly the ENI's secondary addresses"
    );

    let err = ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .secondary_private_ip_address_count(1)
        .send()
        .await
        .expect_err("a tenth secondary address is past the limit");
    assert_eq!(err.code(), Some("PrivateIpAddressLimitExceeded"), "{err:?}");
    assert_eq!(crate::common::eni_ips(&direct, &eni).await.len(), 9);

    let calls = proxy.calls();
    assert_eq!(calls.get("AssignPrivateIpAddresses"), Some(&3), "{calls:?}");
    assert_eq!(
        proxy.refused().get("PrivateIpAddressLimitExceeded"),
        Some(&1)
    );
}
