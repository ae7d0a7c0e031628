//! Image preprocessing for OWL-ViT and OWLv2, reproducing Hugging Face transformers 4.57 (the slow processors).
//!
//! The detector's scores move with the exact input pixels, so each step copies the reference implementation,
//! including which floating point type every intermediate is held in:
//!
//! - **OWL-ViT** (`OwlViTImageProcessor`): Pillow `Image.resize(size, BICUBIC)` of the 8-bit RGB image straight to
//!   the model size (a stretch, no aspect ratio kept), then `u8 as f64 * rescale_factor` rounded to f32, then
//!   `(x - mean) / std` in f32. [`resize_bicubic_pil`] is Pillow's fixed-point resampler, bit for bit.
//! - **OWLv2** (`Owlv2ImageProcessor`): rescale to f32 in [0, 1], pad bottom and right with 0.5 to a square, then
//!   resize the way scikit-image does (a Gaussian anti-aliasing blur when downscaling, then `scipy.ndimage.zoom` with
//!   linear interpolation; both compute in f64 and store f32 after each pass), clip to the padded image's range and
//!   normalise in f32. [`resize_owlv2`] follows scipy's arithmetic step by step.
//!
//! - **Grounding DINO** (`GroundingDinoImageProcessor`): Pillow bilinear resize keeping the aspect ratio, rescale,
//!   ImageNet mean and std, zero padding bottom and right, and a pixel mask: see [`gdino`].
//!
//! [`tensor_from_scaled_rgb`] is the fast path for video frames that GStreamer has already scaled: close to the
//! reference (the scaler differs), not identical.
//!
//! What the exactness depends on:
//! - The decoded pixels. Decoders of lossless formats agree; JPEG decoders do not (the `image` crate's and
//!   Pillow's libjpeg-turbo differ by up to a few levels on ordinary photos, from IDCT and chroma upsampling).
//! - Pillow's version: Pillow 13 changed the order of the two resampling passes for images whose height shrinks
//!   much more than their width (see [`resize_bicubic_pil`]); this follows Pillow 13.
//! - The slow processors. `AutoImageProcessor` in transformers 4.57 picks them for the published checkpoints; the
//!   `*ImageProcessorFast` variants resize with torch and give other pixels. A config naming a fast processor is
//!   read as its family and preprocessed the slow way.

use image::RgbImage;
use ndarray::{Array4, ArrayViewMut1, ArrayViewMut3, Axis, s};
use thiserror::Error;

use crate::geom::Transform;

mod config;
pub mod gdino;
mod owlv2;
mod pil;

use config::OWLV2_PAD_VALUE;
pub use config::{PIL_BICUBIC, PIL_BILINEAR, PreprocessorConfig, ResizeRule};

pub use owlv2::resize_owlv2;
use owlv2::resize_owlv2_rows;
pub use pil::{PilFilter, resize_bicubic_pil, resize_pil};

/// Errors from reading a preprocessor config or from a video frame that does not fit the model input.
#[derive(Debug, Error)]
pub enum PreprocessError {
    /// The text is not JSON, or a field has the wrong type.
    #[error("preprocessor_config.json could not be read as an image processor config: {0}")]
    Json(#[from] serde_json::Error),
    /// A field asks for something this module cannot reproduce exactly.
    #[error("preprocessor_config.json: `{field}` {problem}")]
    Config { field: &'static str, problem: String },
    /// The config names the other model family.
    #[error(
        "preprocessor_config.json is for {config:?} but the model is {model:?}; use the preprocessor_config.json \
         that came with the model"
    )]
    FamilyMismatch { config: Family, model: Family },
    /// A pre-scaled video frame has the wrong size, or its buffer is too short for its size and stride.
    #[error("video frame {width}x{height} (stride {stride} bytes, buffer {len} bytes): {problem}")]
    Frame { width: u32, height: u32, stride: usize, len: usize, problem: String },
}

/// The model family; it decides the preprocessing recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// OWL-ViT (v1): bicubic stretch to the square input.
    OwlVit,
    /// OWLv2: pad to a square with grey, then an anti-aliased linear resize.
    Owlv2,
    /// Grounding DINO (`model_type` "grounding-dino"): bilinear resize keeping the aspect ratio, zero padding
    /// bottom and right, and a pixel mask ([`gdino`]).
    GroundingDino,
    /// MM-Grounding-DINO (`model_type` "mm-grounding-dino"; LLMDet too): preprocessed as Grounding DINO.
    MmGroundingDino,
}

