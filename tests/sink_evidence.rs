//! The evidence of an event (cropped clip, snapshots, sidecar), end to end through GStreamer and the file
//! system, on a 2 s full-frame clip cut from tests/fixtures/bikes.mp4 (640x272, 25 fps).

mod common;

use common::decode;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use lookout::draw::color_for;
use lookout::geom::PixelBox;
use lookout::sink::evidence::{
    CropRegion, EventBoxes, EvidenceError, EvidenceFiles, EvidenceSettings, FrameBox, SIDECAR_SCHEMA_VERSION, Sidecar,
    write_crop_clip, write_sidecar, write_snapshots,
};
use lookout::sink::{VideoSettings, VideoWriter};
use lookout::track::{EndReason, FrameTime, LifecycleEvent, LifecycleKind, Sample};

const FPS: u64 = 25;
/// The full clip is frames 50..100 of the fixture: stream time 2.0 s to 4.0 s.
const FIRST_FRAME: u64 = 50;
const CLIP_FRAMES: u64 = 50;
const CLIP_START_S: f64 = FIRST_FRAME as f64 / FPS as f64;

/// The full-frame clip (frames 50..100 of the fixture, re-encoded to H.264 MP4) and its frames as decoded
/// from it; made once per test process.
fn full_clip() -> &'static (PathBuf, Vec<image::RgbImage>) {
    static CLIP: OnceLock<(PathBuf, Vec<image::RgbImage>)> = OnceLock::new();
    CLIP.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sink_evidence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("full.mp4");
        let source = decode(&common::fixture("bikes.mp4"), |i| (FIRST_FRAME..FIRST_FRAME + CLIP_FRAMES).contains(&i));
        let mut writer = VideoWriter::create(&path, VideoSettings::new(640, 272, FPS as u32, 1)).unwrap();
        for (i, frame) in source.iter().filter_map(|f| f.image.as_ref().map(|img| (f.pts, img))) {
            writer.push(frame.as_raw(), 640 * 3, i.as_nanos() as u64).unwrap();
        }
        writer.finish().unwrap();
        let frames: Vec<image::RgbImage> = decode(&path, |_| true).into_iter().map(|f| f.image.unwrap()).collect();
        assert_eq!(frames.len() as u64, CLIP_FRAMES, "the full clip has every frame");
        (path, frames)
    })
}

/// The event's boxes: a box moving right and down over the clip, one per frame.
fn boxes() -> Vec<FrameBox> {
    (0..CLIP_FRAMES)
        .map(|i| {
            let (x, y) = (150.0 + 3.0 * i as f32, 40.0 + i as f32);
            FrameBox {
                frame: FIRST_FRAME + i,
                pts_s: CLIP_START_S + i as f64 / FPS as f64,
                bbox: PixelBox { x0: x, y0: y, x1: x + 80.0, y1: y + 120.0 },
                score: 0.3 + 0.002 * i as f32,
            }
        })
        .collect()
}

/// `frames` with `peak` as the event's peak.
fn event(frames: &[FrameBox], peak: FrameBox) -> EventBoxes<'_> {
    EventBoxes { frames, peak }
}

/// Names in `dir` (recursively) that end in `.part`.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(part_files(&path));
        } else if path.to_string_lossy().ends_with(".part") {
            found.push(path);
        }
    }
    found
}

/// Mean absolute difference per channel of two images of the same size, over the pixels `mask` lets in.
fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage, mask: impl Fn(u32, u32) -> bool) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y, p) in a.enumerate_pixels() {
        if mask(x, y) {
            let q = b.get_pixel(x, y);
            sum += (0..3).map(|c| (p[c] as i32 - q[c] as i32).unsigned_abs() as u64).sum::<u64>();
            n += 3;
        }
    }
    sum as f64 / n.max(1) as f64
}

