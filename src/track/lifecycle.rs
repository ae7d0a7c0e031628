//! The event engine: when a query matched by a track becomes an event, and when that event ends.
//!
//! The [`Tracker`](super::Tracker) is the association layer: it says which box on this frame is the same
//! object as on the last one. [`EventLifecycle`] decides what is worth an event. One state machine runs for
//! each (query, track) pair. It is fed the tracker's outputs of every inference frame, and the time of the
//! frame in seconds of *stream* time (the frame's PTS), which the caller passes in. Nothing here reads a
//! clock, so the same frames give the same events, and a test's simulated clock is just the times it passes.
//!
//! A track *matches* on an inference frame when the tracker matched it to a detection on that very frame
//! (`matched_this_frame`) with a score at or above the query's threshold.
//!
//! # States of one (query, track)
//!
//! | state   | on a frame at stream time `t`                                          | next    | emits     |
//! |---------|------------------------------------------------------------------------|---------|-----------|
//! | Idle    | match, and no cooldown running (`t >= cooldown_until`)                 | Pending | -         |
//! | Idle    | match during the cooldown                                              | Idle    | - (counted in `suppressed`) |
//! | Idle    | `t >= cooldown_until`                                                  | (forgotten) | -     |
//! | Pending | `min_frames` of the last `window` inference frames matched             | Active  | `start`   |
//! | Pending | none of the last `window` inference frames matched (flicker)           | Idle    | -         |
//! | Active  | match, `update_interval_s` since the last `start`/`update`             | Active  | `update`  |
//! | Active  | no match nor still frame since `t - end_after_s` (the match is gone)   | Ending  | `end` (`lost`) |
//! | Ending  | `t >= end + post_roll_s` (end: the last match)                         | Idle, cooldown until `t_end + cooldown_s` | `closed` |
//! | Pending | [`EventLifecycle::finish`]                                             | Idle    | -         |
//! | Active  | [`EventLifecycle::finish`]                                             | Idle    | `end` (`eos` or `shutdown`), `closed` |
//! | Ending  | [`EventLifecycle::finish`]                                             | Idle    | `closed`  |
//!
//! - Windows count inference frames of the source, not frames of the video: with inference on every 5th
//!   frame, `window = 3` spans 15 video frames. A track the tracker dropped counts as not matching.
//! - A frame the motion gate skipped because nothing moved ([`EventLifecycle::hold`]) is not a miss: an Active
//!   event's match counts as missing only from the last such frame on, so a target that stands still for
//!   longer than `end_after_s` keeps its event. Windows do not move on it.
//! - Time only drives Active → Ending and Ending → Idle and the cooldown, so [`EventLifecycle::advance`]
//!   applies them on the frames between inference frames too.
//! - The `end` line is written as soon as the match has been gone for `end_after_s`; its end time is that of
//!   the last match. Ending then lasts until the post-roll after that last match has been seen, which is
//!   what a clip writer needs to finish the clip (`closed`, not a line of `events.jsonl`).
//! - A match during Ending starts nothing: that event's evidence is still being recorded. The cooldown runs
//!   from the frame that ended the event (`t_end`), so a new event for the same track can start at the
//!   earliest `max(cooldown_s, post_roll_s - end_after_s)` after the `end` line. Another track is not held
//!   back.
//! - The event's start is its earliest match still in the window when it became Active, so the clip's
//!   pre-roll is counted from when the object was first seen, not from when it was confirmed.
//!
//! Every `start` is followed by exactly one `end` once [`EventLifecycle::finish`] is called, and every
//! `end` by one `closed`.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::tracker::TrackOutput;
use crate::geom::PixelBox;

/// Frame rate assumed for frames without a timestamp: stream time is then `index / 25` (PAL, the common
/// CCTV rate).
pub const FALLBACK_FPS: f64 = 25.0;

/// Slack in comparisons of stream times: times are rounded to the microsecond in the log, and
/// `frame / 25.0` is not exact in binary, so `3.96 + 2.0` must count as reached at `5.96`.
const TIME_EPSILON_S: f64 = 1e-6;

