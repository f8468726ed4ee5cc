//! How many pod addresses a node can hold (SPEC section 4).
//!
//! Limits come from EC2's `DescribeInstanceTypes` at runtime when available, else from the table
//! embedded at build time (`data/instance-limits.csv`), so a new instance type works the day EC2
//! knows it, and an offline `winipam capacity` still answers for the 1,164 known types.

use std::collections::HashMap;
use std::sync::LazyLock;

use thiserror::Error;

use super::types::{InstanceTypeLimits, Mode};

/// Addresses in one delegated /28 prefix.
pub const ADDRESSES_PER_PREFIX: u32 = 16;

const EMBEDDED_CSV: &str = include_str!("../../../data/instance-limits.csv");
const EXPECTED_HEADER: &str =
    "instance_type,max_interfaces,ipv4_per_interface,hypervisor,bare_metal,network_cards";

/// One row of the instance table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    pub instance_type: String,
    pub max_interfaces: u32,
    pub ipv4_per_interface: u32,
    pub hypervisor: String,
    pub bare_metal: bool,
    pub network_cards: u32,
}

impl TableRow {
    /// Prefix delegation needs the Nitro system: Nitro hypervisor, or bare metal (which EC2
    /// reports with hypervisor `unknown`).
    pub fn nitro(&self) -> bool {
        self.hypervisor == "nitro" || self.bare_metal
    }

    pub fn limits(&self) -> InstanceTypeLimits {
        InstanceTypeLimits {
            instance_type: self.instance_type.clone(),
            ipv4_per_interface: self.ipv4_per_interface,
            nitro: self.nitro(),
        }
    }
}

/// A line of the instance table that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("instance table line {line}: {reason}")]
pub struct TableError {
    pub line: usize,
    pub reason: String,
}

/// Parses the instance table CSV (header line first). Every bad line is an error, so a broken
/// table fails the unit tests instead of silently losing types.
pub fn parse_table(csv: &str) -> Result<Vec<TableRow>, TableError> {
    let mut lines = csv.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == EXPECTED_HEADER => {}
        Some((_, other)) => {
            return Err(TableError {
                line: 1,
                reason: format!("header is {other:?}, expected {EXPECTED_HEADER:?}"),
            });
        }
        None => {
            return Err(TableError {
                line: 1,
                reason: "empty table".into(),
            });
        }
    }
    let mut rows = Vec::new();
    for (index, raw) in lines {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        rows.push(parse_row(raw).map_err(|reason| TableError { line, reason })?);
    }
    Ok(rows)
}

fn parse_row(raw: &str) -> Result<TableRow, String> {
    let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
    let [name, interfaces, ipv4, hypervisor, bare_metal, cards] = fields[..] else {
        return Err(format!("expected 6 fields, found {}", fields.len()));
    };
    if name.is_empty() {
        return Err("empty instance type".into());
    }
    let number = |what: &str, value: &str| {
        value
            .parse::<u32>()
            .map_err(|_| format!("{what} {value:?} is not a non-negative integer"))
    };
    let bare_metal = match bare_metal {
        "true" => true,
        "false" => false,
        other => return Err(format!("bare_metal {other:?} is not true/false")),
    };
    Ok(TableRow {
        instance_type: name.to_string(),
        max_interfaces: number("max_interfaces", interfaces)?,
        ipv4_per_interface: number("ipv4_per_interface", ipv4)?,
        hypervisor: hypervisor.to_string(),
        bare_metal,
        network_cards: number("network_cards", cards)?,
    })
}

struct Table {
    rows: Vec<TableRow>,
    by_name: HashMap<String, usize>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    // The embedded file is part of this crate and checked by a unit test: a parse failure here is
    // a build defect, not a runtime condition.
    let rows = parse_table(EMBEDDED_CSV).expect("embedded data/instance-limits.csv is valid");
    let by_name = rows
        .iter()
        .enumerate()
        .map(|(i, row)| (row.instance_type.clone(), i))
        .collect();
    Table { rows, by_name }
});

/// All rows of the embedded table, in file order (sorted by type name).
pub fn table() -> &'static [TableRow] {
    &TABLE.rows
}

