//! The simulated VPC: subnets, instances and their primary ENIs, with EC2's rules for assigning
//! and unassigning addresses. Plain state: time comes in as an argument, errors are EC2's codes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::time::Instant;

use super::consistency::History;
use super::subnet::SubnetAlloc;
use crate::ec2::Ec2Error;
use crate::ipam::{EniSnapshot, InstanceInfo, InstanceTypeLimits, SubnetInfo};

/// The addresses of an ENI beyond its primary one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct EniAddrs {
    pub ips: Vec<Ipv4Addr>,
    pub prefixes: Vec<Ipv4Net>,
}

struct Subnet {
    id: String,
    az: String,
    alloc: SubnetAlloc,
}

struct Instance {
    instance_type: String,
    subnet: usize,
    eni_id: String,
}

struct Eni {
    subnet: usize,
    primary: Ipv4Addr,
    limits: InstanceTypeLimits,
    addrs: EniAddrs,
    history: History<EniAddrs>,
}

/// The VPC.
#[derive(Default)]
pub(super) struct Vpc {
    subnets: Vec<Subnet>,
    subnet_index: HashMap<String, usize>,
    instances: HashMap<String, Instance>,
    enis: HashMap<String, Eni>,
    next_id: u64,
    /// How long past views are kept for lagging describes.
    pub keep_history: Duration,
}

fn err(code: &str, message: String) -> Ec2Error {
    Ec2Error::from_code(code, message)
}

