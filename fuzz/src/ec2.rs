//! EC2 answers (any status, any body) through the real SDK backend, as the recorded-answer tests
//! feed them: the SDK deserializes, our code turns the output into domain types or classifies
//! the error.

use std::net::Ipv4Addr;

use winipam::ec2::aws::{AwsEc2, AwsEc2Options};
use winipam::ec2::classify::classify;
use winipam::ec2::{Ec2Backend, Ec2Error};

use crate::split_selector;
use replay::answering;

#[path = "../../tests/it/support/ec2_replay.rs"]
mod replay;

const STATUSES: [u16; 6] = [200, 400, 403, 500, 503, 302];
/// The operations a selector picks (selector % 7), in this order.
pub const OPERATIONS: usize = 7;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
}

fn backend(status: u16, body: &[u8]) -> AwsEc2 {
    // One attempt: a retry would find no second answer.
    let one_attempt = AwsEc2Options {
        describe_max_attempts: 1,
        ..AwsEc2Options::default()
    };
    AwsEc2::from_config(answering(status, body.to_vec()), &one_attempt)
}

/// An error with a code is classified by that code alone.
fn check_error(err: &Ec2Error) {
    if let Some(code) = &err.code {
        assert_eq!(err.class, classify(code, &err.message), "{err:?}");
    }
}

/// Byte 0 picks the operation, byte 1 the HTTP status, the rest is the body.
pub fn ec2_response(data: &[u8]) {
    let Some((op, rest)) = split_selector(data) else {
        return;
    };
    let Some((status, body)) = split_selector(rest) else {
        return;
    };
    let status = STATUSES[usize::from(status) % STATUSES.len()];
    let ec2 = backend(status, body);
    let ids = ["i-0abc".to_owned()];
    let ip = [Ipv4Addr::new(10, 0, 0, 9)];
    let prefix = ["10.0.32.48/28".parse().expect("a prefix")];
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let result = match usize::from(op) % OPERATIONS {
                0 => ec2.describe_instances(&ids).await.map(|v| {
                    for i in &v {
                        let eni = &i.primary_eni;
                        assert!(!eni.secondary_ips.contains(&eni.primary_ip));
                    }
                }),
                1 => ec2.describe_subnets(&ids).await.map(drop),
                2 => ec2.describe_instance_types(&ids).await.map(drop),
                3 => ec2.assign_private_ips("eni-1", 2).await.map(drop),
                4 => ec2.assign_prefixes("eni-1", 1).await.map(drop),
                5 => ec2.unassign_private_ips("eni-1", &ip).await,
                _ => ec2.unassign_prefixes("eni-1", &prefix).await,
            };
            if let Err(err) = &result {
                check_error(err);
            }
        })
    });
}