/// Limits of `instance_type` from the embedded table.
pub fn lookup(instance_type: &str) -> Option<InstanceTypeLimits> {
    TABLE
        .by_name
        .get(instance_type)
        .map(|&i| TABLE.rows[i].limits())
}

/// Where a node's limits came from (reported in logs and status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsSource {
    /// `DescribeInstanceTypes` at runtime.
    Ec2,
    /// The table embedded at build time.
    EmbeddedTable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLimits {
    pub limits: InstanceTypeLimits,
    pub source: LimitsSource,
}

/// EC2's runtime answer wins (it knows types newer than this build); the embedded table is the
/// fallback; `None` means the node is Unsupported.
pub fn resolve(
    ec2_answer: Option<InstanceTypeLimits>,
    instance_type: &str,
) -> Option<ResolvedLimits> {
    match ec2_answer {
        Some(limits) => Some(ResolvedLimits {
            limits,
            source: LimitsSource::Ec2,
        }),
        None => lookup(instance_type).map(|limits| ResolvedLimits {
            limits,
            source: LimitsSource::EmbeddedTable,
        }),
    }
}

/// The mode a node actually runs in: prefix delegation only on Nitro.
pub fn effective_mode(limits: &InstanceTypeLimits, requested: Mode) -> Mode {
    match requested {
        Mode::Prefix if limits.nitro => Mode::Prefix,
        _ => Mode::Secondary,
    }
}

/// A node's pod capacity in steady state (no mode switch under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCapacity {
    /// Pod addresses the node can hold.
    pub pods: u32,
    /// The mode the node runs in.
    pub mode: Mode,
    /// The mode the cluster configuration asked for.
    pub requested: Mode,
}

impl PodCapacity {
    /// True when prefix delegation was asked for but the node is not Nitro: the controller
    /// writes a Warning Event.
    pub fn downgraded(&self) -> bool {
        self.mode != self.requested
    }
}

/// ENI slots for pod addresses: the primary address takes one.
pub fn pod_slots(limits: &InstanceTypeLimits) -> u32 {
    limits.ipv4_per_interface.saturating_sub(1)
}

/// `ipv4_per_interface - 1` secondary IPs, or that many /28 prefixes of 16 addresses.
pub fn pod_capacity(limits: &InstanceTypeLimits, requested: Mode) -> PodCapacity {
    let mode = effective_mode(limits, requested);
    PodCapacity {
        pods: switch_capacity(pod_slots(limits), mode, 0),
        mode,
        requested,
    }
}

/// Capacity while the other mode's addresses drain (SPEC 4): every secondary IP and every /28
/// takes one ENI slot, so slots held by the other mode's used or cooling addresses are not
/// available to the current mode. `other_mode_slots_held` counts secondary IPs (in prefix mode)
/// or /28s (in secondary mode) that still hold a used or cooling address.
pub fn switch_capacity(slots: u32, mode: Mode, other_mode_slots_held: u32) -> u32 {
    let free_slots = slots.saturating_sub(other_mode_slots_held);
    match mode {
        Mode::Secondary => free_slots,
        Mode::Prefix => free_slots.saturating_mul(ADDRESSES_PER_PREFIX),
    }
}

