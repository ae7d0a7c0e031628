//! `GET /metrics`: the Prometheus text format, made at each scrape from what the run publishes.
//!
//! Counters are read from the sources' own counters and the events index at the scrape (a fresh registry each
//! time, so a value is never kept twice); the inference histogram is the one the infer thread observes. Every
//! metric carries `model` and `device` labels.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use super::{ApiError, AppState};

fn opts(state: &AppState, name: &str, help: &str) -> Opts {
    Opts::new(name, help).const_label("model", &state.control.model).const_label("device", &state.control.device)
}

fn render(state: &AppState) -> prometheus::Result<String> {
    let registry = Registry::new();
    let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(opts(state, name, help), labels)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
        let g = GaugeVec::new(opts(state, name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let decoded = counter("lookout_source_frames_decoded_total", "Frames out of the source's decoder", &["source"])?;
    let inferred = counter("lookout_source_frames_inferred_total", "Frames run through the model", &["source"])?;
    let dropped = counter("lookout_source_frames_dropped_total", "Frames dropped before inference", &["source"])?;
    let skipped_still = counter(
        "lookout_source_frames_skipped_still_total",
        "Frames the motion gate let skip inference because nothing moved",
        &["source"],
    )?;
    let reconnects = counter("lookout_source_reconnects_total", "Connection attempts after the first", &["source"])?;
    let fps_in = gauge("lookout_source_fps_in", "Frames decoded per second, over the last second", &["source"])?;
    let fps_out = gauge("lookout_source_fps_out", "Frames inferred per second, over the last second", &["source"])?;
    let up = gauge("lookout_source_streaming", "1 while the source's frames flow", &["source"])?;
    for s in state.control.sources() {
        let snap = s.stats.snapshot();
        let l = [s.name.as_str()];
        decoded.with_label_values(&l).inc_by(snap.frames_decoded);
        inferred.with_label_values(&l).inc_by(s.inferred.load(Ordering::Relaxed));
        dropped.with_label_values(&l).inc_by(super::frames::dropped(&s, &snap));
        skipped_still.with_label_values(&l).inc_by(snap.frames_skipped_still);
        reconnects.with_label_values(&l).inc_by(snap.reconnects);
        let (i, o) = s.fps();
        fps_in.with_label_values(&l).set(i);
        fps_out.with_label_values(&l).set(o);
        up.with_label_values(&l).set(f64::from(u8::from(snap.state == crate::source::SourceState::Streaming)));
    }
    registry.register(Box::new(state.control.inference_seconds.clone()))?;

    let events = counter(
        "lookout_events_total",
        "Lines of events.jsonl written since the start, by query label and type",
        &["query", "type"],
    )?;
    let clips_written = counter("lookout_clips_written_total", "Events whose clips were written", &[])?;
    let clips_failed = counter("lookout_clips_failed_total", "Events whose clips failed", &[])?;
    let counts = state.index.counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ((query, kind), n) in &counts.events {
        events.with_label_values(&[query.as_str(), kind.as_str()]).inc_by(*n);
    }
    clips_written.with_label_values::<&str>(&[]).inc_by(counts.clips_written);
    clips_failed.with_label_values::<&str>(&[]).inc_by(counts.clips_failed);

    let delivered = counter("lookout_alerts_delivered_total", "Alerts the destination confirmed", &["destination"])?;
    let spooled = counter("lookout_alerts_spooled_total", "Alerts written to the spool", &["destination"])?;
    let late = counter("lookout_alerts_late_total", "Alerts delivered from the spool", &["destination"])?;
    if let Some(alerts) = state.control.alert_stats() {
        for d in alerts.destinations {
            let l = [d.destination.as_str()];
            delivered.with_label_values(&l).inc_by(d.delivered);
            spooled.with_label_values(&l).inc_by(d.spooled);
            late.with_label_values(&l).inc_by(d.delivered_late);
        }
    }

    let rebuilt = counter(
        "lookout_events_index_rebuilt_total",
        "Times the events index was made again from events.jsonl since the start",
        &[],
    )?;
    rebuilt.with_label_values::<&str>(&[]).inc_by(state.index.rebuilt.load(Ordering::Relaxed));

    let rss = IntGauge::with_opts(opts(state, "lookout_resident_memory_bytes", "Resident set size of the process"))?;
    rss.set(resident_bytes().unwrap_or(0) as i64);
    registry.register(Box::new(rss))?;

    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// The process's resident set size, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = render(&state)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}