impl Family {
    /// Grounding DINO or MM-Grounding-DINO: one processor, one recipe.
    pub fn is_grounding_dino(self) -> bool {
        matches!(self, Family::GroundingDino | Family::MmGroundingDino)
    }

    /// The `model_type` of `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Family::OwlVit => "owlvit",
            Family::Owlv2 => "owlv2",
            Family::GroundingDino => "grounding-dino",
            Family::MmGroundingDino => "mm-grounding-dino",
        }
    }
}

/// Preprocesses `img` into `out`, the `[3, height, width]` slot of a batch (so batching needs no copy), and returns
/// how boxes map back to `img`: [`Transform::stretch`] for OWL-ViT, [`Transform::pad_square`] for OWLv2 (or a
/// stretch when `do_pad` is false). Grounding DINO is letterboxed into the slot ([`gdino::letterbox_into`],
/// which also gives the size for the pixel mask) and its boxes map back by a stretch.
///
/// An empty image (0 pixels wide or high) yields a grey input, where transformers would raise.
///
/// # Panics
/// When `out` is not `[3, cfg.size.0, cfg.size.1]`.
pub fn preprocess_into(
    family: Family,
    cfg: &PreprocessorConfig,
    img: &RgbImage,
    mut out: ArrayViewMut3<f32>,
) -> Transform {
    let (oh, ow) = cfg.input_hw();
    assert_eq!(out.shape(), &[3, oh, ow], "the output slot must be [3, height, width] of the preprocessor config");
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        for c in 0..3 {
            out.index_axis_mut(Axis(0), c).fill(cfg.normalize(c, OWLV2_PAD_VALUE));
        }
        return Transform::stretch(w, h);
    }
    match family {
        Family::OwlVit => {
            // Pillow returns a copy when the size already matches; skip even that.
            let resized;
            let src = if (h as usize, w as usize) == (oh, ow) {
                img
            } else {
                resized = resize_bicubic_pil(img, ow as u32, oh as u32);
                &resized
            };
            let lut = cfg.tensor_lut();
            let raw: &[u8] = src.as_raw();
            for (y, src_row) in raw.chunks_exact(ow * 3).enumerate() {
                for (c, lut) in lut.iter().enumerate() {
                    write_row(out.slice_mut(s![c, y, ..]), src_row.chunks_exact(3).map(|p| lut[p[c] as usize]));
                }
            }
            Transform::stretch(w, h)
        }
        Family::Owlv2 => {
            let (w, h) = (w as usize, h as usize);
            let (ph, pw) = if cfg.do_pad { (h.max(w), h.max(w)) } else { (h, w) };
            let lut = cfg.rescale_lut();
            let raw: &[u8] = img.as_raw();
            // `_clip_warp_output` clips to the range of the padded image, grey included when there is padding.
            let (lo_u8, hi_u8) = raw.iter().fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let (mut lo, mut hi) = (lut[lo_u8 as usize], lut[hi_u8 as usize]);
            if ph > h || pw > w {
                lo = lo.min(OWLV2_PAD_VALUE);
                hi = hi.max(OWLV2_PAD_VALUE);
            }
            let fill_row = |y: usize, row: &mut [f32]| {
                let (image_part, pad_part) = row.split_at_mut(if y < h { w * 3 } else { 0 });
                if y < h {
                    for (o, &v) in image_part.iter_mut().zip(&raw[y * w * 3..(y + 1) * w * 3]) {
                        *o = lut[v as usize];
                    }
                }
                pad_part.fill(OWLV2_PAD_VALUE);
            };
            resize_owlv2_rows(ph, pw, 3, fill_row, oh, ow, |oy, planes| {
                for (c, plane) in planes.chunks_exact(ow).enumerate() {
                    let row = plane.iter().map(|&v| cfg.normalize(c, v.max(lo).min(hi)));
                    write_row(out.slice_mut(s![c, oy, ..]), row);
                }
            });
            if cfg.do_pad { Transform::pad_square(w as u32, h as u32) } else { Transform::stretch(w as u32, h as u32) }
        }
        Family::GroundingDino | Family::MmGroundingDino => {
            gdino::letterbox_into(cfg, img, out);
            Transform::stretch(w, h)
        }
    }
}

/// [`preprocess_into`] into a new `[1, 3, height, width]` tensor.
pub fn preprocess(family: Family, cfg: &PreprocessorConfig, img: &RgbImage) -> (Array4<f32>, Transform) {
    let (oh, ow) = cfg.input_hw();
    let mut tensor = Array4::zeros((1, 3, oh, ow));
    let transform = preprocess_into(family, cfg, img, tensor.index_axis_mut(Axis(0), 0));
    (tensor, transform)
}

