//! The manifest of downloadable models: what each named model is, where it lives on the Hub, and how to check it.
//!
//! The manifest is TOML, embedded in the binary from `models/manifest.toml` (the format is documented at the top of
//! that file). [`Manifest::load`] reads another file instead when the caller has one, so a site can pin its own
//! models without a rebuild. Every table rejects unknown keys: a misspelt `sha265` must not silently turn a check off.

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::ModelsError;

/// The manifest that ships inside the binary.
pub const EMBEDDED_MANIFEST: &str = include_str!("../../models/manifest.toml");

/// Where [`Manifest::embedded`] says it came from, in error messages.
pub const EMBEDDED_ORIGIN: &str = "the built-in manifest (models/manifest.toml)";

/// The graph that an entry uses when it names none: the single-graph export that the Hub's ONNX repositories ship.
pub const DEFAULT_GRAPH: &str = "onnx/model.onnx";

/// All the models that `lookout` knows how to fetch by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The models, in the order the manifest lists them. Defaults to none.
    #[serde(default, rename = "model")]
    pub models: Vec<ModelEntry>,
}

/// One downloadable model: a pinned revision of a Hub repository and the files to take from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name users type (`owlvit-base-patch32`). Also the name of its directory in the cache. Required.
    pub name: String,
    /// Which model family the graphs belong to. Required.
    pub family: Family,
    /// One line for `lookout models list`. Required.
    pub description: String,
    /// The Hub repository, `owner/name`. Required.
    pub repo: String,
    /// The commit to download from: a full 40-hex-digit sha, so that the hashes below stay true. Required, except
    /// for an entry with `export` (nothing is downloaded from the Hub by lookout), where it may be left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// For a model with no ONNX export on the Hub (MM-Grounding-DINO, LLMDet): the command that makes one from the
    /// Hub's PyTorch weights, run on a machine with network (`models/export_gdino.py --from-pretrained REPO`). The
    /// entry's files are then what that command writes, and lookout never downloads them: `models fetch` and `-m`
    /// say how to make them and where to put them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// The Hub path of the graph this entry is meant to run. Defaults to [`DEFAULT_GRAPH`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
    /// The files to download, by their path in the repository. Required, at least one.
    #[serde(rename = "file")]
    pub files: Vec<FileEntry>,
}

/// One file of a model, as it is stored in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the repository, with `/` separators (`onnx/model.onnx`). Required.
    pub path: String,
    /// Size in bytes. Defaults to unknown: then the size is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the content, 64 lowercase hex digits. Defaults to unknown: then only the size is checked, with a
    /// warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The model families that the inference code understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// OWL-ViT (v1): square resize without padding, boxes scaled by (W, H).
    Owlvit,
    /// OWLv2: pad to a square, then resize; boxes scaled by max(W, H); has an objectness head.
    Owlv2,
    /// Grounding DINO: letterbox into the graph's fixed size with a pixel mask; BERT text, all queries in one prompt.
    #[serde(rename = "grounding-dino")]
    GroundingDino,
    /// MM-Grounding-DINO, and LLMDet, which transformers runs through the same class.
    #[serde(rename = "mm-grounding-dino")]
    MmGroundingDino,
    /// CLIP: not a detector; `locate --rerank clip` and the `clip` verifier (text and vision graphs).
    Clip,
}

impl Family {
    /// The `model_type` that `config.json` carries for this family.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Owlvit => "owlvit",
            Family::Owlv2 => "owlv2",
            Family::GroundingDino => "grounding-dino",
            Family::MmGroundingDino => "mm-grounding-dino",
            Family::Clip => "clip",
        }
    }

    /// Grounding DINO or MM-Grounding-DINO (LLMDet too).
    pub fn is_grounding_dino(self) -> bool {
        matches!(self, Family::GroundingDino | Family::MmGroundingDino)
    }

    /// The family whose `config.json` says `model_type`, if it is one of ours.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "owlvit" => Some(Family::Owlvit),
            "owlv2" => Some(Family::Owlv2),
            "grounding-dino" => Some(Family::GroundingDino),
            "mm-grounding-dino" => Some(Family::MmGroundingDino),
            "clip" => Some(Family::Clip),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: `models list` aligns the column with a width.
        f.pad(self.model_type())
    }
}

impl Manifest {
    /// The manifest built into the binary.
    pub fn embedded() -> Result<Manifest, ModelsError> {
        Manifest::from_toml(EMBEDDED_MANIFEST, EMBEDDED_ORIGIN)
    }

