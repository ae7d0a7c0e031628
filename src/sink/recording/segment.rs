//! One segment being written: `appsrc ! [parser] ! mp4mux|matroskamux ! filesink .<file>.part`, renamed to
//! `<file>` once the muxer has finished (its index is then on disk, so it plays).
//!
//! H.264 and H.265 go into MP4, remuxed. Every other codec the tap takes (VP8, MJPEG, MPEG-4 part 2, DivX 3)
//! goes into Matroska, which holds them all (MP4 cannot hold DivX 3), also remuxed; a clip cut from those is
//! encoded to H.264, as every clip is an MP4 that plays everywhere.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::gst::bus::{self, WaitError};
use crate::gst::part::{PartFile, PartName};
use crate::source::Packet;

/// The bytes waiting in a segment's appsrc before a push waits (a slow disk makes the recorder's queue, then the
/// recording, lose packets rather than hold more).
const APPSRC_MAX_BYTES: u64 = 16 << 20;

/// How a codec is stored: the file extension and the elements from the appsrc to the muxer.
pub(super) fn container(caps: &gst::CapsRef) -> (&'static str, String) {
    let Some(s) = caps.structure(0) else { return ("mkv", "matroskamux".into()) };
    let codec = s.name().to_string();
    // Packets already framed as mp4mux takes them go straight in (a second parser would re-derive their
    // timestamps; see `sink::clips` for the broken files where that fails).
    let ready_for_mp4 = matches!(s.get::<&str>("stream-format"), Ok("avc" | "avc3" | "hvc1" | "hev1"))
        && s.get::<&str>("alignment") == Ok("au");
    match codec.as_str() {
        "video/x-h264" | "video/x-h265" if ready_for_mp4 => ("mp4", format!("{codec} ! mp4mux")),
        "video/x-h264" => ("mp4", "h264parse ! mp4mux".into()),
        "video/x-h265" => ("mp4", "h265parse ! mp4mux".into()),
        _ => ("mkv", "matroskamux".into()),
    }
}

/// The buffer of `packet` with its times moved back by `base` ns and its keyframe flag as the tap decided it.
pub(crate) fn rebased(packet: &Packet, base: u64) -> gst::Buffer {
    let mut b = packet.buffer.copy();
    {
        let b = b.make_mut();
        // A packet without a PTS is shown at its decoding time (mp4mux refuses a buffer without one).
        let pts = packet.pts_ns.or(packet.dts_ns);
        b.set_pts(pts.map(|t| gst::ClockTime::from_nseconds(t.saturating_sub(base))));
        b.set_dts(packet.dts_ns.map(|t| gst::ClockTime::from_nseconds(t.saturating_sub(base))));
        if packet.keyframe {
            b.unset_flags(gst::BufferFlags::DELTA_UNIT);
        } else {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
    }
    b
}

/// A segment being written.
pub(super) struct SegmentWriter {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    part: PartFile,
    /// File name in `rec/`.
    pub(super) file: String,
    pub(super) caps: gst::Caps,
    pub(super) prun: u64,
    /// Pipeline time of the first packet (a keyframe), ns.
    pub(super) start_ns: u64,
    /// Subtracted from every time in the file.
    base_ns: u64,
    /// The end of the latest frame pushed (its time plus its duration, or plus 1/25 s), ns.
    pub(super) end_ns: u64,
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) wall: SystemTime,
    pub(super) wall_end: SystemTime,
}

/// Why a segment could not be written.
#[derive(Debug)]
pub(super) enum SegmentFailure {
    /// No room: the disk is full (or a file size limit).
    NoSpace(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for SegmentFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentFailure::NoSpace(m) | SegmentFailure::Other(m) => f.write_str(m),
        }
    }
}