/// Default score threshold of a standing query.
pub const DEFAULT_THRESHOLD: f32 = 0.2;
/// Default k of k-of-n hysteresis: matches needed among the last [`DEFAULT_WINDOW`] inference frames.
pub const DEFAULT_MIN_FRAMES: u32 = 2;
/// Default n of k-of-n hysteresis.
pub const DEFAULT_WINDOW: u32 = 3;
/// Default seconds without a match before an event ends: long enough to ride over a person walking behind a
/// pillar or a few frames of motion blur, short enough that the `end` line follows the scene.
pub const DEFAULT_END_AFTER_S: f64 = 2.0;
/// Default seconds of evidence kept after an event's end (the clip's tail), as CCTV NVRs do.
pub const DEFAULT_POST_ROLL_S: f64 = 5.0;
/// Default seconds of evidence kept before an event's start (the clip's head, from the pre-roll ring).
pub const DEFAULT_PRE_ROLL_S: f64 = 5.0;
/// Default seconds after an event's end during which the same query and track cannot start another: one
/// person pacing in and out of a doorway gives one alert, not one every few seconds.
pub const DEFAULT_COOLDOWN_S: f64 = 10.0;
/// Default least seconds between two `update` events of one event.
pub const DEFAULT_UPDATE_INTERVAL_S: f64 = 5.0;

/// What one query's events obey. Times are seconds of stream time. The `[[query]]` of the configuration
/// (`crate::config::StandingQuery`) gives one per query.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSettings {
    /// A matched detection counts when its score is at least this. Default [`DEFAULT_THRESHOLD`].
    pub threshold: f32,
    /// k of k-of-n: matches among the last `window` inference frames for Pending → Active. Default
    /// [`DEFAULT_MIN_FRAMES`]; 1 starts an event on the first match.
    pub min_frames: u32,
    /// n of k-of-n, in inference frames. Default [`DEFAULT_WINDOW`].
    pub window: u32,
    /// Active → Ending once the match has been missing this long. Default [`DEFAULT_END_AFTER_S`]; 0 ends on
    /// the first inference frame without a match.
    pub end_after_s: f64,
    /// Ending → Idle once this long after the last match has been seen. Default [`DEFAULT_POST_ROLL_S`].
    pub post_roll_s: f64,
    /// Not used by the state machine: passed on with every event for the clip writer. Default
    /// [`DEFAULT_PRE_ROLL_S`].
    pub pre_roll_s: f64,
    /// After an `end`, the same (query, track) starts no new event for this long. Default
    /// [`DEFAULT_COOLDOWN_S`].
    pub cooldown_s: f64,
    /// Least time between two `start`/`update` events of one event; 0 gives an `update` on every match.
    /// Default [`DEFAULT_UPDATE_INTERVAL_S`].
    pub update_interval_s: f64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            threshold: DEFAULT_THRESHOLD,
            min_frames: DEFAULT_MIN_FRAMES,
            window: DEFAULT_WINDOW,
            end_after_s: DEFAULT_END_AFTER_S,
            post_roll_s: DEFAULT_POST_ROLL_S,
            pre_roll_s: DEFAULT_PRE_ROLL_S,
            cooldown_s: DEFAULT_COOLDOWN_S,
            update_interval_s: DEFAULT_UPDATE_INTERVAL_S,
        }
    }
}

/// Why an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// The match was missing for `end_after_s`.
    Lost,
    /// The stream ended (a file's end, or a live source that gave up).
    Eos,
    /// The run was stopped: SIGTERM, Ctrl-C or `--max-seconds`.
    Shutdown,
}

impl EndReason {
    /// `"lost"`, `"eos"` or `"shutdown"`, as in the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Lost => "lost",
            EndReason::Eos => "eos",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// What an [`LifecycleEvent`] announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    /// Pending → Active: a `start` line.
    Start,
    /// A match while Active, rate-limited by `update_interval_s`: an `update` line.
    Update,
    /// Active → Ending (or a finish): an `end` line, with its reason.
    End(EndReason),
    /// Ending → Idle: the post-roll is over, every frame of the evidence has been seen. No line in
    /// `events.jsonl`; it tells the clip writer that the clip can be finished.
    Closed,
}

/// When a frame was: its index in the video, its stream time, and (optionally) its wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTime {
    /// Index of the video frame.
    pub frame: u64,
    /// Stream time in seconds (see [`StreamClock`]).
    pub pts_s: f64,
    /// When the frame was captured or decoded, for the log; `None` leaves wall-clock times out (tests and
    /// byte-identical replays). Never used to decide anything.
    pub wall: Option<SystemTime>,
}

