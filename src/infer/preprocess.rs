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
use ndarray::{Array3, Array4, ArrayView3, ArrayViewMut1, ArrayViewMut3, Axis, s};
use serde::Deserialize;
use thiserror::Error;

use crate::geom::Transform;

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
}

/// Pillow's `Image.Resampling.BICUBIC`, the only filter OWL-ViT checkpoints use.
pub const PIL_BICUBIC: u32 = 3;

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`. Kept as f64 and rounded to f32 the way numpy does it
/// (decimal to f64 to f32); for arbitrary decimals that can differ from rounding the decimal straight to f32.
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The grey `Owlv2ImageProcessor.pad` fills with (`constant_values=0.5`, after rescaling to [0, 1]).
const OWLV2_PAD_VALUE: f32 = 0.5;

/// The parts of `preprocessor_config.json` that preprocessing uses, with transformers' defaults.
///
/// Unknown fields are ignored: the Hub files carry many (`processor_class`, `feature_extractor_type`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// The family named by `image_processor_type` (or the older `feature_extractor_type`); `None` when neither is
    /// set or names another processor.
    pub family: Option<Family>,
    /// Model input `(height, width)` in pixels (`size`, an int or `{"height", "width"}`).
    /// Default: 768 x 768 for OWL-ViT, 960 x 960 for OWLv2.
    pub size: (u32, u32),
    /// `image_mean`, per RGB channel. Default: OpenAI CLIP's mean.
    pub image_mean: [f32; 3],
    /// `image_std`, per RGB channel. Default: OpenAI CLIP's standard deviation.
    pub image_std: [f32; 3],
    /// `do_rescale`. Default: true.
    pub do_rescale: bool,
    /// `rescale_factor`. Default: 1/255. Kept as f64 because transformers multiplies in f64 and only then rounds
    /// to f32; an f32 factor changes some pixels by one ulp.
    pub rescale_factor: f64,
    /// `do_normalize`. Default: true.
    pub do_normalize: bool,
    /// OWLv2 `do_pad`: pad bottom and right to a square before resizing. Default: true. When false the image is
    /// stretched, as transformers does.
    pub do_pad: bool,
    /// Pillow filter for OWL-ViT's resize (`resample`). Default: 3 (bicubic), the only one supported.
    /// OWLv2 ignores it, as transformers does (its configs say 2).
    pub resample: u32,
}

/// `size` / `crop_size`: transformers accepts an int (a square) or a dict.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Square(u32),
    Dict { height: Option<u32>, width: Option<u32>, shortest_edge: Option<u32> },
}

/// `image_mean` / `image_std`: a list per channel, or one float for all.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPerChannel {
    One(f64),
    List(Vec<f64>),
}

#[derive(Deserialize)]
struct RawConfig {
    image_processor_type: Option<String>,
    feature_extractor_type: Option<String>,
    size: Option<RawSize>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    crop_size: Option<RawSize>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    do_pad: Option<bool>,
    image_mean: Option<RawPerChannel>,
    image_std: Option<RawPerChannel>,
    resample: Option<u32>,
}

impl RawSize {
    /// `(height, width)`, as `get_size_dict(size, default_to_square=True)` reads it.
    fn height_width(&self, field: &'static str) -> Result<(u32, u32), PreprocessError> {
        let (h, w) = match *self {
            RawSize::Square(s) => (s, s),
            RawSize::Dict { height: Some(h), width: Some(w), .. } => (h, w),
            RawSize::Dict { shortest_edge: Some(_), .. } => {
                return Err(PreprocessError::Config {
                    field,
                    problem: "is a `shortest_edge`; OWL-ViT and OWLv2 need `height` and `width`".into(),
                });
            }
            RawSize::Dict { .. } => {
                return Err(PreprocessError::Config { field, problem: "needs `height` and `width`".into() });
            }
        };
        if h == 0 || w == 0 {
            return Err(PreprocessError::Config { field, problem: format!("is {h}x{w}; it must not be empty") });
        }
        Ok((h, w))
    }
}

impl RawPerChannel {
    fn per_channel(&self, field: &'static str) -> Result<[f32; 3], PreprocessError> {
        // numpy turns the Python floats (f64) into `np.array(mean, dtype=float32)`: round from f64.
        match self {
            RawPerChannel::One(v) => Ok([*v as f32; 3]),
            RawPerChannel::List(v) if v.len() == 3 => Ok([v[0] as f32, v[1] as f32, v[2] as f32]),
            RawPerChannel::List(v) => Err(PreprocessError::Config {
                field,
                problem: format!("has {} values; RGB needs 3 (or a single number)", v.len()),
            }),
        }
    }
}

impl PreprocessorConfig {
    /// transformers' `OwlViTImageProcessor()` defaults.
    pub fn owlvit() -> Self {
        Self::defaults(Some(Family::OwlVit))
    }

    /// transformers' `Owlv2ImageProcessor()` defaults.
    pub fn owlv2() -> Self {
        Self::defaults(Some(Family::Owlv2))
    }

    fn defaults(family: Option<Family>) -> Self {
        let side = if family == Some(Family::Owlv2) { 960 } else { 768 };
        PreprocessorConfig {
            family,
            size: (side, side),
            image_mean: OPENAI_CLIP_MEAN.map(|v| v as f32),
            image_std: OPENAI_CLIP_STD.map(|v| v as f32),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            do_pad: true,
            resample: PIL_BICUBIC,
        }
    }

    /// Parses `preprocessor_config.json`; missing fields take transformers' defaults for the family it names.
    ///
    /// Rejects what this module cannot reproduce: `do_resize: false`, a centre crop to another size than `size`,
    /// `size` as `shortest_edge`, and a zero `image_std`. A config that names no family must give `size`.
    pub fn from_json(text: &str) -> Result<Self, PreprocessError> {
        Self::parse(text, None)
    }

    /// [`from_json`](Self::from_json) for a model of `family` (from its `config.json`): defaults are that family's
    /// when the config names none, and the result has passed [`check`](Self::check).
    pub fn from_json_for(family: Family, text: &str) -> Result<Self, PreprocessError> {
        let cfg = Self::parse(text, Some(family))?;
        cfg.check(family)?;
        Ok(cfg)
    }

    fn parse(text: &str, model_family: Option<Family>) -> Result<Self, PreprocessError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let type_name = raw.image_processor_type.as_deref().or(raw.feature_extractor_type.as_deref());
        let family = type_name.and_then(|t| {
            let t = t.to_ascii_lowercase();
            if t.starts_with("owlv2") {
                Some(Family::Owlv2)
            } else if t.starts_with("owlvit") {
                Some(Family::OwlVit)
            } else {
                None
            }
        });
        let mut cfg = Self::defaults(family.or(model_family));
        cfg.family = family;
        match &raw.size {
            Some(size) => cfg.size = size.height_width("size")?,
            // The two families default to different sizes; guessing would silently feed the wrong input size.
            None if family.or(model_family).is_none() => {
                return Err(PreprocessError::Config {
                    field: "size",
                    problem: "is missing and `image_processor_type` names neither OWL-ViT nor OWLv2, so there is \
                              no default; add `\"size\": {\"height\": 768, \"width\": 768}` (OWL-ViT) or 960 (OWLv2)"
                        .into(),
                });
            }
            None => {}
        }
        if raw.do_resize == Some(false) {
            return Err(PreprocessError::Config {
                field: "do_resize",
                problem: "is false; the model needs a fixed-size input, so resizing cannot be skipped".into(),
            });
        }
        // OWL-ViT checkpoints centre-crop to the size they just resized to, which changes nothing. Any other crop
        // would also change how boxes map back, so it is refused rather than ignored.
        if raw.do_center_crop == Some(true) {
            let crop = match &raw.crop_size {
                Some(c) => c.height_width("crop_size")?,
                None => (768, 768),
            };
            if crop != cfg.size {
                return Err(PreprocessError::Config {
                    field: "crop_size",
                    problem: format!(
                        "is {}x{} but `size` is {}x{}; only a centre crop to the resized size (a no-op) is supported",
                        crop.1, crop.0, cfg.size.1, cfg.size.0
                    ),
                });
            }
        }
        if let Some(v) = raw.do_rescale {
            cfg.do_rescale = v;
        }
        if let Some(v) = raw.rescale_factor {
            cfg.rescale_factor = v;
        }
        if let Some(v) = raw.do_normalize {
            cfg.do_normalize = v;
        }
        if let Some(v) = raw.do_pad {
            cfg.do_pad = v;
        }
        if let Some(v) = &raw.image_mean {
            cfg.image_mean = v.per_channel("image_mean")?;
        }
        if let Some(v) = &raw.image_std {
            cfg.image_std = v.per_channel("image_std")?;
        }
        if cfg.image_std.contains(&0.0) {
            return Err(PreprocessError::Config { field: "image_std", problem: "contains 0".into() });
        }
        if let Some(v) = raw.resample {
            cfg.resample = v;
        }
        Ok(cfg)
    }

    /// Checks that this config can preprocess for `family`: the family it names (if any) matches, OWL-ViT resizes
    /// with bicubic, and OWLv2 rescales (transformers would pad and blur raw `u8` otherwise, which nobody ships).
    pub fn check(&self, family: Family) -> Result<(), PreprocessError> {
        if let Some(config) = self.family
            && config != family
        {
            return Err(PreprocessError::FamilyMismatch { config, model: family });
        }
        if family == Family::OwlVit && self.resample != PIL_BICUBIC {
            return Err(PreprocessError::Config {
                field: "resample",
                problem: format!("is {}; only 3 (bicubic, what OWL-ViT checkpoints use) is supported", self.resample),
            });
        }
        if family == Family::Owlv2 && !self.do_rescale {
            return Err(PreprocessError::Config {
                field: "do_rescale",
                problem: "is false; OWLv2 preprocessing is only supported on images rescaled to [0, 1]".into(),
            });
        }
        Ok(())
    }

    /// The model input as `(height, width)` in `usize`.
    pub fn input_hw(&self) -> (usize, usize) {
        (self.size.0 as usize, self.size.1 as usize)
    }

    /// What `rescale` turns a `u8` into: `image.astype(float64) * scale`, then `astype(float32)`.
    fn rescale_lut(&self) -> [f32; 256] {
        std::array::from_fn(|v| if self.do_rescale { (v as f64 * self.rescale_factor) as f32 } else { v as f32 })
    }

    /// `normalize`: `(image - mean) / std`, all in f32 (mean and std are cast to the image's dtype first).
    fn normalize(&self, c: usize, x: f32) -> f32 {
        if self.do_normalize { (x - self.image_mean[c]) / self.image_std[c] } else { x }
    }

    /// For each channel, the final tensor value of every `u8`, for recipes where nothing happens between
    /// rescaling and normalising.
    fn tensor_lut(&self) -> [[f32; 256]; 3] {
        let rescaled = self.rescale_lut();
        std::array::from_fn(|c| std::array::from_fn(|v| self.normalize(c, rescaled[v])))
    }
}

