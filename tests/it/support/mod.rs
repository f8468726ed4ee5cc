//! Test harness: real processes started on free 127.0.0.1 ports and stopped on drop.
// Each test module uses a different part of the harness.
#![allow(dead_code)]

pub mod bench;
pub mod controlplane;
pub mod deploy;
pub mod e2e;
pub mod ec2_account;
pub mod ec2_proxy;
pub mod ec2_replay;
pub mod loopback_http;
pub mod migration;
pub mod moto;
pub mod observe;
pub mod rbac;
pub mod vpcrc;
pub mod winipam;

/// A mutex of the harness: a test thread that panicked while holding it leaves data that is
/// still good for reporting, so poisoning is ignored.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