/// Up to `max` known type names closest to `name` (edit distance), for "did you mean".
pub fn suggest(name: &str, max: usize) -> Vec<String> {
    let wanted = name.trim().to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = TABLE
        .rows
        .iter()
        .map(|row| {
            (
                edit_distance(&wanted, &row.instance_type),
                row.instance_type.as_str(),
            )
        })
        .collect();
    scored.sort();
    // A suggestion that needs more edits than half the name is noise.
    let limit = (wanted.len() / 2).max(2);
    scored
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(max)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Levenshtein distance over bytes (instance type names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_has_every_type() {
        let rows = parse_table(EMBEDDED_CSV).expect("valid");
        assert_eq!(rows.len(), 1164);
        assert_eq!(table().len(), 1164);
    }

    #[test]
    fn spec_examples() {
        for (name, secondary, prefix) in [
            ("m5.large", 9, 144),
            ("c5.xlarge", 14, 224),
            ("t3.micro", 1, 16),
        ] {
            let limits = lookup(name).expect(name);
            assert_eq!(
                pod_capacity(&limits, Mode::Secondary).pods,
                secondary,
                "{name}"
            );
            let p = pod_capacity(&limits, Mode::Prefix);
            assert_eq!(
                (p.pods, p.mode, p.downgraded()),
                (prefix, Mode::Prefix, false)
            );
        }
    }

    #[test]
    fn non_nitro_stays_secondary() {
        let m4 = lookup("m4.large").expect("m4.large");
        assert!(!m4.nitro);
        let p = pod_capacity(&m4, Mode::Prefix);
        assert_eq!((p.pods, p.mode, p.downgraded()), (9, Mode::Secondary, true));
    }

    #[test]
    fn bare_metal_is_nitro_whatever_the_hypervisor() {
        let metal = table()
            .iter()
            .find(|r| r.bare_metal && r.hypervisor != "nitro")
            .expect("a bare-metal row with hypervisor other than nitro");
        assert!(lookup(&metal.instance_type).expect("known").nitro);
    }

    #[test]
    fn ec2_answer_wins_over_table() {
        let ec2 = InstanceTypeLimits {
            instance_type: "m5.large".into(),
            ipv4_per_interface: 12,
            nitro: true,
        };
        let r = resolve(Some(ec2.clone()), "m5.large").expect("resolved");
        assert_eq!((r.limits, r.source), (ec2, LimitsSource::Ec2));
        let r = resolve(None, "m5.large").expect("resolved");
        assert_eq!(
            (r.limits.ipv4_per_interface, r.source),
            (10, LimitsSource::EmbeddedTable)
        );
        assert_eq!(resolve(None, "m99.huge"), None);
    }

    #[test]
    fn switch_capacity_subtracts_held_slots() {
        assert_eq!(switch_capacity(9, Mode::Secondary, 0), 9);
        assert_eq!(switch_capacity(9, Mode::Secondary, 2), 7);
        assert_eq!(switch_capacity(9, Mode::Prefix, 3), 96);
        assert_eq!(switch_capacity(9, Mode::Prefix, 12), 0);
        assert_eq!(switch_capacity(0, Mode::Prefix, 0), 0);
    }

    #[test]
    fn degenerate_limits_do_not_underflow() {
        let zero = InstanceTypeLimits {
            instance_type: "x".into(),
            ipv4_per_interface: 0,
            nitro: true,
        };
        assert_eq!(pod_capacity(&zero, Mode::Prefix).pods, 0);
    }

    #[test]
    fn parser_rejects_bad_lines() {
        let header = EXPECTED_HEADER;
        let cases = [
            (
                format!("{header}\nm5.large,3,ten,nitro,false,1\n"),
                2,
                "ipv4",
            ),
            (
                format!("{header}\nm5.large,3,10,nitro,maybe,1\n"),
                2,
                "bare_metal",
            ),
            (format!("{header}\nm5.large,3,10\n"), 2, "6 fields"),
            (
                format!("{header}\na,1,2,nitro,false,1\n,1,2,xen,false,1\n"),
                3,
                "empty",
            ),
            (
                format!("{header}\nm5.large,3,-1,nitro,false,1\n"),
                2,
                "ipv4",
            ),
            ("type,ips\nm5.large,10\n".to_string(), 1, "header"),
            (String::new(), 1, "empty"),
        ];
        for (csv, line, needle) in cases {
            let err = parse_table(&csv).expect_err(&csv);
            assert_eq!(err.line, line, "{csv}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        let ok = parse_table(&format!("{header}\n\nm5.large,3,10,nitro,false,1\n")).expect("ok");
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn suggestions_are_close_names() {
        let s = suggest("m5.larg", 3);
        assert_eq!(s.first().map(String::as_str), Some("m5.large"));
        assert!(suggest("c5.xlarg", 3).contains(&"c5.xlarge".to_string()));
        assert!(suggest("M5.LARGE", 3).contains(&"m5.large".to_string()));
        assert!(suggest("zzzzzzzzzzzzzzzzzzzzzzzz", 3).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
