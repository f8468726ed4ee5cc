//! Integration tests, one binary so the heavy dependency graph is linked once. The harness in
//! `support` starts the real parts the tests run against (etcd + kube-apiserver, moto) on
//! 127.0.0.1; `scripts/test.sh` builds or installs them and exports their paths.

mod controlplane;
mod e2e_prefix_sim;
mod ec2_batching;
mod ec2_contract;
mod ec2_recorded;
mod ec2_throttling;
mod support;
