//! The pre-roll ring: a source's encoded packets of the last few seconds, always starting at a keyframe.
//!
//! Bounded by time (the longest `pre_roll_s` of the queries, counted from the newest packet) and by bytes.
//! It only ever drops whole GOPs from the front, so whatever it holds decodes from its first packet:
//! - time: the first GOP goes once the *next* keyframe is at or before `newest - max_time`, so the ring
//!   always reaches back at least `max_time` (when it has seen that much) and at most one GOP more;
//! - bytes: while over `max_bytes`, the first GOP goes; a single GOP larger than the bound is dropped whole and
//!   the ring waits for the next keyframe (counted in [`RingStats::gops_dropped_bytes`]);
//! - packets before the first keyframe are dropped (a decoder could not use them).
//!
//! Not thread-safe by itself: the [`super::PacketTap`] keeps it behind its mutex.

use std::collections::VecDeque;

use gstreamer as gst;

/// One encoded packet: a reference to GStreamer's buffer (no copy) and what the ring needs to know of it.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The encoded data; shares its memory with the pipeline's buffer.
    pub buffer: gst::Buffer,
    /// Presentation time in the source pipeline's timeline, in ns.
    pub pts_ns: Option<u64>,
    /// Decoding time, in ns (differs from `pts_ns` with B-frames).
    pub dts_ns: Option<u64>,
    /// True for a packet a decoder can start from: no `DELTA_UNIT` flag, or, for the codecs whose containers
    /// mark keyframes wrong, an intra picture in the bitstream (see [`super::keyframe`], which the tap applies).
    pub keyframe: bool,
    /// Size in bytes.
    pub size: usize,
}

impl Packet {
    /// A packet from a buffer seen on the decoder's input.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Packet {
        Packet {
            buffer: buffer.to_owned(),
            pts_ns: buffer.pts().map(|t| t.nseconds()),
            dts_ns: buffer.dts().map(|t| t.nseconds()),
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            size: buffer.size(),
        }
    }

    /// The time the packet is presented at, or else decoded at.
    pub fn time_ns(&self) -> Option<u64> {
        self.pts_ns.or(self.dts_ns)
    }

    /// The time the packet is decoded at, or else presented at: packets arrive in this order.
    pub fn decode_time_ns(&self) -> Option<u64> {
        self.dts_ns.or(self.pts_ns)
    }
}

/// Default [`RingSettings::max_time_s`]: the default `pre_roll_s` (`crate::config::DEFAULT_PRE_ROLL_S`, kept equal
/// by a test there; ingest does not import the configuration).
pub const DEFAULT_MAX_TIME_S: f64 = 5.0;
/// Default [`RingSettings::max_bytes`]: 32 MiB, 5 s of a 50 Mbit/s stream.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;

/// What bounds a ring.
#[derive(Debug, Clone, PartialEq)]
pub struct RingSettings {
    /// Seconds kept before the newest packet (at least; plus up to one GOP to start on a keyframe). Default
    /// [`DEFAULT_MAX_TIME_S`]; the watch loop uses the longest `pre_roll_s` of the source's queries.
    pub max_time_s: f64,
    /// Bytes kept at most. Default [`DEFAULT_MAX_BYTES`].
    pub max_bytes: usize,
}

impl Default for RingSettings {
    fn default() -> Self {
        RingSettings { max_time_s: DEFAULT_MAX_TIME_S, max_bytes: DEFAULT_MAX_BYTES }
    }
}

/// Counters of a ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Packets pushed.
    pub packets_in: u64,
    /// Packets dropped because no keyframe came before them.
    pub dropped_before_keyframe: u64,
    /// GOPs dropped from the front because they were older than `max_time_s`.
    pub gops_dropped_time: u64,
    /// GOPs dropped because of `max_bytes`.
    pub gops_dropped_bytes: u64,
}

/// The ring itself; see the module documentation.
#[derive(Debug, Default)]
pub struct PreRollRing {
    settings: RingSettings,
    /// Oldest first; the first packet is always a keyframe.
    packets: VecDeque<Packet>,
    bytes: usize,
    /// The newest presentation time seen (packets arrive in decode order, so not always the last one's).
    newest_ns: Option<u64>,
    stats: RingStats,
}

impl PreRollRing {
    /// An empty ring.
    pub fn new(settings: RingSettings) -> Self {
        PreRollRing { settings, ..Default::default() }
    }

    /// Adds the newest packet and drops what the bounds no longer allow.
    pub fn push(&mut self, packet: Packet) {
        self.stats.packets_in += 1;
        if self.packets.is_empty() && !packet.keyframe {
            self.stats.dropped_before_keyframe += 1;
            return;
        }
        if let Some(t) = packet.time_ns() {
            self.newest_ns = Some(self.newest_ns.map_or(t, |n| n.max(t)));
        }
        self.bytes += packet.size;
        self.packets.push_back(packet);
        self.trim();
    }

