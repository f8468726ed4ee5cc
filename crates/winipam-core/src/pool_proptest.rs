//! Property test: random sequences of pod churn, time, EC2 answers (success, every failure
//! class, unknown outcomes), describes (stale ones and human edits of the ENI included), config
//! changes and mode switches, against an honest model of the ENI. Safety invariants are checked
//! after every step, the targets after the pool has settled.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;

use super::config::{
    Config, KEY_COOLDOWN, KEY_FALLBACK, KEY_MINIMUM_IP, KEY_PREFIX_DELEGATION, KEY_WARM_IP,
    KEY_WARM_PREFIX, Targets,
};
use super::plan::Action;
use super::pool::{AssignOutcome, NodePool, prefix_addrs};
use super::pool_ec2::DESCRIBE_GRACE;
use super::test_support::{FakeAnswer, FakeEni, limits, secs};
use super::types::{Ec2ErrorClass, Mode, Timestamp};
use super::uid::PodUid;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Throttled,
    NoCidr,
    SubnetFull,
    Other,
    /// The call happened but the caller never learnt it (timeout).
    UnknownDone,
    /// The call did not happen and the caller does not know.
    UnknownNotDone,
}

#[derive(Debug, Clone)]
enum Op {
    Bind(u8),
    Free(u16),
    DeleteWaiting,
    Advance(u32),
    Begin,
    Finish(Outcome),
    Describe {
        stale: bool,
    },
    HumanRemove(u16),
    HumanAdd,
    Configure(BTreeMap<String, String>),
    /// The controller dies and a new one rebuilds the pool from a describe (stale or not) and
    /// the records a status would carry; the call in flight landed on EC2 or not.
    Restart {
        stale: bool,
        landed: bool,
    },
}

fn config_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        any::<bool>(),
        proptest::option::of(0u32..6),
        proptest::option::of(0u32..40),
        proptest::option::of(0u32..3),
        proptest::option::of(0u32..120),
        any::<bool>(),
    )
        .prop_map(|(prefix, warm, min, warm_prefix, cooldown, fallback)| {
            let mut m = BTreeMap::new();
            m.insert(KEY_PREFIX_DELEGATION.to_string(), prefix.to_string());
            m.insert(KEY_FALLBACK.to_string(), fallback.to_string());
            let mut put = |k: &str, v: Option<u32>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), v.to_string());
                }
            };
            put(KEY_WARM_IP, warm);
            put(KEY_MINIMUM_IP, min);
            put(KEY_WARM_PREFIX, warm_prefix);
            put(KEY_COOLDOWN, cooldown);
            m
        })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        8 => Just(Outcome::Ok),
        1 => Just(Outcome::Throttled),
        1 => Just(Outcome::NoCidr),
        1 => Just(Outcome::SubnetFull),
        1 => Just(Outcome::Other),
        1 => Just(Outcome::UnknownDone),
        1 => Just(Outcome::UnknownNotDone),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..8).prop_map(Op::Bind),
        3 => any::<u16>().prop_map(Op::Free),
        1 => Just(Op::DeleteWaiting),
        3 => prop_oneof![0u32..2_000, 0u32..150_000].prop_map(Op::Advance),
        4 => Just(Op::Begin),
        4 => outcome().prop_map(Op::Finish),
        1 => any::<bool>().prop_map(|stale| Op::Describe { stale }),
        1 => any::<u16>().prop_map(Op::HumanRemove),
        1 => Just(Op::HumanAdd),
        1 => config_map().prop_map(Op::Configure),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(stale, landed)| Op::Restart { stale, landed }),
    ]
}

/// The test's own record of the world, independent of the pool's bookkeeping.
struct World {
    pool: NodePool,
    eni: FakeEni,
    now: Timestamp,
    /// When the fake ENI last changed through an EC2 call (stale describes are only served
    /// within the grace of that change, as EC2's eventual consistency is bounded).
    last_change: Timestamp,
    next_uid: usize,
    waiting: Vec<PodUid>,
    live: BTreeMap<PodUid, Ipv4Addr>,
    cooling: BTreeMap<Ipv4Addr, Timestamp>,
    /// Addresses someone removed from the ENI behind the pool's back: until a describe tells
    /// it, the pool may still hand them out.
    human_removed: BTreeSet<Ipv4Addr>,
}

