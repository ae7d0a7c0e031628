//! Turns on the cores between inference and the verifier: their graphs never run at the same time.
//!
//! On a CPU each graph runs on every core (ONNX Runtime's intra-op pool). Run side by side, each slows the other by
//! more than its own work: an operator of the detector ends when its slowest thread does, so a verifier that holds
//! one core for a moment holds back the whole operator. Measured (BENCHMARKS.md, `make bench-verify`): a verifier
//! on its own thread that needed about 2 % of the CPU made each inference 8 % slower. Taken in turns, each runs at
//! full speed on all the cores, and an event's verification costs its own time, once.
//!
//! The verifier asks for the next turn; inference ends the batch it is running and waits for the verifier's run
//! before starting another. A verification waits at most one batch, and inference at most one verifier run (X-CLIP
//! B/32 on two cores: about 0.15 s in int8, 0.45 s in fp32): live sources keep their newest frames meanwhile (their
//! queues drop the oldest), files wait. Nothing else is held in a turn, so neither side can wait on the other twice.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Whose turn it is (see the module documentation). One per run, shared by the inference and verify threads.
#[derive(Debug, Default)]
pub struct Turns {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    inferring: bool,
    verifier_waiting: bool,
    verifier_running: bool,
    /// Time inference waited for the verifier's turns, and the verifier's turns themselves, over the run.
    inference_waited: Duration,
    verifier_held: Duration,
}

/// What the turns cost inference over a run (the summary's `verification`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnTotals {
    /// Time inference waited for the verifier, in total.
    pub inference_waited: Duration,
    /// Time the verifier held its turns, in total.
    pub verifier_held: Duration,
}

/// Who holds a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Inference,
    Verifier,
}

/// A turn, given back when dropped.
#[must_use = "the turn ends when this is dropped"]
pub struct Turn<'a> {
    turns: &'a Turns,
    role: Role,
    since: Instant,
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn for one inference batch: waits while the verifier runs or has asked for the next turn.
    pub fn inference(&self) -> Turn<'_> {
        let asked = Instant::now();
        let mut s = self.lock();
        let waits = s.verifier_waiting || s.verifier_running;
        while s.verifier_waiting || s.verifier_running {
            s = self.wait(s);
        }
        s.inferring = true;
        let since = Instant::now();
        if waits {
            s.inference_waited += since - asked;
        }
        Turn { turns: self, role: Role::Inference, since }
    }

    /// A turn for one verifier run: the next one, once the batch being inferred (if any) has ended.
    pub fn verifier(&self) -> Turn<'_> {
        let mut s = self.lock();
        s.verifier_waiting = true;
        while s.inferring {
            s = self.wait(s);
        }
        s.verifier_waiting = false;
        s.verifier_running = true;
        Turn { turns: self, role: Role::Verifier, since: Instant::now() }
    }

    /// What the turns have cost so far.
    pub fn totals(&self) -> TurnTotals {
        let s = self.lock();
        TurnTotals { inference_waited: s.inference_waited, verifier_held: s.verifier_held }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut s = self.turns.lock();
        match self.role {
            Role::Inference => s.inferring = false,
            Role::Verifier => {
                s.verifier_running = false;
                s.verifier_held += self.since.elapsed();
            }
        }
        drop(s);
        self.turns.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The two never hold a turn at once, however their requests interleave, and both make progress.
    #[test]
    fn inference_and_verifier_never_overlap_and_neither_starves() {
        let turns = Arc::new(Turns::default());
        let busy = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        let work = |busy: &AtomicUsize, overlap: &AtomicBool| {
            if busy.fetch_add(1, Ordering::SeqCst) != 0 {
                overlap.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_micros(200));
            busy.fetch_sub(1, Ordering::SeqCst);
        };
        let (t, b, o) = (turns.clone(), busy.clone(), overlap.clone());
        // Inference runs back to back, as on a file that is never short of frames: the verifier must still get in.
        let inference = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut batches = 0;
            while batches < 400 && Instant::now() < deadline {
                let _turn = t.inference();
                work(&b, &o);
                batches += 1;
            }
            batches
        });
        let mut verified = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while verified < 20 && Instant::now() < deadline {
            let _turn = turns.verifier();
            work(&busy, &overlap);
            verified += 1;
        }
        let batches = inference.join().unwrap();
        assert!(!overlap.load(Ordering::SeqCst), "a batch and a verifier run overlapped");
        assert_eq!(verified, 20, "the verifier got its turns while inference ran back to back");
        assert_eq!(batches, 400);
    }

    /// Inference waits for a verifier run that has its turn, and goes on as soon as it ends.
    #[test]
    fn inference_waits_for_the_running_verifier() {
        let turns = Arc::new(Turns::default());
        let held = turns.verifier();
        let t = turns.clone();
        let (asking, asked) = std::sync::mpsc::channel();
        let inference = std::thread::spawn(move || {
            asking.send(()).unwrap();
            let _turn = t.inference();
            Instant::now()
        });
        // The verifier holds its turn for 300 ms after inference asks for one.
        asked.recv_timeout(Duration::from_secs(10)).expect("the inference thread started");
        std::thread::sleep(Duration::from_millis(300));
        let given_back = Instant::now();
        drop(held);
        let got = inference.join().unwrap();
        assert!(got >= given_back, "inference started during the verifier's turn");
        // The totals: inference's wait (from its asking to its turn), and the verifier's turn as it held it. The
        // wait ends only when the inference thread wakes after the turn was given back, so it can exceed the
        // verifier's turn by that wake-up, never by much.
        let t = turns.totals();
        assert!(t.verifier_held >= Duration::from_millis(300), "{t:?}");
        assert!(t.inference_waited > Duration::ZERO, "{t:?}");
        assert!(t.inference_waited <= t.verifier_held + Duration::from_secs(1), "{t:?}");
        let _turn = turns.inference();
        assert_eq!(turns.totals().inference_waited, t.inference_waited, "a turn not waited for adds nothing");
    }
}
