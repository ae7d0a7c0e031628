//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// How long [`decode`] waits for a file to decode.
pub const DECODE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for any one condition in [`wait_until`] (generous: the machine may be busy).
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `cond` every 10 ms until it holds; fails the test naming `what` after [`WAIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Alerts waiting in an alert spool directory (`<out>/alert-spool/<destination>`): its `.alert` files.
pub fn spool_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "alert")).count())
        .unwrap_or(0)
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn golden(rel: &str) -> PathBuf {
    root().join("tests/golden").join(rel)
}

pub fn tiny_model(family: &str) -> PathBuf {
    root().join("models/tiny").join(family)
}

/// A `.npy` array: shape and data as f64 (float32, float64, int64, int32, uint8 and bool are read).
#[derive(Debug, Clone)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Reads a little-endian, C-order `.npy` file, as `np.save` writes it.
pub fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{}: Fortran order", path.display());
    let descr = header.split("'descr': '").nth(1).unwrap().split('\'').next().unwrap();
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        shape_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let body = &bytes[start + header_len..];
    let data: Vec<f64> = match descr {
        "<f4" => body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "<f8" => body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        "<i8" => body.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "<i4" => body.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "|b1" | "|u1" => body.iter().map(|&b| f64::from(b)).collect(),
        other => panic!("{}: unsupported dtype {other}", path.display()),
    };
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{}: size", path.display());
    Npy { shape, data }
}

/// Largest absolute difference, with its index.
pub fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> (f64, usize) {
    let mut worst = (0.0f64, 0usize);
    let mut n = 0;
    for (i, (x, y)) in a.into_iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
        n += 1;
    }
    assert!(n > 0, "nothing compared");
    worst
}

/// One decoded frame: its stream time and, when asked for, its pixels.
pub struct Decoded {
    pub pts: Duration,
    pub size: (u32, u32),
    pub image: Option<image::RgbImage>,
}

/// Decodes every frame of `path` to RGB (to end-of-stream, within a deadline), keeping the pixels of the
/// frames for which `keep(index)` holds.
pub fn decode(path: &Path, keep: impl Fn(u64) -> bool) -> Vec<Decoded> {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(
        "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.by_name("src").unwrap().set_property("location", path);
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + DECODE_TIMEOUT;
    let mut frames = Vec::new();
    while !sink.is_eos() {
        assert!(Instant::now() < deadline, "{} did not decode within {DECODE_TIMEOUT:?}", path.display());
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            panic!("decoding {} failed: {msg:?}", path.display());
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else { continue };
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let buffer = sample.buffer().unwrap();
        let index = frames.len() as u64;
        let image = keep(index).then(|| rgb_image(&sample));
        frames.push(Decoded {
            pts: Duration::from_nanos(buffer.pts().unwrap().nseconds()),
            size: (info.width(), info.height()),
            image,
        });
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// The picture of a sample from an appsink that takes `video/x-raw,format=RGB`, rows unpadded.
pub fn rgb_image(sample: &gst::Sample) -> image::RgbImage {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info).unwrap();
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    let row = info.width() as usize * 3;
    let pixels = (0..info.height() as usize).flat_map(|y| &data[y * stride..y * stride + row]).copied();
    image::RgbImage::from_raw(info.width(), info.height(), pixels.collect()).unwrap()
}

/// `lookout watch tests/fixtures/bikes.mp4` with `config` written to `<out>/lookout.toml`, model `model`, output
/// in `<out>/run`, no clips, no wall time, the summary as JSON; `extra` arguments last.
pub fn watch_bikes(config: &str, extra: &[&str], out: &Path, model: &Path) -> std::process::Output {
    let cfg = out.join("lookout.toml");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(&cfg, config).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("RUST_LOG", "warn")
        .arg("watch")
        .arg(fixture("bikes.mp4"))
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(out.join("run"))
        .arg("-m")
        .arg(model)
        .args(["--intra-threads", "1", "--no-wall-time", "--json", "--no-clips"])
        .args(extra)
        .output()
        .unwrap()
}
