//! The VPC Resource Controller's warm pool of one node, as `pkg/pool/pool.go` behaves: used,
//! warm (by group: a /28 in prefix mode, the address itself in secondary mode) and cooling
//! resources, pending creates and deletes, and the reconcile that sizes the next job. Go maps
//! iterate at random; here groups go in address order.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::time::Instant;

const PER_PREFIX: u32 = 16;

/// Why a pod got no address (the pool's errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PoolError {
    AlreadyAssigned,
    AtCapacity,
    /// `ErrResourceAreBeingCooledDown`: requeue 20 s.
    Cooling,
    /// `ErrResourcesAreBeingCreated`: requeue 600 ms.
    BeingCreated,
    /// `ErrWarmPoolEmpty`: requeue 600 ms (and reconcile).
    Empty,
    /// `ErrInsufficientCidrBlocks`: requeue 2 min.
    NoCidrBlocks,
}

/// A job the pool asks the provider to run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum PoolJob {
    /// Assign this many addresses (secondary) or /28s (prefix).
    Create(u32),
    /// Unassign these groups.
    Delete(Vec<Ipv4Net>),
    /// Describe the ENI and re-sync (after a failed job).
    ReSync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Res {
    group: Ipv4Net,
    ip: Ipv4Addr,
}

/// The targets of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PoolTargets {
    /// Secondary: `DesiredSize`; prefix: `WarmIPTarget`.
    pub warm: u32,
    /// Prefix: `MinIPTarget`.
    pub minimum: u32,
    pub max_deviation: u32,
}

pub(super) struct WarmPool {
    prefix: bool,
    capacity: u32,
    targets: PoolTargets,
    cooldown: Duration,
    used: BTreeMap<String, Res>,
    warm: BTreeMap<Ipv4Net, Vec<Ipv4Addr>>,
    cooling: VecDeque<(Res, Instant)>,
    pending_create: u32,
    pending_delete: u32,
    resync_required: bool,
    /// The last prefix Assign failed with InsufficientCidrBlocks.
    no_cidr_blocks: bool,
}

fn ips_of(prefix: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let base = u32::from(prefix.network());
    (0..PER_PREFIX).map(move |i| Ipv4Addr::from(base + i))
}

impl WarmPool {
    /// A pool built at node init from the ENI's groups and the pods' annotations (uid, ip).
    pub fn new(
        prefix: bool,
        capacity: u32,
        targets: PoolTargets,
        cooldown: Duration,
        groups: &[Ipv4Net],
        used: &[(String, Ipv4Addr)],
    ) -> WarmPool {
        let mut pool = WarmPool {
            prefix,
            capacity,
            targets,
            cooldown,
            used: BTreeMap::new(),
            warm: BTreeMap::new(),
            cooling: VecDeque::new(),
            pending_create: 0,
            pending_delete: 0,
            resync_required: false,
            no_cidr_blocks: false,
        };
        let taken: BTreeMap<Ipv4Addr, &String> = used.iter().map(|(u, ip)| (*ip, u)).collect();
        for &group in groups {
            let ips: Vec<Ipv4Addr> = if prefix {
                ips_of(group).collect()
            } else {
                vec![group.addr()]
            };
            for ip in ips {
                match taken.get(&ip) {
                    Some(uid) => {
                        pool.used.insert((*uid).clone(), Res { group, ip });
                    }
                    None => pool.warm.entry(group).or_default().push(ip),
                }
            }
        }
        pool
    }

    fn unit(&self) -> u32 {
        if self.prefix { PER_PREFIX } else { 1 }
    }

    fn warm_count(&self) -> u32 {
        self.warm.values().map(|v| v.len() as u32).sum()
    }

    pub fn assigned(&self, uid: &str) -> Option<Ipv4Addr> {
        self.used.get(uid).map(|r| r.ip)
    }

