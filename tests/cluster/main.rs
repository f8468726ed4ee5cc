//! Tests on a whole cluster: a real kubelet running winipam's image, installed with its Helm
//! chart, the real scheduler and controller-manager, KWOK's Windows nodes and moto as EC2
//! (`scripts/cluster.sh`). Root only (the kubelet, containerd and the bridge); `scripts/test.sh`
//! runs them after the other tests. One cluster per host: the tests take turns.

mod chart;
mod chart_prefix;
#[path = "../common/mod.rs"]
mod common;
mod image;
mod logtap;
mod ops;
mod scale;
mod support;
mod watch;
