//! The queue of one destination: what callers hand over, the worker's memory queue, and the spool, delivered in
//! the order the alerts were made.
//!
//! # Concurrency
//!
//! Each destination has one [`Shared`], held by the [`Alerter`](super::Alerter) (callers) and by the
//! destination's worker thread (its [`Outbox`]).
//! - Locks are taken in this order: `intake`, then `spool`, then `stats`. `stats` and `unsent` are leaves:
//!   nothing is locked while one is held.
//! - A caller takes `intake`, gives the alert the next sequence number and tries the bounded channel; if the
//!   channel is full (or the worker is gone) it writes the alert to the spool *while still holding `intake`*.
//!   So sequence numbers go into the channel and the spool in order.
//! - The worker picks the next alert with `intake` held: it empties the channel, then compares the head of its
//!   memory queue with the first spool entry after its cursor. Holding `intake` means no caller can spool an
//!   alert in between, so every alert older than the spool's head is already in the worker's hands, and the
//!   smaller of the two heads is the oldest alert not yet sent.
//!
//! # Where an alert waits
//!
//! - Destination up: in the channel (capacity [`AlertSettings::queue_capacity`](super::AlertSettings), then
//!   the spool), then in the worker's memory queue (same capacity, then the spool).
//! - Destination down, or a delivery failed: in the spool. Everything in memory is moved there, so a crash
//!   loses nothing that was accepted.
//!
//! An alert delivered from the spool is "late": events get `"delivered_late": true`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tracing::{error, warn};

use super::spool::{Spool, SpoolError};
use super::{AlertKind, DestinationStats};

/// Locks `m`, going on with the data if a thread panicked while holding it (every update here is a whole
/// assignment or a counter, never left half done).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One alert for one destination.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    /// Order of the alert among this destination's alerts, across runs (it continues from the spool).
    pub seq: u64,
    /// The source's name, as the caller gave it.
    pub source: Arc<str>,
    pub kind: AlertKind,
    /// The event's JSON or the snapshot's JPEG, shared by every destination.
    pub payload: Arc<[u8]>,
}

/// What callers and the worker share for one destination.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The destination as logs name it (password removed).
    pub name: String,
    pub intake: Mutex<Intake>,
    pub spool: Mutex<Spool>,
    pub stats: Mutex<DestinationStats>,
    /// Every alert handed to the worker that is neither confirmed, refused nor in the spool: in the channel, in
    /// the worker's memory queue or in flight. A leaf lock. [`Shared::keep_unsent`] writes them to the spool when
    /// the process is about to exit without waiting for the worker.
    unsent: Mutex<BTreeMap<u64, Alert>>,
    /// Set once, when the alerter shuts down: the worker delivers what it can until then.
    deadline: OnceLock<Instant>,
    /// Whether a spool write error (a full disk) was reported in this episode; cleared by the next write that
    /// works, so a full disk gives one line, not one per alert.
    spool_error_reported: AtomicBool,
    capacity: usize,
}

/// The callers' side of the queue.
#[derive(Debug)]
pub(crate) struct Intake {
    next_seq: u64,
    /// `None` once the alerter has shut down (later alerts go to the spool, for the next start).
    tx: Option<Sender<Alert>>,
    /// Whether "queue full" was reported in this episode.
    full_warned: bool,
}

impl Shared {
    /// The shared part and the worker's receiving end, for a destination whose spool is `spool`.
    pub fn new(name: String, spool: Spool, capacity: usize) -> (Arc<Shared>, Receiver<Alert>) {
        let capacity = capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let next_seq = spool.last_seq().map_or(1, |s| s + 1);
        let stats = DestinationStats {
            destination: name.clone(),
            spool_entries: spool.len(),
            spool_bytes: spool.bytes(),
            ..DestinationStats::default()
        };
        let shared = Shared {
            name,
            intake: Mutex::new(Intake { next_seq, tx: Some(tx), full_warned: false }),
            spool: Mutex::new(spool),
            stats: Mutex::new(stats),
            unsent: Mutex::new(BTreeMap::new()),
            deadline: OnceLock::new(),
            spool_error_reported: AtomicBool::new(false),
            capacity,
        };
        (Arc::new(shared), rx)
    }