    /// `AssignResource`: an address, or why not; the bool says whether to reconcile.
    pub fn assign(&mut self, uid: &str) -> Result<(Ipv4Addr, bool), (PoolError, bool)> {
        if self.used.contains_key(uid) {
            return Err((PoolError::AlreadyAssigned, false));
        }
        let used = self.used.len() as u32;
        let cooling = self.cooling.len() as u32;
        if used >= self.capacity {
            return Err((PoolError::AtCapacity, false));
        }
        if used + cooling >= self.capacity {
            return Err((PoolError::Cooling, false));
        }
        if used + cooling + self.pending_create + self.pending_delete >= self.capacity {
            return Err((PoolError::BeingCreated, false));
        }
        // Prefix mode packs: the group with the fewest warm addresses; else any group.
        let group = if self.prefix {
            self.warm
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .min_by_key(|(_, v)| v.len())
                .map(|(g, _)| *g)
        } else {
            self.warm
                .iter()
                .find(|(_, v)| !v.is_empty())
                .map(|(g, _)| *g)
        };
        let Some(group) = group else {
            if self.no_cidr_blocks && self.prefix {
                return Err((PoolError::NoCidrBlocks, true));
            }
            return Err((PoolError::Empty, true));
        };
        let list = self.warm.entry(group).or_default();
        let ip = list.remove(0);
        if list.is_empty() && !self.prefix {
            self.warm.remove(&group);
        }
        self.used.insert(uid.to_string(), Res { group, ip });
        Ok((ip, true))
    }

    /// `FreeResource`: the pod's address goes to the cool-down queue. False if not its own.
    pub fn free(&mut self, uid: &str, ip: Ipv4Addr, now: Instant) -> bool {
        match self.used.get(uid) {
            Some(r) if r.ip == ip => {
                let r = *r;
                self.used.remove(uid);
                self.cooling.push_back((r, now));
                true
            }
            _ => false,
        }
    }

    /// `ProcessCoolDownQueue`: addresses cooled down long enough go back to warm.
    pub fn process_cooldown(&mut self, now: Instant) {
        while let Some((res, since)) = self.cooling.front().copied() {
            if now.saturating_duration_since(since) < self.cooldown {
                break;
            }
            self.cooling.pop_front();
            self.warm.entry(res.group).or_default().push(res.ip);
        }
    }

    /// `UpdatePool` with the outcome of a job: groups created (or not deleted) join warm.
    pub fn update(&mut self, job: &PoolJob, groups: &[Ipv4Net], ok: bool) -> bool {
        let reconcile = !ok;
        if !ok {
            self.resync_required = true;
        }
        for &group in groups {
            let ips: Vec<Ipv4Addr> = if self.prefix {
                ips_of(group).collect()
            } else {
                vec![group.addr()]
            };
            self.warm.entry(group).or_default().extend(ips);
        }
        match job {
            PoolJob::Create(n) => {
                self.pending_create = self.pending_create.saturating_sub(n * self.unit());
                if ok {
                    self.no_cidr_blocks = false;
                }
            }
            PoolJob::Delete(g) => {
                self.pending_delete = self
                    .pending_delete
                    .saturating_sub(g.len() as u32 * self.unit())
            }
            PoolJob::ReSync => {}
        }
        reconcile
    }

    pub fn set_no_cidr_blocks(&mut self) {
        self.no_cidr_blocks = true;
    }

    /// `ReSync` with the groups EC2 shows: new ones join warm, vanished ones leave.
    pub fn resync(&mut self, upstream: &[Ipv4Net]) {
        self.resync_required = false;
        let known = |p: &WarmPool, g: &Ipv4Net| {
            p.warm.contains_key(g)
                || p.used.values().any(|r| r.group == *g)
                || p.cooling.iter().any(|(r, _)| r.group == *g)
        };
        for g in upstream {
            if !known(self, g) {
                let ips: Vec<Ipv4Addr> = if self.prefix {
                    ips_of(*g).collect()
                } else {
                    vec![g.addr()]
                };
                self.warm.insert(*g, ips);
            }
        }
        self.warm.retain(|g, _| upstream.contains(g));
        self.cooling.retain(|(r, _)| upstream.contains(&r.group));
    }

