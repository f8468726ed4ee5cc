//! A progress line on stderr while a simulation runs: phase, pods with an address, simulated
//! time. Drawn by a thread of its own about five times a second of real time, so it never
//! touches the simulation's (virtual) clock or its order of events; off when stderr is not a
//! terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const BAR_WIDTH: usize = 24;

#[derive(Default)]
struct State {
    label: String,
    phase: Mutex<String>,
    sim_ms: AtomicU64,
    done: AtomicU64,
    total: AtomicU64,
    finished: AtomicBool,
}

/// Shared progress of one run; cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Arc<State>);

impl Progress {
    pub fn new(label: &str) -> Progress {
        Progress(Arc::new(State {
            label: label.to_string(),
            ..State::default()
        }))
    }

    pub fn set_phase(&self, phase: &str) {
        *self.0.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_string();
    }

    /// Pods with an address out of pods alive.
    pub fn set_pods(&self, done: u64, total: u64) {
        self.0.done.store(done, Ordering::Relaxed);
        self.0.total.store(total, Ordering::Relaxed);
    }

    pub fn set_sim_time(&self, t: Duration) {
        self.0.sim_ms.store(t.as_millis() as u64, Ordering::Relaxed);
    }

    /// One line of text as drawn now.
    pub fn line(&self) -> String {
        let done = self.0.done.load(Ordering::Relaxed);
        let total = self.0.total.load(Ordering::Relaxed);
        let filled = if total == 0 {
            0
        } else {
            ((done as f64 / total as f64) * BAR_WIDTH as f64).round() as usize
        }
        .min(BAR_WIDTH);
        let phase = self
            .0
            .phase
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        format!(
            "[{}] {:<24} [{}{}] {:>7}/{:<7} pods with an IP   t = {:>7.1} s simulated",
            self.0.label,
            phase,
            "#".repeat(filled),
            "-".repeat(BAR_WIDTH - filled),
            done,
            total,
            self.0.sim_ms.load(Ordering::Relaxed) as f64 / 1000.0
        )
    }

    /// Starts drawing on stderr if it is a terminal; [`Progress::finish`] stops and clears it.
    pub fn draw_on_stderr(&self) -> Option<JoinHandle<()>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !me.0.finished.load(Ordering::Relaxed) {
                    let mut err = std::io::stderr().lock();
                    // Best effort: a closed terminal only loses the progress line.
                    let _ = write!(err, "\r\x1b[2K{}", me.line());
                    let _ = err.flush();
                    drop(err);
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            })
            .ok()
    }

    pub fn finish(&self, drawer: Option<JoinHandle<()>>) {
        self.0.finished.store(true, Ordering::Relaxed);
        if let Some(handle) = drawer {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_phase_bar_and_time() {
        let p = Progress::new("winipam");
        p.set_phase("placing pods");
        p.set_pods(50, 100);
        p.set_sim_time(Duration::from_millis(12_345));
        let line = p.line();
        assert!(line.starts_with("[winipam] placing pods"), "{line}");
        assert!(line.contains(&format!("[{}{}]", "#".repeat(12), "-".repeat(12))));
        assert!(line.contains("50/100"), "{line}");
        assert!(line.contains("12.3 s simulated"), "{line}");
    }
}
