//! The parts of `preprocessor_config.json` that preprocessing uses, with transformers' defaults, and the
//! lookup tables that turn a `u8` into the tensor value exactly as transformers' float steps do.
//!
//! One struct serves both processors: OWL's (`OwlViTImageProcessor`, `Owlv2ImageProcessor`: a fixed square or
//! rectangle) and `GroundingDinoImageProcessor` (a size rule that keeps the aspect ratio, then zero padding to
//! `pad_size` or to the batch; [`ResizeRule`]).

use serde::Deserialize;

pub use crate::geom::ResizeRule;

use super::{Family, PreprocessError};

/// Pillow's `Image.Resampling.BICUBIC`, the only filter OWL-ViT checkpoints use.
pub const PIL_BICUBIC: u32 = 3;
/// Pillow's `Image.Resampling.BILINEAR`, `GroundingDinoImageProcessor`'s default.
pub const PIL_BILINEAR: u32 = 2;

/// transformers' `IMAGENET_DEFAULT_MEAN` / `IMAGENET_DEFAULT_STD`, Grounding DINO's defaults.
const IMAGENET_DEFAULT_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_DEFAULT_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// `GroundingDinoImageProcessor()`'s size: `{"shortest_edge": 800, "longest_edge": 1333}`.
const GDINO_SHORTEST_EDGE: u32 = 800;
const GDINO_LONGEST_EDGE: u32 = 1333;

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`. Kept as f64 and rounded to f32 the way numpy does it
/// (decimal to f64 to f32); for arbitrary decimals that can differ from rounding the decimal straight to f32.
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The grey `Owlv2ImageProcessor.pad` fills with (`constant_values=0.5`, after rescaling to [0, 1]).
pub(super) const OWLV2_PAD_VALUE: f32 = 0.5;

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
    /// OWLv2 ignores it, as transformers does (its configs say 2). Grounding DINO: 2 (bilinear) by default;
    /// 2 and 3 are supported.
    pub resample: u32,
    /// How the image's size is chosen. OWL: always [`ResizeRule::Exact`] (`size`). Grounding DINO: from `size`;
    /// default `{"shortest_edge": 800, "longest_edge": 1333}`.
    pub resize: ResizeRule,
    /// Grounding DINO's `pad_size` `(height, width)`: every image is padded to it. Default `None`: a batch is
    /// padded to its largest image, as transformers pads it.
    pub pad_size: Option<(u32, u32)>,
}

/// `size` / `crop_size`: transformers accepts an int (a square) or a dict.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Square(u32),
    Dict {
        height: Option<u32>,
        width: Option<u32>,
        shortest_edge: Option<u32>,
        longest_edge: Option<u32>,
        max_height: Option<u32>,
        max_width: Option<u32>,
    },
}

/// `pad_size`: `{"height", "width"}`.
#[derive(Deserialize)]
struct RawPadSize {
    height: u32,
    width: u32,
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
    pad_size: Option<RawPadSize>,
    /// Deprecated in transformers but still read by `GroundingDinoImageProcessor.from_dict`: the longest edge.
    max_size: Option<u32>,
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
            RawSize::Dict { max_height: Some(_), .. } => {
                return Err(PreprocessError::Config {
                    field,
                    problem: "is a `max_height`/`max_width`; OWL-ViT and OWLv2 need `height` and `width`".into(),
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

    /// transformers' `GroundingDinoImageProcessor()` defaults (Grounding DINO and MM-Grounding-DINO alike).
    pub fn grounding_dino() -> Self {
        Self::defaults(Some(Family::GroundingDino))
    }

    fn defaults(family: Option<Family>) -> Self {
        if family.is_some_and(Family::is_grounding_dino) {
            let resize =
                ResizeRule::ShortestEdge { shortest_edge: GDINO_SHORTEST_EDGE, longest_edge: GDINO_LONGEST_EDGE };
            return PreprocessorConfig {
                family,
                size: resize.bound((0, 0)),
                image_mean: IMAGENET_DEFAULT_MEAN.map(|v| v as f32),
                image_std: IMAGENET_DEFAULT_STD.map(|v| v as f32),
                do_rescale: true,
                rescale_factor: 1.0 / 255.0,
                do_normalize: true,
                do_pad: true,
                resample: PIL_BILINEAR,
                resize,
                pad_size: None,
            };
        }
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
            resize: ResizeRule::Exact,
            pad_size: None,
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
            } else if t.starts_with("groundingdino") {
                // MM-Grounding-DINO and LLMDet ship `GroundingDinoImageProcessor` too.
                Some(Family::GroundingDino)
            } else {
                None
            }
        });
        let mut cfg = Self::defaults(family.or(model_family));
        cfg.family = family;
        if family.or(model_family).is_some_and(Family::is_grounding_dino) {
            cfg.parse_grounding_dino_size(&raw)?;
        } else if raw.pad_size.is_some() {
            return Err(PreprocessError::Config {
                field: "pad_size",
                problem: "is a Grounding DINO setting; OWL-ViT and OWLv2 do not pad that way".into(),
            });
        }
        match &raw.size {
            _ if cfg.resize != ResizeRule::Exact => {}
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

    /// `size`, `max_size` and `pad_size` as `GroundingDinoImageProcessor.__init__` and `resize` read them.
    fn parse_grounding_dino_size(&mut self, raw: &RawConfig) -> Result<(), PreprocessError> {
        let bad = |problem: String| Err(PreprocessError::Config { field: "size", problem });
        let positive = |v: u32, what: &str| {
            if v == 0 {
                Err(PreprocessError::Config { field: "size", problem: format!("has {what} 0") })
            } else {
                Ok(v)
            }
        };
        match &raw.size {
            None => {}
            // `__init__` turns an int into a shortest edge, with 1333 (or `max_size`) as the longest.
            Some(RawSize::Square(s)) => {
                self.resize = ResizeRule::ShortestEdge {
                    shortest_edge: positive(*s, "shortest edge")?,
                    longest_edge: positive(raw.max_size.unwrap_or(GDINO_LONGEST_EDGE), "longest edge")?,
                };
            }
            Some(RawSize::Dict { shortest_edge: Some(s), longest_edge: Some(l), .. }) => {
                self.resize = ResizeRule::ShortestEdge {
                    shortest_edge: positive(*s, "shortest_edge")?,
                    longest_edge: positive(*l, "longest_edge")?,
                };
            }
            Some(RawSize::Dict { max_height: Some(h), max_width: Some(w), .. }) => {
                self.resize = ResizeRule::MaxHeightWidth {
                    max_height: positive(*h, "max_height")?,
                    max_width: positive(*w, "max_width")?,
                };
            }
            Some(RawSize::Dict { height: Some(h), width: Some(w), .. }) => {
                self.size = (positive(*h, "height")?, positive(*w, "width")?);
                self.resize = ResizeRule::Exact;
            }
            Some(RawSize::Dict { .. }) => {
                return bad("needs `shortest_edge` and `longest_edge`, `max_height` and `max_width`, or `height` \
                            and `width` (as GroundingDinoImageProcessor.resize does)"
                    .into());
            }
        }
        if let Some(p) = &raw.pad_size {
            if p.height == 0 || p.width == 0 {
                return Err(PreprocessError::Config {
                    field: "pad_size",
                    problem: format!("is {}x{}; it must not be empty", p.width, p.height),
                });
            }
            self.pad_size = Some((p.height, p.width));
        }
        self.size = self.pad_size.unwrap_or_else(|| self.resize.bound(self.size));
        Ok(())
    }

    /// Checks that this config can preprocess for `family`: the family it names (if any) matches, OWL-ViT resizes
    /// with bicubic, and OWLv2 rescales (transformers would pad and blur raw `u8` otherwise, which nobody ships).
    pub fn check(&self, family: Family) -> Result<(), PreprocessError> {
        if let Some(config) = self.family
            && config != family
            && !(config.is_grounding_dino() && family.is_grounding_dino())
        {
            return Err(PreprocessError::FamilyMismatch { config, model: family });
        }
        if family.is_grounding_dino() {
            if self.resample != PIL_BILINEAR && self.resample != PIL_BICUBIC {
                return Err(PreprocessError::Config {
                    field: "resample",
                    problem: format!(
                        "is {}; only 2 (bilinear, the default) and 3 (bicubic) are supported",
                        self.resample
                    ),
                });
            }
            if !self.do_pad && self.resize != ResizeRule::Exact {
                return Err(PreprocessError::Config {
                    field: "do_pad",
                    problem: "is false, but the size keeps the aspect ratio, so images differ in size; the graph \
                              needs them padded (set do_pad to true)"
                        .into(),
                });
            }
            if let (Some((ph, pw)), ResizeRule::MaxHeightWidth { max_height, max_width }) = (self.pad_size, self.resize)
                && (max_height > ph || max_width > pw)
            {
                return Err(PreprocessError::Config {
                    field: "pad_size",
                    problem: format!(
                        "is {pw}x{ph}, smaller than the resized size of up to {max_width}x{max_height}; transformers \
                         would fail to pad"
                    ),
                });
            }
            return Ok(());
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
    pub(super) fn rescale_lut(&self) -> [f32; 256] {
        std::array::from_fn(|v| if self.do_rescale { (v as f64 * self.rescale_factor) as f32 } else { v as f32 })
    }

    /// `normalize`: `(image - mean) / std`, all in f32 (mean and std are cast to the image's dtype first).
    pub(super) fn normalize(&self, c: usize, x: f32) -> f32 {
        if self.do_normalize { (x - self.image_mean[c]) / self.image_std[c] } else { x }
    }

    /// For each channel, the final tensor value of every `u8`, for recipes where nothing happens between
    /// rescaling and normalising.
    pub(super) fn tensor_lut(&self) -> [[f32; 256]; 3] {
        let rescaled = self.rescale_lut();
        std::array::from_fn(|c| std::array::from_fn(|v| self.normalize(c, rescaled[v])))
    }
}