    /// `ReconcilePool`: the next job, if any.
    pub fn reconcile(&mut self) -> Option<PoolJob> {
        let warm = self.warm_count();
        let used = self.used.len() as u32;
        let cooling = self.cooling.len() as u32;
        let total = warm + used + cooling + self.pending_create + self.pending_delete;
        if self.resync_required {
            if self.pending_create != 0 || self.pending_delete != 0 {
                return None;
            }
            return Some(PoolJob::ReSync);
        }
        if used + self.pending_create + self.pending_delete + cooling >= self.capacity {
            return None;
        }
        let deviation: i64 = if self.prefix {
            self.prefix_deviation(warm, used)
        } else {
            i64::from(self.targets.warm) - i64::from(warm + self.pending_create)
        };
        let max_dev = i64::from(self.targets.max_deviation);
        if deviation > max_dev {
            let room = i64::from(self.capacity.saturating_sub(total));
            let n = deviation.min(room) as u32;
            let count = n / self.unit();
            if count == 0 {
                return None;
            }
            self.pending_create += count * self.unit();
            return Some(PoolJob::Create(count));
        }
        if -deviation > max_dev {
            let mut to_delete = (-deviation) as u32;
            let mut groups = Vec::new();
            let free: Vec<Ipv4Net> = self
                .warm
                .iter()
                .filter(|(_, v)| v.len() as u32 == self.unit())
                .map(|(g, _)| *g)
                .collect();
            for g in free {
                if to_delete == 0 {
                    break;
                }
                self.warm.remove(&g);
                to_delete = to_delete.saturating_sub(self.unit());
                groups.push(g);
            }
            if groups.is_empty() {
                return None;
            }
            self.pending_delete += groups.len() as u32 * self.unit();
            return Some(PoolJob::Delete(groups));
        }
        None
    }

    /// `getPDDeviation` with warm-ip/minimum-ip targets: cooling addresses are not counted.
    fn prefix_deviation(&self, warm: u32, used: u32) -> i64 {
        let total = used + self.pending_create + warm;
        let current = total.div_ceil(PER_PREFIX);
        let for_warm = (used + self.targets.warm).div_ceil(PER_PREFIX);
        let for_min = self.targets.minimum.div_ceil(PER_PREFIX);
        let prefixes = if for_warm >= for_min {
            i64::from(for_warm) - i64::from(current)
        } else {
            (i64::from(for_min) - i64::from(current)).max(0)
        };
        prefixes * i64::from(PER_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    const SECONDARY: PoolTargets = PoolTargets {
        warm: 3,
        minimum: 3,
        max_deviation: 0,
    };
    const PREFIX: PoolTargets = PoolTargets {
        warm: 1,
        minimum: 3,
        max_deviation: 0,
    };

    #[tokio::test(start_paused = true)]
    async fn secondary_pool_keeps_three_warm_without_surge() {
        let mut p = WarmPool::new(false, 14, SECONDARY, Duration::from_secs(30), &[], &[]);
        assert_eq!(p.reconcile(), Some(PoolJob::Create(3)));
        // Being created: nothing more is asked for.
        assert_eq!(p.reconcile(), None);
        assert_eq!(p.assign("a"), Err((PoolError::Empty, true)));
        let ips: Vec<Ipv4Net> = (10..13).map(|i| net(&format!("10.0.0.{i}/32"))).collect();
        p.update(&PoolJob::Create(3), &ips, true);
        for uid in ["a", "b", "c"] {
            assert!(p.assign(uid).is_ok());
        }
        // No surge: three more, whatever the number of pods waiting.
        assert_eq!(p.reconcile(), Some(PoolJob::Create(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_returns_addresses_only_when_checked_after_30s() {
        let mut p = WarmPool::new(
            false,
            3,
            SECONDARY,
            Duration::from_secs(30),
            &[net("10.0.0.10/32")],
            &[("a".to_string(), "10.0.0.10".parse().unwrap())],
        );
        let start = Instant::now();
        assert!(p.free("a", "10.0.0.10".parse().unwrap(), start));
        tokio::time::advance(Duration::from_secs(29)).await;
        p.process_cooldown(Instant::now());
        assert_eq!(p.warm_count(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        p.process_cooldown(Instant::now());
        assert_eq!(p.warm_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn prefix_pool_asks_one_prefix_then_one_more_when_warm_runs_out() {
        let mut p = WarmPool::new(true, 224, PREFIX, Duration::from_secs(30), &[], &[]);
        assert_eq!(p.reconcile(), Some(PoolJob::Create(1)));
        p.update(&PoolJob::Create(1), &[net("10.0.1.0/28")], true);
        for i in 0..15 {
            assert!(p.assign(&format!("p{i}")).is_ok());
        }
        // 15 used, 1 warm: warm-ip 1 is met.
        assert_eq!(p.reconcile(), None);
        assert!(p.assign("p15").is_ok());
        assert_eq!(p.reconcile(), Some(PoolJob::Create(1)));
        assert_eq!(p.assign("p16"), Err((PoolError::Empty, true)));
    }
}
