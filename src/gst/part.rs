//! A file written under a temporary name (`.part`) next to its final name, and renamed only once it is whole.
//!
//! The clips, the evidence and the annotated video are written this way: a filesink (or lookout itself) writes
//! the temporary, [`PartFile::finish`] syncs it to disk and renames it, and a [`PartFile`] dropped without being
//! finished removes the temporary. So a file under its final name is always whole, even after a crash or a
//! power cut (the sync comes before the rename), and a failed write leaves nothing behind but, after a crash,
//! a `.part` file that the next run removes (`sink::run` and `sink::retention` know the names).
//!
//! A finished file never replaces another: the rename refuses a final name that exists
//! ([`PartError::Exists`]), so evidence already on disk is never overwritten, whatever the caller asks.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// How the temporary is named, next to the final `<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartName {
    /// `.<name>.part`: hidden (clips and evidence).
    Hidden,
    /// `<name>.part` (the annotated video).
    Visible,
}

impl PartName {
    /// The temporary's path for the final `path`; `None` when `path` has no file name.
    pub fn part_path(self, path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?.to_string_lossy();
        Some(path.with_file_name(match self {
            PartName::Hidden => format!(".{name}.part"),
            PartName::Visible => format!("{name}.part"),
        }))
    }
}

/// What failed, and on which file. Each caller words it its own way (its error type names the file).
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// The final path has no file name.
    #[error("{} has no file name", path.display())]
    NoFileName { path: PathBuf },
    /// The final path's directory could not be created.
    #[error("cannot create directory {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: io::Error },
    /// The temporary could not be created.
    #[error("cannot create {}: {error}", part.display())]
    Create { part: PathBuf, error: io::Error },
    /// The temporary could not be synced to disk (or opened to sync it: whoever wrote it never created it).
    #[error("cannot sync {}: {error}", part.display())]
    Sync { part: PathBuf, error: io::Error },
    /// The temporary could not be given its final name.
    #[error("cannot rename {} to {}: {error}", from.display(), to.display())]
    Rename { from: PathBuf, to: PathBuf, error: io::Error },
    /// The final name is taken: the file there is kept, and the new one is not written.
    #[error("{} already exists and is never overwritten; the new file was not kept", path.display())]
    Exists { path: PathBuf },
}

/// Renames `from` to `to` unless `to` exists, atomically (`renameat2` with `RENAME_NOREPLACE`). On a file system
/// without that flag, a hard link (which also refuses an existing name) and the removal of `from` do the same.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory; no memory is shared.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(error),
    }
}

/// A file being written under its temporary name: removed when dropped unless finished.
#[derive(Debug)]
pub struct PartFile {
    path: PathBuf,
    part: PathBuf,
    /// Open from [`PartFile::create`] until finished; `None` for a file another writer creates.
    file: Option<File>,
    done: bool,
}