/// `frame` cropped to `r` and scaled to its output size, as the crop clip should show it.
fn expected_crop(frame: &image::RgbImage, r: &CropRegion) -> image::RgbImage {
    let crop = image::imageops::crop_imm(frame, r.x, r.y, r.width, r.height).to_image();
    image::imageops::resize(&crop, r.out_width, r.out_height, image::imageops::FilterType::Triangle)
}

/// True when the file is an MP4 (ISO BMFF `ftyp` box first) holding H.264 (`avc1` sample entry).
fn is_h264_mp4(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.len() > 8 && &bytes[4..8] == b"ftyp" && bytes.windows(4).any(|w| w == b"avc1")
}

#[test]
fn crop_clip_has_every_frame_at_one_even_size_and_shows_the_region() {
    let (full, full_frames) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cam/ev-crop.mp4");
    let boxes = boxes();
    let s = EvidenceSettings::default();
    let started = Instant::now();
    let region = write_crop_clip(full, CLIP_START_S, &event(&boxes, boxes[25]), &out, &s).unwrap();
    eprintln!("crop clip of {CLIP_FRAMES} frames, {region:?}, in {:?}", started.elapsed());

    // The region: even, inside the frame, holding every box; the output even and at least the minimum.
    for v in [region.x, region.y, region.width, region.height, region.out_width, region.out_height] {
        assert_eq!(v % 2, 0, "{region:?}");
    }
    assert!(region.x + region.width <= 640 && region.y + region.height <= 272, "{region:?}");
    for b in &boxes {
        assert!(region.contains(&b.bbox), "{region:?} holds {:?}", b.bbox);
    }
    assert!(region.out_width.min(region.out_height) >= s.crop_min_size, "{region:?}");
    // The union is 150..377 x 40..209; with the margin it is far smaller than the frame.
    assert!(region.width < 400 && region.height < 272, "{region:?}");

    // It plays to the end, every frame of the input is there, all at the one size.
    assert!(out.is_file() && is_h264_mp4(&out));
    let frames = decode(&out, |i| i == 0 || i == CLIP_FRAMES - 1);
    assert_eq!(frames.len() as u64, CLIP_FRAMES);
    assert!(frames.iter().all(|f| f.size == (region.out_width, region.out_height)), "constant size");
    assert!(frames.windows(2).all(|w| w[0].pts < w[1].pts), "timestamps increase");

    // It shows the region of the full frame: closer to it than to the region shifted by 24 pixels.
    let shifted = CropRegion { x: region.x + 24, y: region.y.saturating_sub(24), ..region };
    for (i, decoded) in [(0usize, &frames[0]), (CLIP_FRAMES as usize - 1, &frames[CLIP_FRAMES as usize - 1])] {
        let got = decoded.image.as_ref().unwrap();
        let right = mean_abs_diff(got, &expected_crop(&full_frames[i], &region), |_, _| true);
        let wrong = mean_abs_diff(got, &expected_crop(&full_frames[i], &shifted), |_, _| true);
        eprintln!("frame {i}: mean difference {right:.2} from the region, {wrong:.2} from the shifted one");
        assert!(right < 12.0 && wrong > 2.0 * right, "frame {i}: {right:.2} vs {wrong:.2}");
    }
    assert!(part_files(dir.path()).is_empty(), "{:?}", part_files(dir.path()));
}

