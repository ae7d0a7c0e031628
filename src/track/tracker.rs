//! A ByteTrack-style multi-object tracker (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating
//! Every Detection Box", ECCV 2022), with a constant-velocity motion model instead of a Kalman filter.
//!
//! One [`Tracker`] serves one source. Each track belongs to one query for its whole life: detections are only
//! ever matched to tracks of the same query. Track ids start at 1, only increase, and are unique across the
//! queries of the source.
//!
//! On each inference frame the caller passes that frame's detections to [`Tracker::update`]; on the frames
//! in between, [`Tracker::predict`] extrapolates every track's box with its velocity, so that the annotated
//! video has a box on every frame. Frame indices are those of the video (not of inference), so ages and
//! velocities stay right whatever the inference stride.
//!
//! # Association (per [`Tracker::update`])
//!
//! 1. Every track's box is predicted to the frame.
//! 2. Confirmed tracks (tracked or lost) are matched to high-score detections (`score >= high_score`) by IoU,
//!    greedily from the best overlap down, when the IoU is at least `match_iou`.
//! 3. Confirmed tracks that were tracked at the previous update and are still unmatched are matched to the
//!    low-score detections (`low_score <= score < high_score`) at `low_match_iou`: an object that is
//!    briefly occluded or blurred keeps its track instead of losing it (ByteTrack's second stage).
//! 4. Tentative tracks are matched to the remaining high-score detections at `tentative_match_iou`.
//! 5. Remaining high-score detections start tentative tracks, unless one overlaps a track already matched in
//!    this frame by `duplicate_iou` or more (a second box for the same object).
//!
//! # Track states
//!
//! | state     | on an update                                    | next state | counted in [`TrackerStats`] |
//! |-----------|-------------------------------------------------|------------|-----------------------------|
//! | Tentative | matched, fewer than `min_hits` matches so far   | Tentative  | -                           |
//! | Tentative | matched for the `min_hits`-th time              | Tracked    | `started`                   |
//! | Tentative | not matched                                     | removed    | `dropped_tentative`         |
//! | Tracked   | matched                                         | Tracked    | -                           |
//! | Tracked   | not matched                                     | Lost       | -                           |
//! | Lost      | matched (high-score stage only)                 | Tracked    | -                           |
//! | Lost      | not matched for more than `max_age_frames`      | removed    | `ended`                     |
//! | Tracked, Lost | [`Tracker::finish`]                         | removed    | `ended`                     |
//!
//! A frame the motion gate skipped because nothing moved is not an update: [`Tracker::hold_into`] keeps every
//! track where it is, and the frame does not count towards `max_age_frames`.
//!
//! So every confirmed track ends exactly once when the stream is finished, and a detection seen on fewer than
//! `min_hits` inference frames (flicker) is never confirmed. The tracker makes no events: the event engine
//! ([`super::lifecycle`]) decides, from the tracks of each frame, when an event starts, is updated and ends.

use serde::{Deserialize, Serialize};

use crate::geom::{Detection, PixelBox};

/// Default [`TrackerSettings::high_score`].
pub const DEFAULT_HIGH_SCORE: f32 = 0.2;
/// Default [`TrackerSettings::low_score`].
pub const DEFAULT_LOW_SCORE: f32 = 0.1;
/// Default [`TrackerSettings::match_iou`].
pub const DEFAULT_MATCH_IOU: f32 = 0.2;
/// Default [`TrackerSettings::low_match_iou`].
pub const DEFAULT_LOW_MATCH_IOU: f32 = 0.5;
/// Default [`TrackerSettings::tentative_match_iou`].
pub const DEFAULT_TENTATIVE_MATCH_IOU: f32 = 0.3;
/// Default [`TrackerSettings::duplicate_iou`].
pub const DEFAULT_DUPLICATE_IOU: f32 = 0.7;
/// Default [`TrackerSettings::min_hits`].
pub const DEFAULT_MIN_HITS: u32 = 3;
/// Default [`TrackerSettings::max_age_frames`].
pub const DEFAULT_MAX_AGE_FRAMES: u64 = 30;
/// Default [`TrackerSettings::velocity_weight`].
pub const DEFAULT_VELOCITY_WEIGHT: f32 = 0.5;

