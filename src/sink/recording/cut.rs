//! Cutting a span out of the recording into one MP4: the packets from the keyframe at or before `from_s` to
//! `to_s`, remuxed (H.264, H.265) or encoded to H.264 (other codecs), written as `.part` and renamed.
//!
//! The span is taken in decoding order: from that keyframe up to the last packet shown at or before the first
//! frame shown at or after `to_s` (the packets between that are shown later are references the B-frames need). So a clip is never short of its span
//! and at most one GOP longer, at its start (and a frame or two at its end, with B-frames).
//!
//! The packets come from the segments on disk (demuxed again: `filesrc ! qtdemux|matroskademux ! appsink`) and,
//! for the segment being written, from memory. All are placed on the stream-time line of the run they were
//! recorded in (the index's `start_ns` → `start_s`), so segments of two pipeline runs (a reconnect) follow each
//! other. A change of codec (a camera that came back with another resolution) ends the clip there.

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::segment::rebased;
use super::{Gap, SegmentEntry, Shared};
use crate::gst::bus;
use crate::gst::part::{PartError, PartFile, PartName};
use crate::source::Packet;

/// The bytes waiting in a clip's appsrc before a push waits.
const APPSRC_MAX_BYTES: u64 = 8 << 20;

/// A span of the recording, ready to write: its packets on the stream-time line (ns) and their codec.
#[derive(Debug)]
pub struct Span {
    /// In decoding order, times in stream time (ns).
    pub packets: Vec<Packet>,
    pub caps: gst::Caps,
    /// The gaps inside it.
    pub gaps: Vec<Gap>,
    /// Set when the span ends before `to_s` for a stated reason (a change of codec).
    pub cut_short: Option<String>,
}

impl Span {
    /// Stream time (s) of the span's first frame shown.
    pub fn first_s(&self) -> Option<f64> {
        self.packets.iter().filter_map(Packet::time_ns).min().map(|t| t as f64 / 1e9)
    }

    /// Stream time (s) of the end of its last frame shown.
    pub fn end_s(&self) -> Option<f64> {
        self.packets
            .iter()
            .filter_map(|p| p.time_ns().map(|t| t + p.buffer.duration().map_or(0, |d| d.nseconds())))
            .max()
            .map(|t| t as f64 / 1e9)
    }
}

/// One part of a span: the packets of one segment (on disk or in memory), on the stream-time line.
struct Part {
    packets: Vec<Packet>,
    caps: gst::Caps,
    /// (lookout run, pipeline run) it was recorded in.
    #[allow(dead_code)]
    prun: (u64, u64),
}

/// Why a span could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// Nothing was recorded there.
    #[error("{0}")]
    Nothing(String),
    /// A segment could not be read back.
    #[error("cannot read the recording's segment {}: {message}", path.display())]
    Read { path: std::path::PathBuf, message: String },
    /// The clip could not be written.
    #[error("{0}")]
    Write(String),
}

/// The packets of `[from_s, to_s]` of this run's recording in `shared`, once the recording has reached `to_s`
/// or ended (waiting until `deadline` at most; then what there is).
pub fn span_of_run(shared: &Shared, from_s: f64, to_s: f64, deadline: Instant) -> Result<Span, CutError> {
    shared.wait_for(to_s, deadline);
    let (on_disk, current, gaps) = {
        let s = shared.lock();
        let run: Vec<&SegmentEntry> = s.segments.iter().filter(|e| e.run == shared.run).collect();
        let first = run.iter().rposition(|e| e.start_s <= from_s).unwrap_or(0);
        let on_disk: Vec<SegmentEntry> =
            run[first.min(run.len())..].iter().filter(|e| e.start_s <= to_s).map(|e| (*e).clone()).collect();
        let current = s.current.as_ref().map(|c| {
            let offset_ns = s.offset_s(c.prun) * 1e9;
            let packets: Vec<Packet> = c.packets.iter().map(|p| shifted(p, offset_ns)).collect();
            Part { packets, caps: c.caps.clone(), prun: (shared.run, c.prun) }
        });
        let gaps: Vec<Gap> = s.gaps.iter().filter(|g| g.at_s >= from_s - 60.0 && g.at_s <= to_s).cloned().collect();
        (on_disk, current, gaps)
    };
    let mut parts = Vec::new();
    for e in &on_disk {
        parts.push(read_segment(&shared.dir, e)?);
    }
    // The segment in memory, unless it starts after the span (or was written to disk meanwhile: not listed then).
    if let Some(c) = current
        && c.packets.first().and_then(Packet::time_ns).is_some_and(|t| t as f64 / 1e9 <= to_s)
        && !on_disk.iter().any(|e| {
            c.packets.first().and_then(Packet::time_ns).is_some_and(|t| (t as f64 / 1e9 - e.start_s).abs() < 1e-6)
        })
    {
        parts.push(c);
    }
    select(parts, from_s, to_s, gaps)
}

