//! The clip cropped to the event: decoded, cropped and scaled by GStreamer, encoded to H.264.

use std::path::Path;
use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::decoder::RgbDecoder;
use super::pipeline::Pipeline;
use super::{CROP_CLIP, CropRegion, EventBoxes, EvidenceError, EvidenceSettings, PartFile, check_input, init};
use crate::draw::TEST_MODEL_BANNER;
use crate::draw::{Canvas, draw_banner};
use crate::picture::{Picture, PixelFormat};

/// Decodes `full_clip` (an MP4 whose first frame is at stream time `clip_start_s`), crops every frame to the
/// event's region ([`CropRegion::of_event`]: the union of `boxes` plus the margin, one fixed, even size for the
/// whole clip, clamped to the frame), scales it up to at least `crop_min_size`, encodes H.264 and writes `out` (as
/// `.<name>.part`, then renamed).
///
/// Every frame of the input is in the output, with its timestamps. With [`EvidenceSettings::test_model`] every
/// frame carries the test model's banner across its top. Returns the region and the output size.
/// `clip_start_s` does not change the crop (the region is fixed for the whole clip); it is taken for symmetry
/// with [`super::write_snapshots`].
pub fn write_crop_clip(
    full_clip: &Path,
    clip_start_s: f64,
    boxes: &EventBoxes,
    out: &Path,
    s: &EvidenceSettings,
) -> Result<CropRegion, EvidenceError> {
    let _ = clip_start_s;
    init()?;
    check_input(full_clip)?;
    for (element, hint) in [
        ("videocrop", "install gstreamer1.0-plugins-good"),
        ("videoscale", "install gstreamer1.0-plugins-base"),
        ("h264parse", "install gstreamer1.0-plugins-bad"),
        ("mp4mux", "install gstreamer1.0-plugins-good"),
    ] {
        if gst::ElementFactory::find(element).is_none() {
            return Err(EvidenceError::MissingElement { path: out.to_path_buf(), element, hint });
        }
    }
    if let Err(e) = gst::parse::bin_from_description(&s.encoder, true) {
        return Err(EvidenceError::Encoder {
            path: out.to_path_buf(),
            encoder: s.encoder.clone(),
            message: e.to_string(),
        });
    }
    let (width, height) = {
        let decoder = RgbDecoder::open(full_clip)?;
        (decoder.info.width(), decoder.info.height())
    };
    if width < 2 || height < 2 {
        return Err(EvidenceError::FrameTooSmall { path: full_clip.to_path_buf(), width, height });
    }
    let region = CropRegion::of_event(boxes, width, height, s)
        .ok_or_else(|| EvidenceError::NoBox { path: out.to_path_buf() })?;

    let description = format!(
        "filesrc name=src ! decodebin ! videocrop name=crop left={} top={} right={} bottom={} \
         ! videoscale add-borders=false ! video/x-raw,width={},height={},pixel-aspect-ratio=1/1 \
         ! videoconvert ! capsfilter name=i420 caps=video/x-raw,format=I420 ! {} ! h264parse ! mp4mux \
         ! filesink name=sink",
        region.x,
        region.y,
        width - region.x - region.width,
        height - region.y - region.height,
        region.out_width,
        region.out_height,
        s.encoder,
    );
    let fail = |message: String| EvidenceError::Pipeline { what: CROP_CLIP, path: out.to_path_buf(), message };
    let part = PartFile::create(out, CROP_CLIP)?;
    let pipeline = Pipeline::launch(&description).map_err(fail)?;
    pipeline.element("src").map_err(fail)?.set_property("location", full_clip);
    pipeline.element("sink").map_err(fail)?.set_property("location", part.part_path());
    let crop_sink = pipeline.element("crop").map_err(fail)?.static_pad("sink");
    crop_sink
        .ok_or_else(|| fail("videocrop has no sink pad".into()))?
        .add_probe(gst::PadProbeType::BUFFER, increasing_pts());
    if s.test_model {
        let banner = BannerRows::new(region.out_width, region.out_height)
            .ok_or_else(|| fail(format!("no banner for {}x{}", region.out_width, region.out_height)))?;
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, region.out_width, region.out_height)
            .build()
            .map_err(|e| fail(format!("no video info for the banner: {e}")))?;
        let i420 = pipeline.element("i420").map_err(fail)?.static_pad("src");
        i420.ok_or_else(|| fail("the I420 caps filter has no src pad".into()))?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, probe| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = probe.data.as_mut() {
                    // A frame that cannot be mapped goes on without the banner rather than failing the clip.
                    if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info)
                    {
                        banner.paste(&mut frame);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let started = Instant::now();
    pipeline.run_to_eos().map_err(|e| e.into_evidence_error(CROP_CLIP, out))?;
    drop(pipeline);
    part.finish()?;
    tracing::debug!(
        path = %out.display(),
        ?region,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "wrote crop clip"
    );
    Ok(region)
}

/// The test model's banner as the top rows of an I420 frame: drawn once, as on the annotated video
/// ([`draw_banner`]), and copied onto the top of every frame (it covers those rows whole, so it is the same on
/// every frame).
struct BannerRows {
    picture: Picture,
    /// Rows of luma it covers; even, so that the chroma rows are whole.
    rows: usize,
}

impl BannerRows {
    fn new(width: u32, height: u32) -> Option<Self> {
        let mut picture = Picture::black(PixelFormat::I420, width, height)?;
        let rows = draw_banner(&mut Canvas::from_picture(&mut picture), TEST_MODEL_BANNER).min(height) & !1;
        Some(BannerRows { picture, rows: rows as usize })
    }

    /// Copies the banner onto the top rows of `frame` (I420 of the banner's width).
    fn paste(&self, frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>) {
        let layout = *self.picture.layout();
        for plane in 0..3 {
            let rows = if plane == 0 { self.rows } else { self.rows / 2 };
            let row_bytes = layout.row_bytes(plane);
            let stride = frame.plane_stride()[plane] as usize;
            let src = &self.picture.data()[layout.offsets[plane]..];
            let Ok(dst) = frame.plane_data_mut(plane as u32) else { return };
            for y in 0..rows {
                let (d, s) = (y * stride, y * layout.strides[plane]);
                if let (Some(d), Some(s)) = (dst.get_mut(d..d + row_bytes), src.get(s..s + row_bytes)) {
                    d.copy_from_slice(s);
                }
            }
        }
    }
}

/// A buffer probe that keeps decoded frames' times increasing: a frame without a time, or whose time is not after
/// the previous frame's, is placed one frame duration (1 ms when unknown) after it.
///
/// Clips are cut from the source's own packets, timestamps and all, and some files repeat presentation times
/// (seen: H.264 with B-frames written by a concatenating muxer). A decoder shows such frames anyway, but an encoder
/// given two frames at one time drops the time, and mp4mux then refuses the whole crop clip ("Buffer has no PTS").
fn increasing_pts() -> impl Fn(&gst::Pad, &mut gst::PadProbeInfo) -> gst::PadProbeReturn + Send + Sync + 'static {
    // The previous frame's time in ns; u64::MAX before the first.
    let last = std::sync::atomic::AtomicU64::new(u64::MAX);
    move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let pts = buffer.pts().map(|t| t.nseconds());
            let prev = last.load(std::sync::atomic::Ordering::Relaxed);
            let step = buffer.duration().map_or(1_000_000, |d| d.nseconds().max(1));
            let fixed = match (pts, prev) {
                (Some(p), u64::MAX) => p,
                (Some(p), l) if p > l => p,
                (None, u64::MAX) => 0,
                (_, l) => l.saturating_add(step),
            };
            if pts != Some(fixed) {
                buffer.make_mut().set_pts(gst::ClockTime::from_nseconds(fixed));
            }
            last.store(fixed, std::sync::atomic::Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    }
}