    /// Hands an alert to the worker, or to the spool when the worker's queue is full. Never waits for the
    /// destination; at worst it waits for one spool write.
    pub fn offer(&self, source: &Arc<str>, kind: AlertKind, payload: &Arc<[u8]>) {
        let mut intake = lock(&self.intake);
        let alert = Alert { seq: intake.next_seq, source: source.clone(), kind, payload: payload.clone() };
        intake.next_seq += 1;
        lock(&self.stats).offered += 1;
        // Recorded before it is sent: the worker may take it, and confirm or spool it, at once.
        lock(&self.unsent).insert(alert.seq, alert.clone());
        let alert = match intake.tx.as_ref().map(|tx| tx.try_send(alert.clone())) {
            Some(Ok(())) => {
                intake.full_warned = false;
                return;
            }
            Some(Err(TrySendError::Full(_))) => {
                if !std::mem::replace(&mut intake.full_warned, true) {
                    warn!(
                        "alerts for {}: the queue of {} alerts is full (the destination is slow or down); \
                         further alerts go to the spool until it catches up",
                        self.name, self.capacity
                    );
                }
                alert
            }
            Some(Err(TrySendError::Disconnected(_))) | None => alert,
        };
        self.store(&alert);
    }

    /// Writes an alert to the spool, reporting (not returning) a failure: the alert stays in `events.jsonl`.
    /// Returns whether it was stored.
    fn store(&self, alert: &Alert) -> bool {
        lock(&self.unsent).remove(&alert.seq);
        let mut spool = lock(&self.spool);
        let result = spool.append(alert.seq, &alert.source, alert.kind, &alert.payload);
        let (entries, bytes) = (spool.len(), spool.bytes());
        let first_full = matches!(result, Err(SpoolError::Full { .. })) && spool.note_full();
        drop(spool);
        let mut stats = lock(&self.stats);
        stats.spool_entries = entries;
        stats.spool_bytes = bytes;
        match result {
            Ok(()) => {
                stats.spooled += 1;
                self.spool_error_reported.store(false, Ordering::Relaxed);
                true
            }
            Err(e) => {
                stats.dropped += 1;
                drop(stats);
                match e {
                    SpoolError::Full { .. } if first_full => warn!(
                        "alerts for {}: {e}; new alerts for it are dropped until it drains (they remain in \
                         events.jsonl). Check that {} is reachable, or raise the spool limits",
                        self.name, self.name
                    ),
                    SpoolError::Full { .. } => {}
                    e if !self.spool_error_reported.swap(true, Ordering::Relaxed) => error!(
                        "alerts for {}: cannot spool a {} from {}: {e}; it is not delivered (it remains in \
                         events.jsonl), nor are the next ones until the spool can be written again. Check free \
                         space and permissions there",
                        self.name,
                        alert.kind.as_str(),
                        alert.source
                    ),
                    _ => {}
                }
                false
            }
        }
    }

    /// Starts the shutdown: the worker delivers what it can until `deadline`, and later alerts go to the spool.
    pub fn close(&self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
        lock(&self.intake).tx = None;
    }

    /// For an exit that does not wait for the worker (a second Ctrl-C): stops the deliveries, sends later alerts
    /// to the spool, and writes there every alert not yet confirmed, so the next start delivers it. One that the
    /// destination confirms meanwhile is delivered twice (at least once, as always). Returns how many it wrote.
    pub fn keep_unsent(&self) -> usize {
        self.close(Instant::now());
        let unsent: Vec<Alert> = lock(&self.unsent).values().cloned().collect();
        unsent.iter().filter(|a| self.store(a)).count()
    }

