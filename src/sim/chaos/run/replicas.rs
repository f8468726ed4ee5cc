//! The replicas of a chaos run: starting, crashing and restarting processes, leader failovers on
//! the one Lease, and the leadership invariants (`two-leaders` after every step, `one-leader` at
//! quiescence).

use std::sync::Arc;
use std::time::Duration;

use super::Runner;
use crate::sim::chaos::invariants::Violation;
use crate::sim::chaos::process::{Leadership, Process};
use crate::sim::chaos::schedule::Failover;

/// One replica's place: the process in it, or when a new one starts there.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) current: Option<Process>,
    /// When the crashed process comes back.
    pub(super) restart_at: Option<tokio::time::Instant>,
    /// How long after its (targeted) crash the process comes back.
    pub(super) restart_after: Duration,
}

impl Runner {
    pub(super) fn start_process(&mut self, slot: usize) {
        let id = self.next_id;
        self.next_id += 1;
        if self.lease.is_none() {
            // The only replica leads from its start.
            self.in_force.leads(id, self.world.now(), &mut self.tracker);
        }
        let leadership = match &self.lease {
            Some(lease) => Leadership::Lease(lease, &self.leader_log),
            None => Leadership::Always,
        };
        let process = Process::start(id, &self.world, Arc::clone(&self.tally), leadership);
        self.slots[slot].current = Some(process);
        self.note(format!("process {id} started"));
    }

    /// The slot a crash of "the process" hits: the leader's (else the first live one's).
    pub(super) fn target(&self) -> usize {
        let live = |s: &Slot| s.current.as_ref().is_some_and(|p| p.alive());
        let leading = |s: &Slot| s.current.as_ref().is_some_and(|p| p.alive() && p.leading());
        let i = self.slots.iter().position(leading);
        i.or_else(|| self.slots.iter().position(live)).unwrap_or(0)
    }

    /// Notices a crash (a targeted one happens inside a call), heals partitions and restarts
    /// when due.
    pub(super) fn processes(&mut self) {
        let now = tokio::time::Instant::now();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if let Some(p) = slot.current.take_if(|p| !p.alive()) {
                slot.restart_at = Some(now + slot.restart_after);
                // A dead process renews nothing (a targeted crash is noticed here, up to a
                // tick late).
                if let (Some(lease), Some(identity)) = (&self.lease, &p.identity) {
                    lease.partition(identity, true);
                    // A partition of it that heals later must not bring its elector back.
                    self.heals.retain(|(_, h)| h != identity);
                }
                self.note(format!("process {} died", p.gate.id));
                self.dead.push(p);
            }
        }
        if let Some(lease) = &self.lease {
            for (_, identity) in self.heals.extract_if(.., |(at, _)| *at <= now) {
                lease.partition(&identity, false);
            }
        }
        for i in 0..self.slots.len() {
            if self.slots[i].restart_at.is_some_and(|at| at <= now) {
                self.slots[i].restart_at = None;
                self.start_process(i);
            }
        }
    }

    /// `two-leaders`: no two electors say "leading" at the same virtual instant (the deposed
    /// leader's calls in flight may still land: that is not leading).
    pub(super) fn check_leaders(&mut self) -> Result<(), Violation> {
        let log = self
            .leader_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for &(at, id, leading) in log.get(self.leader_seen..).unwrap_or_default() {
            let verb = if leading { "leads" } else { "stops leading" };
            self.note(format!("process {id} {verb}"));
            let ago = tokio::time::Instant::now().saturating_duration_since(at);
            let at =
                crate::ipam::Timestamp(self.world.now().0.saturating_sub(ago.as_millis() as u64));
            // The ConfigMaps read before this change, in the order things happened.
            self.configs_read(Some(at));
            if !leading {
                self.leading.remove(&id);
                self.in_force.stops(id);
                continue;
            }
            self.in_force.leads(id, at, &mut self.tracker);
            if let Some(other) = self.leading.iter().find(|&&o| o != id) {
                return Err(Violation {
                    invariant: "two-leaders",
                    detail: format!("process {id} leads while process {other} does"),
                });
            }
            self.leading.insert(id);
        }
        self.leader_seen = log.len();
        self.configs_read(None);
        Ok(())
    }

    /// Applies the ConfigMaps processes read (up to `until`, else all): the configuration in
    /// force follows the leader's.
    fn configs_read(&mut self, until: Option<crate::ipam::Timestamp>) {
        let reads = self.tally.configs.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for read in reads.get(self.in_force.reads_seen..).unwrap_or_default() {
            if until.is_some_and(|until| read.at > until) {
                break;
            }
            if self.in_force.read(read, &mut self.tracker) {
                changed.push(*read);
            }
            self.in_force.reads_seen += 1;
        }
        drop(reads);
        for read in changed {
            self.note(format!(
                "  process {} read a ConfigMap: cool-down {} s for it from {} ms",
                read.process,
                read.cooldown.as_secs(),
                read.at.0 - crate::sim::scenario::world::EPOCH.0
            ));
        }
    }

    /// Kills the process in `slot` now; a new one starts there `restart_after` later.
    pub(super) fn kill(&mut self, slot: usize, restart_after: Duration) {
        let slot = &mut self.slots[slot];
        slot.restart_after = restart_after;
        if let Some(p) = &slot.current {
            p.gate.kill();
        }
    }

    pub(super) fn failover(&mut self, failover: &Failover) {
        *self.actions.entry(failover.kind()).or_default() += 1;
        let leader = self.target();
        let follower = 1 - leader.min(1);
        match failover {
            Failover::PartitionLeader { heal_after } => {
                let identity = self.slots[leader]
                    .current
                    .as_ref()
                    .and_then(|p| p.identity.clone());
                if let (Some(lease), Some(identity)) = (&self.lease, identity) {
                    lease.partition(&identity, true);
                    let at = tokio::time::Instant::now() + *heal_after;
                    self.heals.push((at, identity));
                }
            }
            Failover::KillLeader { restart_after } => self.kill(leader, *restart_after),
            Failover::KillFollower { restart_after } => self.kill(follower, *restart_after),
            Failover::KillBoth { restart_after } => {
                self.kill(leader, *restart_after);
                self.kill(follower, *restart_after);
            }
        }
        self.processes();
        self.note(format!("{failover:?} (leader slot {leader})"));
    }

    /// At quiescence: every replica alive and exactly one leading.
    pub(super) fn check_one_leader(&self) -> Result<(), Violation> {
        let alive = self.slots.iter().filter(|s| s.current.is_some()).count();
        let leaders: Vec<u32> = self
            .slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .filter(|p| p.leading())
            .map(|p| p.gate.id)
            .collect();
        if alive == self.slots.len() && leaders.len() == 1 {
            return Ok(());
        }
        Err(Violation {
            invariant: "one-leader",
            detail: format!(
                "at quiescence {alive} of {} replicas alive, leading: {leaders:?}; lease held by {:?}, last changes {:?}",
                self.slots.len(),
                self.lease.as_ref().and_then(|l| l.holder()),
                self.lease.as_ref().map(|l| l
                    .transitions()
                    .into_iter()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()),
            ),
        })
    }
}
