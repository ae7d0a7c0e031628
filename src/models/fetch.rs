//! The verified downloader.
//!
//! Each file of a manifest entry is fetched from `{base}/{repo}/resolve/{revision}/{path}`, the Hub's download URL,
//! which answers with the file or a redirect to its storage. The rules, per file, in order:
//!
//! 1. A file already at its final name that passes its checks is kept and not downloaded again. One that fails them
//!    is deleted and fetched anew.
//! 2. Bytes go to `<file>.part`. A `.part` left by an earlier run is resumed with `Range: bytes=<len>-`: a `206`
//!    appends, a `200` (a server that ignores `Range`) starts the file again from byte 0, a `416` with the same total
//!    means the `.part` is already whole.
//! 3. The SHA-256 is computed while the bytes are written (the resumed prefix is hashed from disk first).
//! 4. The size, then the hash, are checked against the manifest. A mismatch deletes the `.part` and names the file,
//!    the expected and the actual value.
//! 5. A file with no hash in the manifest is checked against the SHA-256 the Hub states for it, when it states one:
//!    for a Git LFS file (every ONNX graph) the resolve URL's response carries `X-Linked-Etag: "<sha256>"` (the LFS
//!    object id, the SHA-256 of the content), usually on the `302` to the storage rather than on the final response.
//!    So redirects are followed here, not by the HTTP client (at most [`MAX_REDIRECTS`] per request), and the header
//!    is read from every response of the endpoint's own origin (the storage's are not trusted for it). This is the
//!    header `huggingface_hub` takes as a file's etag (`X-Linked-Etag`, else `ETag`) after stripping a `W/` prefix and
//!    the quotes; here only `X-Linked-Etag` counts, and only when it is 64 hex digits: a plain `ETag`, and the
//!    `X-Linked-Etag` of a file kept in git rather than LFS, is the git blob's SHA-1 (40 digits) or a server's own
//!    validator, not a hash of the content. A match is recorded next to the file (`<file>.sha256`, see
//!    [`super::cache`]) so later runs check the file against it without the network; a mismatch deletes the `.part`
//!    and names the file, the resolve URL, and both hashes. A file with neither is checked by size only, with a
//!    warning.
//! 6. Only a verified `.part` is renamed to the final name, so a model directory never holds a half-written file
//!    under a real name.
//!
//! Retries: a transfer that stops after the response started (a reset, a read timeout, a short body) is resumed up to
//! [`FetchOptions::max_attempts`] times in the same call, waiting `attempt * retry_backoff_ms` in between. A server
//! that cannot be reached at all is not retried: the error says how to place the files by hand instead.
//!
//! Every loop is bounded: files by the manifest, attempts by `max_attempts`, bytes by the size the manifest or the
//! server gives (or [`MAX_FILE_BYTES`]), and each read by the read timeout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::cache::{
    hash_record_path, local_path, missing_files, part_path, read_hash_record, remove_hash_record, write_hash_record,
};
use super::manifest::{FileEntry, ModelEntry};
use super::{DEFAULT_ENDPOINT, ENDPOINT_ENV, ModelsError};
use crate::redact::redact_url;

/// Default for [`FetchOptions::connect_timeout_ms`].
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 15_000;
/// Default for [`FetchOptions::read_timeout_ms`].
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 60_000;
/// Default for [`FetchOptions::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default for [`FetchOptions::retry_backoff_ms`].
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1_000;
/// The most bytes accepted for one file whose size neither the manifest nor the server states.
pub const MAX_FILE_BYTES: u64 = 64 << 30;
/// Redirects followed per request. The Hub answers a Git LFS file with one (to its storage) and a renamed repository
/// with one more; ten is what HTTP clients commonly allow.
pub const MAX_REDIRECTS: u32 = 10;
/// The header in which the Hub states a Git LFS file's SHA-256 (its LFS object id), on the resolve URL's response.
const LINKED_ETAG: &str = "x-linked-etag";

const CHUNK_BYTES: usize = 256 << 10;
/// `read` may return `ErrorKind::Interrupted` (EINTR) without progress; this many in a row is treated as a failure.
const MAX_EINTR_IN_A_ROW: u32 = 100;

/// Whether to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A bar per file on stderr (bytes, rate, ETA) when stderr is a terminal; nothing otherwise.
    #[default]
    Auto,
    /// Never draw.
    Hidden,
}

