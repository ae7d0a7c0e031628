//! The annotated video writer and the event log, end to end through GStreamer and the file system.

mod common;

use std::path::{Path, PathBuf};

use lookout::draw::color_for;
use lookout::draw::{Canvas, annotate_detections, draw_banner, draw_timestamp};
use lookout::geom::{Detection, PixelBox};
use lookout::gst::{EncoderPurpose, PipelineTemplate, encoder};
use lookout::picture::{Picture, PixelFormat};
use lookout::redact::redact_url;
use lookout::sink::events::{EventLineKind, pts_seconds};
use lookout::sink::{
    EVENTS_FILE_NAME, EventLog, EventLogSettings, EventRecord, SinkError, VideoEncoder, VideoSettings, VideoWriter,
    probe_video,
};

const FPS: u64 = 30;

fn frame_pts_ns(i: u64) -> u64 {
    i * 1_000_000_000 / FPS
}

/// An RGB frame with a moving labelled box, a banner and a timestamp, as `watch` draws them.
fn annotated_frame(width: u32, height: u32, i: u64) -> image::RgbImage {
    let mut img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut canvas = Canvas::from_image(&mut img);
    let x = 10.0 + 4.0 * i as f32;
    let det = Detection { query: 0, score: 0.42, bbox: PixelBox { x0: x, y0: 60.0, x1: x + 80.0, y1: 160.0 } };
    annotate_detections(&mut canvas, &[det], &["a person".to_string()]);
    draw_banner(&mut canvas, "test model: boxes are not meaningful");
    draw_timestamp(&mut canvas, &format!("frame {i}"));
    img
}

fn write_video(path: &Path, settings: VideoSettings, frames: u64) -> Result<PathBuf, SinkError> {
    let (w, h) = (settings.width, settings.height);
    let mut writer = VideoWriter::create(path, settings)?;
    for i in 0..frames {
        let img = annotated_frame(w, h, i);
        writer.push(img.as_raw(), w as usize * 3, frame_pts_ns(i))?;
    }
    writer.finish()
}

fn part_of(path: &Path) -> PathBuf {
    path.with_file_name(format!("{}.part", path.file_name().unwrap().to_string_lossy()))
}

/// True when the file is an MP4 (ISO BMFF `ftyp` box first) holding H.264 (`avc1` sample entry).
fn is_h264_mp4(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.len() > 8 && &bytes[4..8] == b"ftyp" && bytes.windows(4).any(|w| w == b"avc1")
}

#[test]
fn writes_45_frames_that_decode_back_to_45_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/out/annotated.mp4");
    let started = std::time::Instant::now();
    let written = write_video(&path, VideoSettings::new(320, 240, FPS as u32, 1), 45).unwrap();
    eprintln!("encoded 45 frames of 320x240 in {:?}", started.elapsed());
    assert_eq!(written, path);
    assert!(path.is_file());
    assert!(!part_of(&path).exists(), "no .part left behind");
    assert!(is_h264_mp4(&path));

    let info = probe_video(&path).unwrap();
    assert_eq!((info.frames, info.width, info.height), (45, 320, 240), "{info:?}");
    let duration = info.duration.expect("the MP4 states its duration");
    assert!((duration.as_secs_f64() - 1.5).abs() < 0.05, "{duration:?}");
}