/// A matched detection of the event's track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The frame it was matched on.
    pub at: FrameTime,
    /// Its box, in pixels of the frame.
    pub bbox: PixelBox,
    /// Its score.
    pub score: f32,
}

/// One notification of the event engine, handed to an [`EventSink`].
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEvent {
    /// What happened.
    pub kind: LifecycleKind,
    /// `<prefix>-<query index>-<track id>-<start frame>`: the same on the event's `start`, `update`s, `end`
    /// and `closed`, and unique within a run of a source. Also the stem of the event's clip files.
    pub event_id: String,
    /// Index of the query.
    pub query: usize,
    /// The tracker's id of the object.
    pub track_id: u64,
    /// The frame on which this was decided (for `end` by loss: the first frame at `end_after_s` without a
    /// match).
    pub at: FrameTime,
    /// The latest match: on `start` and `update` that of this frame; on `end` the last one.
    pub last: Sample,
    /// The event's first match.
    pub start: Sample,
    /// The event's end, on `end` and `closed`: the time of its last match.
    pub end: Option<FrameTime>,
    /// The best-scoring match so far (the earliest of equal scores).
    pub peak: Sample,
    /// Seconds of evidence wanted before `start`, from the query's settings.
    pub pre_roll_s: f64,
    /// Seconds of evidence wanted after `end`, from the query's settings.
    pub post_roll_s: f64,
}

impl LifecycleEvent {
    /// Why the event ended, on `end`.
    pub fn reason(&self) -> Option<EndReason> {
        match self.kind {
            LifecycleKind::End(r) => Some(r),
            _ => None,
        }
    }
}

/// Where the event engine's notifications go: the test seam between the state machine and its outputs.
///
/// The watch loop's implementation writes `events.jsonl` (and later hands events to the clip writer and the
/// alerts); a `Vec<LifecycleEvent>` collects them for tests.
pub trait EventSink {
    /// Called for each notification, in order.
    fn on_event(&mut self, event: &LifecycleEvent);
}

impl EventSink for Vec<LifecycleEvent> {
    fn on_event(&mut self, event: &LifecycleEvent) {
        self.push(event.clone());
    }
}

/// Counters of an [`EventLifecycle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleStats {
    /// Inference frames seen.
    pub inference_frames: u64,
    /// `start` notifications.
    pub started: u64,
    /// `update` notifications.
    pub updates: u64,
    /// `end` notifications.
    pub ended: u64,
    /// Pending runs that fell back to Idle without an event (flicker).
    pub flickers: u64,
    /// Matches ignored because their track's cooldown was running.
    pub suppressed: u64,
}

/// An open event: Active or Ending.
#[derive(Debug, Clone)]
struct Open {
    event_id: String,
    start: Sample,
    last: Sample,
    peak: Sample,
    /// Stream time of the last `start` or `update`.
    last_emit_s: f64,
    /// Stream time of the last still frame ([`EventLifecycle::hold`]) since the event started; the match is
    /// missing only from the later of this and the last match.
    held_s: f64,
}

/// The state of one (query, track). Idle without a cooldown is the absence of an entry.
#[derive(Debug, Clone)]
enum EventState {
    /// Idle, but a new event cannot start before `until_s`.
    Cooldown {
        until_s: f64,
    },
    /// Matches within the current window, oldest first, each with its inference frame's sequence number.
    Pending {
        matches: VecDeque<(u64, Sample)>,
    },
    Active(Open),
    /// The `end` was emitted at `ended_s`; waiting for the post-roll.
    Ending {
        open: Open,
        ended_s: f64,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    state: EventState,
    /// Sequence number of the last inference frame on which the track matched.
    matched_seq: Option<u64>,
}

/// The event engine of one source: a state machine per (query, track). See the module documentation.
///
/// Owned by the stage that tracks the source; not shared between threads.
#[derive(Debug)]
pub struct EventLifecycle {
    id_prefix: String,
    /// Per query index. Tracks of a query without settings get the defaults.
    settings: Vec<EventSettings>,
    default_settings: EventSettings,
    /// By (track id, query): iteration in this order makes the notifications of one frame deterministic.
    entries: BTreeMap<(u64, usize), Entry>,
    /// Sequence number of the current inference frame (1 for the first).
    seq: u64,
    /// The latest frame seen, for [`EventLifecycle::finish`].
    last_at: Option<FrameTime>,
    stats: LifecycleStats,
}

impl EventLifecycle {
    /// An engine without events. `id_prefix` starts every event id (the source's short name, for example);
    /// `settings[q]` applies to query `q`.
    pub fn new(id_prefix: impl Into<String>, settings: Vec<EventSettings>) -> Self {
        EventLifecycle {
            id_prefix: id_prefix.into(),
            settings,
            default_settings: EventSettings::default(),
            entries: BTreeMap::new(),
            seq: 0,
            last_at: None,
            stats: LifecycleStats::default(),
        }
    }