/// How to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// The Hub's base URL. Defaults to `$LOOKOUT_HF_ENDPOINT`, else `https://huggingface.co`.
    pub base_url: Option<String>,
    /// Whether to draw progress. Defaults to [`Progress::Auto`].
    pub progress: Progress,
    /// Limit on resolving the host and opening the connection. Defaults to [`DEFAULT_CONNECT_TIMEOUT_MS`].
    pub connect_timeout_ms: u64,
    /// Limit on waiting for the response headers, and on each read of the body. Defaults to
    /// [`DEFAULT_READ_TIMEOUT_MS`].
    pub read_timeout_ms: u64,
    /// Attempts per file when a transfer stops midway; each one resumes the `.part`. Defaults to
    /// [`DEFAULT_MAX_ATTEMPTS`]; 1 means no retry.
    pub max_attempts: u32,
    /// Wait before attempt `n` is `(n - 1) * retry_backoff_ms`. Defaults to [`DEFAULT_RETRY_BACKOFF_MS`].
    pub retry_backoff_ms: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            base_url: None,
            progress: Progress::Auto,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchReport {
    /// The model directory.
    pub dir: PathBuf,
    /// One row per manifest file, in manifest order.
    pub files: Vec<FileReport>,
}

/// What a fetch did with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The repository path.
    pub path: String,
    /// Whether it was downloaded.
    pub action: FileAction,
    /// What it was checked against.
    pub check: Check,
    /// Bytes received over the network for it in this call.
    pub bytes_received: u64,
}

/// Whether a file was downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FileAction {
    /// It was already there and passed its checks.
    AlreadyPresent,
    /// It was downloaded from byte 0.
    Downloaded,
    /// A `.part` from an earlier attempt was continued from byte `from`.
    Resumed {
        /// The length of the `.part` that was kept.
        from: u64,
    },
}

/// What a file was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Its SHA-256 (and its size, where the manifest gives one).
    Sha256,
    /// The manifest has no hash for it: its SHA-256 as the server stated it (`X-Linked-Etag`), recorded in
    /// `<file>.sha256` on download and checked against that record on later runs (and its size, where the manifest
    /// gives one).
    ServerSha256,
    /// Only its size: the manifest has no hash for it.
    SizeOnly,
    /// Nothing: the manifest has neither a hash nor a size for it.
    Unchecked,
}

impl FetchReport {
    /// The paths of files that were not checked against a hash (neither the manifest's nor the server's).
    pub fn unhashed(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter(|f| !matches!(f.check, Check::Sha256 | Check::ServerSha256))
            .map(|f| f.path.as_str())
            .collect()
    }
}

/// The base URL that `base_url` (if any), `$LOOKOUT_HF_ENDPOINT` or the default gives, without a trailing `/`.
pub fn endpoint(base_url: Option<&str>) -> String {
    let from_env = std::env::var(ENDPOINT_ENV).ok().filter(|v| !v.is_empty());
    let base = base_url.map(str::to_owned).or(from_env).unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    base.trim_end_matches('/').to_owned()
}

/// The download URL of `file` of `entry` under `base` (as [`endpoint`] returns it).
pub fn file_url(base: &str, entry: &ModelEntry, file: &FileEntry) -> String {
    format!("{base}/{}/resolve/{}/{}", entry.repo, entry.revision, file.path)
}