/// The packets of `[from_s, to_s]` from the segments `entries` (of one lookout run, in order) in `dir`.
pub fn span_of_segments(dir: &Path, entries: &[SegmentEntry], from_s: f64, to_s: f64) -> Result<Span, CutError> {
    let first = entries.iter().rposition(|e| e.start_s <= from_s).unwrap_or(0);
    let mut parts = Vec::new();
    for e in entries[first.min(entries.len())..].iter().filter(|e| e.start_s <= to_s && e.end_s > from_s.min(e.start_s))
    {
        parts.push(read_segment(dir, e)?);
    }
    // Gaps: between segments of two pipeline runs, or with time missing between them.
    let mut gaps = Vec::new();
    for w in entries.windows(2) {
        if w[1].start_s > from_s && w[0].end_s < to_s && (w[0].prun != w[1].prun || w[1].start_s - w[0].end_s > 0.5) {
            let missing = match (super::parse_rfc3339_utc(&w[0].wall_end), super::parse_rfc3339_utc(&w[1].wall)) {
                (Some(a), Some(b)) => b.duration_since(a).map_or(0.0, |d| d.as_secs_f64()),
                _ => 0.0,
            };
            gaps.push(Gap {
                at_s: w[0].end_s,
                missing_s: (missing * 1e3).round() / 1e3,
                reason: "not recorded".into(),
            });
        }
    }
    select(parts, from_s, to_s, gaps)
}

/// `p` moved by `offset_ns` (pipeline time → stream time).
fn shifted(p: &Packet, offset_ns: f64) -> Packet {
    let m = |t: Option<u64>| t.map(|t| (t as f64 + offset_ns).max(0.0).round() as u64);
    Packet { pts_ns: m(p.pts_ns), dts_ns: m(p.dts_ns), ..p.clone() }
}

