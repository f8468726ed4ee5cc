//! The way back: what a new leader reads from a NodeAddressPool status written by the previous
//! one (or by its own previous life), to rebuild the node's pool without shortening a cool-down,
//! handing out an address a pod may still use, or counting as free a slot being given back
//! (SPEC 5.3, 6.3).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::jiff;

use super::KeptRecords;
use crate::crd::NodeAddressPoolStatus;
use crate::ipam::Timestamp;

/// What the previous leader left in the node's NodeAddressPool status (SPEC 5.3, 6.3).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Restored {
    /// Cool-down records: (address, end).
    pub(crate) cooldowns: Vec<(Ipv4Addr, Timestamp)>,
    /// Addresses pods held.
    pub(crate) used: Vec<Ipv4Addr>,
    /// Slots being given back to EC2 (/32s and /28s).
    pub(crate) releasing: Vec<Ipv4Net>,
    /// Addresses listed ahead: possibly in use, as `used` (the worker may have annotated one
    /// since it wrote the status).
    pub(crate) ahead: Vec<Ipv4Addr>,
    /// The Node UID the object's ownerReference names, when read at leadership start: if it
    /// is the node's, the object exists and needs no create (one request per node saved at
    /// every leader change).
    pub(crate) owner_uid: Option<String>,
}

/// The records of `status`. An entry that does not parse is skipped: the status is ours, but
/// anyone with write access to it could have edited it, and one bad entry must not cost the
/// others.
pub(crate) fn restore(status: &NodeAddressPoolStatus) -> Restored {
    Restored {
        cooldowns: (status.cooldowns.iter())
            .filter_map(|r| Some((r.address.parse().ok()?, parse_rfc3339(&r.until)?)))
            .collect(),
        used: (status.used_addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect(),
        releasing: (status.releasing.iter())
            .filter_map(|n| n.parse().ok())
            .collect(),
        ahead: (status.ahead_addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect(),
        owner_uid: None,
    }
}

impl Restored {
    /// The records to write back while the node has no pool of its own (see
    /// `Published::kept`): sorted, without duplicates, cool-downs that ended at `now` dropped.
    pub(crate) fn kept(&self, now: Timestamp) -> KeptRecords {
        let mut used = self.used.clone();
        used.sort_unstable();
        used.dedup();
        let mut cooldowns: Vec<_> = (self.cooldowns.iter())
            .filter(|(_, until)| *until > now)
            .copied()
            .collect();
        cooldowns.sort_unstable();
        let mut releasing = self.releasing.clone();
        releasing.sort_unstable();
        releasing.dedup();
        let mut ahead = self.ahead.clone();
        ahead.sort_unstable();
        ahead.dedup();
        KeptRecords {
            used,
            cooldowns,
            releasing,
            ahead,
        }
    }
}

/// Parses an RFC 3339 time (a cool-down record); `None` if it is not one.
pub(crate) fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let t: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok().map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::super::render::{render, rfc3339};
    use super::super::test_support::ready;
    use super::*;
    use crate::crd::CooldownRecord;

    #[test]
    fn rfc3339_round_trips() {
        let ts = Timestamp(1_795_000_000_123);
        let s = rfc3339(ts);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(ts));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn what_is_rendered_is_restored() {
        let mut record = ready(
            &["10.0.0.17", "10.0.0.20"],
            &[("10.0.0.18", 1_795_219_230_000)],
            false,
        );
        if let Some(facts) = &mut record.pool {
            // Sorted, as the pool gives them.
            facts.releasing = vec![
                "10.0.0.9/32".parse().unwrap(),
                "10.0.0.32/28".parse().unwrap(),
            ];
            facts.ahead = vec!["10.0.0.21".parse().unwrap(), "10.0.0.22".parse().unwrap()];
        }
        let status = render(&record, None, None, Timestamp(1_795_219_200_000));
        let restored = restore(&status);
        let facts = record.pool.as_ref().unwrap();
        assert_eq!(restored.used, facts.used);
        assert_eq!(restored.cooldowns, facts.cooldowns);
        assert_eq!(restored.releasing, facts.releasing);
        assert_eq!(restored.ahead, facts.ahead);
        // Written back unchanged by a worker that has no pool yet.
        let kept = restored.kept(Timestamp(1_795_219_200_000));
        assert_eq!(kept.ahead, facts.ahead);
        assert_eq!(
            (kept.used, kept.cooldowns, kept.releasing),
            (
                facts.used.clone(),
                facts.cooldowns.clone(),
                facts.releasing.clone()
            )
        );
    }

    #[test]
    fn entries_that_do_not_parse_are_skipped_one_by_one() {
        let status = NodeAddressPoolStatus {
            used_addresses: vec!["10.0.0.17".into(), "10.0.0".into(), "10.0.0.20".into()],
            cooldowns: vec![
                CooldownRecord {
                    address: "10.0.0.18".into(),
                    until: "2026-11-21T00:00:30Z".into(),
                },
                CooldownRecord {
                    address: "10.0.0.19".into(),
                    until: "tomorrow".into(),
                },
                CooldownRecord {
                    address: "ten".into(),
                    until: "2026-11-21T00:00:30Z".into(),
                },
            ],
            releasing: vec!["10.0.0.32/28".into(), "10.0.0.48/33".into()],
            ..Default::default()
        };
        let restored = restore(&status);
        let addr = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(restored.used, [addr("10.0.0.17"), addr("10.0.0.20")]);
        assert_eq!(
            restored.cooldowns,
            [(addr("10.0.0.18"), Timestamp(1_795_219_230_000))]
        );
        assert_eq!(
            restored.releasing,
            ["10.0.0.32/28".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            restore(&NodeAddressPoolStatus::default()),
            Restored::default()
        );
    }

    #[test]
    fn kept_records_are_sorted_deduplicated_and_running() {
        let addr = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let restored = Restored {
            cooldowns: vec![
                (addr("10.0.0.9"), Timestamp(2_000)),
                (addr("10.0.0.3"), Timestamp(1_000)),
                (addr("10.0.0.5"), Timestamp(3_000)),
            ],
            used: vec![addr("10.0.0.7"), addr("10.0.0.2"), addr("10.0.0.7")],
            releasing: vec![
                "10.0.0.32/28".parse().unwrap(),
                "10.0.0.16/28".parse().unwrap(),
            ],
            ahead: vec![addr("10.0.0.12"), addr("10.0.0.11"), addr("10.0.0.12")],
            owner_uid: None,
        };
        let kept = restored.kept(Timestamp(1_000));
        assert_eq!(kept.used, [addr("10.0.0.2"), addr("10.0.0.7")]);
        assert_eq!(kept.ahead, [addr("10.0.0.11"), addr("10.0.0.12")]);
        // The record that ended at `now` is gone; the others in address order.
        assert_eq!(
            kept.cooldowns,
            [
                (addr("10.0.0.5"), Timestamp(3_000)),
                (addr("10.0.0.9"), Timestamp(2_000))
            ]
        );
        assert_eq!(
            kept.releasing,
            [
                "10.0.0.16/28".parse::<Ipv4Net>().unwrap(),
                "10.0.0.32/28".parse().unwrap()
            ]
        );
    }
}