impl World {
    fn new(ipv4: u32, nitro: bool, config: Config) -> Self {
        let l = limits(ipv4, nitro);
        let eni = FakeEni::new(&l);
        let pool = NodePool::new(l, config, &eni.snapshot());
        World {
            pool,
            eni,
            now: secs(0),
            last_change: secs(0),
            next_uid: 0,
            waiting: Vec::new(),
            live: BTreeMap::new(),
            cooling: BTreeMap::new(),
            human_removed: BTreeSet::new(),
        }
    }

    fn release(&mut self, uid: &PodUid) {
        let addr = self.live.remove(uid).expect("live pod");
        assert_eq!(self.pool.release(uid, self.now), Some(addr));
        let until = self.now.plus(self.pool.config().cooldown);
        let e = self.cooling.entry(addr).or_insert(until);
        *e = (*e).max(until);
    }

    /// What the controller does after every event: give waiting pods addresses.
    fn controller_step(&mut self) {
        while let Some(uid) = self.waiting.first().cloned() {
            match self.pool.assign(&uid, self.now) {
                AssignOutcome::Assigned(a) => {
                    let addr = a.addr;
                    assert!(
                        !self.live.values().any(|&x| x == addr),
                        "{addr} handed out twice"
                    );
                    assert!(
                        self.cooling.get(&addr).is_none_or(|u| *u <= self.now),
                        "{addr} handed out while cooling"
                    );
                    assert!(
                        self.eni.addresses().contains(&addr) || self.human_removed.contains(&addr),
                        "{addr} is not on the ENI"
                    );
                    self.live.insert(uid, addr);
                    self.waiting.remove(0);
                }
                AssignOutcome::Existing(a) => panic!("waiting pod {uid} already had {a:?}"),
                AssignOutcome::Exhausted => break,
            }
        }
        self.pool.set_waiting(self.waiting.len() as u32);
    }

    fn check_action(&self, action: &Action) {
        let busy = |a: &Ipv4Addr| {
            self.live.values().any(|x| x == a) || self.cooling.get(a).is_some_and(|u| *u > self.now)
        };
        let known = self.pool.secondary_ips().len() + self.pool.prefixes().len();
        let slots = self.eni.slots as usize;
        match action {
            Action::ReleaseIps(ips) => {
                assert!(!ips.is_empty());
                assert!(
                    !ips.iter().any(busy),
                    "releasing a used/cooling IP: {ips:?}"
                );
            }
            Action::ReleasePrefixes(nets) => {
                assert!(!nets.is_empty());
                for n in nets {
                    assert!(
                        !prefix_addrs(*n).any(|a| busy(&a)),
                        "releasing busy /28 {n}"
                    );
                }
            }
            Action::AssignIps(n) | Action::AssignPrefixes(n) => {
                assert!(*n > 0);
                assert!(
                    known + *n as usize <= slots,
                    "assign beyond the ENI: {action:?}"
                );
            }
            Action::None | Action::Describe => {}
        }
    }

