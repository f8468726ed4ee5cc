//! The real EC2 backend, on aws-sdk-ec2.
//!
//! - Credentials and region from aws-config's default chain (IRSA, Pod Identity, env), region
//!   overridable; endpoint from `--ec2-endpoint` or `AWS_ENDPOINT_URL_EC2` (the SDK reads the
//!   variable itself).
//! - HTTP over rustls with the ring provider (DEPENDENCIES.md: no aws-lc next to kube's ring).
//! - Retries: standard mode (not adaptive: the client's own buckets limit the rate) for describes;
//!   none for Assign/Unassign, since a retried Assign after a timeout could assign twice: the pool
//!   describes the ENI instead.
//! - Every throttled attempt, SDK retries included, is reported through an interceptor.

mod convert;
#[cfg(test)]
mod fuzz_tests;
mod throttle;

use std::net::Ipv4Addr;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{Builder as ConfigBuilder, Region, SharedHttpClient};
use aws_sdk_ec2::types::InstanceType;
use aws_smithy_http_client::tls;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use ipnet::Ipv4Net;

use super::{Ec2Backend, Ec2Error, Operation, ThrottleSink};
use crate::ipam::{InstanceInfo, InstanceTypeLimits, SubnetInfo};
use convert::{
    instance_info, instance_type_limits, parse_ips, parse_prefixes, sdk_error, subnet_info,
};
use throttle::ThrottleInterceptor;

/// The SDK's HTTP client: HTTPS (and plain HTTP for an emulator) on rustls with the ring
/// provider, the one kube uses too.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Settings of the real backend.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsEc2Options {
    /// Region; `None` takes it from the default chain (env, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (`--ec2-endpoint`), e.g. an emulator. `None` leaves it to the SDK, which
    /// honours `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    pub connect_timeout: Duration,
    /// Per attempt of a describe; the SDK may retry it.
    pub describe_attempt_timeout: Duration,
    /// Whole describe, retries included.
    pub describe_timeout: Duration,
    /// An Assign/Unassign (one attempt). When it expires the outcome is unknown.
    pub mutating_timeout: Duration,
    /// Attempts of a describe (SDK standard retry mode), the first included.
    pub describe_max_attempts: u32,
}

impl Default for AwsEc2Options {
    fn default() -> Self {
        AwsEc2Options {
            region: None,
            endpoint: None,
            connect_timeout: Duration::from_secs(3),
            describe_attempt_timeout: Duration::from_secs(5),
            describe_timeout: Duration::from_secs(15),
            mutating_timeout: Duration::from_secs(10),
            describe_max_attempts: 3,
        }
    }
}

/// [`Ec2Backend`] on the AWS SDK. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AwsEc2 {
    client: Client,
    mutating_override: ConfigBuilder,
    interceptor: ThrottleInterceptor,
}

impl AwsEc2 {
    /// The production backend: credentials and region from the default chain, HTTPS on rustls
    /// with ring.
    pub async fn from_env(options: &AwsEc2Options) -> Self {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk_config = loader.load().await;
        Self::from_config(ConfigBuilder::from(&sdk_config), options)
    }

    /// A backend on a prepared SDK configuration (tests pass credentials, region and an HTTP
    /// client of their own). `options` still decide endpoint, region override, retries and
    /// timeouts.
    pub fn from_config(builder: ConfigBuilder, options: &AwsEc2Options) -> Self {
        let interceptor = ThrottleInterceptor::default();
        let mut builder = builder
            .retry_config(
                RetryConfig::standard().with_max_attempts(options.describe_max_attempts.max(1)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_attempt_timeout(options.describe_attempt_timeout)
                    .operation_timeout(options.describe_timeout)
                    .build(),
            )
            .interceptor(interceptor.clone());
        if let Some(region) = &options.region {
            builder = builder.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        let mutating_override = ConfigBuilder::default()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_attempt_timeout(options.mutating_timeout)
                    .operation_timeout(options.mutating_timeout)
                    .build(),
            );
        AwsEc2 {
            client: Client::from_conf(builder.build()),
            mutating_override,
            interceptor,
        }
    }

    /// The SDK client (tests use it to prepare resources on an emulator).
    pub fn sdk(&self) -> &Client {
        &self.client
    }
}

impl Ec2Backend for AwsEc2 {
    /// Follows `NextToken`: AWS answers a request that names its instances in one page, but an
    /// EC2-compatible endpoint may not (moto gives 100 reservations a page). Read as one page,
    /// the rest were "not found": at a leader change on 1,000 moto nodes, 900 nodes got an
    /// `InstanceNotFound` Warning and waited out retries, 206 s in all (R3).
    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Ec2Error> {
        let op = Operation::DescribeInstances;
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        // A bound in case an endpoint keeps answering with a token: what was read is kept, and
        // an instance left out is looked up again later.
        for _ in 0..=ids.len() {
            let page = self
                .client
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(op, e))?;
            found.extend(
                (page.reservations().iter())
                    .flat_map(|r| r.instances())
                    .filter_map(instance_info),
            );
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
        tracing::warn!(
            instances = ids.len(),
            "DescribeInstances kept answering with a NextToken; the instances not read are looked up again later"
        );
        Ok(found)
    }

    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, Ec2Error> {
        let op = Operation::DescribeSubnets;
        let out = self
            .client
            .describe_subnets()
            .set_subnet_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(out.subnets().iter().filter_map(subnet_info).collect())
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Result<Vec<InstanceTypeLimits>, Ec2Error> {
        let op = Operation::DescribeInstanceTypes;
        let out = self
            .client
            .describe_instance_types()
            .set_instance_types(Some(
                types
                    .iter()
                    .map(|t| InstanceType::from(t.as_str()))
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(out
            .instance_types()
            .iter()
            .filter_map(instance_type_limits)
            .collect())
    }

    async fn assign_private_ips(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        let op = Operation::AssignPrivateIpAddresses;
        let out = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni)
            .secondary_private_ip_address_count(count_param(count))
            .customize()
            .config_override(self.mutating_override.clone())
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(parse_ips(
            out.assigned_private_ip_addresses()
                .iter()
                .filter_map(|a| a.private_ip_address()),
        ))
    }

    async fn assign_prefixes(&self, eni: &str, count: u32) -> Result<Vec<Ipv4Net>, Ec2Error> {
        let op = Operation::AssignPrivateIpAddresses;
        let out = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni)
            .ipv4_prefix_count(count_param(count))
            .customize()
            .config_override(self.mutating_override.clone())
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(parse_prefixes(
            out.assigned_ipv4_prefixes()
                .iter()
                .filter_map(|p| p.ipv4_prefix()),
        ))
    }

    async fn unassign_private_ips(&self, eni: &str, ips: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        let op = Operation::UnassignPrivateIpAddresses;
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(eni)
            .set_private_ip_addresses(Some(ips.iter().map(|ip| ip.to_string()).collect()))
            .customize()
            .config_override(self.mutating_override.clone())
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(())
    }

    async fn unassign_prefixes(&self, eni: &str, prefixes: &[Ipv4Net]) -> Result<(), Ec2Error> {
        let op = Operation::UnassignPrivateIpAddresses;
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(eni)
            .set_ipv4_prefixes(Some(prefixes.iter().map(|p| p.to_string()).collect()))
            .customize()
            .config_override(self.mutating_override.clone())
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(())
    }

    fn report_throttles_to(&self, sink: ThrottleSink) -> bool {
        self.interceptor.set_sink(sink);
        true
    }
}

/// EC2 takes the counts as 32-bit signed integers; ours never come near the limit.
fn count_param(count: u32) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}