impl PartFile {
    /// Creates (truncating) the temporary for `path`, creating `path`'s directory if needed, and keeps it open.
    ///
    /// A filesink may write it too (it opens the same file by its path): opening it here gives the OS's error,
    /// naming the file, where filesink would report only a GStreamer error.
    pub fn create(path: &Path, name: PartName) -> Result<Self, PartError> {
        let part = name.part_path(path).ok_or_else(|| PartError::NoFileName { path: path.to_path_buf() })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| PartError::CreateDir { dir: dir.to_path_buf(), error })?;
        }
        let file = File::create(&part).map_err(|error| PartError::Create { part: part.clone(), error })?;
        Ok(PartFile { path: path.to_path_buf(), part, file: Some(file), done: false })
    }

    /// The temporary for `path`, which another writer (a filesink) creates: nothing is created here, and
    /// [`PartFile::finish`] opens it to sync it.
    pub fn named(path: &Path, name: PartName) -> Result<Self, PartError> {
        let part = name.part_path(path).ok_or_else(|| PartError::NoFileName { path: path.to_path_buf() })?;
        Ok(PartFile { path: path.to_path_buf(), part, file: None, done: false })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary's path, to write to.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// The open temporary, when it was made by [`PartFile::create`].
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Syncs the temporary to disk and gives it its final name, which it returns. On an error the temporary is
    /// removed, and nothing new is under the final name.
    pub fn finish(mut self) -> Result<PathBuf, PartError> {
        // Synced before the rename, so that after a power cut the final name never points at missing data. A
        // filesink wrote through its own descriptor; syncing any descriptor of the file syncs the same file.
        let synced = match self.file.take() {
            Some(file) => file.sync_all(),
            None => File::open(&self.part).and_then(|f| f.sync_all()),
        };
        synced.map_err(|error| PartError::Sync { part: self.part.clone(), error })?;
        rename_no_replace(&self.part, &self.path).map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => PartError::Exists { path: self.path.clone() },
            _ => PartError::Rename { from: self.part.clone(), to: self.path.clone(), error },
        })?;
        self.done = true;
        Ok(self.path.clone())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn names_follow_each_convention() {
        let p = Path::new("out/cam/ev1.mp4");
        assert_eq!(PartName::Hidden.part_path(p).unwrap(), Path::new("out/cam/.ev1.mp4.part"));
        assert_eq!(PartName::Visible.part_path(p).unwrap(), Path::new("out/cam/ev1.mp4.part"));
        assert_eq!(PartName::Hidden.part_path(Path::new("/")), None);
        assert!(matches!(PartFile::create(Path::new("/"), PartName::Hidden), Err(PartError::NoFileName { .. })));
    }

    #[test]
    fn a_finished_file_never_replaces_one_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ev1.mp4");
        std::fs::write(&out, b"the first run's evidence").unwrap();
        let part = PartFile::create(&out, PartName::Hidden).unwrap();
        part.file().unwrap().write_all(b"a second file of the same name").unwrap();
        let err = part.finish().unwrap_err();
        assert!(matches!(err, PartError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("never overwritten"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"the first run's evidence");
        assert!(!dir.path().join(".ev1.mp4.part").exists(), "the temporary is removed");
    }

    #[test]
    fn finish_renames_a_whole_file_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/sub/a.json");
        let part = PartFile::create(&out, PartName::Hidden).unwrap();
        assert_eq!(part.part_path(), dir.path().join("new/sub/.a.json.part"));
        part.file().unwrap().write_all(b"whole").unwrap();
        assert!(!out.exists(), "nothing under the final name before it is finished");
        assert_eq!(part.finish().unwrap(), out);
        assert_eq!(std::fs::read(&out).unwrap(), b"whole");
        assert!(!dir.path().join("new/sub/.a.json.part").exists());
    }

    #[test]
    fn a_failed_write_leaves_no_partial_file_under_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        // Dropped half-written (an error on the way): the temporary goes, the final name never appears.
        let out = dir.path().join("a.mp4");
        let part = PartFile::create(&out, PartName::Visible).unwrap();
        part.file().unwrap().write_all(b"half").unwrap();
        let tmp = part.part_path().to_path_buf();
        drop(part);
        assert!(!tmp.exists() && !out.exists());

        // A final name that is taken (here by a directory that is not empty): refused, the temporary goes, and
        // what was under the final name is untouched.
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("keep"), b"x").unwrap();
        let part = PartFile::create(&taken, PartName::Hidden).unwrap();
        part.file().unwrap().write_all(b"half").unwrap();
        let tmp = part.part_path().to_path_buf();
        let error = part.finish().unwrap_err();
        assert!(matches!(error, PartError::Exists { .. }), "{error:?}");
        assert!(!tmp.exists() && taken.join("keep").exists());

        // A rename that fails (the temporary vanished under the writer): an error naming it; nothing appears.
        let out = dir.path().join("c.mp4");
        let part = PartFile::create(&out, PartName::Hidden).unwrap();
        part.file().unwrap().write_all(b"half").unwrap();
        std::fs::remove_file(part.part_path()).unwrap();
        let error = part.finish().unwrap_err();
        assert!(matches!(error, PartError::Rename { .. }), "{error:?}");
        assert!(error.to_string().contains(".c.mp4.part"), "{error}");
        assert!(!out.exists());

        // Written by another writer that never created it: syncing fails, naming the temporary; nothing appears.
        let out = dir.path().join("b.mp4");
        let part = PartFile::named(&out, PartName::Hidden).unwrap();
        assert!(part.file().is_none());
        let error = part.finish().unwrap_err();
        assert!(matches!(&error, PartError::Sync { part, .. } if part.ends_with(".b.mp4.part")), "{error:?}");
        assert!(!out.exists());
    }

    #[test]
    fn a_file_another_writer_made_is_renamed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c.mp4");
        let part = PartFile::named(&out, PartName::Hidden).unwrap();
        std::fs::write(part.part_path(), b"muxed").unwrap();
        part.finish().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"muxed");
        assert!(!dir.path().join(".c.mp4.part").exists());
    }
}
