//! The end-of-run report: per source and for the run, printed and written to `<out>/summary.json`.

use std::path::PathBuf;

use serde::Serialize;

use super::stats::LatencySummary;
use crate::sink::clips::ClipStatsSnapshot;

/// Per-source figures at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub source: String,
    pub name: String,
    /// The element that decoded the video (`avdec_h264`, `nvv4l2decoder` when the Jetson's hardware decodes,
    /// `none` for raw video); `None` if no frame came.
    pub decoder: Option<String>,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_inferred: u64,
    /// Whether the motion gate ran for the source.
    pub motion_gate: bool,
    /// Frames picked for inference that the motion gate skipped because nothing moved.
    pub frames_skipped_still: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    /// Events started: one per event, however many lines (`start`, `update`s, `end`) it has in `events.jsonl`.
    pub events: u64,
    /// `update` lines of those events.
    pub updates: u64,
    /// Age of a frame when inference started on it (decode → inference): bounded for live sources.
    pub frame_age: LatencySummary,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotated: Option<PathBuf>,
    /// The element that encoded `annotated` (`x264enc`, `nvv4l2h264enc` when the Jetson's NVENC does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
}

impl SourceSummary {
    /// A source that never ran (its argument was refused, or its pipeline could not be started): no frames, and
    /// the reason in `error`, so that it is in the summary and `summary.json` with the sources that ran.
    pub fn not_started(source: String, name: String, error: String) -> Self {
        SourceSummary {
            source,
            name,
            decoder: None,
            frames_decoded: 0,
            frames_processed: 0,
            frames_inferred: 0,
            motion_gate: false,
            frames_skipped_still: 0,
            frames_dropped: 0,
            reconnects: 0,
            events: 0,
            updates: 0,
            frame_age: LatencySummary::default(),
            error: Some(error),
            annotated: None,
            encoder: None,
        }
    }
}

/// Which model ran, and how: the summary's first line and `summary.json`'s `model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelRun {
    /// The model directory's name.
    pub name: String,
    /// As `--layout` names it: `split`, `hf` or `hf:<variant>`.
    pub layout: String,
    /// The image side's precision: `fp32`, `int8`, or another hf variant's name (`fp16`).
    pub precision: String,
}

impl ModelRun {
    /// What runs for `model`.
    pub fn of(model: &crate::infer::ModelDir) -> Self {
        ModelRun {
            name: model.name.clone(),
            layout: model.layout_choice().to_string(),
            precision: model.precision_label(),
        }
    }
}