/// Preprocesses `img` into `out`, the `[3, height, width]` slot of a batch (so batching needs no copy), and returns
/// how boxes map back to `img`: [`Transform::stretch`] for OWL-ViT, [`Transform::pad_square`] for OWLv2 (or a
/// stretch when `do_pad` is false).
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

// ---------------------------------------------------------------------------------------------------------------
// Pillow bicubic (libImaging/Resample.c, 8 bits per channel)
// ---------------------------------------------------------------------------------------------------------------

/// Pillow's fixed-point precision for 8-bit images: 32 bits less 8 for the value and 2 for overshoot and sign.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel, with a = -0.5 (`bicubic_filter` in Resample.c), same operation order.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of one resampling pass (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct PilCoeffs {
    /// Weights per output pixel, `ksize` slots each (only the first `bounds[i].1` are used).
    k: Vec<i32>,
    ksize: usize,
    /// First input pixel and number of input pixels per output pixel.
    bounds: Vec<(usize, usize)>,
}

impl PilCoeffs {
    fn new(in_size: usize, out_size: usize) -> Self {
        // Pillow takes the span from a float box `(0, 0, w, h)`: `(double)(in1 - in0) / outSize`.
        let scale = (in_size as f32) as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        // Widening the kernel by the scale when downscaling is what makes Pillow anti-alias.
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut k = vec![0i32; out_size * ksize];
        let mut bounds = Vec::with_capacity(out_size);
        let mut w = vec![0f64; ksize];
        for (xx, kk) in k.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, wx) in w[..n].iter_mut().enumerate() {
                *wx = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            for (kx, &wx) in kk.iter_mut().zip(&w[..n]) {
                let wx = if ww != 0.0 { wx / ww } else { wx };
                let fixed = wx * (1u32 << PRECISION_BITS) as f64;
                *kx = if wx < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
            }
            bounds.push((xmin as usize, n));
        }
        PilCoeffs { k, ksize, bounds }
    }

    fn weights(&self, i: usize) -> (usize, &[i32]) {
        let (first, n) = self.bounds[i];
        (first, &self.k[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's `clip8`: drop the fraction (the sum started at one half, so this rounds) and saturate.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const PIL_HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` on 8-bit RGB, bit-exact with Pillow 13 (as transformers
/// calls it, with no `box` and no `reducing_gap`).
///
/// Two passes, each rounded and clipped to 8 bits, so their order changes the result. Pillow 13 runs the vertical
/// pass first when the height shrinks by more than twice as many pixels as the width does, and the horizontal pass
/// first otherwise; Pillow 12 and older always ran the horizontal pass first, so with them tall images differ by a
/// level or two. A pass whose size does not change is skipped. Within a pass the sums are integers, so their order
/// does not matter. An empty source gives a black image; an empty target an empty one.
pub fn resize_bicubic_pil(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return src.clone();
    }
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(width, height);
    }
    let raw: &[u8] = src.as_raw();
    let out = if out_w == in_w {
        pil_vertical(raw, in_w * 3, 0, &PilCoeffs::new(in_h, out_h))
    } else if out_h == in_h {
        pil_horizontal(raw, in_w, out_w)
    } else if in_h > out_h && (in_h - out_h) as i64 > 2 * (in_w as i64 - out_w as i64) {
        // Pillow 13's `ImagingResampleInner`: vertical first, over whole rows.
        let rows = pil_vertical(raw, in_w * 3, 0, &PilCoeffs::new(in_h, out_h));
        pil_horizontal(&rows, in_w, out_w)
    } else {
        // Horizontal first, and only over the rows the vertical pass reads.
        let vert = PilCoeffs::new(in_h, out_h);
        let first_row = vert.bounds[0].0;
        let last_row = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;
        let rows = pil_horizontal(&raw[first_row * in_w * 3..last_row * in_w * 3], in_w, out_w);
        pil_vertical(&rows, out_w * 3, first_row, &vert)
    };
    RgbImage::from_raw(width, height, out).expect("buffer sized for the output image")
}

/// Horizontal pass over whole rows of packed RGB.
///
/// (Running it as a vertical pass over the transposed image vectorises the sums; that was tried, and the two
/// transposes made a 4000 x 3000 photo twice as slow for a few milliseconds saved on small ones.)
fn pil_horizontal(rows: &[u8], in_w: usize, out_w: usize) -> Vec<u8> {
    let coeffs = PilCoeffs::new(in_w, out_w);
    let mut out = vec![0u8; rows.len() / (in_w * 3) * out_w * 3];
    for (src, dst) in rows.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (first, k) = coeffs.weights(xx);
            let taps = &src[first * 3..(first + k.len()) * 3];
            let (mut s0, mut s1, mut s2) = (PIL_HALF, PIL_HALF, PIL_HALF);
            for (p, &kx) in taps.chunks_exact(3).zip(k) {
                s0 += p[0] as i32 * kx;
                s1 += p[1] as i32 * kx;
                s2 += p[2] as i32 * kx;
            }
            px.copy_from_slice(&[clip8(s0), clip8(s1), clip8(s2)]);
        }
    }
    out
}