/// Normalises a packed RGB frame that GStreamer has already scaled into `out` (`[3, height, width]`).
///
/// OWL-ViT: the frame must be the model size. OWLv2: the frame must fit the model input and touch its right or
/// bottom edge (its longer side scaled to the input size); the rest is padded with grey, as `Owlv2ImageProcessor`
/// pads. With `do_pad: false` an OWLv2 frame must be the model size too. `stride` is the distance between rows in
/// bytes. One pass, no allocation. The caller builds the [`Transform`] from the frame's size before scaling.
///
/// The values differ from [`preprocess_into`] on the unscaled frame only by the scaler used.
///
/// # Panics
/// When `out` is not `[3, cfg.size.0, cfg.size.1]`.
pub fn tensor_from_scaled_rgb(
    family: Family,
    cfg: &PreprocessorConfig,
    rgb: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    mut out: ArrayViewMut3<f32>,
) -> Result<(), PreprocessError> {
    let (oh, ow) = cfg.input_hw();
    assert_eq!(out.shape(), &[3, oh, ow], "the output slot must be [3, height, width] of the preprocessor config");
    if family.is_grounding_dino() {
        return gdino::letterbox_scaled_into(cfg, rgb, width, height, stride, out);
    }
    let frame_error = |problem: String| PreprocessError::Frame { width, height, stride, len: rgb.len(), problem };
    let (w, h) = (width as usize, height as usize);
    let fits = match family {
        Family::Owlv2 if cfg.do_pad => w <= ow && h <= oh && (w == ow || h == oh),
        _ => w == ow && h == oh,
    };
    if !fits {
        return Err(frame_error(format!(
            "does not match the {ow}x{oh} model input; scale the frame to {}",
            if family == Family::Owlv2 && cfg.do_pad { "fit it, touching its right or bottom edge" } else { "it" }
        )));
    }
    if stride < w * 3 {
        return Err(frame_error(format!("stride is smaller than a row of {w} RGB pixels; is the format not RGB?")));
    }
    let needed = if h == 0 { 0 } else { stride * (h - 1) + w * 3 };
    if rgb.len() < needed {
        return Err(frame_error(format!("buffer is shorter than the {needed} bytes the frame needs")));
    }
    let lut = cfg.tensor_lut();
    for c in 0..3 {
        let pad = cfg.normalize(c, OWLV2_PAD_VALUE);
        let lut = &lut[c];
        for y in 0..oh {
            let mut row = out.slice_mut(s![c, y, ..]);
            if y < h {
                let src = &rgb[y * stride..y * stride + w * 3];
                write_row(row.slice_mut(s![..w]), src.chunks_exact(3).map(|p| lut[p[c] as usize]));
                row.slice_mut(s![w..]).fill(pad);
            } else {
                row.fill(pad);
            }
        }
    }
    Ok(())
}

/// Writes `values` along `row`, fast when the row is contiguous (it is for a standard-layout batch).
fn write_row(mut row: ArrayViewMut1<f32>, values: impl Iterator<Item = f32>) {
    match row.as_slice_mut() {
        Some(slice) => slice.iter_mut().zip(values).for_each(|(o, v)| *o = v),
        None => row.iter_mut().zip(values).for_each(|(o, v)| *o = v),
    }
}

/// What the tests of this module and its submodules share: the synthetic image and `.npy` golden files.
#[cfg(test)]
pub(crate) mod test_support {
    use image::{Rgb, RgbImage};

    /// The synthetic test image of `tests/golden/preprocess/gen_golden.py`: smooth ramps plus a 0/255
    /// checkerboard in the lower left, where bicubic overshoots and clipping matters.
    pub fn synth(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (xi, yi) = (x as i64, y as i64);
            if x < w / 3 && y >= h / 2 {
                return Rgb([((xi / 3 + yi / 2) % 2 * 255) as u8; 3]);
            }
            Rgb(std::array::from_fn(|c| {
                let c = c as i64;
                ((xi * 37 + yi * (91 + 2 * c) + c * 53 + ((xi * yi) % 17) * 13) % 256) as u8
            }))
        })
    }

    /// A parsed `.npy` (format 1.0, C order): shape and raw little-endian data.
    pub struct Npy<'a> {
        pub shape: Vec<usize>,
        pub data: &'a [u8],
    }

    pub fn npy(bytes: &[u8]) -> Npy<'_> {
        assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'fortran_order': False"));
        let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
        let shape = shape.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
        Npy { shape, data: &bytes[10 + header_len..] }
    }

    impl Npy<'_> {
        pub fn f32s(&self) -> Vec<f32> {
            self.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
    }

    macro_rules! golden {
        ($name:literal) => {
            npy(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/preprocess/", $name, ".npy")))
        };
    }

    pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }
    pub(crate) use golden;
}

