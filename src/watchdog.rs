//! systemd's notify protocol (`sd_notify(3)`) without libsystemd: `READY=1`, `WATCHDOG=1`, `STOPPING=1` and
//! `STATUS=...`, each one datagram to the socket named by `$NOTIFY_SOCKET`.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing, so `watch` can always call them.
//!
//! The watchdog is fed only while the process is healthy: [`Watchdog`] runs on its own named thread, asks a
//! health check every half `WatchdogSec` (systemd's recommendation), and sends `WATCHDOG=1` only when the check
//! passes. With `health` = "the inference loop went round since the last check", a stuck inference thread (a hung
//! GPU, a deadlock) stops the pings, and systemd restarts the service after `WatchdogSec`. Cameras that are down
//! do not stop the loop (it waits on its queues with a timeout), so they do not cause restarts: reconnecting is
//! the source supervisor's job.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

/// Where notifications go: a socket path, or a Linux abstract socket name (`$NOTIFY_SOCKET` starting with `@`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl NotifyTarget {
    /// Parses `$NOTIFY_SOCKET`'s value.
    pub fn parse(value: &str) -> Option<NotifyTarget> {
        match value.strip_prefix('@') {
            Some(name) if !name.is_empty() => Some(NotifyTarget::Abstract(name.as_bytes().to_vec())),
            Some(_) => None,
            None if value.starts_with('/') => Some(NotifyTarget::Path(PathBuf::from(value))),
            None => None,
        }
    }
}

/// Sends notifications to systemd. Cheap to clone; a `Notifier` without a target ignores every call.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, NotifyTarget)>>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`; a no-op one when it is unset, unusable, or the socket cannot be made.
    pub fn from_env() -> Notifier {
        let Some(target) = std::env::var("NOTIFY_SOCKET").ok().as_deref().and_then(NotifyTarget::parse) else {
            return Notifier::default();
        };
        Notifier::to(target).unwrap_or_else(|e| {
            tracing::warn!("cannot create a socket for systemd notifications: {e}; the watchdog will not be fed");
            Notifier::default()
        })
    }

    /// A notifier that sends to `target` (tests use a temporary socket).
    pub fn to(target: NotifyTarget) -> io::Result<Notifier> {
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier { target: Some(Arc::new((socket, target))) })
    }

    /// True when notifications go somewhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup is done (model loaded, sources started). With `Type=notify` systemd waits for it.
    pub fn ready(&self) {
        self.send_logged("READY=1");
    }

    /// `WATCHDOG=1`: the process is alive and making progress.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }

    /// `STOPPING=1`: shutdown has begun (draining can take a while; systemd then does not count it as a hang).
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1");
    }

    /// `STATUS=...`: one line that `systemctl status` shows.
    pub fn status(&self, text: &str) {
        let line: String = text.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
        self.send_logged(&format!("STATUS={line}"));
    }

    /// Sends one datagram; `Ok(false)` when there is no target.
    pub fn send(&self, message: &str) -> io::Result<bool> {
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let (socket, to) = &**target;
        match to {
            NotifyTarget::Path(path) => socket.send_to(message.as_bytes(), path)?,
            NotifyTarget::Abstract(name) => send_abstract(socket, name, message.as_bytes())?,
        };
        Ok(true)
    }

    fn send_logged(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!("systemd notification {message:?} failed: {e}");
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _message: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets exist only on Linux"))
}