/// Some files repeat presentation times: bikes.mp4 played twice through one x264 encoder with B-frames and
/// mp4mux gives such a file (the benchmark's 10-minute loop is made so): the first copy's frames are at 10.00 to
/// 19.96 s, the second copy's all at 29.92 or 29.96 s. A clip cut from such a file keeps its packets' times; its
/// crop clip used to fail whole ("Buffer has no PTS" at mp4mux). Now it is written, its times increase, and it
/// holds every frame up to the file's stated end (the frames re-timed past it are cut by the encoder's segment).
#[test]
fn crop_clip_of_a_file_with_repeated_timestamps_has_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let twice = dir.path().join("twice.mp4");
    let bikes = common::fixture("bikes.mp4");
    let source = format!("filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! c.", bikes.display());
    let description = format!(
        "concat name=c ! videoconvert ! x264enc speed-preset=veryfast bitrate=800 key-int-max=50 ! h264parse \
         ! mp4mux ! filesink location={}  {source}  {source}",
        twice.display()
    );
    let status = std::process::Command::new("gst-launch-1.0").arg("-q").args(description.split_whitespace()).status();
    assert!(status.unwrap().success(), "could not make {}", twice.display());
    let decoded = decode(&twice, |_| false);
    let n = decoded.len();
    let repeated = decoded.windows(2).filter(|w| w[1].pts <= w[0].pts).count();
    assert_eq!(n, 500);
    assert!(repeated > 0, "the file repeats presentation times (else this test shows nothing)");

    let out = dir.path().join("cam/twice-crop.mp4");
    let boxes: Vec<FrameBox> = (0..n as u64)
        .map(|i| FrameBox {
            frame: i,
            pts_s: i as f64 / 25.0,
            bbox: PixelBox { x0: 200.0, y0: 60.0, x1: 320.0, y1: 200.0 },
            score: 0.5,
        })
        .collect();
    let region = write_crop_clip(&twice, 0.0, &event(&boxes, boxes[0]), &out, &EvidenceSettings::default()).unwrap();
    let frames = decode(&out, |_| false);
    eprintln!("{repeated} repeated times in {n} frames; crop clip {region:?} of {} frames", frames.len());
    assert!(frames.len() >= n / 2 + 2, "at least the well-timed first copy and the first repeats: {}", frames.len());
    assert!(frames.windows(2).all(|w| w[0].pts < w[1].pts), "its times increase");
}

#[test]
fn snapshots_are_the_peak_frame_with_its_box_and_the_crop() {
    let (full, full_frames) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let (full_out, crop_out) = (dir.path().join("cam/ev.jpg"), dir.path().join("cam/ev-crop.jpg"));
    // The peak is 1.0 s into the clip: its frame 25. A little off the frame's time, it is still the nearest.
    let peak = FrameBox { pts_s: CLIP_START_S + 1.0 + 0.012, ..boxes()[25] };
    let s = EvidenceSettings::default();
    let started = Instant::now();
    let bytes = write_snapshots(full, CLIP_START_S, &event(&boxes(), peak), "bike", &full_out, &crop_out, &s).unwrap();
    eprintln!("snapshots in {:?}", started.elapsed());
    assert_eq!(bytes, std::fs::read(&full_out).unwrap(), "the bytes returned are the file's");

    let snapshot = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap().to_rgb8();
    assert_eq!(snapshot.dimensions(), (640, 272));
    let crop = image::open(&crop_out).unwrap().to_rgb8();
    // The crop is of the event's region (every box), as the crop clip's.
    let region = CropRegion::of_event(&event(&boxes(), peak), 640, 272, &s).unwrap();
    assert_eq!(crop.dimensions(), (region.out_width, region.out_height));
    assert!(region.out_width.min(region.out_height) >= s.crop_min_size);

    // The frame is the peak's: the crop (nothing drawn on it) is nearest to frame 25's.
    let diffs: Vec<f64> =
        (20..31).map(|i| mean_abs_diff(&crop, &expected_crop(&full_frames[i], &region), |_, _| true)).collect();
    let nearest = 20 + diffs.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    eprintln!("crop snapshot vs frames 20..=30: {diffs:.2?}");
    assert_eq!(nearest, 25);
    // So is the full snapshot, away from the box and its label.
    let b = peak.bbox;
    let away = |x: u32, y: u32| {
        let (x, y) = (x as f32, y as f32);
        !(x >= b.x0 - 4.0 && x <= b.x1.max(b.x0 + 120.0) + 4.0 && y >= b.y0 - 20.0 && y <= b.y1 + 4.0)
    };
    let diffs: Vec<f64> = (20..31).map(|i| mean_abs_diff(&snapshot, &full_frames[i], away)).collect();
    let nearest = 20 + diffs.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(nearest, 25, "{diffs:.2?}");

    // The box is drawn in the first query colour: the middle of each edge is that colour (within JPEG's
    // error), and it was not before.
    let colour = color_for(0);
    let near = |p: [u8; 3]| (0..3).all(|c| (p[c] as i32 - colour[c] as i32).abs() <= 48);
    let (xm, ym) = (((b.x0 + b.x1) / 2.0) as u32, ((b.y0 + b.y1) / 2.0) as u32);
    for (x, y) in [(b.x0 as u32, ym), (b.x1 as u32 - 1, ym), (xm, b.y0 as u32), (xm, b.y1 as u32 - 1)] {
        assert!(near(snapshot.get_pixel(x, y).0), "({x}, {y}) is {:?}, not {colour:?}", snapshot.get_pixel(x, y));
        assert!(!near(full_frames[25].get_pixel(x, y).0), "({x}, {y}) had the colour already");
    }
    assert!(part_files(dir.path()).is_empty(), "{:?}", part_files(dir.path()));
}

