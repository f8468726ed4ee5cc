//! The churn's pace (R2): how many pods each tick deletes, so that the harness replaces pods
//! at the rate asked, whatever a tick's deletes take, and never faster than the Deployment
//! brings them back.

use std::time::Duration;

/// What the churn owes after `elapsed` more time at `rate` pods/s: what it owed, plus the
/// rate for the time that passed (the deletes' round trip included), at most a second's worth
/// (a pace the Deployment cannot follow is not made up for later in bursts). A tick's worth per
/// tick ran the churn at 31.6/s of the 50 asked and at 45-49/s of 100 (2026-12-06): each tick
/// lasted its sleep plus its deletes' round trip.
pub fn accrue(owed: f64, rate: f64, elapsed: Duration) -> f64 {
    (owed + rate * elapsed.as_secs_f64()).min(rate)
}

/// How many pods a churn tick deletes: what the rate owes, while the Deployment keeps at least
/// `pods` less a second's worth live. The ReplicaSet controller replaces pods at the 20
/// requests/s of the controller-manager's client; deleting at 100/s regardless emptied the
/// Deployment within 25 s of R2's start, and the churn then deleted each new pod the moment it
/// was annotated, a few pods live in the whole cluster, each address cooling a second after it
/// was handed out (the R2 runs before 2026-12-05 23:00 UTC).
pub fn deletable(owed: f64, live: usize, pods: usize, rate: f64) -> usize {
    let floor = pods.saturating_sub(rate.ceil() as usize);
    (owed.max(0.0) as usize).min(live.saturating_sub(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_deletes_what_the_rate_owes_while_the_deployment_keeps_its_strength() {
        // 2,000 pods replaced at 100/s: at most 100 short of full strength.
        assert_eq!(deletable(10.0, 2000, 2000, 100.0), 10, "the rate's due");
        assert_eq!(deletable(10.7, 2000, 2000, 100.0), 10, "whole pods");
        assert_eq!(deletable(10.0, 1905, 2000, 100.0), 5, "down to the floor");
        assert_eq!(deletable(10.0, 1900, 2000, 100.0), 0, "at the floor");
        assert_eq!(deletable(10.0, 1700, 2000, 100.0), 0, "below it");
        assert_eq!(deletable(-1.0, 2000, 2000, 100.0), 0, "nothing owed");
        // A rate above the size: nothing is kept back.
        assert_eq!(deletable(5.0, 3, 10, 50.0), 3);
    }

    #[test]
    fn the_churn_owes_the_rate_for_the_time_that_passed() {
        let ms = Duration::from_millis;
        // 100 ms ticks whose deletes take 60 ms each: 160 ms a tick, 8 pods owed at 50/s, not
        // the 5 of a tick's worth (which gave 31 of the 50/s asked).
        let mut owed = 0.0;
        let mut deleted = 0;
        for _ in 0..25 {
            owed = accrue(owed, 50.0, ms(160));
            let n = deletable(owed, 2000, 2000, 50.0);
            owed -= n as f64;
            deleted += n;
        }
        // 25 ticks of 160 ms: 4 s, 200 pods at 50/s (the fractions carried over).
        assert_eq!(deleted, 200);
        // A stall owes at most a second's worth, not the whole gap.
        assert_eq!(accrue(0.0, 50.0, ms(10_000)), 50.0);
        assert_eq!(
            accrue(-3.0, 50.0, ms(100)),
            2.0,
            "a batch that overshot is paid back"
        );
    }
}
