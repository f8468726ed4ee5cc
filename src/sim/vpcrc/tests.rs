use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::ec2::Operation;
use crate::ipam::capacity;
use crate::sim::cluster::{NodeSpec, SimCluster, SimClusterConfig};
use crate::sim::ec2::{SimEc2, SimEc2Config};

fn world() -> (SimCluster, SimEc2, String) {
    let ec2 = SimEc2::new(SimEc2Config::instant(3), Arc::new(capacity::lookup));
    let subnet = ec2
        .add_subnet("10.1.0.0/20".parse().unwrap(), "us-west-2a")
        .unwrap();
    (SimCluster::new(SimClusterConfig::instant(3)), ec2, subnet)
}

fn add_node(c: &SimCluster, ec2: &SimEc2, subnet: &str, name: &str, t: &str) {
    let info = ec2.add_instance(t, subnet).unwrap();
    c.add_node(NodeSpec {
        name: name.into(),
        instance_id: Some(info.instance_id),
        instance_type: Some(t.into()),
        windows: true,
    });
}

async fn until(c: &SimCluster, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let (live, annotated) = c.pod_counts();
        if live == annotated {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn secondary_mode_fills_three_at_a_time_after_describing_each_node_three_times() {
    let (c, ec2, subnet) = world();
    add_node(&c, &ec2, &subnet, "n1", "m5.xlarge");
    for i in 0..9 {
        c.bind_pod("ns", &format!("p{i}"), "n1");
    }
    let model = VpcRcModel::new(c.clone(), ec2.clone(), 1);
    let ready = model.readiness();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(model.run(async move {
        let _ = stopped.await;
    }));
    until(&c, Duration::from_secs(120)).await;
    assert!(ready.all_nodes_ready());
    assert_eq!(c.pod_counts(), (9, 9));
    assert_eq!(c.node_capacity("n1"), Some(14));
    // Init: 2 DescribeInstances + 1 DescribeSubnets; then no surge: 3 addresses per Assign.
    assert_eq!(ec2.calls(Operation::DescribeSubnets), 1);
    let assigns = ec2.calls(Operation::AssignPrivateIpAddresses);
    assert!(
        assigns >= 3,
        "{assigns} Assign calls for 9 pods with warm 3"
    );
    // Every Assign is followed by at least one describe of the ENI.
    assert!(ec2.calls(Operation::DescribeInstances) >= 2 + assigns);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn prefix_mode_and_cooldown_on_delete() {
    let (c, ec2, subnet) = world();
    c.set_config_map(
        "kube-system",
        "amazon-vpc-cni",
        BTreeMap::from([
            ("enable-windows-ipam".to_string(), "true".to_string()),
            (
                "enable-windows-prefix-delegation".to_string(),
                "true".to_string(),
            ),
        ]),
    );
    add_node(&c, &ec2, &subnet, "n1", "c5.4xlarge");
    for i in 0..20 {
        c.bind_pod("ns", &format!("p{i}"), "n1");
    }
    let model = VpcRcModel::new(c.clone(), ec2.clone(), 1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(model.run(async move {
        let _ = stopped.await;
    }));
    until(&c, Duration::from_secs(120)).await;
    assert_eq!(c.pod_counts(), (20, 20));
    assert_eq!(c.node_capacity("n1"), Some(29 * 16));
    for p in c.pods() {
        assert!(p.annotation.unwrap().ends_with("/32"));
    }
    // Two /28s: the first for the minimum, one more when warm ran out (no surge).
    assert_eq!(ec2.calls(Operation::AssignPrivateIpAddresses), 2);
    let _ = stop.send(());
    task.await.unwrap();
}