#[test]
fn a_peak_outside_the_clip_gives_its_first_or_last_frame() {
    let (full, full_frames) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let s = EvidenceSettings::default();
    for (pts_s, expected) in [(CLIP_START_S - 5.0, 0usize), (CLIP_START_S + 60.0, CLIP_FRAMES as usize - 1)] {
        let peak = FrameBox { pts_s, ..boxes()[10] };
        // Each case its own files: evidence is never overwritten.
        let (a, b) = (dir.path().join(format!("a-{expected}.jpg")), dir.path().join(format!("b-{expected}.jpg")));
        write_snapshots(full, CLIP_START_S, &event(&boxes(), peak), "bike", &a, &b, &s).unwrap();
        let crop = image::open(&b).unwrap().to_rgb8();
        let region = CropRegion::of_event(&event(&boxes(), peak), 640, 272, &s).unwrap();
        let diffs: Vec<f64> = [0, expected.abs_diff(3), expected]
            .iter()
            .map(|&i| mean_abs_diff(&crop, &expected_crop(&full_frames[i], &region), |_, _| true))
            .collect();
        assert!(diffs[2] < diffs[1], "peak at {pts_s}: {diffs:.2?}");
    }
}

fn lifecycle_end(boxes: &[FrameBox]) -> LifecycleEvent {
    let at = |b: &FrameBox| FrameTime { frame: b.frame, pts_s: b.pts_s, wall: None };
    let sample = |b: &FrameBox| Sample { at: at(b), bbox: b.bbox, score: b.score };
    let last = boxes.last().unwrap();
    LifecycleEvent {
        kind: LifecycleKind::End(EndReason::Lost),
        event_id: "cam-0-7-50".into(),
        query: 0,
        track_id: 7,
        at: FrameTime { frame: last.frame + 10, pts_s: last.pts_s + 0.4, wall: None },
        last: sample(last),
        start: sample(&boxes[0]),
        end: Some(at(last)),
        peak: sample(&boxes[25]),
        pre_roll_s: 5.0,
        post_roll_s: 5.0,
    }
}

