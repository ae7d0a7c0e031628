//! Sources: their counters (`/api/v1/sources`), their latest annotated frame as JPEG, and an MJPEG stream.
//!
//! The post thread publishes a copy of its annotated frame only while a client asks ([`SourceEntry::want_frames`]);
//! the JPEG is made here, on a blocking worker of the server, once per published frame whatever the number of
//! clients ([`JpegCache`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::control::{Control, SourceEntry};
use super::{ApiError, AppState};
use crate::source::SourceState;

/// JPEG quality of live frames: small enough for many clients, clear enough for boxes and labels.
const JPEG_QUALITY: u8 = 80;
/// How often an MJPEG stream looks for a new frame.
const MJPEG_POLL: Duration = Duration::from_millis(50);
const BOUNDARY: &str = "lookout-frame";

/// Per source, the JPEG of its latest published frame: `(seq, frame index, bytes)`.
#[derive(Debug, Default)]
pub(super) struct JpegCache {
    jpegs: Mutex<HashMap<String, (u64, u64, Bytes)>>,
    /// Held while a JPEG is made: the clients that ask for a new frame at once wait for the first one's JPEG
    /// instead of each making their own (50 clients polling `latest.jpg` made up to 50 per frame).
    making: tokio::sync::Mutex<()>,
    /// JPEGs made, for the tests.
    made: std::sync::atomic::AtomicU64,
}

impl JpegCache {
    fn cached(&self, source: &SourceEntry, seq: u64) -> Option<(u64, u64, Bytes)> {
        let jpegs = self.jpegs.lock().unwrap_or_else(|e| e.into_inner());
        jpegs.get(&source.name).filter(|(s, _, _)| *s == seq).cloned()
    }

    /// The JPEG of the source's latest frame (made once per frame, whatever the number of clients asking at
    /// once), with its seq and frame index; `None` before the first.
    async fn latest(&self, source: &Arc<SourceEntry>) -> Option<(u64, u64, Bytes)> {
        source.want_frames();
        let frame = source.latest()?;
        if let Some(hit) = self.cached(source, frame.seq) {
            return Some(hit);
        }
        let _making = self.making.lock().await;
        // Another client may have made it while this one waited; the frame may be newer by now too.
        let frame = source.latest()?;
        if let Some(hit) = self.cached(source, frame.seq) {
            return Some(hit);
        }
        let (seq, index) = (frame.seq, frame.frame);
        let bytes = tokio::task::spawn_blocking(move || encode_jpeg(&frame.picture)).await.ok()??;
        self.made.fetch_add(1, Ordering::Relaxed);
        self.jpegs.lock().unwrap_or_else(|e| e.into_inner()).insert(source.name.clone(), (seq, index, bytes.clone()));
        Some((seq, index, bytes))
    }
}

fn encode_jpeg(picture: &crate::picture::Picture) -> Option<Bytes> {
    let rgb = picture.to_rgb();
    let mut out = Vec::with_capacity(rgb.len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(&rgb, picture.width(), picture.height(), image::ExtendedColorType::Rgb8)
        .ok()?;
    Some(Bytes::from(out))
}

/// One source in `GET /api/v1/sources`.
#[derive(Debug, Serialize)]
struct SourceView {
    name: String,
    /// Password removed.
    source: String,
    live: bool,
    /// connecting, streaming, backoff or ended.
    state: &'static str,
    decoder: Option<String>,
    fps_in: f64,
    fps_out: f64,
    frames_decoded: u64,
    frames_inferred: u64,
    frames_processed: u64,
    frames_dropped: u64,
    /// Frames the motion gate skipped because nothing moved (0 when the gate is off for the source).
    frames_skipped_still: u64,
    reconnects: u64,
    last_error: Option<String>,
}

/// Frames dropped so far. A file's pipeline never drops (its appsink blocks): its frames decoded but not yet
/// received are in flight, not dropped, and the snapshot (which counts them once the source ended) would show
/// them as dropped while it runs.
pub(super) fn dropped(source: &SourceEntry, snap: &crate::source::SourceStatsSnapshot) -> u64 {
    if source.live || snap.state == SourceState::Ended {
        snap.frames_dropped
    } else {
        snap.dropped_in_queue + snap.dropped_unpaired
    }
}

pub(super) fn state_name(s: SourceState) -> &'static str {
    match s {
        SourceState::Connecting => "connecting",
        SourceState::Streaming => "streaming",
        SourceState::Backoff => "backoff",
        SourceState::Ended => "ended",
    }
}

