//! A model directory in the Hugging Face layout, and which graph layout it offers.
//!
//! ```text
//! config.json                 model_type: "owlvit", "owlv2", "grounding-dino" or "mm-grounding-dino"
//! preprocessor_config.json    size, mean, std, padding
//! tokenizer.json              CLIP BPE (OWL), BERT WordPiece (Grounding DINO)
//! export_info.json            only in lookout's own exports: graph input size, random weights or not
//! onnx/model.onnx             "hf" layout: one graph, as the Hub's ONNX exports ship it
//! onnx/model_<variant>.onnx   "hf:<variant>": the same graph in another precision (model_fp16, model_quantized)
//! onnx/text_encoder.onnx      "split" layout: ids, mask -> query embeddings (OWL) or text features (DINO)
//! onnx/image_embedder.onnx    "split" layout, OWL: pixels -> class embeddings, shift, scale, boxes
//! onnx/detector.onnx          "split" layout, Grounding DINO: pixels, mask, text features, phrase masks -> logits, boxes
//! onnx/image_embedder_int8.onnx, onnx/detector_int8.onnx
//!                             "split" with `--precision int8`: the image side in int8 (models/quantize_int8.py);
//!                             the text encoder stays fp32 (it runs once per set of queries)
//! ```
//!
//! `--precision int8` picks, for the split layout, the `_int8` image graph, and for the hf layout the first of
//! `onnx/model_quantized.onnx` (the Hub's name, and what lookout's export writes), `model_int8.onnx`,
//! `model_uint8.onnx`.
//!
//! LLMDet has no `model_type` of its own: transformers runs it as MM-Grounding-DINO, and so does lookout.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::preprocess::PreprocessorConfig;
use super::{InferError, Result};

/// The model family decides the preprocessing and how boxes map back to pixels.
pub use super::preprocess::Family;

/// Which graphs the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `onnx/model.onnx`: text and image together; queries are re-encoded with every image.
    Hf,
    /// `onnx/text_encoder.onnx` + `onnx/image_embedder.onnx`: queries encoded once, class head in Rust.
    Split,
}

impl Layout {
    /// The graphs of this layout for an OWL model.
    pub fn files(self) -> &'static [&'static str] {
        self.files_for(Family::OwlVit)
    }

    /// The graphs of this layout for a model of `family`.
    pub fn files_for(self, family: Family) -> &'static [&'static str] {
        match self {
            Layout::Hf => &["onnx/model.onnx"],
            Layout::Split if family.is_grounding_dino() => &["onnx/text_encoder.onnx", "onnx/detector.onnx"],
            Layout::Split => &["onnx/text_encoder.onnx", "onnx/image_embedder.onnx"],
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hf" => Ok(Layout::Hf),
            "split" => Ok(Layout::Split),
            other => Err(format!("unknown model layout {other:?}: use \"hf\" or \"split\"")),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Hf => "hf",
            Layout::Split => "split",
        })
    }
}

/// The arithmetic of the image-side graph: what `--precision` and `[model] precision` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The exported graphs as they are.
    #[default]
    Fp32,
    /// 8-bit weights (and activations, quantized per run) for the image side: about 2x faster on a CPU with
    /// AVX-512 VNNI, at a small drift of boxes and scores (BENCHMARKS.md, "int8").
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision {other:?}: use \"fp32\" or \"int8\"")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

/// The `hf` variants that are 8-bit graphs, in the order `--precision int8` looks for them (the Hub's names).
pub const HF_INT8_VARIANTS: [&str; 3] = ["quantized", "int8", "uint8"];

/// The split layout's image graph of `family` in `precision`, relative to the model directory.
pub fn split_image_graph(family: Family, precision: Precision) -> &'static str {
    match (family.is_grounding_dino(), precision) {
        (true, Precision::Fp32) => "onnx/detector.onnx",
        (true, Precision::Int8) => "onnx/detector_int8.onnx",
        (false, Precision::Fp32) => "onnx/image_embedder.onnx",
        (false, Precision::Int8) => "onnx/image_embedder_int8.onnx",
    }
}

