//! Where time comes from. The pure core takes [`Timestamp`] values; everything that needs "now"
//! asks a [`Clock`]. Production uses the system clock; the simulator and tests run on tokio's
//! paused clock (`tokio::time::pause`, `start_paused = true`), which advances only when every
//! task is idle, so simulated minutes take milliseconds and a seed reproduces a run.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ipam::Timestamp;

/// A source of the current time as a [`Timestamp`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock before 1970 is a broken host; saturate to 0 rather than panic.
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// tokio's clock mapped onto wall-clock milliseconds from a fixed epoch. Under a paused runtime
/// this is the virtual clock of the simulator: `tokio::time::sleep` advances it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: tokio::time::Instant,
    epoch: Timestamp,
}

impl TokioClock {
    /// A clock that reads `epoch` now and advances with tokio time.
    pub fn starting_at(epoch: Timestamp) -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            epoch,
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.epoch.plus(self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_virtual_time() {
        let clock = TokioClock::starting_at(Timestamp(1_000));
        assert_eq!(clock.now(), Timestamp(1_000));
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(clock.now(), Timestamp(301_000));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp(1_577_836_800_000));
    }
}