#[test]
fn sidecar_lists_every_frame_and_parses_back_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cam/cam-0-7-50.json");
    let boxes = boxes();
    // Every other frame was run through the model; given out of order.
    let given: Vec<FrameBox> = boxes.iter().step_by(2).rev().copied().collect();
    let source = "rtsp://admin:hunter2@10.0.0.5:554/stream";
    let mut sidecar = Sidecar::new(&lifecycle_end(&boxes), source, "a person on a bike", "bike", CLIP_START_S, given);
    sidecar.crop = CropRegion::around(boxes.iter().map(|b| b.bbox), 640, 272, &EvidenceSettings::default());
    // Even a source put in by hand is written redacted.
    sidecar.source = source.to_string();
    write_sidecar(&out, &sidecar).unwrap();

    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("admin"), "{text}");
    let back: Sidecar = serde_json::from_str(&text).unwrap();
    assert_eq!(back.source, "rtsp://***@10.0.0.5:554/stream");
    assert_eq!(back, Sidecar { source: back.source.clone(), ..sidecar.clone() });
    assert_eq!(back.schema_version, SIDECAR_SCHEMA_VERSION);
    assert_eq!(back.files, EvidenceFiles::planned("cam-0-7-50"));
    assert_eq!(back.files.crop_clip.as_deref(), Some("cam-0-7-50-crop.mp4"));
    assert_eq!((back.start.frame, back.end.as_ref().unwrap().frame, back.peak.frame), (50, 99, 75));
    // Every frame given is listed, in frame order, with its box and score (times to the microsecond).
    let expected: Vec<FrameBox> =
        boxes.iter().step_by(2).map(|b| FrameBox { pts_s: (b.pts_s * 1e6).round() / 1e6, ..*b }).collect();
    assert_eq!(back.frames, expected);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["frames"][0]["box"], serde_json::json!([150.0, 40.0, 230.0, 160.0]));
    assert_eq!(json["crop"]["width"].as_u64().unwrap() % 2, 0);
    assert!(part_files(dir.path()).is_empty());

    // Written again under the same name, it is refused: evidence is never overwritten (issue 11; ids are unique
    // across runs, so this only happens by mistake), and the first stays whole.
    let first = std::fs::read(&out).unwrap();
    sidecar.frames.truncate(3);
    let err = write_sidecar(&out, &sidecar).unwrap_err().to_string();
    assert!(err.contains("never overwritten") && err.contains("cam-0-7-50.json"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), first);
    assert!(part_files(dir.path()).is_empty());
}

#[test]
fn a_missing_or_corrupt_input_clip_is_a_named_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = EvidenceSettings::default();
    let (crop, jpg, crop_jpg) =
        (dir.path().join("out/x-crop.mp4"), dir.path().join("out/x.jpg"), dir.path().join("out/x-crop.jpg"));
    let missing = dir.path().join("cam/missing.mp4");
    let b = boxes();

    let e = write_crop_clip(&missing, 0.0, &event(&b, b[0]), &crop, &s).unwrap_err();
    assert!(matches!(e, EvidenceError::MissingClip { .. }), "{e}");
    assert!(e.to_string().contains(&*missing.to_string_lossy()) && !e.to_string().contains('\n'), "{e}");
    let e = write_snapshots(&missing, 0.0, &event(&b, b[0]), "bike", &jpg, &crop_jpg, &s).unwrap_err();
    assert!(matches!(e, EvidenceError::MissingClip { .. }), "{e}");

    // Garbage, and a real clip cut in half (mp4mux writes the index last: it does not play).
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let bytes = std::fs::read(&full_clip().0).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for input in [&garbage, &truncated] {
        let t = Instant::now();
        let e = write_crop_clip(input, 0.0, &event(&b, b[0]), &crop, &s).unwrap_err();
        eprintln!("{e} after {:?}", t.elapsed());
        assert!(matches!(e, EvidenceError::BadClip { .. }), "{}: {e}", input.display());
        assert!(e.to_string().contains(&*input.to_string_lossy()) && !e.to_string().contains('\n'), "{e}");
        let t = Instant::now();
        let e = write_snapshots(input, 0.0, &event(&b, b[0]), "bike", &jpg, &crop_jpg, &s).unwrap_err();
        eprintln!("{e} after {:?}", t.elapsed());
        assert!(matches!(e, EvidenceError::BadClip { .. }), "{}: {e}", input.display());
    }
    for out in [&crop, &jpg, &crop_jpg] {
        assert!(!out.exists(), "{}", out.display());
    }
    assert!(part_files(dir.path()).is_empty(), "{:?}", part_files(dir.path()));
}