/// What precision an `hf` variant runs in, as reports name it: `int8` for the 8-bit ones, else the variant's
/// own name (`fp16`, `q4`), and `fp32` for `onnx/model.onnx`.
pub fn hf_variant_precision(variant: Option<&str>) -> String {
    match variant {
        None => "fp32".to_owned(),
        Some(v) if HF_INT8_VARIANTS.contains(&v) => "int8".to_owned(),
        Some(v) => v.to_owned(),
    }
}

/// A layout and, for `hf`, which variant of its graph: what `--layout` and `[model] layout` take.
///
/// `"hf"`, `"split"`, or `"hf:<variant>"` for `onnx/model_<variant>.onnx` (the names `lookout models info` lists,
/// e.g. `hf:fp16`, `hf:quantized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutChoice {
    pub layout: Layout,
    /// `fp16` for `onnx/model_fp16.onnx`; `None` for `onnx/model.onnx` (or the one variant a directory holds).
    pub variant: Option<String>,
}

impl From<Layout> for LayoutChoice {
    fn from(layout: Layout) -> Self {
        LayoutChoice { layout, variant: None }
    }
}

impl std::str::FromStr for LayoutChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None => Ok(s.parse::<Layout>()?.into()),
            Some(("hf", v))
                if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                Ok(LayoutChoice { layout: Layout::Hf, variant: Some(v.to_owned()) })
            }
            Some(_) => Err(format!(
                "unknown model layout {s:?}: use \"hf\", \"split\" or \"hf:VARIANT\" for onnx/model_VARIANT.onnx \
                 (e.g. \"hf:quantized\"; `lookout models info` lists a directory's layouts)"
            )),
        }
    }
}

impl std::fmt::Display for LayoutChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}:{v}", self.layout),
            None => write!(f, "{}", self.layout),
        }
    }
}

/// The `onnx/model_<variant>.onnx` graphs in `dir`, by variant name, sorted.
fn hf_variants(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("onnx"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("model_")?.strip_suffix(".onnx")?.to_owned();
            e.path().is_file().then_some(v)
        })
        .collect();
    out.sort();
    out
}

/// The `hf` layout's graph in `dir`: `onnx/model_<variant>.onnx` when one is asked for; else `onnx/model.onnx`, or
/// the single variant the directory holds (a model fetched by a variant's name, e.g. `owlvit-base-patch32-quantized`,
/// holds only `onnx/model_quantized.onnx`). `Err` names what is there when the choice is missing or ambiguous.
fn hf_graph(dir: &Path, variant: Option<&str>) -> std::result::Result<String, String> {
    let variants = hf_variants(dir);
    let listed = || {
        let mut names: Vec<String> = variants.iter().map(|v| format!("hf:{v}")).collect();
        if dir.join(DEFAULT_HF_GRAPH).is_file() {
            names.insert(0, "hf".into());
        }
        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
    };
    match variant {
        Some(v) if variants.iter().any(|x| x == v) => Ok(format!("onnx/model_{v}.onnx")),
        Some(v) => Err(format!("onnx/model_{v}.onnx (the hf graphs here: {})", listed())),
        None if dir.join(DEFAULT_HF_GRAPH).is_file() => Ok(DEFAULT_HF_GRAPH.to_owned()),
        None => match variants.as_slice() {
            [one] => Ok(format!("onnx/model_{one}.onnx")),
            [] => Err(DEFAULT_HF_GRAPH.to_owned()),
            _ => Err(format!("{DEFAULT_HF_GRAPH} (there are only variants: choose one with --layout {})", listed())),
        },
    }
}

/// The `hf` layout's graph when no variant is chosen.
pub const DEFAULT_HF_GRAPH: &str = "onnx/model.onnx";