/// systemd's `WatchdogSec` for this process, from `$WATCHDOG_USEC` (ignored when `$WATCHDOG_PID` names another
/// process). `None`: no watchdog is asked for.
pub fn watchdog_timeout() -> Option<Duration> {
    watchdog_timeout_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_timeout`] with the environment given (the test seam).
pub fn watchdog_timeout_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec))
}

/// What the watchdog thread did, returned when it is stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchdogStats {
    /// `WATCHDOG=1` sent.
    pub pings: u64,
    /// Checks that failed, so no ping was sent.
    pub unhealthy: u64,
}

/// The thread that feeds systemd's watchdog while `health` passes. Stop it with [`Watchdog::stop`]; dropping it
/// also stops the thread (the stop channel's sender is dropped, which wakes the thread at once).
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<WatchdogStats>>,
}

impl Watchdog {
    /// Starts the `watchdog` thread: every `every`, `health()` is asked and, if it passes, `WATCHDOG=1` is sent.
    /// Use half of [`watchdog_timeout`] for `every`.
    pub fn spawn(
        notifier: Notifier,
        every: Duration,
        mut health: impl FnMut() -> bool + Send + 'static,
    ) -> io::Result<Watchdog> {
        // Capacity 1: one stop request is all there is; the thread also wakes when the sender is dropped.
        let (stop, stopped): (Sender<()>, Receiver<()>) = bounded(1);
        let thread = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
            let mut stats = WatchdogStats::default();
            loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return stats,
                }
                if health() {
                    notifier.watchdog();
                    stats.pings += 1;
                } else {
                    stats.unhealthy += 1;
                    tracing::warn!("watchdog: no progress in the last {every:?}; not feeding systemd's watchdog");
                }
            }
        })?;
        Ok(Watchdog { stop: Some(stop), thread: Some(thread) })
    }

    /// Stops the thread and returns what it did.
    pub fn stop(mut self) -> WatchdogStats {
        self.finish()
    }

    fn finish(&mut self) -> WatchdogStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            Some(Err(_)) => {
                tracing::error!("the watchdog thread panicked");
                WatchdogStats::default()
            }
            None => WatchdogStats::default(),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A health check for [`Watchdog::spawn`]: passes when the counter that `read` returns moved since the previous
/// check. Give it a counter that the loop to be watched increments on every round, e.g.
/// `advanced(move || progress.infer_rounds.load(Ordering::Relaxed))`.
pub fn advanced(read: impl Fn() -> u64 + Send + 'static) -> impl FnMut() -> bool + Send + 'static {
    let mut last = read();
    move || {
        let now = read();
        let moved = now != last;
        last = now;
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    fn listener() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let notifier = Notifier::to(NotifyTarget::Path(path)).unwrap();
        (dir, socket, notifier)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a datagram within the deadline");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_the_protocol_messages() {
        let (_dir, socket, n) = listener();
        n.ready();
        assert_eq!(recv(&socket), "READY=1");
        n.status("4 sources\nrunning");
        assert_eq!(recv(&socket), "STATUS=4 sources running");
        n.stopping();
        assert_eq!(recv(&socket), "STOPPING=1");
        assert!(!Notifier::default().send("READY=1").unwrap(), "no target: nothing sent, no error");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lookout-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = Notifier::to(NotifyTarget::parse(&format!("@{name}")).unwrap()).unwrap();
        n.watchdog();
        assert_eq!(recv(&socket), "WATCHDOG=1");
    }

    #[test]
    fn parses_the_environment() {
        assert_eq!(NotifyTarget::parse("/run/systemd/notify"), Some(NotifyTarget::Path("/run/systemd/notify".into())));
        assert_eq!(NotifyTarget::parse("@x"), Some(NotifyTarget::Abstract(b"x".to_vec())));
        assert_eq!(NotifyTarget::parse("relative"), None);
        assert_eq!(NotifyTarget::parse("@"), None);
        assert_eq!(watchdog_timeout_from(Some("30000000"), None, 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_timeout_from(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_timeout_from(Some("30000000"), Some("8"), 7), None, "meant for another process");
        assert_eq!(watchdog_timeout_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout_from(None, None, 7), None);
    }

    #[test]
    fn feeds_the_watchdog_only_while_healthy() {
        let (_dir, socket, n) = listener();
        let counter = Arc::new(AtomicU64::new(0));
        let checks = Arc::new(AtomicU64::new(0));
        let (c, k) = (counter.clone(), checks.clone());
        let mut moved = advanced(move || c.load(Ordering::SeqCst));
        let dog = Watchdog::spawn(n, Duration::from_millis(5), move || {
            k.fetch_add(1, Ordering::SeqCst);
            moved()
        })
        .unwrap();
        // The loop goes round: a ping arrives.
        counter.fetch_add(1, Ordering::SeqCst);
        assert_eq!(recv(&socket), "WATCHDOG=1");
        // The loop stops: wait (with a deadline) for two more checks, which must fail.
        let seen = checks.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while checks.load(Ordering::SeqCst) < seen + 2 {
            assert!(Instant::now() < deadline, "the watchdog thread stopped checking");
            std::thread::yield_now();
        }
        let stats = dog.stop();
        assert!(stats.pings >= 1 && stats.unhealthy >= 1, "{stats:?}");
        // Drain what was sent; there are exactly `pings` datagrams in all.
        socket.set_nonblocking(true).unwrap();
        let mut rest = 0;
        let mut buf = [0u8; 64];
        while socket.recv(&mut buf).is_ok() {
            rest += 1;
        }
        assert_eq!(rest + 1, stats.pings, "one datagram per ping");
    }

    #[test]
    fn dropping_stops_the_thread() {
        let checks = Arc::new(AtomicU64::new(0));
        let k = checks.clone();
        let dog = Watchdog::spawn(Notifier::default(), Duration::from_secs(3600), move || {
            k.fetch_add(1, Ordering::SeqCst);
            true
        })
        .unwrap();
        let started = Instant::now();
        drop(dog);
        assert!(started.elapsed() < Duration::from_secs(60), "woken at once, not after the interval");
        assert_eq!(checks.load(Ordering::SeqCst), 0);
    }
}
