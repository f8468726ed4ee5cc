//! The renew deadline, enforced on what the Lease object says.
//!
//! kube-lease-manager renews the lease in its own loop and reports only changes of holder; it
//! does not say when its last renewal succeeded, and while the apiserver is unreachable it keeps
//! reporting "leader". So the elector reads the Lease itself every retry period: while we are
//! the holder, leadership is valid until `renewTime + renew_deadline`. `renewTime` was written by
//! this process's own clock, so no clock skew enters this bound; when reads fail, the bound is
//! not extended and the leader stops acting `lease_duration - renew_deadline` before another
//! replica may take the lease.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Watchdog {
    renew_deadline: Duration,
    valid_until: Option<SystemTime>,
}

impl Watchdog {
    pub fn new(renew_deadline: Duration) -> Self {
        Watchdog {
            renew_deadline,
            valid_until: None,
        }
    }

    /// A successful read of the Lease.
    pub fn observe(&mut self, we_hold_it: bool, renew_time: Option<SystemTime>) {
        self.valid_until = match (we_hold_it, renew_time) {
            (true, Some(renewed)) => renewed.checked_add(self.renew_deadline),
            _ => None,
        };
    }

    /// Leadership is gone (the lease manager said so, or the lease is being given up).
    pub fn lost(&mut self) {
        self.valid_until = None;
    }

    /// May we act as the leader at `now`?
    pub fn is_valid(&self, now: SystemTime) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }

    /// When the current bound runs out, if there is one.
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.valid_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn valid_until_the_renew_deadline_after_the_last_renewal() {
        let mut w = Watchdog::new(Duration::from_secs(10));
        assert!(!w.is_valid(at(0)));
        w.observe(true, Some(at(100)));
        assert!(w.is_valid(at(100)));
        assert!(w.is_valid(at(109)));
        assert!(!w.is_valid(at(110)));
        assert_eq!(w.valid_until(), Some(at(110)));
        // A later renewal extends it.
        w.observe(true, Some(at(102)));
        assert!(w.is_valid(at(111)));
    }

    #[test]
    fn another_holder_or_no_renew_time_ends_it() {
        let mut w = Watchdog::new(Duration::from_secs(10));
        w.observe(true, Some(at(100)));
        w.observe(false, Some(at(101)));
        assert!(!w.is_valid(at(101)));
        w.observe(true, Some(at(100)));
        w.observe(true, None);
        assert!(!w.is_valid(at(100)));
        w.observe(true, Some(at(100)));
        w.lost();
        assert!(!w.is_valid(at(100)));
        assert_eq!(w.valid_until(), None);
    }
}
