//! `watch` end to end with a scripted detector (no ONNX Runtime): what the tracker and the event engine make of
//! scores that dip below a query's threshold.
//!
//! The frames are real (tests/fixtures/bikes.mp4, decoded and scaled by GStreamer); the detections are scripted
//! by frame, through the same [`Detector`] interface a model family implements.

mod common;

use std::sync::Arc;

use common::{fixture, tiny_model};
use lookout::config::StandingQuery;
use lookout::geom::{Detection, PixelBox};
use lookout::infer::postprocess::Selection;
use lookout::infer::{DetectTimings, Detector, FrameScale, Image, ModelDir, QuerySet};
use lookout::shutdown::Shutdown;
use lookout::source::SourceSpec;
use lookout::watch::{Progress, WatchSettings};

/// A stand-in for a model: one box per frame, where and how sure [`Script::at`] says.
struct Scripted {
    model: ModelDir,
    /// Frames seen so far: a file source with `every = 1` sends each frame once, in order.
    frame: u64,
    script: fn(u64) -> (f32, f32),
}

impl Detector for Scripted {
    fn model(&self) -> &ModelDir {
        &self.model
    }
    fn frame_scale(&self) -> FrameScale {
        FrameScale::Stretch { width: 64, height: 64 }
    }
    fn text_encoder(&self) -> Box<dyn lookout::infer::TextEncoder> {
        Box::new(lookout::infer::TextsOnly)
    }
    fn encode(&mut self, texts: &[String]) -> lookout::infer::Result<QuerySet> {
        Ok(QuerySet::texts_only(texts.to_vec()))
    }
    fn detect(
        &mut self,
        images: &[Image<'_>],
        _queries: &QuerySet,
        selection: &Selection,
    ) -> lookout::infer::Result<Vec<lookout::infer::Result<Vec<Detection>>>> {
        let mut out = Vec::new();
        for image in images {
            let Image::Scaled(f) = image else { panic!("watch gives scaled frames") };
            let (x, score) = (self.script)(self.frame);
            self.frame += 1;
            // A square of an eighth of the frame's width, at x (in widths), halfway down.
            let side = f.orig_width as f32 / 8.0;
            let (w, y) = (f.orig_width as f32, f.orig_height as f32 / 2.0 - side / 2.0);
            let bbox = PixelBox { x0: x * w, y0: y, x1: x * w + side, y1: y + side };
            let keep = selection.threshold.is_none_or(|t| score >= t);
            out.push(Ok(if keep { vec![Detection { query: 0, score, bbox }] } else { vec![] }));
        }
        Ok(out)
    }
    fn warm_up(&mut self, _queries: &QuerySet) -> lookout::infer::Result<()> {
        Ok(())
    }
    fn last_timings(&self) -> DetectTimings {
        DetectTimings::default()
    }
}

/// Moves right by 1/64 of the width per frame, scoring 0.6, until frame 20; then stops and, for frames 20..26,
/// scores 0.15 (below the query's 0.3, above the tracker's low band of 0.1); then scores 0.6 again, still.
/// Without the low band the track is lost during the dip, and its prediction runs on at the old speed: 6 frames
/// later it is 3/4 of a box away from the object, which then gets a new track and a new event.
fn dip_while_stopping(frame: u64) -> (f32, f32) {
    let x = 0.1 + frame.min(20) as f32 / 64.0;
    let score = if (20..26).contains(&frame) { 0.15 } else { 0.6 };
    (x, score)
}

fn events_of(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_score_that_dips_below_the_threshold_keeps_the_track_and_the_event() {
    let out = tempfile::tempdir().unwrap();
    let detector =
        Scripted { model: ModelDir::open(&tiny_model("owlvit")).unwrap(), frame: 0, script: dip_while_stopping };
    let query = StandingQuery::from_text("a person", Some(0.3));
    let source = SourceSpec::parse(fixture("bikes.mp4").to_str().unwrap(), 0).unwrap();
    let settings = WatchSettings {
        out_dir: out.path().to_path_buf(),
        wall_time: false,
        progress: false,
        max_duration: Some(std::time::Duration::from_secs(120)),
        ..WatchSettings::default()
    };
    let shutdown = Shutdown::new();
    let summary = lookout::watch::run(
        Box::new(detector),
        vec![query],
        vec![source],
        settings,
        shutdown.token(),
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(summary.sources[0].frames_inferred > 40, "{summary}");

    let events = events_of(out.path());
    let starts: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "start").collect();
    assert_eq!(starts.len(), 1, "one event for one object: {events:#?}");
    let track = &starts[0]["track_id"];
    for e in &events {
        assert_eq!(&e["track_id"], track, "every line is of the same track: {e}");
        if e["type"] == "end" {
            assert_ne!(e["reason"], "lost", "the event must not end during the dip: {e}");
        }
    }
}
