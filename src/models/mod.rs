//! The manifest of downloadable models, the model cache, and the verified downloader.
//!
//! A model is a directory in the Hugging Face layout (`config.json`, `preprocessor_config.json`, `tokenizer.json`,
//! `onnx/*.onnx`). Users name one of two ways, and [`resolve`] turns either into a directory:
//! - a path to such a directory, used as it is;
//! - a name from the manifest (`owlvit-base-patch32`), which lives in the cache ([`Cache`]) and is fetched from the
//!   Hub on first use when the caller allows it ([`OnMissing::Fetch`]).
//!
//! The parts:
//! - [`manifest`]: the TOML manifest (embedded in the binary, or another file) and its checks.
//! - [`cache`]: where fetched models live, and whether each one is there.
//! - [`fetch`]: the downloader: resumes `.part` files with HTTP `Range`, checks size and SHA-256, and renames into
//!   place only what passed. Its module docs give the exact rules.
//! - [`info`]: what a model directory holds (architecture, graphs, layouts, missing files).
//!
//! Environment: `LOOKOUT_CACHE` moves the cache; `LOOKOUT_HF_ENDPOINT` points the downloader at a mirror.

pub mod cache;
pub mod fetch;
pub mod info;
pub mod manifest;

use std::path::{Path, PathBuf};

pub use cache::{Cache, CacheStatus, ListedModel};
pub use fetch::{Check, FetchOptions, FetchReport, FileAction, FileReport, Progress, fetch_into};
pub use info::{Layout, ModelInfo, OnnxFile, info};
pub use manifest::{Family, FileEntry, Manifest, ModelEntry};

/// The Hub that models are fetched from unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Environment variable that replaces [`DEFAULT_ENDPOINT`] (a mirror, or a local server in tests).
pub const ENDPOINT_ENV: &str = "LOOKOUT_HF_ENDPOINT";
/// Environment variable that moves the model cache.
pub const CACHE_ENV: &str = "LOOKOUT_CACHE";