    fn begin(&mut self) {
        let action = self.pool.plan(self.now);
        self.check_action(&action);
        self.pool.begin(&action, self.now);
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some((action, _)) = self.pool.in_flight() else {
            return;
        };
        let action = action.clone();
        let now = self.now;
        let fail = |w: &mut World, class: Ec2ErrorClass| {
            w.pool.apply_failure(&class, now);
        };
        match outcome {
            Outcome::Ok => match self.eni.execute(&action) {
                Ok(FakeAnswer::Assigned(added)) => {
                    self.last_change = now;
                    self.pool.apply_assign_ok(&added, now);
                }
                Ok(FakeAnswer::Released) => {
                    self.last_change = now;
                    self.pool.apply_release_ok(now);
                }
                Ok(FakeAnswer::Described(snap)) => {
                    self.pool.apply_describe(&snap, now);
                }
                Err(class) => fail(self, class),
            },
            Outcome::UnknownDone => {
                if self.eni.execute(&action).is_ok() && action != Action::Describe {
                    self.last_change = now;
                }
                fail(self, Ec2ErrorClass::UnknownOutcome);
            }
            Outcome::UnknownNotDone => fail(self, Ec2ErrorClass::UnknownOutcome),
            Outcome::Throttled => fail(self, Ec2ErrorClass::Throttled),
            Outcome::NoCidr => fail(self, Ec2ErrorClass::NoCidrBlock),
            Outcome::SubnetFull => fail(self, Ec2ErrorClass::SubnetFull),
            Outcome::Other => fail(
                self,
                Ec2ErrorClass::Other {
                    code: "InternalError".into(),
                    message: "boom".into(),
                },
            ),
        }
    }

    fn describe(&mut self, stale: bool) {
        let snap = match &self.eni.previous {
            Some(prev) if stale && self.now.since(self.last_change) < DESCRIBE_GRACE => {
                prev.clone()
            }
            _ => self.eni.snapshot(),
        };
        self.pool.apply_describe(&snap, self.now);
    }

