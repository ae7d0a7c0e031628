//! What a source argument on the command line means: its kind, its secret URI, and the names it is shown under.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::redact::redact_url;

use super::SourceError;

/// The URL schemes `lookout watch` understands, as listed in error messages.
pub const SUPPORTED_SOURCES: &str = "a video file path (or file://), rtsp://, rtsps://, rtspt://, http://, https:// \
     (progressive or HLS), a V4L2 camera such as /dev/video0 (or v4l2:///dev/video0) or a Jetson CSI camera such as \
     csi://0";

/// Default [`CsiCamera::width`]: 1080p, a mode every common Jetson CSI sensor (IMX219, IMX477) has.
pub const DEFAULT_CSI_WIDTH: u32 = 1920;
/// Default [`CsiCamera::height`].
pub const DEFAULT_CSI_HEIGHT: u32 = 1080;
/// Default [`CsiCamera::fps_n`] / [`CsiCamera::fps_d`]: 30 frames per second.
pub const DEFAULT_CSI_FPS: (u32, u32) = (30, 1);
/// Largest CSI sensor number accepted (Jetson carriers have up to 6 or 8 CSI ports; 15 leaves room).
pub const MAX_CSI_SENSOR_ID: u32 = 15;

/// The longest short name, in bytes; longer names are cut (output directories stay readable).
const MAX_SHORT_NAME: usize = 48;

/// What kind of input a source is. Decides the pipeline template and whether the source is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A local file: read as fast as the consumer allows, every frame, in order.
    File,
    /// An RTSP camera or server: live.
    Rtsp,
    /// An HTTP(S) URL (HLS playlists, MJPEG cameras, progressive files): treated as live.
    Http,
    /// A V4L2 camera: live.
    V4l2,
    /// A Jetson CSI camera (`csi://N`, through libargus): live.
    Csi,
}

impl SourceKind {
    /// True for sources that run in real time whether or not anyone reads them (RTSP, HTTP, V4L2, CSI).
    ///
    /// Live sources drop stale frames (appsink `drop=true`, queue drops the oldest) so latency stays bounded;
    /// files block instead, so every frame is processed, in order, deterministically.
    /// HTTP counts as live because cameras and HLS live playlists are the common case; a progressive file over
    /// HTTP therefore also drops frames when the consumer is slow.
    pub fn is_live(self) -> bool {
        !matches!(self, SourceKind::File)
    }

    /// A lower-case name for logs and templates: `file`, `rtsp`, `http`, `v4l2`, `csi`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Rtsp => "rtsp",
            SourceKind::Http => "http",
            SourceKind::V4l2 => "v4l2",
            SourceKind::Csi => "csi",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Jetson CSI camera: `csi://N[?width=W&height=H&framerate=F]`, for nvarguscamerasrc.
///
/// The size and rate must be a mode the sensor has (`nvargus_nvraw --lps` or the nvarguscamerasrc log lists them);
/// libargus picks the sensor mode that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsiCamera {
    /// nvarguscamerasrc `sensor-id`: the N of `csi://N`.
    pub sensor_id: u32,
    /// Capture width in pixels. Default [`DEFAULT_CSI_WIDTH`].
    pub width: u32,
    /// Capture height in pixels. Default [`DEFAULT_CSI_HEIGHT`].
    pub height: u32,
    /// Frame rate numerator. Default 30.
    pub fps_n: u32,
    /// Frame rate denominator. Default 1.
    pub fps_d: u32,
}

impl Default for CsiCamera {
    fn default() -> Self {
        CsiCamera {
            sensor_id: 0,
            width: DEFAULT_CSI_WIDTH,
            height: DEFAULT_CSI_HEIGHT,
            fps_n: DEFAULT_CSI_FPS.0,
            fps_d: DEFAULT_CSI_FPS.1,
        }
    }
}