/// Reads back one segment's packets, placed on the stream-time line: its first keyframe at the index's
/// `start_s` (whatever shift the demuxer applies, such as an edit list, is taken out that way).
fn read_segment(dir: &Path, e: &SegmentEntry) -> Result<Part, CutError> {
    let path = dir.join(&e.file);
    let fail = |message: String| CutError::Read { path: path.clone(), message };
    if !path.is_file() {
        return Err(fail("it is gone (removed by [recording] max_gb before the clip was cut)".into()));
    }
    let demux = if e.file.ends_with(".mp4") { "qtdemux" } else { "matroskademux" };
    let desc =
        format!("filesrc name=src ! {demux} ! appsink name=sink sync=false max-buffers=64 enable-last-sample=false");
    let pipeline = gst::parse::launch(&desc)
        .map_err(|err| fail(err.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| fail("not a pipeline".into()))?;
    pipeline.by_name("src").ok_or_else(|| fail("no filesrc".into()))?.set_property("location", &path);
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail("no appsink".into()))?;
    pipeline.set_state(gst::State::Playing).map_err(|err| fail(err.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut packets = Vec::new();
    let mut caps = None;
    let result = loop {
        if Instant::now() >= deadline {
            break Err(fail("reading it took more than 60 s".into()));
        }
        match sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            Some(sample) => {
                if caps.is_none() {
                    caps = sample.caps().map(|c| c.to_owned());
                }
                if let Some(b) = sample.buffer() {
                    packets.push(Packet::from_buffer(b));
                }
            }
            None if sink.is_eos() => break Ok(()),
            None => {
                if let Some(bus) = pipeline.bus()
                    && let Some(m) = bus.pop_filtered(&[gst::MessageType::Error])
                    && let gst::MessageView::Error(err) = m.view()
                {
                    break Err(fail(err.error().to_string()));
                }
            }
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let caps = caps.ok_or_else(|| fail("it holds no video".into()))?;
    // The first keyframe read is the segment's first packet, at `start_s`.
    let first = packets
        .iter()
        .find(|p| p.keyframe)
        .and_then(Packet::time_ns)
        .ok_or_else(|| fail("it holds no keyframe".into()))?;
    let offset_ns = e.start_s * 1e9 - first as f64;
    let packets = packets.iter().map(|p| shifted(p, offset_ns)).collect();
    Ok(Part { packets, caps, prun: (e.run, e.prun) })
}

/// Two codecs that one MP4 track can hold in a row: the same codec and the same decoder configuration.
fn same_codec(a: &gst::CapsRef, b: &gst::CapsRef) -> bool {
    match (a.structure(0), b.structure(0)) {
        (Some(x), Some(y)) => {
            let data = |s: &gst::StructureRef| {
                s.get::<gst::Buffer>("codec_data")
                    .ok()
                    .map(|b| b.map_readable().map(|m| m.to_vec()).unwrap_or_default())
            };
            x.name() == y.name() && data(x) == data(y)
        }
        _ => false,
    }
}

/// From the keyframe at or before `from_s` to `to_s` (see the module documentation).
fn select(parts: Vec<Part>, from_s: f64, to_s: f64, gaps: Vec<Gap>) -> Result<Span, CutError> {
    let Some(caps) = parts.first().map(|p| p.caps.clone()) else {
        return Err(CutError::Nothing(format!("nothing was recorded from {from_s:.3} s to {to_s:.3} s (stream time)")));
    };
    let mut all: Vec<Packet> = Vec::new();
    let mut cut_short = None;
    for part in parts {
        if !same_codec(&caps, &part.caps) {
            let at = part.packets.first().and_then(Packet::time_ns).map_or(0.0, |t| t as f64 / 1e9);
            cut_short =
                Some(format!("the source's stream changed (codec or resolution) at {at:.3} s: the clip ends there"));
            break;
        }
        // A later segment never goes back in time (a reconnect is placed after what came before).
        let floor = all.iter().filter_map(Packet::decode_time_ns).max();
        all.extend(part.packets.into_iter().filter(|p| floor.is_none_or(|f| p.decode_time_ns().is_none_or(|t| t > f))));
    }
    let from_ns = (from_s.max(0.0) * 1e9) as u64;
    let to_ns = (to_s.max(0.0) * 1e9) as u64;
    let start = all
        .iter()
        .rposition(|p| p.keyframe && p.time_ns().is_some_and(|t| t <= from_ns))
        .or_else(|| all.iter().position(|p| p.keyframe));
    let Some(start) = start else {
        return Err(CutError::Nothing(format!("no keyframe was recorded from {from_s:.3} s to {to_s:.3} s")));
    };
    // Up to the last packet, in decoding order, shown at or before `to_s`: what comes between it and earlier ones
    // (a P-frame shown later) is a reference that a B-frame taken needs. (Presentation times, not decoding times:
    // a demuxer may shift decoding times, as an MP4 edit list does.)
    let rest = &all[start..];
    // The first frame shown at or after `to_s` ends it, so the clip reaches `to_s` (as the event log's times
    // count it: the last frame's time, not its end).
    let last = rest.iter().filter_map(Packet::time_ns).filter(|&t| t >= to_ns).min().unwrap_or(to_ns);
    let end = rest.iter().rposition(|p| p.time_ns().is_some_and(|t| t <= last)).map_or(rest.len().min(1), |i| i + 1);
    let taken: Vec<Packet> = rest[..end].to_vec();
    let gaps = gaps
        .into_iter()
        .filter(|g| taken.first().and_then(Packet::time_ns).is_some_and(|t| g.at_s * 1e9 >= t as f64))
        .collect();
    Ok(Span { packets: taken, caps, gaps, cut_short })
}

/// `appsrc ! [parser] ! mp4mux ! filesink` for H.264/H.265 (a remux); for any other codec
/// `appsrc ! decodebin ! <encoder> ! mp4mux ! filesink` (the encoder fragment ends in h264parse).
fn clip_pipeline(caps: &gst::Caps, tmp: &Path, encoder: &str) -> Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let codec = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    let (ext, middle) = super::segment::container(caps);
    let middle = if ext == "mp4" { middle } else { format!("decodebin ! {encoder} ! mp4mux") };
    let desc =
        format!("appsrc name=src format=time is-live=false block=true ! {middle} ! filesink name=sink async=false");
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("clip pipeline for {codec} does not build: {e}; check the encoder `{encoder}`"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "clip pipeline is not a pipeline".to_string())?;
    let appsrc = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| "clip pipeline has no appsrc".to_string())?;
    appsrc.set_caps(Some(caps));
    appsrc.set_max_bytes(APPSRC_MAX_BYTES);
    let sink = pipeline.by_name("sink").ok_or_else(|| "clip pipeline has no filesink".to_string())?;
    sink.set_property("location", tmp.to_string_lossy().as_ref());
    if pipeline.set_state(gst::State::Playing).is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(format!("clip pipeline for {codec} could not start writing {}", tmp.display()));
    }
    Ok((pipeline, appsrc))
}

