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

/// A span of the recording to write: where its packets are (segments on disk, read one at a time when it is
/// written, and the segment in memory), so that a clip of any length holds one segment in memory at most.
#[derive(Debug)]
pub struct Span {
    dir: std::path::PathBuf,
    sources: Vec<Source>,
    from_s: f64,
    to_s: f64,
    /// The gaps inside it.
    pub gaps: Vec<Gap>,
}

#[derive(Debug)]
enum Source {
    Disk(SegmentEntry),
    Memory(Part),
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Stream time (s) of its first frame shown.
    pub first_s: f64,
    /// Stream time (s) of the end of its last frame shown.
    pub end_s: f64,
    /// Set when it ends before the span's end for a stated reason (a change of codec).
    pub cut_short: Option<String>,
}

/// One part of a span: the packets of one segment (on disk or in memory), on the stream-time line.
#[derive(Debug)]
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
    let mut sources: Vec<Source> = on_disk.iter().cloned().map(Source::Disk).collect();
    // The segment in memory, unless it starts after the span (or was written to disk meanwhile: not listed then).
    if let Some(c) = current
        && c.packets.first().and_then(Packet::time_ns).is_some_and(|t| t as f64 / 1e9 <= to_s)
        && !on_disk.iter().any(|e| {
            c.packets.first().and_then(Packet::time_ns).is_some_and(|t| (t as f64 / 1e9 - e.start_s).abs() < 1e-6)
        })
    {
        sources.push(Source::Memory(c));
    }
    if sources.is_empty() {
        return Err(nothing(from_s, to_s));
    }
    Ok(Span { dir: shared.dir.clone(), sources, from_s, to_s, gaps })
}

fn nothing(from_s: f64, to_s: f64) -> CutError {
    CutError::Nothing(format!("nothing was recorded from {from_s:.3} s to {to_s:.3} s (stream time)"))
}

