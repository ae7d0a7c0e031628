//! The bounded queue between a source thread and the consumer, and the [`Notify`] that lets one consumer wait on
//! many queues.
//!
//! Concurrency: each queue has one mutex (its items and `closed` flag) and two condvars on it (`not_empty`,
//! `not_full`). A queue signals its [`Notify`] *after* releasing its own mutex, so the two locks are never held
//! together and there is no lock order to get wrong.
//!
//! What happens when a queue is full is its [`QueuePolicy`]:
//! - live sources use [`QueuePolicy::DropOldest`]: `push` never waits, the oldest frame is evicted and counted;
//! - files use [`QueuePolicy::Block`]: `push` waits for room, which stalls the GStreamer pipeline (backpressure).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Frame;

/// What a full queue does with a new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Evict the oldest item (live sources: the consumer always gets the freshest frames).
    DropOldest,
    /// Wait for room (files: every frame, in order).
    Block,
}

/// The result of a push.
#[derive(Debug)]
pub enum Pushed<T> {
    /// The item is queued.
    Queued,
    /// The item is queued and this older one was evicted to make room ([`QueuePolicy::DropOldest`] only).
    Evicted(T),
    /// No room before the timeout ([`QueuePolicy::Block`] only); the item is handed back.
    TimedOut(T),
    /// The queue is closed (the consumer is gone or the source ended); the item is handed back.
    Closed(T),
}

/// The result of a pop.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    /// The oldest item.
    Item(T),
    /// Nothing arrived in time; the queue is still open.
    Empty,
    /// The queue is closed and drained: no more items will come.
    Closed,
}

/// A wake-up shared by several queues: each push or close bumps a generation number and wakes waiters.
///
/// Waiters read [`Notify::generation`] *before* checking their queues and pass it to [`Notify::wait`], so a push
/// that lands between the check and the wait is never missed.
#[derive(Debug, Default)]
pub struct Notify {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl Notify {
    /// A new notifier, shared by the queues of one consumer.
    pub fn new() -> Arc<Notify> {
        Arc::new(Notify::default())
    }

    /// The number of notifications so far; read it before checking the queues, then pass it to [`Notify::wait`].
    pub fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        *lock(&self.generation) += 1;
        self.cond.notify_all();
    }

