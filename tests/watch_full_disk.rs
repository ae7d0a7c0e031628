//! `lookout watch` with its output directory on a full disk: a real 2 MiB tmpfs, filled up but for a few
//! pages, so that `events.jsonl` runs out of room part way through bikes.mp4.
//!
//! Where mounting is not permitted (not root, or in a container without CAP_SYS_ADMIN) the test falls back to
//! a real limit of another kind: RLIMIT_FSIZE on the lookout process (with SIGXFSZ ignored, so that a write past
//! the limit fails with EFBIG instead of killing it). It prints which one it used; it never passes without
//! either. `LOOKOUT_TEST_NO_MOUNT=1` forces the fallback.
//!
//! What must hold: detection goes on to the end of the file (the summary's frame counts are complete), the
//! failure is reported once, on one line that names the directory and says "disk full" (and no "writing again"
//! while the disk flaps), and `events.jsonl` holds only whole lines: every line parses, none is there twice, they
//! are in the order they were produced, and the lines written and the lines counted as lost (`event_lines_lost`
//! in `summary.json`) add up to the lines of the same run on a disk with room.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixture, tiny_model};

/// Room left on the tmpfs before the run: a few pages, a few dozen event lines.
const ROOM_BYTES: u64 = 16 * 1024;

/// Room left for the test with clips: more than every event line needs, less than one clip (bikes.mp4 is
/// 500 kB for 10 s, and a clip holds at least pre-roll + post-roll, 10 s, of it; the file's length at most).
const ROOM_FOR_LINES_BYTES: u64 = 300 * 1024;

/// `lookout watch bikes.mp4` into `out`; `wrap`: under RLIMIT_FSIZE of that many bytes; `extra`: more arguments.
fn watch(out: &Path, wrap: Option<u64>, extra: &[&str]) -> Output {
    let lookout = env!("CARGO_BIN_EXE_lookout");
    let mut args: Vec<String> = vec!["watch".into(), fixture("bikes.mp4").display().to_string()];
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(["-m".into(), tiny_model("owlvit").display().to_string()]);
    for a in ["--intra-threads", "1", "--no-wall-time", "--json", "-q", "a person riding a bicycle"] {
        args.push(a.into());
    }
    args.extend(["--threshold".into(), "0.45".into()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut cmd = match wrap {
        None => Command::new(lookout),
        // `trap '' XFSZ` ignores SIGXFSZ, and an ignored signal stays ignored across exec.
        Some(limit) => {
            let mut c = Command::new("bash");
            c.args(["-c", "trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\""]).arg(limit.to_string()).arg(lookout);
            c
        }
    };
    cmd.args(&args).env("RUST_LOG", "warn").output().unwrap()
}

/// The lines of `events.jsonl` in `out`, after checking that every one is whole JSON and none is there twice.
fn whole_lines(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends with a whole line: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
    let lines: Vec<String> = text.lines().map(String::from).collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(serde_json::from_str::<serde_json::Value>(l).is_ok(), "line {} is not whole JSON: {l}", i + 1);
    }
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        assert!(seen.insert(l.as_str()), "a line is written twice: {l}");
    }
    lines
}

/// `event_lines_lost` of the summary, which must be there.
fn lines_lost(s: &serde_json::Value) -> usize {
    s["event_lines_lost"].as_u64().unwrap_or_else(|| panic!("no event_lines_lost in the summary: {s}")) as usize
}

