//! TensorRT's settings, its optimisation-profile shapes, and the per-graph engine cache named by a [`CacheKey`].

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::is_jetson;

/// Default for [`TensorRtSettings::workspace_bytes`]: 1 GiB. TensorRT may use up to this much scratch memory per
/// layer while building; an Orin Nano shares 8 GB between CPU and GPU, so more is not a safe default.
pub const DEFAULT_TRT_WORKSPACE_BYTES: u64 = 1 << 30;
/// Default smallest batch of the image graph's optimisation profile.
pub const DEFAULT_TRT_MIN_BATCH: u32 = 1;
/// Default batch TensorRT tunes for: `watch` batches one frame per source, and four cameras per box is typical.
pub const DEFAULT_TRT_OPT_BATCH: u32 = 4;
/// Default largest batch: more sources than this in one `watch` need a larger `max_batch`.
pub const DEFAULT_TRT_MAX_BATCH: u32 = 8;
/// Default number of queries the text encoder's profile is tuned for.
pub const DEFAULT_TRT_OPT_QUERIES: u32 = 4;
/// Default largest number of queries the text encoder's profile admits.
pub const DEFAULT_TRT_MAX_QUERIES: u32 = 64;

/// TensorRT settings. `fp16` defaults to on on a Jetson, off elsewhere; everything else has a `DEFAULT_TRT_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRtSettings {
    /// Build fp16 kernels where TensorRT finds them faster. Default: on on a Jetson ([`is_jetson`]), off elsewhere
    /// (exactness first on desktop GPUs; measure with deploy/bench-gpu.sh before turning it on).
    pub fp16: bool,
    /// Scratch memory TensorRT may use while building, in bytes. Default [`DEFAULT_TRT_WORKSPACE_BYTES`].
    pub workspace_bytes: u64,
    /// Root of the engine caches; one directory per graph is made below it. Default: [`default_cache_root`].
    pub cache_root: PathBuf,
    /// Batch range of the image graph's optimisation profile. Defaults [`DEFAULT_TRT_MIN_BATCH`],
    /// [`DEFAULT_TRT_OPT_BATCH`], [`DEFAULT_TRT_MAX_BATCH`].
    pub min_batch: u32,
    pub opt_batch: u32,
    pub max_batch: u32,
    /// Query counts of the text encoder's profile (1 ..= max). Defaults [`DEFAULT_TRT_OPT_QUERIES`],
    /// [`DEFAULT_TRT_MAX_QUERIES`].
    pub opt_queries: u32,
    pub max_queries: u32,
}

impl Default for TensorRtSettings {
    fn default() -> Self {
        TensorRtSettings::for_platform(is_jetson())
    }
}

impl TensorRtSettings {
    /// The defaults, with fp16 on when `on_jetson`.
    pub fn for_platform(on_jetson: bool) -> Self {
        TensorRtSettings {
            fp16: on_jetson,
            workspace_bytes: DEFAULT_TRT_WORKSPACE_BYTES,
            cache_root: default_cache_root(),
            min_batch: DEFAULT_TRT_MIN_BATCH,
            opt_batch: DEFAULT_TRT_OPT_BATCH,
            max_batch: DEFAULT_TRT_MAX_BATCH,
            opt_queries: DEFAULT_TRT_OPT_QUERIES,
            max_queries: DEFAULT_TRT_MAX_QUERIES,
        }
    }

    /// Checks that min <= opt <= max and that none is 0.
    pub fn validate(&self) -> Result<(), String> {
        let (a, b, c) = (self.min_batch, self.opt_batch, self.max_batch);
        if a == 0 || a > b || b > c {
            return Err(format!("TensorRT batch profile must be 1 <= min <= opt <= max, got {a}/{b}/{c}"));
        }
        if self.opt_queries == 0 || self.opt_queries > self.max_queries {
            return Err(format!(
                "TensorRT query profile must be 1 <= opt <= max, got {}/{}",
                self.opt_queries, self.max_queries
            ));
        }
        Ok(())
    }
}

/// `$LOOKOUT_TRT_CACHE`, else `<user cache dir>/lookout/tensorrt` (`~/.cache/lookout/tensorrt`), else
/// `.lookout-cache/tensorrt` in the working directory.
pub fn default_cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOOKOUT_TRT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().map(|d| d.join("lookout/tensorrt")).unwrap_or_else(|| PathBuf::from(".lookout-cache/tensorrt"))
}

