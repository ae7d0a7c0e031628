//! The inference stage: one [`Detector`] for every source, on the `infer` thread.
//!
//! Each round takes at most one frame per source (fair: a fast file cannot starve a camera), decides which of
//! them to infer (`--every`, `--fps`, or the source's own marks), runs those as one batch through
//! [`Detector::detect`], and hands every frame, with its detections or none, to its source's post stage.
//! The hand-over blocks: a post stage that falls behind slows inference, and live queues then drop their oldest
//! frames (counted), while files are slowed down and lose nothing.
//!
//! What is passed on per query: every box the query's low band keeps (see [`QueryBands`]); the tracker uses the
//! band below the threshold only to keep a track it already has, and the event engine counts only matches at
//! or above the threshold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tracing::{info, warn};

use super::stats::LatencyHistogram;
use super::{POLL, Processed, Progress};
use crate::geom::Detection;
use crate::infer::postprocess::Selection;
use crate::infer::{Detector, Image, QuerySet, ScaledFrame};
use crate::shutdown::ShutdownToken;
use crate::source::{self, Frame, FrameQueue, Notify};

#[derive(Debug, Default)]
pub(super) struct InferStats {
    pub batches: u64,
    pub batch_latency: LatencyHistogram,
    /// Per source: frames inferred, and their age at inference.
    pub inferred: Vec<u64>,
    pub frame_age: Vec<LatencyHistogram>,
}

/// Per query, the lowest score passed on to the tracker: the query's threshold, or the tracker's low band
/// (`low_score`) when that is lower, but never below the query's text threshold (Grounding DINO). Detections between the two only keep a track the tracker already has
/// (ByteTrack's second association); they start no track and no event.
#[derive(Debug, Clone)]
pub(super) struct QueryBands {
    floors: Vec<f32>,
    /// The tracker's low band, to make the bands again when the queries change.
    low_score: f32,
}

impl QueryBands {
    /// Per query its threshold and its text threshold (Grounding DINO; 0 for none), which no box below passes.
    pub(super) fn new(thresholds: &[(f32, f32)], low_score: f32) -> Self {
        QueryBands { floors: thresholds.iter().map(|&(t, text)| t.min(low_score).max(text)).collect(), low_score }
    }

    /// The selection that keeps every box any query passes on.
    fn selection(&self) -> Selection {
        let lowest = self.floors.iter().copied().fold(1.0f32, f32::min);
        Selection { threshold: Some(lowest), always_best: false, ..Selection::default() }
    }

    fn keeps(&self, d: &Detection) -> bool {
        self.floors.get(d.query).is_some_and(|&f| d.score >= f)
    }
}

/// The inference stage: one model session for every source.
pub(super) struct InferStage {
    pub detector: Box<dyn Detector>,
    pub query_set: QuerySet,
    /// `applies[source][query]`.
    pub applies: Vec<Vec<bool>>,
    pub bands: QueryBands,
    pub live: Vec<bool>,
    pub every: u32,
    pub fps: Option<f64>,
    pub decode_only: bool,
    pub progress: Arc<Progress>,
    pub queues: Vec<FrameQueue>,
    pub notify: Arc<Notify>,
    pub outputs: Vec<Sender<Processed>>,
    pub shutdown: ShutdownToken,
    pub max_duration: Option<Duration>,
    pub started: Instant,
    /// The control plane: query changes are taken from it at the start of a round (one atomic load when
    /// nothing changed), and each source's inferred frames and each batch's time are published to it.
    pub control: Option<Arc<crate::http::Control>>,
    /// Per source, its entry in `control`.
    pub http_sources: Vec<Arc<crate::http::SourceEntry>>,
    /// Files are paced at this many times their frame rate (`--realtime`).
    pub realtime: Option<f64>,
    /// Turns on the cores with the verifier, when there is one (see `turn.rs`).
    pub turns: Option<Arc<super::turn::Turns>>,
}

/// Holds file frames back until their time comes, as a camera would deliver them (`--realtime`).
#[derive(Debug)]
struct Pacer {
    /// Per source: its first PTS and when it was seen.
    first: Vec<Option<(u64, Instant)>>,
    /// Times the frame rate (1: real time).
    speed: f64,
}