#[cfg(test)]
mod tests {
    use super::test_support::{golden, max_abs_diff, npy, synth};
    use super::*;
    use ndarray::Array3;

    /// OWL-ViT is integer Pillow plus f32 arithmetic done the same way: exact.
    #[test]
    fn owlvit_pipeline_matches_transformers_exactly() {
        let mut cfg = PreprocessorConfig::owlvit();
        cfg.size = (24, 24);
        for ((w, h), want) in [
            ((37, 23), golden!("owlvit_24_37x23")),
            ((13, 9), golden!("owlvit_24_13x9")),
            ((24, 24), golden!("owlvit_24_24x24")),
        ] {
            assert_eq!(want.shape, [3, 24, 24]);
            let (tensor, transform) = preprocess(Family::OwlVit, &cfg, &synth(w, h));
            let diff = max_abs_diff(tensor.as_slice().unwrap(), &want.f32s());
            assert_eq!(diff, 0.0, "{w}x{h}: transformers differs by {diff}");
            assert_eq!(transform, Transform::stretch(w, h));
        }
    }

    /// Measured: 0 (bit-exact). The resize allowance, scaled by normalisation (1 / std < 4).
    const OWLV2_PIPELINE_TOLERANCE: f32 = 4e-6;

    #[test]
    fn owlv2_pipeline_matches_transformers() {
        let mut cfg = PreprocessorConfig::owlv2();
        cfg.size = (32, 32);
        for ((w, h), want) in [
            ((37, 23), golden!("owlv2_32_37x23")),
            ((23, 37), golden!("owlv2_32_23x37")),
            ((13, 9), golden!("owlv2_32_13x9")),
            ((97, 60), golden!("owlv2_32_97x60")),
            ((32, 32), golden!("owlv2_32_32x32")),
        ] {
            assert_eq!(want.shape, [3, 32, 32]);
            let (tensor, transform) = preprocess(Family::Owlv2, &cfg, &synth(w, h));
            let diff = max_abs_diff(tensor.as_slice().unwrap(), &want.f32s());
            assert!(diff <= OWLV2_PIPELINE_TOLERANCE, "{w}x{h}: transformers differs by {diff}");
            assert_eq!(transform, Transform::pad_square(w, h));
        }
    }

    #[test]
    fn preprocess_into_writes_a_batch_slot() {
        let mut cfg = PreprocessorConfig::owlv2();
        cfg.size = (32, 32);
        let mut batch = Array4::from_elem((2, 3, 32, 32), f32::NAN);
        preprocess_into(Family::Owlv2, &cfg, &synth(37, 23), batch.index_axis_mut(Axis(0), 1));
        let (single, _) = preprocess(Family::Owlv2, &cfg, &synth(37, 23));
        assert!(batch.index_axis(Axis(0), 0).iter().all(|v| v.is_nan()));
        assert_eq!(batch.index_axis(Axis(0), 1), single.index_axis(Axis(0), 0));
    }

    #[test]
    fn empty_image_gives_grey() {
        let mut cfg = PreprocessorConfig::owlvit();
        cfg.size = (4, 4);
        let (tensor, _) = preprocess(Family::OwlVit, &cfg, &RgbImage::new(0, 3));
        assert!(tensor.iter().all(|v| v.is_finite()));
    }

    /// A frame GStreamer scaled so its longer side is the input size needs no resize: the fast path must give
    /// exactly what the full recipe gives (a 1:1 zoom is the identity).
    #[test]
    fn scaled_frame_matches_full_recipe_when_no_resize_is_needed() {
        for family in [Family::OwlVit, Family::Owlv2] {
            let mut cfg =
                if family == Family::Owlv2 { PreprocessorConfig::owlv2() } else { PreprocessorConfig::owlvit() };
            cfg.size = (32, 32);
            let (w, h) = if family == Family::Owlv2 { (32, 20) } else { (32, 32) };
            let img = synth(w, h);
            // A padded stride, as video buffers often have.
            let stride = w as usize * 3 + 5;
            let mut rgb = vec![0xAAu8; stride * h as usize];
            for (y, row) in img.as_raw().chunks_exact(w as usize * 3).enumerate() {
                rgb[y * stride..y * stride + row.len()].copy_from_slice(row);
            }
            let mut fast = Array3::zeros((3, 32, 32));
            tensor_from_scaled_rgb(family, &cfg, &rgb, w, h, stride, fast.view_mut()).unwrap();
            let (full, _) = preprocess(family, &cfg, &img);
            assert_eq!(fast, full.index_axis(Axis(0), 0), "{family:?}");
        }
    }

