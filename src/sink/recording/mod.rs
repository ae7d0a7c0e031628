//! The recording: each source's own encoded packets, written once, as a ring of segments on disk, from which
//! every event's clip is cut ([`cut`]) and `lookout export` writes any span.
//!
//! ```text
//! source pipeline: … ─ parser ─▶ [probe: PacketTap] ─▶ decoder ─ …      (GStreamer streaming thread; never waits)
//!                                    └─ TapMessage (bounded queue, RecordingSettings::queue_packets; when full
//!                                       the packet is lost to the recording: a gap, never a stall)
//! rec-<source>: segments of segment_s s, each from a keyframe: appsrc ! mp4mux|matroskamux ! filesink
//!               `.r<run>-<n>.mp4.part`, renamed when the muxer is done; one line in `rec/index.jsonl`;
//!               the oldest segments removed past `keep` / `max_gb` (never one a waiting clip needs)
//! clip-<n> (ClipWriter's pool): the event's span from the segments (and the packets of the segment being
//!               written, which are kept in memory until it is on disk): remuxed into one MP4
//! ```
//!
//! - **Layout:** `<out>/<source>/rec/r<run>-<n>.mp4` (`.mkv` for codecs other than H.264 and H.265, see
//!   [`segment`]), and `rec/index.jsonl` ([`index`]).
//! - **Time:** the index and the cuts are in stream time (as `pts_s` in `events.jsonl`). The tap sees packets in
//!   the source pipeline's time; the post stage, which sees the decoded frames, tells the recording how one maps
//!   to the other ([`Recording::mark`]), for each pipeline run (`prun`: one more at each reconnect).
//! - **Bounds:** a segment is removed once it ended more than `keep` before the newest (stream time in this run;
//!   wall-clock age for segments of earlier runs), or while the recording is over `max_gb`. By default `keep` is
//!   the longest pre-roll of the source's queries plus one segment, so only what the next event needs stays.
//!   A segment that an event being recorded or a clip waiting to be cut needs ([`Recording::pin`]) is kept past
//!   `keep`; only `max_gb` removes it (and that clip then says so).
//! - **Crashes:** a segment is under its final name only once whole. A `.part` left by a run that was killed
//!   (a second Ctrl-C, SIGKILL, a power cut) is removed when the recording starts, with a log line; so is a
//!   whole segment that the index does not list.
//! - **Full disk:** a segment that cannot be written, or a disk with less than
//!   [`RecordingSettings::min_free_bytes`] free (left to `events.jsonl` and the clips), pauses the recording, with
//!   one log line; packets are
//!   dropped (detection goes on) and every [`RecordingSettings::retry_after_s`] the next keyframe tries again;
//!   when a segment is written again, one line says the recording resumed and how long it paused.
//!
//! Threads and locks: the tap's streaming thread only `try_send`s. The `rec-<source>` thread owns the segment
//! being written and takes the [`Shared`] mutex for each packet (to keep it for the cutters), and when a
//! segment is done. The post thread takes it for each frame ([`Recording::mark`]) and to pin and unpin; the clip
//! workers take it to list what to cut and wait on its condvar for the recording to reach a clip's end. Nothing
//! is held across I/O except the index append.

pub mod cut;
pub mod export;
pub mod index;
mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use gstreamer as gst;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::source::{Packet, PacketTap, TapMessage};
pub use index::{INDEX_FILE_NAME, IndexLine, SegmentEntry};
use segment::{SegmentFailure, SegmentWriter};

/// Default [`RecordingSettings::segment_s`].
pub const DEFAULT_SEGMENT_S: f64 = 4.0;
/// Default [`RecordingSettings::queue_packets`]: 80 s of a 25 fps stream.
pub const DEFAULT_QUEUE_PACKETS: usize = 2048;
/// Default [`RecordingSettings::min_free_bytes`]: 100 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 100 << 20;
/// Default [`RecordingSettings::retry_after_s`].
pub const DEFAULT_RETRY_AFTER_S: f64 = 5.0;
/// How long writing a segment's end may take.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// The directory of the recording in `<out>/<source>/`.
pub const REC_DIR: &str = "rec";
/// A decoded frame belongs to the pipeline run whose packets' times reach this close to it.
const MARK_SLACK_NS: u64 = 2_000_000_000;

