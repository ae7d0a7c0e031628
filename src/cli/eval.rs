//! `lookout eval`: measure models on a referring-expression set (`refexp`), and a `watch` run's events against
//! annotated footage (`events`). The measuring is in `lookout::eval`; this file loads the models, runs them,
//! shows progress and prints.
//!
//! `eval refexp` resumes: each model's results go to `<out>/items/<model>.jsonl` one whole line per item as they
//! come (see `lookout::eval::runlog`), and a run with the same `--out` evaluates only the items not there yet.
//! `eval events` resumes too: how far it has read `events.jsonl` and the events so far are kept every 2 s in
//! `<out>.progress.json` (see `lookout::eval::events::Checkpoint`), and the next run reads on from there; this also
//! makes a run again on the log of a `watch` that is still running read only the new lines.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};

use lookout::eval::dataset::{self, DEFAULT_REFS_FILE, Dataset};
use lookout::eval::events;
use lookout::eval::metrics::{self, ItemResult};
use lookout::eval::report::{self, DatasetInfo, ModelReport, Results, WorstCase};
use lookout::eval::runlog::RunLog;
use lookout::infer::postprocess::{DEFAULT_NMS_IOU, Selection};
use lookout::infer::{Image, ModelDir};

use super::{UsageError, session, values};

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Measure models on a referring-expression set: RefCOCO/RefCOCOg, or a JSONL file of your own
    /// {image, sentence, box}. Writes results.json and index.html to --out.
    Refexp(RefexpArgs),
    /// Compare a `watch` run's events.jsonl with annotated intervals: precision, recall, time to the first
    /// alert, false alerts per hour.
    Events(EventsArgs),
}

#[derive(Debug, Args)]
pub struct RefexpArgs {
    /// A JSONL file of {"image", "sentence", "box": [x1, y1, x2, y2] or null} (image paths relative to the file's
    /// directory), or a RefCOCO/RefCOCOg directory holding instances.json and refs(umd).p (then give --images).
    #[arg(value_name = "DATA")]
    pub data: PathBuf,
    /// A model to measure: a directory or a name from `lookout models list`. Repeat to compare models.
    #[arg(short = 'm', long = "model", value_name = "DIR|NAME", required = true, help_heading = "Model")]
    pub models: Vec<String>,
    /// RefCOCO layout: the COCO image directory (train2014) the refs point into.
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub images: Option<PathBuf>,
    /// RefCOCO layout: the split to evaluate (umd: train, val, test; google: train, val).
    #[arg(long, value_name = "NAME", default_value = "val", help_heading = "Data")]
    pub split: String,
    /// RefCOCO layout: the refs pickle in DATA.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_REFS_FILE, help_heading = "Data")]
    pub refs: String,
    /// Report directory: results.json, index.html, worst/ and items/ (kept to resume an interrupted run).
    #[arg(long, value_name = "DIR", default_value = "report", help_heading = "Output")]
    pub out: PathBuf,
    /// Evaluate only the first N items of the set.
    #[arg(long, value_name = "N", value_parser = values::at_least_one_usize, help_heading = "Data")]
    pub limit: Option<usize>,
    /// A best score below T means the model says "no target" [default: the model card's box threshold: 0.4
    /// for Grounding DINO, 0.2 for OWL; 0.65 for a test model]
    #[arg(long, value_name = "T", allow_negative_numbers = true, value_parser = values::unit_interval,
          help_heading = "Model")]
    pub no_target_threshold: Option<f32>,
    /// Graph layout, for every model: "split", "hf" or "hf:VARIANT" [default: split when a directory has it]
    #[arg(long, value_name = "hf|split|hf:VARIANT", help_heading = "Model")]
    pub layout: Option<lookout::infer::LayoutChoice>,
    /// Threads ONNX Runtime uses inside one operator (0: one per core).
    #[arg(long, value_name = "N", default_value_t = lookout::infer::runtime::DEFAULT_INTRA_THREADS,
          help_heading = "Model")]
    pub intra_threads: usize,
    #[command(flatten)]
    pub session: session::SessionArgs,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The output directory of a `watch` run (its events.jsonl), or an events.jsonl file.
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Annotated intervals: a JSON list of {"source", "query", "start_s", "end_s"}, or {"footage": [{"source",
    /// "duration_s"}], "intervals": [...]} for false alerts per hour.
    #[arg(long, value_name = "FILE")]
    pub truth: PathBuf,
    /// Where to write the figures as JSON [default: RUN_DIR/eval-events.json]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read only the first N lines of events.jsonl.
    #[arg(long, value_name = "N", value_parser = values::at_least_one_usize)]
    pub limit: Option<usize>,
    /// Read events.jsonl from its first line, not from where the last run stopped (kept in
    /// <out>.progress.json, e.g. RUN_DIR/eval-events.progress.json).
    #[arg(long)]
    pub fresh: bool,
}

/// How often `eval events` keeps how far it has read.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EvalCommand::Refexp(a) => refexp(a),
        EvalCommand::Events(a) => events_cmd(a),
    }
}