/// What the user can tune. IoU thresholds are 0..1; frame counts are in frames of the video.
///
/// The score thresholds are usually derived from the query's detection threshold by the caller: OWL-ViT
/// scores are low (0.1 is a typical threshold), so the defaults are low too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerSettings {
    /// Detections scoring at least this are matched first and may start tracks. Default 0.2.
    pub high_score: f32,
    /// Detections scoring below this are ignored; those between `low_score` and `high_score` only keep
    /// tracked objects alive. Default 0.1.
    pub low_score: f32,
    /// Least IoU between a confirmed track's predicted box and a high-score detection for them to match.
    /// Default 0.2 (ByteTrack's first-stage threshold).
    pub match_iou: f32,
    /// Least IoU for a low-score detection to match a tracked object. Default 0.5 (ByteTrack's second stage).
    pub low_match_iou: f32,
    /// Least IoU for a detection to match a tentative track. Default 0.3.
    pub tentative_match_iou: f32,
    /// An unmatched detection that overlaps a track matched in the same frame by this IoU or more is taken as
    /// a second box for the same object and starts no track. Default 0.7.
    pub duplicate_iou: f32,
    /// Matches (the first detection included) before a track is confirmed. Default 3; 1 confirms on the first
    /// detection.
    pub min_hits: u32,
    /// Frames a confirmed track is kept without a match before it is removed. Default 30 (1 s at 30 fps).
    pub max_age_frames: u64,
    /// Weight of the newest measurement in the velocity estimate (exponential smoothing), 0..=1.
    /// 1 takes the last displacement as it is. Default 0.5.
    pub velocity_weight: f32,
    /// Per query, its own `high_score` (`watch` gives each query's detection threshold), so that a query's
    /// threshold decides which detections start tracks, and the band from `low_score` up to it only keeps
    /// tracks alive. A query without an entry uses `high_score`. Default: empty. Not read from a config.
    #[serde(skip)]
    pub query_high_scores: Vec<f32>,
}

impl TrackerSettings {
    /// The score at which a detection of `query` is a high-score one.
    pub fn high_score_of(&self, query: usize) -> f32 {
        self.query_high_scores.get(query).copied().unwrap_or(self.high_score)
    }
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings {
            high_score: DEFAULT_HIGH_SCORE,
            low_score: DEFAULT_LOW_SCORE,
            match_iou: DEFAULT_MATCH_IOU,
            low_match_iou: DEFAULT_LOW_MATCH_IOU,
            tentative_match_iou: DEFAULT_TENTATIVE_MATCH_IOU,
            duplicate_iou: DEFAULT_DUPLICATE_IOU,
            min_hits: DEFAULT_MIN_HITS,
            max_age_frames: DEFAULT_MAX_AGE_FRAMES,
            velocity_weight: DEFAULT_VELOCITY_WEIGHT,
            query_high_scores: Vec::new(),
        }
    }
}

/// Counters a tracker publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Calls to [`Tracker::update`].
    pub updates: u64,
    /// Tracks confirmed.
    pub started: u64,
    /// Confirmed tracks removed (lost for longer than `max_age_frames`, or at [`Tracker::finish`]).
    pub ended: u64,
    /// Tentative tracks dropped before confirmation (flicker).
    pub dropped_tentative: u64,
}

/// One track on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackOutput {
    /// Id, unique within the tracker (the source) and never reused.
    pub track_id: u64,
    /// Index of the query the track belongs to.
    pub query: usize,
    /// The matched detection's box on the frame it was matched; otherwise the box predicted with the track's
    /// velocity (not clipped to the image: clip with [`PixelBox::clip`] where it matters).
    pub bbox: PixelBox,
    /// Score of the last matched detection.
    pub score: f32,
    /// True once the track had `min_hits` matches; only confirmed tracks have events.
    pub confirmed: bool,
    /// True when the track was matched on this very frame.
    pub matched_this_frame: bool,
    /// True when the track was not matched at the last update: the object may have gone, and `bbox` is a
    /// guess. Annotations usually skip lost tracks.
    pub lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    Tentative,
    Tracked,
    Lost,
}

/// Centre and size: the space the motion model works in.
type Cxcywh = [f32; 4];

fn to_cxcywh(b: &PixelBox) -> Cxcywh {
    [(b.x0 + b.x1) * 0.5, (b.y0 + b.y1) * 0.5, b.x1 - b.x0, b.y1 - b.y0]
}

