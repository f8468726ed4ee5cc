//! The status a worker writes, made from its typed record ([`Published`]), reusing the texts of
//! the last status written for what did not change.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff;

use super::{Published, Stage};
use crate::crd::{AddressCounts, CooldownRecord, Ec2ErrorRecord, NodeAddressPoolStatus};
use crate::ec2::Ec2Error;
use crate::ipam::{Mode, Timestamp};

/// RFC 3339 form of a timestamp, as Kubernetes writes times.
pub(crate) fn rfc3339(ts: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(ts.as_millis() as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The status saying `new`. `previous` is the last status written and its record: the texts
/// of addresses, /28s, cool-down records and conditions that did not change are moved from it
/// rather than formatted again (formatting every address in use was most of a write's cost).
///
/// After a failed write, [`restore_conditions`] gives the conditions back; the texts are made
/// again next time.
pub(crate) fn render(
    new: &Published,
    previous: Option<(&Published, &mut NodeAddressPoolStatus)>,
    last_error: Option<&(Ec2Error, Timestamp)>,
    now: Timestamp,
) -> NodeAddressPoolStatus {
    let mut none = NodeAddressPoolStatus::default();
    let (old, last) = match previous {
        Some((old, last)) => (Some(old), last),
        None => (None, &mut none),
    };
    let mut status = NodeAddressPoolStatus::default();
    if let Some(facts) = &new.pool {
        let old_facts = old.and_then(|o| o.pool.as_ref());
        let (old_prefixes, old_used, old_cooldowns) = match old_facts {
            Some(f) => (&f.prefixes[..], &f.used[..], &f.cooldowns[..]),
            None => (&[][..], &[][..], &[][..]),
        };
        status.instance_id = Some(facts.instance_id.clone());
        status.instance_type = Some(facts.instance_type.clone());
        status.eni_id = Some(facts.eni_id.clone());
        status.subnet_id = Some(facts.subnet_id.clone());
        status.subnet_cidr = Some(net_text(facts.subnet_cidr));
        status.mode = Some(facts.mode.to_string());
        status.capacity = Some(facts.capacity);
        status.counts = AddressCounts {
            used: facts.counts.used,
            free: facts.counts.free,
            cooling: facts.counts.cooling,
            pending: facts.counts.pending,
        };
        status.prefixes = reuse(
            old_prefixes,
            std::mem::take(&mut last.prefixes),
            &facts.prefixes,
            net_text,
        );
        status.used_addresses = reuse(
            old_used,
            std::mem::take(&mut last.used_addresses),
            &facts.used,
            ip_text,
        );
        status.cooldowns = reuse(
            old_cooldowns,
            std::mem::take(&mut last.cooldowns),
            &facts.cooldowns,
            |(addr, until)| CooldownRecord {
                address: ip_text(addr),
                until: rfc3339(until),
            },
        );
        status.releasing = facts.releasing.iter().map(|n| net_text(*n)).collect();
        status.ahead_addresses = facts.ahead.iter().map(|a| ip_text(*a)).collect();
    } else if let Some(kept) = &new.kept {
        status.used_addresses = kept.used.iter().map(|a| ip_text(*a)).collect();
        status.cooldowns = kept
            .cooldowns
            .iter()
            .map(|&(addr, until)| CooldownRecord {
                address: ip_text(addr),
                until: rfc3339(until),
            })
            .collect();
        status.releasing = kept.releasing.iter().map(|n| net_text(*n)).collect();
        status.ahead_addresses = kept.ahead.iter().map(|a| ip_text(*a)).collect();
    }
    status.conditions = match old {
        Some(old) if condition_inputs(old) == condition_inputs(new) => {
            std::mem::take(&mut last.conditions)
        }
        _ => conditions(new, &last.conditions, now),
    };
    status.last_ec2_error = last_error.map(|(e, at)| Ec2ErrorRecord {
        operation: e.class.label().to_string(),
        code: e
            .code
            .clone()
            .unwrap_or_else(|| e.class.label().to_string()),
        message: e.message.clone(),
        time: rfc3339(*at),
    });
    status
}

/// After a failed write of `attempt` (rendered for `new`): the conditions it took from the
/// last written status go back there.
pub(crate) fn restore_conditions(
    written: (&Published, &mut NodeAddressPoolStatus),
    new: &Published,
    attempt: NodeAddressPoolStatus,
) {
    let (old, last) = written;
    if condition_inputs(old) == condition_inputs(new) {
        last.conditions = attempt.conditions;
    }
}

/// What the conditions are made of.
fn condition_inputs(p: &Published) -> (Stage, bool, bool, Option<(Mode, u32, &str)>) {
    let pool = p
        .pool
        .as_ref()
        .map(|f| (f.mode, f.capacity, f.subnet_id.as_str()));
    (p.stage, p.blocked, p.subnet_held, pool)
}

/// The texts of `new` (sorted), moving the text of every item `old` (sorted, `old_texts[i]` the
/// text of `old[i]`) also has, and making the others.
fn reuse<T: Ord + Copy, S>(
    old: &[T],
    old_texts: Vec<S>,
    new: &[T],
    make: impl Fn(T) -> S,
) -> Vec<S> {
    if old.len() != old_texts.len() {
        return new.iter().map(|&item| make(item)).collect();
    }
    let mut olds = old.iter().copied().zip(old_texts).peekable();
    new.iter()
        .map(|&item| {
            while olds.next_if(|(o, _)| *o < item).is_some() {}
            match olds.next_if(|(o, _)| *o == item) {
                Some((_, text)) => text,
                None => make(item),
            }
        })
        .collect()
}

/// The conditions for `p`; one whose status did not change keeps its transition time from
/// `previous`.
fn conditions(p: &Published, previous: &[Condition], now: Timestamp) -> Vec<Condition> {
    let mut conditions = Vec::new();
    let (blocked, subnet_held) = (p.blocked, p.subnet_held);
    match &p.pool {
        Some(facts) => {
            conditions.push(condition(
                "Ready",
                !blocked && !subnet_held,
                if blocked {
                    "Blocked"
                } else if subnet_held {
                    "SubnetExhausted"
                } else {
                    "PoolReady"
                },
                format!("{} mode, capacity {}", facts.mode, facts.capacity),
                now,
            ));
            conditions.push(condition(
                "SubnetExhausted",
                subnet_held,
                if subnet_held {
                    "InsufficientFreeAddressesInSubnet"
                } else {
                    "AddressesAvailable"
                },
                format!("subnet {}", facts.subnet_id),
                now,
            ));
            conditions.push(condition(
                "Unsupported",
                false,
                "Supported",
                String::new(),
                now,
            ));
        }
        None => {
            let parked = p.stage == Stage::Parked;
            conditions.push(condition(
                "Ready",
                false,
                if parked {
                    "Unsupported"
                } else {
                    "Initializing"
                },
                "see the node's Events".to_string(),
                now,
            ));
            conditions.push(condition(
                "Unsupported",
                parked,
                if parked {
                    "NotManageable"
                } else {
                    "Initializing"
                },
                "see the node's Events".to_string(),
                now,
            ));
        }
    }
    conditions.push(condition(
        "Blocked",
        blocked,
        if blocked {
            "ForeignIPAMEnabled"
        } else {
            "NotBlocked"
        },
        if blocked {
            "kube-system/amazon-vpc-cni has enable-windows-ipam: \"true\"".to_string()
        } else {
            String::new()
        },
        now,
    ));
    for c in &mut conditions {
        if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conditions
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, now: Timestamp) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: Time(
            jiff::Timestamp::from_millisecond(now.as_millis() as i64).unwrap_or_default(),
        ),
        observed_generation: None,
    }
}

/// `a.b.c.d`, several times cheaper than `Ipv4Addr`'s `Display` (which pads through
/// `core::fmt`): every address in use is formatted on each status write.
pub(crate) fn ip_text(addr: Ipv4Addr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, addr);
    s
}