fn summary(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}); stderr: {}", String::from_utf8_lossy(&o.stderr)))
}

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if o.status.success() {
            Ok(Tmpfs { dir: dir.to_path_buf() })
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Fills the file system of `dir` until `room` bytes are left (as `statvfs` counts them, via `df`).
fn fill(dir: &Path, room: u64) {
    let avail = available_bytes(dir);
    assert!(avail > room, "{}: only {avail} bytes free", dir.display());
    let filler = dir.join("filler");
    let f = std::fs::File::create(&filler).unwrap();
    // tmpfs allocates what is written, not what set_len promises: write it.
    use std::io::Write;
    let mut w = std::io::BufWriter::new(f);
    let chunk = vec![0xA5u8; 4096];
    let mut left = avail - room;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
    let now = available_bytes(dir);
    assert!(now <= room + 4096, "{}: {now} bytes still free after filling", dir.display());
}

fn available_bytes(dir: &Path) -> u64 {
    let o = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df: {text}"))
}

/// The output directory on a tmpfs with `room` bytes free, or, where mounting is not permitted, in `tmp` with
/// RLIMIT_FSIZE = `room` for lookout (the last member). Says which.
fn nearly_full(tmp: &Path, room: u64) -> (PathBuf, Option<Tmpfs>, Option<u64>) {
    let mnt = tmp.join("mnt");
    // LOOKOUT_TEST_NO_MOUNT=1 tries the fallback where mounting works too.
    let mounted = match std::env::var_os("LOOKOUT_TEST_NO_MOUNT") {
        Some(_) => Err("LOOKOUT_TEST_NO_MOUNT is set".to_string()),
        None => Tmpfs::mount(&mnt, "2m"),
    };
    match mounted {
        Ok(m) => {
            eprintln!("full disk: a 2 MiB tmpfs at {}, filled to {room} bytes free", mnt.display());
            fill(&mnt, room);
            (mnt.join("out"), Some(m), None)
        }
        Err(e) => {
            eprintln!("full disk: cannot mount a tmpfs ({e}); using RLIMIT_FSIZE = {room} bytes instead");
            (tmp.join("out"), None, Some(room))
        }
    }
}

#[test]
fn a_full_disk_is_reported_once_and_detection_goes_on() {
    let tmp = tempfile::tempdir().unwrap();

    // What the run writes when there is room, to compare with.
    let reference_out = tmp.path().join("reference");
    // Clips are tested in watch_clips.rs and below: without them the lines are in the same order on every run.
    let no_clips = ["--no-clips", "-q", "a car"];
    let reference = watch(&reference_out, None, &no_clips);
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let all = std::fs::read_to_string(reference_out.join("events.jsonl")).unwrap();
    let all: Vec<&str> = all.lines().collect();
    assert!(all.len() >= 50, "bikes.mp4 gives enough events to fill the room: {}", all.len());

    let (out, _mount, wrap) = nearly_full(tmp.path(), ROOM_BYTES);
    let o = watch(&out, wrap, &no_clips);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let s = summary(&o);
    // Detection went on to the end of the file.
    let src = &s["sources"][0];
    assert_eq!((src["frames_decoded"].as_u64(), src["frames_processed"].as_u64()), (Some(250), Some(250)), "{s}");
    assert_eq!(src["frames_inferred"], 250, "{s}");
    // One line says it, naming the directory; not one per event.
    let reports: Vec<&str> = stderr.lines().filter(|l| l.contains("disk full")).collect();
    assert_eq!(reports.len(), 1, "one report:\n{stderr}");
    assert!(reports[0].contains(&out.display().to_string()), "names the directory: {}", reports[0]);
    assert!(stderr.lines().count() <= 5, "no flood of errors:\n{stderr}");
    // The run says something went wrong (exit code 2, the source's error), in the same words.
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let error = src["error"].as_str().unwrap_or_default();
    assert!(error.contains("disk full") && error.contains(&out.display().to_string()), "{error}");

    assert!(!stderr.contains("writing again"), "the disk never had room again:\n{stderr}");

    // Every line is whole and is the line the reference run wrote, in its order; the lines that did not fit
    // are counted as lost, and nothing else is missing.
    let whole = whole_lines(&out);
    assert!(!whole.is_empty() && whole.len() < all.len(), "{} of {} lines written", whole.len(), all.len());
    assert_eq!(whole[..], all[..whole.len()], "the lines written are the first lines of the reference run");
    let lost = lines_lost(&s);
    assert_eq!(whole.len() + lost, all.len(), "lines written + lines lost = lines produced");
    eprintln!("{} of {} event lines written, {lost} lost; report: {}", whole.len(), all.len(), reports[0]);
}

#[test]
fn a_clip_that_does_not_fit_is_marked_failed_and_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, mount, wrap) = nearly_full(tmp.path(), ROOM_FOR_LINES_BYTES);
    let o = watch(&out, wrap, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let s = summary(&o);
    let src = &s["sources"][0];
    assert_eq!((src["frames_decoded"].as_u64(), src["frames_processed"].as_u64()), (Some(250), Some(250)), "{s}");

    // The lines of the same run on a disk with room: a start, an end and a clips line for each event, on every run.
    let reference_out = tmp.path().join("reference");
    let reference = watch(&reference_out, None, &[]);
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let produced = whole_lines(&reference_out).len();

    // A failed clip is deleted, which gives room back for a while: the lines kept meanwhile are written then,
    // whole and in order; the rest are counted as lost.
    let whole = whole_lines(&out);
    let lost = lines_lost(&s);
    assert_eq!(whole.len() + lost, produced, "lines written ({}) + lines lost ({lost}) = lines produced", whole.len());
    let lines: Vec<serde_json::Value> = whole.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rank = |t: &serde_json::Value| ["start", "update", "end", "clips"].iter().position(|k| t == k).unwrap();
    let mut last_of: std::collections::HashMap<String, usize> = Default::default();
    for l in &lines {
        let at = last_of.entry(l["event_id"].as_str().unwrap().to_string()).or_default();
        assert!(rank(&l["type"]) >= *at, "an event's lines are in order: {l}");
        *at = rank(&l["type"]);
    }
    eprintln!("{} of {produced} event lines written, {lost} lost", whole.len());

    // Every event's clip failed: each `clips` line that made it says so, and why.
    let clips: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "clips").collect();
    assert!(!clips.is_empty(), "clips lines are written (a failed clip frees its room):\n{}", whole.join("\n"));
    for c in &clips {
        assert_eq!(c["clips"]["status"], "failed", "{c}");
    }
    assert_eq!(s["clips"]["written"], 0, "{s}");
    assert!(s["clips"]["failed"].as_u64() >= Some(clips.len() as u64), "{s}");
    // Nothing under a clip's final name, no temporary file left.
    let files: Vec<String> = std::fs::read_dir(out.join("bikes"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!files.iter().any(|f| f.ends_with(".mp4") || f.ends_with(".part")), "{files:?}");

    if mount.is_some() {
        // The tmpfs: filesink says "no space left", which is the disk full that the event log meets too.
        // (The recording leaves the last 100 MiB to events.jsonl and the clips: on this small disk it never starts,
        // and every clip says the recording is paused for a full disk.)
        let full = clips.iter().filter(|c| c["clips"]["error"].as_str().is_some_and(|e| e.contains("disk full")));
        assert!(full.count() >= 1, "the clips that were recorded failed for the full disk, and say so");
        for c in &clips {
            let e = c["clips"]["error"].as_str().unwrap_or_default();
            assert!(e.contains("disk full") || e.contains("max_open_clips"), "{c}");
        }
        let reports: Vec<&str> = stderr.lines().filter(|l| l.contains("disk full")).collect();
        assert_eq!(reports.len(), 1, "one report for every clip and line that failed:\n{stderr}");
        // A deleted clip gave room for a moment, not for good: no "writing again" right after the report.
        assert!(!stderr.contains("writing again"), "the disk flapped; it did not have room again:\n{stderr}");
        assert!(reports[0].contains(&out.display().to_string()), "names the directory: {}", reports[0]);
        assert!(!stderr.contains("clip failed"), "not one line per clip:\n{stderr}");
        eprintln!("{} clips failed and were marked so; report: {}", clips.len(), reports[0]);
    } else {
        // RLIMIT_FSIZE: filesink reports a plain write error (EFBIG), one warning per clip.
        eprintln!("{} clips failed and were marked so (RLIMIT_FSIZE: reported per clip)", clips.len());
    }
}