fn to_box(s: &Cxcywh) -> PixelBox {
    // A shrinking box must not turn inside out.
    let (w, h) = (s[2].max(1.0), s[3].max(1.0));
    PixelBox { x0: s[0] - 0.5 * w, y0: s[1] - 0.5 * h, x1: s[0] + 0.5 * w, y1: s[1] + 0.5 * h }
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    query: usize,
    state: TrackState,
    /// Matches so far, the first detection included.
    hits: u32,
    /// The last matched detection, and the frame and score it came with.
    last_box: PixelBox,
    last_frame: u64,
    /// The frame `last_box` stands for: `last_frame`, or a later frame on which the track was held
    /// ([`Tracker::hold_into`]). Prediction and ageing count from it.
    ref_frame: u64,
    score: f32,
    /// Change of centre and size per frame.
    velocity: Cxcywh,
}

impl Track {
    fn confirmed(&self) -> bool {
        self.state != TrackState::Tentative
    }

    /// The box extrapolated to `frame` with constant velocity (no extrapolation backwards).
    fn predict(&self, frame: u64) -> PixelBox {
        let dt = frame.saturating_sub(self.ref_frame);
        if dt == 0 || self.velocity == [0.0; 4] {
            return self.last_box;
        }
        let mut s = to_cxcywh(&self.last_box);
        for (v, dv) in s.iter_mut().zip(self.velocity) {
            *v += dv * dt as f32;
        }
        to_box(&s)
    }

    fn output(&self, frame: u64) -> TrackOutput {
        TrackOutput {
            track_id: self.id,
            query: self.query,
            bbox: self.predict(frame),
            score: self.score,
            confirmed: self.confirmed(),
            matched_this_frame: self.last_frame == frame,
            lost: self.state == TrackState::Lost,
        }
    }
}

/// Buffers reused by every update, so that updates do not allocate once they reached their working size.
#[derive(Debug, Default)]
struct Scratch {
    predicted: Vec<PixelBox>,
    track_used: Vec<bool>,
    det_used: Vec<bool>,
    pairs: Vec<(f32, usize, usize)>,
    matches: Vec<(usize, usize)>,
    new_dets: Vec<usize>,
}

/// The tracker of one source. See the module documentation for the algorithm and the state table.
///
/// Not shared between threads: the stage that runs inference for a source owns its tracker.
#[derive(Debug)]
pub struct Tracker {
    settings: TrackerSettings,
    /// Live tracks, in order of creation (so by id).
    tracks: Vec<Track>,
    next_id: u64,
    stats: TrackerStats,
    scratch: Scratch,
}

impl Tracker {
    /// A tracker without tracks; the first track gets id 1.
    pub fn new(settings: TrackerSettings) -> Self {
        Tracker {
            settings,
            tracks: Vec::new(),
            next_id: 1,
            stats: TrackerStats::default(),
            scratch: Scratch::default(),
        }
    }

    /// Sets the score that starts a track of `query` (a query added while the run goes on).
    pub fn set_query_high_score(&mut self, query: usize, score: f32) {
        let default = self.settings.high_score;
        let scores = &mut self.settings.query_high_scores;
        if scores.len() <= query {
            scores.resize(query + 1, default);
        }
        scores[query] = score;
    }

    /// The settings the tracker was created with (and the scores of queries added since).
    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Counters so far.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Live tracks (tentative, tracked and lost).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when there is no live track.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Takes the detections of inference frame `frame` and returns every live track on that frame, by id.
    ///
    /// Frame indices are expected to increase; a repeated or earlier index is treated as no time passing.
    /// Detections whose score or box is not a finite number are ignored.
    pub fn update(&mut self, frame: u64, detections: &[Detection]) -> Vec<TrackOutput> {
        let mut out = Vec::with_capacity(self.tracks.len() + detections.len());
        self.update_into(frame, detections, &mut out);
        out
    }

