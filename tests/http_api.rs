//! The HTTP control plane against the real binary: `lookout watch bikes.mp4 --http 127.0.0.1:0` with the tiny
//! OWL-ViT, every route, bad requests, tokens, a query added over the API, and `promtool check metrics`.

#[path = "common/control.rs"]
mod control;
#[path = "common/hook.rs"]
mod hook;

use std::process::Command;
use std::time::Duration;

use control::{ControlRun, read_stream, tool, wait_for};
use serde_json::json;

/// The run of the main test: bikes.mp4 (10 s) at half speed, so that it lasts 20 s.
const SPEED: f64 = 0.5;

#[test]
fn every_route_on_a_file_run_and_a_query_added_over_the_api_finds_events_from_the_next_frames() {
    let out = tempfile::tempdir().unwrap();
    // A webhook that takes every alert, for the alert metrics.
    let hook = hook::Hook::start(0, &[]);
    let url = format!("http://127.0.0.1:{}/alerts", hook.port);
    let run = ControlRun::start(out.path(), SPEED, &["--webhook", &url]);

    // Health and readiness.
    let h = run.get("/healthz");
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let ready = wait_for("readyz 200", || Some(run.get("/readyz")).filter(|r| r.status == 200));
    assert_eq!(ready.json()["ready"], true);

    // Sources.
    let sources = run.get("/api/v1/sources").json();
    let s = &sources["sources"][0];
    assert_eq!(s["name"], "bikes");
    assert_eq!(s["live"], false);
    for key in [
        "state",
        "decoder",
        "fps_in",
        "fps_out",
        "frames_decoded",
        "frames_inferred",
        "frames_dropped",
        "frames_skipped_still",
        "reconnects",
        "last_error",
    ] {
        assert!(s.get(key).is_some(), "no {key} in {s}");
    }
    assert!(s["frames_decoded"].as_u64().unwrap() > 0, "{s}");

    // Queries: the one of the command line, then one added over the API.
    let q = run.get("/api/v1/queries").json();
    assert_eq!(q["queries"].as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q["queries"][0]["id"], "q1");
    assert_eq!(q["queries"][0]["text"], "a person riding a bicycle");
    let before = run.get("/api/v1/sources").json()["sources"][0]["frames_processed"].as_u64().unwrap();
    // Threshold 0 and 1 of 1: the test model's boxes match at once, so the first frame inferred with it starts
    // an event.
    let added = run.json(
        "POST",
        "/api/v1/queries",
        &json!({"text": "a red car", "label": "car", "threshold": 0.0, "min_frames": 1, "window": 1}),
    );
    assert_eq!(added.status, 201, "{}", String::from_utf8_lossy(&added.body));
    let added = added.json();
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["label"], "car");
    assert_eq!(added["window"], 1);
    let start = wait_for("a start line of the added query in events.jsonl", || {
        run.lines().into_iter().find(|l| l["type"] == "start" && l["query"] == "a red car")
    });
    let frame = start["frame"].as_u64().unwrap();
    // Frames already queued when the change came (file queue 4, post queue 4, one in inference) are the only
    // ones without it.
    assert!(
        frame <= before + 12,
        "the added query's first event is at frame {frame}, {before} were processed at the change"
    );
    let change = run.lines().into_iter().find(|l| l["type"] == "queries").expect("a queries line");
    assert_eq!(change["change"], "add");
    assert_eq!(change["id"], id.as_str());
    assert_eq!(change["queries"].as_array().unwrap().len(), 2);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("queries.json")).unwrap()).unwrap();
    assert_eq!(saved["queries"].as_array().unwrap().len(), 2, "{saved}");

    // Edit, read back, remove.
    let put = run.json(
        "PUT",
        &format!("/api/v1/queries/{id}"),
        &json!({"text": "a red car", "label": "red car", "threshold": 0.9}),
    );
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let one = run.get(&format!("/api/v1/queries/{id}")).json();
    assert_eq!((one["label"].as_str(), one["threshold"].as_f64()), (Some("red car"), Some(0.9)));
    assert_eq!(run.request("DELETE", &format!("/api/v1/queries/{id}"), None, &[]).status, 204);
    run.get(&format!("/api/v1/queries/{id}")).error(404);
    let changes: Vec<String> = run
        .lines()
        .iter()
        .filter(|l| l["type"] == "queries")
        .map(|l| l["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changes, ["add", "update", "remove"]);

    // Bad requests: 4xx with a JSON error of one line.
    let bad = |body: &str| {
        run.request("POST", "/api/v1/queries", Some(body.as_bytes()), &[("Content-Type", "application/json")])
    };
    assert!(bad(r#"{"text": "  "}"#).error(400).contains("empty"));
    bad("{not json").error(400);
    assert!(bad(r#"{"text": "a dog", "colour": "red"}"#).error(400).contains("colour"));
    assert!(bad(r#"{"text": "a dog", "min_frames": 5, "window": 3}"#).error(400).contains("min_frames"));
    assert!(bad(r#"{"text": "a dog", "threshold": 1.5}"#).error(400).contains("threshold"));
    assert!(bad(r#"{"text": "a dog", "sources": ["gate"]}"#).error(400).contains("gate"));
    assert!(bad(r#"{"text": "a dog", "text_threshold": 0.3}"#).error(400).contains("Grounding DINO"));
    assert!(bad(r#"{"text": "a dog", "verify": "a dog barking"}"#).error(400).contains("no verifier model"));
    assert!(bad(r#"{"text": "a dog", "alert_on": "verified"}"#).error(400).contains("not verify"));
    let big = format!(r#"{{"text": "{}"}}"#, "a".repeat(100_000));
    bad(&big).error(413);
    run.json("PUT", "/api/v1/queries/nope", &json!({"text": "a dog"})).error(404);
    run.request("DELETE", "/api/v1/queries/nope", None, &[]).error(404);
    run.get("/api/v1/nothing-here").error(404);
    run.request("POST", "/api/v1/sources", Some(b"{}"), &[]).error(405);
    run.get("/api/v1/events?limit=lots").error(400);
    run.get("/api/v1/events?colour=red").error(400);
    run.get("/api/v1/events/nope/clip.mp4").error(404);
    run.get("/api/v1/sources/nope/latest.jpg").error(404);
    assert!(
        run.get(&format!("/api/v1/events/{}/movie.avi", start["event_id"].as_str().unwrap()))
            .error(404)
            .contains("clip.mp4")
    );

    // Events from the index: newest first, filtered.
    let events = run.get("/api/v1/events?limit=3").json()["events"].as_array().unwrap().clone();
    assert!(!events.is_empty() && events.len() <= 3);
    assert!(events.windows(2).all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64()), "{events:?}");
    // The index follows events.jsonl within its tail period (100 ms).
    let cars = wait_for("the added query's start lines in the index", || {
        let cars =
            run.get("/api/v1/events?query=car&source=bikes&type=start").json()["events"].as_array().unwrap().clone();
        (!cars.is_empty()).then_some(cars)
    });
    assert!(cars.iter().all(|e| e["label"] == "car" && e["type"] == "start"), "{cars:?}");
    // `since` as a time: the lines written at or after it.
    assert!(!run.get("/api/v1/events?since=1970-01-01T00:00:00Z").json()["events"].as_array().unwrap().is_empty());
    assert!(run.get("/api/v1/events?since=2999-01-01T00:00:00Z").json()["events"].as_array().unwrap().is_empty());
    let since = events[0]["seq"].as_i64().unwrap();
    let newer = run.get(&format!("/api/v1/events?since={since}")).json()["events"].as_array().unwrap().clone();
    assert!(newer.iter().all(|e| e["seq"].as_i64().unwrap() > since));

    // The event stream: a line as it is written (a query change makes one at once).
    let port = run.port;
    let sse = std::thread::spawn(move || {
        read_stream(port, "/api/v1/events/stream", &[], Duration::from_secs(30), |b| {
            String::from_utf8_lossy(b).contains("\"change\":\"add\"")
        })
    });
    // The stream subscribes when its request is handled; the change comes after.
    std::thread::sleep(Duration::from_millis(300));
    let again = run.json("POST", "/api/v1/queries", &json!({"text": "a bus"}));
    assert_eq!(again.status, 201);
    let sse = String::from_utf8_lossy(&sse.join().unwrap()).to_string();
    assert!(sse.contains("text/event-stream"), "{sse}");
    assert!(sse.contains("event: line") && sse.contains("\"change\":\"add\""), "{sse}");

    // Live frames.
    let jpg = run.get("/api/v1/sources/bikes/latest.jpg");
    assert_eq!((jpg.status, jpg.header("content-type")), (200, Some("image/jpeg")));
    let img = image::load_from_memory(&jpg.body).unwrap();
    assert!(img.width() > 100 && img.height() > 100);
    // The picture moves on while a client asks (the first asked for frames; they come at most every 100 ms).
    let first: u64 = jpg.header("x-lookout-frame").unwrap().parse().unwrap();
    wait_for("a newer frame from latest.jpg", || {
        let r = run.get("/api/v1/sources/bikes/latest.jpg");
        let index: u64 = r.header("x-lookout-frame")?.parse().ok()?;
        (index > first).then_some(())
    });
    let mjpeg = read_stream(run.port, "/api/v1/sources/bikes/stream.mjpeg", &[], Duration::from_secs(20), |b| {
        b.windows(2).filter(|w| w == b"\xff\xd9").count() >= 2
    });
    let text = String::from_utf8_lossy(&mjpeg);
    assert!(text.contains("multipart/x-mixed-replace; boundary=lookout-frame"), "{}", &text[..text.len().min(300)]);
    assert!(text.matches("--lookout-frame\r\nContent-Type: image/jpeg").count() >= 2);

    // Metrics, checked by promtool.
    let m = run.get("/metrics");
    assert_eq!(m.status, 200);
    let metrics = String::from_utf8(m.body).unwrap();
    for name in [
        "lookout_source_frames_decoded_total{device=\"auto\",model=\"owlvit\",source=\"bikes\"}",
        "lookout_source_frames_inferred_total",
        "lookout_source_frames_dropped_total",
        "lookout_source_frames_skipped_still_total",
        "lookout_source_fps_in",
        "lookout_source_reconnects_total",
        "lookout_inference_seconds_bucket",
        "lookout_events_total{device=\"auto\",model=\"owlvit\",query=\"car\",type=\"start\"}",
        "lookout_clips_written_total",
        "lookout_clips_failed_total",
        "lookout_alerts_delivered_total{destination=",
        "lookout_alerts_spooled_total{destination=",
        "lookout_alerts_late_total{destination=",
        "lookout_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "no {name} in /metrics:\n{metrics}");
    }
    if let Some(promtool) = tool(&["promtool"]) {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // An event's evidence, with range requests (clips are written after the post-roll).
    let clips = wait_for("a clips line with written clips", || {
        run.lines().into_iter().find(|l| l["type"] == "clips" && l["clips"]["status"] == "written")
    });
    let ev = clips["event_id"].as_str().unwrap();
    let whole = run.get(&format!("/api/v1/events/{ev}/clip.mp4"));
    assert_eq!((whole.status, whole.header("content-type")), (200, Some("video/mp4")));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let part = run.request("GET", &format!("/api/v1/events/{ev}/clip.mp4"), None, &[("Range", "bytes=100-199")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[100..200]);
    assert_eq!(part.header("content-range"), Some(format!("bytes 100-199/{}", whole.body.len()).as_str()));
    assert_eq!(run.get(&format!("/api/v1/events/{ev}/crop.mp4")).status, 200);
    let snap = run.get(&format!("/api/v1/events/{ev}/snapshot.jpg"));
    assert_eq!(snap.status, 200);
    image::load_from_memory(&snap.body).unwrap();
    assert_eq!(run.get(&format!("/api/v1/events/{ev}/sidecar.json")).json()["event_id"], ev);

    // A client on the event stream does not hold the end of the run.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", run.port)).unwrap();
    std::io::Write::write_all(&mut held, b"GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Four query changes, and no frame lost: a file blocks, and a change is taken between two frames.
    let (status, summary) = run.wait();
    drop(held);
    assert!(status.success());
    let s = &summary["sources"][0];
    assert_eq!((s["frames_decoded"].as_u64(), s["frames_dropped"].as_u64()), (Some(250), Some(0)), "{s}");
    assert_eq!((s["frames_processed"].as_u64(), s["frames_inferred"].as_u64()), (Some(250), Some(250)), "{s}");
}

#[test]
fn a_token_guards_every_route_but_healthz_and_read_only_refuses_changes() {
    let out = tempfile::tempdir().unwrap();
    let token_file = out.path().join("token");
    std::fs::write(&token_file, "s3cret-token-for-tests\n").unwrap();
    // The queries the API left in an earlier run win over -q.
    std::fs::create_dir_all(out.path().join("run")).unwrap();
    let saved = json!({"queries": [{"id": "kept-1", "text": "a dog on a leash", "label": "dog", "threshold": 0.7, "min_frames": 2, "window": 3, "end_after_s": 2.0, "post_roll_s": 5.0, "pre_roll_s": 5.0, "cooldown_s": 10.0, "update_interval_s": 5.0, "sources": []}]});
    std::fs::write(out.path().join("run/queries.json"), saved.to_string()).unwrap();
    let mut run = ControlRun::start(
        &out.path().join("run"),
        2.0,
        &["--http-token-file", token_file.to_str().unwrap(), "--http-read-only", "--no-clips"],
    );
    assert!(run.stderr().contains("queries.json"), "{}", run.stderr());

    // No token: only /healthz.
    assert_eq!(run.get("/healthz").status, 200);
    for path in ["/readyz", "/api/v1/sources", "/api/v1/queries", "/metrics", "/", "/api/v1/events"] {
        let e = run.get(path).error(401);
        assert!(e.contains("Bearer"), "{e}");
    }
    let wrong = run.request("GET", "/api/v1/sources", None, &[("Authorization", "Bearer s3cret-token-for-test")]);
    wrong.error(401);

    // The token: as a header, or once in the URL (which sets a cookie for the page).
    run.token = Some("s3cret-token-for-tests".into());
    assert_eq!(run.get("/api/v1/sources").status, 200);
    let q = run.get("/api/v1/queries").json();
    assert_eq!(q["queries"][0]["id"], "kept-1", "{q}");
    assert_eq!(q["queries"].as_array().unwrap().len(), 1, "queries.json replaces -q: {q}");
    run.token = None;
    let page = run.get("/?token=s3cret-token-for-tests");
    assert_eq!(page.status, 200);
    let cookie = page.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    assert_eq!(run.request("GET", "/api/v1/sources", None, &[("Cookie", &cookie)]).status, 200);

    // Read-only: changes refused.
    run.token = Some("s3cret-token-for-tests".into());
    assert!(run.json("POST", "/api/v1/queries", &json!({"text": "a cat"})).error(403).contains("read-only"));
    run.request("DELETE", "/api/v1/queries/kept-1", None, &[]).error(403);
    assert!(run.wait().0.success());
}

#[test]
fn another_address_without_a_token_is_refused_at_the_start() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .arg("watch")
        .arg(root.join("tests/fixtures/bikes.mp4"))
        .args(["-q", "a bike", "--http", "0.0.0.0:0", "-m"])
        .arg(root.join("models/tiny/owlvit"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--http-token-file") && err.contains("0.0.0.0"), "{err}");
    // Refused before anything was written.
    assert!(!out.path().join("events.jsonl").exists());
}

#[test]
fn no_camera_password_in_any_response_and_not_ready_while_a_camera_is_down() {
    let out = tempfile::tempdir().unwrap();
    // A camera that refuses connections: it reconnects, with its error, and never delivers a frame.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let camera = format!("rtsp://admin:hunter2@127.0.0.1:{closed}/cam");
    let run = ControlRun::start(out.path(), 1.0, &[&camera, "--max-seconds", "8", "--no-clips"]);
    let cam = wait_for("the camera's error and a reconnect", || {
        let s = run.get("/api/v1/sources").json();
        let cam = s["sources"].as_array()?.iter().find(|s| s["live"] == true)?.clone();
        (cam["last_error"].is_string() && cam["reconnects"].as_u64()? >= 1).then_some(cam)
    });
    assert_eq!(cam["source"], format!("rtsp://***@127.0.0.1:{closed}/cam"), "{cam}");
    let ready = run.get("/readyz");
    assert_eq!(ready.status, 503);
    let waiting = ready.json()["waiting"].clone();
    assert!(
        waiting.as_array().unwrap().iter().any(|w| w == &json!(format!("source {}", cam["name"].as_str().unwrap()))),
        "{waiting}"
    );
    let mut bodies = String::new();
    for path in
        ["/api/v1/sources", "/readyz", "/metrics", "/api/v1/queries", "/api/v1/events?limit=1000", "/", "/app.js"]
    {
        let r = run.get(path);
        assert!(r.status == 200 || path == "/readyz", "{path}: {}", r.status);
        bodies.push_str(&String::from_utf8_lossy(&r.body));
    }
    bodies.push_str(&String::from_utf8_lossy(
        &run.get(&format!("/api/v1/sources/{}/latest.jpg", cam["name"].as_str().unwrap())).body,
    ));
    assert!(!bodies.contains("hunter2") && !bodies.contains("admin:"), "a password in a response");
    assert!(bodies.contains("lookout_source_reconnects_total"));
}

/// With a verifier (the deterministic brightness one: prompts are target brightnesses, "0.5" beats "5"), a query
/// added over the API verifies its events: each gets its `verification` line, confirmed, and with
/// `alert_on = "verified"` its alert waits for the verdict. Replacing a verifying query works as any other.
#[test]
fn a_query_added_over_the_api_verifies_its_events() {
    let out = tempfile::tempdir().unwrap();
    let verifier = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/verifier-brightness");
    let run = ControlRun::start(out.path(), 1.0, &["--verifier", verifier.to_str().unwrap(), "--no-clips"]);
    // Changes are taken once the run's queries and sources are in place (a 503 before).
    wait_for("readyz 200", || Some(run.get("/readyz")).filter(|r| r.status == 200));
    let body = json!({"text": "a red car", "threshold": 0.0, "min_frames": 1, "window": 1, "verify": "0.5",
                      "contrast": ["5"], "verify_threshold": 0.4, "alert_on": "verified"});
    let added = run.json("POST", "/api/v1/queries", &body);
    assert_eq!(added.status, 201, "{}", String::from_utf8_lossy(&added.body));
    let added = added.json();
    assert_eq!((added["verify"].as_str(), added["alert_on"].as_str()), (Some("0.5"), Some("verified")));
    let id = added["id"].as_str().unwrap().to_string();
    let v = wait_for("a verification line of the added query", || {
        run.lines().into_iter().find(|l| l["type"] == "verification" && l["query"] == "a red car")
    });
    assert_eq!(v["verdict"], "confirmed", "{v}");
    assert_eq!(v["prompts"], json!(["0.5", "5"]));
    assert_eq!(v["model"], "verifier-brightness");
    // The query of the command line does not verify: no line of its own.
    assert!(!run.lines().iter().any(|l| l["type"] == "verification" && l["query"] == "a person riding a bicycle"));
    let put = run.json("PUT", &format!("/api/v1/queries/{id}"), &json!({"text": "a red car", "verify": "5"}));
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["contrast"], json!(lookout::infer::verify::DEFAULT_CONTRAST), "the default contrast");
    let (status, summary) = run.wait();
    assert!(status.success(), "{summary}");
    assert!(summary["verification"]["confirmed"].as_u64().unwrap() >= 1, "{summary}");
}