    #[test]
    fn scaled_frame_of_wrong_size_is_an_error() {
        let mut cfg = PreprocessorConfig::owlv2();
        cfg.size = (32, 32);
        let mut out = Array3::zeros((3, 32, 32));
        let rgb = vec![0u8; 30 * 20 * 3];
        let err = tensor_from_scaled_rgb(Family::Owlv2, &cfg, &rgb, 30, 20, 90, out.view_mut()).unwrap_err();
        assert!(err.to_string().contains("30x20"), "{err}");
        let err = tensor_from_scaled_rgb(Family::Owlv2, &cfg, &rgb[..100], 32, 20, 96, out.view_mut()).unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
    }

    #[test]
    fn hub_configs_parse_with_defaults() {
        // google/owlvit-base-patch32: `size` and `crop_size` as ints, no `rescale_factor`.
        let vit = PreprocessorConfig::from_json(
            r#"{"crop_size": 768, "do_center_crop": true, "do_normalize": true, "do_resize": true,
                "feature_extractor_type": "OwlViTFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "OwlViTProcessor",
                "resample": 3, "size": 768}"#,
        )
        .unwrap();
        assert_eq!(vit, PreprocessorConfig::owlvit());
        vit.check(Family::OwlVit).unwrap();

        // google/owlv2-base-patch16-ensemble.
        let v2 = PreprocessorConfig::from_json(
            r#"{"do_normalize": true, "do_pad": true, "do_rescale": true, "do_resize": true,
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "Owlv2ImageProcessor",
                "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "Owlv2Processor",
                "resample": 2, "rescale_factor": 0.00392156862745098, "size": {"height": 960, "width": 960}}"#,
        )
        .unwrap();
        assert_eq!(v2, PreprocessorConfig { resample: 2, ..PreprocessorConfig::owlv2() });
        v2.check(Family::Owlv2).unwrap();
        assert!(matches!(v2.check(Family::OwlVit), Err(PreprocessError::FamilyMismatch { .. })));

        let defaults = PreprocessorConfig::from_json(r#"{"image_processor_type": "Owlv2ImageProcessor"}"#).unwrap();
        assert_eq!(defaults, PreprocessorConfig::owlv2());
        // Nothing named: the model's family gives the defaults.
        let unnamed = PreprocessorConfig::from_json_for(Family::Owlv2, "{}").unwrap();
        assert_eq!(unnamed, PreprocessorConfig { family: None, ..PreprocessorConfig::owlv2() });
        assert!(matches!(
            PreprocessorConfig::from_json_for(Family::OwlVit, r#"{"image_processor_type": "Owlv2ImageProcessor"}"#),
            Err(PreprocessError::FamilyMismatch { config: Family::Owlv2, model: Family::OwlVit })
        ));
        let one_mean = PreprocessorConfig::from_json(r#"{"size": 16, "image_mean": 0.5, "do_pad": false}"#).unwrap();
        assert_eq!(
            (one_mean.size, one_mean.image_mean, one_mean.do_pad, one_mean.family),
            ((16, 16), [0.5; 3], false, None)
        );
    }

    #[test]
    fn unsupported_configs_are_refused() {
        for (json, field) in [
            (r#"{"size": 768, "do_center_crop": true, "crop_size": 700}"#, "crop_size"),
            (r#"{"size": {"shortest_edge": 768}}"#, "size"),
            (r#"{"size": 768, "do_resize": false}"#, "do_resize"),
            (r#"{"size": 768, "image_std": [0.2, 0.0, 0.2]}"#, "image_std"),
            (r#"{"size": 768, "image_mean": [0.2, 0.2]}"#, "image_mean"),
            (r#"{"do_normalize": true}"#, "size"),
        ] {
            match PreprocessorConfig::from_json(json) {
                Err(PreprocessError::Config { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        let cfg = PreprocessorConfig { resample: 2, ..PreprocessorConfig::owlvit() };
        assert!(cfg.check(Family::OwlVit).is_err());
        let cfg = PreprocessorConfig { do_rescale: false, ..PreprocessorConfig::owlv2() };
        assert!(cfg.check(Family::Owlv2).is_err());
    }
}