/// Bad input (an annotation, a report directory of another set) is a usage error: exit code 2.
fn usage(e: lookout::eval::EvalError) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// A progress bar on stderr, only when it is a terminal; log lines are written above it.
fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    super::draw_above(Some(bar.clone()));
    bar
}

fn finish_bar(bar: &indicatif::ProgressBar) {
    bar.finish_and_clear();
    super::draw_above(None);
}

fn load_dataset(args: &RefexpArgs) -> anyhow::Result<Dataset> {
    let data = &args.data;
    if data.is_dir() {
        let Some(images) = &args.images else {
            return Err(UsageError(format!(
                "{} is a RefCOCO directory: give the COCO image directory with --images (train2014)",
                data.display()
            ))
            .into());
        };
        return dataset::load_refcoco(data, &args.refs, images, &args.split).map_err(usage);
    }
    if !data.exists() {
        return Err(UsageError(format!(
            "{}: no such file or directory; give a JSONL file or a RefCOCO directory",
            data.display()
        ))
        .into());
    }
    dataset::load_jsonl(data).map_err(usage)
}

/// A model to measure, opened but not loaded yet.
struct Candidate {
    model: ModelDir,
    key: String,
}

/// A file-name-safe key per model, unique among them.
fn model_keys(models: &[ModelDir]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for m in models {
        let base: String = m
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
            .collect();
        let mut key = base.clone();
        let mut n = 2;
        while keys.contains(&key) {
            key = format!("{base}-{n}");
            n += 1;
        }
        keys.push(key);
    }
    keys
}

/// The no-target threshold of a model: the user's, else the test model's, else the card's box threshold.
fn no_target_threshold(model: &ModelDir, given: Option<f32>) -> f32 {
    if let Some(t) = given {
        return t;
    }
    if model.is_test_model {
        return lookout::config::TEST_MODEL_THRESHOLD;
    }
    if model.family.is_grounding_dino() {
        lookout::infer::gdino::DEFAULT_BOX_THRESHOLD
    } else {
        lookout::config::DEFAULT_THRESHOLD
    }
}