    /// What a new leader does (SPEC 6.3): a pool from its first describe, the previous one's
    /// cool-down records, every annotation adopted, the slots it listed as being released, and
    /// the addresses it listed as used that no pod holds cooled from now.
    fn restart(&mut self, stale: bool, landed: bool) {
        if let Some((action, _)) = self.pool.in_flight() {
            let action = action.clone();
            if landed && self.eni.execute(&action).is_ok() && action != Action::Describe {
                self.last_change = self.now;
            }
        }
        let old = &self.pool;
        let snap = match &self.eni.previous {
            Some(prev) if stale && self.now.since(self.last_change) < DESCRIBE_GRACE => {
                prev.clone()
            }
            _ => self.eni.snapshot(),
        };
        let mut pool = NodePool::new(old.limits().clone(), old.config().clone(), &snap);
        for (addr, until) in old.cooldowns(self.now) {
            pool.restore_cooldown(addr, until);
        }
        for (uid, addr) in &self.live {
            pool.adopt(uid, *addr, self.now);
        }
        let releasing = old.releasing_slots(self.now);
        let used: Vec<Ipv4Addr> = old.used_iter().collect();
        pool.restore_releasing(&releasing, self.now);
        pool.cool_released_while_away(&used, self.now);
        self.pool = pool;
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Bind(n) => {
                for _ in 0..*n {
                    self.waiting
                        .push(PodUid::from(format!("pod-{}", self.next_uid)));
                    self.next_uid += 1;
                }
            }
            Op::Free(i) => {
                if !self.live.is_empty() {
                    let uid = self.live.keys().nth(*i as usize % self.live.len()).cloned();
                    if let Some(uid) = uid {
                        self.release(&uid);
                    }
                }
            }
            Op::DeleteWaiting => {
                self.waiting.pop();
            }
            Op::Advance(ms) => {
                self.now = self.now.plus(Duration::from_millis(u64::from(*ms)));
                self.pool.advance(self.now);
            }
            Op::Begin => {
                if self.pool.in_flight().is_none() {
                    self.begin();
                }
            }
            Op::Finish(outcome) => self.finish(*outcome),
            Op::Describe { stale } => self.describe(*stale),
            Op::HumanRemove(i) => {
                let slots = self.eni.ips.len() + self.eni.prefixes.len();
                if slots > 0 {
                    let k = *i as usize % slots;
                    if k < self.eni.ips.len() {
                        let ip = *self.eni.ips.iter().nth(k).expect("index");
                        self.eni.ips.remove(&ip);
                        self.human_removed.insert(ip);
                    } else {
                        let n = *self
                            .eni
                            .prefixes
                            .iter()
                            .nth(k - self.eni.ips.len())
                            .expect("index");
                        self.eni.prefixes.remove(&n);
                        self.human_removed.extend(prefix_addrs(n));
                    }
                }
            }
            Op::HumanAdd => {
                // Only when both EC2 and the pool's view have room: a human edit never makes
                // the ENI exceed its limit.
                let pool_view = self.pool.secondary_ips().len() + self.pool.prefixes().len();
                if self.pool.free_slots() > 0 && pool_view < self.eni.slots as usize {
                    let _ = self.eni.execute(&Action::AssignIps(1));
                }
            }
            Op::Configure(map) => {
                let parsed = Config::parse(map).expect("generated config is valid");
                self.pool.set_config(parsed.config);
            }
            Op::Restart { stale, landed } => self.restart(*stale, *landed),
        }
        self.controller_step();
        self.check_step();
    }

    /// Invariants after every step.
    fn check_step(&self) {
        let now = self.now;
        let pool = &self.pool;
        // A pod's address stays on the ENI unless a human took it away.
        let on_eni = self.eni.addresses();
        for (uid, addr) in &self.live {
            assert!(
                on_eni.contains(addr) || self.human_removed.contains(addr),
                "{uid} holds {addr}, which left the ENI"
            );
        }
        // The walk's tallies agree with the address-by-address definition.
        let walked: Vec<_> = pool.prefix_tallies(now).collect();
        let each: Vec<_> = pool
            .prefixes()
            .into_iter()
            .map(|net| (net, pool.tally_prefix(net, now)))
            .collect();
        assert_eq!(walked, each);
        assert_eq!(pool.duplicate_count(), pool.duplicates().len());
        // Capacity: what the current mode uses never exceeds it (outside the /32 fallback,
        // whose secondary IPs count against prefix capacity by design).
        // (Checked while the pool's view fits the ENI: a human edit inside the describe grace
        // can leave it one slot off until the next describe.)
        let known = pool.secondary_ips().len() + pool.prefixes().len();
        if !pool.fallback_active(now) && known <= self.eni.slots as usize {
            let c = pool.counts(now);
            let current_used = match pool.mode() {
                Mode::Secondary => pool.tally_ips(now).used,
                Mode::Prefix => c.used - pool.tally_ips(now).used,
            };
            assert!(
                current_used <= pool.capacity(now),
                "used {current_used} > capacity"
            );
        }
        // A waiting pod has an assign planned or in flight while the ENI has room and nothing
        // holds assigns back.
        let held_back = pool.in_flight().is_some()
            || pool.needs_describe()
            || pool.backoff_until(now).is_some()
            || pool.no_assign_until.is_some_and(|t| t > now)
            || (pool.mode() == Mode::Prefix
                && !pool.fallback_active(now)
                && pool.no_prefix_until.is_some_and(|t| t > now));
        if !self.waiting.is_empty() && !held_back && pool.free_slots() > 0 {
            let plan = pool.plan(now);
            assert!(
                matches!(plan, Action::AssignIps(_) | Action::AssignPrefixes(_)),
                "{} waiting, room on the ENI, plan {plan:?}",
                self.waiting.len()
            );
        }
    }

    /// Lets time pass and EC2 answer honestly until nothing changes, then checks the targets.
    fn settle_and_check(&mut self) {
        for _ in 0..20 {
            self.now = self.now.plus(Duration::from_secs(200));
            self.pool.advance(self.now);
            if let Some(_in_flight) = self.pool.in_flight() {
                self.finish(Outcome::Ok);
            }
            self.describe(false);
            let before = (
                self.waiting.len(),
                self.pool.secondary_ips(),
                self.pool.prefixes(),
            );
            let calls = self.eni.settle(&mut self.pool, self.now);
            self.controller_step();
            let after = (
                self.waiting.len(),
                self.pool.secondary_ips(),
                self.pool.prefixes(),
            );
            if calls.is_empty() && before == after {
                break;
            }
        }
        let now = self.now;
        let pool = &self.pool;
        assert_eq!(pool.plan(now), Action::None, "settled");
        let c = pool.counts(now);
        assert_eq!(c.cooling, 0);
        let waiting = self.waiting.len() as u32;
        let ips = pool.tally_ips(now);
        let idle: Vec<_> = pool
            .prefixes()
            .into_iter()
            .filter(|n| !pool.tally_prefix(*n, now).busy())
            .collect();
        match (pool.mode(), pool.targets(now)) {
            (Mode::Secondary, Targets::Ips { warm, minimum }) => {
                assert!(
                    idle.is_empty(),
                    "idle /28s left after switching to secondary"
                );
                let bound = (warm + waiting).max(minimum.saturating_sub(ips.used));
                assert!(ips.free <= bound, "free {} > {bound}", ips.free);
            }
            (Mode::Prefix, targets) => {
                assert_eq!(ips.free, 0, "free secondary IPs left in prefix mode");
                let prefix_used = c.used - ips.used;
                match targets {
                    // Free addresses scattered in partly used /28s cannot be released; with an
                    // idle /28 left, free addresses exceed the targets by less than one /28.
                    Targets::Ips { warm, minimum } if !idle.is_empty() => {
                        let bound = (warm + waiting).max(minimum.saturating_sub(prefix_used)) + 15;
                        assert!(
                            c.free <= bound,
                            "free {} > {bound} with idle {idle:?}",
                            c.free
                        );
                    }
                    Targets::Ips { .. } => {}
                    // Warm-prefix counts whole idle /28s.
                    Targets::Prefixes { warm_prefixes } => {
                        let bound = warm_prefixes + waiting.div_ceil(16);
                        assert!(idle.len() as u32 <= bound, "idle {idle:?} > {bound}");
                    }
                }
            }
            (mode, targets) => panic!("{mode} with {targets:?}"),
        }
        // Every held address of a live pod is one the pod was given.
        for (uid, addr) in &self.live {
            assert_eq!(pool.address_of(uid), Some(*addr));
        }
    }
}

