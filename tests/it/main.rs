//! Integration tests, one binary so the heavy dependency graph is linked once. The harness in
//! `support` starts the real parts the tests run against (etcd + kube-apiserver, moto) on
//! 127.0.0.1; `scripts/test.sh` builds or installs them and exports their paths.

#[path = "../common/mod.rs"]
mod common;
mod controlplane;
mod deploy_alerts;
mod deploy_chart;
mod deploy_manifests;
mod deploy_metrics;
mod deploy_policy;
mod deploy_rbac;
mod e2e_adopt;
mod e2e_assign;
mod e2e_config;
mod e2e_cooldown;
mod e2e_handover;
mod e2e_leaving;
mod e2e_node_status;
mod e2e_nodes;
mod e2e_opt_out;
mod e2e_prefix_fallback;
mod e2e_prefix_sim;
mod e2e_race;
mod e2e_restart;
mod e2e_status_write;
mod e2e_targets;
mod e2e_webhooks;
mod e2e_writes;
mod ec2_batching;
mod ec2_contract;
mod ec2_recorded;
mod ec2_throttling;
mod k8s_cluster;
mod k8s_leader;
mod k8s_support;
mod k8s_watch;
mod support;
mod vpcrc_back;
mod vpcrc_bench;
mod vpcrc_last_moments;
mod vpcrc_migrate;
mod vpcrc_proxy;
mod vpcrc_serves;
mod webhook_admission;
mod webhook_certs;
mod webhook_support;
mod webhook_tls;
