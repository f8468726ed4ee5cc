//! winipam: pod IPv4 address management for Windows nodes on AWS.

pub mod ipam;
