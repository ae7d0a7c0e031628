//! The two snapshots of an event: the full frame at the peak with its box and label, and the crop of the box plus
//! the margin.

use std::path::Path;

use super::decoder::RgbDecoder;
use super::{
    CROP_SNAPSHOT, CropRegion, EventBoxes, EvidenceError, EvidenceSettings, SNAPSHOT, check_input, init,
    write_atomically,
};
use crate::draw::TEST_MODEL_BANNER;
use crate::draw::{Canvas, annotate_detections, draw_banner};
use crate::geom::Detection;

/// Writes the frame of `full_clip` nearest to the peak's time (its first frame is at stream time
/// `clip_start_s`) with the peak's box and "label score" drawn, as JPEG at `full_out`, and that frame cropped to
/// the event's region (the crop clip's: [`CropRegion::of_event`], scaled to the same size, nothing drawn) at
/// `crop_out`. With [`EvidenceSettings::test_model`] both carry the test model's banner across their top. Returns
/// the full snapshot's JPEG bytes (the MQTT `snapshot` topic publishes them).
///
/// A peak before the clip's start gives its first frame, one after its end its last frame.
pub fn write_snapshots(
    full_clip: &Path,
    clip_start_s: f64,
    boxes: &EventBoxes,
    label: &str,
    full_out: &Path,
    crop_out: &Path,
    s: &EvidenceSettings,
) -> Result<Vec<u8>, EvidenceError> {
    init()?;
    check_input(full_clip)?;
    let peak = &boxes.peak;
    let mut decoder = RgbDecoder::open(full_clip)?;
    let offset_s = peak.pts_s - clip_start_s;
    let frame = decoder.frame_nearest(if offset_s.is_finite() { offset_s } else { 0.0 })?;
    drop(decoder);
    let (width, height) = frame.dimensions();

    let quality = s.jpeg_quality.clamp(1, 100);
    let crop_bytes = match CropRegion::of_event(boxes, width, height, s) {
        Some(r) => {
            let crop = image::imageops::crop_imm(&frame, r.x, r.y, r.width, r.height).to_image();
            let mut crop = if (r.out_width, r.out_height) == (r.width, r.height) {
                crop
            } else {
                image::imageops::resize(&crop, r.out_width, r.out_height, image::imageops::FilterType::Triangle)
            };
            if s.test_model {
                draw_banner(&mut Canvas::from_image(&mut crop), TEST_MODEL_BANNER);
            }
            Some(encode_jpeg(&crop, quality, CROP_SNAPSHOT, crop_out)?)
        }
        None if width < 2 || height < 2 => {
            return Err(EvidenceError::FrameTooSmall { path: full_clip.to_path_buf(), width, height });
        }
        None => return Err(EvidenceError::NoBox { path: crop_out.to_path_buf() }),
    };

    let mut full = frame;
    let det = Detection { query: 0, score: peak.score, bbox: peak.bbox };
    {
        let mut canvas = Canvas::from_image(&mut full);
        annotate_detections(&mut canvas, &[det], &[label.to_string()]);
        if s.test_model {
            draw_banner(&mut canvas, TEST_MODEL_BANNER);
        }
    }
    let full_bytes = encode_jpeg(&full, quality, SNAPSHOT, full_out)?;

    write_atomically(full_out, SNAPSHOT, &full_bytes)?;
    if let Some(bytes) = crop_bytes {
        write_atomically(crop_out, CROP_SNAPSHOT, &bytes)?;
    }
    Ok(full_bytes)
}

fn encode_jpeg(img: &image::RgbImage, quality: u8, what: &'static str, path: &Path) -> Result<Vec<u8>, EvidenceError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(img).map_err(|e| {
        EvidenceError::Pipeline { what, path: path.to_path_buf(), message: format!("cannot encode JPEG: {e}") }
    })?;
    Ok(bytes)
}