    /// [`Tracker::update`] into a vector the caller reuses (it is cleared first).
    pub fn update_into(&mut self, frame: u64, detections: &[Detection], out: &mut Vec<TrackOutput>) {
        self.stats.updates += 1;
        // The per-query thresholds are copied out so that the closures do not borrow `self`.
        let high_of: Vec<f32> = (0..detections.iter().map(|d| d.query + 1).max().unwrap_or(0))
            .map(|q| self.settings.high_score_of(q))
            .collect();
        let low_score = self.settings.low_score;
        let is_high = |d: &Detection| d.score >= high_of[d.query];
        // Below both the low band and the query's own threshold, a detection is ignored.
        let ignored = |d: &Detection| d.score < low_score.min(high_of[d.query]);
        let (match_iou, low_match_iou) = (self.settings.match_iou, self.settings.low_match_iou);
        let tentative_match_iou = self.settings.tentative_match_iou;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.predicted.clear();
        scratch.predicted.extend(self.tracks.iter().map(|t| t.predict(frame)));
        scratch.track_used.clear();
        scratch.track_used.resize(self.tracks.len(), false);
        scratch.det_used.clear();
        scratch.det_used.extend(detections.iter().map(|d| !usable(d) || ignored(d)));
        scratch.matches.clear();

        // Stage 1: confirmed tracks, high-score detections.
        associate(&self.tracks, detections, &mut scratch, |t| t.confirmed(), is_high, match_iou);
        // Stage 2: tracks that were tracked until now, low-score detections.
        associate(
            &self.tracks,
            detections,
            &mut scratch,
            |t| t.state == TrackState::Tracked,
            |d| !is_high(d),
            low_match_iou,
        );
        // Stage 3: tentative tracks, high-score detections.
        associate(
            &self.tracks,
            detections,
            &mut scratch,
            |t| t.state == TrackState::Tentative,
            is_high,
            tentative_match_iou,
        );

        for &(ti, di) in &scratch.matches {
            self.apply_match(ti, frame, &detections[di]);
        }

        // Unmatched tracks: tentative ones are dropped, tracked ones become lost, old lost ones end.
        let (settings, stats) = (&self.settings, &mut self.stats);
        let mut i = 0;
        self.tracks.retain_mut(|t| {
            let matched = scratch.track_used[i];
            i += 1;
            if matched {
                return true;
            }
            match t.state {
                TrackState::Tentative => {
                    stats.dropped_tentative += 1;
                    false
                }
                TrackState::Tracked | TrackState::Lost => {
                    t.state = TrackState::Lost;
                    if frame.saturating_sub(t.ref_frame) > settings.max_age_frames {
                        stats.ended += 1;
                        false
                    } else {
                        true
                    }
                }
            }
        });

        // New tracks from the remaining high-score detections, best first, skipping second boxes of an object.
        scratch.new_dets.clear();
        scratch.new_dets.extend((0..detections.len()).filter(|&d| !scratch.det_used[d] && is_high(&detections[d])));
        scratch.new_dets.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score).then(a.cmp(&b)));
        let first_new = self.tracks.len();
        for &di in &scratch.new_dets {
            let d = &detections[di];
            let duplicate = self.tracks.iter().enumerate().any(|(k, t)| {
                let current = k >= first_new || t.last_frame == frame;
                current && t.query == d.query && t.last_box.iou(&d.bbox) >= self.settings.duplicate_iou
            });
            if duplicate {
                continue;
            }
            let mut track = Track {
                id: self.next_id,
                query: d.query,
                state: TrackState::Tentative,
                hits: 1,
                last_box: d.bbox,
                last_frame: frame,
                ref_frame: frame,
                score: d.score,
                velocity: [0.0; 4],
            };
            self.next_id += 1;
            if self.settings.min_hits <= 1 {
                track.state = TrackState::Tracked;
                self.stats.started += 1;
            }
            self.tracks.push(track);
        }
        self.scratch = scratch;

        out.clear();
        out.extend(self.tracks.iter().map(|t| t.output(frame)));
    }

    fn apply_match(&mut self, ti: usize, frame: u64, d: &Detection) {
        let s = &self.settings;
        let t = &mut self.tracks[ti];
        let dt = frame.saturating_sub(t.ref_frame);
        if dt > 0 {
            let (prev, now) = (to_cxcywh(&t.last_box), to_cxcywh(&d.bbox));
            let w = if t.hits == 1 { 1.0 } else { s.velocity_weight.clamp(0.0, 1.0) };
            for k in 0..4 {
                let measured = (now[k] - prev[k]) / dt as f32;
                t.velocity[k] = w * measured + (1.0 - w) * t.velocity[k];
            }
        }
        t.hits = t.hits.saturating_add(1);
        t.last_box = d.bbox;
        t.last_frame = frame;
        t.ref_frame = frame;
        t.score = d.score;
        match t.state {
            TrackState::Tentative if t.hits >= s.min_hits => {
                t.state = TrackState::Tracked;
                self.stats.started += 1;
            }
            TrackState::Tentative => {}
            TrackState::Tracked | TrackState::Lost => t.state = TrackState::Tracked,
        }
    }

    /// Every live track on `frame`, a frame between inference frames, with its box moved by its velocity.
    pub fn predict(&self, frame: u64) -> Vec<TrackOutput> {
        let mut out = Vec::with_capacity(self.tracks.len());
        self.predict_into(frame, &mut out);
        out
    }

    /// [`Tracker::predict`] into a vector the caller reuses (it is cleared first), allocation-free per frame.
    pub fn predict_into(&self, frame: u64, out: &mut Vec<TrackOutput>) {
        out.clear();
        out.extend(self.tracks.iter().map(|t| t.output(frame)));
    }

    /// Holds every track on `frame`, a frame the motion gate found still and so did not infer, and returns them
    /// as [`Tracker::predict_into`] does. Nothing moved, so each box stays where it was predicted to be when the
    /// scene became still and its velocity is forgotten; and a skipped frame is not a miss, so the frame does not
    /// age a track: a lost track's `max_age_frames` counts from its last match or its last held frame, and a
    /// tentative track waits for the next inference frame.
    pub fn hold_into(&mut self, frame: u64, out: &mut Vec<TrackOutput>) {
        for t in &mut self.tracks {
            if frame > t.ref_frame {
                t.last_box = t.predict(frame);
                t.ref_frame = frame;
                t.velocity = [0.0; 4];
            }
        }
        self.predict_into(frame, out);
    }

    /// Ends every live track (end of stream or shutdown): confirmed ones count as ended, tentative ones as
    /// dropped. The tracker can be used again afterwards; ids keep increasing.
    pub fn finish(&mut self) {
        for t in self.tracks.drain(..) {
            if t.confirmed() {
                self.stats.ended += 1;
            } else {
                self.stats.dropped_tentative += 1;
            }
        }
    }
}

