//! Queries changed over the control plane while `watch` runs, with a scripted detector (no ONNX Runtime): each
//! query's detections keep their query after a change, whatever the position of its text in the new set.
//!
//! The detector puts each query's box at a place of its own (from its text), so a detection credited to the
//! wrong query shows as a box at another query's place.

mod common;
#[path = "common/control.rs"]
mod control;

use std::sync::Arc;
use std::time::Duration;

use common::{fixture, tiny_model};
use lookout::config::StandingQuery;
use lookout::geom::{Detection, PixelBox};
use lookout::http::{Control, HttpSettings, QuerySettings, Server};
use lookout::infer::postprocess::Selection;
use lookout::infer::{DetectTimings, Detector, FrameScale, Image, ModelDir, QuerySet};
use lookout::shutdown::Shutdown;
use lookout::source::SourceSpec;
use lookout::watch::{Progress, WatchSettings};

/// Every query of the set, found on every frame, at its own place.
struct EveryQuery {
    model: ModelDir,
}

/// The left edge (in widths) of a query's box: its own for each text the test uses.
fn place(text: &str) -> f32 {
    match text {
        "alpha" => 0.1,
        "beta" => 0.4,
        "gamma" => 0.7,
        other => panic!("unexpected query {other}"),
    }
}

impl Detector for EveryQuery {
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
        queries: &QuerySet,
        _selection: &Selection,
    ) -> lookout::infer::Result<Vec<lookout::infer::Result<Vec<Detection>>>> {
        Ok(images
            .iter()
            .map(|image| {
                let Image::Scaled(f) = image else { panic!("watch gives scaled frames") };
                let (w, h) = (f.orig_width as f32, f.orig_height as f32);
                Ok(queries
                    .texts()
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let x = place(t) * w;
                        Detection {
                            query: i,
                            score: 0.9,
                            bbox: PixelBox { x0: x, y0: h / 3.0, x1: x + w / 8.0, y1: h / 2.0 },
                        }
                    })
                    .collect())
            })
            .collect())
    }
    fn warm_up(&mut self, _queries: &QuerySet) -> lookout::infer::Result<()> {
        Ok(())
    }
    fn last_timings(&self) -> DetectTimings {
        DetectTimings::default()
    }
}

fn lines(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn query(text: &str) -> StandingQuery {
    StandingQuery { min_frames: 1, window: 1, update_interval_s: 0.0, ..StandingQuery::from_text(text, Some(0.5)) }
}

#[test]
fn a_removed_query_finds_nothing_more_and_the_others_keep_their_detections() {
    let out = tempfile::tempdir().unwrap();
    let model = ModelDir::open(&tiny_model("owlvit")).unwrap();
    let control = Control::new(
        "scripted",
        "cpu",
        out.path(),
        false,
        QuerySettings {
            default_threshold: 0.5,
            default_text_threshold: None,
            has_text_threshold: false,
            has_verifier: false,
            initial_ids: None,
            encoder: std::sync::Mutex::new(Some(Box::new(lookout::infer::TextsOnly))),
        },
    );
    let server = Server::start(
        HttpSettings { listen: "127.0.0.1:0".parse().unwrap(), token: None, read_only: false },
        control.clone(),
    )
    .unwrap();
    let port = server.local_addr().port();
    let settings = WatchSettings {
        out_dir: out.path().to_path_buf(),
        wall_time: false,
        progress: false,
        control: Some(control),
        // 2.5 s: a file blocks, so pacing it only leaves time for the changes.
        realtime: Some(4.0),
        max_duration: Some(Duration::from_secs(120)),
        ..WatchSettings::default()
    };
    let shutdown = Shutdown::new();
    let token = shutdown.token();
    let source = SourceSpec::parse(fixture("bikes.mp4").to_str().unwrap(), 0).unwrap();
    let detector = EveryQuery { model };
    let run = std::thread::spawn(move || {
        lookout::watch::run(
            Box::new(detector),
            vec![query("alpha"), query("beta")],
            vec![source],
            settings,
            token,
            Arc::new(Progress::default()),
        )
    });

    let labelled = |label: &str| lines(out.path()).into_iter().filter(|l| l["label"] == label).count();
    control::wait_for("events of alpha and beta", || (labelled("alpha") > 0 && labelled("beta") > 0).then_some(()));
    let json = [("Content-Type".to_string(), "application/json".to_string())];
    assert_eq!(control::request(port, "DELETE", "/api/v1/queries/q1", None, &[]).status, 204);
    let r = control::request(
        port,
        "POST",
        "/api/v1/queries",
        Some(br#"{"text": "gamma", "min_frames": 1, "window": 1, "update_interval_s": 0}"#),
        &json,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    control::wait_for("events of gamma", || (labelled("gamma") > 0).then_some(()));
    let alpha_before = labelled("alpha");
    // More frames with the new set.
    let beta_now = labelled("beta");
    control::wait_for("more updates of beta", || (labelled("beta") > beta_now + 5).then_some(()));
    // The file runs to its end: no frame lost to the changes.
    let summary = run.join().unwrap().unwrap();
    server.stop();
    let s = &summary.sources[0];
    assert_eq!((s.frames_decoded, s.frames_processed, s.frames_dropped), (250, 250, 0), "{summary}");

    let all = lines(out.path());
    let width = 640.0; // bikes.mp4
    for l in all.iter().filter(|l| l["type"] == "start" || l["type"] == "update") {
        let label = l["label"].as_str().unwrap();
        let x0 = l["box"][0].as_f64().unwrap();
        let expected = place(label) as f64 * width;
        assert!(
            (x0 - expected).abs() < 40.0,
            "a {label} line with another query's box (x0 {x0}, its place {expected}): {l}"
        );
    }
    // Alpha's lines after its removal are only its open event's end (and clips); no new start or update.
    let removal = all.iter().position(|l| l["type"] == "queries" && l["change"] == "remove").unwrap();
    let late: Vec<_> = all[removal..]
        .iter()
        .filter(|l| l["label"] == "alpha" && (l["type"] == "start" || l["type"] == "update"))
        .collect();
    // Frames already past inference when the change came may still be tracked (a few).
    assert!(late.len() <= 10, "alpha kept being found after its removal: {late:?}");
    assert!(labelled("alpha") <= alpha_before + 2);
}
