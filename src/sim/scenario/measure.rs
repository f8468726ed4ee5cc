//! What the process itself costs: CPU time of the simulation thread and peak resident memory,
//! read from `/proc` (Linux); elsewhere they read as unavailable.

use std::time::Duration;

/// CPU time the calling thread has run so far (`/proc/thread-self/schedstat`, nanosecond
/// resolution; falls back to the clock-tick counters of `/proc/thread-self/stat`).
pub fn thread_cpu() -> Option<Duration> {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        && ns > 0
    {
        return Some(Duration::from_nanos(ns));
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the ')'.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux platform Rust targets.
    Some(Duration::from_millis(ticks * 10))
}

/// Peak resident set size of the process in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets the peak to the current RSS (`echo 5 > /proc/self/clear_refs`), so a measurement
/// counts only what follows. False where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let Some(before) = thread_cpu() else {
            // Not Linux: nothing to measure, and the report says "n/a".
            assert!(!std::path::Path::new("/proc/thread-self").exists());
            return;
        };
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = thread_cpu().unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
    }

    #[test]
    fn rss_is_reported_and_peak_is_at_least_current() {
        if let (Some(peak), Some(now)) = (peak_rss_bytes(), rss_bytes()) {
            assert!(peak >= now / 2 && now > 0, "peak {peak} now {now}");
        } else {
            assert!(!std::path::Path::new("/proc/self/status").exists());
        }
    }
}
