//! What a model directory holds: the architecture from `config.json`, the ONNX graphs, and what is missing.
//!
//! Hub exports often leave out keys that equal the `transformers` defaults (the ONNX repositories of the base
//! models give no sizes at all), so absent keys are filled with those defaults and listed in
//! [`ModelInfo::defaults_used`]. The defaults come from `OwlViTTextConfig`/`OwlViTVisionConfig` and
//! `Owlv2TextConfig`/`Owlv2VisionConfig`; the two families differ only in the default patch size (32 for OWL-ViT,
//! 16 for OWLv2). Grounding DINO's come from `GroundingDinoConfig` (Swin-T, BERT-base, 900 queries, 256 tokens).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::ModelsError;
use super::manifest::Family;

/// The files every layout needs besides its graphs.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "preprocessor_config.json", "tokenizer.json"];
/// The single graph of the `hf` layout.
pub const HF_GRAPH: &str = "onnx/model.onnx";
/// The two graphs of the `split` layout, made by the project's export script.
pub const SPLIT_GRAPHS: [&str; 2] = ["onnx/text_encoder.onnx", "onnx/image_embedder.onnx"];
/// Grounding DINO's `split` layout (models/export_gdino.py).
pub const GDINO_SPLIT_GRAPHS: [&str; 2] = ["onnx/text_encoder.onnx", "onnx/detector.onnx"];
/// CLIP's graphs as the Hub's ONNX export ships them (Xenova/clip-vit-base-patch32).
pub const CLIP_HUB_GRAPHS: [&str; 2] = ["onnx/text_model.onnx", "onnx/vision_model.onnx"];
/// CLIP's graphs as lookout's export makes them (models/export_verifier.py --clip).
pub const CLIP_SPLIT_GRAPHS: [&str; 2] = ["onnx/text_encoder.onnx", "onnx/image_encoder.onnx"];

/// A summary of a model directory; `Display` is what `lookout models info` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The directory.
    pub dir: PathBuf,
    /// `model_type` from `config.json`, if there is one.
    pub model_type: Option<String>,
    /// The family that `model_type` names, if it is one we run.
    pub family: Option<Family>,
    /// Side of the square input image, in pixels.
    pub image_size: Option<u64>,
    /// Side of a vision patch, in pixels.
    pub patch_size: Option<u64>,
    /// Width of the vision transformer.
    pub vision_hidden_size: Option<u64>,
    /// Width of the text transformer.
    pub text_hidden_size: Option<u64>,
    /// Width of the shared embedding space that queries and boxes are compared in.
    pub projection_dim: Option<u64>,
    /// Number of token ids the text model knows.
    pub vocab_size: Option<u64>,
    /// Longest tokenized query (OWL), or the whole text of all queries (Grounding DINO), in tokens.
    pub max_text_len: Option<u64>,
    /// Grounding DINO: `[height, width]` the graphs take (`export_info.json`, or `pad_size` of
    /// `preprocessor_config.json`); `None` for a graph of any size.
    pub graph_input_size: Option<[u64; 2]>,
    /// Grounding DINO: how `preprocessor_config.json` sizes a picture, e.g. `max_height 320, max_width 320`.
    pub size_rule: Option<String>,
    /// Grounding DINO: boxes the detector gives per picture (`num_queries`).
    pub num_queries: Option<u64>,
    /// The `config.json` keys that were absent and filled with the `transformers` default.
    pub defaults_used: Vec<String>,
    /// Every `onnx/*.onnx` file, with its size.
    pub onnx_files: Vec<OnnxFile>,
    /// The graph layouts the directory can be run with.
    pub layouts: Vec<Layout>,
    /// The layouts that `--precision int8` can run, with their graphs (the text encoder stays fp32); empty when
    /// there is no int8 graph.
    pub int8: Vec<Layout>,
    /// Files that are needed and not there; empty when the directory is usable.
    pub missing: Vec<String>,
}

