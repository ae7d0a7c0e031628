//! The packet tap: where a source's encoded packets go, and the [`Feed`]s that take them to clips.
//!
//! Threads and locks:
//! - GStreamer's streaming thread (the decoder's input, see [`install`]) calls [`PacketTap::push`]: it takes
//!   the tap's mutex, adds the packet to the ring and hands it to every open feed (taking each feed's mutex
//!   inside the tap's);
//! - the post thread opens and closes feeds ([`PacketTap::open_feed`], [`PacketTap::close_feed`]) under the
//!   tap's mutex, and releases and cuts a feed's packets ([`Feed::release_until`], [`Feed::cut_after`]) under
//!   the feed's alone;
//! - a clip worker takes one feed's mutex alone ([`Feed::go_live`], [`Feed::finish`]).
//!
//! Lock order: tap, then feed. Nothing is held across I/O: a feed pushes into an `appsrc` that never blocks
//! (`block=false`; the feed checks the appsrc's level and fails the clip instead of letting it grow without
//! bound), so the decoder never waits for a clip.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Sender, TrySendError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::keyframe::KeyframeSyntax;
use super::ring::{Packet, PreRollRing, RingSettings, RingStats};

/// A source's packet tap: its pre-roll ring and the feeds of the clips being recorded.
#[derive(Debug)]
pub struct PacketTap {
    state: Mutex<TapState>,
    /// Packets a feed could not take because it was over its bound (its clip fails).
    pub dropped_packets: AtomicU64,
    /// Packets the recorder's queue had no room for (the recording has a gap there).
    pub recorder_dropped: AtomicU64,
}

#[derive(Debug)]
struct TapState {
    ring: PreRollRing,
    /// The decoder's input caps: the codec of the packets.
    caps: Option<gst::Caps>,
    /// How to read a keyframe from the packets of `caps`, for codecs whose container flags are not trusted.
    syntax: Option<KeyframeSyntax>,
    /// The decoder whose packets are taken this run (decodebin may try and discard some first).
    owner: Option<String>,
    feeds: Vec<Arc<Feed>>,
    /// The source's recorder (`crate::sink::recording`): every packet, after the keyframe decision.
    recorder: Option<Sender<TapMessage>>,
    /// Packets pushed since the tap was made, so that the recorder sees the ones its full queue lost.
    seq: u64,
}

/// What the tap sends its recorder ([`PacketTap::set_recorder`]).
#[derive(Debug, Clone)]
pub enum TapMessage {
    /// A packet of the current run; `seq` counts every packet the tap took, so a jump says some were lost.
    Packet { packet: Packet, caps: Option<gst::Caps>, seq: u64 },
    /// A new pipeline run starts (a reconnect): its timestamps start again.
    NewRun,
}