/// The packets of `[from_s, to_s]` from the segments `entries` (of one lookout run, in order) in `dir`.
pub fn span_of_segments(dir: &Path, entries: &[SegmentEntry], from_s: f64, to_s: f64) -> Result<Span, CutError> {
    let first = entries.iter().rposition(|e| e.start_s <= from_s).unwrap_or(0);
    let sources: Vec<Source> = entries[first.min(entries.len())..]
        .iter()
        .filter(|e| e.start_s <= to_s && e.end_s > from_s.min(e.start_s))
        .cloned()
        .map(Source::Disk)
        .collect();
    if sources.is_empty() {
        return Err(nothing(from_s, to_s));
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
    Ok(Span { dir: dir.to_path_buf(), sources, from_s, to_s, gaps })
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

/// `appsrc ! [parser] ! mp4mux ! filesink` for H.264/H.265 (a remux); for any other codec
/// `appsrc ! decodebin ! <encoder> ! mp4mux ! filesink` (the encoder fragment ends in h264parse).
fn clip_pipeline(caps: &gst::Caps, tmp: &Path, encoder: &str) -> Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let codec = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    let (ext, middle) = super::segment::container(caps);
    let middle = if ext == "mp4" { middle } else { format!("decodebin ! {encoder} ! mp4mux") };
    let desc =
        format!("appsrc name=src format=time is-live=false block=false ! {middle} ! filesink name=sink async=false");
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("clip pipeline for {codec} does not build: {e}; check the encoder `{encoder}`"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "clip pipeline is not a pipeline".to_string())?;
    let appsrc = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| "clip pipeline has no appsrc".to_string())?;
    appsrc.set_caps(Some(caps));
    // Unbounded here; `write_span` waits for room itself (`segment::wait_for_room`).
    appsrc.set_max_bytes(0);
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
/// moved to start near 0, by `deadline`: from the keyframe at or before its start to the first frame shown at or
/// after its end (see the module documentation), one segment in memory at a time.
pub fn write_span(span: &mut Span, out: &Path, encoder: &str, deadline: Instant) -> Result<Written, CutError> {
    let from_ns = (span.from_s.max(0.0) * 1e9) as u64;
    let to_ns = (span.to_s.max(0.0) * 1e9) as u64;
    let file = PartFile::named(out, PartName::Hidden).map_err(|e| CutError::Write(e.to_string()))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CutError::Write(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut muxer: Option<(gst::Pipeline, gst_app::AppSrc, gst::Caps, u64)> = None;
    let (mut first_ns, mut end_ns): (Option<u64>, u64) = (None, 0);
    let mut floor: Option<u64> = None;
    let mut cut_short = None;
    let mut failed: Option<String> = None;
    let sources = std::mem::take(&mut span.sources);
    'parts: for source in sources {
        let part = match source {
            Source::Disk(e) => read_segment(&span.dir, &e)?,
            Source::Memory(p) => p,
        };
        if let Some((_, _, caps, _)) = &muxer
            && !same_codec(caps, &part.caps)
        {
            let at = part.packets.first().and_then(Packet::time_ns).map_or(0.0, |t| t as f64 / 1e9);
            cut_short =
                Some(format!("the source's stream changed (codec or resolution) at {at:.3} s: the clip ends there"));
            break;
        }
        // A later segment never goes back in time (a reconnect is placed after what came before).
        let mut packets: Vec<Packet> = part
            .packets
            .into_iter()
            .filter(|p| floor.is_none_or(|f| p.decode_time_ns().is_none_or(|t| t > f)))
            .collect();
        if muxer.is_none() {
            // The keyframe at or before the start (or the first one: the recording starts later).
            let start = packets
                .iter()
                .rposition(|p| p.keyframe && p.time_ns().is_some_and(|t| t <= from_ns))
                .or_else(|| packets.iter().position(|p| p.keyframe));
            let Some(start) = start else { continue };
            packets.drain(..start);
        }
        // The part holding the end: up to the last packet shown at or before the first frame shown at or after
        // the end (the packets between that are shown later are references the B-frames taken need).
        let mut last_part = false;
        if let Some(last) = packets.iter().filter_map(Packet::time_ns).filter(|&t| t >= to_ns).min() {
            let end = packets.iter().rposition(|p| p.time_ns().is_some_and(|t| t <= last)).map_or(0, |i| i + 1);
            packets.truncate(end.max(1));
            last_part = true;
        }
        if muxer.is_none() {
            let base = packets
                .iter()
                .filter_map(|p| match (p.pts_ns, p.dts_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
                .min()
                .unwrap_or(0);
            let (pipeline, appsrc) = clip_pipeline(&part.caps, file.part_path(), encoder).map_err(CutError::Write)?;
            muxer = Some((pipeline, appsrc, part.caps.clone(), base));
        }
        let Some((pipeline, appsrc, _, base)) = &muxer else { break };
        for p in &packets {
            match super::segment::wait_for_room(pipeline, appsrc, APPSRC_MAX_BYTES, deadline) {
                Ok(()) => {}
                Err(Some(m)) => {
                    failed = Some(wait_text(bus::WaitError::Error(m)));
                    break 'parts;
                }
                Err(None) => {
                    failed = Some("the muxer did not finish in time".into());
                    break 'parts;
                }
            }
            if appsrc.push_buffer(rebased(p, *base)).is_err() {
                break 'parts;
            }
            if let Some(t) = p.time_ns() {
                first_ns = Some(first_ns.map_or(t, |f| f.min(t)));
                end_ns = end_ns.max(t + p.buffer.duration().map_or(0, |d| d.nseconds()));
            }
            floor = p.decode_time_ns().or(floor);
        }
        if last_part {
            break;
        }
    }
    let Some((pipeline, appsrc, _, _)) = muxer else { return Err(nothing(span.from_s, span.to_s)) };
    let mut result = failed.map_or(Ok(()), Err);
    if result.is_ok() {
        let _ = appsrc.end_of_stream();
        result = bus::wait_eos(&pipeline, deadline).map_err(wait_text);
    }
    let _ = pipeline.set_state(gst::State::Null);
    if let Err(e) = result {
        return Err(CutError::Write(format!("writing {} failed: {e}", out.display())));
    }
    match file.finish() {
        Ok(_) => {}
        Err(e @ (PartError::Rename { .. } | PartError::Exists { .. })) => return Err(CutError::Write(e.to_string())),
        Err(e) => return Err(CutError::Write(format!("writing {} failed: {e}", out.display()))),
    }
    Ok(Written { first_s: first_ns.unwrap_or(0) as f64 / 1e9, end_s: end_ns as f64 / 1e9, cut_short })
}

/// A wait on the muxer that did not end in EOS, as a clip's error (ending in [`NO_SPACE`] for a full disk).
fn wait_text(e: bus::WaitError) -> String {
    match e {
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
    }
}