/// One ONNX graph in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnnxFile {
    /// Path relative to the model directory, with `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A way to run the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// `hf`, `hf:<variant>` (for `onnx/model_<variant>.onnx`, e.g. `hf:quantized`) or `split`.
    pub name: String,
    /// The graphs it loads.
    pub graphs: Vec<String>,
}

impl ModelInfo {
    /// True when the directory has its required files and at least one layout.
    pub fn is_usable(&self) -> bool {
        self.missing.is_empty() && !self.layouts.is_empty()
    }
}

/// Describes the model directory `dir`. Fails only when `dir` is not a directory or `config.json` is not valid JSON;
/// missing files are reported in [`ModelInfo::missing`].
pub fn info(dir: &Path) -> Result<ModelInfo, ModelsError> {
    if !dir.is_dir() {
        return Err(ModelsError::NotADirectory { path: dir.to_owned() });
    }
    let mut missing: Vec<String> =
        REQUIRED_FILES.iter().filter(|f| !dir.join(f).is_file()).map(|f| (*f).to_owned()).collect();

    let mut out = ModelInfo {
        dir: dir.to_owned(),
        model_type: None,
        family: None,
        image_size: None,
        patch_size: None,
        vision_hidden_size: None,
        text_hidden_size: None,
        projection_dim: None,
        vocab_size: None,
        max_text_len: None,
        graph_input_size: None,
        size_rule: None,
        num_queries: None,
        defaults_used: Vec::new(),
        onnx_files: onnx_files(dir)?,
        layouts: Vec::new(),
        int8: Vec::new(),
        missing: Vec::new(),
    };

    let config_path = dir.join("config.json");
    if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelsError::Io {
            action: "read".to_owned(),
            path: config_path.clone(),
            source,
        })?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|source| ModelsError::ConfigParse { path: config_path.clone(), source })?;
        read_config(&config, &mut out);
    }
    if out.family.is_some_and(Family::is_grounding_dino) {
        read_gdino_sizes(dir, &mut out);
    }
    let has = |p: &str| out.onnx_files.iter().any(|f| f.path == p);
    let split_graphs = match out.family {
        Some(f) if f.is_grounding_dino() => GDINO_SPLIT_GRAPHS,
        // CLIP: the Hub's two graphs, or lookout's export's.
        Some(Family::Clip) if CLIP_HUB_GRAPHS.iter().any(|g| has(g)) => CLIP_HUB_GRAPHS,
        Some(Family::Clip) => CLIP_SPLIT_GRAPHS,
        _ => SPLIT_GRAPHS,
    };
    let mut layouts = Vec::new();
    if has(HF_GRAPH) {
        layouts.push(Layout { name: "hf".to_owned(), graphs: vec![HF_GRAPH.to_owned()] });
    }
    for f in &out.onnx_files {
        if let Some(variant) = f.path.strip_prefix("onnx/model_").and_then(|r| r.strip_suffix(".onnx")) {
            layouts.push(Layout { name: format!("hf:{variant}"), graphs: vec![f.path.clone()] });
        }
    }
    if split_graphs.iter().all(|g| has(g)) {
        layouts
            .push(Layout { name: "split".to_owned(), graphs: split_graphs.iter().map(|g| (*g).to_owned()).collect() });
    } else if split_graphs.iter().any(|g| has(g)) {
        missing.extend(
            split_graphs.iter().filter(|g| !has(g)).map(|g| format!("{g} (the other half of the split layout)")),
        );
    }
    if layouts.is_empty() && !split_graphs.iter().any(|g| has(g)) {
        missing.push(format!("{HF_GRAPH} (or {} and {})", split_graphs[0], split_graphs[1]));
    }
    if let Some(f) = out.family.filter(|f| *f != Family::Clip) {
        let image = if f.is_grounding_dino() { "onnx/detector_int8.onnx" } else { "onnx/image_embedder_int8.onnx" };
        if has(split_graphs[0]) && has(image) {
            out.int8
                .push(Layout { name: "split".to_owned(), graphs: vec![split_graphs[0].to_owned(), image.to_owned()] });
        }
        let hf_int8 = crate::infer::model::HF_INT8_VARIANTS.iter().find(|v| has(&format!("onnx/model_{v}.onnx")));
        if let Some(v) = hf_int8 {
            out.int8.push(Layout { name: format!("hf:{v}"), graphs: vec![format!("onnx/model_{v}.onnx")] });
        }
    }
    out.layouts = layouts;
    out.missing = missing;
    Ok(out)
}

