//! Retention through the binary: `lookout retention` (what deploy/lookout-retention.timer runs) and the
//! `retention` thread of `lookout watch`. Old files are made with `File::set_modified`; sizes with `set_len`
//! (sparse, so nothing is written).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::{fixture, tiny_model};

const DAY: Duration = Duration::from_secs(86_400);

/// A file of `len` bytes last modified `age` ago.
fn file(dir: &Path, rel: &str, len: u64, age: Duration) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = File::create(&path).unwrap();
    f.set_len(len).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    path
}

fn lookout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookout")).env("RUST_LOG", "info").args(args).output().unwrap()
}

#[test]
fn lookout_retention_deletes_the_oldest_first_and_keeps_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = file(&out, "events.jsonl", 1_000, 40 * DAY);
    let spool = file(&out, "alert-spool/mqtt/00000000000000000001.alert", 100, 40 * DAY);
    let part = file(&out, "gate/x.mp4.part", 100, 40 * DAY);
    let old = file(&out, "gate/old.mp4", 1_000_000, 20 * DAY);
    let older_by_size = file(&out, "yard/a.mp4", 3_000_000, 5 * DAY);
    let newer = file(&out, "yard/b.mp4", 3_000_000, 2 * DAY);
    let config = tmp.path().join("lookout.toml");
    std::fs::write(&config, "[retention]\nmax_disk_gb = 0.004\n").unwrap();

    // 14 days from the command line, 4 MB from the config: old.mp4 for its age, then a.mp4 for space.
    let o = lookout(&[
        "retention",
        "--out",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--max-age-days",
        "14",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!old.exists() && !older_by_size.exists(), "{stderr}");
    for kept in [&log, &spool, &part, &newer] {
        assert!(kept.exists(), "{} is kept", kept.display());
    }
    assert!(stderr.contains("deleted 1 old files and 1 for space"), "{stderr}");

    // Without any limit it says what to give.
    let o = lookout(&["retention", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-age-days"), "{}", String::from_utf8_lossy(&o.stderr));
    // A bad limit is named.
    let o = lookout(&["retention", "--out", out.to_str().unwrap(), "--max-disk-gb=-3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("max_disk_gb -3"));
}

#[test]
fn watch_enforces_retention_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let old = file(&out, "bikes/old-event.mp4", 1_000, 30 * DAY);
    let recent = file(&out, "bikes/recent-event.mp4", 1_000, DAY);
    let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("RUST_LOG", "info")
        .arg("watch")
        .arg(fixture("bikes.mp4"))
        .arg("--out")
        .arg(&out)
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["--intra-threads", "1", "--no-wall-time", "--json", "-q", "a person riding a bicycle"])
        .args(["--threshold", "0.45", "--max-age-days", "7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // The first pass runs as the run starts.
    assert!(!old.exists(), "{stderr}");
    assert!(recent.exists() && out.join("events.jsonl").is_file() && out.join("summary.json").is_file());
    assert!(stderr.contains("retention") && stderr.contains("deleted 1 files older"), "{stderr}");
}