#[derive(Debug, Deserialize)]
struct ConfigJson {
    model_type: Option<String>,
    #[serde(default)]
    vision_config: VisionConfigJson,
    /// Grounding DINO: the text limit, and the length of the logits' last axis.
    max_text_len: Option<usize>,
}

/// What lookout's export scripts record next to the graphs (absent from the Hub's exports).
#[derive(Debug, Default, Deserialize)]
struct ExportInfoJson {
    /// `"tiny"`, `"full"` (random weights at full size) or `"pretrained"` (real weights).
    mode: Option<String>,
    random_weights: Option<bool>,
    /// `[H, W]`: the one pixel size the graphs were exported for.
    graph_input_size: Option<[u32; 2]>,
}

#[derive(Debug, Default, Deserialize)]
struct VisionConfigJson {
    image_size: Option<u32>,
    patch_size: Option<u32>,
}

/// An opened model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub family: Family,
    pub layout: Layout,
    /// The layouts whose files are present.
    pub available: Vec<Layout>,
    pub preprocessor: PreprocessorConfig,
    /// Side of the model's square input, in pixels.
    pub image_size: u32,
    pub patch_size: Option<u32>,
    /// A short name for logs and `--json` output: the directory's name.
    pub name: String,
    /// True for models made by `models/export_owl.py` or `models/export_gdino.py` with random weights: their
    /// boxes mean nothing, and every output made with them says so.
    pub is_test_model: bool,
    /// Grounding DINO: the most tokens the text may have (`max_text_len`, default 256). OWL: 16.
    pub max_text_len: usize,
    /// `(height, width)` the graphs were exported for (`export_info.json` `graph_input_size`), when known: a graph
    /// of lookout's Grounding DINO export gives wrong outputs at any other size.
    pub graph_input_size: Option<(u32, u32)>,
    /// True when `export_info.json` is there: the graphs come from lookout's export scripts (and, for Grounding
    /// DINO, compute the phrase masks for any prompt), not from the Hub.
    pub exported_by_lookout: bool,
    /// The `hf` layout's graph, relative to `dir`: `onnx/model.onnx` or `onnx/model_<variant>.onnx`.
    pub hf_graph: String,
    /// The precision asked for (`--precision`); `None` when not given (fp32, unless an `hf` variant says otherwise).
    pub precision: Option<Precision>,
    /// The `split` layout's image graph, relative to `dir`: `onnx/image_embedder.onnx` / `onnx/detector.onnx`, or
    /// their `_int8` variants with `--precision int8`.
    pub split_image_graph: String,
}

fn hint_for(dir: &Path) -> String {
    format!(
        "Fetch a complete model with `lookout models fetch NAME` (see `lookout models list`), \
         or export one with models/export_owl.py; {} must hold config.json, preprocessor_config.json, \
         tokenizer.json and onnx/",
        dir.display()
    )
}

/// What to do when `--precision int8` finds no int8 graph in `dir`.
fn int8_hint(dir: &Path) -> String {
    format!(
        "Make the int8 graphs with `python models/quantize_int8.py {}` (for a directory exported by lookout's \
         scripts), or fetch a quantized model (`lookout models list`, names ending in -quantized), or run with \
         --precision fp32",
        dir.display()
    )
}