/// The end of an error that means the disk is full.
pub const NO_SPACE: &str = "disk full";

/// Writes `span` to `out` (as `.<name>.part`, synced, renamed; never over an existing file), its timestamps
/// moved to start near 0, by `deadline`.
pub fn write_span(span: &Span, out: &Path, encoder: &str, deadline: Instant) -> Result<(), CutError> {
    let part = PartFile::named(out, PartName::Hidden).map_err(|e| CutError::Write(e.to_string()))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CutError::Write(format!("cannot create {}: {e}", dir.display())))?;
    }
    let (pipeline, appsrc) = clip_pipeline(&span.caps, part.part_path(), encoder).map_err(CutError::Write)?;
    let base = span
        .packets
        .iter()
        .filter_map(|p| match (p.pts_ns, p.dts_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
        .min()
        .unwrap_or(0);
    let mut result = Ok(());
    for p in &span.packets {
        if Instant::now() >= deadline {
            result = Err("the muxer did not finish in time".to_string());
            break;
        }
        if appsrc.push_buffer(rebased(p, base)).is_err() {
            break;
        }
    }
    if result.is_ok() {
        let _ = appsrc.end_of_stream();
        result = bus::wait_eos(&pipeline, deadline).map_err(|e| match e {
            bus::WaitError::Error(m) => {
                let from = m.src().map(|s| s.name().to_string()).unwrap_or_default();
                match m.view() {
                    gst::MessageView::Error(e)
                        if e.error().matches(gst::ResourceError::NoSpaceLeft)
                            || e.debug().is_some_and(|d| d.contains("File too large")) =>
                    {
                        format!("{} ({from}): {NO_SPACE}", e.error())
                    }
                    gst::MessageView::Error(e) => format!("{} ({from})", e.error()),
                    _ => format!("an error ({from})"),
                }
            }
            bus::WaitError::Timeout => "the muxer did not finish in time".into(),
            other => format!("could not wait for the muxer: {other:?}"),
        });
    }
    let _ = pipeline.set_state(gst::State::Null);
    if let Err(e) = result {
        return Err(CutError::Write(format!("writing {} failed: {e}", out.display())));
    }
    match part.finish() {
        Ok(_) => Ok(()),
        Err(e @ (PartError::Rename { .. } | PartError::Exists { .. })) => Err(CutError::Write(e.to_string())),
        Err(e) => Err(CutError::Write(format!("writing {} failed: {e}", out.display()))),
    }
}