/// Downloads and verifies every file of `entry` into `dir`, which is created if needed.
pub fn fetch_into(entry: &ModelEntry, dir: &Path, options: &FetchOptions) -> Result<FetchReport, ModelsError> {
    if let Some(command) = &entry.export {
        let missing = super::cache::missing_files(dir, entry);
        if missing.is_empty() {
            return Ok(FetchReport { dir: dir.to_owned(), files: Vec::new() });
        }
        return Err(ModelsError::NeedsExport {
            name: entry.name.clone(),
            dir: dir.to_owned(),
            command: command.clone(),
            missing: missing.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", "),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| io_error("create the model directory", dir, source))?;
    let ctx = Ctx { entry, dir, base: endpoint(options.base_url.as_deref()), agent: agent(options), options };
    let mut files = Vec::with_capacity(entry.files.len());
    for file in &entry.files {
        files.push(ctx.fetch_file(file)?);
    }
    tracing::info!(model = %entry.name, dir = %dir.display(), "model files are in place");
    Ok(FetchReport { dir: dir.to_owned(), files })
}

fn agent(options: &FetchOptions) -> ureq::Agent {
    let connect = Some(Duration::from_millis(options.connect_timeout_ms));
    let read = Some(Duration::from_millis(options.read_timeout_ms));
    ureq::Agent::config_builder()
        .timeout_resolve(connect)
        .timeout_connect(connect)
        .timeout_recv_response(read)
        .timeout_per_read(read)
        // Statuses are handled below: 206, 200 and 416 all mean something for a resume.
        .http_status_as_error(false)
        // Redirects are followed by `Ctx::get`, which reads the Hub's headers on the redirect response itself.
        .max_redirects(0)
        // No compression: byte ranges and sizes must refer to the stored bytes.
        .accept_encoding("")
        .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

struct Ctx<'a> {
    entry: &'a ModelEntry,
    dir: &'a Path,
    base: String,
    agent: ureq::Agent,
    options: &'a FetchOptions,
}

/// How one attempt ended when it did not deliver a verified file.
enum AttemptError {
    /// The transfer started and stopped; the `.part` is kept and another attempt resumes it.
    Retry(ModelsError),
    /// Retrying would not help.
    Fatal(ModelsError),
}

/// What the attempts on one file did, summed over attempts.
#[derive(Default)]
struct Tally {
    /// The offset of the first resume the server honoured (or of a `.part` that was already whole).
    resumed_from: Option<u64>,
    /// Bytes received over the network.
    received: u64,
}

impl Ctx<'_> {
    fn fetch_file(&self, file: &FileEntry) -> Result<FileReport, ModelsError> {
        let dest = local_path(self.dir, file);
        if dest.is_file() {
            match verify_existing(&dest, file) {
                Ok(check) => {
                    tracing::debug!(file = %dest.display(), "already present and verified");
                    warn_unhashed(self.entry, file, check);
                    let report = FileReport {
                        path: file.path.clone(),
                        action: FileAction::AlreadyPresent,
                        check,
                        bytes_received: 0,
                    };
                    return Ok(report);
                }
                Err(reason) => {
                    tracing::warn!(file = %dest.display(), %reason, "the file in the cache is not the manifest's; downloading it again");
                    std::fs::remove_file(&dest).map_err(|source| io_error("delete the stale file", &dest, source))?;
                }
            }
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| io_error("create the directory", parent, source))?;
        }

        let url = file_url(&self.base, self.entry, file);
        let bar = self.bar(file);
        let max_attempts = self.options.max_attempts.max(1);
        let mut tally = Tally::default();
        let mut attempt = 1;
        let check = loop {
            match self.attempt(file, &url, &dest, &bar, &mut tally) {
                Ok(check) => break check,
                Err(AttemptError::Fatal(e)) => {
                    bar.abandon();
                    return Err(e);
                }
                Err(AttemptError::Retry(e)) if attempt >= max_attempts => {
                    bar.abandon();
                    return Err(e);
                }
                Err(AttemptError::Retry(e)) => {
                    bar.suspend(|| tracing::warn!(error = %e, attempt, max_attempts, "download stopped; resuming"));
                    std::thread::sleep(Duration::from_millis(self.options.retry_backoff_ms * u64::from(attempt)));
                    attempt += 1;
                }
            }
        };
        bar.finish_and_clear();
        warn_unhashed(self.entry, file, check);
        let action = match tally.resumed_from {
            Some(from) => FileAction::Resumed { from },
            None => FileAction::Downloaded,
        };
        tracing::info!(file = %dest.display(), bytes = tally.received, "downloaded and verified");
        Ok(FileReport { path: file.path.clone(), action, check, bytes_received: tally.received })
    }

    fn bar(&self, file: &FileEntry) -> ProgressBar {
        let target = match self.options.progress {
            Progress::Auto => ProgressDrawTarget::stderr(),
            Progress::Hidden => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(file.size, target);
        set_style(&bar, file.size.is_some());
        bar.set_message(format!("{}: {}", self.entry.name, file.path));
        bar
    }

    /// `GET url` (with `range`), following up to [`MAX_REDIRECTS`] redirects, and reading the Hub's
    /// `X-Linked-Etag` from the responses of `url`'s own origin on the way. Errors name `url`, never a redirect
    /// target: storage URLs carry signatures.
    fn get(&self, url: &str, range: Option<&str>) -> Result<Fetched, AttemptError> {
        let origin = origin_of(url);
        let mut current = url.to_owned();
        let mut linked_etag: Option<String> = None;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&current);
            if let Some(range) = range {
                request = request.header("Range", range);
            }
            let response = request.call().map_err(|e| AttemptError::Fatal(self.unreachable(url, &e)))?;
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if linked_etag.is_none() && origin_of(&current) == origin {
                linked_etag = header(LINKED_ETAG);
            }
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                let linked_sha256 = linked_etag.as_deref().and_then(sha256_of_etag);
                if linked_sha256.is_none()
                    && let Some(etag) = &linked_etag
                {
                    tracing::debug!(%url, %etag, "X-Linked-Etag is not a SHA-256 (a file kept in git, not LFS)");
                }
                return Ok(Fetched { response, linked_sha256 });
            }
            let next = header("location").and_then(|location| resolve_location(&current, &location));
            current = next.ok_or_else(|| {
                AttemptError::Fatal(ModelsError::Protocol {
                    url: url.to_owned(),
                    reason: format!("the server answered HTTP {status} without a usable Location header"),
                })
            })?;
        }
        Err(AttemptError::Fatal(ModelsError::Protocol {
            url: url.to_owned(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        }))
    }

    /// One request: resume or start the `.part`, stream it, verify it, rename it into place. Returns what the file
    /// was checked against.
    fn attempt(
        &self,
        file: &FileEntry,
        url: &str,
        dest: &Path,
        bar: &ProgressBar,
        tally: &mut Tally,
    ) -> Result<Check, AttemptError> {
        let part = part_path(dest);
        let mut offset = match std::fs::metadata(&part) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => return Err(AttemptError::Fatal(io_error("read", &part, source))),
        };
        if file.size.is_some_and(|size| offset > size) {
            tracing::warn!(file = %part.display(), "the partial download is longer than the file; starting again");
            remove(&part).map_err(AttemptError::Fatal)?;
            offset = 0;
        }
        // A `.part` that already has every byte (the previous run stopped before renaming) needs no request, when the
        // manifest has its hash. Without one, the request is made anyway: its answer (a `416`) states the hash.
        if offset > 0 && file.size == Some(offset) && file.sha256.is_some() {
            let check = self.finish(file, url, &part, dest, None, None)?;
            tally.resumed_from.get_or_insert(offset);
            return Ok(check);
        }

        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let Fetched { response, linked_sha256 } = self.get(url, range.as_deref())?;
        let linked = linked_sha256.as_deref();
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());

        let (start, total) = match status {
            206 => {
                let range = header("content-range").and_then(|v| parse_content_range(&v));
                match range {
                    Some((Some(start), total)) if start == offset => {
                        (offset, total.or(content_length.map(|n| n + offset)))
                    }
                    _ => {
                        // Not the range asked for: the safe thing is to start over, in a new attempt.
                        remove(&part).map_err(AttemptError::Fatal)?;
                        return Err(AttemptError::Retry(ModelsError::Protocol {
                            url: url.to_owned(),
                            reason: format!(
                                "asked for bytes {offset}- and got Content-Range {:?}; the partial file was deleted",
                                header("content-range")
                            ),
                        }));
                    }
                }
            }
            200 => {
                if offset > 0 {
                    tracing::info!(%url, "the server ignored the Range request; downloading from the start");
                }
                (0, content_length)
            }
            416 if offset > 0 => {
                let total = header("content-range").and_then(|v| parse_content_range(&v)).and_then(|(_, t)| t);
                if total == Some(offset) {
                    let check = self.finish(file, url, &part, dest, None, linked)?;
                    tally.resumed_from.get_or_insert(offset);
                    return Ok(check);
                }
                remove(&part).map_err(AttemptError::Fatal)?;
                return Err(AttemptError::Retry(ModelsError::Protocol {
                    url: url.to_owned(),
                    reason: format!("the server cannot serve bytes {offset}- (416); the partial file was deleted"),
                }));
            }
            _ => {
                return Err(AttemptError::Fatal(ModelsError::HttpStatus {
                    url: url.to_owned(),
                    status,
                    hint: status_hint(status).to_owned(),
                }));
            }
        };
        if let (Some(expected), Some(total)) = (file.size, total)
            && expected != total
        {
            return Err(AttemptError::Fatal(ModelsError::SizeMismatch {
                file: dest.to_owned(),
                url: url.to_owned(),
                expected,
                actual: total,
            }));
        }

        // Open the `.part` at `start`, hashing what is kept of it.
        let mut hasher = Sha256::new();
        let mut out = if start == 0 {
            File::create(&part).map_err(|source| AttemptError::Fatal(io_error("create", &part, source)))?
        } else {
            hash_file(&part, &mut hasher).map_err(|source| AttemptError::Fatal(io_error("read", &part, source)))?;
            OpenOptions::new()
                .append(true)
                .open(&part)
                .map_err(|source| AttemptError::Fatal(io_error("open", &part, source)))?
        };
        if start > 0 {
            tally.resumed_from.get_or_insert(start);
        }
        if let Some(total) = total.or(file.size) {
            bar.set_length(total);
            set_style(bar, true);
        }
        bar.set_position(start);

        // Stream the body. Bounded by `limit` bytes and, per read, by the read timeout.
        let limit = total.or(file.size).unwrap_or(MAX_FILE_BYTES);
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut written = start;
        let mut eintr = 0;
        let stopped: Option<io::Error> = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    eintr = 0;
                    let n64 = n as u64;
                    if written + n64 > limit {
                        drop(out);
                        remove(&part).map_err(AttemptError::Fatal)?;
                        return Err(AttemptError::Fatal(ModelsError::SizeMismatch {
                            file: dest.to_owned(),
                            url: url.to_owned(),
                            expected: limit,
                            actual: written + n64,
                        }));
                    }
                    out.write_all(&buf[..n]).map_err(|source| AttemptError::Fatal(io_error("write", &part, source)))?;
                    hasher.update(&buf[..n]);
                    written += n64;
                    tally.received += n64;
                    bar.set_position(written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && eintr < MAX_EINTR_IN_A_ROW => eintr += 1,
                Err(e) => break Some(e),
            }
        };
        out.flush()
            .and_then(|()| out.sync_all())
            .map_err(|source| AttemptError::Fatal(io_error("write", &part, source)))?;
        drop(out);

        let expected = total.or(file.size);
        if stopped.is_some() || expected.is_some_and(|e| written < e) {
            let reason = match stopped {
                Some(e) => e.to_string(),
                None => "the connection closed early".to_owned(),
            };
            return Err(AttemptError::Retry(ModelsError::Interrupted {
                url: url.to_owned(),
                part,
                received: written,
                expected,
                reason,
            }));
        }
        self.finish(file, url, &part, dest, Some(hasher), linked)
    }

    /// Checks a complete `.part` (hashing it from disk unless `hasher` already saw every byte) against the manifest,
    /// or when the manifest has no hash against `linked` (the server's, which is then recorded), and renames it.
    fn finish(
        &self,
        file: &FileEntry,
        url: &str,
        part: &Path,
        dest: &Path,
        hasher: Option<Sha256>,
        linked: Option<&str>,
    ) -> Result<Check, AttemptError> {
        let len = std::fs::metadata(part).map_err(|source| AttemptError::Fatal(io_error("read", part, source)))?.len();
        if let Some(expected) = file.size
            && len != expected
        {
            remove(part).map_err(AttemptError::Fatal)?;
            return Err(AttemptError::Fatal(ModelsError::SizeMismatch {
                file: dest.to_owned(),
                url: url.to_owned(),
                expected,
                actual: len,
            }));
        }
        let (expected, check) = match (&file.sha256, linked) {
            (Some(expected), _) => (Some(expected.as_str()), Check::Sha256),
            (None, Some(linked)) => (Some(linked), Check::ServerSha256),
            (None, None) => (None, if file.size.is_some() { Check::SizeOnly } else { Check::Unchecked }),
        };
        if let Some(expected) = expected {
            let actual = match hasher {
                Some(h) => hex(&h.finalize()),
                None => {
                    let mut h = Sha256::new();
                    hash_file(part, &mut h).map_err(|source| AttemptError::Fatal(io_error("read", part, source)))?;
                    hex(&h.finalize())
                }
            };
            if actual != expected {
                remove(part).map_err(AttemptError::Fatal)?;
                let (file, expected) = (dest.to_owned(), expected.to_owned());
                return Err(AttemptError::Fatal(match check {
                    Check::ServerSha256 => {
                        ModelsError::ServerHashMismatch { file, url: redact_url(url), expected, actual }
                    }
                    _ => ModelsError::HashMismatch { file, url: url.to_owned(), expected, actual },
                }));
            }
        }
        // The record goes in before the file, so a file in place under its name is never without its record; a file
        // put in place without one loses any record an earlier download left.
        let record = match check {
            Check::ServerSha256 => write_hash_record(dest, linked.unwrap_or_default()),
            _ => remove_hash_record(dest),
        };
        record
            .map_err(|source| AttemptError::Fatal(io_error("record the hash in", &hash_record_path(dest), source)))?;
        std::fs::rename(part, dest)
            .map_err(|source| AttemptError::Fatal(io_error("rename into place", part, source)))?;
        Ok(check)
    }

    fn unreachable(&self, url: &str, error: &ureq::Error) -> ModelsError {
        // Only the files that are not in place yet: those are the ones to carry over by hand.
        let files = missing_files(self.dir, self.entry)
            .into_iter()
            .map(|f| format!("  {}  ->  {}", file_url(&self.base, self.entry, f), local_path(self.dir, f).display()))
            .collect::<Vec<_>>()
            .join("\n");
        ModelsError::Unreachable { url: url.to_owned(), reason: error.to_string(), dir: self.dir.to_owned(), files }
    }
}