/// What the user sets for the recording (`[recording]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSettings {
    /// Seconds of a segment (it ends at the first keyframe after this much). Default [`DEFAULT_SEGMENT_S`].
    pub segment_s: f64,
    /// Seconds kept behind the newest packet. Default `None`: the longest pre-roll of the source's queries plus
    /// one segment (only what the next event needs).
    pub keep_s: Option<f64>,
    /// Bytes of each source's recording at most. Default `None`: no limit beyond `keep_s`.
    pub max_bytes: Option<u64>,
    /// Packets waiting between the tap and the recorder; past it a packet is lost to the recording (a gap).
    /// Default [`DEFAULT_QUEUE_PACKETS`].
    pub queue_packets: usize,
    /// Seconds between two tries to write again after a full disk. Default [`DEFAULT_RETRY_AFTER_S`].
    pub retry_after_s: f64,
    /// The recording starts no segment while its disk has less free than this: the last of the room is left to
    /// `events.jsonl` (the record of what was seen) and the clips. Default [`DEFAULT_MIN_FREE_BYTES`].
    pub min_free_bytes: u64,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        RecordingSettings {
            segment_s: DEFAULT_SEGMENT_S,
            keep_s: None,
            max_bytes: None,
            queue_packets: DEFAULT_QUEUE_PACKETS,
            retry_after_s: DEFAULT_RETRY_AFTER_S,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// Errors of the recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The recording's directory could not be made.
    #[error("cannot create the recording directory {}: {error}; check that the output directory is writable", path.display())]
    CreateDir { path: PathBuf, error: std::io::Error },
    /// The index could not be opened.
    #[error("cannot open the recording index {}: {error}; check that the output directory is writable", path.display())]
    Index { path: PathBuf, error: std::io::Error },
    /// The thread could not start.
    #[error("could not start the recording thread {name}: {error}")]
    Thread { name: String, error: std::io::Error },
    /// A duration that does not parse.
    #[error("{text:?} is not a duration; give a number and a unit: 90s, 30m, 12h, 7d")]
    BadDuration { text: String },
}

/// A span of a clip where nothing was recorded: the source reconnected, the disk was full, or the recorder fell
/// behind. Written in the clip's sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    /// Stream time (s) of the last frame before the gap.
    pub at_s: f64,
    /// Wall-clock seconds not recorded (from the last packet before the gap to the first after it).
    pub missing_s: f64,
    /// Why.
    pub reason: String,
}

/// One pipeline run of the source: where its packets' times lie, and how they map to stream time.
#[derive(Debug, Clone, Default)]
struct Gen {
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    /// Stream time minus pipeline time (s), once a decoded frame of this run has been seen.
    offset_s: Option<f64>,
    /// A decoded frame of this run: (pipeline ns, frame index), and the frame duration estimated from two.
    mark: Option<(u64, u64)>,
    frame_ns: Option<f64>,
}

/// The segment being written: its packets stay here until it is on disk, for the cutters.
#[derive(Debug)]
struct Current {
    prun: u64,
    caps: gst::Caps,
    packets: Vec<Packet>,
}

