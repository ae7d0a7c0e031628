//! The event engine end to end, without a model: a scripted detector supplies the boxes and scores of each
//! frame, the tracker associates them, the lifecycle turns them into events, and the real [`EventLog`] writes
//! them. Each scenario's `events.jsonl` is compared byte for byte with `tests/golden/lifecycle/<name>.jsonl`
//! (everything is deterministic: stream time is the frame index / 25, and wall-clock times are left out).
//!
//! Regenerate the golden files with `LOOKOUT_BLESS=1 cargo test --test track_lifecycle`, and read the diff.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;

use lookout::geom::{Detection, PixelBox};
use lookout::sink::events::{ClipSink, Clips};
use lookout::sink::{EventLog, EventLogSettings, EventRecord};
use lookout::track::{
    EndReason, EventLifecycle, EventSettings, EventSink, FrameTime, LifecycleEvent, LifecycleKind, Tracker,
    TrackerSettings,
};

/// Frame rate of the simulated streams: frame `f` is at `f / 25` s.
const FPS: f64 = 25.0;
const SOURCE: &str = "rtsp://admin:secret@10.0.0.5/stream";
const SOURCE_NAME: &str = "gate";
const QUERIES: [(&str, &str); 2] = [("a person climbing the fence", "climbing"), ("a car", "car")];

/// The test seam that stands in for the model: the detections it "finds" on each frame.
trait ScriptedDetector {
    fn detect(&mut self, frame: u64) -> Vec<Detection>;
}

/// One object as the scripted detector sees it.
#[derive(Clone)]
struct Appearance {
    query: usize,
    /// Frames on which it is detected, but for `gaps`.
    frames: Range<u64>,
    gaps: Vec<Range<u64>>,
    /// Its box on `frames.start`, and how far it moves per frame.
    first_box: PixelBox,
    velocity: (f32, f32),
    /// Its score on a frame.
    score: fn(u64) -> f32,
}

impl Appearance {
    fn new(query: usize, frames: Range<u64>, x: f32, y: f32, score: fn(u64) -> f32) -> Self {
        Appearance {
            query,
            frames,
            gaps: Vec::new(),
            first_box: PixelBox { x0: x, y0: y, x1: x + 60.0, y1: y + 150.0 },
            velocity: (0.0, 0.0),
            score,
        }
    }
    fn gap(mut self, frames: Range<u64>) -> Self {
        self.gaps.push(frames);
        self
    }
    fn moving(mut self, dx: f32, dy: f32) -> Self {
        self.velocity = (dx, dy);
        self
    }
}

/// A detector that replays a list of appearances.
struct Script(Vec<Appearance>);

impl ScriptedDetector for Script {
    fn detect(&mut self, frame: u64) -> Vec<Detection> {
        self.0
            .iter()
            .filter(|a| a.frames.contains(&frame) && !a.gaps.iter().any(|g| g.contains(&frame)))
            .map(|a| {
                let n = (frame - a.frames.start) as f32;
                let (dx, dy) = (a.velocity.0 * n, a.velocity.1 * n);
                let b = a.first_box;
                Detection {
                    query: a.query,
                    score: (a.score)(frame),
                    bbox: PixelBox { x0: b.x0 + dx, y0: b.y0 + dy, x1: b.x1 + dx, y1: b.y1 + dy },
                }
            })
            .collect()
    }
}

/// A clip writer that plans every event's files (and writes none): shows the `pending` form of `clips`.
struct PlannedClips;

impl ClipSink for PlannedClips {
    fn on_event(&mut self, event: &LifecycleEvent) -> Clips {
        Clips::planned(SOURCE_NAME, &event.event_id)
    }
}

/// Collects every notification and writes the lines to the log, as the watch loop's sink does.
struct Recorder<'a> {
    log: EventLog,
    clips: Option<&'a mut dyn ClipSink>,
    all: Vec<LifecycleEvent>,
}

impl EventSink for Recorder<'_> {
    fn on_event(&mut self, ev: &LifecycleEvent) {
        self.all.push(ev.clone());
        let clips = match self.clips.as_deref_mut() {
            Some(c) => c.on_event(ev),
            None => Clips::none(),
        };
        let (text, label) = QUERIES[ev.query];
        if let Some(record) = EventRecord::from_lifecycle(ev, SOURCE, text, label, clips) {
            self.log.write(&record).unwrap();
        }
    }
}

/// What the scenarios share: threshold 0.3, 2 of 3, end after 2 s, post-roll 5 s, cooldown 10 s (the
/// defaults but for the threshold and an update every second, so that updates show).
fn settings() -> EventSettings {
    EventSettings { threshold: 0.3, update_interval_s: 1.0, ..EventSettings::default() }
}