fn refexp(args: RefexpArgs) -> anyhow::Result<ExitCode> {
    super::writable_out_dir(&args.out)?;
    let set = load_dataset(&args)?;
    let n = args.limit.map_or(set.items.len(), |l| l.min(set.items.len()));
    let items = &set.items[..n];

    let mut candidates = Vec::new();
    for spec in &args.models {
        let dir = super::resolve_model(spec)?;
        candidates.push(ModelDir::open_choice(&dir, args.layout.as_ref())?);
    }
    let keys = model_keys(&candidates);
    let candidates: Vec<Candidate> =
        candidates.into_iter().zip(keys).map(|(model, key)| Candidate { model, key }).collect();

    // Results already there (an interrupted run), checked against the set, and what is left to do.
    let mut logs = Vec::new();
    for c in &candidates {
        let (log, done) =
            RunLog::open(&args.out.join("items").join(format!("{}.jsonl", c.key)), &set.items).map_err(usage)?;
        let left = (0..n).filter(|i| !done.contains_key(i)).count();
        if left < n {
            tracing::info!(
                "{}: {} of {n} items already done in {}, resuming",
                c.model.name,
                n - left,
                log.path().display()
            );
        }
        logs.push((log, done, left));
    }
    let total: usize = logs.iter().map(|l| l.2).sum();
    let bar = progress_bar(total as u64, "{msg} [{bar:30}] {pos}/{len} items  ETA {eta}");
    let opts = args.session.options(args.intra_threads, &lookout::config::Config::default())?;
    let selection = Selection { threshold: None, nms_iou: DEFAULT_NMS_IOU, top_k: Some(1), always_best: true };
    for (c, (log, done, left)) in candidates.iter().zip(logs.iter_mut()) {
        if *left == 0 {
            continue;
        }
        if c.model.is_test_model {
            tracing::warn!("{}: test model with random weights: its figures measure nothing", c.model.dir.display());
        }
        bar.set_message(c.model.name.clone());
        let mut detector = lookout::infer::load(c.model.clone(), &opts)?;
        let mut decoded: Option<(PathBuf, image::RgbImage)> = None;
        for (index, item) in items.iter().enumerate() {
            if done.contains_key(&index) {
                continue;
            }
            if decoded.as_ref().is_none_or(|(p, _)| *p != item.image) {
                let img = lookout::imageio::load_rgb(&item.image)
                    .map_err(|e| UsageError(format!("{} ({}): {e}", set.annotations.display(), item.entry)))?;
                decoded = Some((item.image.clone(), img));
            }
            let img = &decoded.as_ref().expect("decoded above").1;
            // One sentence per pass: Grounding DINO's queries in one prompt attend to each other.
            let t0 = Instant::now();
            // A sentence the model refuses stops the run naming the entry (still exit code 2: the cause is kept).
            let queries = detector
                .encode(std::slice::from_ref(&item.sentence))
                .with_context(|| format!("{}: {}", set.annotations.display(), item.entry))?;
            let encode_ms = t0.elapsed().as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let found = detector
                .detect(&[Image::Rgb(img)], &queries, &selection)?
                .remove(0)
                .map_err(|e| anyhow::anyhow!("{}: {} \"{}\": {e}", item.image.display(), item.entry, item.sentence))?;
            let detect_ms = t0.elapsed().as_secs_f64() * 1e3;
            let best = found.first();
            let r = ItemResult {
                index,
                image: item.image.display().to_string(),
                sentence: item.sentence.clone(),
                truth: item.truth,
                pred: best.map(|d| d.bbox),
                score: best.map(|d| d.score),
                detect_ms,
                encode_ms,
            };
            log.append(&r).map_err(usage)?;
            done.insert(index, r);
            bar.inc(1);
        }
    }
    finish_bar(&bar);

    // The report, from the logs (this run's results and the earlier ones alike).
    std::fs::create_dir_all(args.out.join("worst"))
        .map_err(|e| UsageError(format!("{}: cannot create ({e})", args.out.join("worst").display())))?;
    let mut models = Vec::new();
    for (c, (_, done, _)) in candidates.iter().zip(&logs) {
        let results: Vec<ItemResult> = done.range(..n).map(|(_, r)| r.clone()).collect();
        let threshold = no_target_threshold(&c.model, args.no_target_threshold);
        let summary = metrics::summarize(&results, threshold);
        let mut worst = Vec::new();
        for (rank, r) in metrics::worst(&results, threshold, report::WORST_CASES).into_iter().enumerate() {
            let item = &items[r.index];
            let picture = format!("worst/{}-{:02}.jpg", c.key, rank + 1);
            let img = lookout::imageio::load_rgb(&item.image).map_err(|e| UsageError(e.to_string()))?;
            report::draw_case(&img, r, c.model.is_test_model, &args.out.join(&picture)).map_err(usage)?;
            worst.push(WorstCase {
                rank: rank + 1,
                index: r.index,
                entry: item.entry.clone(),
                image: r.image.clone(),
                sentence: r.sentence.clone(),
                truth: r.truth,
                pred: r.pred,
                score: r.score,
                iou: r.iou(),
                picture,
            });
        }
        models.push(ModelReport {
            key: c.key.clone(),
            model: c.model.name.clone(),
            dir: c.model.dir.display().to_string(),
            family: c.model.family.name().into(),
            layout: c.model.layout_choice().to_string(),
            test_model: c.model.is_test_model,
            summary,
            worst,
        });
    }
    let results = Results {
        dataset: DatasetInfo {
            layout: set.layout,
            annotations: set.annotations.display().to_string(),
            split: set.split.clone(),
            items_in_set: set.items.len(),
            items: n,
            limit: args.limit,
            no_target: items.iter().filter(|i| i.truth.is_none()).count(),
        },
        protocol: report::PROTOCOL.into(),
        models,
    };
    report::write_json(&results, &args.out.join("results.json")).map_err(usage)?;
    report::write_html(&results, &args.out.join("index.html")).map_err(usage)?;
    print_refexp(&results, &args.out);
    Ok(ExitCode::SUCCESS)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn print_refexp(r: &Results, out: &Path) {
    println!(
        "{} items of {}{}",
        r.dataset.items,
        r.dataset.annotations,
        r.dataset.split.as_deref().map(|s| format!(" (split {s})")).unwrap_or_default()
    );
    println!(
        "  {:<28} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "model", "Acc@0.5", "Acc@0.75", "mean IoU", "no-target", "ms/image"
    );
    for m in &r.models {
        let s = &m.summary;
        println!(
            "  {:<28} {:>8} {:>8} {:>8} {:>9} {:>10.1}{}",
            m.model,
            pct(s.acc_50),
            pct(s.acc_75),
            s.mean_iou.map_or("-".into(), |v| format!("{v:.3}")),
            pct(s.no_target.as_ref().map(|n| n.rate)),
            s.ms_per_image,
            if m.test_model { "  (test model: random weights)" } else { "" }
        );
    }
    println!("report: {}", out.join("index.html").display());
}

fn events_cmd(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let events_file = if args.run_dir.is_dir() {
        args.run_dir.join(lookout::sink::events::EVENTS_FILE_NAME)
    } else {
        args.run_dir.clone()
    };
    if !events_file.is_file() {
        return Err(UsageError(format!(
            "{}: no such file; give the output directory of a `lookout watch` run",
            events_file.display()
        ))
        .into());
    }
    let truth = events::read_truth(&args.truth).map_err(usage)?;
    let out = args.out.clone().unwrap_or_else(|| {
        if args.run_dir.is_dir() { args.run_dir.join("eval-events.json") } else { PathBuf::from("eval-events.json") }
    });
    // The reading so far, kept beside the report: an interrupted run, or a run again on a log that has grown,
    // reads on from there.
    let progress_file = out.with_extension("progress.json");
    let from = if args.fresh {
        events::ReadState::default()
    } else {
        match events::Checkpoint::load(&progress_file, &events_file) {
            Ok(Some(state)) if args.limit.is_none_or(|l| state.lines <= l) => {
                eprintln!(
                    "resuming {} at line {} ({} events so far), from {}",
                    events_file.display(),
                    state.lines + 1,
                    state.spans.len(),
                    progress_file.display()
                );
                state
            }
            Ok(Some(state)) => {
                eprintln!(
                    "{}: read to line {}, past --limit {}; reading from the start",
                    progress_file.display(),
                    state.lines,
                    args.limit.unwrap_or_default()
                );
                events::ReadState::default()
            }
            Ok(None) => events::ReadState::default(),
            Err(why) => {
                eprintln!("{}: {why}; reading from the start", progress_file.display());
                events::ReadState::default()
            }
        }
    };
    let size = std::fs::metadata(&events_file).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size, "{msg} [{bar:30}] {bytes}/{total_bytes}");
    bar.set_message("events.jsonl");
    bar.set_position(from.offset);
    let mut last_kept = Instant::now();
    let mut keep_error = None;
    let mut keep = |state: &events::ReadState| {
        if keep_error.is_none() && last_kept.elapsed() >= CHECKPOINT_EVERY {
            last_kept = Instant::now();
            keep_error = events::Checkpoint::of(&events_file, state).and_then(|c| c.save(&progress_file)).err();
        }
    };
    let read = events::resume_events(&events_file, from, args.limit, &mut |b| bar.set_position(b), &mut keep)
        .map_err(usage)?;
    if let Some(e) = keep_error {
        return Err(UsageError(e.to_string()).into());
    }
    events::Checkpoint::of(&events_file, &read.state).and_then(|c| c.save(&progress_file)).map_err(usage)?;
    finish_bar(&bar);
    let spans = read.spans;
    let report = events::score(&spans, &truth, &events_file, &args.truth);
    let text = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(&out, text).map_err(|e| UsageError(format!("{}: cannot write ({e})", out.display())))?;
    print_events(&report, args.limit, &out);
    Ok(ExitCode::SUCCESS)
}