impl Vpc {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // EC2 ids carry 17 hex digits.
        format!("{prefix}-{:017x}", self.next_id)
    }

    pub fn add_subnet(&mut self, cidr: Ipv4Net, az: &str) -> Result<String, Ec2Error> {
        if !(16..=28).contains(&cidr.prefix_len()) {
            return Err(err(
                "InvalidSubnet.Range",
                format!("The CIDR '{cidr}' is invalid: subnets are /16 to /28."),
            ));
        }
        if self.subnets.iter().any(|s| {
            let c = s.alloc.cidr();
            c.contains(&cidr.network()) || cidr.contains(&c.network())
        }) {
            return Err(err(
                "InvalidSubnet.Conflict",
                format!("The CIDR '{cidr}' conflicts with another subnet"),
            ));
        }
        let id = self.new_id("subnet");
        self.subnet_index.insert(id.clone(), self.subnets.len());
        self.subnets.push(Subnet {
            id: id.clone(),
            az: az.to_string(),
            alloc: SubnetAlloc::new(cidr),
        });
        Ok(id)
    }

    fn subnet_idx(&self, id: &str) -> Result<usize, Ec2Error> {
        self.subnet_index.get(id).copied().ok_or_else(|| {
            err(
                "InvalidSubnetID.NotFound",
                format!("The subnet ID '{id}' does not exist"),
            )
        })
    }

    /// A new instance with its primary ENI; `instance_id` chosen by the caller or generated.
    pub fn add_instance(
        &mut self,
        limits: InstanceTypeLimits,
        subnet_id: &str,
        instance_id: Option<&str>,
    ) -> Result<InstanceInfo, Ec2Error> {
        if let Some(id) = instance_id
            && self.instances.contains_key(id)
        {
            return Err(err(
                "InvalidInstanceID.Duplicate",
                format!("The instance ID '{id}' already exists"),
            ));
        }
        let subnet = self.subnet_idx(subnet_id)?;
        let primary = self.subnets[subnet]
            .alloc
            .alloc_ips(1)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| {
                err(
                    "InsufficientFreeAddressesInSubnet",
                    format!("There are not enough free addresses in subnet '{subnet_id}' to satisfy the requested number of instances."),
                )
            })?;
        let instance_id = match instance_id {
            Some(id) => id.to_string(),
            None => self.new_id("i"),
        };
        let eni_id = self.new_id("eni");
        self.enis.insert(
            eni_id.clone(),
            Eni {
                subnet,
                primary,
                limits: limits.clone(),
                addrs: EniAddrs::default(),
                history: History::default(),
            },
        );
        self.instances.insert(
            instance_id.clone(),
            Instance {
                instance_type: limits.instance_type,
                subnet,
                eni_id,
            },
        );
        self.instance_info(&instance_id, Instant::now(), Duration::ZERO)
            .ok_or_else(|| Ec2Error::local("SimInconsistent", "instance vanished"))
    }

    /// Terminates an instance: its ENI and every address on it go back to the subnet.
    pub fn remove_instance(&mut self, instance_id: &str) -> bool {
        let Some(inst) = self.instances.remove(instance_id) else {
            return false;
        };
        if let Some(eni) = self.enis.remove(&inst.eni_id) {
            let alloc = &mut self.subnets[eni.subnet].alloc;
            alloc.free_ips(&[eni.primary]);
            alloc.free_ips(&eni.addrs.ips);
            alloc.free_prefixes(&eni.addrs.prefixes);
        }
        true
    }

    /// The instance as a describe `lag` ago would show it.
    pub fn instance_info(&self, id: &str, now: Instant, lag: Duration) -> Option<InstanceInfo> {
        let inst = self.instances.get(id)?;
        let eni = self.enis.get(&inst.eni_id)?;
        let view = eni.history.view_at(&eni.addrs, now, lag);
        let subnet = &self.subnets[inst.subnet];
        Some(InstanceInfo {
            instance_id: id.to_string(),
            instance_type: inst.instance_type.clone(),
            availability_zone: subnet.az.clone(),
            primary_eni: EniSnapshot {
                eni_id: inst.eni_id.clone(),
                subnet_id: subnet.id.clone(),
                primary_ip: eni.primary,
                secondary_ips: view.ips.clone(),
                prefixes: view.prefixes.clone(),
            },
        })
    }

    pub fn describe_instances(
        &self,
        ids: &[String],
        now: Instant,
        lag: Duration,
    ) -> Result<Vec<InstanceInfo>, Ec2Error> {
        let missing: Vec<&str> = ids
            .iter()
            .filter(|id| !self.instances.contains_key(id.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(err(
                "InvalidInstanceID.NotFound",
                format!("The instance IDs '{}' do not exist", missing.join(", ")),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| self.instance_info(id, now, lag))
            .collect())
    }

    pub fn subnet_info(&self, id: &str) -> Option<SubnetInfo> {
        let s = &self.subnets[*self.subnet_index.get(id)?];
        Some(SubnetInfo {
            subnet_id: s.id.clone(),
            cidr: s.alloc.cidr(),
            availability_zone: s.az.clone(),
            available_ips: u64::from(s.alloc.available()),
        })
    }

    pub fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, Ec2Error> {
        ids.iter()
            .map(|id| {
                self.subnet_info(id).ok_or_else(|| {
                    err(
                        "InvalidSubnetID.NotFound",
                        format!("The subnet ID '{id}' does not exist"),
                    )
                })
            })
            .collect()
    }

    /// Addresses used by something other than our instances (other ENIs in the VPC): they make
    /// a subnet full or fragmented.
    pub fn occupy(&mut self, subnet_id: &str, addrs: &[Ipv4Addr]) -> Result<(), Ec2Error> {
        let idx = self.subnet_idx(subnet_id)?;
        if self.subnets[idx].alloc.take_ips(addrs) {
            Ok(())
        } else {
            Err(err(
                "InvalidIPAddress.InUse",
                format!("Some of the addresses are in use or outside subnet '{subnet_id}'"),
            ))
        }
    }

    fn eni_mut(&mut self, eni_id: &str) -> Result<&mut Eni, Ec2Error> {
        self.enis
            .get_mut(eni_id)
            .ok_or_else(|| eni_not_found(eni_id))
    }

    /// EC2's per-ENI rule: secondary addresses and prefixes together fill the slots left by the
    /// primary address (`ipv4_per_interface - 1`).
    fn check_slots(eni: &Eni, eni_id: &str, more: u32) -> Result<(), Ec2Error> {
        let used = (eni.addrs.ips.len() + eni.addrs.prefixes.len()) as u32;
        let slots = eni.limits.ipv4_per_interface.saturating_sub(1);
        if more == 0 {
            return Err(err(
                "InvalidParameterValue",
                "The count of addresses to assign must be at least 1".to_string(),
            ));
        }
        if used + more > slots {
            return Err(err(
                "PrivateIpAddressLimitExceeded",
                format!(
                    "Number of private addresses will exceed limit on interface '{eni_id}' ({used} used, {more} requested, {slots} available to a {} ENI)",
                    eni.limits.instance_type
                ),
            ));
        }
        Ok(())
    }

    pub fn assign_ips(
        &mut self,
        eni_id: &str,
        count: u32,
        now: Instant,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        let keep = self.keep_history;
        let eni = self.enis.get(eni_id).ok_or_else(|| eni_not_found(eni_id))?;
        Self::check_slots(eni, eni_id, count)?;
        let subnet = eni.subnet;
        let subnet_id = self.subnets[subnet].id.clone();
        let ips = self.subnets[subnet].alloc.alloc_ips(count).ok_or_else(|| {
            err(
                "InsufficientFreeAddressesInSubnet",
                format!("The specified subnet {subnet_id} does not have enough free addresses to satisfy the request."),
            )
        })?;
        let eni = self.eni_mut(eni_id)?;
        eni.history.record(now, eni.addrs.clone(), keep);
        eni.addrs.ips.extend_from_slice(&ips);
        Ok(ips)
    }

    pub fn assign_prefixes(
        &mut self,
        eni_id: &str,
        count: u32,
        now: Instant,
    ) -> Result<Vec<Ipv4Net>, Ec2Error> {
        let keep = self.keep_history;
        let eni = self.enis.get(eni_id).ok_or_else(|| eni_not_found(eni_id))?;
        if !eni.limits.nitro {
            // EC2 refuses prefixes on instances not built on Nitro.
            return Err(err(
                "InvalidParameterValue",
                format!(
                    "Prefix delegation is not supported for instance type {} (not Nitro)",
                    eni.limits.instance_type
                ),
            ));
        }
        Self::check_slots(eni, eni_id, count)?;
        let subnet = eni.subnet;
        let subnet_id = self.subnets[subnet].id.clone();
        let prefixes = self.subnets[subnet].alloc.alloc_prefixes(count).ok_or_else(|| {
            err(
                "InsufficientCidrBlocks",
                format!("The specified subnet {subnet_id} does not have enough contiguous free space for the requested prefixes."),
            )
        })?;
        let eni = self.eni_mut(eni_id)?;
        eni.history.record(now, eni.addrs.clone(), keep);
        eni.addrs.prefixes.extend_from_slice(&prefixes);
        Ok(prefixes)
    }

    /// All or nothing, as EC2: an address not on the ENI (or its primary) fails the call.
    pub fn unassign_ips(
        &mut self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        now: Instant,
    ) -> Result<(), Ec2Error> {
        let keep = self.keep_history;
        let eni = self.eni_mut(eni_id)?;
        if let Some(p) = ips.iter().find(|ip| **ip == eni.primary) {
            return Err(err(
                "InvalidParameterValue",
                format!(
                    "Value ({p}) for parameter privateIpAddress is invalid. The primary IP address of an interface cannot be unassigned."
                ),
            ));
        }
        if ips.is_empty() || !ips.iter().all(|ip| eni.addrs.ips.contains(ip)) {
            return Err(err(
                "InvalidParameterValue",
                format!("Some of the specified addresses are not assigned to interface {eni_id}"),
            ));
        }
        eni.history.record(now, eni.addrs.clone(), keep);
        eni.addrs.ips.retain(|ip| !ips.contains(ip));
        let subnet = eni.subnet;
        self.subnets[subnet].alloc.free_ips(ips);
        Ok(())
    }

    pub fn unassign_prefixes(
        &mut self,
        eni_id: &str,
        prefixes: &[Ipv4Net],
        now: Instant,
    ) -> Result<(), Ec2Error> {
        let keep = self.keep_history;
        let eni = self.eni_mut(eni_id)?;
        if prefixes.is_empty() || !prefixes.iter().all(|p| eni.addrs.prefixes.contains(p)) {
            return Err(err(
                "InvalidParameterValue",
                format!("Some of the specified prefixes are not assigned to interface {eni_id}"),
            ));
        }
        eni.history.record(now, eni.addrs.clone(), keep);
        eni.addrs.prefixes.retain(|p| !prefixes.contains(p));
        let subnet = eni.subnet;
        self.subnets[subnet].alloc.free_prefixes(prefixes);
        Ok(())
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Secondary IPs and /28 prefixes on every ENI now (benchmarks: addresses held).
    pub fn address_totals(&self) -> (u64, u64) {
        self.enis.values().fold((0, 0), |(ips, prefixes), eni| {
            (
                ips + eni.addrs.ips.len() as u64,
                prefixes + eni.addrs.prefixes.len() as u64,
            )
        })
    }

    pub fn has_instance(&self, id: &str) -> bool {
        self.instances.contains_key(id)
    }
}

/// EC2's answer for an ENI it does not know.
fn eni_not_found(eni_id: &str) -> Ec2Error {
    err(
        "InvalidNetworkInterfaceID.NotFound",
        format!("The networkInterface ID '{eni_id}' does not exist"),
    )
}