impl CsiCamera {
    /// Parses what follows `csi://`: `N` and optional `width`, `height` and `framerate` (`30`, or `30000/1001`)
    /// query parameters. The error is the reason, to be put after the source's name.
    pub fn parse(rest: &str) -> Result<CsiCamera, String> {
        let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
        let id = id.trim_end_matches('/');
        let sensor_id = match id.parse::<u32>() {
            Ok(n) if n <= MAX_CSI_SENSOR_ID => n,
            _ => {
                return Err(format!(
                    "`{id}` is not a CSI sensor number: write csi://0, csi://1, ... (nvarguscamerasrc sensor-id, \
                     0 to {MAX_CSI_SENSOR_ID})"
                ));
            }
        };
        let mut camera = CsiCamera { sensor_id, ..CsiCamera::default() };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Sizes up to 16K; rates as fractions up to 1000 fps in a 1/1001 timebase (1001000/1001).
            let number = |v: &str, max: u32| -> Result<u32, String> {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0 && *n <= max)
                    .ok_or_else(|| format!("{key} `{v}` is not a positive whole number of at most {max}"))
            };
            match key {
                "width" => camera.width = number(value, 16_384)?,
                "height" => camera.height = number(value, 16_384)?,
                "framerate" => {
                    let (n, d) = value.split_once('/').unwrap_or((value, "1"));
                    (camera.fps_n, camera.fps_d) = (number(n, 1_001_000)?, number(d, 1_001_000)?);
                }
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`: use width, height and framerate \
                                        (csi://0?width=1280&height=720&framerate=60)"
                    ));
                }
            }
        }
        Ok(camera)
    }
}

/// One source as given on the command line.
///
/// The secret URI (with any password) is private: only [`SourceSpec::secret_uri`] hands it out, for the pipeline.
/// `Debug` and `Display` show the redacted [`SourceSpec::display`] name.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The position of the source on the command line; frames carry it.
    pub id: usize,
    /// File, RTSP, HTTP or V4L2: decides the pipeline and whether the source is live.
    pub kind: SourceKind,
    /// The argument with `user:password@` removed; use it in every message, log line and event.
    pub display: String,
    /// A filesystem-safe name for output directories (`cam1`, `2024-05-01`, `video0`).
    /// Unique only after [`dedupe_short_names`].
    pub short_name: String,
    /// The argument as given (URL with credentials, or path). Never logged.
    secret: String,
    /// For files and V4L2 devices: the path on disk.
    path: Option<PathBuf>,
    /// For CSI cameras: the sensor, size and rate.
    csi: Option<CsiCamera>,
}

impl SourceSpec {
    /// Parses a source argument and checks that a file or device exists.
    ///
    /// Errors name the argument (redacted) and say what is supported.
    pub fn parse(arg: &str, id: usize) -> Result<SourceSpec, SourceError> {
        let spec = SourceSpec::parse_unchecked(arg, id)?;
        if let Some(path) = &spec.path {
            match (spec.kind, std::fs::metadata(path)) {
                (SourceKind::File, Ok(m)) if m.is_dir() => return Err(SourceError::NotAFile { path: path.clone() }),
                (SourceKind::File, Ok(_)) => {}
                (SourceKind::File, Err(_)) => return Err(SourceError::FileNotFound { path: path.clone() }),
                (_, Ok(_)) => {}
                (_, Err(_)) => return Err(SourceError::DeviceNotFound { device: path.clone() }),
            }
        }
        Ok(spec)
    }

    /// Parses a source argument without touching the filesystem: for describing pipelines of sources that are not
    /// present here (`lookout pipelines show /dev/video0` on a laptop) and for tests.
    pub fn parse_unchecked(arg: &str, id: usize) -> Result<SourceSpec, SourceError> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(SourceError::EmptyArgument);
        }
        let display = redact_url(arg);
        let mut csi = None;
        let (kind, path) = match scheme_of(arg) {
            None if arg.starts_with("/dev/video") => (SourceKind::V4l2, Some(PathBuf::from(arg))),
            None => (SourceKind::File, Some(PathBuf::from(arg))),
            Some(scheme) => match scheme.to_ascii_lowercase().as_str() {
                "csi" => {
                    let camera = CsiCamera::parse(&arg["csi://".len()..])
                        .map_err(|reason| SourceError::InvalidUrl { name: display.clone(), reason })?;
                    csi = Some(camera);
                    (SourceKind::Csi, None)
                }
                "rtsp" | "rtsps" | "rtspt" => (SourceKind::Rtsp, None),
                "http" | "https" => (SourceKind::Http, None),
                "file" => (SourceKind::File, Some(PathBuf::from(percent_decode(&arg["file://".len()..])))),
                "v4l2" => (SourceKind::V4l2, Some(PathBuf::from(&arg["v4l2://".len()..]))),
                _ => return Err(SourceError::UnsupportedScheme { scheme: scheme.to_string(), name: display }),
            },
        };
        if matches!(kind, SourceKind::Rtsp | SourceKind::Http) && host_of(arg).is_empty() {
            return Err(SourceError::InvalidUrl { name: display, reason: "it has no host".into() });
        }
        if matches!(kind, SourceKind::Rtsp | SourceKind::Http)
            && let Some(port) = port_of(arg)
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return Err(SourceError::InvalidUrl {
                name: display,
                reason: format!("its port `{port}` is not a number from 1 to 65535"),
            });
        }
        let short_name = short_name_for(kind, arg, path.as_deref(), id);
        let short_name = match csi {
            Some(camera) => format!("csi{}", camera.sensor_id),
            None => short_name,
        };
        Ok(SourceSpec { id, kind, display, short_name, secret: arg.to_string(), path, csi })
    }

    /// The URI or path with credentials: for building the pipeline only. Never log it.
    pub fn secret_uri(&self) -> &str {
        &self.secret
    }

    /// The file or device path, for [`SourceKind::File`] and [`SourceKind::V4l2`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The camera of a [`SourceKind::Csi`] source.
    pub fn csi(&self) -> Option<CsiCamera> {
        self.csi
    }

    /// See [`SourceKind::is_live`].
    pub fn is_live(&self) -> bool {
        self.kind.is_live()
    }

    /// Removes this source's secrets from a message that may quote them (GStreamer errors sometimes name the URL):
    /// the full secret URI becomes the display name, and the password, raw or percent-decoded, becomes `***`.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.secret, &self.display);
        if let Some(password) = password_of(&self.secret) {
            for form in [password.to_string(), percent_decode(password)] {
                if !form.is_empty() {
                    out = out.replace(&form, "***");
                }
            }
        }
        out
    }
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("display", &self.display)
            .field("short_name", &self.short_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Makes short names unique within one run by appending `-2`, `-3`, ... to repeats, in order.
pub fn dedupe_short_names(specs: &mut [SourceSpec]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let taken: Vec<String> = specs.iter().map(|s| s.short_name.clone()).collect();
    for spec in specs.iter_mut() {
        let count = seen.entry(spec.short_name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            let mut n = *count;
            let mut candidate = format!("{}-{n}", spec.short_name);
            while taken.contains(&candidate) {
                n += 1;
                candidate = format!("{}-{n}", spec.short_name);
            }
            *count = n;
            spec.short_name = candidate;
        }
    }
}

/// The scheme of `scheme://...`, if the argument has a valid one.
fn scheme_of(arg: &str) -> Option<&str> {
    let end = arg.find("://")?;
    let scheme = &arg[..end];
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// The `user:password@host:port` part of a URL.
fn authority_of(url: &str) -> &str {
    let Some(start) = url.find("://") else { return "" };
    let rest = &url[start + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

fn host_of(url: &str) -> &str {
    let authority = authority_of(url);
    let host_port = authority.rfind('@').map_or(authority, |at| &authority[at + 1..]);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// The port of the URL's authority as written (`Some("")` for "host:"), or `None` when it has none.
fn port_of(url: &str) -> Option<&str> {
    let authority = authority_of(url);
    let host_port = authority.rfind('@').map_or(authority, |at| &authority[at + 1..]);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').and_then(|(_, rest)| rest.strip_prefix(':')),
        None => host_port.split_once(':').map(|(_, port)| port),
    }
}

fn password_of(url: &str) -> Option<&str> {
    let authority = authority_of(url);
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `cam1` for `rtsp://user:pw@10.0.0.5/cam1`, `2024-05-01` for `footage/2024-05-01.mp4`, `video0` for `/dev/video0`;
/// the host when a URL has no path; `source{id}` when nothing usable is left.
fn short_name_for(kind: SourceKind, arg: &str, path: Option<&Path>, id: usize) -> String {
    let raw = match (kind, path) {
        (SourceKind::File | SourceKind::V4l2, Some(path)) => {
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        }
        _ => {
            let authority_end = arg.find("://").map_or(0, |s| s + 3 + authority_of(arg).len());
            let path = &arg[authority_end..];
            let path = path.split(['?', '#']).next().unwrap_or("");
            let last = path.rsplit('/').find(|seg| !seg.is_empty()).unwrap_or("");
            let stem = match last.rsplit_once('.') {
                Some((stem, _ext)) if !stem.is_empty() => stem,
                _ => last,
            };
            if stem.is_empty() { host_of(arg).to_string() } else { percent_decode(stem) }
        }
    };
    let mut name: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    name = name.trim_matches(['.', '_']).to_string();
    if name.len() > MAX_SHORT_NAME {
        name.truncate(MAX_SHORT_NAME);
    }
    if name.is_empty() { format!("source{id}") } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_that_is_not_a_number_is_refused() {
        for (url, port) in [
            ("rtsp://cam:abc/live", "abc"),
            ("rtsp://admin:pw@cam:55x4/live", "55x4"),
            ("http://cam:99999/x", "99999"),
            ("rtsp://[::1]:x/y", "x"),
            ("rtsp://cam:/live", ""),
            ("rtsp://cam:0/live", "0"),
        ] {
            let e = SourceSpec::parse_unchecked(url, 0).unwrap_err().to_string();
            assert!(e.contains(&format!("its port `{port}` is not a number from 1 to 65535")), "{url}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
        for url in ["rtsp://cam:8554/live", "rtsp://u:p@[::1]:554/x", "http://cam/x", "rtsp://[fe80::1]/x"] {
            assert!(SourceSpec::parse_unchecked(url, 0).is_ok(), "{url}");
        }
    }

    #[test]
    fn kinds_and_names() {
        let s = SourceSpec::parse_unchecked("rtsp://admin:hunter2@10.0.0.5:554/cam1", 0).unwrap();
        assert_eq!(s.kind, SourceKind::Rtsp);
        assert_eq!(s.display, "rtsp://***@10.0.0.5:554/cam1");
        assert_eq!(s.short_name, "cam1");
        assert_eq!(s.secret_uri(), "rtsp://admin:hunter2@10.0.0.5:554/cam1");
        assert!(!format!("{s:?}").contains("hunter2"));

        let s = SourceSpec::parse_unchecked("rtsp://10.0.0.5:554", 1).unwrap();
        assert_eq!(s.short_name, "10.0.0.5");
        let s = SourceSpec::parse_unchecked("https://example.com/live/stream.m3u8?token=x", 2).unwrap();
        assert_eq!((s.kind, s.short_name.as_str()), (SourceKind::Http, "stream"));
        let s = SourceSpec::parse_unchecked("footage/2024-05-01.mp4", 3).unwrap();
        assert_eq!((s.kind, s.short_name.as_str()), (SourceKind::File, "2024-05-01"));
        let s = SourceSpec::parse_unchecked("/dev/video0", 4).unwrap();
        assert_eq!((s.kind, s.short_name.as_str()), (SourceKind::V4l2, "video0"));
        let s = SourceSpec::parse_unchecked("v4l2:///dev/video2", 4).unwrap();
        assert_eq!((s.kind, s.path().unwrap()), (SourceKind::V4l2, Path::new("/dev/video2")));
        let s = SourceSpec::parse_unchecked("file:///tmp/a%20b.mkv", 5).unwrap();
        assert_eq!(s.path().unwrap(), Path::new("/tmp/a b.mkv"));
        assert_eq!(s.short_name, "a_b");
        let s = SourceSpec::parse_unchecked("rtsp://cam/..", 6).unwrap();
        assert_eq!(s.short_name, "source6");
    }

    #[test]
    fn csi_cameras_parse_with_defaults_and_parameters() {
        let s = SourceSpec::parse("csi://0", 0).unwrap();
        assert_eq!((s.kind, s.short_name.as_str(), s.display.as_str()), (SourceKind::Csi, "csi0", "csi://0"));
        assert_eq!(s.csi(), Some(CsiCamera::default()));
        assert!(s.is_live() && s.path().is_none());

        let s = SourceSpec::parse_unchecked("csi://1?width=1280&height=720&framerate=60", 3).unwrap();
        let want = CsiCamera { sensor_id: 1, width: 1280, height: 720, fps_n: 60, fps_d: 1 };
        assert_eq!((s.csi(), s.short_name.as_str()), (Some(want), "csi1"));
        let s = SourceSpec::parse_unchecked("CSI://2/?framerate=30000/1001", 0).unwrap();
        assert_eq!(s.csi().map(|c| (c.sensor_id, c.fps_n, c.fps_d)), Some((2, 30000, 1001)));
        assert_eq!(SourceSpec::parse_unchecked("/dev/video0", 0).unwrap().csi(), None);
    }

    #[test]
    fn bad_csi_urls_say_what_to_write() {
        for (arg, expect) in [
            ("csi://", "sensor number"),
            ("csi://cam", "`cam` is not a CSI sensor number"),
            ("csi://99", "0 to 15"),
            ("csi://0?width=0", "width `0`"),
            ("csi://0?height=abc", "height `abc`"),
            ("csi://0?framerate=30/0", "framerate `0`"),
            ("csi://0?fps=30", "unknown parameter `fps`"),
        ] {
            let err = SourceSpec::parse(arg, 0).unwrap_err().to_string();
            assert!(err.contains(arg) && err.contains(expect), "{arg}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn unknown_scheme_is_named() {
        let err = SourceSpec::parse("ftp://user:pw@x/a.mp4", 0).unwrap_err().to_string();
        assert!(err.contains("ftp"), "{err}");
        assert!(err.contains("rtsp://") && err.contains("/dev/video0"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = SourceSpec::parse("/nonexistent/clip.mp4", 0).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/clip.mp4"), "{err}");
        let err = SourceSpec::parse("/dev/video99", 0).unwrap_err().to_string();
        assert!(err.contains("/dev/video99"), "{err}");
        assert!(SourceSpec::parse("rtsp://", 0).is_err());
    }

    #[test]
    fn scrub_removes_password_forms() {
        let s = SourceSpec::parse_unchecked("rtsp://admin:p%40ss@cam/x", 0).unwrap();
        let msg = "failed rtsp://admin:p%40ss@cam/x (auth p@ss)";
        assert_eq!(s.scrub(msg), "failed rtsp://***@cam/x (auth ***)");
    }

    #[test]
    fn dedupe() {
        let mut specs: Vec<SourceSpec> = ["a/cam.mp4", "b/cam.mp4", "cam-2.mp4", "c/cam.mp4"]
            .iter()
            .enumerate()
            .map(|(i, a)| SourceSpec::parse_unchecked(a, i).unwrap())
            .collect();
        dedupe_short_names(&mut specs);
        let names: Vec<&str> = specs.iter().map(|s| s.short_name.as_str()).collect();
        assert_eq!(names, ["cam", "cam-3", "cam-2", "cam-4"]);
    }
}