    /// Adds query `settings.len()` (a query added while the run goes on); returns its index.
    pub fn add_query(&mut self, settings: EventSettings) -> usize {
        self.settings.push(settings);
        self.settings.len() - 1
    }

    /// Counters so far.
    pub fn stats(&self) -> LifecycleStats {
        self.stats
    }

    /// Events Active or Ending now.
    pub fn open_events(&self) -> usize {
        self.entries.values().filter(|e| matches!(e.state, EventState::Active(_) | EventState::Ending { .. })).count()
    }

    fn settings_of(&self, query: usize) -> &EventSettings {
        self.settings.get(query).unwrap_or(&self.default_settings)
    }

    /// Takes the tracker's outputs of an inference frame (every live track, as [`Tracker::update`] returns
    /// them) and moves every state machine on, calling `sink` for each notification.
    ///
    /// Stream time is expected not to go backwards; an earlier time is taken as no time passing.
    ///
    /// [`Tracker::update`]: super::Tracker::update
    pub fn update(&mut self, at: FrameTime, tracks: &[TrackOutput], sink: &mut dyn EventSink) {
        let at = self.monotonic(at);
        self.seq += 1;
        self.stats.inference_frames += 1;
        let seq = self.seq;
        for t in tracks {
            let s = self.settings_of(t.query);
            let usable = t.score.is_finite() && t.bbox.x0.is_finite() && t.bbox.x1.is_finite();
            if !(t.matched_this_frame && usable && t.score >= s.threshold) {
                continue;
            }
            let sample = Sample { at, bbox: t.bbox, score: t.score };
            let entry = self.entries.entry((t.track_id, t.query)).or_insert_with(|| Entry {
                state: EventState::Pending { matches: VecDeque::new() },
                matched_seq: None,
            });
            entry.matched_seq = Some(seq);
            match &mut entry.state {
                EventState::Cooldown { until_s } if at.pts_s + TIME_EPSILON_S < *until_s => {
                    self.stats.suppressed += 1;
                    entry.matched_seq = None;
                }
                EventState::Cooldown { .. } => {
                    entry.state = EventState::Pending { matches: VecDeque::from([(seq, sample)]) };
                }
                EventState::Pending { matches } => matches.push_back((seq, sample)),
                EventState::Active(open) => {
                    open.last = sample;
                    if sample.score > open.peak.score {
                        open.peak = sample;
                    }
                }
                EventState::Ending { .. } => entry.matched_seq = None,
            }
        }
        self.step(at, true, sink);
    }

    /// Moves the timers on for a frame without inference (Active → Ending, Ending → Idle, cooldowns).
    /// Windows are not moved: they count inference frames.
    pub fn advance(&mut self, at: FrameTime, sink: &mut dyn EventSink) {
        let at = self.monotonic(at);
        self.step(at, false, sink);
    }

    /// Moves the timers on for a frame the motion gate skipped because nothing moved: such a frame is not a miss,
    /// so every Active event is held (its match is missing only from the last still frame on), while Ending,
    /// Idle and the cooldowns go on as on any frame without inference.
    pub fn hold(&mut self, at: FrameTime, sink: &mut dyn EventSink) {
        let at = self.monotonic(at);
        for entry in self.entries.values_mut() {
            if let EventState::Active(open) = &mut entry.state {
                open.held_s = at.pts_s;
            }
        }
        self.step(at, false, sink);
    }

