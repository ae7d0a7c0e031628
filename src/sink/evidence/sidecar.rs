//! The sidecar `<event-id>.json`: the event and the box and score of every frame of its clip.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CropRegion, EvidenceError, FrameBox, SIDECAR, SIDECAR_SCHEMA_VERSION, write_atomically};
use crate::redact::redact_url;
use crate::sink::events::{Peak, Stamp, round_us};
use crate::track::{FrameTime, LifecycleEvent};

/// The file names of an event's evidence, relative to the sidecar's directory (`<out>/<source>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceFiles {
    /// `<event-id>.mp4`: the full frame, pre-roll to post-roll.
    pub clip: Option<String>,
    /// `<event-id>-crop.mp4`: cropped to [`Sidecar::crop`]; null when it could not be written.
    pub crop_clip: Option<String>,
    /// `<event-id>.jpg`: the full frame at the peak with its box; null when it could not be written.
    pub snapshot: Option<String>,
    /// `<event-id>-crop.jpg`: the peak box plus the margin; null when it could not be written.
    pub crop_snapshot: Option<String>,
}

impl EvidenceFiles {
    /// The names [`crate::sink::events::Clips::planned`] gives the files of `event_id`, without the directory.
    pub fn planned(event_id: &str) -> Self {
        let name = |suffix: &str| Some(format!("{event_id}{suffix}"));
        EvidenceFiles {
            clip: name(".mp4"),
            crop_clip: name("-crop.mp4"),
            snapshot: name(".jpg"),
            crop_snapshot: name("-crop.jpg"),
        }
    }
}

/// The sidecar `<event-id>.json`: the event and the box and score of every frame of its clip.
///
/// ```json
/// {
///   "schema_version": 1,
///   "event_id": "gate-0-7-120",
///   "source": "rtsp://***@10.0.0.5/stream",
///   "query": "a person climbing the fence",
///   "label": "climbing",
///   "track_id": 7,
///   "start": {"frame": 120, "pts_s": 4.8},
///   "end": {"frame": 301, "pts_s": 12.04},
///   "peak": {"frame": 122, "pts_s": 4.88, "score": 0.41, "box": [310.0, 42.5, 388.0, 260.0]},
///   "clip_start_s": 0.0,
///   "files": {"clip": "gate-0-7-120.mp4", "crop_clip": "gate-0-7-120-crop.mp4",
///             "snapshot": "gate-0-7-120.jpg", "crop_snapshot": "gate-0-7-120-crop.jpg"},
///   "crop": {"x": 250, "y": 0, "width": 198, "height": 272, "out_width": 320, "out_height": 440},
///   "frames": [{"frame": 120, "pts_s": 4.8, "box": [300.0, 40.0, 380.0, 250.0], "score": 0.35}, ...],
///   "gaps": [{"at_s": 9.2, "missing_s": 3.5, "reason": "the source reconnected"}]
/// }
/// ```
///
/// - Times are stream times in seconds, as in `events.jsonl`; `start`, `end` and `peak` are those of its `end`
///   line (`wall_time` is there when the log has wall-clock times). `end` is null if the event had not ended.
/// - `clip_start_s`: the stream time of the clip's first frame, so frame `pts_s - clip_start_s` seconds into
///   the clip is the one a box belongs to.
/// - `files`: names in the sidecar's own directory; a file that could not be written is null.
/// - `crop`: the region of the cropped clip in pixels of the full frame, and its output size; null without one.
/// - `frames`: in frame order, one entry for each frame of the clip on which the event's track matched.
///   Frames without a box of the event (the pre- and post-roll, frames that were not run through the model,
///   frames where the match was missed) are **left out**, not listed as null: `frame` and `pts_s` say where
///   each entry is.
/// - `gaps`: where the clip skips time that was not recorded: `at_s` is the stream time of the last frame
///   before the gap, `missing_s` the wall-clock seconds missing; empty when the clip is whole (schema 2).
/// - `source` is always written with its password removed ([`redact_url`]), whatever the struct holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// [`SIDECAR_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The event's id, as in `events.jsonl`.
    pub event_id: String,
    /// Display name of the source; its password is removed when written.
    pub source: String,
    /// The query's text.
    pub query: String,
    /// The query's short label.
    pub label: String,
    /// The tracker's id of the object.
    pub track_id: u64,
    /// The event's first match.
    pub start: Stamp,
    /// The event's last match; null if it had not ended.
    pub end: Option<Stamp>,
    /// The best match.
    pub peak: Peak,
    /// Stream time of the clip's first frame, in seconds.
    pub clip_start_s: f64,
    /// The evidence files.
    pub files: EvidenceFiles,
    /// The region of the cropped clip.
    pub crop: Option<CropRegion>,
    /// Every frame of the clip with a box of the event, in frame order.
    pub frames: Vec<FrameBox>,
    /// Spans inside the clip that were not recorded (the source reconnected, the disk was full), in order.
    pub gaps: Vec<crate::sink::recording::Gap>,
}