    /// The manifest at `override_path` if there is one, else the built-in one.
    pub fn load(override_path: Option<&Path>) -> Result<Manifest, ModelsError> {
        match override_path {
            None => Manifest::embedded(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ModelsError::ManifestRead { path: path.to_owned(), source })?;
                Manifest::from_toml(&text, &path.display().to_string())
            }
        }
    }

    /// Parses and checks manifest text. `origin` names it in errors (a path, or "the built-in manifest").
    pub fn from_toml(text: &str, origin: &str) -> Result<Manifest, ModelsError> {
        let manifest: Manifest = toml::from_str(text)
            .map_err(|source| ModelsError::ManifestParse { origin: origin.to_owned(), source: Box::new(source) })?;
        manifest.validate().map_err(|reason| ModelsError::ManifestInvalid { origin: origin.to_owned(), reason })?;
        Ok(manifest)
    }

    /// The entry called `name`, if the manifest has one.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The entry called `name`, or an error that lists the names there are.
    pub fn entry(&self, name: &str) -> Result<&ModelEntry, ModelsError> {
        self.get(name).ok_or_else(|| ModelsError::UnknownModel { name: name.to_owned(), known: self.names() })
    }

    /// The names of all entries, comma separated, for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
    }

    fn validate(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for model in &self.models {
            if !seen.insert(model.name.as_str()) {
                return Err(format!("model `{}` is listed twice", model.name));
            }
            model.validate().map_err(|e| format!("model `{}`: {e}", model.name))?;
        }
        Ok(())
    }
}

impl ModelEntry {
    /// The Hub path of the graph this entry runs ([`DEFAULT_GRAPH`] unless the manifest says otherwise).
    pub fn graph(&self) -> &str {
        self.graph.as_deref().unwrap_or(DEFAULT_GRAPH)
    }

    /// The file entry for `path`, if the model has one.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The sum of the known file sizes, and whether every size is known.
    pub fn total_size(&self) -> (u64, bool) {
        let known: u64 = self.files.iter().filter_map(|f| f.size).sum();
        (known, self.files.iter().all(|f| f.size.is_some()))
    }

    fn validate(&self) -> Result<(), String> {
        if !is_safe_name(&self.name) {
            return Err("the name must be ASCII letters, digits, `-`, `_` or `.`, and not start with `.`".to_owned());
        }
        if self.description.trim().is_empty() {
            return Err("the description is empty".to_owned());
        }
        let parts: Vec<&str> = self.repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| !is_safe_name(p)) {
            return Err(format!("repo `{}` is not of the form `owner/name`", self.repo));
        }
        if let Some(export) = &self.export
            && export.trim().is_empty()
        {
            return Err("its export command is empty".to_owned());
        }
        let exported_without_pin = self.export.is_some() && self.revision.is_empty();
        if !exported_without_pin && (self.revision.len() != 40 || !self.revision.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "revision `{}` is not a full 40-digit commit sha; a branch name would let the files change under the \
                 hashes",
                self.revision
            ));
        }
        if self.files.is_empty() {
            return Err("it lists no files".to_owned());
        }
        let mut seen = HashSet::new();
        for file in &self.files {
            if !is_safe_relative_path(&file.path) {
                return Err(format!("file path `{}` must be relative, use `/`, and not contain `..`", file.path));
            }
            if !seen.insert(file.path.as_str()) {
                return Err(format!("file `{}` is listed twice", file.path));
            }
            if let Some(sha) = &file.sha256
                && (sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            {
                return Err(format!("file `{}`: sha256 `{sha}` is not 64 lowercase hex digits", file.path));
            }
        }
        if self.file(self.graph()).is_none() {
            return Err(format!("its graph `{}` is not one of its files", self.graph()));
        }
        Ok(())
    }
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && !p.ends_with(".part")
        && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[model]]
name = "m"
family = "owlv2"
description = "a model"
repo = "owner/repo"
revision = "0123456789abcdef0123456789abcdef01234567"

[[model.file]]
path = "config.json"
size = 3
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