    /// Ends every open event with `reason` (end of stream or shutdown) and forgets every state; Pending runs
    /// end without an event. Uses the latest frame seen as the time of the `end`. The engine can be used
    /// again afterwards.
    pub fn finish(&mut self, reason: EndReason, sink: &mut dyn EventSink) {
        let Some(at) = self.last_at else {
            return;
        };
        for ((track_id, query), entry) in std::mem::take(&mut self.entries) {
            let (pre_roll_s, post_roll_s) = {
                let s = self.settings_of(query);
                (s.pre_roll_s, s.post_roll_s)
            };
            let ev = |kind, open: &Open| lifecycle_event(kind, query, track_id, at, open, pre_roll_s, post_roll_s);
            match entry.state {
                EventState::Active(open) => {
                    self.stats.ended += 1;
                    sink.on_event(&ev(LifecycleKind::End(reason), &open));
                    sink.on_event(&ev(LifecycleKind::Closed, &open));
                }
                EventState::Ending { open, .. } => sink.on_event(&ev(LifecycleKind::Closed, &open)),
                EventState::Pending { .. } => self.stats.flickers += 1,
                EventState::Cooldown { .. } => {}
            }
        }
    }

    /// `at` with its time raised to the latest seen, and remembered.
    fn monotonic(&mut self, mut at: FrameTime) -> FrameTime {
        // NaN counts as going backwards.
        if let Some(last) = self.last_at
            && at.pts_s.partial_cmp(&last.pts_s).is_none_or(|o| o.is_lt())
        {
            at.pts_s = last.pts_s;
        }
        self.last_at = Some(at);
        at
    }

