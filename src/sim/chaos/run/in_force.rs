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
    /// Process `read.process` read a ConfigMap.
    pub(super) fn read(&mut self, read: &ConfigRead, tracker: &mut Tracker) {
        self.cooldowns.insert(read.process, read.cooldown);
        if self.leader == Some(read.process) {
            tracker.cooldown(read.at, read.cooldown);
        }
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