fn usable(d: &Detection) -> bool {
    let b = &d.bbox;
    d.score.is_finite() && b.x0.is_finite() && b.y0.is_finite() && b.x1.is_finite() && b.y1.is_finite()
}

/// Greedy IoU matching of the unmatched tracks selected by `track_ok` with the unused detections selected by
/// `det_ok`, of the same query, best overlap first (ties broken by index, so results are deterministic).
/// Marks both sides used and appends the pairs to `scratch.matches`.
fn associate(
    tracks: &[Track],
    detections: &[Detection],
    scratch: &mut Scratch,
    track_ok: impl Fn(&Track) -> bool,
    det_ok: impl Fn(&Detection) -> bool,
    min_iou: f32,
) {
    scratch.pairs.clear();
    for (ti, t) in tracks.iter().enumerate() {
        if scratch.track_used[ti] || !track_ok(t) {
            continue;
        }
        for (di, d) in detections.iter().enumerate() {
            if scratch.det_used[di] || d.query != t.query || !det_ok(d) {
                continue;
            }
            let iou = scratch.predicted[ti].iou(&d.bbox);
            if iou >= min_iou && iou > 0.0 {
                scratch.pairs.push((iou, ti, di));
            }
        }
    }
    scratch.pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for &(_, ti, di) in &scratch.pairs {
        if !scratch.track_used[ti] && !scratch.det_used[di] {
            scratch.track_used[ti] = true;
            scratch.det_used[di] = true;
            scratch.matches.push((ti, di));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(query: usize, score: f32, x0: f32, y0: f32, x1: f32, y1: f32) -> Detection {
        Detection { query, score, bbox: PixelBox { x0, y0, x1, y1 } }
    }

    /// A box of `w` x `h` with its top-left corner at (`x`, `y`).
    fn at(query: usize, score: f32, x: f32, y: f32, w: f32, h: f32) -> Detection {
        det(query, score, x, y, x + w, y + h)
    }

    fn settings() -> TrackerSettings {
        TrackerSettings::default()
    }

    #[test]
    fn steady_object_gives_one_track_with_one_start_and_one_end() {
        let mut tracker = Tracker::new(settings());
        for frame in 0..40 {
            let out = tracker.update(frame, &[at(0, 0.5, 100.0, 100.0, 50.0, 80.0)]);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].track_id, 1);
            assert_eq!(out[0].confirmed, frame >= 2, "confirmed after min_hits = 3 matches, frame {frame}");
            assert!(out[0].matched_this_frame);
            assert_eq!(tracker.stats().started, u64::from(frame >= 2), "started once, at frame 2 (frame {frame})");
        }
        assert_eq!(tracker.stats().ended, 0, "a track matched on every frame does not end");
        tracker.finish();
        assert!(tracker.is_empty());
        assert_eq!(tracker.stats().started, 1);
        assert_eq!(tracker.stats().ended, 1);
    }

    #[test]
    fn two_objects_of_one_query_get_two_ids_and_queries_never_mix() {
        let mut tracker = Tracker::new(settings());
        for frame in 0..5 {
            let dets = [
                at(0, 0.6, 10.0, 10.0, 40.0, 40.0),
                at(0, 0.5, 200.0, 10.0, 40.0, 40.0),
                // Same place as the first, other query: a track of its own.
                at(1, 0.4, 10.0, 10.0, 40.0, 40.0),
            ];
            let out = tracker.update(frame, &dets);
            assert_eq!(out.len(), 3);
            let ids: Vec<(u64, usize)> = out.iter().map(|o| (o.track_id, o.query)).collect();
            assert_eq!(ids, vec![(1, 0), (2, 0), (3, 1)]);
            assert_eq!(out[0].bbox.x0, 10.0);
            assert_eq!(out[1].bbox.x0, 200.0);
        }
        assert_eq!(tracker.stats().started, 3);
    }

    #[test]
    fn missed_object_keeps_its_id_until_max_age() {
        let mut tracker = Tracker::new(TrackerSettings { max_age_frames: 10, ..settings() });
        let d = [at(0, 0.5, 100.0, 100.0, 50.0, 50.0)];
        for frame in 0..5 {
            tracker.update(frame, &d);
        }
        // Missed for 8 frames: lost, but kept.
        for frame in 5..13 {
            let out = tracker.update(frame, &[]);
            assert_eq!(out.len(), 1);
            assert!(out[0].lost && !out[0].matched_this_frame);
        }
        let out = tracker.update(13, &d);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].track_id, 1);
        assert!(!out[0].lost && out[0].matched_this_frame);
        // Now missed for longer than max_age: ended, and a new object gets a new id.
        for frame in 14..25 {
            tracker.update(frame, &[]);
        }
        assert!(tracker.is_empty());
        assert_eq!((tracker.stats().started, tracker.stats().ended), (1, 1));
        for frame in 25..28 {
            tracker.update(frame, &d);
        }
        assert_eq!(tracker.predict(28)[0].track_id, 2);
    }

    #[test]
    fn a_query_added_later_starts_tracks_at_its_own_threshold() {
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 1, query_high_scores: vec![0.15], ..settings() });
        tracker.set_query_high_score(2, 0.5);
        assert_eq!(tracker.settings().query_high_scores, [0.15, settings().high_score, 0.5]);
        let out = tracker.update(0, &[at(2, 0.3, 0.0, 0.0, 9.0, 9.0), at(2, 0.6, 50.0, 0.0, 9.0, 9.0)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].query, out[0].score), (2, 0.6));
    }

    #[test]
    fn each_query_starts_tracks_at_its_own_threshold() {
        // Query 0 asks for 0.15 (below the default high_score 0.2), query 1 for 0.5; low band from 0.1.
        let mut tracker =
            Tracker::new(TrackerSettings { min_hits: 1, query_high_scores: vec![0.15, 0.5], ..settings() });
        let out = tracker.update(0, &[at(0, 0.17, 0.0, 0.0, 9.0, 9.0), at(1, 0.3, 50.0, 0.0, 9.0, 9.0)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].query, 0);
        // A query whose threshold is below the low band: its detections at the threshold are not ignored.
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 1, query_high_scores: vec![0.05], ..settings() });
        assert_eq!(tracker.update(0, &[at(0, 0.07, 0.0, 0.0, 9.0, 9.0)]).len(), 1);
    }

    #[test]
    fn low_score_detections_keep_a_tracked_object_but_start_nothing() {
        let mut tracker = Tracker::new(settings());
        for frame in 0..3 {
            tracker.update(frame, &[at(0, 0.5, 100.0, 100.0, 50.0, 50.0)]);
        }
        // Occluded: the score drops below high_score, but the box still overlaps well.
        for frame in 3..6 {
            let out = tracker.update(frame, &[at(0, 0.15, 102.0, 100.0, 50.0, 50.0)]);
            assert_eq!(out.len(), 1);
            assert!(out[0].matched_this_frame, "frame {frame}");
            assert_eq!(out[0].score, 0.15);
        }
        // Low-score detections alone never start a track, and those below low_score are ignored.
        let mut tracker = Tracker::new(settings());
        for frame in 0..10 {
            assert!(
                tracker.update(frame, &[at(0, 0.15, 0.0, 0.0, 9.0, 9.0), at(0, 0.05, 50.0, 0.0, 9.0, 9.0)]).is_empty()
            );
        }
    }

    #[test]
    fn flicker_below_min_hits_produces_no_event() {
        let mut tracker = Tracker::new(settings());
        tracker.update(0, &[at(0, 0.9, 10.0, 10.0, 20.0, 20.0)]);
        tracker.update(1, &[]);
        tracker.update(2, &[at(0, 0.9, 10.0, 10.0, 20.0, 20.0)]);
        tracker.update(3, &[at(0, 0.9, 10.0, 10.0, 20.0, 20.0)]);
        for frame in 4..10 {
            tracker.update(frame, &[]);
        }
        tracker.finish();
        assert_eq!(tracker.stats().ended, 0);
        assert_eq!(tracker.stats().started, 0);
        assert_eq!(tracker.stats().dropped_tentative, 2);
    }

    #[test]
    fn second_box_of_one_object_starts_no_track() {
        let mut tracker = Tracker::new(settings());
        for frame in 0..5 {
            let out = tracker.update(frame, &[at(0, 0.6, 10.0, 10.0, 40.0, 40.0), at(0, 0.5, 11.0, 10.0, 40.0, 40.0)]);
            assert_eq!(out.len(), 1, "frame {frame}");
        }
    }

    #[test]
    fn predicted_boxes_move_with_constant_velocity() {
        let mut tracker = Tracker::new(settings());
        // Inference every 3rd frame; the object moves 5 px right and 2 px down per frame.
        let pos = |f: u64| at(0, 0.5, 100.0 + 5.0 * f as f32, 50.0 + 2.0 * f as f32, 40.0, 60.0);
        for frame in (0..=9).step_by(3) {
            let out = tracker.update(frame, &[pos(frame)]);
            assert_eq!(out[0].bbox, pos(frame).bbox, "a matched frame shows the detection");
        }
        for frame in 10..12 {
            let out = tracker.predict(frame);
            assert_eq!(out.len(), 1);
            let (got, want) = (out[0].bbox, pos(frame).bbox);
            assert!((got.x0 - want.x0).abs() < 1e-3 && (got.y0 - want.y0).abs() < 1e-3, "{got:?} vs {want:?}");
            assert!((got.width() - 40.0).abs() < 1e-3 && (got.height() - 60.0).abs() < 1e-3);
            assert!(!out[0].matched_this_frame);
        }
        // Equal steps between consecutive predicted frames.
        let p: Vec<f32> = (10..14).map(|f| tracker.predict(f)[0].bbox.x0).collect();
        for w in p.windows(2) {
            assert!((w[1] - w[0] - 5.0).abs() < 1e-3);
        }
        // No extrapolation into the past.
        assert_eq!(tracker.predict(5)[0].bbox, pos(9).bbox);
    }

    /// A person walks, stops, and the motion gate skips 10 s of still frames: the track is neither aged out nor
    /// carried away by its old velocity, and the next inference frame finds it where it stopped.
    #[test]
    fn held_frames_neither_age_nor_move_a_track() {
        let mut tracker = Tracker::new(TrackerSettings { max_age_frames: 30, ..settings() });
        let pos = |f: u64| at(0, 0.5, 100.0 + 5.0 * f.min(9) as f32, 50.0, 40.0, 60.0);
        for frame in 0..=9 {
            tracker.update(frame, &[pos(frame)]);
        }
        let mut out = Vec::new();
        // 250 still frames (10 s at 25 fps): far more than max_age_frames.
        for frame in 10..260 {
            tracker.hold_into(frame, &mut out);
            assert_eq!(out.len(), 1, "frame {frame}");
            assert!(!out[0].matched_this_frame && out[0].confirmed && !out[0].lost);
            // The box predicted on the first still frame (one step on), then kept.
            assert!((out[0].bbox.x0 - 150.0).abs() < 1e-3, "{:?}", out[0].bbox);
        }
        // Without velocity now: a prediction stays put too.
        assert_eq!(tracker.predict(265)[0].bbox, out[0].bbox);
        // Inference again: the object is where it stopped (x0 145, IoU 0.78 with the held box): same track.
        let out = tracker.update(260, &[pos(260)]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].track_id, out[0].matched_this_frame), (1, true));
        assert_eq!(tracker.stats().ended, 0);
        // Predicting instead of holding over the same span ages the track out and sends its box away.
        let mut tracker = Tracker::new(TrackerSettings { max_age_frames: 30, ..settings() });
        for frame in 0..=9 {
            tracker.update(frame, &[pos(frame)]);
        }
        assert!(tracker.predict(259)[0].bbox.x0 > 1000.0);
        let out = tracker.update(260, &[pos(260)]);
        assert_eq!(tracker.stats().ended, 1, "aged out");
        assert_ne!(out[0].track_id, 1);
    }

    /// Two people walk through each other; the motion model keeps each id on its own person.
    #[test]
    fn crossing_objects_keep_their_ids() {
        let mut tracker = Tracker::new(settings());
        let a = |f: u64| at(0, 0.6, 10.0 + 8.0 * f as f32, 100.0, 40.0, 90.0);
        let b = |f: u64| at(0, 0.5, 250.0 - 8.0 * f as f32, 110.0, 36.0, 80.0);
        let mut id_a = None;
        let mut id_b = None;
        for frame in 0..30 {
            // The detector misses the one behind while they overlap most.
            let overlap = a(frame).bbox.iou(&b(frame).bbox);
            let dets = if overlap > 0.5 { vec![a(frame)] } else { vec![b(frame), a(frame)] };
            let out = tracker.update(frame, &dets);
            for o in out.iter().filter(|o| o.matched_this_frame) {
                if o.bbox == a(frame).bbox {
                    assert_eq!(*id_a.get_or_insert(o.track_id), o.track_id, "A at frame {frame}");
                } else {
                    assert_eq!(o.bbox, b(frame).bbox);
                    assert_eq!(*id_b.get_or_insert(o.track_id), o.track_id, "B at frame {frame}");
                }
            }
        }
        assert_ne!(id_a, id_b);
        tracker.finish();
        assert_eq!((tracker.stats().started, tracker.stats().ended), (2, 2));
    }

    #[test]
    fn min_hits_one_starts_at_once_and_bad_detections_are_ignored() {
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 1, ..settings() });
        let out = tracker.update(7, &[at(0, 0.9, 0.0, 0.0, 10.0, 10.0), at(0, f32::NAN, 50.0, 0.0, 10.0, 10.0)]);
        assert_eq!(out.len(), 1);
        assert!(out[0].confirmed);
        let bad = det(0, 0.9, f32::INFINITY, 0.0, 10.0, 10.0);
        assert_eq!(tracker.update(8, &[bad]).len(), 1);
        assert_eq!(tracker.stats().started, 1, "started once, on its first frame (7)");
    }

    #[test]
    fn ids_keep_increasing_after_finish() {
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 1, ..settings() });
        tracker.update(0, &[at(0, 0.9, 0.0, 0.0, 10.0, 10.0)]);
        tracker.finish();
        assert_eq!((tracker.stats().started, tracker.stats().ended), (1, 1));
        let out = tracker.update(1, &[at(0, 0.9, 0.0, 0.0, 10.0, 10.0)]);
        assert_eq!(out[0].track_id, 2);
    }

    #[test]
    fn settings_deserialize_with_defaults_and_reject_unknown_fields() {
        let s: TrackerSettings = serde_json::from_str(r#"{"min_hits": 5}"#).unwrap();
        assert_eq!(s, TrackerSettings { min_hits: 5, ..TrackerSettings::default() });
        assert!(serde_json::from_str::<TrackerSettings>(r#"{"min_hit": 5}"#).is_err());
    }
}