impl Pacer {
    /// How long to wait before the frame of `src` with `pts_ns` is due.
    fn wait_for(&mut self, src: usize, pts_ns: Option<u64>) -> Duration {
        let Some(pts) = pts_ns else { return Duration::ZERO };
        if self.first.len() <= src {
            self.first.resize(src + 1, None);
        }
        let (pts0, t0) = *self.first[src].get_or_insert((pts, Instant::now()));
        let due = t0 + Duration::from_secs_f64(pts.saturating_sub(pts0) as f64 / 1e9 / self.speed);
        due.saturating_duration_since(Instant::now())
    }
}

impl InferStage {
    pub(super) fn run(mut self) -> InferStats {
        let n = self.queues.len();
        let mut stats =
            InferStats { inferred: vec![0; n], frame_age: vec![LatencyHistogram::default(); n], ..Default::default() };
        // Per source: index and PTS of the last inferred frame, for pacing live sources whose marked frames were
        // dropped (a live queue keeps the newest frames, which may all be unmarked).
        let mut last_inferred: Vec<Option<(u64, Option<u64>)>> = vec![None; n];
        let mut selection = self.bands.selection();
        let mut stopped = false;
        // With the control plane: the queries in force, their version, and the slot of each query of the set.
        let mut live_queries = self.control.as_ref().map(|c| c.queries());
        let mut version = live_queries.as_ref().map_or(0, |q| q.version);
        let mut set_slots: Vec<usize> = (0..self.query_set.texts().len()).collect();
        let mut has_queries = true;
        let mut pacer = Pacer { first: Vec::new(), speed: self.realtime.unwrap_or(1.0) };
        loop {
            if let Some(c) = &self.control
                && c.query_version() != version
            {
                // The new set was encoded on the query-encoder thread: taking it costs a lock and a few vectors.
                let q = c.queries();
                version = q.version;
                set_slots = q.set_slots.clone();
                has_queries = q.set.is_some();
                if let Some(set) = &q.set {
                    self.query_set = set.clone();
                }
                let names: Vec<&str> = self.http_sources.iter().map(|s| s.name.as_str()).collect();
                self.applies =
                    names.iter().map(|n| q.slots.iter().map(|s| s.active && s.query.applies_to(n)).collect()).collect();
                let floors: Vec<(f32, f32)> =
                    q.slots.iter().map(|s| (s.query.threshold, s.query.text_threshold.unwrap_or(0.0))).collect();
                self.bands = QueryBands::new(&floors, self.bands.low_score);
                selection = self.bands.selection();
                info!(version, queries = set_slots.len(), "queries changed: in force from this frame");
                live_queries = Some(q);
            }
            self.progress.infer_rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !stopped && self.max_duration.is_some_and(|d| self.started.elapsed() >= d) {
                info!("--max-seconds reached; draining");
                stopped = true;
                for q in &self.queues {
                    q.close();
                }
            }
            if self.shutdown.is_aborting() {
                break;
            }
            let batch = source::next_batch(&self.queues, &self.notify, POLL);
            if batch.items.is_empty() {
                if batch.all_closed {
                    break;
                }
                continue;
            }
            if self.realtime.is_some() {
                let wait = batch
                    .items
                    .iter()
                    .filter(|(src, _)| !self.live[*src])
                    .map(|(src, f)| pacer.wait_for(*src, f.pts_ns))
                    .max()
                    .unwrap_or_default();
                // In slices, so that a stop is seen.
                let until = Instant::now() + wait;
                while Instant::now() < until && !self.shutdown.is_stopping() {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()).min(POLL));
                }
            }
            // Decide which frames to infer.
            let mut to_infer: Vec<usize> = Vec::new();
            for (k, (src, frame)) in batch.items.iter().enumerate() {
                if self.should_infer(*src, frame, &last_inferred) {
                    to_infer.push(k);
                }
            }
            let mut results: Vec<Option<Vec<Detection>>> = vec![None; batch.items.len()];
            if !to_infer.is_empty() && !has_queries {
                // Every query was removed: the frames are inferred with nothing to find.
                for &k in &to_infer {
                    let (src, f) = &batch.items[k];
                    results[k] = Some(Vec::new());
                    stats.inferred[*src] += 1;
                    last_inferred[*src] = Some((f.index, f.pts_ns));
                }
            } else if !to_infer.is_empty() {
                let t0 = Instant::now();
                let images: Vec<Image<'_>> = to_infer
                    .iter()
                    .map(|&k| {
                        let (src, frame) = &batch.items[k];
                        stats.frame_age[*src].record(frame.received.elapsed());
                        let m = &frame.model;
                        Image::Scaled(ScaledFrame {
                            rgb: &m.data,
                            width: m.width,
                            height: m.height,
                            stride: m.stride,
                            orig_width: frame.orig_width,
                            orig_height: frame.orig_height,
                        })
                    })
                    .collect();
                let turn = self.turns.as_ref().map(|t| t.inference());
                let detected = self.detector.detect(&images, &self.query_set, &selection);
                drop(turn);
                match detected {
                    Ok(per_frame) => {
                        for (&k, detections) in to_infer.iter().zip(per_frame) {
                            let src = batch.items[k].0;
                            let dets = match detections {
                                Ok(d) => d,
                                Err(e) => {
                                    warn!(error = %e, "frame skipped");
                                    continue;
                                }
                            };
                            let dets: Vec<Detection> = dets
                                .into_iter()
                                .map(|mut d| {
                                    // From the set's order to the query's slot (the same until a change).
                                    d.query = set_slots.get(d.query).copied().unwrap_or(d.query);
                                    d
                                })
                                .filter(|d| {
                                    self.applies[src].get(d.query).copied().unwrap_or(false) && self.bands.keeps(d)
                                })
                                .collect();
                            results[k] = Some(dets);
                            stats.inferred[src] += 1;
                            if let Some(s) = self.http_sources.get(src) {
                                s.inferred.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            let f = &batch.items[k].1;
                            last_inferred[src] = Some((f.index, f.pts_ns));
                        }
                    }
                    Err(e) => warn!(error = %e, "inference failed; frames passed on without detections"),
                }
                stats.batches += 1;
                stats.batch_latency.record(t0.elapsed());
                if let Some(c) = &self.control {
                    c.observe_inference(t0.elapsed());
                }
            }
            for ((src, frame), detections) in batch.items.into_iter().zip(results) {
                // Blocking: a post thread that falls behind slows inference, and live queues then drop.
                let queries = live_queries.clone();
                if self.outputs[src].send(Processed { frame, detections, queries }).is_err() {
                    warn!(source = src, "post thread gone");
                }
            }
        }
        stats
    }

    fn should_infer(&self, src: usize, frame: &Frame, last: &[Option<(u64, Option<u64>)>]) -> bool {
        if self.decode_only {
            return false;
        }
        if frame.infer {
            return true;
        }
        // The motion gate skipped it: nothing moved, and it was not due.
        if frame.is_still() || !self.live[src] {
            return false;
        }
        match (last[src], self.fps) {
            (None, _) => true,
            (Some((_, Some(last_pts))), Some(fps)) => {
                frame.pts_ns.is_some_and(|p| p.saturating_sub(last_pts) as f64 >= 1e9 / fps)
            }
            (Some((last_index, _)), _) => frame.index >= last_index + self.every as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_file_waits_for_its_frames_time_at_its_speed() {
        let mut pacer = Pacer { first: Vec::new(), speed: 2.0 };
        assert_eq!(pacer.wait_for(1, Some(5_000_000_000)), Duration::ZERO, "the first frame is due at once");
        let wait = pacer.wait_for(1, Some(7_000_000_000));
        // 2 s of stream at twice the speed: 1 s, less the moment since the first frame.
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900), "{wait:?}");
        assert_eq!(pacer.wait_for(0, None), Duration::ZERO, "a frame without a time is not held");
    }
}