/// The path `watch --annotate` takes: decoded I420 frames drawn on in place and encoded without any conversion.
/// The boxes come back from the file in their colour, where they were drawn, and the frame around them is intact.
#[test]
fn i420_pictures_drawn_on_decode_back_with_the_boxes_in_place() {
    gstreamer::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i420.mp4");
    let (w, h) = (640u32, 360u32);
    let settings = VideoSettings { format: PixelFormat::I420, ..VideoSettings::new(w, h, FPS as u32, 1) };
    let mut writer = VideoWriter::create(&path, settings).unwrap();
    // A mid-grey frame, as a decoder would give it, with a solid 120x80 block in the first query's colour that
    // moves 8 pixels a frame, and a labelled box.
    let mut grey = Picture::black(PixelFormat::I420, w, h).unwrap();
    {
        let mut canvas = Canvas::from_picture(&mut grey);
        canvas.fill_rect(0, 0, w, h, [128, 128, 128]);
    }
    let frames = 20u64;
    for i in 0..frames {
        let mut pic = grey.clone();
        let mut canvas = Canvas::from_picture(&mut pic);
        canvas.fill_rect(40 + 8 * i as i32, 100, 120, 80, color_for(0));
        let det = Detection { query: 1, score: 0.9, bbox: PixelBox { x0: 400.0, y0: 60.0, x1: 600.0, y1: 300.0 } };
        annotate_detections(&mut canvas, &[det], &["a car".to_string()]);
        draw_timestamp(&mut canvas, &format!("frame {i}"));
        writer.push_picture(&pic, frame_pts_ns(i)).unwrap();
    }
    // A frame of the wrong format or size is refused with the reason, and the video goes on.
    let rgb = Picture::from_rgb(w, h, &vec![0u8; (w * h * 3) as usize]).unwrap();
    let err = writer.push_picture(&rgb, frame_pts_ns(frames)).unwrap_err().to_string();
    assert!(err.contains("RGB frame of 640x360 was pushed to a I420 video"), "{err}");
    assert_eq!(writer.finish().unwrap(), path);

    let decoded = common::decode(&path, |_| true);
    assert_eq!(decoded.len(), frames as usize);
    let close = |a: [u8; 3], b: [u8; 3], tol: i32| (0..3).all(|k| (a[k] as i32 - b[k] as i32).abs() <= tol);
    for (i, f) in decoded.iter().enumerate() {
        let img = f.image.as_ref().unwrap();
        assert_eq!(img.dimensions(), (w, h));
        let block_x = 40 + 8 * i as u32;
        // Inside the block (away from its edges: H.264 blurs them), the block's colour; outside, grey.
        let inside = img.get_pixel(block_x + 60, 140).0;
        assert!(close(inside, color_for(0), 16), "frame {i}: block {inside:?} vs {:?}", color_for(0));
        let left = img.get_pixel(block_x.saturating_sub(12).max(4), 140).0;
        assert!(block_x < 16 || close(left, [128, 128, 128], 16), "frame {i}: left of the block {left:?}");
        // The box's outline in the second query's colour, its inside untouched grey.
        let edge = img.get_pixel(401, 200).0;
        assert!(close(edge, color_for(1), 40), "frame {i}: box edge {edge:?} vs {:?}", color_for(1));
        assert!(close(img.get_pixel(500, 200).0, [128, 128, 128], 16), "frame {i}: inside the box");
    }
}

#[test]
fn openh264_writes_a_playable_file_too() {
    if gstreamer::init().is_err() || gstreamer::ElementFactory::find("openh264enc").is_none() {
        eprintln!("openh264enc is not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openh264.mp4");
    let settings = VideoSettings { encoder: VideoEncoder::OpenH264, ..VideoSettings::new(320, 240, FPS as u32, 1) };
    let (w, h) = (settings.width, settings.height);
    let mut writer = VideoWriter::create(&path, settings).unwrap();
    assert_eq!(writer.encoder(), "openh264enc");
    for i in 0..12 {
        writer.push(annotated_frame(w, h, i).as_raw(), w as usize * 3, frame_pts_ns(i)).unwrap();
    }
    writer.finish().unwrap();
    let info = probe_video(&path).unwrap();
    assert_eq!((info.frames, info.width, info.height), (12, 320, 240));
}

#[test]
fn the_generic_template_encoder_writes_a_playable_file_at_an_odd_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.mp4");
    let (w, h) = (321u32, 241u32);
    let settings = VideoSettings {
        template_encoder: Some(encoder::generic_encoder(EncoderPurpose::Record)),
        ..VideoSettings::new(w, h, FPS as u32, 1)
    };
    let mut writer = VideoWriter::create(&path, settings).unwrap();
    assert!(writer.template_encoder_used());
    assert_eq!(writer.encoder(), "x264enc");
    for i in 0..15 {
        writer.push(annotated_frame(w, h, i).as_raw(), w as usize * 3, frame_pts_ns(i)).unwrap();
    }
    writer.finish().unwrap();
    assert!(is_h264_mp4(&path));
    let info = probe_video(&path).unwrap();
    assert_eq!((info.frames, info.width, info.height), (15, 320, 240));
}