pub(super) async fn sources(State(state): State<AppState>) -> impl IntoResponse {
    let list: Vec<SourceView> = state
        .control
        .sources()
        .iter()
        .map(|s| {
            let snap = s.stats.snapshot();
            let (fps_in, fps_out) = s.fps();
            let frames_dropped = dropped(s, &snap);
            SourceView {
                name: s.name.clone(),
                source: s.display.clone(),
                live: s.live,
                state: state_name(snap.state),
                decoder: snap.decoder,
                fps_in,
                fps_out,
                frames_decoded: snap.frames_decoded,
                frames_inferred: s.inferred.load(Ordering::Relaxed),
                frames_processed: s.processed.load(Ordering::Relaxed),
                frames_dropped,
                frames_skipped_still: snap.frames_skipped_still,
                reconnects: snap.reconnects,
                // Source errors are redacted where they are made; once more costs nothing.
                last_error: snap.last_error.map(|e| redact_words(&e)),
            }
        })
        .collect();
    axum::Json(serde_json::json!({"sources": list}))
}

/// Every URL in `text` with its password removed.
fn redact_words(text: &str) -> String {
    text.split(' ').map(crate::redact::redact_url).collect::<Vec<_>>().join(" ")
}

fn source_of(state: &AppState, name: &str) -> Result<Arc<SourceEntry>, ApiError> {
    state.control.source(name).ok_or_else(|| {
        let names: Vec<String> = state.control.sources().iter().map(|s| s.name.clone()).collect();
        ApiError::not_found(format!("no source {name:?}; the sources are: {}", names.join(", ")))
    })
}

pub(super) async fn latest_jpg(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let source = source_of(&state, &name)?;
    let (_, index, jpeg) = state
        .frames
        .latest(&source)
        .await
        .ok_or_else(|| ApiError::unavailable(format!("source {name:?} has no frame yet; try again in a moment")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            // The source's frame index: a client sees whether the picture moved on.
            (header::HeaderName::from_static("x-lookout-frame"), index.to_string()),
        ],
        jpeg,
    )
        .into_response())
}

pub(super) async fn mjpeg(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let source = source_of(&state, &name)?;
    let cache = state.frames.clone();
    let stream = futures_util::stream::unfold((cache, source, 0u64), |(cache, source, last)| async move {
        loop {
            if let Some((seq, _, jpeg)) = cache.latest(&source).await
                && seq != last
            {
                let mut part = Vec::with_capacity(jpeg.len() + 128);
                part.extend_from_slice(
                    format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len())
                        .as_bytes(),
                );
                part.extend_from_slice(&jpeg);
                part.extend_from_slice(b"\r\n");
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(part)), (cache, source, seq)));
            }
            // A file that ended publishes no more frames: the stream ends too.
            if source.stats.state() == SourceState::Ended && source.latest().is_some_and(|f| f.seq == last) {
                return None;
            }
            tokio::time::sleep(MJPEG_POLL).await;
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format!("multipart/x-mixed-replace; boundary={BOUNDARY}")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Every second: each source's frames decoded and inferred per second.
pub(super) async fn sample_fps(control: Arc<Control>) {
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut at = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let dt = at.elapsed().as_secs_f64().max(1e-3);
        at = tokio::time::Instant::now();
        for s in control.sources() {
            let now = (s.stats.snapshot().frames_decoded, s.inferred.load(Ordering::Relaxed));
            if let Some(before) = last.insert(s.name.clone(), now) {
                let fps_in = now.0.saturating_sub(before.0) as f64 / dt;
                let fps_out = now.1.saturating_sub(before.1) as f64 / dt;
                s.fps_in.store(fps_in.to_bits(), Ordering::Relaxed);
                s.fps_out.store(fps_out.to_bits(), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picture::{Picture, PixelFormat};

    /// Fifty clients asking for the same new frame at once get one JPEG, made once.
    #[test]
    fn clients_asking_at_once_share_one_jpeg() {
        gstreamer::init().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        let stats = Arc::new(crate::source::SourceStats::default());
        let source = Arc::new(SourceEntry::new("cam", "cam", true, stats, std::time::Instant::now()));
        let cache = Arc::new(JpegCache::default());
        for (frame, expected) in [(1u64, 1u64), (2, 2)] {
            source.publish(frame, &Picture::black(PixelFormat::I420, 640, 360).unwrap());
            let answers: Vec<_> = rt.block_on(async {
                let clients: Vec<_> = (0..50)
                    .map(|_| {
                        let (cache, source) = (cache.clone(), source.clone());
                        tokio::spawn(async move { cache.latest(&source).await })
                    })
                    .collect();
                let mut answers = Vec::new();
                for c in clients {
                    answers.push(c.await.unwrap().expect("a frame"));
                }
                answers
            });
            assert!(answers.iter().all(|a| a.1 == frame && a.2 == answers[0].2), "every client, frame {frame}");
            assert_eq!(cache.made.load(Ordering::Relaxed), expected, "one JPEG per frame");
        }
    }
}
