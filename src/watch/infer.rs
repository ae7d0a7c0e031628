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
}

impl QueryBands {
    /// Per query its threshold and its text threshold (Grounding DINO; 0 for none), which no box below passes.
    pub(super) fn new(thresholds: &[(f32, f32)], low_score: f32) -> Self {
        QueryBands { floors: thresholds.iter().map(|&(t, text)| t.min(low_score).max(text)).collect() }
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
}

impl InferStage {
    pub(super) fn run(mut self) -> InferStats {
        let n = self.queues.len();
        let mut stats =
            InferStats { inferred: vec![0; n], frame_age: vec![LatencyHistogram::default(); n], ..Default::default() };
        // Per source: index and PTS of the last inferred frame, for pacing live sources whose marked frames were
        // dropped (a live queue keeps the newest frames, which may all be unmarked).
        let mut last_inferred: Vec<Option<(u64, Option<u64>)>> = vec![None; n];
        let selection = self.bands.selection();
        let mut stopped = false;
        loop {
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
            // Decide which frames to infer.
            let mut to_infer: Vec<usize> = Vec::new();
            for (k, (src, frame)) in batch.items.iter().enumerate() {
                if self.should_infer(*src, frame, &last_inferred) {
                    to_infer.push(k);
                }
            }
            let mut results: Vec<Option<Vec<Detection>>> = vec![None; batch.items.len()];
            if !to_infer.is_empty() {
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
                match self.detector.detect(&images, &self.query_set, &selection) {
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
                                .filter(|d| self.applies[src][d.query] && self.bands.keeps(d))
                                .collect();
                            results[k] = Some(dets);
                            stats.inferred[src] += 1;
                            let f = &batch.items[k].1;
                            last_inferred[src] = Some((f.index, f.pts_ns));
                        }
                    }
                    Err(e) => warn!(error = %e, "inference failed; frames passed on without detections"),
                }
                stats.batches += 1;
                stats.batch_latency.record(t0.elapsed());
            }
            for ((src, frame), detections) in batch.items.into_iter().zip(results) {
                // Blocking: a post thread that falls behind slows inference, and live queues then drop.
                if self.outputs[src].send(Processed { frame, detections }).is_err() {
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
        if !self.live[src] {
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
