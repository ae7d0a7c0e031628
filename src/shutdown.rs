//! Shutdown signalling shared by every stage.
//!
//! One [`Shutdown`] is owned by whoever decides to stop (the CLI's signal handler);
//! each stage holds a cloned [`ShutdownToken`] and checks it between units of work,
//! or waits on it instead of sleeping so that a stop wakes it at once.
//!
//! Two levels, as an operator expects from Ctrl-C:
//! - the first request *drains*: sources stop producing, queued frames are finished, files are closed properly;
//! - the second request *aborts*: stages stop as soon as they can, without draining.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How far shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Running,
    Drain,
    Abort,
}

/// What must be done before an abort exits the process (see [`ShutdownToken::on_abort`]).
type AbortHook = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    level: Mutex<Level>,
    cond: Condvar,
    on_abort: Mutex<Vec<AbortHook>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("level", &self.level).finish_non_exhaustive()
    }
}

/// The side that requests a stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

/// The side that observes a stop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownToken {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                level: Mutex::new(Level::Running),
                cond: Condvar::new(),
                on_abort: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn token(&self) -> ShutdownToken {
        ShutdownToken { inner: self.inner.clone() }
    }

    /// Moves one level further (Running → Drain → Abort) and returns the new level.
    pub fn escalate(&self) -> Level {
        let mut level = self.inner.level.lock().unwrap_or_else(|e| e.into_inner());
        *level = match *level {
            Level::Running => Level::Drain,
            _ => Level::Abort,
        };
        self.inner.cond.notify_all();
        *level
    }

    /// Runs the hooks given to [`ShutdownToken::on_abort`], in the order given, before the process exits without
    /// draining. Waits at most `limit` for them (a hook stuck on a lock or a hung disk must not keep the process
    /// alive) and returns whether they all finished.
    pub fn run_abort_hooks(&self, limit: Duration) -> bool {
        let hooks: Vec<AbortHook> = self.inner.on_abort.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if hooks.is_empty() {
            return true;
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("abort-hooks".into()).spawn(move || {
            hooks.iter().for_each(|h| h());
            let _ = done_tx.send(());
        });
        spawned.is_ok() && done_rx.recv_timeout(limit).is_ok()
    }

    /// Requests a drain (idempotent; never lowers the level).
    pub fn drain(&self) {
        let mut level = self.inner.level.lock().unwrap_or_else(|e| e.into_inner());
        if *level < Level::Drain {
            *level = Level::Drain;
        }
        self.inner.cond.notify_all();
    }
}

impl ShutdownToken {
    pub fn level(&self) -> Level {
        *self.inner.level.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once any stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.level() >= Level::Drain
    }

    /// True once the second request came: stop without draining.
    pub fn is_aborting(&self) -> bool {
        self.level() >= Level::Abort
    }

    /// Registers what must be done if the process exits without draining (a second Ctrl-C): writing state that
    /// is only in memory to disk, quickly. See [`Shutdown::run_abort_hooks`].
    pub fn on_abort(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.inner.on_abort.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::new(hook));
    }

    /// Waits up to `timeout` for a stop request; returns true if one came. Use instead of `sleep`.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut level = self.inner.level.lock().unwrap_or_else(|e| e.into_inner());
        while *level == Level::Running {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            level = self.inner.cond.wait_timeout(level, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalates_and_wakes_waiters() {
        let s = Shutdown::new();
        let t = s.token();
        assert!(!t.wait_timeout(Duration::from_millis(1)));
        let waiter = std::thread::spawn(move || t.wait_timeout(Duration::from_secs(30)));
        assert_eq!(s.escalate(), Level::Drain);
        assert!(waiter.join().unwrap());
        assert_eq!(s.escalate(), Level::Abort);
        assert!(s.token().is_aborting());
    }

    #[test]
    fn abort_hooks_run_in_order_and_a_stuck_one_does_not_hold_the_exit() {
        let s = Shutdown::new();
        assert!(s.run_abort_hooks(Duration::from_millis(1)), "nothing to run");
        let ran = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let ran = ran.clone();
            s.token().on_abort(move || ran.lock().unwrap().push(i));
        }
        assert!(s.run_abort_hooks(Duration::from_secs(30)));
        assert_eq!(*ran.lock().unwrap(), vec![0, 1, 2]);

        let (_hold, stuck) = std::sync::mpsc::channel::<()>();
        let stuck = Mutex::new(stuck);
        s.token().on_abort(move || {
            let _ = stuck.lock().unwrap().recv();
        });
        let t = Instant::now();
        assert!(!s.run_abort_hooks(Duration::from_millis(200)), "the stuck hook did not finish");
        assert!(t.elapsed() < Duration::from_secs(10), "gave up after its limit: {:?}", t.elapsed());
    }
}