fn ratio_text(v: Option<f64>, a: usize, b: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.3} ({a} of {b})"))
}

fn print_events(r: &events::EventsReport, limit: Option<usize>, out: &Path) {
    let o = &r.overall;
    println!(
        "{}: {} events{} against {} intervals of {}, matched at temporal IoU >= {}{}",
        r.events_file.display(),
        o.events,
        if r.open_events > 0 { format!(" ({} never ended)", r.open_events) } else { String::new() },
        o.intervals,
        r.truth_file.display(),
        r.min_temporal_iou,
        limit.map(|l| format!(" (--limit: the first {l} lines only)")).unwrap_or_default()
    );
    println!(
        "  precision {}   recall {}",
        ratio_text(o.precision, o.matched, o.events),
        ratio_text(o.recall, o.matched, o.intervals)
    );
    match &o.first_alert {
        Some(f) => println!(
            "  time to the first alert: mean {:.2} s, median {:.2} s, max {:.2} s ({} intervals alerted)",
            f.mean_s, f.median_s, f.max_s, f.intervals_alerted
        ),
        None => println!("  time to the first alert: - (no interval was alerted)"),
    }
    match (o.false_alerts_per_hour, r.hours) {
        (Some(rate), Some(h)) => {
            println!("  false alerts: {} ({rate:.2} per hour over {h:.3} h of footage)", o.false_alerts)
        }
        _ => println!(
            "  false alerts: {} (per hour: give every source's duration_s under \"footage\" in the truth file)",
            o.false_alerts
        ),
    }
    let mut by_pair: BTreeMap<(&str, &str), &events::PairScores> = BTreeMap::new();
    for p in &r.pairs {
        by_pair.insert((p.source.as_str(), p.query.as_str()), p);
    }
    for ((source, query), p) in by_pair {
        let s = &p.scores;
        println!(
            "  {source} \"{query}\": precision {}, recall {}, false alerts {}",
            ratio_text(s.precision, s.matched, s.events),
            ratio_text(s.recall, s.matched, s.intervals),
            s.false_alerts
        );
    }
    for n in &r.not_annotated {
        println!("  not annotated, not counted: {} \"{}\" ({} events)", n.source, n.query, n.events);
    }
    println!("written: {}", out.display());
}