/// The `[tensorrt]` table of the config file; each key overrides the matching [`TensorRtSettings`] field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRtConfig {
    /// fp16 kernels. Default: on on a Jetson, off elsewhere.
    pub fp16: Option<bool>,
    /// Build workspace in MiB. Default 1024.
    pub workspace_mb: Option<u64>,
    /// Engine cache root. Default `$LOOKOUT_TRT_CACHE` or `~/.cache/lookout/tensorrt`.
    pub cache_dir: Option<PathBuf>,
    /// Image batch profile. Defaults 1 / 4 / 8.
    pub min_batch: Option<u32>,
    pub opt_batch: Option<u32>,
    pub max_batch: Option<u32>,
    /// Largest number of queries. Default 64.
    pub max_queries: Option<u32>,
}

impl TensorRtConfig {
    /// `base` with every key of the table that is set.
    pub fn apply(&self, mut base: TensorRtSettings) -> TensorRtSettings {
        if let Some(v) = self.fp16 {
            base.fp16 = v;
        }
        if let Some(v) = self.workspace_mb {
            base.workspace_bytes = v.saturating_mul(1 << 20);
        }
        if let Some(v) = &self.cache_dir {
            base.cache_root = v.clone();
        }
        if let Some(v) = self.min_batch {
            base.min_batch = v;
        }
        if let Some(v) = self.opt_batch {
            base.opt_batch = v;
        }
        if let Some(v) = self.max_batch {
            base.max_batch = v;
            base.opt_batch = base.opt_batch.min(v);
        }
        if let Some(v) = self.max_queries {
            base.max_queries = v;
            base.opt_queries = base.opt_queries.min(v);
        }
        base
    }
}

/// What a graph is, from its file name in the model directory (`onnx/text_encoder.onnx`,
/// `onnx/image_embedder.onnx`, `onnx/model.onnx`; see DESIGN.md, "Model contract").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphRole {
    /// `text_encoder.onnx`: runs when the queries change. Uses the text device.
    Text,
    /// `image_embedder.onnx`: the hot path.
    Image,
    /// `model.onnx` (hf layout): text and image in one graph, one image at a time.
    Combined,
}

impl GraphRole {
    /// From the file name; anything unknown counts as the image graph (it gets the main device).
    pub fn from_path(path: &Path) -> GraphRole {
        match path.file_stem().and_then(|s| s.to_str()) {
            Some("text_encoder") => GraphRole::Text,
            // The hf graph and its variants (`model_quantized`, `model_fp16`).
            Some(s) if s == "model" || s.starts_with("model_") => GraphRole::Combined,
            _ => GraphRole::Image,
        }
    }

    /// TensorRT optimisation-profile shapes (`trt_profile_min/opt/max_shapes`) for a model with square input
    /// `image_size`. Only the batch (image) and query dimensions vary; the others are fixed by the graph.
    pub fn profile_shapes(self, image_size: u32, trt: &TensorRtSettings) -> ProfileShapes {
        use crate::infer::text::CONTEXT_LEN;
        let s = image_size;
        let text = |q: u32| format!("input_ids:{q}x{CONTEXT_LEN},attention_mask:{q}x{CONTEXT_LEN}");
        let image = |b: u32| format!("pixel_values:{b}x3x{s}x{s}");
        match self {
            GraphRole::Text => ProfileShapes { min: text(1), opt: text(trt.opt_queries), max: text(trt.max_queries) },
            GraphRole::Image => {
                ProfileShapes { min: image(trt.min_batch), opt: image(trt.opt_batch), max: image(trt.max_batch) }
            }
            // The hf graph's pixel_values has a fixed batch of 1.
            GraphRole::Combined => ProfileShapes {
                min: format!("{},{}", text(1), image(1)),
                opt: format!("{},{}", text(trt.opt_queries), image(1)),
                max: format!("{},{}", text(trt.max_queries), image(1)),
            },
        }
    }
}

/// The three shape strings of a TensorRT optimisation profile, in ONNX Runtime's `name:AxBxC,name:...` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileShapes {
    pub min: String,
    pub opt: String,
    pub max: String,
}

/// Everything an engine depends on. Two graphs with equal keys can share engines; any difference gives a new
/// cache directory, so a stale engine is never loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// sha256 of the `.onnx` file, hex.
    pub model_sha256: String,
    /// `tensorrt`.
    pub provider: String,
    /// ONNX Runtime's build string (`ort::info()`: version and git commit).
    pub runtime: String,
    /// The Jetson L4T release line, which fixes the CUDA and TensorRT versions; empty elsewhere.
    pub platform: String,
    pub shapes: ProfileShapes,
    pub fp16: bool,
}

impl CacheKey {
    /// The canonical text the digest is computed from, one `key=value` per line; also written as `key.txt` in
    /// the cache directory so that a person can see what an engine was built for.
    pub fn canonical(&self) -> String {
        format!(
            "model_sha256={}\nprovider={}\nruntime={}\nplatform={}\nmin_shapes={}\nopt_shapes={}\nmax_shapes={}\nfp16={}\n",
            self.model_sha256,
            self.provider,
            self.runtime,
            self.platform,
            self.shapes.min,
            self.shapes.opt,
            self.shapes.max,
            self.fp16
        )
    }