    /// The transitions of every entry on a frame at `at` (an inference frame when `inference`).
    fn step(&mut self, at: FrameTime, inference: bool, sink: &mut dyn EventSink) {
        let t = at.pts_s;
        let seq = self.seq;
        let mut forget: Vec<(u64, usize)> = Vec::new();
        let EventLifecycle { id_prefix, settings, default_settings, entries, stats, .. } = self;
        for (&(track_id, query), entry) in entries.iter_mut() {
            let s = settings.get(query).unwrap_or(&*default_settings);
            let matched_now = inference && entry.matched_seq == Some(seq);
            let ev = |kind, open: &Open| lifecycle_event(kind, query, track_id, at, open, s.pre_roll_s, s.post_roll_s);
            if let EventState::Pending { matches } = &mut entry.state
                && inference
            {
                let window = u64::from(s.window.max(1));
                while matches.front().is_some_and(|(q, _)| q + window <= seq) {
                    matches.pop_front();
                }
                if matches.len() >= s.min_frames.max(1) as usize {
                    let first = matches[0].1;
                    let last = matches[matches.len() - 1].1;
                    // The earliest of equal scores: a later frame must beat the peak, not tie it.
                    let peak = matches.iter().map(|m| m.1).fold(first, |p, m| if m.score > p.score { m } else { p });
                    let event_id = format!("{id_prefix}-{query}-{track_id}-{}", first.at.frame);
                    let open = Open { event_id, start: first, last, peak, last_emit_s: t, held_s: last.at.pts_s };
                    stats.started += 1;
                    sink.on_event(&ev(LifecycleKind::Start, &open));
                    entry.state = EventState::Active(open);
                } else if matches.is_empty() {
                    stats.flickers += 1;
                    forget.push((track_id, query));
                }
                continue;
            }
            if let EventState::Active(open) = &mut entry.state {
                if matched_now {
                    if t - open.last_emit_s + TIME_EPSILON_S >= s.update_interval_s {
                        open.last_emit_s = t;
                        stats.updates += 1;
                        sink.on_event(&ev(LifecycleKind::Update, open));
                    }
                } else if t - open.last.at.pts_s.max(open.held_s) + TIME_EPSILON_S >= s.end_after_s {
                    stats.ended += 1;
                    sink.on_event(&ev(LifecycleKind::End(EndReason::Lost), open));
                    let open = open.clone();
                    entry.state = EventState::Ending { open, ended_s: t };
                }
            }
            if let EventState::Ending { open, ended_s } = &entry.state
                && t + TIME_EPSILON_S >= open.last.at.pts_s + s.post_roll_s
            {
                sink.on_event(&ev(LifecycleKind::Closed, open));
                entry.state = EventState::Cooldown { until_s: ended_s + s.cooldown_s };
            }
            if let EventState::Cooldown { until_s } = entry.state
                && t + TIME_EPSILON_S >= until_s
            {
                forget.push((track_id, query));
            }
        }
        for key in forget {
            entries.remove(&key);
        }
    }
}

fn lifecycle_event(
    kind: LifecycleKind,
    query: usize,
    track_id: u64,
    at: FrameTime,
    open: &Open,
    pre_roll_s: f64,
    post_roll_s: f64,
) -> LifecycleEvent {
    LifecycleEvent {
        kind,
        event_id: open.event_id.clone(),
        query,
        track_id,
        at,
        last: open.last,
        start: open.start,
        end: matches!(kind, LifecycleKind::End(_) | LifecycleKind::Closed).then_some(open.last.at),
        peak: open.peak,
        pre_roll_s,
        post_roll_s,
    }
}

/// Stream time in seconds for each frame of one source: the frame's PTS, or `index / FALLBACK_FPS` for a
/// frame without one, made never to go backwards.
///
/// A live source's PTS restart after a reconnect; the clock then stands still for that frame and goes on
/// from there, so that an event open across the reconnect neither ends at once nor lasts for ever.
#[derive(Debug, Clone, Default)]
pub struct StreamClock {
    /// Added to the raw time; grows at each restart.
    offset_s: f64,
    last_s: Option<f64>,
}

impl StreamClock {
    /// A clock that has seen no frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream time of the frame `index` with timestamp `pts_ns`.
    pub fn seconds(&mut self, index: u64, pts_ns: Option<u64>) -> f64 {
        let raw = match pts_ns {
            Some(ns) => ns as f64 / 1e9,
            None => index as f64 / FALLBACK_FPS,
        };
        let mut t = raw + self.offset_s;
        if let Some(last) = self.last_s
            && t < last
        {
            self.offset_s = last - raw;
            t = last;
        }
        self.last_s = Some(t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: f64 = 25.0;

    fn at(frame: u64) -> FrameTime {
        FrameTime { frame, pts_s: frame as f64 / FPS, wall: None }
    }

    fn out(track_id: u64, score: f32, matched: bool) -> TrackOutput {
        TrackOutput {
            track_id,
            query: 0,
            bbox: PixelBox { x0: 10.0, y0: 20.0, x1: 50.0, y1: 90.0 },
            score,
            confirmed: true,
            matched_this_frame: matched,
            lost: !matched,
        }
    }

    fn settings() -> EventSettings {
        EventSettings {
            threshold: 0.3,
            min_frames: 2,
            window: 3,
            end_after_s: 1.0,
            post_roll_s: 2.0,
            pre_roll_s: 1.0,
            cooldown_s: 4.0,
            update_interval_s: 1.0,
        }
    }

    /// Runs `frames` inference frames; `script(frame)` gives the outputs of each.
    fn run(
        settings: EventSettings,
        frames: std::ops::Range<u64>,
        script: impl Fn(u64) -> Vec<TrackOutput>,
    ) -> (EventLifecycle, Vec<LifecycleEvent>) {
        let mut lc = EventLifecycle::new("cam", vec![settings]);
        let mut events = Vec::new();
        for f in frames {
            lc.update(at(f), &script(f), &mut events);
        }
        (lc, events)
    }

    fn kinds(events: &[LifecycleEvent]) -> Vec<(LifecycleKind, u64)> {
        events.iter().map(|e| (e.kind, e.at.frame)).collect()
    }

    #[test]
    fn k_of_n_starts_on_the_kth_match_and_counts_from_the_first() {
        // Matches on frames 10 and 12 (2 of the 3 frames 10..=12).
        let (_, events) = run(settings(), 0..13, |f| vec![out(1, 0.5, f == 10 || f == 12)]);
        assert_eq!(kinds(&events), [(LifecycleKind::Start, 12)]);
        assert_eq!(events[0].event_id, "cam-0-1-10");
        assert_eq!(events[0].start.at.frame, 10);
        assert_eq!(events[0].last.at.frame, 12);
    }

    #[test]
    fn flicker_and_low_scores_start_nothing() {
        // One match in every 4 frames never reaches 2 of 3; scores below the threshold are no match.
        let (lc, events) =
            run(settings(), 0..60, |f| vec![out(1, if f % 4 == 0 { 0.5 } else { 0.29 }, true), out(2, 0.9, false)]);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(lc.stats().started, 0);
        assert!(lc.stats().flickers > 0);
    }

    /// A target matched until frame 24 stands still; the motion gate skips frames 25..250 (9 s, far beyond
    /// `end_after_s` = 1 s), with an inference frame forced every 2 s (frames 75, 125, 175, 225) that still finds it.
    /// Nothing ends during the still span; the event ends 1 s after the scene moves again without the target.
    #[test]
    fn still_frames_hold_an_event_and_forced_frames_keep_it() {
        let mut lc = EventLifecycle::new("cam", vec![settings()]);
        let mut events = Vec::new();
        for f in 0..25 {
            lc.update(at(f), &[out(1, 0.5, true)], &mut events);
        }
        for f in 25..250 {
            if f % 50 == 25 && f > 25 {
                lc.update(at(f), &[out(1, 0.5, true)], &mut events);
            } else {
                lc.hold(at(f), &mut events);
            }
        }
        assert_eq!(
            kinds(&events),
            [
                (LifecycleKind::Start, 1),
                (LifecycleKind::Update, 75),
                (LifecycleKind::Update, 125),
                (LifecycleKind::Update, 175),
                (LifecycleKind::Update, 225)
            ]
        );
        // The target left while the scene moved: inference frames without a match from 250 on; the last still frame
        // was 249, the last match 225: the end comes 1 s after the still frame, at frame 274.
        for f in 250..300 {
            lc.update(at(f), &[], &mut events);
        }
        let end = events.iter().find(|e| matches!(e.kind, LifecycleKind::End(_))).expect("ends");
        assert_eq!((end.at.frame, end.reason(), end.end.map(|e| e.frame)), (274, Some(EndReason::Lost), Some(225)));
        // Without holding, the same frames end the event 1 s after its last match.
        let mut lc = EventLifecycle::new("cam", vec![settings()]);
        let mut events = Vec::new();
        for f in 0..25 {
            lc.update(at(f), &[out(1, 0.5, true)], &mut events);
        }
        for f in 25..70 {
            lc.advance(at(f), &mut events);
        }
        assert_eq!(kinds(&events), [(LifecycleKind::Start, 1), (LifecycleKind::End(EndReason::Lost), 49)]);
    }

    #[test]
    fn ends_after_end_after_then_closes_after_post_roll() {
        // Matched on frames 0..25 (last at 0.96 s), then not.
        let (lc, events) = run(settings(), 0..200, |f| vec![out(1, 0.5, f < 25)]);
        // Start on the 2nd match; no update (the next would be due at 1.04 s, frame 26, after the last match);
        // end at 0.96 s + 1 s = frame 49; closed at 0.96 s + 2 s = frame 74.
        assert_eq!(
            kinds(&events),
            [(LifecycleKind::Start, 1), (LifecycleKind::End(EndReason::Lost), 49), (LifecycleKind::Closed, 74)]
        );
        let end = events.iter().find(|e| matches!(e.kind, LifecycleKind::End(_))).unwrap();
        assert_eq!(end.reason(), Some(EndReason::Lost));
        assert_eq!(end.at.frame, 49, "0.96 s + 1 s = 1.96 s = frame 49");
        assert_eq!(end.end.unwrap().frame, 24);
        let closed = events.last().unwrap();
        assert_eq!((closed.kind, closed.at.frame), (LifecycleKind::Closed, 74), "0.96 s + 2 s");
        assert_eq!(lc.open_events(), 0);
    }

    #[test]
    fn a_short_gap_keeps_the_event_and_a_long_one_ends_it() {
        let s = EventSettings { cooldown_s: 0.0, post_roll_s: 0.0, ..settings() };
        // Gap of 20 frames (0.8 s < 1 s): one event.
        let (_, events) = run(s.clone(), 0..100, |f| vec![out(1, 0.5, !(20..40).contains(&f) && f < 60)]);
        let starts = events.iter().filter(|e| e.kind == LifecycleKind::Start).count();
        assert_eq!(starts, 1, "{:?}", kinds(&events));
        // Gap of 40 frames (1.6 s): ended, and a second event for the same track.
        let (_, events) = run(s, 0..140, |f| vec![out(1, 0.5, !(20..60).contains(&f) && f < 100)]);
        let ids: Vec<&str> =
            events.iter().filter(|e| e.kind == LifecycleKind::Start).map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["cam-0-1-0", "cam-0-1-60"]);
    }

    #[test]
    fn cooldown_holds_back_the_same_track_only() {
        // end_after 1 s, post_roll 2 s, cooldown 4 s. Track 1: frames 0..10, gone, back from frame 50 on.
        // Its end is at frame 34 (0.36 + 1 s), so nothing starts before 1.36 + 4 = 5.36 s (frame 134).
        let (lc, events) = run(settings(), 0..150, |f| {
            let mut v = vec![out(1, 0.5, !(10..50).contains(&f))];
            if f >= 60 {
                v.push(out(2, 0.5, true));
            }
            v
        });
        let starts: Vec<(u64, u64)> =
            events.iter().filter(|e| e.kind == LifecycleKind::Start).map(|e| (e.track_id, e.at.frame)).collect();
        assert_eq!(starts, [(1, 1), (2, 61), (1, 135)]);
        assert!(lc.stats().suppressed > 0);
    }

    #[test]
    fn finish_ends_open_events_with_the_reason() {
        for reason in [EndReason::Eos, EndReason::Shutdown] {
            let (mut lc, mut events) = run(settings(), 0..30, |f| vec![out(1, 0.5, true), out(2, 0.5, f == 29)]);
            lc.finish(reason, &mut events);
            let tail: Vec<_> = events.iter().rev().take(2).rev().map(|e| (e.kind, e.track_id)).collect();
            assert_eq!(tail, [(LifecycleKind::End(reason), 1), (LifecycleKind::Closed, 1)]);
            assert_eq!(events.iter().filter(|e| e.track_id == 2).count(), 0, "Pending ends without an event");
            assert_eq!(lc.open_events(), 0);
            let mut more = Vec::new();
            lc.finish(reason, &mut more);
            assert!(more.is_empty());
        }
    }

    #[test]
    fn peak_is_the_best_score_and_updates_are_rate_limited() {
        let score = |f: u64| if f == 40 { 0.9 } else { 0.5 + f as f32 / 1000.0 };
        let s = EventSettings { update_interval_s: 0.0, ..settings() };
        let (_, events) = run(s, 0..60, |f| vec![TrackOutput { score: score(f), ..out(1, 0.0, true) }]);
        assert_eq!(events.len(), 60 - 1, "a start on frame 1, then an update on every match");
        assert_eq!(events[0].peak.at.frame, 1);
        assert_eq!(events.last().unwrap().peak.at.frame, 40);
        assert_eq!(events.last().unwrap().peak.score, 0.9);
    }

    #[test]
    fn advance_moves_timers_between_inference_frames() {
        let mut lc = EventLifecycle::new("cam", vec![settings()]);
        let mut events = Vec::new();
        lc.update(at(0), &[out(1, 0.5, true)], &mut events);
        lc.update(at(5), &[out(1, 0.5, true)], &mut events);
        lc.update(at(10), &[out(1, 0.5, false)], &mut events);
        for f in 11..100 {
            lc.advance(at(f), &mut events);
        }
        assert_eq!(
            kinds(&events),
            [(LifecycleKind::Start, 5), (LifecycleKind::End(EndReason::Lost), 30), (LifecycleKind::Closed, 55)]
        );
    }

    #[test]
    fn time_going_backwards_is_time_standing_still() {
        let mut lc = EventLifecycle::new("cam", vec![EventSettings { min_frames: 1, ..settings() }]);
        let mut events = Vec::new();
        lc.update(at(100), &[out(1, 0.5, true)], &mut events);
        lc.update(at(1), &[out(1, 0.5, false)], &mut events);
        lc.update(FrameTime { pts_s: f64::NAN, ..at(2) }, &[out(1, 0.5, false)], &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].at.pts_s, 4.0);
    }

    #[test]
    fn stream_clock_falls_back_to_25_fps_and_never_goes_back() {
        let mut c = StreamClock::new();
        assert_eq!(c.seconds(0, None), 0.0);
        assert_eq!(c.seconds(50, None), 2.0);
        assert_eq!(c.seconds(51, Some(3_000_000_000)), 3.0);
        // A reconnect: PTS start again near 0.
        assert_eq!(c.seconds(52, Some(40_000_000)), 3.0);
        assert!((c.seconds(53, Some(80_000_000)) - 3.04).abs() < 1e-9);
    }
}