impl Sidecar {
    /// The sidecar of `event` (its `end` or `closed` notification), with the planned file names and no crop
    /// region yet. `frames` are sorted into frame order, their times rounded to the microsecond (as in `events.jsonl`).
    pub fn new(
        event: &LifecycleEvent,
        source: &str,
        query: &str,
        label: &str,
        clip_start_s: f64,
        mut frames: Vec<FrameBox>,
    ) -> Self {
        let stamp = |t: &FrameTime| Stamp {
            frame: t.frame,
            pts_s: round_us(t.pts_s),
            wall_time: t.wall.map(crate::sink::format_rfc3339_utc),
        };
        frames.sort_by_key(|f| f.frame);
        for f in &mut frames {
            f.pts_s = round_us(f.pts_s);
        }
        Sidecar {
            schema_version: SIDECAR_SCHEMA_VERSION,
            event_id: event.event_id.clone(),
            source: redact_url(source),
            query: query.to_string(),
            label: label.to_string(),
            track_id: event.track_id,
            start: stamp(&event.start.at),
            end: event.end.as_ref().map(stamp),
            peak: Peak {
                frame: event.peak.at.frame,
                pts_s: round_us(event.peak.at.pts_s),
                score: event.peak.score,
                bbox: event.peak.bbox,
            },
            clip_start_s: round_us(clip_start_s),
            files: EvidenceFiles::planned(&event.event_id),
            crop: None,
            frames,
            gaps: Vec::new(),
        }
    }
}

/// Writes `sidecar` as pretty-printed JSON at `out` (as `.<name>.part`, then renamed), with its source redacted.
pub fn write_sidecar(out: &Path, sidecar: &Sidecar) -> Result<(), EvidenceError> {
    let redacted = Sidecar { source: redact_url(&sidecar.source), ..sidecar.clone() };
    let mut json = serde_json::to_vec_pretty(&redacted).map_err(|e| EvidenceError::Write {
        what: SIDECAR,
        path: out.to_path_buf(),
        error: io::Error::other(e),
    })?;
    json.push(b'\n');
    write_atomically(out, SIDECAR, &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geom::PixelBox;

    fn pb(x0: f32, y0: f32, x1: f32, y1: f32) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    /// The sidecar's schema, field by field and in order: changing it means raising SIDECAR_SCHEMA_VERSION.
    #[test]
    fn sidecar_schema_is_stable() {
        use crate::track::{EndReason, LifecycleKind, Sample};
        let at = |frame: u64| FrameTime { frame, pts_s: frame as f64 / 25.0, wall: None };
        let sample = |frame: u64, score: f32| Sample { at: at(frame), bbox: pb(1.0, 2.5, 30.0, 40.0), score };
        let event = LifecycleEvent {
            kind: LifecycleKind::End(EndReason::Lost),
            event_id: "cam1-0-3-46".into(),
            query: 0,
            track_id: 3,
            at: at(99),
            last: sample(49, 0.4),
            start: sample(46, 0.3),
            end: Some(at(49)),
            peak: sample(47, 0.5),
            pre_roll_s: 5.0,
            post_roll_s: 5.0,
        };
        let frames = vec![
            FrameBox { frame: 48, pts_s: 1.92, bbox: pb(2.0, 3.0, 31.0, 41.0), score: 0.25 },
            FrameBox { frame: 47, pts_s: 1.8800000000000001, bbox: pb(1.0, 2.5, 30.0, 40.0), score: 0.5 },
        ];
        let mut sidecar = Sidecar::new(&event, "rtsp://admin:pw@cam1/live", "a red car", "car", 0.04, frames);
        sidecar.crop = Some(CropRegion { x: 0, y: 0, width: 40, height: 50, out_width: 320, out_height: 400 });
        sidecar.files.crop_snapshot = None;
        assert_eq!(
            serde_json::to_string(&sidecar).unwrap(),
            r#"{"schema_version":2,"event_id":"cam1-0-3-46","source":"rtsp://***@cam1/live","query":"a red car","label":"car","track_id":3,"start":{"frame":46,"pts_s":1.84},"end":{"frame":49,"pts_s":1.96},"peak":{"frame":47,"pts_s":1.88,"score":0.5,"box":[1.0,2.5,30.0,40.0]},"clip_start_s":0.04,"files":{"clip":"cam1-0-3-46.mp4","crop_clip":"cam1-0-3-46-crop.mp4","snapshot":"cam1-0-3-46.jpg","crop_snapshot":null},"crop":{"x":0,"y":0,"width":40,"height":50,"out_width":320,"out_height":400},"frames":[{"frame":47,"pts_s":1.88,"box":[1.0,2.5,30.0,40.0],"score":0.5},{"frame":48,"pts_s":1.92,"box":[2.0,3.0,31.0,41.0],"score":0.25}],"gaps":[]}"#
        );
    }
}