#[test]
fn a_template_encoder_that_cannot_be_made_falls_back_to_the_built_in_one() {
    // The Jetson template's NVENC encoder, where there is no NVENC (here), and one with a typo anywhere.
    let jetson = PipelineTemplate::builtin("jetson").unwrap().encoder(EncoderPurpose::Record).to_string();
    let typo = "videoconvert ! x264enc speed-preset=veryfast key-int-maxx=60 ! h264parse".to_string();
    let have_nvenc = gstreamer::init().is_ok() && gstreamer::ElementFactory::find("nvv4l2h264enc").is_some();
    for fragment in [jetson, typo] {
        if have_nvenc && fragment.contains("nvv4l2h264enc") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fallback.mp4");
        let settings =
            VideoSettings { template_encoder: Some(fragment.clone()), ..VideoSettings::new(320, 240, FPS as u32, 1) };
        let mut writer = VideoWriter::create(&path, settings).unwrap();
        assert!(!writer.template_encoder_used(), "{fragment}");
        assert!(["x264enc", "openh264enc"].contains(&writer.encoder()), "{}", writer.encoder());
        for i in 0..6 {
            writer.push(annotated_frame(320, 240, i).as_raw(), 320 * 3, frame_pts_ns(i)).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(probe_video(&path).unwrap().frames, 6, "{fragment}");
    }
}

#[test]
fn frames_with_a_stride_and_an_odd_size_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    let (w, h, stride) = (161u32, 121u32, 161 * 3 + 13);
    let mut writer = VideoWriter::create(&path, VideoSettings::new(w, h, 25, 1)).unwrap();
    let mut buf = vec![0u8; stride * h as usize];
    for i in 0..10u64 {
        let mut canvas = Canvas::new(&mut buf, w, h, stride).unwrap();
        canvas.fill_rect(0, 0, w, h, [20, 20, 20]);
        canvas.draw_box(
            &PixelBox { x0: i as f32 * 5.0, y0: 10.0, x1: i as f32 * 5.0 + 40.0, y1: 90.0 },
            [0, 255, 0],
            2,
        );
        writer.push(&buf, stride, i * 40_000_000).unwrap();
    }
    // Too short a buffer is refused, naming the file.
    let err = writer.push(&buf[..100], stride, 0).unwrap_err();
    assert!(matches!(err, SinkError::FrameSize { .. }) && err.to_string().contains("odd.mp4"), "{err}");
    writer.finish().unwrap();
    let info = probe_video(&path).unwrap();
    // H.264 in 4:2:0 needs even sizes: the odd ones are scaled to the even size below.
    assert_eq!((info.frames, info.width, info.height), (10, 160, 120));
}

#[test]
fn dropping_an_unfinished_writer_still_leaves_a_playable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.mp4");
    {
        let mut writer = VideoWriter::create(&path, VideoSettings::new(320, 240, FPS as u32, 1)).unwrap();
        for i in 0..8 {
            writer.push(annotated_frame(320, 240, i).as_raw(), 320 * 3, frame_pts_ns(i)).unwrap();
        }
        assert!(part_of(&path).is_file() && !path.exists(), "written under the temporary name until finished");
    }
    assert!(!part_of(&path).exists());
    assert_eq!(probe_video(&path).unwrap().frames, 8);
}

#[test]
fn a_video_without_frames_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.mp4");
    let writer = VideoWriter::create(&path, VideoSettings::new(320, 240, FPS as u32, 1)).unwrap();
    let err = writer.finish().unwrap_err();
    assert!(err.to_string().contains("empty.mp4") && err.to_string().contains("no frames"), "{err}");
    assert!(!path.exists() && !part_of(&path).exists());
}