/// Errors of the models module. Each names the file, URL or model involved and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// The manifest file could not be read.
    #[error("could not read the model manifest {path}: {source}; check the path given for the manifest")]
    ManifestRead {
        /// The manifest path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML of the expected shape.
    #[error(
        "the model manifest {origin} is not valid: {source}; the format is described at the top of models/manifest.toml"
    )]
    ManifestParse {
        /// The manifest path, or the built-in one.
        origin: String,
        /// The parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The manifest parsed, but breaks a rule (duplicate name, branch as revision, bad hash, ...).
    #[error("the model manifest {origin} is not valid: {reason}")]
    ManifestInvalid {
        /// The manifest path, or the built-in one.
        origin: String,
        /// Which rule, for which model.
        reason: String,
    },
    /// A name that is neither a directory nor a manifest entry.
    #[error(
        "`{name}` is not a model directory and not a model in the manifest (known models: {known}); pass a directory \
         in the Hugging Face layout or one of those names"
    )]
    UnknownModel {
        /// What the user typed.
        name: String,
        /// The manifest's names, comma separated.
        known: String,
    },
    /// No cache directory could be determined.
    #[error("no cache directory for models on this system; set {CACHE_ENV} to a writable directory")]
    NoCacheDir,
    /// A manifest model that is not (wholly) in the cache, and the caller did not allow a fetch.
    #[error(
        "model `{name}` is not in the cache at {dir} (missing: {missing}); fetch it first (`lookout models fetch \
         {name}`), or place the files there by hand, or pass a model directory instead"
    )]
    NotFetched {
        /// The model name.
        name: String,
        /// Its cache directory.
        dir: PathBuf,
        /// The missing files, comma separated.
        missing: String,
    },
    /// A manifest model that the Hub has no ONNX export of, and that is not in the cache yet.
    #[error(
        "model `{name}` has no ONNX export on the Hub, so lookout cannot download it: make it once on a machine with \
         network with `python {command} --out DIR` (see models/GROUNDING_DINO.md), then copy DIR to {dir} (missing: \
         {missing}), or pass the directory with -m"
    )]
    NeedsExport {
        /// The model name.
        name: String,
        /// Its cache directory.
        dir: PathBuf,
        /// The manifest's export command.
        command: String,
        /// The missing files, comma separated.
        missing: String,
    },
    /// A file-system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done ("create", "rename into place", ...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The server could not be reached (no network, refused, DNS, TLS, timeout before any response).
    #[error(
        "could not download {url}: {reason}. Without network, download these files on another machine and place \
         them in {dir}, then run the same command again (files in place are checked, not downloaded):\n{files}"
    )]
    Unreachable {
        /// The URL that failed.
        url: String,
        /// The transport's message.
        reason: String,
        /// The model directory the files belong in.
        dir: PathBuf,
        /// One line per file: its URL and where it goes.
        files: String,
    },
    /// The server answered with a status that is not the file.
    #[error("could not download {url}: the server answered HTTP {status}; {hint}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What to do about this status.
        hint: String,
    },
    /// The transfer stopped midway, and every attempt was used. The partial file is kept.
    #[error(
        "the download of {url} stopped after {received} of {} bytes ({reason}); the partial file {part} is kept: run \
         the same command again to resume it",
        expected.map_or_else(|| "?".to_owned(), |e| e.to_string())
    )]
    Interrupted {
        /// The URL.
        url: String,
        /// The `.part` file that holds what arrived.
        part: PathBuf,
        /// Bytes in the `.part`.
        received: u64,
        /// The file's size, when known.
        expected: Option<u64>,
        /// Why it stopped.
        reason: String,
    },
    /// The server sent something other than what was asked for.
    #[error("could not download {url}: {reason}; run the same command again")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A file has a different size from the manifest's.
    #[error(
        "{file} from {url} has {actual} bytes but the manifest expects {expected}; nothing was kept. If this \
         repeats, the file on the server is not the one the manifest pins: fix the manifest entry"
    )]
    SizeMismatch {
        /// Where the file was going.
        file: PathBuf,
        /// Its URL.
        url: String,
        /// Size from the manifest (or the server, when the manifest has none).
        expected: u64,
        /// Size received or announced.
        actual: u64,
    },
    /// A file's SHA-256 is not the manifest's. The download was deleted.
    #[error(
        "{file} from {url} has sha256 {actual} but the manifest expects {expected}; the download was deleted. Run \
         the same command again to retry; if it repeats, the file on the server is not the one the manifest pins: \
         fix the manifest entry"
    )]
    HashMismatch {
        /// Where the file was going.
        file: PathBuf,
        /// Its URL.
        url: String,
        /// SHA-256 from the manifest.
        expected: String,
        /// SHA-256 of what arrived.
        actual: String,
    },
    /// A file without a hash in the manifest does not match the SHA-256 the server stated for it (`X-Linked-Etag`).
    /// The download was deleted.
    #[error(
        "{file} from {url} has sha256 {actual} but the server's X-Linked-Etag says {expected}; the download was \
         deleted. Run the same command again to retry; if it repeats, the server or a proxy in between is serving \
         other bytes: download the file another way, check it, and pin its sha256 in the manifest"
    )]
    ServerHashMismatch {
        /// Where the file was going.
        file: PathBuf,
        /// Its resolve URL, with any credentials removed (never the storage URL it redirects to, which is signed).
        url: String,
        /// SHA-256 from the server's `X-Linked-Etag`.
        expected: String,
        /// SHA-256 of what arrived.
        actual: String,
    },
    /// `info` was given something that is not a directory.
    #[error("{path} is not a directory; pass a model directory (with config.json and onnx/)")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// `config.json` is not valid JSON.
    #[error("{path} is not valid JSON: {source}; fetch the model again or fix the file")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
}

/// What [`resolve`] does with a manifest model that is not in the cache yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnMissing {
    /// Fail with [`ModelsError::NotFetched`], which says how to fetch it.
    Fail,
    /// Download it now.
    Fetch(FetchOptions),
}