proptest! {
    // A fixed seed: the suite gates every change, so it must not fail on one draw in many (the
    // cases found are kept in proptest-regressions/ and replayed first). To search further, set
    // `rng_seed` to `RngSeed::Random` and raise `cases`.
    #![proptest_config(ProptestConfig {
        cases: 3000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261121),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_invariants_hold(
        ipv4 in prop_oneof![Just(2u32), Just(4), Just(10), Just(15), Just(30)],
        nitro in prop::bool::weighted(0.8),
        initial in config_map(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let config = Config::parse(&initial).expect("valid").config;
        let mut world = World::new(ipv4, nitro, config);
        for op in &ops {
            world.apply(op);
        }
        world.settle_and_check();
    }
}

/// Found by this property test: an unknown-outcome assign puts an address on the ENI, a fresh
/// describe adds it, the plan releases it, a stale describe drops it, the release ends with an
/// unknown outcome (it was applied), and a second stale describe shows it again. The release
/// must mark the address as changed even though the pool no longer held it, or that describe
/// brings it back and a pod gets an address the ENI does not hold.
#[test]
fn a_stale_describe_does_not_bring_back_an_address_released_with_an_unknown_outcome() {
    use Op::*;
    let config = Config::parse(&BTreeMap::new()).expect("valid").config;
    let mut world = World::new(30, false, config);
    let ops = [
        Begin,
        Bind(1),
        Finish(Outcome::Ok),
        Free(0),
        Begin,
        Advance(30_000),
        Finish(Outcome::UnknownDone),
        Describe { stale: false },
        Begin,
        Describe { stale: true },
        Finish(Outcome::UnknownDone),
        Bind(4),
        Describe { stale: true },
    ];
    for op in &ops {
        world.apply(op);
    }
    world.settle_and_check();
}
