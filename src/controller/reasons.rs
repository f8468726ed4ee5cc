//! Event reasons (CamelCase, stable: admins alert and search on them). Every Warning the SPEC
//! names is here; the notes that go with them say what to do.

/// The node's providerID has no EC2 instance id: winipam cannot manage it.
pub const MISSING_PROVIDER_ID: &str = "MissingProviderID";
/// Neither EC2 nor the embedded table knows the instance type: no capacity is advertised.
pub const UNSUPPORTED_INSTANCE_TYPE: &str = "UnsupportedInstanceType";
/// EC2 does not know the node's instance (terminated, or another account/region).
pub const INSTANCE_NOT_FOUND: &str = "InstanceNotFound";
/// Prefix delegation is on, but the node is not Nitro: it stays in secondary-IP mode.
pub const PREFIX_DELEGATION_UNSUPPORTED: &str = "PrefixDelegationUnsupported";
/// A pod has waited more than a few seconds for an address.
pub const IP_ALLOCATION_PENDING: &str = "IPAllocationPending";
/// EC2 refused to give the node more addresses.
pub const IP_ALLOCATION_FAILED: &str = "IPAllocationFailed";
/// `InsufficientFreeAddressesInSubnet`.
pub const SUBNET_EXHAUSTED: &str = "SubnetExhausted";
/// `InsufficientCidrBlocks`: no free aligned /28 in the subnet.
pub const INSUFFICIENT_CIDR_BLOCKS: &str = "InsufficientCidrBlocks";
/// An EC2 error code winipam has no specific reaction for.
pub const EC2_ERROR: &str = "EC2Error";
/// A pod's annotation names an address that is not on its node's ENI.
pub const IP_NOT_ON_ENI: &str = "IPNotOnENI";
/// Two live pods' annotations name the same address.
pub const DUPLICATE_IP_ANNOTATION: &str = "DuplicateIPAnnotation";
/// A pod's annotation is not an IPv4 CIDR.
pub const INVALID_IP_ANNOTATION: &str = "InvalidIPAnnotation";
/// An address a pod uses was removed from the ENI outside winipam.
pub const IP_REMOVED_FROM_ENI: &str = "IPRemovedFromENI";
/// The ConfigMap has a bad value; the last good configuration stays in force.
pub const CONFIG_REJECTED: &str = "ConfigRejected";
/// `kube-system/amazon-vpc-cni` says the VPC Resource Controller manages Windows IPs.
pub const FOREIGN_IPAM_ENABLED: &str = "ForeignIPAMEnabled";
/// The NodeAddressPool could not be created or written.
pub const STATUS_WRITE_FAILED: &str = "StatusWriteFailed";
/// The node is cordoned, drained or being deleted: its free addresses go back (Normal).
pub const NODE_LEAVING: &str = "NodeLeaving";
/// The kubelet's `--max-pods` (`status.capacity.pods`) disagrees with the node's pod IP capacity.
pub const MAX_PODS_MISMATCH: &str = "MaxPodsMismatch";
