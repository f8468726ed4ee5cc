//! Which configuration is in force, for the cool-down invariant. Each process has its own: the
//! ConfigMaps its own watch delivered (a process that started on an invalid one has the
//! defaults, one whose watch was cut keeps the one before the outage, one that read nothing yet
//! has none). The one that counts is the leader's, so the cool-down in force changes both when
//! the leader reads a ConfigMap and when another process takes over.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ipam::Timestamp;
use crate::sim::chaos::gate::ConfigRead;
use crate::sim::chaos::invariants::Tracker;

#[derive(Default)]
pub(super) struct InForce {
    /// The cool-down in force for each process that has read a ConfigMap.
    cooldowns: BTreeMap<u32, Duration>,
    /// The leader (while none leads, the last one's cool-down stays: only its calls in flight
    /// can still land).
    leader: Option<u32>,
    /// Entries of the reads log already applied.
    pub(super) reads_seen: usize,
}

impl InForce {
    /// Process `read.process` read a ConfigMap; whether its cool-down changed (or is its first).
    pub(super) fn read(&mut self, read: &ConfigRead, tracker: &mut Tracker) -> bool {
        let before = self.cooldowns.insert(read.process, read.cooldown);
        if self.leader == Some(read.process) {
            tracker.cooldown(read.at, read.cooldown);
        }
        before != Some(read.cooldown)
    }

    /// Process `id` leads from `at`: its cool-down is in force (once it has read a ConfigMap;
    /// it hands nothing out before).
    pub(super) fn leads(&mut self, id: u32, at: Timestamp, tracker: &mut Tracker) {
        self.leader = Some(id);
        if let Some(&cooldown) = self.cooldowns.get(&id) {
            tracker.cooldown(at, cooldown);
        }
    }

    /// Process `id` no longer leads.
    pub(super) fn stops(&mut self, id: u32) {
        if self.leader == Some(id) {
            self.leader = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(process: u32, at: u64, secs: u64) -> ConfigRead {
        ConfigRead {
            process,
            at: Timestamp(at),
            cooldown: Duration::from_secs(secs),
        }
    }

    /// The cool-down (s) an address freed at `from` and handed out at `to` is held to.
    fn secs(tracker: &Tracker, from: u64, to: u64) -> u64 {
        tracker
            .cooldown_between(Timestamp(from), Timestamp(to))
            .as_secs()
    }

    #[test]
    fn the_leaders_cool_down_is_in_force_and_changes_with_the_leader() {
        let mut t = Tracker::default();
        let mut in_force = InForce::default();
        in_force.read(&read(1, 0, 30), &mut t);
        in_force.read(&read(2, 0, 5), &mut t);
        // Nobody leads yet: nothing is in force.
        assert_eq!(secs(&t, 0, 0), 0);
        in_force.leads(1, Timestamp(1_000), &mut t);
        assert_eq!(secs(&t, 2_000, 9_000), 30);
        // A follower's ConfigMap is not in force while it follows.
        in_force.read(&read(2, 3_000, 0), &mut t);
        assert_eq!(secs(&t, 2_000, 9_000), 30);
        in_force.stops(1);
        in_force.leads(2, Timestamp(10_000), &mut t);
        assert_eq!(secs(&t, 2_000, 9_000), 30);
        assert_eq!(secs(&t, 2_000, 10_000), 0);
        assert_eq!(secs(&t, 10_000, 20_000), 0);
    }

    #[test]
    fn a_leader_that_read_nothing_yet_counts_from_its_first_read() {
        let mut t = Tracker::default();
        let mut in_force = InForce::default();
        in_force.read(&read(1, 0, 5), &mut t);
        in_force.leads(1, Timestamp(0), &mut t);
        in_force.stops(1);
        // Process 2 leads before its first read (it hands nothing out yet): the 5 s stay in
        // force until it reads 45 s.
        in_force.leads(2, Timestamp(4_000), &mut t);
        assert_eq!(secs(&t, 4_500, 9_000), 5);
        in_force.read(&read(2, 4_500, 45), &mut t);
        assert_eq!(secs(&t, 1_000, 4_500), 5);
        assert_eq!(secs(&t, 4_500, 9_000), 45);
        // The deposed leader's reads no longer count.
        in_force.read(&read(1, 6_000, 0), &mut t);
        assert_eq!(secs(&t, 4_500, 9_000), 45);
    }

    #[test]
    fn two_cool_downs_set_in_one_millisecond_both_count() {
        let mut t = Tracker::default();
        t.cooldown(Timestamp(1_000), Duration::from_secs(5));
        t.cooldown(Timestamp(1_000), Duration::from_secs(30));
        assert_eq!(secs(&t, 1_000, 9_000), 5);
        assert_eq!(secs(&t, 2_000, 9_000), 5);
    }
}