impl SegmentWriter {
    /// Starts `dir/<name>.<ext>` with `first` (a keyframe) of the codec `caps`.
    pub(super) fn start(
        dir: &Path,
        name: &str,
        caps: &gst::Caps,
        prun: u64,
        first: &Packet,
    ) -> Result<SegmentWriter, SegmentFailure> {
        let (ext, middle) = container(caps);
        let file = format!("{name}.{ext}");
        let path = dir.join(&file);
        let part = PartFile::create(&path, PartName::Hidden).map_err(|e| match &e {
            crate::gst::part::PartError::Create { error, .. }
            | crate::gst::part::PartError::CreateDir { error, .. }
                if crate::sink::disk::is_disk_full(error.kind()) =>
            {
                SegmentFailure::NoSpace(e.to_string())
            }
            _ => SegmentFailure::Other(e.to_string()),
        })?;
        let desc = format!(
            "appsrc name=src format=time is-live=false block=false ! {middle} ! filesink name=sink async=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| SegmentFailure::Other(format!("the recording pipeline does not build: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| SegmentFailure::Other("the recording pipeline is not a pipeline".into()))?;
        let appsrc = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| SegmentFailure::Other("the recording pipeline has no appsrc".into()))?;
        appsrc.set_caps(Some(caps));
        // Unbounded here; `push` waits for room itself (see `wait_for_room`).
        appsrc.set_max_bytes(0);
        let sink = pipeline
            .by_name("sink")
            .ok_or_else(|| SegmentFailure::Other("the recording pipeline has no filesink".into()))?;
        sink.set_property("location", part.part_path().to_string_lossy().as_ref());
        if pipeline.set_state(gst::State::Playing).is_err() {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(SegmentFailure::Other(format!("could not start writing {}", part.part_path().display())));
        }
        let start_ns = first.time_ns().unwrap_or(0);
        let base_ns = match (first.pts_ns, first.dts_ns) {
            (Some(p), Some(d)) => p.min(d),
            (p, d) => p.or(d).unwrap_or(0),
        };
        let now = SystemTime::now();
        let mut w = SegmentWriter {
            pipeline,
            appsrc,
            part,
            file,
            caps: caps.clone(),
            prun,
            start_ns,
            base_ns,
            end_ns: start_ns,
            packets: 0,
            bytes: 0,
            wall: now,
            wall_end: now,
        };
        w.push(first)?;
        Ok(w)
    }

    /// The path being written.
    pub(super) fn part_path(&self) -> PathBuf {
        self.part.part_path().to_path_buf()
    }

    /// Adds a packet (waits while the muxer's input holds [`APPSRC_MAX_BYTES`]).
    pub(super) fn push(&mut self, packet: &Packet) -> Result<(), SegmentFailure> {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        match wait_for_room(&self.pipeline, &self.appsrc, APPSRC_MAX_BYTES, deadline) {
            Ok(()) => {}
            Err(Some(m)) => return Err(failure_of(&m)),
            Err(None) => return Err(SegmentFailure::Other("the muxer took no packet for 30 s".into())),
        }
        if self.appsrc.push_buffer(rebased(packet, self.base_ns)).is_err() {
            return Err(self
                .error_now()
                .unwrap_or_else(|| SegmentFailure::Other("the muxer stopped taking packets".into())));
        }
        if let Some(t) = packet.time_ns() {
            let duration = packet.buffer.duration().map_or(40_000_000, |d| d.nseconds());
            self.end_ns = self.end_ns.max(t + duration);
        }
        self.packets += 1;
        self.bytes += packet.size as u64;
        self.wall_end = SystemTime::now();
        Ok(())
    }

    /// An error the pipeline has posted, if any.
    fn error_now(&self) -> Option<SegmentFailure> {
        let bus = self.pipeline.bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
        Some(failure_of(&msg))
    }

    /// Seconds of stream in it so far.
    pub(super) fn duration_s(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    /// Ends the stream, waits for the muxer until `deadline`, syncs and renames the file into place. On an error
    /// the `.part` is removed and nothing is under the final name.
    pub(super) fn finish(self, deadline: Instant) -> Result<(), SegmentFailure> {
        let _ = self.appsrc.end_of_stream();
        let outcome = bus::wait_eos(&self.pipeline, deadline);
        let _ = self.pipeline.set_state(gst::State::Null);
        match outcome {
            Ok(()) => {}
            Err(WaitError::Error(m)) => return Err(failure_of(&m)),
            Err(WaitError::Timeout) => return Err(SegmentFailure::Other("the muxer did not finish in time".into())),
            Err(e) => return Err(SegmentFailure::Other(format!("could not wait for the muxer: {e:?}"))),
        }
        self.part.finish().map(drop).map_err(|e| match &e {
            crate::gst::part::PartError::Sync { error, .. } if crate::sink::disk::is_disk_full(error.kind()) => {
                SegmentFailure::NoSpace(e.to_string())
            }
            _ => SegmentFailure::Other(e.to_string()),
        })
    }

    /// Stops the pipeline and removes the `.part`.
    pub(super) fn abandon(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        drop(self.part);
    }
}

/// Waits until `appsrc` holds at most `max` bytes; `Err(Some(error))` when the pipeline posted an error first
/// (taken off its bus), `Err(None)` at `deadline`. Not a blocking appsrc: a muxer stopped by an error (a full
/// disk) never takes another packet, and a blocked push would wait for ever (seen: a stop that never ended).
pub(crate) fn wait_for_room(
    pipeline: &gst::Pipeline,
    appsrc: &gst_app::AppSrc,
    max: u64,
    deadline: Instant,
) -> Result<(), Option<gst::Message>> {
    loop {
        if let Some(m) = pipeline.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error])) {
            return Err(Some(m));
        }
        if appsrc.current_level_bytes() <= max {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        // The muxer drains its input in milliseconds; a short poll, bounded by the deadline.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

pub(super) fn failure_of(m: &gst::Message) -> SegmentFailure {
    let from = m.src().map(|s| s.name().to_string()).unwrap_or_default();
    let gst::MessageView::Error(e) = m.view() else { return SegmentFailure::Other(format!("an error ({from})")) };
    let text = format!("{} ({from})", e.error());
    // filesink says "No space left" for ENOSPC, and a write error for EFBIG (a file size limit): both mean no room.
    let debug = e.debug().map(|d| d.to_string()).unwrap_or_default();
    if e.error().matches(gst::ResourceError::NoSpaceLeft) || debug.contains("File too large") {
        SegmentFailure::NoSpace(format!("{text}: disk full"))
    } else {
        SegmentFailure::Other(text)
    }
}
