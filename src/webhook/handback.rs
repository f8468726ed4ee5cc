//! Handing the Windows addresses back to the VPC Resource Controller without breaking winipam's
//! cool-downs (issue 17, item 3). While its Windows IPAM is on (winipam paused), that controller
//! counts every address on an ENI that no pod names as warm and hands it out at once, including
//! the ones winipam freed less than a cool-down ago (seen in every run of `vpcrc_back`:
//! `churn3-1-0 got 10.100.19.203 2.06 s after before-1-0 … was deleted`). When its annotation
//! write is denied, it puts the address into its own 30 s cool-down and retries the pod with
//! another one (v1.8.2, `pkg/handler/warm.go`, `pool.FreeResource`). So the validating webhook
//! denies its writes of an address winipam still keeps from reuse on the pod's node, as the
//! node's NodeAddressPool status records it:
//! - cooling, with its cool-down not over;
//! - used by another pod: that pod lives (a double use), or it went while winipam was paused
//!   and winipam's record of it was not rewritten (releases wait until winipam resumes).
//!
//! Pure: the caller reads the status ([`crate::controller::record::restore`]) and the clock.

use std::net::Ipv4Addr;

use crate::controller::record::{Restored, rfc3339};
use crate::ipam::Timestamp;

/// A write of the address annotation by the VPC Resource Controller.
#[derive(Debug, Clone, Copy)]
pub struct PodWrite<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// `spec.nodeName`: the node whose record is read.
    pub node: &'a str,
    /// The address the pod's annotation names before the write, if any.
    pub current: Option<Ipv4Addr>,
    /// The address the write puts in the annotation.
    pub addr: Ipv4Addr,
}

/// Whether winipam lets the write through: `Err` holds the message the VPC Resource Controller
/// sees. `record` is the node's restored NodeAddressPool status (`None`: winipam keeps no record
/// of that node, nothing of it to protect).
///
/// The status records which addresses are used, not by which pod; the pod being written holds
/// one only if its annotation already names it (winipam annotated it). Any other pod getting an
/// address winipam lists as used is another pod's, or one winipam listed for this pod before
/// annotating it and never wrote: denying the latter costs the VPC Resource Controller one pick.
pub(crate) fn judge(
    record: Option<&Restored>,
    write: &PodWrite<'_>,
    now: Timestamp,
) -> Result<(), String> {
    let Some(record) = record else {
        return Ok(());
    };
    let addr = write.addr;
    if write.current == Some(addr) {
        return Ok(());
    }
    let pod = format!("{}/{} (uid {})", write.namespace, write.name, write.uid);
    let cooling_until = (record.cooldowns.iter())
        .filter(|(a, until)| *a == addr && *until > now)
        .map(|(_, until)| *until)
        .max();
    let why = if let Some(until) = cooling_until {
        format!(
            "winipam freed it less than a cool-down ago and it cools until {}",
            rfc3339(until)
        )
    } else if record.used.contains(&addr) {
        "winipam's record lists it as used by another pod (alive, or deleted while winipam \
         was paused: it cools once winipam's record is rewritten or winipam is uninstalled)"
            .to_owned()
    } else {
        return Ok(());
    };
    Err(format!(
        "address {addr} on node {node} is kept from reuse by winipam: {why}; the VPC Resource \
         Controller will cool it down and pick another address for pod {pod}",
        node = write.node
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const NOW: Timestamp = Timestamp(1_795_219_200_000);

    #[test]
    fn judge_table() {
        let record = Restored {
            cooldowns: vec![
                (addr("10.0.0.5"), Timestamp(NOW.0 + 12_000)),
                // Over: reusable.
                (addr("10.0.0.6"), NOW),
                (addr("10.0.0.7"), Timestamp(NOW.0 - 1)),
            ],
            used: vec![addr("10.0.0.9")],
            releasing: vec!["10.0.0.10/32".parse().unwrap()],
            ahead: vec![addr("10.0.0.12")],
            owner_uid: None,
        };
        // (case, record, current annotation, address written, allowed)
        type Case<'a> = (
            &'a str,
            Option<&'a Restored>,
            Option<&'a str>,
            &'a str,
            bool,
        );
        let cases: [Case; 10] = [
            ("cooling", Some(&record), None, "10.0.0.5", false),
            (
                "cooling, changed from another address",
                Some(&record),
                Some("10.0.0.1"),
                "10.0.0.5",
                false,
            ),
            ("cool-down ends now", Some(&record), None, "10.0.0.6", true),
            ("cool-down over", Some(&record), None, "10.0.0.7", true),
            (
                "used by another pod",
                Some(&record),
                None,
                "10.0.0.9",
                false,
            ),
            (
                "used by this pod (its annotation names it)",
                Some(&record),
                Some("10.0.0.9"),
                "10.0.0.9",
                true,
            ),
            ("not in the record", Some(&record), None, "10.0.0.8", true),
            // Being released: winipam gives it to EC2, not to a pod; not its to keep.
            ("releasing", Some(&record), None, "10.0.0.10", true),
            // Listed ahead: free and not cooling (winipam lists no cooling address ahead), and
            // winipam hands nothing out while paused.
            ("listed ahead", Some(&record), None, "10.0.0.12", true),
            ("node without a record", None, None, "10.0.0.5", true),
        ];
        for (case, record, current, written, allowed) in cases {
            let write = PodWrite {
                namespace: "default",
                name: "p",
                uid: "u-1",
                node: "n0",
                current: current.map(addr),
                addr: addr(written),
            };
            assert_eq!(judge(record, &write, NOW).is_ok(), allowed, "{case}");
        }
    }

    #[test]
    fn the_message_names_the_address_the_node_the_end_and_what_happens_next() {
        let record = Restored {
            cooldowns: vec![
                (addr("10.0.0.5"), Timestamp(NOW.0 + 12_000)),
                (addr("10.0.0.5"), Timestamp(NOW.0 + 2_000)),
            ],
            used: vec![addr("10.0.0.9")],
            releasing: vec![],
            ahead: vec![],
            owner_uid: None,
        };
        let write = |a: &str| PodWrite {
            namespace: "ns",
            name: "web-1",
            uid: "u-7",
            node: "ip-10-0-0-1",
            current: None,
            addr: addr(a),
        };
        let cooling = judge(Some(&record), &write("10.0.0.5"), NOW).unwrap_err();
        assert_eq!(
            cooling,
            "address 10.0.0.5 on node ip-10-0-0-1 is kept from reuse by winipam: winipam freed \
             it less than a cool-down ago and it cools until 2026-11-21T00:00:12Z; the VPC \
             Resource Controller will cool it down and pick another address for pod ns/web-1 \
             (uid u-7)"
        );
        let used = judge(Some(&record), &write("10.0.0.9"), NOW).unwrap_err();
        assert!(
            used.starts_with("address 10.0.0.9 on node ip-10-0-0-1 is kept from reuse")
                && used.contains("used by another pod")
                && used.contains("pick another address"),
            "{used}"
        );
    }
}
