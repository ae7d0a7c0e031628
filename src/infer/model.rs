//! A model directory in the Hugging Face layout, and which graph layout it offers.
//!
//! ```text
//! config.json                 model_type: "owlvit" or "owlv2"
//! preprocessor_config.json    size, mean, std, padding
//! tokenizer.json              CLIP BPE
//! onnx/model.onnx             "hf" layout: one graph, as the Hub's ONNX exports ship it
//! onnx/text_encoder.onnx      "split" layout: ids, mask -> query embeddings
//! onnx/image_embedder.onnx    "split" layout: pixels -> class embeddings, shift, scale, boxes
//! ```

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
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Layout::Hf => &["onnx/model.onnx"],
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

#[derive(Debug, Deserialize)]
struct ConfigJson {
    model_type: Option<String>,
    #[serde(default)]
    vision_config: VisionConfigJson,
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
    /// True for models made by `models/export_owl.py` (random weights): their boxes mean nothing, and every
    /// output made with them says so.
    pub is_test_model: bool,
}

fn hint_for(dir: &Path) -> String {
    format!(
        "Fetch a complete model with `lookout models fetch NAME` (see `lookout models list`), \
         or export one with models/export_owl.py; {} must hold config.json, preprocessor_config.json, \
         tokenizer.json and onnx/",
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
            other => {
                return Err(InferError::Model {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "config.json has model_type {other:?}; lookout supports \"owlvit\" and \"owlv2\" \
                         (OWL-ViT and OWLv2 ONNX exports)"
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
        let available: Vec<Layout> = [Layout::Split, Layout::Hf]
            .into_iter()
            .filter(|l| l.files().iter().all(|f| dir.join(f).is_file()))
            .collect();
        let layout = match layout {
            Some(l) if available.contains(&l) => l,
            Some(l) => {
                let missing = l.files().iter().find(|f| !dir.join(f).is_file()).copied().unwrap_or_default();
                return Err(InferError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: missing.into(),
                    hint: hint_for(dir),
                });
            }
            None => *available.first().ok_or_else(|| InferError::MissingFile {
                dir: dir.to_path_buf(),
                file: "onnx/model.onnx (or onnx/text_encoder.onnx + onnx/image_embedder.onnx)".into(),
                hint: hint_for(dir),
            })?,
        };
        let image_size = config.vision_config.image_size.unwrap_or(preprocessor.size.0);
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
            is_test_model: dir.join("export_info.json").is_file(),
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
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
        assert!(err.contains("\"bert\"") && err.contains("owlv2"), "{err}");
    }
}
