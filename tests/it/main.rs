//! Integration tests, one binary so the heavy dependency graph is linked once. The harness in
//! `support` starts the real parts the tests run against (etcd + kube-apiserver, moto) on
//! 127.0.0.1; `scripts/test.sh` builds or installs them and exports their paths.

mod controlplane;
mod ec2_batching;
mod ec2_contract;
mod ec2_recorded;
mod ec2_throttling;
mod k8s_cluster;
mod k8s_leader;
mod k8s_support;
mod k8s_watch;
mod support;
mod webhook_admission;
mod webhook_certs;
mod webhook_support;
mod webhook_tls;