    /// The first 16 hex digits of the sha256 of [`CacheKey::canonical`].
    pub fn digest(&self) -> String {
        let hash = Sha256::digest(self.canonical().as_bytes());
        hex(&hash[..8])
    }

    /// `<root>/<model>-<graph>-<digest>`, e.g. `~/.cache/lookout/tensorrt/owlvit-base-patch32-image_embedder-0f3a...`.
    pub fn dir(&self, root: &Path, model_name: &str, graph_path: &Path) -> PathBuf {
        let graph = graph_path.file_stem().and_then(|s| s.to_str()).unwrap_or("graph");
        root.join(format!("{}-{graph}-{}", sanitize(model_name), self.digest()))
    }
}

/// sha256 of a file, hex, read in 1 MiB chunks (a 350 MB graph takes about a second).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.is_empty() { "model".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_DEVICE, Device};
    use super::*;

    fn key() -> CacheKey {
        let trt = TensorRtSettings::for_platform(true);
        CacheKey {
            model_sha256: "ab".repeat(32),
            provider: "tensorrt".into(),
            runtime: "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc".into(),
            platform: "# R36 (release), REVISION: 4.3".into(),
            shapes: GraphRole::Image.profile_shapes(768, &trt),
            fp16: trt.fp16,
        }
    }

    #[test]
    fn cache_key_covers_everything_an_engine_depends_on() {
        let k = key();
        assert_eq!(k.shapes.min, "pixel_values:1x3x768x768");
        assert_eq!(k.shapes.opt, "pixel_values:4x3x768x768");
        assert_eq!(k.shapes.max, "pixel_values:8x3x768x768");
        let d = k.digest();
        assert_eq!(d.len(), 16);
        assert_eq!(d, key().digest(), "deterministic");
        // The digest is the sha256 of the canonical text: pinned, so a change to the key format is deliberate.
        assert_eq!(d, hex(&Sha256::digest(k.canonical().as_bytes())[..8]));
        let variants: Vec<CacheKey> = vec![
            CacheKey { model_sha256: "cd".repeat(32), ..key() },
            CacheKey { runtime: "ORT Build Info: git-branch=rel-1.32.0".into(), ..key() },
            CacheKey { platform: "# R35 (release), REVISION: 5.0".into(), ..key() },
            CacheKey { fp16: false, ..key() },
            CacheKey { shapes: GraphRole::Image.profile_shapes(960, &TensorRtSettings::for_platform(true)), ..key() },
            CacheKey { provider: "cuda".into(), ..key() },
        ];
        for v in variants {
            assert_ne!(v.digest(), d, "{}", v.canonical());
        }
        let dir = k.dir(Path::new("/c"), "owl vit/b32", Path::new("m/onnx/image_embedder.onnx"));
        assert_eq!(dir, PathBuf::from(format!("/c/owl_vit_b32-image_embedder-{d}")));
    }

    #[test]
    fn profile_shapes_per_graph() {
        let t = TensorRtSettings::for_platform(false);
        let text = GraphRole::from_path(Path::new("x/onnx/text_encoder.onnx")).profile_shapes(768, &t);
        assert_eq!(text.min, "input_ids:1x16,attention_mask:1x16");
        assert_eq!(text.max, "input_ids:64x16,attention_mask:64x16");
        let hf = GraphRole::from_path(Path::new("x/onnx/model.onnx")).profile_shapes(960, &t);
        assert_eq!(hf.opt, "input_ids:4x16,attention_mask:4x16,pixel_values:1x3x960x960");
        assert_eq!(GraphRole::from_path(Path::new("x/onnx/other.onnx")), GraphRole::Image);
        // The hf graph's variants are the whole model too (their profile needs the text inputs).
        assert_eq!(GraphRole::from_path(Path::new("x/onnx/model_quantized.onnx")), GraphRole::Combined);
        assert_eq!(GraphRole::from_path(Path::new("x/onnx/image_embedder_int8.onnx")), GraphRole::Image);
    }

    #[test]
    fn file_hash_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.onnx");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(file_sha256(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(TensorRtSettings::for_platform(true).fp16 && !TensorRtSettings::for_platform(false).fp16);
        assert!(TensorRtSettings::for_platform(false).validate().is_ok());
        let bad = TensorRtSettings { opt_batch: 9, ..TensorRtSettings::for_platform(false) };
        assert!(bad.validate().unwrap_err().contains("1/9/8"));
        assert_eq!(DEFAULT_DEVICE, Device::default());
    }
}
