//! Times lookout's verifier on one event's frames, for `make bench-verify` (models/bench_verify.py): the same
//! library calls `watch`'s verify thread makes (`Verifier::encode` once, then `Verifier::logits` per event:
//! preprocessing and the graph), on frames given as image files.
//!
//! ```text
//! cargo run --release --example verify_timing -- VERIFIER_DIR THREADS EVENTS PROMPTS_JSON FRAME.png...
//! ```
//! Prints one JSON object: `load_ms`, `encode_ms`, `event_ms` (one per event), `logits` (of the last event).
//! `PRECISION=int8` in the environment runs the verifier's int8 per-event graph (`[verify] precision`).

use std::time::Instant;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: verify_timing VERIFIER_DIR THREADS EVENTS PROMPTS_JSON FRAME...");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[0]);
    let threads: usize = args[1].parse().expect("THREADS is a number");
    let events: usize = args[2].parse().expect("EVENTS is a number");
    let prompts: Vec<String> = serde_json::from_str(&args[3]).expect("PROMPTS_JSON is a JSON list of strings");
    let frames: Vec<image::RgbImage> =
        args[4..].iter().map(|p| lookout::imageio::load_rgb(std::path::Path::new(p)).expect("a frame")).collect();
    let opts = lookout::infer::SessionOptions {
        intra_threads: threads,
        device: lookout::infer::Device::Cpu,
        ..Default::default()
    };
    let t = Instant::now();
    let precision: lookout::infer::Precision =
        std::env::var("PRECISION").unwrap_or_else(|_| "fp32".into()).parse().expect("PRECISION is fp32 or int8");
    let mut v = lookout::infer::load_verifier(&dir, &opts, precision).expect("the verifier loads");
    let load_ms = ms(t);
    let t = Instant::now();
    let set = v.encode(&prompts).expect("the prompts encode");
    let encode_ms = ms(t);
    let mut event_ms = Vec::with_capacity(events);
    let mut logits = Vec::new();
    for _ in 0..events {
        let t = Instant::now();
        logits = v.logits(&frames, &set).expect("the verifier runs");
        event_ms.push(ms(t));
    }
    println!(
        "{}",
        serde_json::json!({"load_ms": load_ms, "encode_ms": encode_ms, "event_ms": event_ms, "logits": logits})
    );
}
