//! SDK types -> domain types, and SDK errors -> [`Ec2Error`].

use std::net::Ipv4Addr;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Instance, InstanceNetworkInterface, InstanceTypeInfo, Subnet};
use aws_smithy_types::error::display::DisplayErrorContext;
use ipnet::Ipv4Net;

use crate::ec2::{Ec2Error, Operation};
use crate::ipam::{EniSnapshot, InstanceInfo, InstanceTypeLimits, SubnetInfo};

/// The instance with its primary ENI (device index 0 on network card 0), or `None` when EC2 gave
/// no such ENI (a terminated instance) or left out a field we need.
pub(super) fn instance_info(i: &Instance) -> Option<InstanceInfo> {
    let instance_id = i.instance_id()?;
    let primary = i.network_interfaces().iter().find(|n| is_primary(n));
    let Some(eni) = primary else {
        tracing::debug!(instance_id, "instance has no primary ENI (terminated?)");
        return None;
    };
    Some(InstanceInfo {
        instance_id: instance_id.to_string(),
        instance_type: i.instance_type()?.as_str().to_string(),
        availability_zone: i.placement()?.availability_zone()?.to_string(),
        primary_eni: eni_snapshot(instance_id, eni)?,
    })
}

fn is_primary(n: &InstanceNetworkInterface) -> bool {
    n.attachment()
        .is_some_and(|a| a.device_index() == Some(0) && a.network_card_index().unwrap_or(0) == 0)
}

fn eni_snapshot(instance_id: &str, n: &InstanceNetworkInterface) -> Option<EniSnapshot> {
    let mut primary_ip = None;
    let mut secondary_ips = Vec::new();
    for a in n.private_ip_addresses() {
        let Some(ip) = a
            .private_ip_address()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            tracing::warn!(instance_id, address = ?a.private_ip_address(), "unreadable address on ENI");
            continue;
        };
        if a.primary() == Some(true) {
            primary_ip = Some(ip);
        } else {
            secondary_ips.push(ip);
        }
    }
    // Older answers may omit the list's primary flag; the interface's own field names it.
    let primary_ip = primary_ip.or_else(|| n.private_ip_address()?.parse().ok())?;
    secondary_ips.retain(|ip| *ip != primary_ip);
    Some(EniSnapshot {
        eni_id: n.network_interface_id()?.to_string(),
        subnet_id: n.subnet_id()?.to_string(),
        primary_ip,
        secondary_ips,
        prefixes: parse_prefixes(n.ipv4_prefixes().iter().filter_map(|p| p.ipv4_prefix())),
    })
}

pub(super) fn subnet_info(s: &Subnet) -> Option<SubnetInfo> {
    Some(SubnetInfo {
        subnet_id: s.subnet_id()?.to_string(),
        cidr: s.cidr_block()?.parse().ok()?,
        availability_zone: s.availability_zone()?.to_string(),
        available_ips: u64::try_from(s.available_ip_address_count().unwrap_or(0)).unwrap_or(0),
    })
}

/// Nitro = hypervisor `nitro` or bare metal (SPEC section 4).
pub(super) fn instance_type_limits(t: &InstanceTypeInfo) -> Option<InstanceTypeLimits> {
    let ipv4 = t.network_info()?.ipv4_addresses_per_interface()?;
    let nitro =
        t.hypervisor().is_some_and(|h| h.as_str() == "nitro") || t.bare_metal() == Some(true);
    Some(InstanceTypeLimits {
        instance_type: t.instance_type()?.as_str().to_string(),
        ipv4_per_interface: u32::try_from(ipv4).ok()?,
        nitro,
    })
}

pub(super) fn parse_ips<'a>(items: impl Iterator<Item = &'a str>) -> Vec<Ipv4Addr> {
    items
        .filter_map(|s| match s.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(address = s, "EC2 returned an unreadable address");
                None
            }
        })
        .collect()
}

pub(super) fn parse_prefixes<'a>(items: impl Iterator<Item = &'a str>) -> Vec<Ipv4Net> {
    items
        .filter_map(|s| match s.parse() {
            Ok(net) => Some(net),
            Err(_) => {
                tracing::warn!(prefix = s, "EC2 returned an unreadable prefix");
                None
            }
        })
        .collect()
}

/// Classifies an SDK error. EC2's answer with a code: by the code. No answer, or an unreadable
/// one: on a mutating call the outcome is unknown.
pub(super) fn sdk_error<E, R>(op: Operation, err: SdkError<E, R>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let text = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) => Ec2Error::from_code(code, service.err().message().unwrap_or_default()),
            // An answer without a code (a 5xx from a proxy): nothing says whether it was applied.
            None => Ec2Error::no_answer(op, "NoErrorCode", text),
        },
        SdkError::TimeoutError(_) => Ec2Error::no_answer(op, "Timeout", text),
        SdkError::DispatchFailure(d) if d.is_user() => Ec2Error::local("InvalidRequest", text),
        SdkError::DispatchFailure(d) if d.is_timeout() => Ec2Error::no_answer(op, "Timeout", text),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Ec2Error::no_answer(op, "Transport", text)
        }
        SdkError::ConstructionFailure(_) => Ec2Error::local("InvalidRequest", text),
        _ => Ec2Error::no_answer(op, "Transport", text),
    }
}
