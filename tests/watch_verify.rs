//! `lookout watch` with a verifier, end to end on real footage: the deterministic brightness verifier
//! (models/tiny/verifier-brightness) decides confirmed against rejected through the prompts the test gives.

mod common;
#[path = "common/hook.rs"]
mod hook;

use std::path::Path;
use std::process::Output;

use common::tiny_model;

fn watch(config: &str, extra: &[&str], out: &Path, model: &Path) -> Output {
    common::watch_bikes(config, extra, out, model)
}

fn lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("run/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verifier() -> String {
    tiny_model("verifier-brightness").display().to_string()
}

/// Prompts are target brightnesses for this verifier: "0.5" is always nearer a crop's mean brightness (0..1) than
/// "5", so the first query's sentence wins (confirmed) and the second's loses (rejected).
#[test]
fn the_prompts_decide_confirmed_or_rejected_and_each_event_gets_one_line() {
    let out = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
        [verify]
        model = "{}"
        frames = 8
        seconds = 2.0
        queue = 1000
        [[query]]
        text = "a person riding a bicycle"
        threshold = 0.6
        verify = "0.5"
        contrast = ["5"]
        [[query]]
        text = "a car"
        threshold = 0.6
        verify = "5"
        contrast = ["0.5", "4"]
        verify_threshold = 0.3
        "#,
        verifier()
    );
    let o = watch(&config, &[], out.path(), &tiny_model("owlvit"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = lines(out.path());
    let starts: Vec<&serde_json::Value> = all.iter().filter(|l| l["type"] == "start").collect();
    let verifications: Vec<&serde_json::Value> = all.iter().filter(|l| l["type"] == "verification").collect();
    assert!(starts.len() >= 4, "some events of each query: {}", starts.len());
    assert_eq!(verifications.len(), starts.len(), "one verification line per event");
    for s in &starts {
        let id = &s["event_id"];
        let v: Vec<_> = verifications.iter().filter(|v| v["event_id"] == *id).collect();
        assert_eq!(v.len(), 1, "{id}");
        let v = v[0];
        let start_pos = all.iter().position(|l| l == *s).unwrap();
        let v_pos = all.iter().position(|l| l == *v).unwrap();
        assert!(v_pos > start_pos, "the verification comes after the start line");
        assert_eq!(v["model"], "verifier-brightness");
        assert_eq!(v["track_id"], s["track_id"]);
        let frames: Vec<u64> = v["frames"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap()).collect();
        assert_eq!(frames.len(), 8, "{v}");
        assert!(frames.windows(2).all(|w| w[0] <= w[1]), "in time order: {v}");
        let start_frame = s["frame"].as_u64().unwrap();
        assert_eq!(frames[0], start_frame, "from the start line's frame: {v}");
        // 2 s at 25 fps: every frame within 50 frames of the start.
        assert!(frames[7] <= start_frame + 50, "{v}");
        let seconds = v["seconds"].as_f64().unwrap();
        assert!((0.0..=2.0).contains(&seconds), "{v}");
        let score = v["score"].as_f64().unwrap();
        if s["query"] == "a person riding a bicycle" {
            assert_eq!(v["prompts"], serde_json::json!(["0.5", "5"]));
            assert_eq!(v["verdict"], "confirmed", "{v}");
            assert!(score > 0.99, "{v}");
        } else {
            assert_eq!(v["prompts"], serde_json::json!(["5", "0.5", "4"]));
            assert_eq!(v["verdict"], "rejected", "{v}");
            assert!(score < 0.01, "{v}");
        }
    }
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = &summary["verification"];
    let confirmed = starts.iter().filter(|s| s["query"] == "a person riding a bicycle").count() as u64;
    assert_eq!(v["verified"], starts.len() as u64);
    assert_eq!(v["confirmed"], confirmed);
    assert_eq!(v["rejected"], starts.len() as u64 - confirmed);
    assert_eq!((v["overloaded"].as_u64(), v["errors"].as_u64()), (Some(0), Some(0)));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("run/summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk["verification"], *v);
}

/// Brightness decides between prompts inside 0..1 too: the real crops of bikes.mp4 are nearer mid-grey than
/// pure white, so "0.5" beats "1" (and the verifier follows the footage, not only the prompt's distance).
#[test]
fn the_score_follows_the_crops_brightness() {
    let out = tempfile::tempdir().unwrap();
    let config = format!(
        "[verify]\nmodel = \"{}\"\nqueue = 1000\n[[query]]\ntext = \"a car\"\nthreshold = 0.6\nverify = \"1\"\ncontrast = [\"0.5\"]\n",
        verifier()
    );
    let o = watch(&config, &[], out.path(), &tiny_model("owlvit"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<_> = lines(out.path()).into_iter().filter(|l| l["type"] == "verification").collect();
    assert!(!v.is_empty());
    for v in &v {
        assert_eq!(v["verdict"], "rejected", "{v}");
        // Not saturated: the score is a function of the brightness, between the extremes.
        let score = v["score"].as_f64().unwrap();
        assert!(score > 1e-6 && score < 0.5, "{v}");
    }
}

fn refused(config: &str, extra: &[&str], expect: &str) {
    let out = tempfile::tempdir().unwrap();
    // A model that does not exist: the error must come before the model loads.
    let o = watch(config, extra, out.path(), Path::new("/nonexistent/model"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(expect), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("/nonexistent/model"), "before the model loads: {err}");
}

#[test]
fn bad_verification_settings_are_one_line_errors_before_the_model_loads() {
    refused(
        "[[query]]\ntext = \"a person\"\nverify = \"a person falling\"\n",
        &[],
        "query \"a person\" has verify, but no verifier model is configured",
    );
    refused(
        &format!(
            "[verify]\nmodel = \"{}\"\n[[query]]\ntext = \"a person\"\nverify = \"x\"\ncontrast = []\n",
            verifier()
        ),
        &[],
        "contrast is an empty list",
    );
    refused(
        &format!(
            "[verify]\nmodel = \"{}\"\n[[query]]\ntext = \"a person\"\nverify = \"x\"\nverify_threshold = 1.5\n",
            verifier()
        ),
        &[],
        "verify_threshold 1.5 is outside 0..1",
    );
    refused("", &["-q", "a person", "--verify"], "no verifier model is configured");
    // The family asked for must be the model's.
    refused(
        &format!("[verify]\nmodel = \"{}\"\n", verifier()),
        &["-q", "a person", "--verify", "--verifier", "clip"],
        "its model_type is \"brightness\", but the verifier asked for is \"clip\"",
    );
    refused(
        &format!("[verify]\nverifier = \"xclip\"\nmodel = \"{}\"\n", tiny_model("clip").display()),
        &["-q", "a person", "--verify"],
        "its model_type is \"clip\", but the verifier asked for is \"xclip\"",
    );
    refused("[verify]\nverifier = \"xclip\"\n", &["-q", "a person", "--verify"], "no X-CLIP model is configured");
    refused("", &["-q", "a person", "--verify", "--verifier", "/nonexistent/verifier"], "/nonexistent/verifier");
    refused("[verify]\nframes = 0\n", &["-q", "a person"], "[verify] frames = 0");
}

/// `-q ... --verify`: the same sentence for both stages, with the default contrast prompts.
#[test]
fn verify_on_the_command_line_uses_the_default_contrast_prompts() {
    let out = tempfile::tempdir().unwrap();
    // The brightness verifier takes numbers only: the sentence is refused by name, which shows the prompts it
    // was given (the sentence, then the defaults).
    let o = watch(
        "",
        &["-q", "0.5", "--verify", "--verifier", &verifier(), "--threshold", "0.6"],
        out.path(),
        &tiny_model("owlvit"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("people walking past each other"), "{err}");
}

/// `alert_on = "verified"`: a confirmed event's alerts are its start (held until the verdict), its verification
/// and its end; a rejected event sends only its verification line. events.jsonl has every line either way.
#[test]
fn alert_on_verified_holds_the_start_until_confirmed() {
    let out = tempfile::tempdir().unwrap();
    let hook = hook::Hook::start(0, &[]);
    let config = format!(
        r#"
        [verify]
        model = "{}"
        queue = 1000
        [[alerts.webhooks]]
        url = "http://127.0.0.1:{}/hook"
        [[query]]
        text = "a person riding a bicycle"
        threshold = 0.6
        verify = "0.5"
        contrast = ["5"]
        alert_on = "verified"
        [[query]]
        text = "a car"
        threshold = 0.6
        verify = "5"
        contrast = ["0.5"]
        alert_on = "verified"
        "#,
        verifier(),
        hook.port
    );
    let o = watch(&config, &[], out.path(), &tiny_model("owlvit"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = lines(out.path());
    let got: Vec<serde_json::Value> = hook.requests().into_iter().map(|r| r.body).collect();
    let ids = |q: &str| -> Vec<String> {
        all.iter()
            .filter(|l| l["type"] == "start" && l["query"] == q)
            .map(|l| l["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (confirmed, rejected) = (ids("a person riding a bicycle"), ids("a car"));
    assert!(!confirmed.is_empty() && !rejected.is_empty());
    let kinds = |id: &str| -> Vec<String> {
        got.iter().filter(|b| b["event_id"] == id).map(|b| b["type"].as_str().unwrap().to_string()).collect()
    };
    for id in &confirmed {
        let k = kinds(id);
        assert_eq!(k.first().map(String::as_str), Some("start"), "{id}: {k:?}");
        assert_eq!(k.get(1).map(String::as_str), Some("verification"), "{id}: {k:?}");
        assert_eq!(k.last().map(String::as_str), Some("end"), "{id}: {k:?}");
    }
    for id in &rejected {
        assert_eq!(kinds(id), ["verification"], "{id}");
        assert!(all.iter().any(|l| l["event_id"] == id.as_str() && l["type"] == "start"), "the log has it all");
    }
}

/// `watch` on bikes.mp4 with clips (and their evidence) on, `config` in `<out>/lookout.toml`.
fn watch_with_clips(config: &str, out: &Path) -> Output {
    let cfg = out.join("lookout.toml");
    std::fs::write(&cfg, config).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("RUST_LOG", "warn")
        .arg("watch")
        .arg(common::fixture("bikes.mp4"))
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(out.join("run"))
        .arg("-m")
        .arg(tiny_model("owlvit"))
        .args(["--intra-threads", "1", "--no-wall-time", "--json"])
        .output()
        .unwrap()
}

/// The files of event `id` in the run's source directory.
fn files_of(out: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(out.join("run")).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{id}.")) || name.starts_with(&format!("{id}-")) {
                found.push(name);
            }
        }
    }
    found
}

/// `[output] keep_rejected = false`: a rejected event's clips and snapshots are gone after the run, and its lines
/// say why; a confirmed event's are all there. By default a rejected event keeps them.
#[test]
fn keep_rejected_false_removes_a_rejected_events_evidence_and_says_so() {
    let queries = r#"
        [[query]]
        text = "a person riding a bicycle"
        threshold = 0.6
        verify = "0.5"
        contrast = ["5"]
        [[query]]
        text = "a car"
        threshold = 0.6
        verify = "5"
        contrast = ["0.5"]
        "#;
    for keep in [false, true] {
        let out = tempfile::tempdir().unwrap();
        let output = format!("[output]\nmax_open_clips = 1000\n{}", if keep { "" } else { "keep_rejected = false\n" });
        let config = format!("{output}[verify]\nmodel = \"{}\"\nqueue = 1000\n{queries}", verifier());
        let o = watch_with_clips(&config, out.path());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let all = lines(out.path());
        let (mut confirmed, mut rejected) = (0, 0);
        for v in all.iter().filter(|l| l["type"] == "verification") {
            let id = v["event_id"].as_str().unwrap();
            let clips: Vec<&serde_json::Value> =
                all.iter().filter(|l| l["type"] == "clips" && l["event_id"] == id).collect();
            assert_eq!(clips.len(), 1, "{id}: one clips line");
            let status = clips[0]["clips"]["status"].as_str().unwrap();
            let files = files_of(out.path(), id);
            if v["verdict"] == "rejected" && !keep {
                rejected += 1;
                assert_eq!(v["evidence"], "removed", "{v}");
                // Usually the verdict comes first (2 s into the event, the clip after its post-roll): the clips
                // line says the files were removed, and names what was. When the verifier is behind (it runs at a
                // lower priority than the rest), the clip is written first and the verdict's line says it removed
                // them: either way nothing of the event is left.
                let v_pos = all.iter().position(|l| l == v).unwrap();
                let c_pos = all.iter().position(|l| l == clips[0]).unwrap();
                match status {
                    "removed" => assert!(v_pos < c_pos, "{id}: the verdict came first"),
                    "written" => assert!(c_pos < v_pos, "{id}: the clip came first"),
                    other => panic!("{id}: clips status {other}: {}", clips[0]),
                }
                assert!(clips[0]["clips"]["clip"].is_string());
                assert!(files.is_empty(), "{id}: {files:?}");
            } else {
                confirmed += u64::from(v["verdict"] == "confirmed");
                rejected += u64::from(v["verdict"] == "rejected");
                assert!(v.get("evidence").is_none(), "{v}");
                assert_eq!(status, "written", "{}", clips[0]);
                for f in ["mp4", "jpg", "json"] {
                    assert!(files.iter().any(|n| n == &format!("{id}.{f}")), "{id}.{f}: {files:?}");
                }
                assert!(files.iter().any(|n| n == &format!("{id}-crop.mp4")), "{files:?}");
            }
        }
        assert!(confirmed > 0 && rejected > 0, "both verdicts: {confirmed} confirmed, {rejected} rejected");
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["verification"]["rejected"], rejected);
    }
}