    /// Forgets everything (a new pipeline: its timestamps start again).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.newest_ns = None;
    }

    /// Copies (references) of the packets from the last keyframe presented at or before `from_ns`, or from the
    /// first packet when the ring does not reach back that far (the start of a file, or a ring bounded by
    /// bytes). Empty when the ring is.
    pub fn since(&self, from_ns: u64) -> Vec<Packet> {
        let start = self
            .packets
            .iter()
            .enumerate()
            .filter(|(_, p)| p.keyframe && p.time_ns().is_some_and(|t| t <= from_ns))
            .map(|(i, _)| i)
            .next_back()
            .unwrap_or(0);
        self.packets.iter().skip(start).cloned().collect()
    }

    /// The ring's bounds.
    pub fn settings(&self) -> &RingSettings {
        &self.settings
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Presentation time of the first packet (a keyframe).
    pub fn first_ns(&self) -> Option<u64> {
        self.packets.front().and_then(Packet::time_ns)
    }

    /// Counters so far.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Index of the second keyframe: where the ring would start after dropping its first GOP.
    fn second_keyframe(&self) -> Option<usize> {
        self.packets.iter().skip(1).position(|p| p.keyframe).map(|i| i + 1)
    }

    fn drop_front(&mut self, n: usize) {
        for p in self.packets.drain(..n) {
            self.bytes -= p.size;
        }
    }

    fn trim(&mut self) {
        let max_time_ns = (self.settings.max_time_s.max(0.0) * 1e9) as u64;
        if let Some(newest) = self.newest_ns {
            let keep_from = newest.saturating_sub(max_time_ns);
            while let Some(k) = self.second_keyframe() {
                match self.packets[k].time_ns() {
                    Some(t) if t <= keep_from => {
                        self.drop_front(k);
                        self.stats.gops_dropped_time += 1;
                    }
                    _ => break,
                }
            }
        }
        while self.bytes > self.settings.max_bytes {
            match self.second_keyframe() {
                Some(k) => self.drop_front(k),
                None => self.clear(),
            }
            self.stats.gops_dropped_bytes += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A packet at `t_ms` (PTS = DTS), a keyframe every `gop` packets of 40 ms.
    fn packet(i: u64, gop: u64, size: usize) -> Packet {
        gst::init().unwrap();
        let mut buffer = gst::Buffer::with_size(size).unwrap();
        let t = gst::ClockTime::from_nseconds(i * 40 * MS);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(t);
            b.set_dts(t);
            if !i.is_multiple_of(gop) {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        Packet::from_buffer(&buffer)
    }

    fn ring(max_time_s: f64, max_bytes: usize) -> PreRollRing {
        PreRollRing::new(RingSettings { max_time_s, max_bytes })
    }

    #[test]
    fn starts_at_a_keyframe() {
        let mut r = ring(5.0, 1 << 20);
        for i in 3..10 {
            r.push(packet(i, 5, 100));
        }
        // 3 and 4 come before the keyframe at 5.
        assert_eq!(r.stats().dropped_before_keyframe, 2);
        assert_eq!(r.len(), 5);
        assert_eq!(r.first_ns(), Some(200 * MS));
    }

    #[test]
    fn keeps_at_least_max_time_and_at_most_one_gop_more() {
        // 25 fps, a keyframe every 10 packets (400 ms), 1 s of pre-roll.
        let mut r = ring(1.0, 1 << 30);
        for i in 0..200 {
            r.push(packet(i, 10, 100));
            let newest = i * 40 * MS;
            let first = r.first_ns().unwrap();
            assert!(r.packets[0].keyframe);
            if newest >= 1000 * MS {
                assert!(newest - first >= 1000 * MS, "ring too short at {i}: {first}..{newest}");
                assert!(newest - first < 1000 * MS + 400 * MS, "more than one GOP extra at {i}: {first}..{newest}");
            } else {
                assert_eq!(first, 0);
            }
        }
        assert_eq!(r.bytes(), r.len() * 100);
        assert!(r.stats().gops_dropped_time > 0);
    }

    #[test]
    fn bounded_by_bytes_whole_gops() {
        // 10 packets per GOP of 100 bytes: 1000 bytes a GOP; the bound keeps at most 2.5 GOPs.
        let mut r = ring(100.0, 2500);
        for i in 0..100 {
            r.push(packet(i, 10, 100));
            assert!(r.bytes() <= 2500);
            assert!(r.packets[0].keyframe);
        }
        assert!(r.stats().gops_dropped_bytes > 0);
        // A single GOP bigger than the bound is dropped and the ring waits for the next keyframe.
        let mut r = ring(100.0, 500);
        for i in 0..10 {
            r.push(packet(i, 10, 100));
        }
        assert!(r.is_empty());
        r.push(packet(10, 10, 100));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn since_picks_the_keyframe_at_or_before() {
        let mut r = ring(100.0, 1 << 30);
        for i in 0..50 {
            r.push(packet(i, 10, 100));
        }
        // Keyframes at 0, 400, 800, 1200, 1600 ms.
        let from = |ms: u64| r.since(ms * MS).first().and_then(Packet::time_ns).unwrap() / MS;
        assert_eq!(from(1000), 800);
        assert_eq!(from(1200), 1200);
        assert_eq!(from(0), 0);
        assert_eq!(from(5000), 1600);
        assert_eq!(r.since(1000 * MS).len(), 50 - 20);
        // Before the ring's start: from its first packet.
        let mut r = ring(0.5, 1 << 30);
        for i in 0..50 {
            r.push(packet(i, 10, 100));
        }
        assert_eq!(r.since(0).first().and_then(Packet::time_ns), r.first_ns());
        assert!(ring(1.0, 1).since(0).is_empty());
    }
}
