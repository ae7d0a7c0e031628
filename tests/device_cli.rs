//! `--device`, `--graph-opt-level`, `models prepare` and `pipelines show` through the real binary, on the CPU
//! ONNX Runtime that CI has (no GPU). On a machine whose ONNX Runtime has TensorRT or CUDA, the tests that expect
//! a refusal check the fallback chain instead.

mod common;

use std::process::{Command, Output};

fn lookout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,ort=warn")
        .output()
        .expect("run lookout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tiny() -> String {
    common::tiny_model("owlvit").display().to_string()
}

fn locate(device: &str, extra: &[&str]) -> Output {
    let image = common::fixture("coffee.png").display().to_string();
    let model = tiny();
    let mut args =
        vec!["locate", image.as_str(), "-q", "a cup", "-m", model.as_str(), "--no-images", "--device", device];
    args.extend_from_slice(extra);
    lookout(&args)
}

/// True when the ONNX Runtime here was built without TensorRT (what `auto` reports).
fn cpu_only_runtime() -> bool {
    let o = locate("auto", &[]);
    assert!(o.status.success(), "--device auto must work here: {}", stderr(&o));
    stderr(&o).contains("TensorRT:0: not in this ONNX Runtime build")
}

#[test]
fn cpu_works_and_says_nothing_about_devices() {
    let o = locate("cpu", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("a cup"), "{}", stdout(&o));
    assert!(!stderr(&o).contains("runs on"), "an explicit cpu is logged at debug level only: {}", stderr(&o));
}

#[test]
fn auto_logs_its_chain_for_each_graph() {
    let o = locate("auto", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for graph in ["text_encoder.onnx: runs on", "image_embedder.onnx: runs on"] {
        assert!(err.contains(graph), "{err}");
    }
    if err.contains("runs on CPU") {
        // Every step of the chain is there, with its reason.
        assert!(err.contains("runs on CPU (after TensorRT:0: ") && err.contains("; CUDA:0: "), "{err}");
    }
}

#[test]
fn tensorrt_here_fails_with_a_clear_message() {
    if !cpu_only_runtime() {
        eprintln!("this ONNX Runtime has TensorRT: the refusal is not testable here");
        return;
    }
    let o = locate("tensorrt", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("--device tensorrt:0 is not available"), "{err}");
    assert!(err.contains("was built without the TensorRT execution provider (it has: CPU)"), "{err}");
    assert!(err.contains("ORT_DYLIB_PATH") && err.contains("docs/jetson.md") && err.contains("--device cpu"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "one error line: {err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let o = locate("tpu", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("auto, cpu, cuda[:N] or tensorrt[:N]"), "{}", stderr(&o));
    let o = locate("cpu", &["--graph-opt-level", "4"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = locate("cpu", &["--graph-opt-level", "0", "--intra-threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn models_prepare_on_cpu_and_tensorrt() {
    let model = tiny();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let o = lookout(&["models", "prepare", &model, "--device", "cpu", "--trt-cache", &cache_dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("text_encoder.onnx: CPU (no engine to build)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("image_embedder.onnx: CPU (no engine to build)"), "{}", stdout(&o));

    if !cpu_only_runtime() {
        return;
    }
    let o = lookout(&["models", "prepare", &model, "--device", "tensorrt", "--trt-cache", &cache_dir]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("preparing") && err.contains("--device tensorrt:0 is not available"), "{err}");
    assert!(err.contains("built without the TensorRT execution provider"), "{err}");
}

#[test]
fn pipelines_show_redacts_and_picks_generic_here() {
    let o = lookout(&["pipelines", "show", "rtsp://admin:hunter2@10.0.0.5/live", "--annotate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("rtsp://***@10.0.0.5/live") && out.contains("put yours back"), "{out}");
    // No NVIDIA element is registered here, so auto picks the generic template and says why.
    assert!(out.contains("template: generic (auto; jetson needs nvv4l2decoder"), "{out}");
    assert!(out.contains("gst-launch-1.0 -v '") && out.contains("fakesink name=full_sink"), "{out}");

    let o = lookout(&["pipelines", "show", "/videos/a.mp4", "--bare", "--pipeline", "generic"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).starts_with("filesrc location=\"/videos/a.mp4\""), "{}", stdout(&o));

    // The Jetson template is shown from here too (to check it before deploying), saying it cannot run here.
    let o = lookout(&["pipelines", "show", "/videos/a.mp4", "--pipeline", "jetson"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("NOT usable here, missing nvv4l2decoder, nvvidconv"), "{out}");
    assert!(out.contains("parsebin ! nvv4l2decoder ! tee name=t"), "{out}");
    // Its NVENC encoder is listed, with what watch would use instead here.
    assert!(out.contains("encoder:  videoconvert ! video/x-raw,format={I420,RGBA} ! nvvidconv"), "{out}");
    assert!(
        out.contains("not available here, watch would use: videoconvert ! video/x-raw,format=I420 ! x264enc"),
        "{out}"
    );
}

#[test]
fn pipelines_list_says_which_encoders_work_here() {
    let o = lookout(&["pipelines", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("encoders: recording x264enc; live x264enc"), "{out}");
    if gstreamer::init().is_ok() && gstreamer::ElementFactory::find("nvv4l2h264enc").is_none() {
        assert!(out.contains("encoders: recording not available here"), "{out}");
    }
}

#[test]
fn pipelines_show_csi_cameras_and_the_decoder_of_a_file() {
    let o = lookout(&["pipelines", "show", "csi://0?width=1280&height=720&framerate=60", "--pipeline", "jetson"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("source:   csi://0?width=1280&height=720&framerate=60 (csi, live)"), "{out}");
    assert!(
        out.contains("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1"),
        "{out}"
    );

    // The generic template has no CSI chain: one line that names the source and says what it needs.
    let o = lookout(&["pipelines", "show", "csi://0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("csi://0") && err.contains("NVIDIA Jetson") && err.contains("--pipeline jetson"), "{err}");

    // A file that is here: the decoder decodebin will plug for it.
    let bikes = common::fixture("bikes.mp4").display().to_string();
    let o = lookout(&["pipelines", "show", &bikes]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("decoder:  avdec_h264 (what decodebin picks here for video/x-h264"), "{}", stdout(&o));
}