impl PacketTap {
    /// A tap with an empty ring.
    pub fn new(ring: RingSettings) -> Arc<Self> {
        Arc::new(PacketTap {
            state: Mutex::new(TapState {
                ring: PreRollRing::new(ring),
                caps: None,
                syntax: None,
                owner: None,
                feeds: Vec::new(),
                recorder: None,
                seq: 0,
            }),
            dropped_packets: AtomicU64::new(0),
            recorder_dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new pipeline run of the source starts: its timestamps start again, so the ring is emptied and clips
    /// being recorded are cut here (they are finished, as far as they got, when their event closes).
    pub fn new_run(&self) {
        let mut s = self.lock();
        s.ring.clear();
        s.caps = None;
        s.syntax = None;
        s.owner = None;
        for f in s.feeds.drain(..) {
            f.close();
        }
        if let Some(r) = &s.recorder {
            // Never blocks the source: a run marker lost to a full queue shows as a gap in `seq` anyway.
            let _ = r.try_send(TapMessage::NewRun);
        }
    }

    /// Sends the packets in the ring now (from its oldest keyframe: what passed since the source started, or its
    /// last pre-roll), then every later packet, to `recorder` too. The source starts before its recording: without
    /// the ring, the first GOPs of a file would be lost to it, and with them the clips of events at its start.
    /// Its queue is bounded and the tap never waits on it: a packet that does not fit is lost to the recording
    /// (counted in [`PacketTap::recorder_dropped`], and seen by the recorder as a jump in `seq`).
    pub fn set_recorder(&self, recorder: Sender<TapMessage>) {
        let mut s = self.lock();
        // The ring holds the last packets taken, in order: the newest is `seq`.
        let held = s.ring.since(0);
        let first_seq = s.seq + 1 - held.len() as u64;
        for (i, packet) in held.into_iter().enumerate() {
            let message = TapMessage::Packet { packet, caps: s.caps.clone(), seq: first_seq + i as u64 };
            if recorder.try_send(message).is_err() {
                self.recorder_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.recorder = Some(recorder);
    }

    /// The ring's bounds (its time is the longest pre-roll of the source's queries, plus a margin).
    pub fn ring_settings(&self) -> RingSettings {
        self.lock().ring.settings().clone()
    }

    /// A packet at the input of `decoder`, whose input caps are `caps`. Called on the streaming thread.
    pub fn push(&self, decoder: &str, caps: Option<gst::Caps>, buffer: &gst::BufferRef) {
        let mut s = self.lock();
        match &s.owner {
            Some(o) if o.as_str() != decoder => return,
            Some(_) => {}
            None => s.owner = Some(decoder.to_string()),
        }
        if let Some(caps) = caps
            && s.caps.as_ref() != Some(&caps)
        {
            for f in &s.feeds {
                f.set_caps_if_unset(&caps);
            }
            s.syntax = KeyframeSyntax::of_caps(&caps);
            s.caps = Some(caps);
        }
        let mut packet = Packet::from_buffer(buffer);
        // The container's flag is wrong in many AVI files (see [`super::keyframe`]): the bitstream decides.
        if let Some(syntax) = s.syntax
            && let Ok(map) = buffer.map_readable()
            && let Some(keyframe) = syntax.is_keyframe(&map)
        {
            packet.keyframe = keyframe;
        }
        for f in &s.feeds {
            if !f.push(&packet) {
                self.dropped_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.seq += 1;
        if let Some(r) = &s.recorder {
            let message = TapMessage::Packet { packet: packet.clone(), caps: s.caps.clone(), seq: s.seq };
            match r.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.recorder_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => s.recorder = None,
            }
        }
        s.ring.push(packet);
    }

    /// Starts a clip's feed at the keyframe presented at or before `from_ns` (see [`PreRollRing::since`]):
    /// it holds the ring's packets from there and every packet that comes after, until it is closed or cut.
    /// `max_bytes` bounds what it holds and what waits in its appsrc.
    pub fn open_feed(&self, from_ns: u64, max_bytes: usize) -> Arc<Feed> {
        let mut s = self.lock();
        let feed = Arc::new(Feed::new(s.caps.clone(), max_bytes));
        for p in s.ring.since(from_ns) {
            feed.push(&p);
        }
        s.feeds.push(feed.clone());
        feed
    }

    /// Stops a feed: no more packets go to it.
    pub fn close_feed(&self, feed: &Arc<Feed>) {
        self.lock().feeds.retain(|f| !Arc::ptr_eq(f, feed));
        feed.close();
    }

    /// Feeds taking packets now.
    pub fn open_feeds(&self) -> usize {
        self.lock().feeds.len()
    }

    /// The ring's counters.
    pub fn ring_stats(&self) -> RingStats {
        self.lock().ring.stats()
    }

    /// Packets and bytes in the ring now.
    pub fn ring_level(&self) -> (usize, usize) {
        let s = self.lock();
        (s.ring.len(), s.ring.bytes())
    }
}

/// The packets of one clip, on their way from the tap to the clip's appsrc.
///
/// Packets are *held* until they are certainly part of the clip: up to the last match seen so far plus the
/// post-roll ([`Feed::release_until`]), since the event's end is only known `end_after_s` later, when the
/// packets after it have already come. Released packets go into the clip's appsrc once a worker has built its
/// pipeline ([`Feed::go_live`]); the end of the event cuts the rest ([`Feed::cut_after`]).
#[derive(Debug)]
pub struct Feed {
    inner: Mutex<FeedInner>,
}

#[derive(Debug)]
struct FeedInner {
    caps: Option<gst::Caps>,
    /// Packets not yet in the appsrc, oldest first.
    held: VecDeque<Packet>,
    held_bytes: usize,
    /// The clip's pipeline, once a worker has built it.
    appsrc: Option<gst_app::AppSrc>,
    max_bytes: usize,
    /// Packets decoded up to this time may go into the appsrc.
    release_ns: Option<u64>,
    /// No packet decoded after this time is taken (the end of the post-roll).
    cut_ns: Option<u64>,
    /// No more packets: closed, cut, finished, or a new run of the source.
    closed: bool,
    /// Subtracted from every timestamp, so the clip's timeline starts near 0.
    base_ns: Option<u64>,
    /// The earliest presentation time that went into the clip: its first frame.
    first_pts_ns: Option<u64>,
    /// The latest presentation time taken (held or sent).
    max_pts_ns: Option<u64>,
    /// The latest presentation time sent.
    sent_max_pts_ns: Option<u64>,
    /// Packets that went into the appsrc.
    packets: u64,
    /// Packets taken (held or sent).
    taken: u64,
    error: Option<String>,
}

/// What a feed took, when it is finished.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSummary {
    /// Packets that went into the clip.
    pub packets: u64,
    /// Presentation time of the first frame of the clip, in the source pipeline's timeline (ns).
    pub first_pts_ns: Option<u64>,
    /// Why the feed failed, if it did.
    pub error: Option<String>,
}

impl FeedInner {
    /// Moves the released packets into the appsrc (when there is one). On an error the feed fails.
    fn drain(&mut self) {
        if self.error.is_some() {
            return;
        }
        let Some(appsrc) = self.appsrc.clone() else { return };
        let base = self.base_ns.unwrap_or(0);
        while let Some(p) = self.held.front() {
            let released = match (self.release_ns, p.decode_time_ns()) {
                (Some(r), Some(t)) => t <= r,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !released {
                break;
            }
            if appsrc.current_level_bytes() as usize > self.max_bytes {
                let mb = self.max_bytes >> 20;
                self.fail(format!(
                    "the clip writer fell more than {mb} MiB behind the source: the disk or the encoder is too slow"
                ));
                return;
            }
            if appsrc.push_buffer(rebased(p, base)).is_err() {
                self.fail("the clip pipeline stopped taking packets".into());
                return;
            }
            if let Some(p) = self.held.pop_front() {
                self.held_bytes -= p.size;
                self.packets += 1;
                // A packet without a PTS (AVI gives one to the frames its index marks as keyframes only) is shown
                // at its decoding time, as `rebased` stamps it.
                if let Some(t) = p.time_ns() {
                    self.first_pts_ns = Some(self.first_pts_ns.map_or(t, |f| f.min(t)));
                    self.sent_max_pts_ns = Some(self.sent_max_pts_ns.map_or(t, |m| m.max(t)));
                }
            }
        }
    }

    /// After the cut: a B-frame decoded after it but shown before a frame already taken fills a hole in the
    /// clip's presentation order, and is taken too.
    fn fills_a_hole(&self, p: &Packet) -> bool {
        !p.keyframe && matches!((p.pts_ns, self.max_pts_ns), (Some(t), Some(m)) if t < m)
    }

    fn fail(&mut self, error: String) {
        self.error.get_or_insert(error);
        self.held.clear();
        self.held_bytes = 0;
        self.closed = true;
    }
}

impl Feed {
    fn new(caps: Option<gst::Caps>, max_bytes: usize) -> Self {
        Feed {
            inner: Mutex::new(FeedInner {
                caps,
                held: VecDeque::new(),
                held_bytes: 0,
                appsrc: None,
                max_bytes,
                release_ns: None,
                cut_ns: None,
                closed: false,
                base_ns: None,
                first_pts_ns: None,
                max_pts_ns: None,
                sent_max_pts_ns: None,
                packets: 0,
                taken: 0,
                error: None,
            }),
        }
    }

    /// A feed that failed with `error` before it took anything (it is on no tap).
    pub fn failed(error: String) -> Arc<Feed> {
        let feed = Feed::new(None, 0);
        feed.fail(error);
        Arc::new(feed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_caps_if_unset(&self, caps: &gst::Caps) {
        let mut f = self.lock();
        if f.caps.is_none() {
            f.caps = Some(caps.clone());
        }
    }

    /// The codec of the packets, once one has come.
    pub fn caps(&self) -> Option<gst::Caps> {
        self.lock().caps.clone()
    }

    /// Packets decoded up to `t_ns` (the pipeline's timeline) are certainly in the clip: the last match seen so
    /// far plus the post-roll.
    pub fn release_until(&self, t_ns: u64) {
        let mut f = self.lock();
        let t = f.cut_ns.map_or(t_ns, |c| c.min(t_ns));
        f.release_ns = Some(f.release_ns.map_or(t, |r| r.max(t)));
        f.drain();
    }

    /// Takes no packet decoded after `t_ns` (the end of the event plus its post-roll, in the pipeline's
    /// timeline), except the B-frames that fill the holes before the last frame taken, and releases everything
    /// up to it. Cutting by decode time keeps every reference a taken B-frame needs.
    pub fn cut_after(&self, t_ns: u64) {
        let mut f = self.lock();
        f.cut_ns = Some(t_ns);
        f.release_ns = Some(t_ns);
        // Recompute the latest presentation time of what stays: what was sent, then the held packets in order.
        let mut max_pts = f.sent_max_pts_ns;
        let mut keep = f.held.len();
        for (i, p) in f.held.iter().enumerate() {
            let beyond = p.decode_time_ns().is_some_and(|t| t > t_ns);
            let fills = !p.keyframe && matches!((p.pts_ns, max_pts), (Some(t), Some(m)) if t < m);
            if beyond && !fills {
                keep = i;
                break;
            }
            if let Some(t) = p.pts_ns {
                max_pts = Some(max_pts.map_or(t, |m| m.max(t)));
            }
        }
        if keep < f.held.len() {
            let dropped: usize = f.held.drain(keep..).map(|p| p.size).sum();
            f.held_bytes -= dropped;
            f.closed = true;
        }
        f.max_pts_ns = max_pts;
        f.drain();
    }

    fn close(&self) {
        self.lock().closed = true;
    }

    /// Fails the clip with `error` (the first error is kept) and drops what it holds.
    pub fn fail(&self, error: impl Into<String>) {
        self.lock().fail(error.into());
    }

    /// Adds a packet; false if it had to be dropped because the feed is over its bound (then the clip fails).
    fn push(&self, packet: &Packet) -> bool {
        let mut f = self.lock();
        if f.closed || f.error.is_some() {
            return true;
        }
        if f.taken == 0 && !packet.keyframe {
            return true;
        }
        if let (Some(cut), Some(t)) = (f.cut_ns, packet.decode_time_ns())
            && t > cut
            && !f.fills_a_hole(packet)
        {
            f.closed = true;
            return true;
        }
        if let Some(t) = packet.pts_ns {
            f.max_pts_ns = Some(f.max_pts_ns.map_or(t, |m| m.max(t)));
        }
        if f.base_ns.is_none() {
            f.base_ns = match (packet.pts_ns, packet.dts_ns) {
                (Some(p), Some(d)) => Some(p.min(d)),
                (p, d) => p.or(d),
            };
        }
        f.taken += 1;
        f.held_bytes += packet.size;
        f.held.push_back(packet.clone());
        if f.held_bytes > f.max_bytes {
            let mb = f.max_bytes >> 20;
            f.fail(format!(
                "the clip held more than {mb} MiB waiting for the event's end or for a clip worker: the workers \
                 are overloaded or the event is very long"
            ));
            return false;
        }
        f.drain();
        true
    }

    /// A worker's pipeline is playing: the released packets go into `appsrc`, and so will later ones. False if
    /// the feed already failed.
    pub fn go_live(&self, appsrc: gst_app::AppSrc) -> bool {
        let mut f = self.lock();
        if f.error.is_some() {
            return false;
        }
        f.appsrc = Some(appsrc);
        f.drain();
        f.error.is_none()
    }

    /// No more packets: sends everything held (up to the cut) and returns the appsrc (to send it EOS) and what
    /// the feed took.
    pub fn finish(&self) -> (Option<gst_app::AppSrc>, FeedSummary) {
        let mut f = self.lock();
        f.closed = true;
        if f.error.is_none() {
            // Everything held is in the clip (what the cut excludes was never taken, or was dropped).
            f.release_ns = Some(u64::MAX);
            f.drain();
        }
        let appsrc = f.appsrc.take();
        (appsrc, FeedSummary { packets: f.packets, first_pts_ns: f.first_pts_ns, error: f.error.clone() })
    }
}

/// The packet with its timestamps moved back by `base` ns (the buffer's memory is shared, not copied).
fn rebased(packet: &Packet, base: u64) -> gst::Buffer {
    let mut b = packet.buffer.copy();
    {
        let b = b.make_mut();
        // mp4mux refuses a buffer without a PTS (the whole clip fails: "Buffer has no PTS"). A source's parser
        // leaves some without one when the file's DTS do not advance (seen: a file whose DTS stay constant for a
        // GOP): such a packet is shown at its decoding time, as a decoder without reordering would.
        let pts = packet.pts_ns.or(packet.dts_ns);
        b.set_pts(pts.map(|t| gst::ClockTime::from_nseconds(t.saturating_sub(base))));
        b.set_dts(packet.dts_ns.map(|t| gst::ClockTime::from_nseconds(t.saturating_sub(base))));
        // The keyframe as the tap decided it (from the bitstream, for codecs whose container marks it wrong), so
        // that the clip's decoder or muxer (its sync samples) sees the same.
        if packet.keyframe {
            b.unset_flags(gst::BufferFlags::DELTA_UNIT);
        } else {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
    }
    b
}

/// True for an element that decodes video or images (klass `Codec/Decoder/Video` or `Codec/Decoder/Image`).
pub fn is_video_decoder(element: &gst::Element) -> bool {
    element.factory().is_some_and(|f| {
        let klass = f.klass();
        klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image"))
    })
}

/// Taps every video decoder of `pipeline`, those there now and those decodebin adds later: a probe on the
/// decoder's input hands each encoded packet to `tap`. The first decoder that delivers a packet is the one
/// taken (decodebin may try and discard others first). Call [`PacketTap::new_run`] before.
pub fn install(pipeline: &gst::Pipeline, tap: &Arc<PacketTap>) {
    let add = {
        let tap = tap.clone();
        move |element: &gst::Element| {
            if !is_video_decoder(element) {
                return;
            }
            let Some(pad) = element.static_pad("sink") else { return };
            let tap = tap.clone();
            let name = element.name().to_string();
            pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |pad, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => tap.push(&name, pad.current_caps(), b),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        let caps = pad.current_caps();
                        list.iter().for_each(|b| tap.push(&name, caps.clone(), b))
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            });
        }
    };
    let mut it = pipeline.iterate_recurse();
    while let Ok(Some(element)) = it.next() {
        add(&element);
    }
    pipeline.connect_deep_element_added(move |_, _, element| add(element));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Packet `i` at `i * 40` ms (PTS = DTS), a keyframe every 10.
    fn buffer(i: u64) -> gst::Buffer {
        let mut b = gst::Buffer::with_size(100).unwrap();
        {
            let b = b.get_mut().unwrap();
            let t = gst::ClockTime::from_nseconds(i * 40 * MS);
            b.set_pts(t);
            b.set_dts(t);
            if !i.is_multiple_of(10) {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        b
    }

    fn appsrc() -> (gst::Pipeline, gst_app::AppSrc) {
        let p = gst::parse::launch("appsrc name=src format=time block=false max-bytes=0 ! fakesink sync=false")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let src = p.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        (p, src)
    }

    #[test]
    fn a_feed_starts_at_the_keyframe_holds_until_released_and_stops_at_the_cut() {
        gst::init().unwrap();
        let tap = PacketTap::new(RingSettings { max_time_s: 10.0, max_bytes: 1 << 20 });
        let caps = gst::Caps::builder("video/x-h264").build();
        for i in 0..50 {
            tap.push("dec", Some(caps.clone()), &buffer(i));
        }
        // Another decoder (one decodebin tried and dropped) is ignored.
        tap.push("other", None, &buffer(50));
        let feed = tap.open_feed(1000 * MS, 1 << 20);
        assert_eq!(feed.caps(), Some(caps.clone()));
        feed.release_until(1200 * MS);
        let (pipeline, src) = appsrc();
        assert!(feed.go_live(src));
        for i in 50..100 {
            tap.push("dec", Some(caps.clone()), &buffer(i));
        }
        feed.cut_after(2000 * MS);
        for i in 100..120 {
            tap.push("dec", Some(caps.clone()), &buffer(i));
        }
        let (appsrc, summary) = feed.finish();
        assert!(appsrc.is_some());
        // From the keyframe at 800 ms to the cut at 2000 ms: 31 packets of 40 ms.
        assert_eq!(summary, FeedSummary { packets: 31, first_pts_ns: Some(800 * MS), error: None });
        tap.close_feed(&feed);
        pipeline.set_state(gst::State::Null).unwrap();
        // A new run of the source empties the ring.
        assert!(tap.ring_level().0 > 0);
        tap.new_run();
        assert_eq!(tap.ring_level(), (0, 0));
    }

    /// Decode order I0 P3 B1 B2 P6 B4 B5 … (PTS in frames of 40 ms, DTS one frame earlier than the first B).
    fn ibbp(n: u64) -> Vec<gst::Buffer> {
        let mut order = Vec::new();
        for g in (0..n).step_by(3) {
            if g == 0 {
                order.push(0);
            } else {
                order.extend([g, g - 2, g - 1]);
            }
        }
        order
            .into_iter()
            .enumerate()
            .map(|(d, p)| {
                let mut b = gst::Buffer::with_size(10).unwrap();
                {
                    let b = b.get_mut().unwrap();
                    b.set_pts(gst::ClockTime::from_nseconds(p * 40 * MS + 40 * MS));
                    b.set_dts(gst::ClockTime::from_nseconds(d as u64 * 40 * MS));
                    if p != 0 {
                        b.set_flags(gst::BufferFlags::DELTA_UNIT);
                    }
                }
                b
            })
            .collect()
    }

    #[test]
    fn the_cut_keeps_the_b_frames_that_fill_holes() {
        gst::init().unwrap();
        let tap = PacketTap::new(RingSettings::default());
        let feed = tap.open_feed(0, 1 << 20);
        let (pipeline, src) = appsrc();
        assert!(feed.go_live(src));
        let buffers = ibbp(30);
        for b in &buffers[..20] {
            tap.push("dec", None, b);
        }
        // Decode order 10 is P at PTS frame 12 (… P12 B10 B11): cut by decode time at order 10, the B-frames
        // 10 and 11 (decoded after the cut) are still taken, so frames 0..=12 are all there.
        feed.cut_after(10 * 40 * MS);
        for b in &buffers[20..] {
            tap.push("dec", None, b);
        }
        let (_, summary) = feed.finish();
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(summary.packets, 13, "{summary:?}");
        assert_eq!(summary.first_pts_ns, Some(40 * MS));
    }

    #[test]
    fn a_feed_over_its_bound_fails_the_clip() {
        gst::init().unwrap();
        let tap = PacketTap::new(RingSettings::default());
        let feed = tap.open_feed(0, 1000);
        for i in 0..20 {
            tap.push("dec", None, &buffer(i));
        }
        let (appsrc, summary) = feed.finish();
        assert!(appsrc.is_none());
        assert!(summary.error.unwrap().contains("MiB"));
        assert_eq!(tap.dropped_packets.load(Ordering::Relaxed), 1);
    }

    /// The source runs before its recording starts: the recorder gets what the ring holds first (from its
    /// first keyframe, with the packets' own `seq`), then every later packet, with no gap.
    #[test]
    fn the_recorder_gets_the_ring_first_then_every_later_packet() {
        gst::init().unwrap();
        let tap = PacketTap::new(RingSettings { max_time_s: 10.0, max_bytes: 1 << 20 });
        let caps = gst::Caps::builder("video/x-h264").build();
        for i in 0..25 {
            tap.push("dec", Some(caps.clone()), &buffer(i));
        }
        let (tx, rx) = crossbeam_channel::bounded(100);
        tap.set_recorder(tx);
        for i in 25..40 {
            tap.push("dec", None, &buffer(i));
        }
        let got: Vec<(u64, u64, bool)> = rx
            .try_iter()
            .map(|m| match m {
                TapMessage::Packet { packet, seq, .. } => (seq, packet.pts_ns.unwrap() / (40 * MS), packet.keyframe),
                TapMessage::NewRun => panic!("no new run here"),
            })
            .collect();
        let expected: Vec<(u64, u64, bool)> = (0..40).map(|i| (i + 1, i, i % 10 == 0)).collect();
        assert_eq!(got, expected, "every packet since the first keyframe, in order, seq without a jump");
        assert_eq!(tap.recorder_dropped.load(Ordering::Relaxed), 0);
    }
}