/// Bytes, rate and ETA when the total is known; bytes and rate otherwise.
fn set_style(bar: &ProgressBar, total_known: bool) {
    let template = if total_known {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
}

/// Checks a file already at its final name against the manifest, or its hash record when the manifest has no hash.
/// Returns what it was checked against.
fn verify_existing(path: &Path, file: &FileEntry) -> Result<Check, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if let Some(size) = file.size
        && len != size
    {
        return Err(format!("it has {len} bytes, the manifest says {size}"));
    }
    let (expected, check, source) = match &file.sha256 {
        Some(expected) => (Some(expected.clone()), Check::Sha256, "the manifest"),
        None => match read_hash_record(path).map_err(|e| format!("its hash record is unusable: {e}"))? {
            Some(recorded) => (Some(recorded), Check::ServerSha256, "its hash record"),
            None => (None, if file.size.is_some() { Check::SizeOnly } else { Check::Unchecked }, ""),
        },
    };
    if let Some(expected) = expected {
        let mut h = Sha256::new();
        hash_file(path, &mut h).map_err(|e| e.to_string())?;
        let actual = hex(&h.finalize());
        if actual != expected {
            return Err(format!("its sha256 is {actual}, {source} says {expected}"));
        }
    }
    Ok(check)
}

/// Says how a file without a manifest hash was checked: a warning when it was not checked against any hash.
fn warn_unhashed(entry: &ModelEntry, file: &FileEntry, check: Check) {
    match check {
        Check::Sha256 => {}
        Check::ServerSha256 => tracing::info!(
            model = %entry.name,
            file = %file.path,
            "the manifest has no sha256 for this file; it was checked against the one the server stated \
             (X-Linked-Etag), which is recorded next to it"
        ),
        Check::SizeOnly => tracing::warn!(
            model = %entry.name,
            file = %file.path,
            "the manifest has no sha256 for this file and the server stated none, so only its size was checked"
        ),
        Check::Unchecked => tracing::warn!(
            model = %entry.name,
            file = %file.path,
            "the manifest has no sha256 and no size for this file and the server stated no sha256, so it was not \
             checked at all"
        ),
    }
}

