//! Decoded frames as the consumer gets them: RGB at model size, and optionally the full-size frame (I420 from the
//! bundled templates, or RGB).

use std::fmt;
use std::ops::Deref;
use std::time::Instant;

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::picture::{Picture, PixelFormat, planes_fit};

/// One decoded frame of one source.
#[derive(Debug)]
pub struct Frame {
    /// [`super::SourceSpec::id`] of the source.
    pub source: usize,
    /// Decoded frame index, 0-based, counted before any drop (so gaps show what a live source dropped).
    /// Across reconnects of a live source it keeps counting up.
    pub index: u64,
    /// Presentation time in nanoseconds (stream time for files; restarts after a live reconnect).
    pub pts_ns: Option<u64>,
    /// When the frame left GStreamer; `received.elapsed()` is its age.
    pub received: Instant,
    /// Whether this frame is picked for inference (see `FrameSettings::every` and `fps`).
    pub infer: bool,
    /// RGB at the model size (stretched for OWL-ViT, aspect kept for OWLv2).
    pub model: RgbFrame,
    /// The frame at its decoded size, when `FrameSettings::full_frames` is on.
    pub full: Option<FullFrame>,
    /// Decoded width, in pixels: the space the boxes are mapped back to.
    pub orig_width: u32,
    /// Decoded height, in pixels.
    pub orig_height: u32,
    /// What the motion gate saw, when it runs for the source ([`super::MotionSettings`]). A frame that is
    /// not inferred and does not move is *still*: see [`Frame::is_still`].
    pub motion: Option<super::Motion>,
}

impl Frame {
    /// True when the motion gate ran on this frame and nothing moved. A still frame that is not inferred holds
    /// the tracks: it is not a miss (see `crate::track`).
    pub fn is_still(&self) -> bool {
        self.motion.is_some_and(|m| !m.moving)
    }
}

/// An RGB image, 3 bytes per pixel, rows `stride` bytes apart (GStreamer pads rows to 4 bytes).
#[derive(Debug)]
pub struct RgbFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next; at least `width * 3`.
    pub stride: usize,
    /// The pixels: `stride * height` bytes (the last row may be only `width * 3`).
    pub data: FrameData,
}

impl RgbFrame {
    /// Wraps packed RGB (`stride = width * 3`), e.g. for tests of the consumer.
    pub fn from_packed(width: u32, height: u32, data: Vec<u8>) -> RgbFrame {
        assert_eq!(data.len(), width as usize * height as usize * 3, "packed RGB size");
        RgbFrame { width, height, stride: width as usize * 3, data: FrameData::Owned(data) }
    }

    /// Row `y` without its padding.
    pub fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.stride;
        &self.data[start..start + self.width as usize * 3]
    }

    /// The pixels with row padding removed: `width * height * 3` bytes.
    pub fn to_packed(&self) -> Vec<u8> {
        if self.stride == self.width as usize * 3 {
            return self.data[..self.width as usize * 3 * self.height as usize].to_vec();
        }
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        for y in 0..self.height {
            out.extend_from_slice(self.row(y));
        }
        out
    }

    /// Maps a sample from an RGB appsink without copying.
    pub(crate) fn from_sample(sample: &gst::Sample) -> Result<RgbFrame, String> {
        let caps = sample.caps().ok_or("sample without caps")?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("caps {caps}: {e}"))?;
        if info.format() != gst_video::VideoFormat::Rgb {
            return Err(format!("expected RGB, got {:?}; the template's branch must end in format=RGB", info.format()));
        }
        let buffer = sample.buffer_owned().ok_or("sample without buffer")?;
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, &info)
            .map_err(|_| "could not map the frame's buffer".to_string())?;
        let stride = usize::try_from(frame.plane_stride()[0]).map_err(|_| "negative stride".to_string())?;
        let (width, height) = (frame.width(), frame.height());
        let len = frame.plane_data(0).map_err(|e| e.to_string())?.len();
        if len < stride * (height as usize).saturating_sub(1) + width as usize * 3 {
            return Err(format!("buffer of {len} bytes is too small for {width}x{height} RGB, stride {stride}"));
        }
        Ok(RgbFrame { width, height, stride, data: FrameData::Mapped(Box::new(frame)) })
    }
}

/// A frame at its decoded size, as the template's full branch delivers it: I420 (what the bundled templates ask
/// for, so nothing is converted on the way to the encoder) or RGB.
pub struct FullFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format.
    pub format: PixelFormat,
    data: FullData,
}