/// The tracker as the watch loop sets it up for these settings: a lost track is kept for end_after (2 s at
/// 25 fps) plus a frame, so an object back within end_after keeps its id.
fn tracker() -> Tracker {
    Tracker::new(TrackerSettings { max_age_frames: 51, ..TrackerSettings::default() })
}

/// Runs `frames` frames of `detector` through the tracker and the lifecycle, ends the stream with `finish`,
/// and returns the log's text and every notification.
fn run(
    detector: &mut dyn ScriptedDetector,
    frames: Range<u64>,
    finish: EndReason,
    clips: Option<&mut dyn ClipSink>,
) -> (String, Vec<LifecycleEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), EventLogSettings { wall_time: false, ..Default::default() }).unwrap();
    let path = log.path().to_path_buf();
    let mut sink = Recorder { log, clips, all: Vec::new() };
    let mut tracker = tracker();
    let mut lifecycle = EventLifecycle::new(SOURCE_NAME, vec![settings(), settings()]);
    for frame in frames {
        let at = FrameTime { frame, pts_s: frame as f64 / FPS, wall: None };
        // Everything the detector finds goes to the tracker; the lifecycle applies the query's threshold.
        let tracks = tracker.update(frame, &detector.detect(frame));
        lifecycle.update(at, &tracks, &mut sink);
    }
    lifecycle.finish(finish, &mut sink);
    assert_eq!(lifecycle.open_events(), 0);
    let all = std::mem::take(&mut sink.all);
    drop(sink);
    (std::fs::read_to_string(path).unwrap(), all)
}

/// Compares `got` with the golden file byte for byte (writing it first under `LOOKOUT_BLESS`), and checks
/// what must hold of any event log: per event id one `start` first and one `end` last, and every `end` with a
/// `closed` notification after it.
fn check(name: &str, got: &str, all: &[LifecycleEvent]) {
    assert!(!got.contains("secret"), "the password never reaches the log");
    let path = common::golden(&format!("lifecycle/{name}.jsonl"));
    if std::env::var_os("LOOKOUT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if got != want {
        let first = got.lines().zip(want.lines()).position(|(g, w)| g != w).unwrap_or(got.lines().count());
        panic!(
            "{name}: events differ from {} at line {} (LOOKOUT_BLESS=1 regenerates)\n got: {}\nwant: {}",
            path.display(),
            first + 1,
            got.lines().nth(first).unwrap_or("(none)"),
            want.lines().nth(first).unwrap_or("(none)")
        );
    }

    let mut by_id: BTreeMap<&str, Vec<LifecycleKind>> = BTreeMap::new();
    for ev in all {
        by_id.entry(&ev.event_id).or_default().push(ev.kind);
    }
    for (id, kinds) in &by_id {
        assert_eq!(kinds[0], LifecycleKind::Start, "{name} {id}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == LifecycleKind::Start).count(), 1, "{name} {id}: {kinds:?}");
        assert!(matches!(kinds[kinds.len() - 2], LifecycleKind::End(_)), "{name} {id}: {kinds:?}");
        assert_eq!(kinds[kinds.len() - 1], LifecycleKind::Closed, "{name} {id}: {kinds:?}");
    }
    let lines: Vec<serde_json::Value> = got.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), all.iter().filter(|e| e.kind != LifecycleKind::Closed).count());
}

fn starts(all: &[LifecycleEvent]) -> Vec<(u64, u64)> {
    all.iter().filter(|e| e.kind == LifecycleKind::Start).map(|e| (e.track_id, e.at.frame)).collect()
}

fn ends(all: &[LifecycleEvent]) -> Vec<(u64, EndReason, u64)> {
    all.iter().filter_map(|e| Some((e.track_id, e.reason()?, e.at.frame))).collect()
}

/// A score that rises from 0.5 to 0.8 at frame `peak` and falls again.
fn triangle(frame: u64, peak: u64) -> f32 {
    0.8 - (frame.abs_diff(peak) as f32 * 0.006).min(0.3)
}