/// A response after its redirects.
struct Fetched {
    response: ureq::http::Response<ureq::Body>,
    /// The SHA-256 that the endpoint's `X-Linked-Etag` stated, when it held one.
    linked_sha256: Option<String>,
}

/// The SHA-256 an etag holds: the value without a weak `W/` prefix and its quotes, when that is 64 hex digits
/// (lowercased). `None` for anything else, such as a git blob's SHA-1 (40 digits).
fn sha256_of_etag(etag: &str) -> Option<String> {
    let value = etag.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())).then(|| value.to_ascii_lowercase())
}

/// `scheme://authority` of `url` (lowercased), or `""` for what is not an absolute URL.
fn origin_of(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return String::new();
    };
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + 3 + i);
    url[..end].to_ascii_lowercase()
}

/// The URL a `Location` header sends `base` to (RFC 9110 §10.2.2 allows a relative reference): an absolute URL as it
/// is, `//host/...` with `base`'s scheme, `/path` on `base`'s origin, and a relative path against `base`'s directory.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let has_scheme = location.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    if has_scheme {
        return Some(location.to_owned());
    }
    let origin = origin_of(base);
    if origin.is_empty() {
        return None;
    }
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = &origin[..origin.find("://")?];
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = &base[origin.len()..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{origin}{dir}{location}"))
}

