//! The end of a run: when a stop begins, its deadline; while what is open finishes, a report of what is left.
//!
//! A stop (the first Ctrl-C or SIGTERM, or `--max-seconds`) may take at most `shutdown_timeout` from the moment
//! it is seen: the `drain` thread sets that deadline on the clip writer ([`StopDeadline`]); clips and evidence not
//! finished by then are recorded as not finished, and the alerts get what time is left. When files simply end
//! there is no deadline: every clip is finished.
//!
//! From the last frame on (or the stop), every [`REPORT_EVERY`] the thread logs the clips still being written,
//! and keeps [`Progress::clips_pending`] current for the progress bar. It ends when [`Drain::finish`] is called,
//! checking every [`POLL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Progress;
use crate::shutdown::ShutdownToken;
use crate::sink::clips::{ClipStats, StopDeadline};

/// How often the thread looks at the stop and the counters.
const POLL: Duration = Duration::from_millis(100);
/// How often what is left is logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What the `drain` thread watches.
pub(super) struct DrainSettings {
    pub shutdown: ShutdownToken,
    /// `--max-seconds`, counted from `started`: reaching it is a stop too.
    pub max_duration: Option<Duration>,
    pub started: Instant,
    /// The longest a stop may take.
    pub timeout: Duration,
    pub clips: Option<(Arc<ClipStats>, StopDeadline)>,
    pub progress: Arc<Progress>,
}

/// The running `drain` thread.
pub(super) struct Drain {
    /// Set by the caller once the last frame has been processed (inference and post stages are over).
    pub frames_done: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    deadline: Arc<std::sync::Mutex<Option<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    pub(super) fn spawn(s: DrainSettings) -> Drain {
        let frames_done = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let deadline = Arc::new(std::sync::Mutex::new(None));
        let (f, d, dl) = (frames_done.clone(), done.clone(), deadline.clone());
        let thread = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || watch(s, &f, &d, &dl))
            .map_err(|e| warn!(error = %e, "could not start the drain thread; a stop is not time-limited"))
            .ok();
        Drain { frames_done, done, deadline, thread }
    }

    /// Ends the thread and returns the stop's deadline, if a stop began.
    pub(super) fn finish(mut self) -> Option<Instant> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("the drain thread panicked");
        }
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pending(stats: &ClipStats) -> (u64, u64) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let finished = load(&stats.written) + load(&stats.failed);
    (load(&stats.started).saturating_sub(finished), load(&stats.written))
}

fn watch(
    s: DrainSettings,
    frames_done: &AtomicBool,
    done: &AtomicBool,
    deadline_out: &std::sync::Mutex<Option<Instant>>,
) {
    let mut deadline: Option<Instant> = None;
    let mut next_report = None;
    while !done.load(Ordering::Relaxed) {
        let now = Instant::now();
        let stopping = s.shutdown.is_stopping() || s.max_duration.is_some_and(|d| s.started.elapsed() >= d);
        if deadline.is_none() && stopping {
            let d = now + s.timeout;
            deadline = Some(d);
            *deadline_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
            if let Some((_, stop)) = &s.clips {
                stop.set(d);
            }
            info!(
                "stopping: what is still open is finished within {:.0} s ([output] shutdown_timeout_s); what is not \
                 is recorded as not finished (interrupt again to exit now)",
                s.timeout.as_secs_f64()
            );
        }
        if let Some((stats, _)) = &s.clips
            && (frames_done.load(Ordering::Relaxed) || deadline.is_some())
        {
            let (left, written) = pending(stats);
            s.progress.clips_pending.store(left, Ordering::Relaxed);
            let due = next_report.is_none_or(|t| now >= t);
            if left > 0 && due {
                let limit = deadline.map(|d| format!(", {:.0} s left", d.saturating_duration_since(now).as_secs_f64()));
                let clips = if left == 1 { "clip" } else { "clips" };
                info!(
                    "finishing: {left} {clips} being written ({written} written so far{})",
                    limit.unwrap_or_default()
                );
                next_report = Some(now + REPORT_EVERY);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Logs `finishing: N <what> (T s left)` every [`REPORT_EVERY`] while `count` is above 0, on its own thread, until
/// dropped: for a stage of the stop that blocks the caller (the alerts' delivery).
pub(super) struct Reporter {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    pub(super) fn spawn(
        what: &'static str,
        count: impl Fn() -> u64 + Send + 'static,
        deadline: Instant,
        log: impl Fn(String) + Send + 'static,
    ) -> Reporter {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("drain-report".into())
            .spawn(move || {
                let mut next = Instant::now();
                while !d.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= next {
                        let n = count();
                        if n > 0 {
                            let left = deadline.saturating_duration_since(now).as_secs_f64();
                            log(format!("finishing: {n} {what} ({left:.0} s left)"));
                        }
                        next = now + REPORT_EVERY;
                    }
                    std::thread::sleep(POLL);
                }
            })
            .ok();
        Reporter { done, thread }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn the_reporter_says_what_is_left_as_it_goes_down_and_stops_when_dropped() {
        let left = Arc::new(AtomicU64::new(3));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (l, out) = (left.clone(), lines.clone());
        let reporter = Reporter::spawn(
            "alerts waiting to be delivered",
            move || l.load(Ordering::Relaxed),
            Instant::now() + Duration::from_secs(30),
            move |line| out.lock().unwrap().push(line),
        );
        // The first report comes at once; then the count goes down to 0, and nothing more is said.
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no report");
            std::thread::sleep(POLL);
        }
        left.store(0, Ordering::Relaxed);
        drop(reporter);
        let lines = lines.lock().unwrap();
        assert!(lines[0].starts_with("finishing: 3 alerts waiting to be delivered ("), "{lines:?}");
        assert!(lines[0].ends_with(" s left)"), "{lines:?}");
        assert!(lines.iter().all(|l| l.contains("finishing: 3")), "only non-zero counts are said: {lines:?}");
    }
}