#[test]
fn a_bad_encoder_or_no_box_is_a_named_error_and_writes_nothing() {
    let (full, _) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x-crop.mp4");
    let s = EvidenceSettings { encoder: "nosuchenc bitrate=1".into(), ..Default::default() };
    let e = write_crop_clip(full, CLIP_START_S, &event(&boxes(), boxes()[0]), &out, &s).unwrap_err();
    assert!(matches!(e, EvidenceError::Encoder { .. }), "{e}");
    assert!(e.to_string().contains("nosuchenc") && e.to_string().contains("x-crop.mp4"), "{e}");

    let nan = PixelBox { x0: f32::NAN, y0: 0.0, x1: 1.0, y1: 1.0 };
    let no_box = event(&[], FrameBox { bbox: nan, ..boxes()[0] });
    let e = write_crop_clip(full, CLIP_START_S, &no_box, &out, &EvidenceSettings::default()).unwrap_err();
    assert!(matches!(e, EvidenceError::NoBox { .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

/// A tmpfs of `size` mounted on `dir` for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if o.status.success() { Ok(Tmpfs(dir.to_path_buf())) } else { Err(String::from_utf8_lossy(&o.stderr).into()) }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// On a full disk (a 16 KiB tmpfs: less than the crop clip or a snapshot needs) each file is a `Write` error
/// with `StorageFull` that names it and says what to do, and nothing is left behind, not even a `.part`.
/// Where mounting is not permitted (not root, a container without CAP_SYS_ADMIN) it says so and checks nothing.
#[test]
fn a_full_disk_is_a_storage_full_error_naming_the_file_and_leaves_nothing() {
    let (full, _) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let _tmpfs = match Tmpfs::mount(&mnt, "16k") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot mount a tmpfs ({}); full-disk test not run", e.trim());
            return;
        }
    };
    let s = EvidenceSettings::default();
    let b = boxes();
    let crop = mnt.join("cam/ev-crop.mp4");
    let e = write_crop_clip(full, CLIP_START_S, &event(&b, b[25]), &crop, &s).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, EvidenceError::Write { .. }), "{e}");
    assert_eq!(e.io_error_kind(), Some(std::io::ErrorKind::StorageFull), "{e}");
    let text = e.to_string();
    assert!(text.starts_with(&format!("could not write crop clip {}: ", crop.display())), "{text}");
    assert!(text.contains("free disk space") && !text.contains('\n'), "{text}");

    let (jpg, crop_jpg) = (mnt.join("cam/ev.jpg"), mnt.join("cam/ev-crop.jpg"));
    let e = write_snapshots(full, CLIP_START_S, &event(&b, b[25]), "bike", &jpg, &crop_jpg, &s).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, EvidenceError::Write { .. }), "{e}");
    assert_eq!(e.io_error_kind(), Some(std::io::ErrorKind::StorageFull), "{e}");
    for out in [&crop, &jpg, &crop_jpg] {
        assert!(!out.exists(), "{}", out.display());
    }
    assert!(part_files(&mnt).is_empty(), "{:?}", part_files(&mnt));
}

#[test]
fn jpeg_quality_and_minimum_size_are_applied_to_the_snapshots() {
    let (full, _) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let peak = boxes()[25];
    let mut sizes = Vec::new();
    for (quality, min) in [(20u8, 160u32), (95, 480)] {
        let s = EvidenceSettings { jpeg_quality: quality, crop_min_size: min, ..Default::default() };
        let (a, b) = (dir.path().join(format!("{quality}.jpg")), dir.path().join(format!("{quality}-crop.jpg")));
        let bytes = write_snapshots(full, CLIP_START_S, &event(&boxes(), peak), "bike", &a, &b, &s).unwrap();
        let crop = image::open(&b).unwrap().to_rgb8();
        // The event's region (every box plus the margin), scaled until its shorter side is `min`.
        let r = CropRegion::of_event(&event(&boxes(), peak), 640, 272, &s).unwrap();
        assert_eq!(crop.dimensions(), (r.out_width, r.out_height));
        assert_eq!(crop.width().min(crop.height()), min.max(r.width.min(r.height)), "{r:?}");
        sizes.push(bytes.len());
    }
    assert!(sizes[0] * 2 < sizes[1], "quality 20 is much smaller than 95: {sizes:?}");
}