impl Manifest {
    /// Turns `name_or_dir` into a model directory: an existing directory is returned as it is; a manifest name
    /// becomes its directory in `cache`, which must be complete, or is fetched when `on_missing` allows.
    pub fn resolve(&self, name_or_dir: &str, cache: &Cache, on_missing: &OnMissing) -> Result<PathBuf, ModelsError> {
        let as_path = Path::new(name_or_dir);
        if as_path.is_dir() {
            return Ok(as_path.to_owned());
        }
        let entry = self.entry(name_or_dir)?;
        let dir = cache.model_dir(&entry.name);
        let missing = cache::missing_files(&dir, entry);
        if missing.is_empty() {
            return Ok(dir);
        }
        if let Some(command) = &entry.export {
            return Err(ModelsError::NeedsExport {
                name: entry.name.clone(),
                dir,
                command: command.clone(),
                missing: missing.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
        match on_missing {
            OnMissing::Fail => Err(ModelsError::NotFetched {
                name: entry.name.clone(),
                dir,
                missing: missing.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", "),
            }),
            OnMissing::Fetch(options) => Ok(fetch_into(entry, &dir, options)?.dir),
        }
    }

    /// Every entry, with whether it is in `cache`.
    pub fn list(&self, cache: &Cache) -> Vec<ListedModel> {
        cache.list(self)
    }
}

/// [`Manifest::resolve`] with the built-in manifest and the cache from the environment.
pub fn resolve(name_or_dir: &str, on_missing: &OnMissing) -> Result<PathBuf, ModelsError> {
    if Path::new(name_or_dir).is_dir() {
        return Ok(PathBuf::from(name_or_dir));
    }
    Manifest::embedded()?.resolve(name_or_dir, &Cache::from_env()?, on_missing)
}

/// Downloads and verifies `entry` into its directory in the cache from the environment, and returns that directory.
/// `base_url` replaces `$LOOKOUT_HF_ENDPOINT` and the default Hub.
pub fn fetch(entry: &ModelEntry, base_url: Option<&str>, progress: Progress) -> Result<PathBuf, ModelsError> {
    let dir = Cache::from_env()?.model_dir(&entry.name);
    let options = FetchOptions { base_url: base_url.map(str::to_owned), progress, ..FetchOptions::default() };
    Ok(fetch_into(entry, &dir, &options)?.dir)
}

/// Every entry of the built-in manifest, with whether it is in the cache from the environment.
pub fn list() -> Result<Vec<ListedModel>, ModelsError> {
    Ok(Manifest::embedded()?.list(&Cache::from_env()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn manifest() -> Manifest {
        Manifest::from_toml(
            r#"
[[model]]
name = "m"
family = "owlvit"
description = "d"
repo = "o/r"
revision = "0123456789abcdef0123456789abcdef01234567"
[[model.file]]
path = "config.json"
size = 2
[[model.file]]
path = "onnx/model.onnx"
"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn resolve_passes_directories_through() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        let dir = tmp.path().to_str().unwrap();
        assert_eq!(manifest().resolve(dir, &cache, &OnMissing::Fail).unwrap(), tmp.path());
    }

    #[test]
    fn resolve_finds_a_complete_cache_entry_and_refuses_an_incomplete_one() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        let err = manifest().resolve("m", &cache, &OnMissing::Fail).unwrap_err().to_string();
        assert!(err.contains("model `m` is not in the cache") && err.contains("config.json, onnx/model.onnx"), "{err}");
        assert!(err.contains("lookout models fetch m"), "{err}");

        std::fs::create_dir_all(cache.model_dir("m").join("onnx")).unwrap();
        std::fs::write(cache.model_dir("m").join("config.json"), b"{}").unwrap();
        std::fs::write(cache.model_dir("m").join("onnx/model.onnx"), b"graph").unwrap();
        assert_eq!(manifest().resolve("m", &cache, &OnMissing::Fail).unwrap(), cache.model_dir("m"));
        assert_eq!(manifest().list(&cache)[0].status, CacheStatus::Complete);
    }

    #[test]
    fn resolve_names_unknown_models() {
        let tmp = tempfile::tempdir().unwrap();
        let err = manifest().resolve("owl", &Cache::at(tmp.path()), &OnMissing::Fail).unwrap_err().to_string();
        assert!(err.contains("`owl` is not a model directory") && err.contains("known models: m"), "{err}");
    }

    #[test]
    fn an_export_entry_says_how_to_make_it_and_never_downloads() {
        let text = r#"
[[model]]
name = "mm"
family = "mm-grounding-dino"
description = "d"
repo = "o/r"
export = "models/export_gdino.py --from-pretrained o/r"
[[model.file]]
path = "config.json"
[[model.file]]
path = "onnx/model.onnx"
"#;
        let m = Manifest::from_toml(text, "test").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        // An unreachable endpoint: a download attempt would fail with Unreachable, not NeedsExport.
        let fetch =
            OnMissing::Fetch(FetchOptions { base_url: Some("http://127.0.0.1:9".into()), ..FetchOptions::default() });
        for on_missing in [OnMissing::Fail, fetch] {
            let err = m.resolve("mm", &cache, &on_missing).unwrap_err();
            assert!(matches!(err, ModelsError::NeedsExport { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains("python models/export_gdino.py --from-pretrained o/r --out DIR"), "{err}");
            assert!(err.contains(&cache.model_dir("mm").display().to_string()) && !err.contains('\n'), "{err}");
        }
        std::fs::create_dir_all(cache.model_dir("mm").join("onnx")).unwrap();
        std::fs::write(cache.model_dir("mm").join("config.json"), b"{}").unwrap();
        std::fs::write(cache.model_dir("mm").join("onnx/model.onnx"), b"graph").unwrap();
        assert_eq!(m.resolve("mm", &cache, &OnMissing::Fail).unwrap(), cache.model_dir("mm"));

        // Without `export`, a revision is still required; an empty export command is refused.
        let err = Manifest::from_toml(&text.replace("export = ", "# "), "t").unwrap_err().to_string();
        assert!(err.contains("revision"), "{err}");
        let err = Manifest::from_toml(&text.replace("models/export_gdino.py --from-pretrained o/r", " "), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("export command is empty"), "{err}");
    }
}