/// Counters of one source's recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordingStats {
    /// Segments written and renamed into place.
    pub segments_written: u64,
    /// Segments removed by `keep` or `max_gb`.
    pub segments_removed: u64,
    /// Segments that could not be written.
    pub segments_failed: u64,
    /// Packets not recorded (a full queue, a full disk, before the first keyframe).
    pub packets_lost: u64,
    /// Times the recording paused on a full disk.
    pub pauses: u64,
    /// Bytes of the recording on disk now.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Whole segments on disk, oldest first (earlier runs' too).
    segments: Vec<SegmentEntry>,
    current: Option<Current>,
    gens: Vec<Gen>,
    /// Stream time (s) each waiting clip needs from, by pin id.
    pins: BTreeMap<u64, f64>,
    next_pin: u64,
    /// Stream time (s) of the end of the newest packet recorded (or kept in `current`).
    newest_s: Option<f64>,
    /// No packet will come any more.
    ended: bool,
    /// Whether a packet ever came (a raw camera has none).
    any_packet: bool,
    /// Paused for a full disk.
    no_room: bool,
    gaps: Vec<Gap>,
    stats: RecordingStats,
}

/// The state shared by the recorder thread, the post thread and the clip workers.
#[derive(Debug)]
pub struct Shared {
    /// `<out>/<source>/rec`.
    pub dir: PathBuf,
    /// The lookout run.
    pub run: u64,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    /// The index, appended to by the recorder (a segment written) and by whoever trims (a segment removed). Taken
    /// after the state's mutex is let go, never with it.
    index: Mutex<index::Index>,
    /// Seconds kept behind the newest packet ([`RecordingSettings::keep_s`], or its default).
    keep_s: f64,
    max_bytes: Option<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Stream time minus pipeline time for `prun`: its own, or else continuing from the run before it (as the
    /// stream clock does at a restart), or 0.
    fn offset_s(&self, prun: u64) -> f64 {
        let g = prun as usize;
        if let Some(o) = self.gens.get(g).and_then(|g| g.offset_s) {
            return o;
        }
        match (g.checked_sub(1).and_then(|p| self.gens.get(p)), self.gens.get(g).and_then(|g| g.first_ns)) {
            (Some(prev), Some(first)) => {
                let prev_end = prev.last_ns.unwrap_or(0) as f64 / 1e9 + self.offset_s(prun - 1);
                prev_end - first as f64 / 1e9
            }
            _ => 0.0,
        }
    }

    fn stream_s(&self, prun: u64, ns: u64) -> f64 {
        ns as f64 / 1e9 + self.offset_s(prun)
    }

    /// The frame index shown at pipeline time `ns` of `prun`, from the frames seen.
    fn frame_at(&self, prun: u64, ns: u64) -> u64 {
        let Some(g) = self.gens.get(prun as usize) else { return 0 };
        match (g.mark, g.frame_ns) {
            (Some((pts, frame)), Some(d)) if d > 0.0 => {
                (frame as f64 + (ns as f64 - pts as f64) / d).round().max(0.0) as u64
            }
            (Some((_, frame)), _) => frame,
            _ => 0,
        }
    }
}

/// One source's recording: the handle its [`crate::sink::clips::ClipWriter`] keeps.
#[derive(Debug)]
pub struct Recording {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Recording {
    /// Recovers `<out>/<source>/rec` (see the module documentation), and starts `rec-<source>`, fed by `tap`.
    /// `pre_roll_s`: the longest pre-roll of the source's queries (the default of `keep`).
    pub fn start(
        tap: &PacketTap,
        source_dir: &Path,
        short_name: &str,
        run: u64,
        pre_roll_s: f64,
        settings: &RecordingSettings,
    ) -> Result<Recording, RecordingError> {
        let dir = source_dir.join(REC_DIR);
        std::fs::create_dir_all(&dir).map_err(|error| RecordingError::CreateDir { path: dir.clone(), error })?;
        let segments = recover(&dir, short_name);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let idx = index::Index::open(&dir)
            .map_err(|error| RecordingError::Index { path: dir.join(INDEX_FILE_NAME), error })?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            run,
            state: Mutex::new(State {
                segments,
                gens: vec![Gen::default()],
                stats: RecordingStats { bytes, ..RecordingStats::default() },
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            index: Mutex::new(idx),
            keep_s: settings.keep_s.unwrap_or(pre_roll_s + settings.segment_s),
            max_bytes: settings.max_bytes,
        });
        let (tx, rx) = bounded::<TapMessage>(settings.queue_packets.max(16));
        tap.set_recorder(tx);
        let recorder = Recorder {
            shared: shared.clone(),
            settings: settings.clone(),
            name: short_name.to_string(),
            writer: None,
            prun: 0,
            seq: 0,
            seg_no: next_segment_number(&dir, run),
            paused: None,
            last_packet_wall: None,
            pending_gap: None,
        };
        let name = format!("rec-{short_name}");
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || recorder.run(rx))
            .map_err(|error| RecordingError::Thread { name, error })?;
        Ok(Recording { shared, thread: Some(thread) })
    }

