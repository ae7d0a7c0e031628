//! The seam to the evidence module (`src/sink/evidence.rs`, written on another branch): the agreed types and
//! signatures, stubbed until it lands. [`AVAILABLE`] is false here, so the clip writer writes the full-frame
//! clip only and leaves the crop clip, the snapshots and the sidecar out of its final `clips` line (null paths).
//! When the evidence module lands, this file is replaced by `pub use crate::sink::evidence::*` and
//! `AVAILABLE = true`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::geom::PixelBox;

/// True once the real evidence module is wired in.
pub const AVAILABLE: bool = false;

/// One frame's box of an event (stream time, pixels of the full decoded frame).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameBox {
    pub frame: u64,
    pub pts_s: f64,
    #[serde(rename = "box")]
    pub bbox: PixelBox,
    pub score: f32,
}

/// Settings of the evidence (see the agreed seam).
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceSettings {
    pub crop_margin: f32,
    pub crop_min_size: u32,
    pub jpeg_quality: u8,
    pub encoder: String,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        EvidenceSettings {
            crop_margin: 0.2,
            crop_min_size: 320,
            jpeg_quality: 90,
            encoder: crate::pipeline::generic_encoder(crate::pipeline::EncoderPurpose::Record),
        }
    }
}

/// The crop region of the cropped clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Errors of the evidence module.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("the evidence module is not built in yet: no crop clip, snapshots or sidecar for {}", path.display())]
    NotAvailable { path: PathBuf },
}

/// The sidecar of one event.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    pub event_id: String,
    pub frames: Vec<FrameBox>,
}

pub fn write_crop_clip(
    _full_clip: &Path,
    _clip_start_s: f64,
    _boxes: &[FrameBox],
    out: &Path,
    _s: &EvidenceSettings,
) -> Result<CropRegion, EvidenceError> {
    Err(EvidenceError::NotAvailable { path: out.to_path_buf() })
}

pub fn write_snapshots(
    _full_clip: &Path,
    _clip_start_s: f64,
    _peak: &FrameBox,
    _label: &str,
    full_out: &Path,
    _crop_out: &Path,
    _s: &EvidenceSettings,
) -> Result<Vec<u8>, EvidenceError> {
    Err(EvidenceError::NotAvailable { path: full_out.to_path_buf() })
}

pub fn write_sidecar(out: &Path, _sidecar: &Sidecar) -> Result<(), EvidenceError> {
    Err(EvidenceError::NotAvailable { path: out.to_path_buf() })
}
