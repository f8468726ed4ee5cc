//! The `winipam` ConfigMap (SPEC 3.1): parsing, validation and the pool targets it implies.
//!
//! Key names are the VPC Resource Controller's, so admins carry their values over. A bad value
//! rejects the whole map (the controller keeps the last good one): it is never read as 0.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use thiserror::Error;

use super::capacity::ADDRESSES_PER_PREFIX;
use super::types::Mode;

pub const KEY_PREFIX_DELEGATION: &str = "enable-windows-prefix-delegation";
pub const KEY_WARM_IP: &str = "windows-warm-ip-target";
pub const KEY_MINIMUM_IP: &str = "windows-minimum-ip-target";
pub const KEY_WARM_PREFIX: &str = "windows-warm-prefix-target";
pub const KEY_COOLDOWN: &str = "ip-cooldown-seconds";
pub const KEY_FALLBACK: &str = "prefix-fallback-to-secondary";
pub const KEY_RELEASE_TERMINAL: &str = "release-terminal-pods";

/// Every key winipam reads.
pub const KNOWN_KEYS: [&str; 7] = [
    KEY_PREFIX_DELEGATION,
    KEY_WARM_IP,
    KEY_MINIMUM_IP,
    KEY_WARM_PREFIX,
    KEY_COOLDOWN,
    KEY_FALLBACK,
    KEY_RELEASE_TERMINAL,
];

const SECONDARY_WARM_DEFAULT: u32 = 3;
const SECONDARY_MINIMUM_DEFAULT: u32 = 3;
const PREFIX_WARM_IP_DEFAULT: u32 = 1;
const PREFIX_MINIMUM_IP_DEFAULT: u32 = 3;
const COOLDOWN_DEFAULT_SECONDS: u32 = 30;

/// A validated configuration. Targets keep whether they were set (`None` = absent), because the
/// rules of SPEC 3.1 depend on it; [`Config::targets`] turns them into numbers for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub prefix_delegation: bool,
    pub warm_ip_target: Option<u32>,
    pub minimum_ip_target: Option<u32>,
    pub warm_prefix_target: Option<u32>,
    pub cooldown: Duration,
    pub prefix_fallback_to_secondary: bool,
    pub release_terminal_pods: bool,
}

impl Default for Config {
    /// All defaults: also what a missing ConfigMap means.
    fn default() -> Self {
        Config {
            prefix_delegation: false,
            warm_ip_target: None,
            minimum_ip_target: None,
            warm_prefix_target: None,
            cooldown: Duration::from_secs(COOLDOWN_DEFAULT_SECONDS.into()),
            prefix_fallback_to_secondary: false,
            release_terminal_pods: true,
        }
    }
}

/// A parsed ConfigMap and the keys winipam does not know (probably typos: the controller logs
/// them, they are not errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConfig {
    pub config: Config,
    pub unknown_keys: Vec<String>,
}

/// What drives the pool of one node, capped by the node's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// Free addresses to keep ready, and a floor on used + free (+ cooling) addresses.
    Ips { warm: u32, minimum: u32 },
    /// Prefix mode driven by `windows-warm-prefix-target`: whole free /28s to keep.
    Prefixes { warm_prefixes: u32 },
}

/// One rejected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub value: String,
    pub expected: Expected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    NonNegativeInteger,
    Boolean,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are user input: quote and bound them so an Event stays readable.
        let mut value: String = self.value.chars().take(64).collect();
        if value.len() < self.value.len() {
            value.push('…');
        }
        match self.expected {
            Expected::NonNegativeInteger => write!(
                f,
                "{}: {:?} is not a non-negative integer; set a whole number such as \"3\"",
                self.key, value
            ),
            Expected::Boolean => write!(
                f,
                "{}: {:?} is not a boolean; set \"true\" or \"false\"",
                self.key, value
            ),
        }
    }
}