fn onnx_files(dir: &Path) -> Result<Vec<OnnxFile>, ModelsError> {
    let onnx = dir.join("onnx");
    let entries = match std::fs::read_dir(&onnx) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ModelsError::Io { action: "list".to_owned(), path: onnx, source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|source| ModelsError::Io { action: "list".to_owned(), path: onnx.clone(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && name.ends_with(".onnx") {
            files.push(OnnxFile { path: format!("onnx/{name}"), size: meta.len() });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn read_config(config: &Value, out: &mut ModelInfo) {
    out.model_type = config.get("model_type").and_then(Value::as_str).map(str::to_owned);
    out.family = out.model_type.as_deref().and_then(Family::from_model_type);
    let Some(family) = out.family else {
        // Not ours: report what is there, fill nothing in.
        out.projection_dim = config.get("projection_dim").and_then(Value::as_u64);
        return;
    };
    let text = config.get("text_config");
    let vision = config.get("vision_config");
    let mut defaults = Vec::new();
    let mut get = |section: Option<&Value>, prefix: &str, key: &str, default: u64| -> Option<u64> {
        let found = match section {
            Some(s) => s.get(key),
            None if prefix.is_empty() => config.get(key),
            None => None,
        };
        match found.and_then(Value::as_u64) {
            Some(v) => Some(v),
            None => {
                defaults.push(format!("{prefix}{key}"));
                Some(default)
            }
        }
    };
    let default_patch = match family {
        Family::Owlvit | Family::Clip => 32,
        Family::Owlv2 => 16,
        Family::GroundingDino | Family::MmGroundingDino => {
            // `GroundingDinoConfig` defaults: Swin-T backbone, BERT-base text, d_model 256.
            let backbone = config.get("backbone_config");
            out.vision_hidden_size = get(backbone, "backbone_config.", "embed_dim", 96);
            out.text_hidden_size = get(text, "text_config.", "hidden_size", 768);
            out.vocab_size = get(text, "text_config.", "vocab_size", 30522);
            out.max_text_len = get(None, "", "max_text_len", 256);
            out.projection_dim = get(None, "", "d_model", 256);
            out.num_queries = get(None, "", "num_queries", 900);
            out.defaults_used = defaults;
            return;
        }
    };
    // `CLIPVisionConfig` defaults to 224; OWL's to 768.
    let default_image = if family == Family::Clip { 224 } else { 768 };
    out.image_size = get(vision, "vision_config.", "image_size", default_image);
    out.patch_size = get(vision, "vision_config.", "patch_size", default_patch);
    out.vision_hidden_size = get(vision, "vision_config.", "hidden_size", 768);
    out.text_hidden_size = get(text, "text_config.", "hidden_size", 512);
    out.vocab_size = get(text, "text_config.", "vocab_size", 49408);
    out.max_text_len =
        get(text, "text_config.", "max_position_embeddings", if family == Family::Clip { 77 } else { 16 });
    out.projection_dim = get(None, "", "projection_dim", 512);
    out.defaults_used = defaults;
}

/// The graphs' input size and the size rule, from `export_info.json` and `preprocessor_config.json` (either may be
/// absent or unreadable: then nothing is filled in, as for any other missing key).
fn read_gdino_sizes(dir: &Path, out: &mut ModelInfo) {
    let read =
        |file: &str| -> Option<Value> { serde_json::from_str(&std::fs::read_to_string(dir.join(file)).ok()?).ok() };
    let pair = |v: Option<&Value>, a: &str, b: &str| -> Option<[u64; 2]> {
        let v = v?;
        Some([v.get(a)?.as_u64()?, v.get(b)?.as_u64()?])
    };
    let from_export = read("export_info.json").and_then(|e| {
        let s = e.get("graph_input_size")?.as_array()?.clone();
        Some([s.first()?.as_u64()?, s.get(1)?.as_u64()?])
    });
    let pre = read("preprocessor_config.json");
    let size = pre.as_ref().and_then(|p| p.get("size"));
    out.graph_input_size =
        from_export.or_else(|| pair(pre.as_ref().and_then(|p| p.get("pad_size")), "height", "width"));
    out.size_rule = if let Some([h, w]) = pair(size, "max_height", "max_width") {
        Some(format!("fit within {w}x{h}"))
    } else if let Some([s, l]) = pair(size, "shortest_edge", "longest_edge") {
        Some(format!("shortest edge {s}, longest at most {l}"))
    } else if let Some([h, w]) = pair(size, "height", "width") {
        Some(format!("stretch to {w}x{h}"))
    } else if pre.is_some() && size.is_none() {
        Some("shortest edge 800, longest at most 1333 (transformers' default)".to_owned())
    } else {
        None
    };
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model directory: {}", self.dir.display())?;
        let family = match (&self.model_type, self.family) {
            (Some(t), Some(_)) => t.clone(),
            (Some(t), None) => {
                format!("{t} (not a family lookout runs: owlvit, owlv2, grounding-dino, mm-grounding-dino, clip)")
            }
            (None, _) => "? (no config.json)".to_owned(),
        };
        writeln!(f, "model_type:      {family}")?;
        if self.family.is_some_and(Family::is_grounding_dino) {
            let rule = self.size_rule.as_deref().unwrap_or("?");
            match self.graph_input_size {
                Some([h, w]) => {
                    writeln!(f, "image:           {w}x{h} graph input only ({rule}, zero padding, pixel mask)")?
                }
                None => writeln!(f, "image:           any size ({rule}; a batch pads to its largest, pixel mask)")?,
            }
            writeln!(
                f,
                "detector:        {} boxes per picture, d_model {}, Swin embed {}",
                opt(self.num_queries),
                opt(self.projection_dim),
                opt(self.vision_hidden_size)
            )?;
            writeln!(
                f,
                "text:            BERT, vocab {}, hidden {}, max {} tokens for all queries together",
                opt(self.vocab_size),
                opt(self.text_hidden_size),
                opt(self.max_text_len)
            )?;
            if !self.defaults_used.is_empty() {
                writeln!(f, "                 (transformers defaults for: {})", self.defaults_used.join(", "))?;
            }
        } else if self.family.is_some() {
            let grid = match (self.image_size, self.patch_size) {
                (Some(i), Some(p)) if p > 0 => format!(" ({0}x{0} patches)", i / p),
                _ => String::new(),
            };
            writeln!(f, "image:           {}px, patch {}px{grid}", opt(self.image_size), opt(self.patch_size))?;
            writeln!(
                f,
                "hidden sizes:    vision {}, text {}, projection {}",
                opt(self.vision_hidden_size),
                opt(self.text_hidden_size),
                opt(self.projection_dim)
            )?;
            writeln!(f, "text:            vocab {}, max {} tokens", opt(self.vocab_size), opt(self.max_text_len))?;
            if !self.defaults_used.is_empty() {
                writeln!(f, "                 (transformers defaults for: {})", self.defaults_used.join(", "))?;
            }
        }
        if self.onnx_files.is_empty() {
            writeln!(f, "onnx files:      none")?;
        } else {
            writeln!(f, "onnx files:")?;
            for file in &self.onnx_files {
                writeln!(f, "  {:<32} {:>12} bytes", file.path, file.size)?;
            }
        }
        if self.layouts.is_empty() {
            writeln!(f, "layouts:         none")?;
        } else {
            let names: Vec<String> =
                self.layouts.iter().map(|l| format!("{} ({})", l.name, l.graphs.join(" + "))).collect();
            writeln!(f, "layouts:         {}", names.join(", "))?;
        }
        if self.family.is_some_and(|f| f != Family::Clip) {
            if self.int8.is_empty() {
                writeln!(
                    f,
                    "int8:            none (make it with `python models/quantize_int8.py {}`, or fetch a -quantized model)",
                    self.dir.display()
                )?;
            } else {
                let names: Vec<String> =
                    self.int8.iter().map(|l| format!("{} ({})", l.name, l.graphs.join(" + "))).collect();
                writeln!(f, "int8:            {} (run with --precision int8; fp32 by default)", names.join(", "))?;
            }
        }
        if self.missing.is_empty() {
            write!(f, "missing:         nothing")
        } else {
            write!(f, "missing:         {}", self.missing.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, bytes: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn minimal_hub_config_gets_transformers_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "config.json", br#"{"model_type": "owlv2", "vision_config": {"image_size": 960}}"#);
        write(d, "preprocessor_config.json", b"{}");
        write(d, "tokenizer.json", b"{}");
        write(d, "onnx/model.onnx", b"x");
        write(d, "onnx/model_quantized.onnx", b"xy");
        let i = info(d).unwrap();
        assert_eq!(i.family, Some(Family::Owlv2));
        assert_eq!((i.image_size, i.patch_size), (Some(960), Some(16)));
        assert_eq!(i.vocab_size, Some(49408));
        assert!(i.defaults_used.contains(&"vision_config.patch_size".to_owned()));
        assert!(!i.defaults_used.contains(&"vision_config.image_size".to_owned()));
        let names: Vec<&str> = i.layouts.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["hf", "hf:quantized"]);
        assert!(i.is_usable(), "{i}");
        let shown = i.to_string();
        assert!(shown.contains("960px, patch 16px (60x60 patches)"), "{shown}");
    }

    #[test]
    fn reports_missing_files_and_half_a_split_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "onnx/text_encoder.onnx", b"x");
        let i = info(d).unwrap();
        assert_eq!(i.model_type, None);
        assert!(i.layouts.is_empty());
        assert!(i.missing.iter().any(|m| m == "config.json"));
        assert!(i.missing.iter().any(|m| m.starts_with("onnx/image_embedder.onnx")), "{:?}", i.missing);
        assert!(!i.is_usable());
    }

    #[test]
    fn not_a_directory_is_an_error() {
        let err = info(Path::new("/nonexistent/lookout-model")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/lookout-model"), "{err}");
    }

    #[test]
    fn grounding_dino_is_described_with_its_graph_size_and_split_graphs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/mm-grounding-dino");
        let i = info(&dir).unwrap();
        assert_eq!(i.family, Some(Family::MmGroundingDino));
        assert_eq!((i.graph_input_size, i.num_queries, i.max_text_len), (Some([320, 320]), Some(30), Some(256)));
        let names: Vec<&str> = i.layouts.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["hf", "split"]);
        assert!(i.is_usable(), "{i}");
        let shown = i.to_string();
        assert!(shown.contains("320x320 graph input only (fit within 320x320"), "{shown}");
        // A Hub export: no export_info.json, the Hub's size rule, only the hf graph.
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "config.json", br#"{"model_type": "grounding-dino"}"#);
        write(d, "preprocessor_config.json", br#"{"size": {"shortest_edge": 800, "longest_edge": 1333}}"#);
        write(d, "tokenizer.json", b"{}");
        write(d, "onnx/detector.onnx", b"x");
        let i = info(d).unwrap();
        assert_eq!((i.num_queries, i.vocab_size), (Some(900), Some(30522)));
        assert!(i.missing.iter().any(|m| m.starts_with("onnx/text_encoder.onnx")), "{:?}", i.missing);
        assert!(i.to_string().contains("any size (shortest edge 800, longest at most 1333"), "{i}");
    }

    #[test]
    fn the_committed_tiny_model_is_usable_in_both_layouts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/owlvit");
        let i = info(&dir).unwrap();
        assert_eq!(i.family, Some(Family::Owlvit));
        assert_eq!(i.patch_size, Some(16), "the tiny config sets patch_size");
        let names: Vec<&str> = i.layouts.iter().map(|l| l.name.as_str()).collect();
        assert!(names.contains(&"hf") && names.contains(&"split"), "{names:?}");
        assert!(i.is_usable(), "{i}");
    }
}