    /// Waits until the generation differs from `seen` or `timeout` passes; returns true if it changed.
    pub fn wait(&self, seen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut generation = lock(&self.generation);
        while *generation == seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            generation = self.cond.wait_timeout(generation, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// Counters of one queue, readable at any time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounters {
    /// Items accepted (including ones later evicted).
    pub pushed: u64,
    /// Items taken by the consumer.
    pub popped: u64,
    /// Items evicted by [`QueuePolicy::DropOldest`].
    pub dropped: u64,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

#[derive(Debug)]
struct Inner<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    policy: QueuePolicy,
    notify: Arc<Notify>,
    pushed: AtomicU64,
    popped: AtomicU64,
    dropped: AtomicU64,
}

/// A bounded multi-producer multi-consumer queue with a full-queue policy. Cloning shares the queue.
#[derive(Debug)]
pub struct FrameQueue<T = Frame> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for FrameQueue<T> {
    fn clone(&self) -> Self {
        FrameQueue { inner: self.inner.clone() }
    }
}

impl<T> FrameQueue<T> {
    /// A queue holding at most `capacity` (≥ 1) items, signalling `notify` on every push and on close.
    pub fn new(capacity: usize, policy: QueuePolicy, notify: Arc<Notify>) -> Self {
        let capacity = capacity.max(1);
        FrameQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State { items: VecDeque::with_capacity(capacity), closed: false }),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
                capacity,
                policy,
                notify,
                pushed: AtomicU64::new(0),
                popped: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// What a full queue does.
    pub fn policy(&self) -> QueuePolicy {
        self.inner.policy
    }

    /// The [`Notify`] this queue signals.
    pub fn notifier(&self) -> &Arc<Notify> {
        &self.inner.notify
    }

    /// Pushes, waiting for room without limit under [`QueuePolicy::Block`] (until a pop or [`FrameQueue::close`]).
    pub fn push(&self, item: T) -> Pushed<T> {
        self.push_inner(item, None)
    }

    /// Pushes, waiting at most `timeout` for room under [`QueuePolicy::Block`]. Never waits under `DropOldest`.
    pub fn push_timeout(&self, item: T, timeout: Duration) -> Pushed<T> {
        self.push_inner(item, Some(Instant::now() + timeout))
    }

    fn push_inner(&self, item: T, deadline: Option<Instant>) -> Pushed<T> {
        let inner = &*self.inner;
        let mut state = lock(&inner.state);
        let mut evicted = None;
        loop {
            if state.closed {
                return Pushed::Closed(item);
            }
            if state.items.len() < inner.capacity {
                break;
            }
            match inner.policy {
                QueuePolicy::DropOldest => {
                    evicted = state.items.pop_front();
                    inner.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                QueuePolicy::Block => {
                    let wait = match deadline {
                        None => Duration::from_secs(3600),
                        Some(d) => match d.checked_duration_since(Instant::now()) {
                            Some(w) if !w.is_zero() => w,
                            _ => return Pushed::TimedOut(item),
                        },
                    };
                    state = inner.not_full.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
        state.items.push_back(item);
        inner.pushed.fetch_add(1, Ordering::Relaxed);
        drop(state);
        inner.not_empty.notify_one();
        inner.notify.notify();
        match evicted {
            Some(old) => Pushed::Evicted(old),
            None => Pushed::Queued,
        }
    }

    /// Takes the oldest item without waiting.
    pub fn try_pop(&self) -> Popped<T> {
        let mut state = lock(&self.inner.state);
        self.take(&mut state)
    }

    /// Takes the oldest item, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Popped<T> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.inner.state);
        loop {
            match self.take(&mut state) {
                Popped::Empty => {}
                done => return done,
            }
            let now = Instant::now();
            if now >= deadline {
                return Popped::Empty;
            }
            state = self.inner.not_empty.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn take(&self, state: &mut State<T>) -> Popped<T> {
        match state.items.pop_front() {
            Some(item) => {
                self.inner.popped.fetch_add(1, Ordering::Relaxed);
                self.inner.not_full.notify_one();
                Popped::Item(item)
            }
            None if state.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Closes the queue: pushes fail from now on, pops drain what is left and then see [`Popped::Closed`].
    /// The source closes it when it ends; the consumer may close it to say it is gone. Idempotent.
    pub fn close(&self) {
        lock(&self.inner.state).closed = true;
        self.inner.not_empty.notify_all();
        self.inner.not_full.notify_all();
        self.inner.notify.notify();
    }

    /// True once [`FrameQueue::close`] was called (items may still be waiting to be popped).
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.state).closed
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).items.len()
    }

    /// No item waiting now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushed, popped and dropped counts since the queue was made.
    pub fn counters(&self) -> QueueCounters {
        QueueCounters {
            pushed: self.inner.pushed.load(Ordering::Relaxed),
            popped: self.inner.popped.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }
}

/// One round of a fair consumer: at most one item from each queue.
#[derive(Debug)]
pub struct Batch<T> {
    /// `(queue position in the slice, item)`, in queue order.
    pub items: Vec<(usize, T)>,
    /// Every queue is closed and drained: the consumer is done.
    pub all_closed: bool,
}

/// Waits up to `timeout` until any of `queues` has an item, then takes at most one item from each.
///
/// Taking one per queue per round is the fairness rule: a fast file cannot starve a camera, and the round is the
/// natural inference batch (one frame per source). All queues should signal `notify` (build them with the same
/// [`Notify`]). Returns an empty batch on timeout.
pub fn next_batch<T>(queues: &[FrameQueue<T>], notify: &Notify, timeout: Duration) -> Batch<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = notify.generation();
        let mut items = Vec::new();
        let mut closed = 0;
        for (i, q) in queues.iter().enumerate() {
            match q.try_pop() {
                Popped::Item(item) => items.push((i, item)),
                Popped::Closed => closed += 1,
                Popped::Empty => {}
            }
        }
        let all_closed = closed == queues.len();
        if !items.is_empty() || all_closed {
            return Batch { items, all_closed };
        }
        let now = Instant::now();
        if now >= deadline || !notify.wait(seen, deadline - now) {
            return Batch { items, all_closed };
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_freshest() {
        let q = FrameQueue::new(2, QueuePolicy::DropOldest, Notify::new());
        for i in 0..5 {
            match q.push(i) {
                Pushed::Queued => assert!(i < 2),
                Pushed::Evicted(old) => assert_eq!(old, i - 2),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(q.try_pop(), Popped::Item(3));
        assert_eq!(q.try_pop(), Popped::Item(4));
        assert_eq!(q.try_pop(), Popped::Empty);
        assert_eq!(q.counters(), QueueCounters { pushed: 5, popped: 2, dropped: 3 });
    }

    #[test]
    fn block_waits_and_times_out() {
        let q = FrameQueue::new(1, QueuePolicy::Block, Notify::new());
        assert!(matches!(q.push(1), Pushed::Queued));
        assert!(matches!(q.push_timeout(2, Duration::from_millis(20)), Pushed::TimedOut(2)));
        let q2 = q.clone();
        let producer =
            std::thread::spawn(move || matches!(q2.push_timeout(2, Duration::from_secs(10)), Pushed::Queued));
        assert_eq!(q.pop_timeout(Duration::from_secs(10)), Popped::Item(1));
        assert!(producer.join().unwrap());
        assert_eq!(q.pop_timeout(Duration::from_secs(10)), Popped::Item(2));
    }

    #[test]
    fn close_wakes_and_drains() {
        let q = FrameQueue::new(1, QueuePolicy::Block, Notify::new());
        assert!(matches!(q.push(1), Pushed::Queued));
        let q2 = q.clone();
        let producer = std::thread::spawn(move || matches!(q2.push(2), Pushed::Closed(2)));
        q.close();
        assert!(producer.join().unwrap());
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Popped::Item(1));
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Popped::Closed);
    }

    #[test]
    fn batches_are_fair_and_wake_on_push() {
        let notify = Notify::new();
        let a = FrameQueue::new(4, QueuePolicy::Block, notify.clone());
        let b = FrameQueue::new(4, QueuePolicy::Block, notify.clone());
        for i in 0..3 {
            a.push(i);
        }
        let queues = [a.clone(), b.clone()];
        let batch = next_batch(&queues, &notify, Duration::from_millis(10));
        assert_eq!(batch.items, [(0, 0)]);
        b.push(10);
        let batch = next_batch(&queues, &notify, Duration::from_millis(10));
        assert_eq!(batch.items, [(0, 1), (1, 10)]);

        let b2 = b.clone();
        let pusher = std::thread::spawn(move || {
            b2.push(11);
        });
        a.pop_timeout(Duration::ZERO);
        let batch = next_batch(&queues, &notify, Duration::from_secs(10));
        pusher.join().unwrap();
        assert!(!batch.items.is_empty());

        a.close();
        b.close();
        let mut rest = Vec::new();
        for _ in 0..10 {
            let batch = next_batch(&queues, &notify, Duration::from_secs(10));
            rest.extend(batch.items);
            if batch.all_closed {
                break;
            }
        }
        assert!(queues.iter().all(|q| q.is_empty()));
    }
}