impl ModelDir {
    /// Opens `dir`, preferring the split layout when both are present (it encodes queries once).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, None)
    }

    /// Opens `dir` with the given layout, or the best available one.
    pub fn open_with(dir: &Path, layout: Option<Layout>) -> Result<Self> {
        Self::open_choice(dir, layout.map(LayoutChoice::from).as_ref())
    }

    /// Opens `dir` with the given layout and `hf` variant (`--layout hf:quantized`), or the best available one.
    pub fn open_choice(dir: &Path, choice: Option<&LayoutChoice>) -> Result<Self> {
        Self::open_precision(dir, choice, None)
    }

    /// Opens `dir` with the given layout and precision (`--layout`, `--precision`), or the best available ones.
    ///
    /// With `--precision int8` the split layout runs `onnx/<image graph>_int8.onnx` and the hf layout the first
    /// 8-bit variant there is ([`HF_INT8_VARIANTS`]); without a layout, split is preferred as for fp32. A missing
    /// int8 graph is an error that says how to make one.
    pub fn open_precision(dir: &Path, choice: Option<&LayoutChoice>, precision: Option<Precision>) -> Result<Self> {
        let layout = choice.map(|c| c.layout);
        if !dir.is_dir() {
            return Err(InferError::MissingFile {
                dir: dir.to_path_buf(),
                file: "(the directory itself)".into(),
                hint: hint_for(dir),
            });
        }
        for file in ["config.json", "preprocessor_config.json", "tokenizer.json"] {
            if !dir.join(file).is_file() {
                return Err(InferError::MissingFile { dir: dir.to_path_buf(), file: file.into(), hint: hint_for(dir) });
            }
        }
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file)).map_err(|e| InferError::BadFile {
                dir: dir.to_path_buf(),
                file: file.into(),
                message: e.to_string(),
            })
        };
        let config: ConfigJson = serde_json::from_str(&read("config.json")?).map_err(|e| InferError::BadFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
            message: e.to_string(),
        })?;
        let family = match config.model_type.as_deref() {
            Some("owlvit") => Family::OwlVit,
            Some("owlv2") => Family::Owlv2,
            Some("grounding-dino") => Family::GroundingDino,
            Some("mm-grounding-dino") => Family::MmGroundingDino,
            // Second-stage models: lookout knows them, but not as detectors.
            Some(t @ ("clip" | "xclip" | "brightness")) => {
                let use_it = if t == "clip" {
                    "give it to `locate --rerank clip --rerank-model DIR` or to `watch` as [verify] model"
                } else {
                    "give it to `watch` as [verify] model (or --verifier DIR)"
                };
                return Err(InferError::Model {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "config.json has model_type {t:?}: a verifier, not a detector; {use_it}, and to -m a \
                         detector (owlvit, owlv2, grounding-dino, mm-grounding-dino)"
                    ),
                });
            }
            other => {
                let named = other.map_or_else(|| "no model_type".to_string(), |t| format!("model_type {t:?}"));
                return Err(InferError::Model {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "config.json has {named}, a family lookout does not know; it runs \"owlvit\", \"owlv2\", \
                         \"grounding-dino\" and \"mm-grounding-dino\" (LLMDet too) in the Hugging Face layout"
                    ),
                });
            }
        };
        let preprocessor =
            PreprocessorConfig::from_json_for(family, &read("preprocessor_config.json")?).map_err(|e| {
                InferError::BadFile {
                    dir: dir.to_path_buf(),
                    file: "preprocessor_config.json".into(),
                    message: e.to_string(),
                }
            })?;
        let variant = choice.and_then(|c| c.variant.as_deref());
        if let (Some(p), Some(v)) = (precision, variant) {
            let of_variant = hf_variant_precision(Some(v));
            if of_variant != p.to_string() {
                return Err(InferError::Model {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "--layout hf:{v} runs a {of_variant} graph and --precision asks for {p}: give one of them \
                         (--precision {p} alone picks the {p} graph of the layout)"
                    ),
                });
            }
        }
        let hf = match (precision, variant) {
            (Some(Precision::Int8), None) => HF_INT8_VARIANTS
                .iter()
                .map(|v| format!("onnx/model_{v}.onnx"))
                .find(|f| dir.join(f).is_file())
                .ok_or_else(|| format!("onnx/model_{}.onnx", HF_INT8_VARIANTS[0])),
            (Some(Precision::Fp32), None) if dir.join(DEFAULT_HF_GRAPH).is_file() => Ok(DEFAULT_HF_GRAPH.to_owned()),
            (Some(Precision::Fp32), None) => Err(DEFAULT_HF_GRAPH.to_owned()),
            _ => hf_graph(dir, variant),
        };
        let split_image = split_image_graph(family, precision.unwrap_or_default());
        let split = ["onnx/text_encoder.onnx", split_image];
        let available: Vec<Layout> = [Layout::Split, Layout::Hf]
            .into_iter()
            .filter(|l| match l {
                Layout::Hf => hf.is_ok(),
                Layout::Split => split.iter().all(|f| dir.join(f).is_file()),
            })
            .collect();
        let int8 = precision == Some(Precision::Int8);
        let hint = if int8 { int8_hint(dir) } else { hint_for(dir) };
        let layout = match layout {
            Some(l) if available.contains(&l) => l,
            Some(l) => {
                let missing = match (l, &hf) {
                    (Layout::Hf, Err(what)) => what.clone(),
                    _ => split.iter().find(|f| !dir.join(f).is_file()).copied().unwrap_or_default().to_owned(),
                };
                let missing = if int8 { format!("{missing} (the int8 graph of the {l} layout)") } else { missing };
                return Err(InferError::MissingFile { dir: dir.to_path_buf(), file: missing, hint });
            }
            None => *available.first().ok_or_else(|| InferError::MissingFile {
                dir: dir.to_path_buf(),
                file: match &hf {
                    // (The hf graph is missing too, or its layout would be available.)
                    Err(what) if int8 => {
                        format!("an int8 graph ({split_image} for the split layout, or {what} for hf)")
                    }
                    // Only variants of the hf graph: say which, and how to choose.
                    Err(what) if what != DEFAULT_HF_GRAPH => what.clone(),
                    _ => format!("{DEFAULT_HF_GRAPH} (or {} + {})", split[0], split[1]),
                },
                hint,
            })?,
        };
        let export_info: ExportInfoJson = match std::fs::read_to_string(dir.join("export_info.json")) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| InferError::BadFile {
                dir: dir.to_path_buf(),
                file: "export_info.json".into(),
                message: e.to_string(),
            })?,
            Err(_) => ExportInfoJson::default(),
        };
        let is_test_model = dir.join("export_info.json").is_file()
            && export_info.random_weights != Some(false)
            && export_info.mode.as_deref() != Some("pretrained");
        let graph_input_size = export_info.graph_input_size.map(|[h, w]| (h, w));
        let image_size = match family {
            // The side of a square that bounds the input; Grounding DINO's is not square in general.
            f if f.is_grounding_dino() => preprocessor.size.0.max(preprocessor.size.1),
            _ => config.vision_config.image_size.unwrap_or(preprocessor.size.0),
        };
        let max_text_len = match family {
            f if f.is_grounding_dino() => config.max_text_len.unwrap_or(super::gdino::text::DEFAULT_MAX_TEXT_LEN),
            _ => super::text::CONTEXT_LEN,
        };
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            family,
            layout,
            available,
            preprocessor,
            image_size,
            patch_size: config.vision_config.patch_size,
            name,
            is_test_model,
            max_text_len,
            graph_input_size,
            // export_report.json: the same record for a real-weight export (`--from-pretrained`), which must not
            // carry the test-model banner.
            exported_by_lookout: dir.join("export_info.json").is_file() || dir.join("export_report.json").is_file(),
            hf_graph: hf.unwrap_or_else(|_| DEFAULT_HF_GRAPH.to_owned()),
            precision,
            split_image_graph: split_image.to_owned(),
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The graphs the chosen layout loads.
    pub fn graphs(&self) -> Vec<PathBuf> {
        match self.layout {
            Layout::Hf => vec![self.hf_graph_path()],
            Layout::Split => vec![self.path("onnx/text_encoder.onnx"), self.split_image_graph_path()],
        }
    }

    /// The `split` layout's image graph (OWL's image embedder, Grounding DINO's detector) in the chosen precision.
    pub fn split_image_graph_path(&self) -> PathBuf {
        self.path(&self.split_image_graph)
    }

    /// The precision that runs, as reports name it: `fp32`, `int8`, or an `hf` variant's own name (`fp16`).
    pub fn precision_label(&self) -> String {
        match self.layout {
            Layout::Split => self.precision.unwrap_or_default().to_string(),
            Layout::Hf => hf_variant_precision(self.layout_choice().variant.as_deref()),
        }
    }

    /// The `hf` layout's graph: `onnx/model.onnx` or the chosen `onnx/model_<variant>.onnx`.
    pub fn hf_graph_path(&self) -> PathBuf {
        self.path(&self.hf_graph)
    }

    /// What runs, as `--layout` names it: `split`, `hf` or `hf:<variant>`.
    pub fn layout_choice(&self) -> LayoutChoice {
        let variant = match self.layout {
            Layout::Hf => self.hf_graph.strip_prefix("onnx/model_").and_then(|r| r.strip_suffix(".onnx")),
            Layout::Split => None,
        };
        LayoutChoice { layout: self.layout, variant: variant.map(str::to_owned) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tokenizer_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type":"owlvit"}"#).unwrap();
        std::fs::write(dir.path().join("preprocessor_config.json"), "{}").unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("lookout models fetch"), "{err}");
    }

    #[test]
    fn unknown_model_type_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type":"bert"}"#).unwrap();
        std::fs::write(dir.path().join("preprocessor_config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"bert\"") && err.contains("owlv2") && err.contains("grounding-dino"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    /// A verifier given as the detector says what it is and where it goes.
    #[test]
    fn a_verifier_as_the_detector_says_where_it_goes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
        let err = ModelDir::open(&root.join("clip")).unwrap_err().to_string();
        assert!(err.contains("\"clip\": a verifier, not a detector") && err.contains("--rerank-model"), "{err}");
        let err = ModelDir::open(&root.join("xclip")).unwrap_err().to_string();
        assert!(err.contains("[verify] model") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn grounding_dino_directories_open_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), r#"{"model_type":"mm-grounding-dino","max_text_len":128}"#).unwrap();
        std::fs::write(
            d.join("preprocessor_config.json"),
            r#"{"image_processor_type":"GroundingDinoImageProcessor","size":{"max_height":320,"max_width":480},
                "pad_size":{"height":320,"width":480}}"#,
        )
        .unwrap();
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(
            d.join("export_info.json"),
            r#"{"mode":"tiny","random_weights":true,"graph_input_size":[320,480]}"#,
        )
        .unwrap();
        std::fs::create_dir(d.join("onnx")).unwrap();
        std::fs::write(d.join("onnx/text_encoder.onnx"), "").unwrap();
        // OWL's split layout is not Grounding DINO's.
        std::fs::write(d.join("onnx/image_embedder.onnx"), "").unwrap();
        let err = ModelDir::open(d).unwrap_err().to_string();
        assert!(err.contains("onnx/detector.onnx"), "{err}");
        std::fs::write(d.join("onnx/detector.onnx"), "").unwrap();
        std::fs::write(d.join("onnx/model.onnx"), "").unwrap();
        let m = ModelDir::open(d).unwrap();
        assert_eq!(
            (m.family, m.layout, m.available.clone()),
            (Family::MmGroundingDino, Layout::Split, vec![Layout::Split, Layout::Hf])
        );
        assert_eq!((m.max_text_len, m.graph_input_size, m.is_test_model), (128, Some((320, 480)), true));
        assert_eq!(m.preprocessor.size, (320, 480));
        assert_eq!(m.graphs(), [d.join("onnx/text_encoder.onnx"), d.join("onnx/detector.onnx")]);
        std::fs::write(d.join("export_info.json"), r#"{"mode":"pretrained","random_weights":false}"#).unwrap();
        assert!(!ModelDir::open(d).unwrap().is_test_model);
    }

    /// `--precision` on a directory of the Hub's layout: int8 finds the 8-bit hf variant, fp32 wants model.onnx.
    #[test]
    fn precision_picks_the_hf_variant_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), r#"{"model_type":"owlvit"}"#).unwrap();
        std::fs::write(d.join("preprocessor_config.json"), "{}").unwrap();
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
        std::fs::create_dir(d.join("onnx")).unwrap();
        std::fs::write(d.join("onnx/model_int8.onnx"), "").unwrap();
        let m = ModelDir::open_precision(d, None, Some(Precision::Int8)).unwrap();
        assert_eq!((m.graphs(), m.precision_label()), (vec![d.join("onnx/model_int8.onnx")], "int8".to_owned()));
        // Without --precision the one variant runs, and is reported as what it is.
        assert_eq!(ModelDir::open(d).unwrap().precision_label(), "int8");
        let err = ModelDir::open_precision(d, None, Some(Precision::Fp32)).unwrap_err().to_string();
        assert!(err.contains("onnx/model.onnx"), "{err}");
        std::fs::write(d.join("onnx/model_quantized.onnx"), "").unwrap();
        let m = ModelDir::open_precision(d, None, Some(Precision::Int8)).unwrap();
        assert_eq!(m.graphs(), vec![d.join("onnx/model_quantized.onnx")], "the Hub's name first");
        let fp16: LayoutChoice = "hf:fp16".parse().unwrap();
        let err = ModelDir::open_precision(d, Some(&fp16), Some(Precision::Int8)).unwrap_err().to_string();
        assert!(err.contains("hf:fp16 runs a fp16 graph") && !err.contains('\n'), "{err}");
        let err = ModelDir::open_precision(d, Some(&Layout::Split.into()), Some(Precision::Int8)).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("onnx/text_encoder.onnx") && err.contains("quantize_int8.py"), "{err}");
        assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
        assert!("int4".parse::<Precision>().unwrap_err().contains("\"fp32\" or \"int8\""));
    }

    #[test]
    fn hf_variants_are_found_and_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), r#"{"model_type":"owlvit"}"#).unwrap();
        std::fs::write(d.join("preprocessor_config.json"), "{}").unwrap();
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
        std::fs::create_dir(d.join("onnx")).unwrap();
        // A directory fetched by a variant's name holds only that graph: it runs without --layout.
        std::fs::write(d.join("onnx/model_quantized.onnx"), "").unwrap();
        let m = ModelDir::open(d).unwrap();
        assert_eq!((m.layout, m.graphs()), (Layout::Hf, vec![d.join("onnx/model_quantized.onnx")]));
        assert_eq!(m.layout_choice().to_string(), "hf:quantized");
        // Two variants and no model.onnx: the choice is the user's, and the error lists what is there.
        std::fs::write(d.join("onnx/model_fp16.onnx"), "").unwrap();
        let err = ModelDir::open(d).unwrap_err().to_string();
        assert!(err.contains("--layout hf:fp16, hf:quantized"), "{err}");
        let fp16: LayoutChoice = "hf:fp16".parse().unwrap();
        let m = ModelDir::open_choice(d, Some(&fp16)).unwrap();
        assert_eq!((m.graphs(), m.layout_choice()), (vec![d.join("onnx/model_fp16.onnx")], fp16));
        // With model.onnx there, plain "hf" means it; an absent variant is named with what is there.
        std::fs::write(d.join("onnx/model.onnx"), "").unwrap();
        assert_eq!(ModelDir::open(d).unwrap().graphs(), vec![d.join("onnx/model.onnx")]);
        let int4: LayoutChoice = "hf:q4".parse().unwrap();
        let err = ModelDir::open_choice(d, Some(&int4)).unwrap_err().to_string();
        assert!(err.contains("onnx/model_q4.onnx") && err.contains("hf, hf:fp16, hf:quantized"), "{err}");
        assert!("split:x".parse::<LayoutChoice>().unwrap_err().contains("hf:VARIANT"));
        assert!("hf:".parse::<LayoutChoice>().is_err());
        assert_eq!("split".parse::<LayoutChoice>().unwrap(), LayoutChoice::from(Layout::Split));
    }
}