    /// How many alerts are in the channel, in memory or in flight (not in the spool).
    pub fn unsent(&self) -> usize {
        lock(&self.unsent).len()
    }

    /// The alert `seq` left the worker's hands (confirmed or refused).
    fn settled(&self, seq: u64) {
        lock(&self.unsent).remove(&seq);
    }

    fn refresh_spool_stats(&self, spool: &Spool) {
        let mut stats = lock(&self.stats);
        stats.spool_entries = spool.len();
        stats.spool_bytes = spool.bytes();
    }
}

/// An alert on its way out.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub seq: u64,
    pub source: Arc<str>,
    pub kind: AlertKind,
    /// What goes on the wire: for a late event, the JSON with `"delivered_late": true`.
    pub payload: Arc<[u8]>,
    /// Whether it comes from the spool (and stays there until confirmed).
    pub late: bool,
}

/// What happened while waiting for alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// An alert arrived (and was put in memory or the spool).
    Arrived,
    /// The time given passed.
    TimedOut,
    /// The alerter shut down and the channel is empty.
    Closed,
}

/// The worker's side of the queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    rx: Receiver<Alert>,
    /// Alerts taken from the channel while the destination is up, oldest first.
    mem: VecDeque<Alert>,
    /// The last spool entry handed out in this delivery session: entries up to it are in flight.
    cursor: Option<u64>,
    closed: bool,
}

impl Outbox {
    pub fn new(shared: Arc<Shared>, rx: Receiver<Alert>) -> Outbox {
        Outbox { shared, rx, mem: VecDeque::new(), cursor: None, closed: false }
    }

    /// When the alerter shut down: deliver until then.
    pub fn deadline(&self) -> Option<Instant> {
        self.shared.deadline.get().copied()
    }

    /// Puts an alert taken from the channel in memory (when the destination is up and there is room) or in the
    /// spool.
    fn place(&mut self, alert: Alert, up: bool) {
        if up && self.mem.len() < self.shared.capacity {
            self.mem.push_back(alert);
        } else {
            self.shared.store(&alert);
        }
    }