#[test]
fn flicker_makes_no_event() {
    // A: followed by the tracker on every frame, but above the threshold only on every 5th (the others at 0.25).
    // B: a strong detection on single frames, 2.4 s apart.
    let a = Appearance::new(0, 0..200, 100.0, 50.0, |f| if f % 5 == 0 { 0.35 } else { 0.25 });
    let b = Appearance::new(0, 30..31, 400.0, 60.0, |_| 0.9);
    let script = vec![a, b.clone(), Appearance { frames: 90..91, ..b.clone() }, Appearance { frames: 150..151, ..b }];
    let (got, all) = run(&mut Script(script), 0..250, EndReason::Eos, None);
    check("flicker", &got, &all);
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn steady_match_makes_one_event() {
    // Seen from 0.4 s to 4.36 s, walking right; the score peaks at frame 60. The stream goes on to 12 s.
    let a = Appearance::new(0, 10..110, 100.0, 50.0, |f| triangle(f, 60)).moving(2.0, 0.0);
    let mut clips = PlannedClips;
    let (got, all) = run(&mut Script(vec![a]), 0..300, EndReason::Eos, Some(&mut clips));
    check("steady", &got, &all);
    assert_eq!(starts(&all), [(1, 11)], "2 of 3: the second match");
    // Lost 2 s after the last match (frame 109, 4.36 s): frame 159; closed after the 5 s post-roll: frame 234.
    assert_eq!(ends(&all), [(1, EndReason::Lost, 159)]);
    let end = all.iter().find(|e| e.reason().is_some()).unwrap();
    assert_eq!((end.start.at.frame, end.end.unwrap().frame, end.peak.at.frame), (10, 109, 60));
    assert_eq!(all.last().unwrap().at.frame, 234);
    let updates: Vec<u64> = all.iter().filter(|e| e.kind == LifecycleKind::Update).map(|e| e.at.frame).collect();
    assert_eq!(updates, [36, 61, 86], "one a second");
}

#[test]
fn gap_shorter_than_end_after_keeps_one_event() {
    // Gone for 1.4 s (35 frames) in the middle: still one event, one track.
    let a = Appearance::new(0, 10..160, 100.0, 50.0, |_| 0.6).gap(60..95);
    let (got, all) = run(&mut Script(vec![a]), 0..300, EndReason::Eos, None);
    check("gap_short", &got, &all);
    assert_eq!(starts(&all), [(1, 11)]);
    assert_eq!(ends(&all), [(1, EndReason::Lost, 209)]);
}

#[test]
fn gap_longer_than_end_after_makes_two_events() {
    // Gone for 3.6 s: the first event ends 2 s after the last match; the object comes back after the tracker
    // gave up on its track, so it is a new track, and a new event (a cooldown holds back only the same track).
    let a = Appearance::new(0, 10..220, 100.0, 50.0, |_| 0.6).gap(60..150);
    let (got, all) = run(&mut Script(vec![a]), 0..350, EndReason::Eos, None);
    check("gap_long", &got, &all);
    assert_eq!(starts(&all), [(1, 11), (2, 151)]);
    assert_eq!(ends(&all), [(1, EndReason::Lost, 109), (2, EndReason::Lost, 269)]);
}

#[test]
fn two_overlapping_tracks_make_two_events() {
    // Two people of the same query, seen at the same time for 3.6 s, one walking towards the other.
    let a = Appearance::new(0, 10..150, 100.0, 50.0, |f| triangle(f, 40));
    let b = Appearance::new(0, 60..200, 500.0, 60.0, |f| triangle(f, 120)).moving(-1.5, 0.0);
    let (got, all) = run(&mut Script(vec![a, b]), 0..300, EndReason::Eos, None);
    check("overlapping_tracks", &got, &all);
    assert_eq!(starts(&all), [(1, 11), (2, 61)]);
    assert_eq!(ends(&all), [(1, EndReason::Lost, 199), (2, EndReason::Lost, 249)]);
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["gate-0-1-10", "gate-0-2-60"]);
}

#[test]
fn cooldown_holds_back_a_new_event_of_the_same_track() {
    // The tracker follows the person throughout, but the query stops matching for 2.2 s (score 0.25, say the
    // person stops climbing): the event ends (lost). The match is back at frame 115, but the cooldown runs
    // until 10 s after the end (frame 109 + 250 = 359): no new event before that. The stream then ends with the
    // second event open.
    let a = Appearance::new(0, 10..450, 100.0, 50.0, |f| if (60..115).contains(&f) { 0.25 } else { 0.6 });
    let (got, all) = run(&mut Script(vec![a]), 0..450, EndReason::Eos, None);
    check("cooldown", &got, &all);
    assert_eq!(starts(&all), [(1, 11), (1, 360)]);
    assert_eq!(ends(&all), [(1, EndReason::Lost, 109), (1, EndReason::Eos, 449)]);
    let second = all.iter().find(|e| e.kind == LifecycleKind::Start && e.at.frame == 360).unwrap();
    assert_eq!(second.event_id, "gate-0-1-359");
}

#[test]
fn shutdown_ends_open_events_with_reason_shutdown() {
    // Two queries: a person and a car on the same spot, both open when the run is stopped.
    let a = Appearance::new(0, 10..100, 100.0, 50.0, |_| 0.6);
    let car = Appearance { query: 1, ..a.clone() };
    let (got, all) = run(&mut Script(vec![a, car]), 0..100, EndReason::Shutdown, None);
    check("shutdown", &got, &all);
    assert_eq!(ends(&all), [(1, EndReason::Shutdown, 99), (2, EndReason::Shutdown, 99)]);
    assert!(got.lines().all(|l| !l.contains(r#""type":"end""#) || l.contains(r#""reason":"shutdown""#)));
}
