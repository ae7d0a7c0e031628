//! What a file holds before it is played: duration, size and frame rate, for progress bars.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer_pbutils as gst_pbutils;
use gstreamer_pbutils::prelude::*;

/// How long discovery may take before giving up (a healthy file needs well under a second).
const DISCOVER_TIMEOUT_S: u64 = 10;

/// A file's first video stream, as the discoverer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// Length of the file, when the container states it.
    pub duration: Option<Duration>,
    /// Width of the first video stream, in pixels.
    pub width: u32,
    /// Height of the first video stream, in pixels.
    pub height: u32,
    /// Frames per second, when the container states a fixed rate.
    pub framerate: Option<f64>,
    /// `duration * framerate`, rounded: an estimate (containers may have variable frame rates).
    pub frame_count: Option<u64>,
}

/// Probes a local file. `None` if it cannot be read or has no video stream.
pub fn probe_media(path: &Path) -> Option<MediaInfo> {
    let info = discover(path)?;
    let video = info.video_streams().into_iter().next()?;
    let duration = info.duration().map(|d| Duration::from_nanos(d.nseconds()));
    let rate = video.framerate();
    let framerate = (rate.numer() > 0 && rate.denom() > 0).then(|| rate.numer() as f64 / rate.denom() as f64);
    let frame_count = match (duration, framerate) {
        (Some(d), Some(fps)) => Some((d.as_secs_f64() * fps).round() as u64),
        _ => None,
    };
    Some(MediaInfo { duration, width: video.width(), height: video.height(), framerate, frame_count })
}

/// A file's duration, for a progress bar. `None` if unknown.
pub fn probe_duration(path: &Path) -> Option<Duration> {
    probe_media(path)?.duration
}

/// The caps of a local file's first video stream as its demuxer states them (`video/x-h264, profile=high, ...`):
/// what decodebin will look for a decoder for. `None` if the file cannot be read or has no video stream.
pub fn probe_video_caps(path: &Path) -> Option<gst::Caps> {
    discover(path)?.video_streams().into_iter().next()?.caps()
}

/// What GStreamer's discoverer finds in a local file, within [`DISCOVER_TIMEOUT_S`]. `None` if it is not a
/// readable file or cannot be discovered.
fn discover(path: &Path) -> Option<gst_pbutils::DiscovererInfo> {
    gst::init().ok()?;
    let abs = std::path::absolute(path).ok()?;
    if !abs.is_file() {
        return None;
    }
    let uri = gst::glib::filename_to_uri(&abs, None).ok()?;
    let discoverer = gst_pbutils::Discoverer::new(gst::ClockTime::from_seconds(DISCOVER_TIMEOUT_S)).ok()?;
    discoverer.discover_uri(&uri).ok()
}

/// For a RIFF file (AVI) cut short: (its length, the length its RIFF header states). An AVI keeps its index at
/// the end, so when the end is lost its demuxer scans what is left and reports that as the whole duration: the
/// RIFF header is what still tells how long the file was meant to be. `None` for a complete RIFF file, for any
/// other format, or when the file cannot be read. (An OpenDML AVI over 1 GB continues in further RIFF chunks, so
/// its first chunk states less than the file's length, never more.)
pub fn riff_shortfall(path: &Path) -> Option<(u64, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head).ok()?;
    if &head[..4] != b"RIFF" || &head[8..12] != b"AVI " {
        return None;
    }
    let stated = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64 + 8;
    let actual = file.metadata().ok()?.len();
    (actual < stated).then_some((actual, stated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_riff_file_shorter_than_its_header_says_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.avi");
        let mut avi = b"RIFF".to_vec();
        avi.extend_from_slice(&(100u32 - 8).to_le_bytes());
        avi.extend_from_slice(b"AVI ");
        avi.resize(100, 0);
        std::fs::write(&path, &avi).unwrap();
        assert_eq!(riff_shortfall(&path), None, "complete");
        std::fs::write(&path, &avi[..60]).unwrap();
        assert_eq!(riff_shortfall(&path), Some((60, 100)));
        std::fs::write(&path, b"not a riff file at all").unwrap();
        assert_eq!(riff_shortfall(&path), None);
    }
}