enum FullData {
    /// The GStreamer buffer, mapped for reading (no copy).
    Mapped(Box<gst_video::VideoFrame<gst_video::video_frame::Readable>>),
    /// Pixels owned by Rust (tests).
    Owned(Picture),
}

impl FullFrame {
    /// Wraps a picture, e.g. for tests of the consumer.
    pub fn from_picture(picture: Picture) -> FullFrame {
        FullFrame {
            width: picture.width(),
            height: picture.height(),
            format: picture.format(),
            data: FullData::Owned(picture),
        }
    }

    /// Maps a sample from the full-frame appsink (I420 or RGB) without copying.
    pub(crate) fn from_sample(sample: &gst::Sample) -> Result<FullFrame, String> {
        let caps = sample.caps().ok_or("sample without caps")?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("caps {caps}: {e}"))?;
        let format = PixelFormat::from_video_format(info.format()).ok_or_else(|| {
            format!("expected I420 or RGB, got {:?}; the template's full branch must end in one of them", info.format())
        })?;
        let buffer = sample.buffer_owned().ok_or("sample without buffer")?;
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, &info)
            .map_err(|_| "could not map the frame's buffer".to_string())?;
        let (width, height) = (frame.width(), frame.height());
        // Check the planes once here, so that copying them later cannot fail.
        let planes = mapped_planes(&frame, format).ok_or("could not read the frame's planes")?;
        if !planes_fit(format, width, height, &planes) {
            return Err(format!("a {format:?} frame of {width}x{height} has planes too short"));
        }
        Ok(FullFrame { width, height, format, data: FullData::Mapped(Box::new(frame)) })
    }

    /// Copies the pixels into `dst` (reshaped to this frame's format and size when they differ), in the
    /// default layout an encoder's appsrc takes. `None` when a plane is too short.
    pub fn copy_to(&self, dst: &mut Picture) -> Option<()> {
        match &self.data {
            FullData::Owned(p) => {
                dst.clone_from(p);
                Some(())
            }
            FullData::Mapped(frame) => {
                let planes = mapped_planes(frame, self.format)?;
                dst.copy_from_planes(self.format, self.width, self.height, &planes)
            }
        }
    }
}

/// Each plane of a mapped frame with its stride.
fn mapped_planes(
    frame: &gst_video::VideoFrame<gst_video::video_frame::Readable>,
    format: PixelFormat,
) -> Option<[(&[u8], usize); 3]> {
    let mut planes: [(&[u8], usize); 3] = [(&[], 0); 3];
    for (p, plane) in planes.iter_mut().enumerate().take(format.planes()) {
        let data = frame.plane_data(p as u32).ok()?;
        let stride = usize::try_from(frame.plane_stride()[p]).ok()?;
        *plane = (data, stride);
    }
    Some(planes)
}

impl fmt::Debug for FullFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.data {
            FullData::Mapped(_) => "mapped",
            FullData::Owned(_) => "owned",
        };
        write!(f, "FullFrame({:?} {}x{}, {kind})", self.format, self.width, self.height)
    }
}

/// Pixel bytes: either mapped straight from the GStreamer buffer (no copy), or owned.
///
/// Holding a mapped frame holds its GStreamer buffer; a consumer that keeps frames for long should copy them
/// (`to_vec()` or [`RgbFrame::to_packed`]) so the pipeline's buffer pools are not starved.
pub enum FrameData {
    /// The GStreamer buffer, mapped for reading. Boxed: a mapped `VideoFrame` is several hundred bytes.
    Mapped(Box<gst_video::VideoFrame<gst_video::video_frame::Readable>>),
    /// Bytes owned by Rust (tests, copies).
    Owned(Vec<u8>),
}

impl Deref for FrameData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            // Plane 0 of an RGB frame was checked when the frame was mapped.
            FrameData::Mapped(frame) => frame.plane_data(0).unwrap_or(&[]),
            FrameData::Owned(v) => v,
        }
    }
}

impl fmt::Debug for FrameData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            FrameData::Mapped(_) => "Mapped",
            FrameData::Owned(_) => "Owned",
        };
        write!(f, "FrameData::{kind}({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows() {
        let f = RgbFrame::from_packed(2, 2, (0..12).collect());
        assert_eq!(f.row(1), &[6, 7, 8, 9, 10, 11]);
        assert_eq!(f.to_packed(), (0..12).collect::<Vec<u8>>());
        let padded = RgbFrame { width: 1, height: 2, stride: 4, data: FrameData::Owned(vec![1, 2, 3, 0, 4, 5, 6]) };
        assert_eq!(padded.to_packed(), [1, 2, 3, 4, 5, 6]);
    }
}