/// `a.b.c.d/len`.
pub(crate) fn net_text(net: Ipv4Net) -> String {
    let mut s = String::with_capacity(18);
    push_ip(&mut s, net.addr());
    s.push('/');
    push_u8(&mut s, net.prefix_len());
    s
}

fn push_ip(s: &mut String, addr: Ipv4Addr) {
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_u8(s, octet);
    }
}

fn push_u8(s: &mut String, v: u8) {
    if v >= 100 {
        s.push(char::from(b'0' + v / 100));
    }
    if v >= 10 {
        s.push(char::from(b'0' + v / 10 % 10));
    }
    s.push(char::from(b'0' + v % 10));
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ready;
    use super::*;

    #[test]
    fn text_matches_display() {
        for v in 0..=255u8 {
            let addr = Ipv4Addr::new(v, 255 - v, v / 3, v.wrapping_mul(7));
            assert_eq!(ip_text(addr), addr.to_string());
        }
        for (a, len) in [("10.64.0.16", 28), ("0.0.0.0", 0), ("192.168.255.240", 32)] {
            let net = Ipv4Net::new(a.parse().unwrap(), len).unwrap();
            assert_eq!(net_text(net), net.to_string());
        }
    }

    #[test]
    fn render_reuses_texts_and_says_the_same_as_from_scratch() {
        let t0 = Timestamp(1_795_219_200_000);
        let t1 = Timestamp(1_795_219_260_000);
        let a = ready(
            &["10.0.0.17", "10.0.0.20"],
            &[("10.0.0.18", 1_795_219_230_000)],
            false,
        );
        let b = ready(
            &["10.0.0.16", "10.0.0.20", "10.0.0.21"],
            &[
                ("10.0.0.17", 1_795_219_290_000),
                ("10.0.0.18", 1_795_219_230_000),
            ],
            false,
        );
        let mut written = render(&a, None, None, t0);
        assert_eq!(written.used_addresses, ["10.0.0.17", "10.0.0.20"]);
        assert_eq!(written.cooldowns[0].until, "2026-11-21T00:00:30Z");
        let incremental = render(&b, Some((&a, &mut written)), None, t1);
        // Same conditions (moved over, transition times of t0); the rest as from scratch.
        let mut scratch = render(&b, None, None, t0);
        assert_eq!(incremental, scratch);
        assert_eq!(
            incremental.used_addresses,
            ["10.0.0.16", "10.0.0.20", "10.0.0.21"]
        );
        // Blocked: that condition's transition time moves, the others keep theirs.
        let c = ready(&["10.0.0.16"], &[], true);
        let blocked = render(&c, Some((&b, &mut scratch)), None, t1);
        let time = |s: &NodeAddressPoolStatus, type_: &str| {
            let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
            (c.status.clone(), c.last_transition_time.0.as_millisecond())
        };
        assert_eq!(
            time(&blocked, "Blocked"),
            ("True".into(), 1_795_219_260_000)
        );
        assert_eq!(time(&blocked, "Ready"), ("False".into(), 1_795_219_260_000));
        assert_eq!(
            time(&blocked, "Unsupported"),
            ("False".into(), 1_795_219_200_000)
        );
        assert_eq!(blocked.used_addresses, ["10.0.0.16"]);
        assert!(blocked.cooldowns.is_empty());
    }

    #[test]
    fn a_failed_write_gives_the_conditions_back() {
        let t0 = Timestamp(1_795_219_200_000);
        let a = ready(&["10.0.0.17"], &[], false);
        let b = ready(&["10.0.0.17", "10.0.0.18"], &[], false);
        let mut written = render(&a, None, None, t0);
        let conditions = written.conditions.clone();
        let attempt = render(&b, Some((&a, &mut written)), None, Timestamp(t0.0 + 5000));
        assert!(written.conditions.is_empty(), "moved into the attempt");
        restore_conditions((&a, &mut written), &b, attempt);
        assert_eq!(written.conditions, conditions);
        // The texts were moved out: the next render makes them again.
        let again = render(&b, Some((&a, &mut written)), None, Timestamp(t0.0 + 9000));
        assert_eq!(again.used_addresses, ["10.0.0.17", "10.0.0.18"]);
        assert_eq!(again.conditions, conditions);
    }
}