/// Feeds the whole of `path` to `hasher`. Bounded by the file's length.
fn hash_file(path: &Path, hasher: &mut Sha256) -> io::Result<()> {
    let mut f = File::open(path)?;
    io::copy(&mut f, hasher)?;
    Ok(())
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn remove(path: &Path) -> Result<(), ModelsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error("delete", path, source)),
    }
}

fn io_error(action: &str, path: &Path, source: io::Error) -> ModelsError {
    ModelsError::Io { action: action.to_owned(), path: path.to_owned(), source }
}

/// Parses `bytes START-END/TOTAL`, `bytes START-END/*` or `bytes */TOTAL` (RFC 9110 §14.4).
fn parse_content_range(value: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => None,
        r => Some(r.split_once('-')?.0.trim().parse().ok()?),
    };
    Some((start, total))
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "the repository may be gated or private; download the files by hand from a logged-in browser",
        404 => {
            "the repository, the revision or the file is not on the server; check the manifest entry's repo, revision and path"
        }
        429 => "the server is rate limiting; wait a few minutes and run the same command again",
        500..=599 => "the server failed; run the same command again later, it resumes where it stopped",
        _ => "check the URL in a browser; if it works there, report the status here as a bug",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((Some(10), Some(100))));
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((Some(10), None)));
        assert_eq!(parse_content_range("bytes */100"), Some((None, Some(100))));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

    #[test]
    fn hex_of_the_empty_digest() {
        assert_eq!(hex(&Sha256::digest(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn etags_give_a_sha256_only_when_they_hold_one() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_of_etag(&format!("\"{h}\"")).as_deref(), Some(h));
        assert_eq!(sha256_of_etag(&format!(" W/\"{h}\" ")).as_deref(), Some(h));
        assert_eq!(sha256_of_etag(h).as_deref(), Some(h));
        assert_eq!(sha256_of_etag(&format!("\"{}\"", h.to_uppercase())).as_deref(), Some(h));
        // A git blob's SHA-1, a truncated hash, a non-hex value: not a SHA-256.
        assert_eq!(sha256_of_etag("\"0123456789abcdef0123456789abcdef01234567\""), None);
        assert_eq!(sha256_of_etag(&format!("\"{}\"", &h[1..])), None);
        assert_eq!(sha256_of_etag(&format!("\"{}x\"", &h[1..])), None);
        assert_eq!(sha256_of_etag(""), None);
    }

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base = "http://127.0.0.1:9/o/r/resolve/abc/onnx/model.onnx?x=1";
        assert_eq!(resolve_location(base, "https://cdn.example/blob?sig=1").unwrap(), "https://cdn.example/blob?sig=1");
        assert_eq!(resolve_location(base, "//cdn.example/blob").unwrap(), "http://cdn.example/blob");
        assert_eq!(resolve_location(base, "/cdn/x").unwrap(), "http://127.0.0.1:9/cdn/x");
        assert_eq!(resolve_location(base, "other.onnx").unwrap(), "http://127.0.0.1:9/o/r/resolve/abc/onnx/other.onnx");
        assert_eq!(resolve_location("http://h", "x").unwrap(), "http://h/x");
        assert_eq!(resolve_location(base, " "), None);
        assert_eq!(origin_of("HTTP://Hub.Example:8080/a?b"), "http://hub.example:8080");
        assert_eq!(origin_of("http://h?q"), "http://h");
        assert_eq!(origin_of("not a url"), "");
    }

    #[test]
    fn endpoint_prefers_the_argument_and_trims_the_slash() {
        assert_eq!(endpoint(Some("http://127.0.0.1:9/")), "http://127.0.0.1:9");
    }
}