    /// What the cutters and the post thread share.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Ends the recording: the packets already queued are written, the last segment is finished (by
    /// `deadline`), and waiting cutters are woken. Returns the counters.
    pub fn finish(mut self) -> RecordingStats {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("a recording thread panicked");
        }
        let mut s = self.shared.lock();
        s.ended = true;
        let stats = s.stats.clone();
        drop(s);
        self.shared.changed.notify_all();
        stats
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.stop.store(true, Ordering::Release);
            let _ = t.join();
        }
        self.shared.lock().ended = true;
        self.shared.changed.notify_all();
    }
}

impl Shared {
    /// A decoded frame: at pipeline time `pts_ns` it is frame `frame` at stream time `stream_s`. Tells the
    /// recording how its packets' times map to stream time (called by the post thread for each frame).
    pub fn mark(&self, pts_ns: u64, stream_s: f64, frame: u64) {
        let mut s = self.lock();
        // The newest pipeline run whose packets reach this time (a reconnect starts the times again).
        let Some(g) = s.gens.iter_mut().rev().find(|g| {
            matches!((g.first_ns, g.last_ns), (Some(f), Some(l)) if pts_ns + MARK_SLACK_NS >= f && pts_ns <= l + MARK_SLACK_NS)
        }) else {
            return;
        };
        g.offset_s = Some(stream_s - pts_ns as f64 / 1e9);
        if let Some((p, f)) = g.mark
            && frame > f
            && pts_ns > p
        {
            g.frame_ns = Some((pts_ns - p) as f64 / (frame - f) as f64);
        }
        g.mark = Some((pts_ns, frame));
    }

    /// Keeps what is recorded from stream time `from_s` until [`Shared::unpin`]: for an event being recorded
    /// and its clip until it is cut.
    pub fn pin(&self, from_s: f64) -> u64 {
        let mut s = self.lock();
        s.next_pin += 1;
        let id = s.next_pin;
        s.pins.insert(id, from_s);
        id
    }

    /// Moves a pin (the event's start is known better) to `from_s`.
    pub fn repin(&self, id: u64, from_s: f64) {
        if let Some(p) = self.lock().pins.get_mut(&id) {
            *p = from_s;
        }
    }

    /// Lets go of a pin, and removes what the ring's bounds no longer keep.
    pub fn unpin(&self, id: u64) {
        self.lock().pins.remove(&id);
        self.trim();
    }

    /// Removes the oldest segments past `keep` or `max_gb`; never one a pin needs, except for `max_gb`.
    pub fn trim(&self) {
        let now = SystemTime::now();
        loop {
            let mut s = self.lock();
            let Some(oldest) = s.segments.first().cloned() else { return };
            let newest_s = s.newest_s.unwrap_or(0.0);
            let too_old = if oldest.run == self.run {
                newest_s - oldest.end_s > self.keep_s
            } else {
                parse_rfc3339_utc(&oldest.wall_end)
                    .and_then(|w| now.duration_since(w).ok())
                    .is_none_or(|age| age.as_secs_f64() > self.keep_s)
            };
            let pinned = oldest.run == self.run && s.pins.values().any(|&from| from < oldest.end_s);
            let too_big = self.max_bytes.is_some_and(|m| s.stats.bytes > m) && s.segments.len() > 1;
            if !(too_big || (too_old && !pinned)) {
                return;
            }
            s.segments.remove(0);
            s.stats.bytes = s.stats.bytes.saturating_sub(oldest.bytes);
            s.stats.segments_removed += 1;
            drop(s);
            let _ = std::fs::remove_file(self.dir.join(&oldest.file));
            let _ =
                self.index.lock().unwrap_or_else(|e| e.into_inner()).append(&IndexLine::Removed { file: oldest.file });
        }
    }

