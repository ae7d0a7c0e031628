//! Where fetched models live on disk.
//!
//! The root is `$LOOKOUT_CACHE` when set, else the platform cache directory (`$XDG_CACHE_HOME/lookout/models`,
//! usually `~/.cache/lookout/models`). Each model gets `<root>/<name>/`, laid out exactly like a snapshot of its Hub
//! repository (`config.json`, `onnx/model.onnx`, ...), so the directory can also be passed to `--model` as it is,
//! copied to another machine, or filled by hand. A download in progress is `<file>.part` next to its final name.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{FileEntry, Manifest, ModelEntry};
use super::{CACHE_ENV, ModelsError};

/// The directory that holds one subdirectory per fetched model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// How much of a model's files are in its cache directory, judged by presence and size (hashes are checked by
/// [`super::fetch_into`], not here: hashing 600 MB on every start would be slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    /// Every file is there, with the size the manifest gives (where it gives one).
    Complete,
    /// Some files are there, or a `.part` of one: a fetch will resume.
    Partial,
    /// Nothing is there yet.
    Absent,
}

/// One row of `lookout models list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedModel {
    /// The manifest entry.
    pub entry: ModelEntry,
    /// Its directory in the cache.
    pub dir: PathBuf,
    /// Whether it is there.
    pub status: CacheStatus,
}

impl Cache {
    /// The cache named by `$LOOKOUT_CACHE`, or the platform cache directory.
    pub fn from_env() -> Result<Cache, ModelsError> {
        if let Some(root) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
            return Ok(Cache::at(PathBuf::from(root)));
        }
        let base = dirs::cache_dir().ok_or(ModelsError::NoCacheDir)?;
        Ok(Cache::at(base.join("lookout").join("models")))
    }

    /// A cache rooted at `root` (created on first fetch).
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The directory that holds the models.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the model called `name`.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// How much of `entry` is in the cache.
    pub fn status(&self, entry: &ModelEntry) -> CacheStatus {
        status_of(&self.model_dir(&entry.name), entry)
    }

    /// Every entry of `manifest`, with whether it is in the cache.
    pub fn list(&self, manifest: &Manifest) -> Vec<ListedModel> {
        manifest
            .models
            .iter()
            .map(|entry| ListedModel {
                entry: entry.clone(),
                dir: self.model_dir(&entry.name),
                status: self.status(entry),
            })
            .collect()
    }
}

/// How much of `entry` is in `dir`.
pub(crate) fn status_of(dir: &Path, entry: &ModelEntry) -> CacheStatus {
    let mut complete = 0;
    let mut started = false;
    for file in &entry.files {
        let path = local_path(dir, file);
        if is_present(&path, file) {
            complete += 1;
        } else if path.exists() || part_path(&path).exists() {
            started = true;
        }
    }
    if complete == entry.files.len() {
        CacheStatus::Complete
    } else if complete > 0 || started {
        CacheStatus::Partial
    } else {
        CacheStatus::Absent
    }
}

/// The files of `entry` that are not in `dir` with the right size.
pub(crate) fn missing_files<'a>(dir: &Path, entry: &'a ModelEntry) -> Vec<&'a FileEntry> {
    entry.files.iter().filter(|f| !is_present(&local_path(dir, f), f)).collect()
}

/// Where `file` goes under `dir` (its repository path, with the platform's separators).
pub(crate) fn local_path(dir: &Path, file: &FileEntry) -> PathBuf {
    file.path.split('/').fold(dir.to_owned(), |p, part| p.join(part))
}

/// The temporary name a download is written under until it is verified.
pub(crate) fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

fn is_present(path: &Path, file: &FileEntry) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => file.size.is_none_or(|size| meta.len() == size),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ModelEntry {
        crate::models::tests::manifest().models.remove(0)
    }

    #[test]
    fn status_follows_the_files_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        let e = entry();
        let dir = cache.model_dir("m");
        assert_eq!(cache.status(&e), CacheStatus::Absent);

        std::fs::create_dir_all(dir.join("onnx")).unwrap();
        std::fs::write(dir.join("onnx/model.onnx.part"), b"x").unwrap();
        assert_eq!(cache.status(&e), CacheStatus::Partial);

        std::fs::write(dir.join("onnx/model.onnx"), b"anything").unwrap();
        std::fs::write(dir.join("config.json"), b"{}}").unwrap();
        assert_eq!(cache.status(&e), CacheStatus::Partial, "config.json has the wrong size");
        assert_eq!(missing_files(&dir, &e).len(), 1);

        std::fs::write(dir.join("config.json"), b"{}").unwrap();
        assert_eq!(cache.status(&e), CacheStatus::Complete);
        assert!(missing_files(&dir, &e).is_empty());
    }

    #[test]
    fn part_path_appends_a_suffix() {
        assert_eq!(part_path(Path::new("/a/onnx/model.onnx")), Path::new("/a/onnx/model.onnx.part"));
    }
}