/// A full-frame clip of `frames` frames of `width` x `height` (a moving ball), H.264 MP4, at `path`.
fn test_pattern_clip(path: &Path, width: u32, height: u32, frames: u32) {
    let description = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={width},height={height},framerate=25/1 \
         ! videoconvert ! x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
        path.display()
    );
    let status = std::process::Command::new("gst-launch-1.0").arg("-q").args(description.split_whitespace()).status();
    assert!(status.unwrap().success(), "could not make {}", path.display());
}

/// The crop snapshot is a frame of the crop clip: one region (the event's boxes, its peak among them) and one
/// size, for boxes of every shape and frames of several sizes (a 636x320 crop snapshot had a 612x320 crop clip:
/// the snapshot was cut around the peak's box alone).
#[test]
fn the_crop_snapshot_and_the_crop_clip_are_one_region_and_one_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = EvidenceSettings::default();
    let pb = |x0: f32, y0: f32, x1: f32, y1: f32| PixelBox { x0, y0, x1, y1 };
    let mut checked = 0;
    for (width, height) in [(640u32, 272u32), (320, 240), (202, 100), (1280, 720)] {
        let full = dir.path().join(format!("full-{width}x{height}.mp4"));
        test_pattern_clip(&full, width, height, 10);
        let (w, h) = (width as f32, height as f32);
        let sets: Vec<(&str, Vec<PixelBox>)> = vec![
            ("one box", vec![pb(0.3 * w, 0.3 * h, 0.5 * w, 0.6 * h)]),
            (
                "a box moving right",
                (0..10).map(|i| pb(0.1 * w + 9.0 * i as f32, 0.2 * h, 0.25 * w + 9.0 * i as f32, 0.7 * h)).collect(),
            ),
            (
                "growing at the edge",
                (0..10).map(|i| pb(w - 20.0 - 7.0 * i as f32, 0.0, w, 10.0 + 5.0 * i as f32)).collect(),
            ),
            ("a thin pole", vec![pb(0.5 * w, 0.1 * h, 0.5 * w + 2.0, 0.9 * h)]),
            (
                "bigger than the frame",
                vec![pb(-30.0, -10.0, w + 40.0, h + 5.0), pb(0.2 * w, 0.2 * h, 0.3 * w, 0.3 * h)],
            ),
        ];
        for (what, set) in sets {
            let frames: Vec<FrameBox> = set
                .iter()
                .enumerate()
                .map(|(i, b)| FrameBox {
                    frame: i as u64,
                    pts_s: i as f64 / 25.0,
                    bbox: *b,
                    score: 0.3 + 0.01 * i as f32,
                })
                .collect();
            // The peak is not the last box, nor the largest.
            let peak = frames[frames.len() / 2];
            let name = format!("{width}x{height}-{}", what.replace(' ', "-"));
            let crop_clip = dir.path().join(format!("{name}-crop.mp4"));
            let (jpg, crop_jpg) = (dir.path().join(format!("{name}.jpg")), dir.path().join(format!("{name}-crop.jpg")));
            let region = write_crop_clip(&full, 0.0, &event(&frames, peak), &crop_clip, &s).unwrap();
            write_snapshots(&full, 0.0, &event(&frames, peak), "ball", &jpg, &crop_jpg, &s).unwrap();
            let clip = lookout::sink::probe_video(&crop_clip).unwrap();
            let snapshot = image::open(&crop_jpg).unwrap().to_rgb8();
            assert_eq!(
                snapshot.dimensions(),
                (clip.width, clip.height),
                "{name}: crop snapshot and crop clip, region {region:?}"
            );
            assert_eq!((clip.width, clip.height), (region.out_width, region.out_height), "{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}

/// Mean colour of rows `rows` of `img`.
fn mean_colour(img: &image::RgbImage, rows: std::ops::Range<u32>) -> [f64; 3] {
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for y in rows {
        for x in 0..img.width() {
            let p = img.get_pixel(x, y);
            (0..3).for_each(|c| sum[c] += p[c] as f64);
            n += 1.0;
        }
    }
    sum.map(|v| v / n.max(1.0))
}

/// Whether `c` is the banner's red (within the error of JPEG and H.264 on the white text it carries).
fn is_banner_red(c: [f64; 3]) -> bool {
    let red = lookout::draw::BANNER_COLOR;
    c[0] > red[0] as f64 - 40.0 && c[0] > c[1] + 80.0 && c[0] > c[2] + 80.0
}

/// With the test model, the crop clip and both snapshots carry the banner of the annotated video ("test model:
/// boxes are not meaningful") across their top: those rows are the banner's red, not the source's pixels; the
/// rest is the source's. Without it, no banner.
#[test]
fn the_test_model_banner_is_on_the_snapshots_and_the_crop_clip() {
    let (full, full_frames) = full_clip();
    let dir = tempfile::tempdir().unwrap();
    let b = boxes();
    let peak = b[25];
    // The banner is 14 rows per glyph scale: 14 at the narrowest, up to 56. Its first rows are checked.
    let top = 0..12;
    for test_model in [true, false] {
        let s = EvidenceSettings { test_model, ..Default::default() };
        let tag = if test_model { "test" } else { "real" };
        let (jpg, crop_jpg, crop_clip) = (
            dir.path().join(format!("{tag}.jpg")),
            dir.path().join(format!("{tag}-crop.jpg")),
            dir.path().join(format!("{tag}-crop.mp4")),
        );
        write_snapshots(full, CLIP_START_S, &event(&b, peak), "bike", &jpg, &crop_jpg, &s).unwrap();
        let region = write_crop_clip(full, CLIP_START_S, &event(&b, peak), &crop_clip, &s).unwrap();

        let snapshot = image::open(&jpg).unwrap().to_rgb8();
        let crop = image::open(&crop_jpg).unwrap().to_rgb8();
        let clip_frames = decode(&crop_clip, |i| i == 0 || i == CLIP_FRAMES - 1);
        let mut pictures = vec![
            ("snapshot", snapshot, full_frames[25].clone()),
            ("crop snapshot", crop, expected_crop(&full_frames[25], &region)),
        ];
        for (i, f) in [(0usize, &clip_frames[0]), (CLIP_FRAMES as usize - 1, &clip_frames[CLIP_FRAMES as usize - 1])] {
            pictures.push(("crop clip", f.image.clone().unwrap(), expected_crop(&full_frames[i], &region)));
        }
        for (what, got, source) in &pictures {
            let (got_top, source_top) = (mean_colour(got, top.clone()), mean_colour(source, top.clone()));
            assert!(!is_banner_red(source_top), "{what}: the source's top is not red already: {source_top:?}");
            assert_eq!(is_banner_red(got_top), test_model, "{what} ({tag}): top rows {got_top:?}");
            let top_diff = mean_abs_diff(got, source, |_, y| top.contains(&y));
            let below = got.height() * 3 / 4..got.height();
            let rest_diff = mean_abs_diff(got, source, |_, y| below.contains(&y));
            eprintln!(
                "{what} ({tag}): top rows differ by {top_diff:.1} from the source's, the bottom by {rest_diff:.1}"
            );
            if test_model {
                assert!(top_diff > 40.0, "{what}: the banner's rows are not the source's ({top_diff:.1})");
            } else {
                assert!(top_diff < 15.0, "{what}: no banner ({top_diff:.1})");
            }
            assert!(rest_diff < 15.0, "{what}: below the banner, the source ({rest_diff:.1})");
        }
    }
}