[[model.file]]
path = "onnx/model.onnx"
"#;

    #[test]
    fn embedded_manifest_parses_and_has_the_three_base_models() {
        let m = Manifest::embedded().unwrap();
        for name in ["owlvit-base-patch32", "owlvit-base-patch16", "owlv2-base-patch16"] {
            let e = m.entry(name).unwrap();
            assert_eq!(e.graph(), DEFAULT_GRAPH);
            for required in ["config.json", "preprocessor_config.json", "tokenizer.json", "onnx/model.onnx"] {
                assert!(e.file(required).is_some(), "{name} lacks {required}");
            }
        }
    }

    #[test]
    fn embedded_manifest_has_grounding_dino_in_three_precisions() {
        let m = Manifest::embedded().unwrap();
        for (name, graph) in [
            ("grounding-dino-tiny", "onnx/model.onnx"),
            ("grounding-dino-tiny-quantized", "onnx/model_quantized.onnx"),
            ("grounding-dino-tiny-fp16", "onnx/model_fp16.onnx"),
        ] {
            let e = m.entry(name).unwrap();
            assert_eq!(e.family, Family::GroundingDino, "{name}");
            assert_eq!(e.graph(), graph, "{name}");
            for required in ["config.json", "preprocessor_config.json", "tokenizer.json", graph] {
                assert!(e.file(required).is_some(), "{name} lacks {required}");
            }
        }
    }

    #[test]
    fn embedded_manifest_names_mm_grounding_dino_and_llmdet_as_exports() {
        let m = Manifest::embedded().unwrap();
        for (name, repo) in [
            ("mm-grounding-dino-tiny", "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"),
            ("llmdet-tiny", "iSEE-Laboratory/llmdet_tiny"),
        ] {
            let e = m.entry(name).unwrap();
            assert_eq!((e.family, e.repo.as_str()), (Family::MmGroundingDino, repo), "{name}");
            let export = e.export.as_deref().unwrap();
            assert!(export.starts_with("models/export_gdino.py --from-pretrained ") && export.ends_with(repo));
            assert!(e.file("onnx/text_encoder.onnx").is_some() && e.file("onnx/detector.onnx").is_some());
        }
    }

    #[test]
    fn embedded_manifest_has_clip_with_both_graphs_pinned() {
        let m = Manifest::embedded().unwrap();
        let e = m.entry("clip-vit-base-patch32").unwrap();
        assert_eq!((e.family, e.repo.as_str()), (Family::Clip, "Xenova/clip-vit-base-patch32"));
        assert_eq!(e.revision, "d15189d7028b43f1d3e65039190477f6af591c2a");
        assert_eq!(e.graph(), "onnx/vision_model.onnx");
        for required in ["config.json", "preprocessor_config.json", "tokenizer.json"] {
            assert!(e.file(required).is_some(), "lacks {required}");
        }
        for graph in ["onnx/text_model.onnx", "onnx/vision_model.onnx"] {
            let f = e.file(graph).unwrap();
            assert!(f.size.is_some() && f.sha256.is_some(), "{graph} is pinned by size and hash");
        }
        // X-CLIP has no ONNX on the Hub: no entry (the manifest's comment names the export instead).
        assert!(m.models.iter().all(|m| !m.name.contains("xclip")));
    }

    #[test]
    fn family_names_are_config_model_types() {
        for f in [Family::Owlvit, Family::Owlv2, Family::GroundingDino, Family::MmGroundingDino, Family::Clip] {
            assert_eq!(Family::from_model_type(f.model_type()), Some(f));
            let text = GOOD.replace("family = \"owlv2\"", &format!("family = \"{f}\""));
            assert_eq!(Manifest::from_toml(&text, "test").unwrap().models[0].family, f);
        }
    }

    #[test]
    fn parses_a_minimal_manifest() {
        let m = Manifest::from_toml(GOOD, "test").unwrap();
        let e = m.entry("m").unwrap();
        assert_eq!(e.family, Family::Owlv2);
        assert_eq!(e.files.len(), 2);
        assert_eq!(e.files[1].sha256, None);
        assert_eq!(e.total_size(), (3, false));
    }

    #[test]
    fn rejects_unknown_keys() {
        let text = GOOD.replace("size = 3", "size = 3\nsha265 = \"x\"");
        let err = Manifest::from_toml(&text, "test").unwrap_err().to_string();
        assert!(err.contains("sha265"), "{err}");
    }

    #[test]
    fn rejects_a_branch_as_revision() {
        let text = GOOD.replace("0123456789abcdef0123456789abcdef01234567", "main");
        let err = Manifest::from_toml(&text, "test").unwrap_err().to_string();
        assert!(err.contains("40-digit"), "{err}");
    }

    #[test]
    fn rejects_paths_that_escape_the_model_dir() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "onnx\\\\model.onnx"] {
            let text = GOOD.replace("path = \"config.json\"", &format!("path = \"{bad}\""));
            assert!(Manifest::from_toml(&text, "test").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rejects_a_malformed_hash() {
        let text = GOOD.replace("ba7816bf", "BA7816BF");
        assert!(Manifest::from_toml(&text, "test").is_err());
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let m = Manifest::from_toml(GOOD, "test").unwrap();
        let err = m.entry("nope").unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("known models: m"), "{err}");
    }
}
