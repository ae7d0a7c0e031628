//! Where fetched models live on disk.
//!
//! The root is `$LOOKOUT_CACHE` when set, else the platform cache directory (`$XDG_CACHE_HOME/lookout/models`,
//! usually `~/.cache/lookout/models`). Each model gets `<root>/<name>/`, laid out exactly like a snapshot of its Hub
//! repository (`config.json`, `onnx/model.onnx`, ...), so the directory can also be passed to `--model` as it is,
//! copied to another machine, or filled by hand. A download in progress is `<file>.part` next to its final name.
//!
//! Hash records: when the manifest has no SHA-256 for a file but the server stated one (the Hub's `X-Linked-Etag`
//! for a Git LFS file) and the download matched it, that hash is kept in `<file>.sha256` next to the file, in the
//! format of `sha256sum` (`<64 hex digits>  <file name>`, so `sha256sum -c model.onnx.sha256` works in that
//! directory). Later runs check the file against the record without the network. A file with neither a manifest hash
//! nor a record is checked by size only. The record is written (to a temporary name, then renamed) before the file is
//! renamed into place, and removed when a file is put in place without one, so a record never outlives its file's
//! check.

use std::io;
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

/// Where the SHA-256 that `path` was checked against is recorded when the manifest has none.
pub(crate) fn hash_record_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".sha256");
    path.with_file_name(name)
}

/// The SHA-256 recorded for `path`: `None` when there is no record, an error when it cannot be read or is not a
/// record (so the caller fetches the file again rather than trust it).
pub(crate) fn read_hash_record(path: &Path) -> io::Result<Option<String>> {
    let record = hash_record_path(path);
    let text = match std::fs::read_to_string(&record) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match text.split_whitespace().next() {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(Some(h.to_owned()))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not start with a lowercase SHA-256", record.display()),
        )),
    }
}

/// Records `sha256` for `path` (written to a temporary name, then renamed, so a record is whole or absent).
pub(crate) fn write_hash_record(path: &Path, sha256: &str) -> io::Result<()> {
    let record = hash_record_path(path);
    let mut tmp_name = record.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = record.with_file_name(tmp_name);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::write(&tmp, format!("{sha256}  {name}\n"))?;
    std::fs::rename(&tmp, &record)
}

/// Removes the record of `path`, if there is one.
pub(crate) fn remove_hash_record(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(hash_record_path(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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
    fn hash_records_round_trip_and_refuse_what_is_not_a_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("model.onnx");
        assert_eq!(hash_record_path(&file), tmp.path().join("model.onnx.sha256"));
        assert_eq!(read_hash_record(&file).unwrap(), None);

        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        write_hash_record(&file, h).unwrap();
        assert_eq!(std::fs::read_to_string(hash_record_path(&file)).unwrap(), format!("{h}  model.onnx\n"));
        assert_eq!(read_hash_record(&file).unwrap().as_deref(), Some(h));

        std::fs::write(hash_record_path(&file), "E3B0  model.onnx\n").unwrap();
        assert!(read_hash_record(&file).is_err());

        remove_hash_record(&file).unwrap();
        remove_hash_record(&file).unwrap();
        assert!(!hash_record_path(&file).exists());
    }

    #[test]
    fn part_path_appends_a_suffix() {
        assert_eq!(part_path(Path::new("/a/onnx/model.onnx")), Path::new("/a/onnx/model.onnx.part"));
    }
}