    fn drain(&mut self, up: bool) {
        loop {
            match self.rx.try_recv() {
                Ok(alert) => self.place(alert, up),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    /// The oldest alert not yet handed out, for a destination that is up; `None` when there is nothing to send.
    pub fn next(&mut self) -> Option<Delivery> {
        loop {
            let from_spool = {
                // Holding `intake` keeps callers from spooling while the two heads are compared (see above).
                let shared = self.shared.clone();
                let _intake = lock(&shared.intake);
                self.drain(true);
                let first = lock(&self.shared.spool).first_after(self.cursor);
                match (self.mem.front(), first) {
                    (Some(m), Some(s)) if s < m.seq => s,
                    (Some(_), _) => {
                        let a = self.mem.pop_front().expect("front exists");
                        return Some(Delivery {
                            seq: a.seq,
                            source: a.source,
                            kind: a.kind,
                            payload: a.payload,
                            late: false,
                        });
                    }
                    (None, Some(s)) => s,
                    (None, None) => return None,
                }
            };
            self.cursor = Some(from_spool);
            let read = lock(&self.shared.spool).read(from_spool);
            match read {
                Ok(rec) => {
                    let payload = match rec.kind {
                        AlertKind::Event => with_late_flag(&rec.payload),
                        AlertKind::Snapshot => rec.payload,
                    };
                    return Some(Delivery {
                        seq: rec.seq,
                        source: rec.source.into(),
                        kind: rec.kind,
                        payload: payload.into(),
                        late: true,
                    });
                }
                Err(e @ SpoolError::Corrupt { .. }) => {
                    let mut spool = lock(&self.shared.spool);
                    let moved = spool.reject(from_spool);
                    self.shared.refresh_spool_stats(&spool);
                    drop(spool);
                    lock(&self.shared.stats).rejected += 1;
                    match moved {
                        Ok(to) => {
                            error!("alerts for {}: {e}; moved it to {} and went on", self.shared.name, to.display())
                        }
                        Err(e2) => error!("alerts for {}: {e}; it could not be moved aside: {e2}", self.shared.name),
                    }
                }
                // Perhaps passing (no file descriptors left): skip it for now, it stays in the spool and is tried
                // again after the next reconnect or start.
                Err(e) => error!("alerts for {}: {e}; skipping it for now", self.shared.name),
            }
        }
    }

    /// Moves whatever is in the channel to the spool (the destination is down).
    pub fn absorb(&mut self) {
        self.drain(false);
    }

    /// Waits until `until` (or forever) for an alert, and puts it in memory (`up`) or the spool.
    ///
    /// Once the alerter has shut down nothing can arrive, and this is a plain wait until `until` (or none).
    pub fn wait(&mut self, until: Option<Instant>, up: bool) -> Waited {
        if self.closed {
            if let Some(t) = until {
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
            }
            return Waited::Closed;
        }
        let got = match until {
            Some(t) => self.rx.recv_deadline(t),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(alert) => {
                self.place(alert, up);
                Waited::Arrived
            }
            Err(RecvTimeoutError::Timeout) => Waited::TimedOut,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Waited::Closed
            }
        }
    }

    /// A delivery that did not go through goes back to the spool (late ones are still there).
    pub fn spill(&mut self, d: Delivery) {
        if !d.late {
            self.shared.store(&Alert { seq: d.seq, source: d.source, kind: d.kind, payload: d.payload });
        }
    }

    /// Moves the memory queue to the spool (the destination went down, or the worker is stopping).
    pub fn spill_memory(&mut self) {
        while let Some(a) = self.mem.pop_front() {
            self.shared.store(&a);
        }
    }

    /// Starts a new delivery session: spool entries handed out before are sent again.
    pub fn rewind(&mut self) {
        self.cursor = None;
    }

    /// Whether nothing is waiting to be handed out (in flight is the worker's business).
    pub fn is_drained(&mut self) -> bool {
        {
            let shared = self.shared.clone();
            let _intake = lock(&shared.intake);
            self.drain(true);
        }
        self.mem.is_empty() && lock(&self.shared.spool).first_after(self.cursor).is_none()
    }

    /// The destination confirmed `d`.
    pub fn delivered(&mut self, d: &Delivery) {
        self.shared.settled(d.seq);
        if d.late {
            let mut spool = lock(&self.shared.spool);
            if let Err(e) = spool.remove(d.seq) {
                error!(
                    "alerts for {}: {e}; the alert was delivered and will be delivered again at the next start",
                    self.shared.name
                );
            }
            self.shared.refresh_spool_stats(&spool);
        }
        let mut stats = lock(&self.shared.stats);
        stats.delivered += 1;
        stats.delivered_late += u64::from(d.late);
    }

    /// The destination refused `d` for good: it is kept in `rejected/` and not retried.
    pub fn reject(&mut self, d: &Delivery, why: &str) {
        self.shared.settled(d.seq);
        let mut spool = lock(&self.shared.spool);
        let moved =
            if d.late { spool.reject(d.seq) } else { spool.write_rejected(d.seq, &d.source, d.kind, &d.payload) };
        self.shared.refresh_spool_stats(&spool);
        drop(spool);
        lock(&self.shared.stats).rejected += 1;
        let what = format!("a {} from {}", d.kind.as_str(), d.source);
        match moved {
            Ok(to) => error!(
                "alerts for {}: {what} was refused: {why}; it is kept in {} and not retried",
                self.shared.name,
                to.display()
            ),
            Err(e) => error!("alerts for {}: {what} was refused: {why}; it could not be kept: {e}", self.shared.name),
        }
    }

    /// Records a failed attempt (connection lost, HTTP 5xx, timeout).
    pub fn note_failure(&self, connected: bool) {
        let mut stats = lock(&self.shared.stats);
        stats.failures += 1;
        stats.connected = connected;
    }

    pub fn note_connected(&self, connected: bool) {
        lock(&self.shared.stats).connected = connected;
    }

    /// Entries now in the spool.
    pub fn spooled(&self) -> u64 {
        lock(&self.shared.spool).len()
    }
}

/// `json` with `"delivered_late":true` added as the last field, leaving the rest byte for byte; anything but a
/// JSON object (or one that already says it) is returned as it is.
pub(crate) fn with_late_flag(json: &[u8]) -> Vec<u8> {
    let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json) else {
        return json.to_vec();
    };
    if map.contains_key("delivered_late") {
        return json.to_vec();
    }
    let Some(close) = json.iter().rposition(|b| *b == b'}') else { return json.to_vec() };
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(&json[..close]);
    if !map.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(b"\"delivered_late\":true");
    out.extend_from_slice(&json[close..]);
    out
}

/// Exponential backoff with jitter, so that many devices do not retry in step after a broker restart.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Backoff { initial, max: max.max(initial), next: initial, rng: (seed as u64) | 1 }
    }

    /// The wait before the next attempt: the current step less up to a quarter, then the step doubles up to the
    /// maximum.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: plenty for spreading retries.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = (self.rng % 1000) as f64 / 4000.0;
        step.mul_f64(1.0 - jitter)
    }

    /// After a success: start again from the first step.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::alerts::spool::SpoolSettings;

    #[test]
    fn late_flag_is_appended_keeping_field_order() {
        assert_eq!(with_late_flag(br#"{"type":"start","n":3}"#), br#"{"type":"start","n":3,"delivered_late":true}"#);
        assert_eq!(with_late_flag(b"{ }\n"), b"{ \"delivered_late\":true}\n");
        assert_eq!(with_late_flag(b"[1]"), b"[1]");
        assert_eq!(with_late_flag(b"not json"), b"not json");
        assert_eq!(with_late_flag(br#"{"delivered_late":false}"#), br#"{"delivered_late":false}"#);
    }

    #[test]
    fn backoff_grows_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let within =
            |d: Duration, step: u64| d <= Duration::from_millis(step) && d >= Duration::from_millis(step * 3 / 4);
        assert!(within(d[0], 100) && within(d[1], 200) && within(d[2], 350) && within(d[4], 350), "{d:?}");
        b.reset();
        assert!(within(b.next_delay(), 100));
    }

    fn outbox(dir: &std::path::Path, capacity: usize) -> (Arc<Shared>, Outbox) {
        let spool = Spool::open(dir, &SpoolSettings::new(dir)).unwrap();
        let (shared, rx) = Shared::new("test".into(), spool, capacity);
        (shared.clone(), Outbox::new(shared, rx))
    }

    fn offer(shared: &Shared, n: u32) {
        let payload: Arc<[u8]> = format!("{{\"n\":{n}}}").into_bytes().into();
        shared.offer(&Arc::from("gate"), AlertKind::Event, &payload);
    }

    #[test]
    fn a_spool_that_cannot_be_written_is_reported_once_per_episode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let (shared, _out) = outbox(&dir, 1);
        offer(&shared, 1); // in the channel
        std::fs::remove_dir_all(&dir).unwrap(); // every spool write fails from now on
        for n in 2..=4 {
            offer(&shared, n);
        }
        assert_eq!(lock(&shared.stats).dropped, 3);
        assert!(shared.spool_error_reported.load(Ordering::Relaxed));
        std::fs::create_dir_all(&dir).unwrap();
        offer(&shared, 5);
        assert_eq!(lock(&shared.stats).spooled, 1);
        assert!(!shared.spool_error_reported.load(Ordering::Relaxed), "a write that works ends the episode");
    }

    fn n_of(d: &Delivery) -> u64 {
        serde_json::from_slice::<serde_json::Value>(&d.payload).unwrap()["n"].as_u64().unwrap()
    }

    #[test]
    fn alerts_that_overflow_to_the_spool_keep_their_place() {
        let tmp = tempfile::tempdir().unwrap();
        let (shared, mut out) = outbox(tmp.path(), 2);
        for n in 1..=5 {
            offer(&shared, n); // 1, 2 in the channel; 3, 4, 5 spooled by the caller
        }
        assert_eq!(lock(&shared.stats).spooled, 3);
        let mut got = Vec::new();
        while let Some(d) = out.next() {
            got.push((n_of(&d), d.late));
            if n_of(&d) == 3 {
                offer(&shared, 6); // arrives while older alerts are still spooled
            }
            out.delivered(&d);
        }
        assert_eq!(got, vec![(1, false), (2, false), (3, true), (4, true), (5, true), (6, false)]);
        assert!(lock(&shared.spool).is_empty());
        let stats = lock(&shared.stats).clone();
        assert_eq!((stats.offered, stats.delivered, stats.delivered_late, stats.spool_entries), (6, 6, 3, 0));
        assert_eq!(shared.unsent(), 0, "every alert settled: nothing left for an abort to keep");
    }

    #[test]
    fn a_failed_delivery_is_sent_again_first_and_late() {
        let tmp = tempfile::tempdir().unwrap();
        let (shared, mut out) = outbox(tmp.path(), 8);
        for n in 1..=3 {
            offer(&shared, n);
        }
        let first = out.next().unwrap();
        let second = out.next().unwrap();
        out.delivered(&first);
        // The connection drops with 2 in flight: it and the memory queue go to the spool.
        out.spill(second);
        out.spill_memory();
        out.rewind();
        assert_eq!(out.spooled(), 2);
        let again: Vec<(u64, bool)> = std::iter::from_fn(|| out.next()).map(|d| (n_of(&d), d.late)).collect();
        assert_eq!(again, vec![(2, true), (3, true)]);
        assert_eq!(shared.unsent(), 0, "the spilled alerts are in the spool, not unsent");
        drop(out);

        // A new start continues the sequence after what the spool holds.
        let (shared2, mut out2) = outbox(tmp.path(), 8);
        offer(&shared2, 4);
        let order: Vec<u64> = std::iter::from_fn(|| out2.next()).map(|d| n_of(&d)).collect();
        assert_eq!(order, vec![2, 3, 4]);
    }

    #[test]
    fn an_exit_that_cannot_wait_keeps_every_unconfirmed_alert_for_the_next_start() {
        let tmp = tempfile::tempdir().unwrap();
        let (shared, mut out) = outbox(tmp.path(), 3);
        for n in 1..=7 {
            offer(&shared, n); // 1-3 in the channel, 4-7 spooled
        }
        let delivered = out.next().unwrap(); // 1, confirmed
        out.delivered(&delivered);
        let refused = out.next().unwrap(); // 2, refused for good (kept in rejected/, not retried)
        out.reject(&refused, "400 Bad Request");
        let _in_flight = out.next().unwrap(); // 3, sent, not confirmed
        offer(&shared, 8); // in the worker's channel
        assert_eq!(shared.unsent(), 2, "3 in flight and 8 queued");

        // The process exits now (a second Ctrl-C), with the worker still holding 3.
        assert_eq!(shared.keep_unsent(), 2);
        assert_eq!(shared.unsent(), 0);
        offer(&shared, 9); // made after: straight to the spool
        drop(out);

        // The next start delivers everything not confirmed, in order, late; nothing confirmed or refused again.
        let (_shared2, mut out2) = outbox(tmp.path(), 8);
        let again: Vec<(u64, bool)> = std::iter::from_fn(|| out2.next()).map(|d| (n_of(&d), d.late)).collect();
        assert_eq!(again, vec![(3, true), (4, true), (5, true), (6, true), (7, true), (8, true), (9, true)]);
    }
}