    /// The source is over: the recorder writes what is queued and finishes its last segment, without waiting
    /// for [`Recording::finish`].
    pub fn source_over(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether the recording is paused for a full disk.
    pub fn no_room(&self) -> bool {
        self.lock().no_room
    }

    /// Whether any packet came (a raw camera's recording stays empty).
    pub fn any_packet(&self) -> bool {
        self.lock().any_packet
    }

    /// The counters now.
    pub fn stats(&self) -> RecordingStats {
        self.lock().stats.clone()
    }

    /// Waits until the recording reaches stream time `to_s` (or has ended) or `deadline` passes; true when it
    /// reached it.
    pub fn wait_for(&self, to_s: f64, deadline: Instant) -> bool {
        let mut s = self.lock();
        loop {
            if s.ended || s.newest_s.is_some_and(|n| n >= to_s) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left.min(Duration::from_millis(500)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// The `rec-<source>` thread.
struct Recorder {
    shared: Arc<Shared>,
    settings: RecordingSettings,
    name: String,
    writer: Option<SegmentWriter>,
    prun: u64,
    seq: u64,
    seg_no: u64,
    /// Paused by a full disk: since when, and when to try again.
    paused: Option<(Instant, Instant)>,
    last_packet_wall: Option<SystemTime>,
    /// A gap whose end is the next packet: (stream time of its start, reason).
    pending_gap: Option<(f64, String)>,
}

impl Recorder {
    fn run(mut self, rx: Receiver<TapMessage>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => self.on_message(m),
                Err(RecvTimeoutError::Timeout) => {
                    if self.shared.stop.load(Ordering::Acquire) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.stop.load(Ordering::Acquire) && rx.is_empty() {
                break;
            }
        }
        self.close_segment();
        let mut s = self.shared.lock();
        s.ended = true;
        drop(s);
        self.shared.changed.notify_all();
    }

    fn on_message(&mut self, m: TapMessage) {
        match m {
            TapMessage::NewRun => {
                self.close_segment();
                self.prun += 1;
                let mut s = self.shared.lock();
                s.gens.push(Gen::default());
                if s.any_packet {
                    let at = s.newest_s.unwrap_or(0.0);
                    self.pending_gap = Some((at, "the source reconnected".into()));
                }
            }
            TapMessage::Packet { packet, caps, seq } => self.on_packet(packet, caps, seq),
        }
    }

    fn lost(&self, n: u64) {
        self.shared.lock().stats.packets_lost += n;
    }

    fn on_packet(&mut self, packet: Packet, caps: Option<gst::Caps>, seq: u64) {
        let skipped = seq.saturating_sub(self.seq + 1);
        self.seq = seq;
        if skipped > 0 && self.seq > skipped + 1 {
            // The queue was full: the packets between are not recorded; the segment ends before the hole.
            self.lost(skipped);
            self.close_segment();
            let at = self.shared.lock().newest_s.unwrap_or(0.0);
            self.pending_gap.get_or_insert((at, format!("the recorder fell behind ({skipped} packets lost)")));
        }
        let wall = SystemTime::now();
        {
            let mut s = self.shared.lock();
            s.any_packet = true;
            if let (Some(t), Some(g)) = (packet.time_ns(), s.gens.get_mut(self.prun as usize)) {
                g.first_ns = Some(g.first_ns.map_or(t, |f| f.min(t)));
                g.last_ns = Some(g.last_ns.map_or(t, |l| l.max(t)));
            }
            if let Some((at_s, reason)) = self.pending_gap.take() {
                let missing_s =
                    self.last_packet_wall.and_then(|w| wall.duration_since(w).ok()).map_or(0.0, |d| d.as_secs_f64());
                s.gaps.push(Gap { at_s, missing_s: (missing_s * 1e3).round() / 1e3, reason });
            }
        }
        self.last_packet_wall = Some(wall);
        let Some(caps) = caps else { return self.lost(1) };
        if let Some((_, retry_at)) = self.paused
            && (Instant::now() < retry_at || !packet.keyframe)
        {
            return self.lost(1);
        }
        let rotate = match &self.writer {
            Some(w) => w.caps != caps || (packet.keyframe && w.duration_s() >= self.settings.segment_s),
            None => false,
        };
        if rotate {
            self.close_segment();
        }
        if self.writer.is_none() {
            if !packet.keyframe {
                return self.lost(1);
            }
            self.open_segment(&caps, &packet);
            return;
        }
        let pushed = self.writer.as_mut().map(|w| w.push(&packet));
        match pushed {
            Some(Ok(())) => self.keep(&packet),
            Some(Err(e)) => self.segment_failed(e),
            None => {}
        }
    }

    /// Keeps a packet of the segment being written, for the cutters.
    fn keep(&self, packet: &Packet) {
        let mut s = self.shared.lock();
        let end_ns = packet.time_ns().map(|t| t + packet.buffer.duration().map_or(40_000_000, |d| d.nseconds()));
        if let Some(e) = end_ns {
            let t = s.stream_s(self.prun, e);
            s.newest_s = Some(s.newest_s.map_or(t, |n| n.max(t)));
        }
        if let Some(c) = s.current.as_mut() {
            c.packets.push(packet.clone());
        }
        drop(s);
        self.shared.changed.notify_all();
    }

    fn open_segment(&mut self, caps: &gst::Caps, first: &Packet) {
        // The recording leaves the last `min_free_bytes` of the disk to events.jsonl and the clips.
        if let Some(free) = free_bytes(&self.shared.dir)
            && free < self.settings.min_free_bytes
        {
            let mb = self.settings.min_free_bytes >> 20;
            return self.segment_failed(SegmentFailure::NoSpace(format!(
                "{} MiB free, less than the {mb} MiB the recording leaves to events and clips",
                free >> 20
            )));
        }
        self.seg_no += 1;
        let name = format!("r{}-{:06}", self.shared.run, self.seg_no);
        match SegmentWriter::start(&self.shared.dir, &name, caps, self.prun, first) {
            Ok(w) => {
                self.writer = Some(w);
                self.shared.lock().current = Some(Current { prun: self.prun, caps: caps.clone(), packets: Vec::new() });
                self.keep(first);
            }
            Err(e) => self.segment_failed(e),
        }
    }

    /// A segment could not be written: its packets are lost; a full disk pauses the recording.
    fn segment_failed(&mut self, e: SegmentFailure) {
        if let Some(w) = self.writer.take() {
            w.abandon();
        }
        let mut s = self.shared.lock();
        let lost = s.current.take().map_or(0, |c| c.packets.len() as u64);
        s.stats.packets_lost += lost;
        s.stats.segments_failed += 1;
        let at = s.newest_s.unwrap_or(0.0);
        drop(s);
        self.shared.changed.notify_all();
        let retry = Duration::from_secs_f64(self.settings.retry_after_s.max(0.01));
        match &e {
            SegmentFailure::NoSpace(_) => {
                self.shared.lock().no_room = true;
                let now = Instant::now();
                match self.paused {
                    Some((since, _)) => self.paused = Some((since, now + retry)),
                    None => {
                        self.paused = Some((now, now + retry));
                        self.shared.lock().stats.pauses += 1;
                        // (Not the words "disk full": the run's one report of a full disk is `sink::disk`'s.)
                        warn!(
                            "recording of {} paused: no room left in {}; detection goes on, and the recording \
                             resumes when there is room: free space, or lower [recording] keep or max_gb",
                            self.name,
                            self.shared.dir.display()
                        );
                        self.pending_gap.get_or_insert((at, "the disk was full".into()));
                    }
                }
            }
            SegmentFailure::Other(_) => {
                warn!(recording = %self.name, error = %e, "a segment of the recording could not be written");
                self.pending_gap.get_or_insert((at, format!("a segment could not be written: {e}")));
            }
        }
    }

    /// Finishes the segment being written: on disk, in the index, then the ring's bounds.
    fn close_segment(&mut self) {
        let Some(w) = self.writer.take() else { return };
        let (file, prun, start_ns, end_ns, packets, bytes) =
            (w.file.clone(), w.prun, w.start_ns, w.end_ns, w.packets, w.bytes);
        let (wall, wall_end) = (w.wall, w.wall_end);
        let codec = w.caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let part = w.part_path();
        if let Err(e) = w.finish(Instant::now() + FINISH_TIMEOUT) {
            let _ = std::fs::remove_file(part);
            return self.segment_failed(e);
        }
        self.shared.lock().no_room = false;
        if let Some((since, _)) = self.paused.take() {
            info!(
                "recording of {} resumed after {:.0} s paused (nothing was recorded meanwhile)",
                self.name,
                since.elapsed().as_secs_f64()
            );
        }
        let mut s = self.shared.lock();
        let entry = SegmentEntry {
            file,
            run: self.shared.run,
            prun,
            start_s: round_us(s.stream_s(prun, start_ns)),
            end_s: round_us(s.stream_s(prun, end_ns)),
            start_ns,
            end_ns,
            frame: s.frame_at(prun, start_ns),
            wall: crate::sink::format_rfc3339_utc(wall),
            wall_end: crate::sink::format_rfc3339_utc(wall_end),
            packets,
            bytes,
            codec,
        };
        s.segments.push(entry.clone());
        s.current = None;
        s.stats.segments_written += 1;
        s.stats.bytes += bytes;
        drop(s);
        let mut index = self.shared.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = index.append(&IndexLine::Segment(entry)) {
            warn!(file = %index.path().display(), %error, "could not add a segment to the recording's index");
        }
        self.shared.changed.notify_all();
        self.shared.trim();
    }
}

/// Bytes free for an unprivileged writer on the file system of `dir` (`statvfs`), if it can be read.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs struct to fill; nothing is kept.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Rounds seconds to the microsecond, as in `events.jsonl`.
fn round_us(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}

/// The first segment number free for `run` in `dir` (a run's numbers continue after a restart of the recorder).
fn next_segment_number(dir: &Path, run: u64) -> u64 {
    let prefix = format!("r{run}-");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().trim_start_matches('.').to_string();
                    name.strip_prefix(&prefix)?.split('.').next()?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Makes `dir` whole again after a run that did not finish: removes `.part` segments (and says so), whole
/// segments the index does not list, and index entries whose file is gone; rewrites the index compacted.
/// Returns the segments listed.
fn recover(dir: &Path, short_name: &str) -> Vec<SegmentEntry> {
    let mut segments = index::read_segments(dir);
    segments.retain(|s| dir.join(&s.file).is_file());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if name == INDEX_FILE_NAME || name.starts_with(&format!(".{INDEX_FILE_NAME}")) || !path.is_file() {
                continue;
            }
            if name.ends_with(".part") {
                match std::fs::remove_file(&path) {
                    Ok(()) => warn!(
                        "recording of {short_name}: removed the incomplete segment {} left by a run that was stopped \
                         before it finished it (its last seconds are not in the recording)",
                        path.display()
                    ),
                    Err(error) => warn!(file = %path.display(), %error, "could not remove an incomplete segment"),
                }
            } else if !segments.iter().any(|s| s.file == name) {
                let _ = std::fs::remove_file(&path);
                warn!(
                    "recording of {short_name}: removed {}, a segment the index does not list (the run stopped \
                     between writing it and listing it)",
                    path.display()
                );
            }
        }
    }
    if let Err(error) = index::rewrite(dir, &segments) {
        warn!(dir = %dir.display(), %error, "could not compact the recording's index");
    }
    segments
}

/// Parses a duration: a number and a unit, `s`, `m`, `h` or `d` ("90s", "30m", "12h", "7d"); a bare number is
/// seconds.
pub fn parse_duration_s(text: &str) -> Result<f64, RecordingError> {
    let t = text.trim();
    let bad = || RecordingError::BadDuration { text: text.to_string() };
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok(n * scale)
}

/// Parses an RFC 3339 time in UTC as lookout writes them ("2026-12-06T10:52:16Z", optionally with a fraction of
/// a second).
pub fn parse_rfc3339_utc(text: &str) -> Option<SystemTime> {
    let t = text.trim().strip_suffix('Z').or_else(|| text.trim().strip_suffix("+00:00"))?;
    let (date, time) = t.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut parts = time.split(':');
    let (h, mi) = (parts.next()?.parse::<i64>().ok()?, parts.next()?.parse::<i64>().ok()?);
    let sec: f64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || !(0.0..61.0).contains(&sec) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60;
    if secs < 0 {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_secs_f64(sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse() {
        assert_eq!(parse_duration_s("7d").unwrap(), 7.0 * 86_400.0);
        assert_eq!(parse_duration_s("90s").unwrap(), 90.0);
        assert_eq!(parse_duration_s("1.5h").unwrap(), 5400.0);
        assert_eq!(parse_duration_s("12").unwrap(), 12.0);
        let e = parse_duration_s("7 weeks").unwrap_err().to_string();
        assert!(e.contains("\"7 weeks\" is not a duration") && !e.contains('\n'), "{e}");
        assert!(parse_duration_s("-1s").is_err());
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_554_336_120);
        let text = crate::sink::format_rfc3339_utc(t);
        let back = parse_rfc3339_utc(&text).unwrap();
        let diff = back.duration_since(t).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(1), "{text}: {diff:?}");
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(SystemTime::UNIX_EPOCH));
        assert!(parse_rfc3339_utc("2026-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339_utc("yesterday").is_none());
    }

    #[test]
    fn a_reconnect_continues_stream_time_and_marks_find_their_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State { gens: vec![Gen::default()], ..State::default() };
        s.gens[0] = Gen { first_ns: Some(0), last_ns: Some(10_000_000_000), offset_s: Some(0.0), ..Gen::default() };
        // The second run's times start again near 0; no frame of it seen yet: it continues from the first.
        s.gens.push(Gen { first_ns: Some(0), last_ns: Some(1_000_000_000), ..Gen::default() });
        assert!((s.stream_s(1, 0) - 10.0).abs() < 1e-9);
        let shared = Shared {
            dir: PathBuf::new(),
            run: 1,
            state: Mutex::new(s),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            index: Mutex::new(index::Index::open(dir.path()).unwrap()),
            keep_s: 5.0,
            max_bytes: None,
        };
        // A frame at 0.5 s of the second run, shown at stream time 10.04 s: the newest run that reaches it.
        shared.mark(500_000_000, 10.04, 251);
        shared.mark(540_000_000, 10.08, 252);
        let s = shared.lock();
        assert!((s.offset_s(1) - 9.54).abs() < 1e-9);
        assert!((s.offset_s(0)).abs() < 1e-9, "the first run keeps its own");
        assert_eq!(s.frame_at(1, 580_000_000), 253);
    }
}
