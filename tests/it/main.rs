//! Integration tests, one binary so the heavy dependency graph is linked once. The harness in
//! `support` starts the real parts the tests run against (etcd + kube-apiserver, moto) on
//! 127.0.0.1; `scripts/test.sh` builds or installs them and exports their paths.

mod controlplane;
mod e2e_adopt;
mod e2e_assign;
mod e2e_config;
mod e2e_cooldown;
mod e2e_nodes;
mod e2e_prefix_sim;
mod e2e_race;
mod e2e_restart;
mod e2e_targets;
mod ec2_batching;
mod ec2_contract;
mod ec2_recorded;
mod ec2_throttling;
mod support;