/// The ConfigMap was rejected; every bad key is listed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{n} invalid value{}: ", if n == 1 { "" } else { "s" })?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str(". ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses ConfigMap `data`. Values are trimmed. Integers: decimal, non-negative, fit in u32
    /// (`"+3"` is accepted like Go's `strconv.Atoi`; `"-1"`, `"1.5"`, `""` are not). Booleans:
    /// `true`/`false` in the three spellings Go's `strconv.ParseBool` accepts (`true`, `True`,
    /// `TRUE`), so values written for the VPC Resource Controller keep working; its other forms
    /// (`1`, `t`, `0`, `f`) are rejected because SPEC 3.1 admits only true/false.
    pub fn parse(data: &BTreeMap<String, String>) -> Result<ParsedConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut int = |key: &str| -> Option<u32> {
            let raw = data.get(key)?;
            match parse_u32(raw) {
                Some(v) => Some(v),
                None => {
                    problems.push(problem(key, raw, Expected::NonNegativeInteger));
                    None
                }
            }
        };
        let warm_ip_target = int(KEY_WARM_IP);
        let minimum_ip_target = int(KEY_MINIMUM_IP);
        let warm_prefix_target = int(KEY_WARM_PREFIX);
        let cooldown_seconds = int(KEY_COOLDOWN);
        let mut boolean = |key: &str, default: bool| -> bool {
            let Some(raw) = data.get(key) else {
                return default;
            };
            parse_bool(raw).unwrap_or_else(|| {
                problems.push(problem(key, raw, Expected::Boolean));
                default
            })
        };
        let defaults = Config::default();
        let prefix_delegation = boolean(KEY_PREFIX_DELEGATION, defaults.prefix_delegation);
        let prefix_fallback_to_secondary =
            boolean(KEY_FALLBACK, defaults.prefix_fallback_to_secondary);
        let release_terminal_pods = boolean(KEY_RELEASE_TERMINAL, defaults.release_terminal_pods);
        if !problems.is_empty() {
            // Report in key order, whatever order the checks ran in.
            problems.sort_by(|a, b| a.key.cmp(&b.key));
            return Err(ConfigError { problems });
        }
        let unknown_keys = data
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        Ok(ParsedConfig {
            config: Config {
                prefix_delegation,
                warm_ip_target,
                minimum_ip_target,
                warm_prefix_target,
                cooldown: cooldown_seconds
                    .map(|s| Duration::from_secs(s.into()))
                    .unwrap_or(defaults.cooldown),
                prefix_fallback_to_secondary,
                release_terminal_pods,
            },
            unknown_keys,
        })
    }

    /// The mode the cluster asks for; a non-Nitro node still runs secondary
    /// ([`super::capacity::effective_mode`]).
    pub fn requested_mode(&self) -> Mode {
        if self.prefix_delegation {
            Mode::Prefix
        } else {
            Mode::Secondary
        }
    }

    /// The targets that apply to a node: [`Config::targets`], or none at all while the node
    /// is on its way out (cordoned, draining, being deleted: `leaving`). A leaving node keeps
    /// only what its pods use and what pods bound to it still wait for (the waiting term of the
    /// plan is not a target): no warm addresses, no minimum, no warm /28. Cooling addresses
    /// still finish their cool-down first; the plan never releases them early. Issue 16: a
    /// scale-down returns subnet space when the node is cordoned, not when the instance is gone.
    pub fn node_targets(&self, mode: Mode, capacity: u32, leaving: bool) -> Targets {
        match self.targets(mode, capacity) {
            targets if !leaving => targets,
            Targets::Ips { .. } => Targets::Ips {
                warm: 0,
                minimum: 0,
            },
            Targets::Prefixes { .. } => Targets::Prefixes { warm_prefixes: 0 },
        }
    }

    /// The targets for a node running in `mode` with `capacity` pod addresses (SPEC 3.1):
    /// - secondary: warm (default 3, and 0 means 1) and minimum (default 3); setting only one
    ///   keeps the other's default; warm-prefix is ignored.
    /// - prefix: if warm-ip or minimum-ip is set above 0, they drive (absent ones take the prefix
    ///   defaults 1 and 3, and warm-prefix is ignored); else if warm-prefix is set above 0 it
    ///   drives alone; else warm-ip/minimum-ip with their values or defaults (all set to 0 means
    ///   addresses on demand only: the waiting-pods term still grows the pool).
    ///
    /// Every target is capped by the capacity (warm-prefix by the /28s that fit).
    pub fn targets(&self, mode: Mode, capacity: u32) -> Targets {
        let set = |v: Option<u32>| v.filter(|&n| n > 0);
        let (warm, minimum) = match mode {
            Mode::Secondary => (
                self.warm_ip_target.unwrap_or(SECONDARY_WARM_DEFAULT).max(1),
                self.minimum_ip_target.unwrap_or(SECONDARY_MINIMUM_DEFAULT),
            ),
            Mode::Prefix => {
                let ip_driven =
                    set(self.warm_ip_target).is_some() || set(self.minimum_ip_target).is_some();
                if let (false, Some(warm_prefixes)) = (ip_driven, set(self.warm_prefix_target)) {
                    return Targets::Prefixes {
                        warm_prefixes: warm_prefixes.min(capacity / ADDRESSES_PER_PREFIX),
                    };
                }
                (
                    self.warm_ip_target.unwrap_or(PREFIX_WARM_IP_DEFAULT),
                    self.minimum_ip_target.unwrap_or(PREFIX_MINIMUM_IP_DEFAULT),
                )
            }
        };
        Targets::Ips {
            warm: warm.min(capacity),
            minimum: minimum.min(capacity),
        }
    }
}

fn problem(key: &str, value: &str, expected: Expected) -> ConfigProblem {
    ConfigProblem {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    }
}

fn parse_u32(raw: &str) -> Option<u32> {
    raw.trim().parse::<u32>().ok()
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
