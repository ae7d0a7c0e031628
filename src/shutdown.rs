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

#[derive(Debug)]
struct Inner {
    level: Mutex<Level>,
    cond: Condvar,
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
        Shutdown { inner: Arc::new(Inner { level: Mutex::new(Level::Running), cond: Condvar::new() }) }
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
}