/// Vertical pass; `rows` starts at source row `row_offset`.
fn pil_vertical(rows: &[u8], row_len: usize, row_offset: usize, coeffs: &PilCoeffs) -> Vec<u8> {
    let out_h = coeffs.bounds.len();
    let mut out = vec![0u8; out_h * row_len];
    // Accumulating a whole row per tap keeps the inner loop contiguous (it vectorises).
    let mut acc = vec![0i32; row_len];
    for (yy, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let (first, k) = coeffs.weights(yy);
        acc.fill(PIL_HALF);
        for (y, &ky) in k.iter().enumerate() {
            let start = (first + y - row_offset) * row_len;
            accumulate_scaled(&mut acc, &rows[start..start + row_len], ky);
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// `acc[i] += row[i] * k`, with AVX2 where the CPU has it (integer arithmetic: identical either way).
fn accumulate_scaled(acc: &mut [i32], row: &[u8], k: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { accumulate_scaled_avx2(acc, row, k) };
    }
    accumulate_scaled_portable(acc, row, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_scaled_avx2(acc: &mut [i32], row: &[u8], k: i32) {
    accumulate_scaled_portable(acc, row, k)
}

#[inline(always)]
fn accumulate_scaled_portable(acc: &mut [i32], row: &[u8], k: i32) {
    for (a, &p) in acc.iter_mut().zip(row) {
        *a += p as i32 * k;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// OWLv2 resize: Gaussian anti-aliasing (scipy.ndimage.gaussian_filter) + ndimage.zoom(order=1), as transformers
// copies it from skimage.transform.resize.
// ---------------------------------------------------------------------------------------------------------------

/// `gaussian_filter`'s default `truncate`: the kernel radius is `int(4 * sigma + 0.5)`.
const GAUSSIAN_TRUNCATE: f64 = 4.0;

/// numpy's pairwise summation (`np.sum` of a contiguous f64 array), which the Gaussian kernel is normalised by.
fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &v| s + v)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let blocks = n - n % 8;
        for chunk in a[8..blocks].chunks_exact(8) {
            for (r, &v) in r.iter_mut().zip(chunk) {
                *r += v;
            }
        }
        let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[blocks..].iter().fold(res, |s, &v| s + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// The centre and one side of scipy's `_gaussian_kernel1d(sigma, 0, radius)` (it is symmetric to the bit).
/// `[1.0]` (the identity) when `gaussian_filter` skips the axis (sigma <= 1e-15).
fn gaussian_half_kernel(sigma: f64) -> Vec<f64> {
    if sigma <= 1e-15 {
        return vec![1.0];
    }
    // Python's int() truncates.
    let radius = (GAUSSIAN_TRUNCATE * sigma + 0.5) as i64;
    let sigma2 = sigma * sigma;
    let phi: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / sigma2 * (x * x) as f64).exp()).collect();
    let sum = numpy_sum(&phi);
    phi[radius as usize..].iter().map(|p| p / sum).collect()
}

/// Index `i` reflected into `0..len` the way ndimage's `mirror` mode does (`d c b | a b c d | c b a`), also when
/// it lies more than one length away.
fn mirror_index(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let (len, s2) = (len as isize, 2 * len as isize - 2);
    let mut i = i;
    if i < 0 {
        i += s2 * (-i / s2);
        i = if i <= 1 - len { i + s2 } else { -i };
    } else if i >= len {
        i -= s2 * (i / s2);
        if i >= len {
            i = s2 - i;
        }
    }
    i as usize
}

/// ndimage's `map_coordinate` for `mirror` mode.
fn mirror_coordinate(x: f64, len: usize) -> f64 {
    if len <= 1 {
        return if x < 0.0 || x > len as f64 - 1.0 { 0.0 } else { x };
    }
    let s2 = (2 * len - 2) as f64;
    if x < 0.0 {
        let x = s2 * ((-x / s2) as i64 as f64) + x;
        if x <= 1.0 - len as f64 { x + s2 } else { -x }
    } else if x > len as f64 - 1.0 {
        let x = x - s2 * ((x / s2) as i64 as f64);
        if x >= len as f64 { s2 - x } else { x }
    } else {
        x
    }
}

/// One output sample of `ndimage.zoom(order=1, mode="mirror", grid_mode=True)` along one axis.
#[derive(Debug, Clone, Copy)]
struct LinearTap {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
}

/// The taps of every output index along an axis of `in_len` zoomed to `out_len`.
fn zoom_taps(in_len: usize, out_len: usize) -> Vec<LinearTap> {
    // `zoom` recomputes the factor as in/out from the shapes it was given.
    let zoom = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|k| {
            // grid_mode: pixel edges align, so sample at the centre of the output pixel.
            let cc = mirror_coordinate((k as f64 + 0.5) * zoom - 0.5, in_len);
            let start = cc.floor();
            // scipy's `get_spline_interpolation_weights`: the last weight is 1 minus the others, not `x`.
            let w0 = 1.0 - (cc - start);
            let w1 = 1.0 - w0;
            let start = start as isize;
            LinearTap { i0: mirror_index(start, in_len), i1: mirror_index(start + 1, in_len), w0, w1 }
        })
        .collect()
}

/// `Owlv2ImageProcessor.resize` on an HWC f32 image in [0, 1] (already padded), to `out_h` x `out_w`.
///
/// The arithmetic, its order and the f32 roundings between passes are scipy's, so the result is scipy's to the bit;
/// only `exp` (the Gaussian weights) comes from the platform's libm, and a libm that rounds differently could move
/// a value by an ulp. Any number of channels; an empty input gives zeros.
pub fn resize_owlv2(src: ArrayView3<f32>, out_h: usize, out_w: usize) -> Array3<f32> {
    let (in_h, in_w, ch) = src.dim();
    let mut out = Array3::zeros((out_h, out_w, ch));
    if in_h == 0 || in_w == 0 || ch == 0 {
        return out;
    }
    // `_clip_warp_output` clips to the input's range; f32::min/max skip NaN like its nanmin/nanmax fallback.
    let (lo, hi) = src.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let fill_row = |y: usize, row: &mut [f32]| {
        for (o, &v) in row.iter_mut().zip(src.index_axis(Axis(0), y).iter()) {
            *o = v;
        }
    };
    resize_owlv2_rows(in_h, in_w, ch, fill_row, out_h, out_w, |oy, planes| {
        for (c, plane) in planes.chunks_exact(out_w).enumerate() {
            for (o, &v) in out.slice_mut(s![oy, .., c]).iter_mut().zip(plane) {
                *o = v.max(lo).min(hi);
            }
        }
    });
    out
}

/// Cache of rows computed on demand, each keyed by its row index; `slots` rows, slot `row % slots`.
///
/// Callers ask for rows in (nearly) increasing order and never need more than `slots` consecutive rows at once,
/// so each row is computed about once and nothing the size of the whole image is allocated.
struct RowRing {
    data: Vec<f32>,
    keys: Vec<usize>,
    row_len: usize,
}

impl RowRing {
    fn new(slots: usize, row_len: usize) -> Self {
        RowRing { data: vec![0.0; slots * row_len], keys: vec![usize::MAX; slots], row_len }
    }

    /// Makes sure `row` is present, computing it with `fill` if not.
    fn load(&mut self, row: usize, fill: impl FnOnce(&mut [f32])) {
        let slot = row % self.keys.len();
        if self.keys[slot] != row {
            fill(&mut self.data[slot * self.row_len..(slot + 1) * self.row_len]);
            self.keys[slot] = row;
        }
    }

    fn get(&self, row: usize) -> &[f32] {
        let slot = row % self.keys.len();
        debug_assert_eq!(self.keys[slot], row);
        &self.data[slot * self.row_len..(slot + 1) * self.row_len]
    }
}

/// The OWLv2 resize over a row source: `fill_row(y, row)` writes input row `y` (`in_w * ch` values, HWC) and
/// `emit(oy, planes)` receives each output row before clipping, one plane per channel (`ch * out_w` values).
///
/// scipy blurs along axis 0 and stores f32, then along axis 1 and stores f32, then zooms with all four taps summed
/// in f64 and stores f32. Here the same values are computed lazily: only the input rows the zoom reads are
/// blurred, which is what makes downscaling a large photo cheap. The result is the same to the bit.
fn resize_owlv2_rows(
    in_h: usize,
    in_w: usize,
    ch: usize,
    mut fill_row: impl FnMut(usize, &mut [f32]),
    out_h: usize,
    out_w: usize,
    mut emit: impl FnMut(usize, &[f32]),
) {
    if out_h == 0 || out_w == 0 {
        return;
    }
    let row_len = in_w * ch;
    // skimage's anti-aliasing: sigma = max(0, (in / out - 1) / 2) per axis (0 on the channel axis). A radius-0
    // kernel is exactly [1.0], the identity, and is skipped.
    let sigma = |i: usize, o: usize| ((i as f64 / o as f64 - 1.0) / 2.0).max(0.0);
    let ky = gaussian_half_kernel(sigma(in_h, out_h));
    let kx = gaussian_half_kernel(sigma(in_w, out_w));
    let (ry, rx) = (ky.len() - 1, kx.len() - 1);
    let ty = zoom_taps(in_h, out_h);
    let tx = zoom_taps(in_w, out_w);
    let wx0: Vec<f64> = tx.iter().map(|t| t.w0).collect();
    let wx1: Vec<f64> = tx.iter().map(|t| t.w1).collect();

    // Source rows for the axis-0 blur: a blurred row needs the 2 * ry + 1 rows around it (mirrored).
    let mut src_rows = RowRing::new((2 * ry + 1).min(in_h), row_len);
    // Input rows blurred along both axes and gathered for the zoom: per channel, the value at each output column's
    // first tap, then at its second. The zoom reads two such rows per output row.
    let mut gathered = RowRing::new(2.min(in_h), 2 * ch * out_w);
    let mut window = vec![0usize; 2 * ry + 1];
    // One axis-0-blurred row with rx mirrored pixels on each side, as scipy extends a line before correlating it.
    let mut ext = vec![0f32; (in_w + 2 * rx) * ch];
    let mut blurred = vec![0f32; row_len];
    let mut line = vec![0f32; ch * out_w];

    let mut prepare_row = |r: usize, dst: &mut [f32]| {
        for (i, slot) in window.iter_mut().enumerate() {
            *slot = mirror_index(r as isize + i as isize - ry as isize, in_h);
            src_rows.load(*slot, |row| fill_row(*slot, row));
        }
        let middle = rx * ch..rx * ch + row_len;
        if ry == 0 {
            ext[middle.clone()].copy_from_slice(src_rows.get(r));
        } else {
            let rows: Vec<&[f32]> = window.iter().map(|&y| src_rows.get(y)).collect();
            correlate_symmetric(&mut ext[middle.clone()], &ky, &rows);
        }
        let row: &[f32] = if rx == 0 {
            &ext[middle]
        } else {
            for p in 1..=rx {
                let left = mirror_index(-(p as isize), in_w);
                let right = mirror_index((in_w - 1 + p) as isize, in_w);
                ext.copy_within((rx + left) * ch..(rx + left + 1) * ch, (rx - p) * ch);
                ext.copy_within((rx + right) * ch..(rx + right + 1) * ch, (rx + in_w - 1 + p) * ch);
            }
            // Every column is computed: contiguous shifted slices vectorise, a gather of the needed ones would not.
            let shifted: Vec<&[f32]> = (0..=2 * rx).map(|j| &ext[j * ch..j * ch + row_len]).collect();
            correlate_symmetric(&mut blurred, &kx, &shifted);
            &blurred
        };
        let (first, second) = dst.split_at_mut(ch * out_w);
        for c in 0..ch {
            let plane = c * out_w..(c + 1) * out_w;
            for ((f, s), t) in first[plane.clone()].iter_mut().zip(&mut second[plane]).zip(&tx) {
                *f = row[t.i0 * ch + c];
                *s = row[t.i1 * ch + c];
            }
        }
    };

    for (oy, t) in ty.iter().enumerate() {
        gathered.load(t.i0, |dst| prepare_row(t.i0, dst));
        gathered.load(t.i1, |dst| prepare_row(t.i1, dst));
        let (g0, g1) = (gathered.get(t.i0), gathered.get(t.i1));
        for (c, out) in line.chunks_exact_mut(out_w).enumerate() {
            let (first0, second0) = g0.split_at(ch * out_w);
            let (first1, second1) = g1.split_at(ch * out_w);
            let plane = c * out_w..(c + 1) * out_w;
            let row0 = (&first0[plane.clone()], &second0[plane.clone()]);
            let row1 = (&first1[plane.clone()], &second1[plane]);
            zoom_line(out, row0, row1, (t.w0, t.w1), (&wx0, &wx1));
        }
        emit(oy, &line);
    }
}

/// One output line of `NI_ZoomShift` (order 1): `row0` and `row1` are the two input rows' values at each output
/// column's two taps. scipy adds the four taps in this order, each as `value * wy * wx` in f64 (the channel axis's
/// own weight is 1, and its neighbour's weight 0 adds nothing). AVX2 where available, as in [`correlate_symmetric`].
fn zoom_line(out: &mut [f32], row0: (&[f32], &[f32]), row1: (&[f32], &[f32]), wy: (f64, f64), wx: (&[f64], &[f64])) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { zoom_line_avx2(out, row0, row1, wy, wx) };
    }
    zoom_line_portable(out, row0, row1, wy, wx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn zoom_line_avx2(
    out: &mut [f32],
    row0: (&[f32], &[f32]),
    row1: (&[f32], &[f32]),
    wy: (f64, f64),
    wx: (&[f64], &[f64]),
) {
    zoom_line_portable(out, row0, row1, wy, wx)
}

#[inline(always)]
fn zoom_line_portable(
    out: &mut [f32],
    (a, b): (&[f32], &[f32]),
    (c, d): (&[f32], &[f32]),
    (wy0, wy1): (f64, f64),
    (wx0, wx1): (&[f64], &[f64]),
) {
    let n = out.len();
    let (a, b, c, d, wx0, wx1) = (&a[..n], &b[..n], &c[..n], &d[..n], &wx0[..n], &wx1[..n]);
    for i in 0..n {
        let mut v = a[i] as f64 * wy0 * wx0[i];
        v += b[i] as f64 * wy0 * wx1[i];
        v += c[i] as f64 * wy1 * wx0[i];
        v += d[i] as f64 * wy1 * wx1[i];
        out[i] = v as f32;
    }
}

/// One pass of scipy's `correlate1d` with a symmetric kernel (`half[0]` the centre), over whole lines at once,
/// stored as f32 like scipy's output array: `lines[j]` is the input shifted by `j - radius`. Like scipy each value
/// starts from centre * w0 and adds `(left + right) * w[j]` from the outermost `j` inwards, in f64.
///
/// This is most of the time spent downscaling a large photo, so it uses AVX2 where the CPU has it (same
/// operations, 4 lanes instead of SSE2's 2; Rust never fuses multiply-adds, so the results are identical).
fn correlate_symmetric(dst: &mut [f32], half: &[f64], lines: &[&[f32]]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { correlate_symmetric_avx2(dst, half, lines) };
    }
    correlate_symmetric_portable(dst, half, lines)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn correlate_symmetric_avx2(dst: &mut [f32], half: &[f64], lines: &[&[f32]]) {
    correlate_symmetric_portable(dst, half, lines)
}

#[inline(always)]
fn correlate_symmetric_portable(dst: &mut [f32], half: &[f64], lines: &[&[f32]]) {
    // Blocks of 16 values stay in registers across all taps (a running sum per tap in memory is slower).
    const B: usize = 16;
    let n = dst.len();
    let split = n - n % B;
    for (b, out) in dst[..split].chunks_exact_mut(B).enumerate() {
        correlate_block::<B>(out.try_into().expect("block of B"), half, lines, b * B);
    }
    for (i, out) in dst[split..].iter_mut().enumerate() {
        correlate_block::<1>(std::array::from_mut(out), half, lines, split + i);
    }
}

/// `B` outputs of [`correlate_symmetric`] starting at `start`; a fixed size so the loops unroll and vectorise.
#[inline(always)]
fn correlate_block<const B: usize>(out: &mut [f32; B], half: &[f64], lines: &[&[f32]], start: usize) {
    let r = half.len() - 1;
    let at = |j: usize| -> &[f32; B] { lines[j][start..start + B].try_into().expect("block of B") };
    let centre = at(r);
    let mut t = [0f64; B];
    for k in 0..B {
        t[k] = centre[k] as f64 * half[0];
    }
    for j in (1..=r).rev() {
        let (left, right, w) = (at(r - j), at(r + j), half[j]);
        for k in 0..B {
            t[k] += (left[k] as f64 + right[k] as f64) * w;
        }
    }
    for k in 0..B {
        out[k] = t[k] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// The synthetic test image of `tests/golden/preprocess/gen_golden.py`: smooth ramps plus a 0/255
    /// checkerboard in the lower left, where bicubic overshoots and clipping matters.
    fn synth(w: u32, h: u32) -> RgbImage {
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
    struct Npy<'a> {
        shape: Vec<usize>,
        data: &'a [u8],
    }

    fn npy(bytes: &[u8]) -> Npy<'_> {
        assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'fortran_order': False"));
        let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
        let shape = shape.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
        Npy { shape, data: &bytes[10 + header_len..] }
    }

    impl Npy<'_> {
        fn f32s(&self) -> Vec<f32> {
            self.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
    }

    macro_rules! golden {
        ($name:literal) => {
            npy(include_bytes!(concat!("../../tests/golden/preprocess/", $name, ".npy")))
        };
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn pil_bicubic_is_bit_exact() {
        let cases = [
            ((37, 23, 16, 16), golden!("pil_37x23_to_16x16")),
            ((13, 9, 29, 31), golden!("pil_13x9_to_29x31")),
            ((50, 20, 20, 50), golden!("pil_50x20_to_20x50")),
            ((64, 48, 64, 20), golden!("pil_64x48_to_64x20")),
            ((31, 40, 12, 40), golden!("pil_31x40_to_12x40")),
            ((200, 150, 24, 24), golden!("pil_200x150_to_24x24")),
            // Height shrinks by more than twice the width: Pillow 13 runs the vertical pass first.
            ((30, 70, 16, 16), golden!("pil_30x70_to_16x16")),
            ((13, 40, 20, 12), golden!("pil_13x40_to_20x12")),
        ];
        for ((w, h, ow, oh), want) in cases {
            assert_eq!(want.shape, [oh as usize, ow as usize, 3]);
            let got = resize_bicubic_pil(&synth(w, h), ow, oh);
            let max = got.as_raw().iter().zip(want.data).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
            assert_eq!(max, 0, "{w}x{h} -> {ow}x{oh}: Pillow differs by up to {max}");
        }
    }

    #[test]
    fn pil_same_size_is_a_copy() {
        let img = synth(7, 5);
        assert_eq!(resize_bicubic_pil(&img, 7, 5), img);
    }

    /// The rescaled (and, when `pad`, padded) f32 image `Owlv2ImageProcessor.resize` receives.
    fn rescaled(img: &RgbImage, pad: bool) -> Array3<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (ph, pw) = if pad { (h.max(w), h.max(w)) } else { (h, w) };
        let mut a = Array3::from_elem((ph, pw, 3), 0.5f32);
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                a[[y as usize, x as usize, c]] = (p[c] as f64 * (1.0 / 255.0)) as f32;
            }
        }
        a
    }

    /// Measured: 0 (bit-exact). The allowance is for a libm whose `exp` rounds the Gaussian weights differently.
    const OWLV2_RESIZE_TOLERANCE: f32 = 1e-6;

    #[test]
    fn owlv2_resize_matches_scipy() {
        let cases = [
            ((37, 23, true, 16, 16), golden!("v2resize_37x23_pad_to_16x16")),
            ((9, 13, true, 29, 29), golden!("v2resize_9x13_pad_to_29x29")),
            ((97, 60, true, 24, 24), golden!("v2resize_97x60_pad_to_24x24")),
            ((30, 40, false, 24, 16), golden!("v2resize_30x40_to_24x16")),
            ((10, 7, true, 2, 2), golden!("v2resize_10x7_pad_to_2x2")),
            ((5, 5, true, 3, 3), golden!("v2resize_5x5_pad_to_3x3")),
            // A kernel radius (10) beyond the image (6): the mirror wraps more than once.
            ((6, 4, true, 1, 1), golden!("v2resize_6x4_pad_to_1x1")),
        ];
        for ((w, h, pad, ow, oh), want) in cases {
            assert_eq!(want.shape, [oh, ow, 3]);
            let got = resize_owlv2(rescaled(&synth(w, h), pad).view(), oh, ow);
            let diff = max_abs_diff(got.as_slice().unwrap(), &want.f32s());
            assert!(diff <= OWLV2_RESIZE_TOLERANCE, "{w}x{h} -> {ow}x{oh}: scipy differs by {diff}");
        }
    }

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

    #[test]
    fn mirror_matches_ndimage() {
        // d c b | a b c d | c b a, repeating: numpy's `np.pad(np.arange(4), 7, mode="reflect")`.
        let got: Vec<usize> = (-7..11).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, [1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]);
        assert_eq!(mirror_index(5, 1), 0);
        // `ndi.zoom(np.arange(4.0), 2, order=1, mode="mirror", grid_mode=True)`: the ends reflect about the edge
        // pixels' centres.
        let line = [0.0, 1.0, 2.0, 3.0];
        let got: Vec<f64> = zoom_taps(4, 8).iter().map(|t| line[t.i0] * t.w0 + line[t.i1] * t.w1).collect();
        assert_eq!(got, [0.25, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 2.75]);
    }

    #[test]
    fn numpy_sum_is_pairwise() {
        // Sixteen 0.1s: `np.sum` (8 interleaved partial sums) gives 1.6, a sequential sum 1.6000000000000003.
        let a = vec![0.1; 16];
        assert_eq!(numpy_sum(&a), 1.6);
        assert_eq!(a.iter().sum::<f64>(), 1.6000000000000003);
    }
}