/// A disk that fills up while writing stops the writer with an error instead of blocking it forever.
#[test]
fn a_full_disk_fails_the_push_instead_of_blocking() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.mp4");
    std::os::unix::fs::symlink("/dev/full", part_of(&path)).unwrap();
    let settings =
        VideoSettings { speed_preset: lookout::sink::SpeedPreset::Ultrafast, ..VideoSettings::new(320, 240, 30, 1) };
    let mut writer = VideoWriter::create(&path, settings).unwrap();
    // Noise does not compress, so filesink's buffer fills and is written out after a few frames.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut frame = vec![0u8; 320 * 240 * 3];
    let mut failed = None;
    for i in 0..600 {
        for b in frame.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        if let Err(e) = writer.push(&frame, 320 * 3, frame_pts_ns(i)) {
            failed = Some(e);
            break;
        }
    }
    let err = match failed {
        Some(e) => e,
        None => writer.finish().unwrap_err(),
    };
    assert!(matches!(err, SinkError::Video { .. }), "{err}");
    assert!(err.to_string().contains("full.mp4"), "{err}");
    assert!(!path.exists(), "nothing under the final name");
}

#[test]
fn an_unwritable_directory_is_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: fails even for root, unlike permission bits.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();

    let out = blocker.join("out");
    let err = VideoWriter::create(&out.join("annotated.mp4"), VideoSettings::new(320, 240, 30, 1)).unwrap_err();
    assert!(matches!(err, SinkError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains(&out.display().to_string()), "{err}");

    let err = EventLog::open(&out, EventLogSettings::default()).unwrap_err();
    assert!(matches!(err, SinkError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains(&out.display().to_string()), "{err}");
}

#[test]
fn event_log_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run/out");
    let settings = EventLogSettings { wall_time: false, ..Default::default() };

    // A steady object seen on frames 0..=40 (moving 1 px a frame), then gone: start, updates, end, each line
    // with only the fields up to `score`.
    let line = |kind: EventLineKind, frame: u64, pts_ns: Option<u64>| {
        let x = 20.0 + frame as f32;
        EventRecord {
            kind,
            event_id: None,
            source: redact_url("rtsp://user:secret@cam/1"),
            query: "a person".into(),
            label: "person".into(),
            track_id: 1,
            frame,
            pts_s: pts_ns.map(pts_seconds),
            wall_time: None,
            bbox: PixelBox { x0: x, y0: 30.0, x1: x + 50.0, y1: 100.0 },
            score: 0.5,
            start: None,
            end: None,
            duration_s: None,
            peak: None,
            reason: None,
            clips: None,
        }
    };
    let records = vec![
        line(EventLineKind::Start, 2, Some(frame_pts_ns(2))),
        line(EventLineKind::Update, 17, Some(frame_pts_ns(17))),
        line(EventLineKind::Update, 32, Some(frame_pts_ns(32))),
        line(EventLineKind::End, 40, None),
    ];
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["start", "update", "update", "end"]);

    let mut log = EventLog::open(&out, settings.clone()).unwrap();
    for r in &records {
        log.write(r).unwrap();
    }
    assert_eq!(log.path(), out.join(EVENTS_FILE_NAME));
    drop(log);

    let text = std::fs::read_to_string(out.join(EVENTS_FILE_NAME)).unwrap();
    assert!(!text.contains("secret"), "the password never reaches the log");
    let back: Vec<EventRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back, records);
    assert_eq!(
        text.lines().next().unwrap(),
        r#"{"type":"start","source":"rtsp://***@cam/1","query":"a person","label":"person","track_id":1,"frame":2,"pts_s":0.066667,"box":[22.0,30.0,72.0,100.0],"score":0.5}"#
    );

    // Without wall_time, a second run over the same input gives the same bytes.
    let out2 = dir.path().join("run2");
    let mut log = EventLog::open(&out2, settings).unwrap();
    for r in &records {
        log.write(r).unwrap();
    }
    assert_eq!(std::fs::read(out2.join(EVENTS_FILE_NAME)).unwrap(), text.as_bytes());
}