/// The end-of-run report, also written to `<out>/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The model that ran (`None` only in tests that build a summary by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRun>,
    pub sources: Vec<SourceSummary>,
    /// Time of one inference batch (preprocess + model + class head + selection).
    pub inference: LatencySummary,
    pub batches: u64,
    /// Events started, over every source.
    pub events: u64,
    /// `update` lines, over every source.
    pub updates: u64,
    /// Clips started, written and failed (when clips are on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clips: Option<ClipStatsSnapshot>,
    /// Lines of `events.jsonl` never written: no room on the disk, and no room left to keep them in memory, or
    /// the run ended first. Lines written + lines lost = lines made.
    pub event_lines_lost: u64,
    /// Events verified, confirmed, rejected and overloaded (when a query verifies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::VerifySummary>,
    pub wall_seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model {
            Some(m) => {
                writeln!(f, "summary ({:.1} s, model {}, {}, {}):", self.wall_seconds, m.name, m.layout, m.precision)?
            }
            None => writeln!(f, "summary ({:.1} s):", self.wall_seconds)?,
        }
        for s in &self.sources {
            writeln!(
                f,
                "  {}: decoder {}, decoded {}, processed {}, inferred {}{}, dropped {}, reconnects {}, events {} (updates {}), frame age p50 {:.0} ms p95 {:.0} ms{}{}",
                s.source,
                s.decoder.as_deref().unwrap_or("unknown (no frame)"),
                s.frames_decoded,
                s.frames_processed,
                s.frames_inferred,
                if s.motion_gate { format!(", skipped still {}", s.frames_skipped_still) } else { String::new() },
                s.frames_dropped,
                s.reconnects,
                s.events,
                s.updates,
                s.frame_age.p50_ms,
                s.frame_age.p95_ms,
                s.encoder.as_ref().map(|e| format!(", annotated video encoded by {e}")).unwrap_or_default(),
                s.error.as_ref().map(|e| format!(" (error: {e})")).unwrap_or_default()
            )?;
        }
        writeln!(
            f,
            "  inference: {} batches, p50 {:.1} ms, p95 {:.1} ms; events {} (updates {})",
            self.batches, self.inference.p50_ms, self.inference.p95_ms, self.events, self.updates
        )?;
        if let Some(c) = &self.clips {
            writeln!(
                f,
                "  clips: {} written, {} failed ({} cut at most at once, {} waited at most)",
                c.written, c.failed, c.peak_open, c.peak_waiting
            )?;
        }
        if self.event_lines_lost > 0 {
            writeln!(f, "  events.jsonl: {} event lines lost (no room on the disk)", self.event_lines_lost)?;
        }
        if let Some(v) = &self.verification {
            writeln!(
                f,
                "  verification{}: {} events verified: {} confirmed, {} rejected, {} overloaded, {} errors; verifier {:.1} s, \
                 inference waited {:.1} s for it",
                v.precision.map(|p| format!(" ({p})")).unwrap_or_default(),
                v.verified,
                v.confirmed,
                v.rejected,
                v.overloaded,
                v.errors,
                v.verifier_ms as f64 / 1e3,
                v.inference_waited_ms as f64 / 1e3
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_decoder_and_encoder_of_each_source() {
        let source = |decoder: Option<&str>, encoder: Option<&str>| SourceSummary {
            source: "rtsp://***@cam/1".into(),
            name: "1".into(),
            decoder: decoder.map(String::from),
            frames_decoded: 10,
            frames_processed: 10,
            frames_inferred: 10,
            motion_gate: false,
            frames_skipped_still: 0,
            frames_dropped: 0,
            reconnects: 0,
            events: 0,
            updates: 0,
            frame_age: LatencySummary::default(),
            error: None,
            annotated: None,
            encoder: encoder.map(String::from),
        };
        let summary = Summary {
            model: None,
            sources: vec![source(Some("nvv4l2decoder"), Some("nvv4l2h264enc")), source(None, None)],
            inference: LatencySummary::default(),
            batches: 1,
            events: 0,
            updates: 0,
            clips: None,
            event_lines_lost: 0,
            verification: None,
            wall_seconds: 1.0,
        };
        let text = summary.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("  rtsp://***@cam/1: decoder nvv4l2decoder, decoded 10,"), "{text}");
        assert!(lines[1].ends_with(", annotated video encoded by nvv4l2h264enc"), "{text}");
        assert!(lines[2].contains("decoder unknown (no frame),") && !lines[2].contains("encoded by"), "{text}");
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["sources"][0]["decoder"], "nvv4l2decoder");
        assert!(json["sources"][1]["decoder"].is_null() && json["sources"][1].get("encoder").is_none());
        assert_eq!(json["event_lines_lost"], 0);
        // The model that ran, and in which precision, heads the summary and is in summary.json.
        let model = ModelRun { name: "owlvit-b32".into(), layout: "split".into(), precision: "int8".into() };
        let summary = Summary { model: Some(model), ..summary };
        assert!(summary.to_string().starts_with("summary (1.0 s, model owlvit-b32, split, int8):"), "{summary}");
        assert_eq!(serde_json::to_value(&summary).unwrap()["model"]["precision"], "int8");
        assert!(!text.contains("lost"), "{text}");
    }

    #[test]
    fn lost_event_lines_are_in_the_summary_line_and_the_json() {
        let summary = Summary {
            model: None,
            sources: Vec::new(),
            inference: LatencySummary::default(),
            batches: 0,
            events: 0,
            updates: 0,
            clips: None,
            event_lines_lost: 7,
            verification: None,
            wall_seconds: 1.0,
        };
        assert!(summary.to_string().contains("events.jsonl: 7 event lines lost (no room on the disk)"), "{summary}");
        assert_eq!(serde_json::to_value(&summary).unwrap()["event_lines_lost"], 7);
    }
}
