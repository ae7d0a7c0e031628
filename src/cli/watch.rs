//! `lookout watch`: standing queries on every frame of files, RTSP/HTTP streams and cameras.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use lookout::config::{Config, StandingQuery};
use lookout::gst::PipelineChoice;
use lookout::infer::{LayoutChoice, ModelDir};
use lookout::shutdown::{Level, Shutdown};
use lookout::source::{ReconnectSettings, SourceSpec, probe_media};
use lookout::watch::{self, WatchSettings};

use super::{ModelArgs, QueryArgs, UsageError, values};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Sources: video files, rtsp:// or http(s):// URLs (HLS included), V4L2 devices (/dev/video0), or Jetson CSI
    /// cameras (csi://0, csi://1?width=1280&height=720&framerate=60).
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// A TOML config (sources, queries with labels, thresholds and sources, output, reconnect limits).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop (and drain) after this many seconds [default: at the end of the files; never for a live source]
    #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = values::positive)]
    pub max_seconds: Option<f64>,
    #[command(flatten)]
    pub query: QueryArgs,
    /// Score threshold (0 to 1) for the -q queries [default: 0.2; 0.65 with the test model; 0.4 for Grounding DINO]
    #[arg(long, value_name = "T", help_heading = "Queries", allow_negative_numbers = true,
          value_parser = values::unit_interval)]
    pub threshold: Option<f32>,
    /// Confirm each event of the -q queries with the verifier (--verifier or [verify] model): the same sentence
    /// against the default contrast prompts (see README, "Verifying actions")
    #[arg(long, help_heading = "Queries")]
    pub verify: bool,
    /// The verifier: "xclip" or "clip" (the family; its model from [verify] model, CLIP's default
    /// clip-vit-base-patch32), or a model directory or manifest name [default: [verify] of --config]
    #[arg(long, value_name = "xclip|clip|DIR|NAME", help_heading = "Queries")]
    pub verifier: Option<String>,
    /// The verifier's per-event graph: "fp32", or "int8" (2-3 times as fast on a CPU with AVX-512 VNNI; made by
    /// models/quantize_int8.py) [default: [verify] precision of --config, else fp32]
    #[arg(long, value_name = "fp32|int8", help_heading = "Queries")]
    pub verifier_precision: Option<lookout::infer::Precision>,
    /// Infer every Nth frame; the tracker carries the boxes in between [default: [inference] every of --config,
    /// else 1]
    #[arg(long, value_name = "N", help_heading = "Inference", conflicts_with = "fps",
          allow_negative_numbers = true, value_parser = values::at_least_one_u32)]
    pub every: Option<u32>,
    /// Infer at most F frames per second of each source [default: [inference] fps of --config, else off: every
    /// frame, or every Nth with --every]
    #[arg(long, value_name = "F", help_heading = "Inference", allow_negative_numbers = true,
          value_parser = values::positive)]
    pub fps: Option<f64>,
    /// The motion gate: frames where nothing moves skip inference (the tracks and events are held), and a still
    /// scene is checked every [motion] max_interval (5 s). on/off for every source; auto: [motion] and the
    /// sources' motion of --config, else on for live sources and off for files [default: auto]
    #[arg(long, value_name = "on|off|auto", help_heading = "Inference", value_parser = ["on", "off", "auto"])]
    pub motion: Option<String>,
    /// Pipeline template: auto, a built-in name (generic, jetson) or a template file [default: auto]
    #[arg(long, value_name = "NAME|FILE", help_heading = "Inference")]
    pub pipeline: Option<String>,
    /// Output directory: events.jsonl, summary.json, and <source>/ (the events' clips, annotated.mp4)
    /// [default: [output] dir of --config, else out]
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Write <out>/<source>/annotated.mp4 with boxes, labels, track ids, scores and time.
    #[arg(long, help_heading = "Output")]
    pub annotate: bool,
    /// Write no clips: by default each event gets <out>/<source>/<event-id>.mp4, from its pre-roll to its
    /// post-roll, cut from the source's own encoded video (and its evidence).
    #[arg(long, help_heading = "Output")]
    pub no_clips: bool,
    /// Leave the wall-clock time out of events (for byte-identical replays).
    #[arg(long, help_heading = "Output")]
    pub no_wall_time: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Republish the annotated video of each source at rtsp://ADDR:PORT/<source> (PORT alone: on 127.0.0.1).
    #[arg(long, value_name = "[ADDR:]PORT", help_heading = "Output")]
    pub serve_rtsp: Option<String>,
    /// Publish every event to this MQTT broker (mqtt://[user:pass@]HOST[:PORT], QoS 1, topics lookout/<source>/events
    /// and lookout/available). Alerts wait in <out>/alert-spool while the broker is down. Replaces the url of
    /// [alerts.mqtt] in --config, keeping its other settings.
    #[arg(long, value_name = "URL", help_heading = "Alerts")]
    pub mqtt: Option<String>,
    /// POST every event as JSON to this URL (repeatable), with retries; spooled while it is down. Added to the
    /// [[alerts.webhooks]] of --config.
    #[arg(long, value_name = "URL", help_heading = "Alerts")]
    pub webhook: Vec<String>,
    /// Keep the output directory under this many GB (10^9 bytes), deleting the oldest clips and snapshots first
    /// (never events.jsonl). Overrides [retention] max_disk_gb [default: no limit]
    #[arg(long, value_name = "GB", help_heading = "Retention", allow_negative_numbers = true)]
    pub max_disk_gb: Option<f64>,
    /// Delete clips and snapshots older than this many days. Overrides [retention] max_age_days [default: keep]
    #[arg(long, value_name = "DAYS", help_heading = "Retention", allow_negative_numbers = true)]
    pub max_age_days: Option<f64>,
    /// Serve the control plane on [ADDR:]PORT (a port alone: on 127.0.0.1): REST API, live page, events, /metrics.
    /// Overrides [http] listen of --config [default: off]
    #[arg(long, value_name = "[ADDR:]PORT", help_heading = "Control plane")]
    pub http: Option<String>,
    /// A file whose first line is the bearer token every request but /healthz must carry; required to listen on
    /// an address other than 127.0.0.1 [default: [http] token_file, else no token]
    #[arg(long, value_name = "FILE", help_heading = "Control plane")]
    pub http_token_file: Option<PathBuf>,
    /// Serve the control plane read-only: queries cannot be changed.
    #[arg(long, help_heading = "Control plane")]
    pub http_read_only: bool,
    /// Pace files at their frame rate, as a camera would deliver them, or at SPEED times it (0.5: half speed;
    /// for demos and tests of the control plane) [default: as fast as they decode]
    #[arg(long, value_name = "SPEED", help_heading = "Inference", num_args = 0..=1, default_missing_value = "1",
          allow_negative_numbers = true, value_parser = values::positive)]
    pub realtime: Option<f64>,
    /// Decode and track without running the model (to measure the video pipeline alone).
    #[arg(long, hide = true)]
    pub decode_only: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let common = &args.model;
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| UsageError(e.to_string()))?,
        None => Config::default(),
    };

    // Queries: -q first, then the config's. The default threshold depends on the model (the test model's is
    // higher), so the list is made again once the model is known.
    let standing = |default_threshold: f32| -> Vec<StandingQuery> {
        let threshold = Some(args.threshold.unwrap_or(default_threshold));
        let mut queries: Vec<StandingQuery> = args
            .query
            .queries
            .iter()
            .map(|q| StandingQuery {
                verify: args.verify.then(|| lookout::config::QueryVerify::with_defaults(q)),
                ..StandingQuery::from_text(q, threshold)
            })
            .collect();
        // Given by the user or not decides whether a model's own default may replace it.
        for q in &mut queries {
            q.threshold_given = args.threshold.is_some();
        }
        queries.extend(config.standing_queries_with(default_threshold));
        queries
    };
    let mut queries = standing(lookout::config::DEFAULT_THRESHOLD);
    // The control plane is checked before anything loads: a refused address is a usage error.
    let http = match args.http.as_deref().or(config.http.listen.as_deref()) {
        Some(listen) => {
            let listen = lookout::http::parse_listen(listen).map_err(UsageError)?;
            let token = match args.http_token_file.as_ref().or(config.http.token_file.as_ref()) {
                Some(path) => Some(lookout::http::read_token(path).map_err(UsageError)?),
                None => None,
            };
            lookout::http::check_access(listen, token.as_deref()).map_err(UsageError)?;
            let read_only = args.http_read_only || config.http.read_only.unwrap_or(false);
            Some(lookout::http::HttpSettings { listen, token, read_only })
        }
        None => None,
    };
    // With the control plane, the queries the API left in <out>/queries.json win over -q and [[query]].
    let saved = match &http {
        Some(_) => {
            let out = args.out.clone().or(config.output.dir.clone()).unwrap_or_else(|| PathBuf::from("out"));
            lookout::http::queries::load_saved(&out).map_err(UsageError)?.filter(|s| !s.is_empty())
        }
        None => None,
    };
    if saved.is_some() {
        queries = Vec::new();
    }
    let no_sources = args.sources.is_empty() && config.sources.is_empty();
    match (no_sources, queries.is_empty() && saved.is_none()) {
        (true, true) => {
            return Err(UsageError(
                "no sources and no queries: give video files, rtsp:// URLs or /dev/videoN, and what to find with \
                 -q \"a person on the ground\" (or [[source]] and [[query]] in --config)"
                    .into(),
            )
            .into());
        }
        (false, true) => {
            return Err(UsageError(
                "no queries: give at least one with -q \"a person on the ground\" or a [[query]] in --config".into(),
            )
            .into());
        }
        _ => {}
    }
    if let Some(q) = queries.iter().find(|q| q.text.trim().is_empty()) {
        return Err(UsageError(format!(
            "empty query (label {:?}): give a sentence that describes what to find",
            q.label
        ))
        .into());
    }

    // Verification is checked before the model loads.
    if args.verify && args.query.queries.is_empty() {
        return Err(
            UsageError("--verify confirms the events of the -q queries: give at least one -q \"...\"".into()).into()
        );
    }
    // The verifier: needed by a query that verifies; with the control plane, loaded also when one is configured
    // (--verifier, [verify] model or verifier), for the queries that verify added over the API.
    let verifier_configured =
        args.verifier.is_some() || config.verify.model.is_some() || config.verify.verifier.is_some();
    let verifier_dir = match queries.iter().find(|q| q.verify.is_some()) {
        Some(q) => Some(verifier_model(args.verifier.as_deref(), &config.verify, &q.label)?),
        None if http.is_some() && verifier_configured => {
            Some(verifier_model(args.verifier.as_deref(), &config.verify, "(added over the API)")?)
        }
        None => None,
    };
    let verifier_precision = args.verifier_precision.or(config.verify.precision).unwrap_or_default();
    if let Some(dir) = &verifier_dir {
        lookout::infer::verifier_event_graph(dir, verifier_precision).map_err(|e| UsageError(e.to_string()))?;
    }

    // Sources: arguments first, then the config's. A bad one is reported and left out; the rest run.
    let mut specs = Vec::new();
    let mut names = Vec::new();
    let mut motion = Vec::new();
    let mut bad = Vec::new();
    let mut not_started = Vec::new();
    let all: Vec<(String, Option<String>, Option<&lookout::config::MotionConfig>)> = args
        .sources
        .iter()
        .map(|s| (s.clone(), None, None))
        .chain(config.sources.iter().map(|s| (s.url.clone(), s.name.clone(), s.motion.as_ref())))
        .collect();
    if all.is_empty() {
        return Err(UsageError(
            "no sources: give video files, rtsp:// URLs or /dev/videoN, or [[source]] in --config".into(),
        )
        .into());
    }
    for (i, (arg, name, source_motion)) in all.iter().enumerate() {
        match SourceSpec::parse(arg, i) {
            Ok(spec) => {
                let m = source_motion.map_or_else(|| config.motion.clone(), |m| m.over(&config.motion));
                let where_ = match source_motion {
                    Some(_) => format!("{}: [[source]] {arg:?} motion", config_name(&args)),
                    None => format!("{}: [motion]", config_name(&args)),
                };
                motion.push(motion_settings(&m, args.motion.as_deref(), spec.is_live(), &where_)?);
                specs.push(spec);
                names.push(name.clone());
            }
            Err(e) => {
                // Named in the summary as it would have been had it run (password removed).
                let (display, short) = match SourceSpec::parse_unchecked(arg, i) {
                    Ok(spec) => (spec.display.clone(), name.clone().unwrap_or(spec.short_name)),
                    Err(_) => (lookout::redact::redact_url(arg), name.clone().unwrap_or_else(|| format!("source{i}"))),
                };
                not_started.push(watch::SourceSummary::not_started(display, short, e.to_string()));
                bad.push(e.to_string());
            }
        }
    }
    // One line per bad source; when none is left, the error itself says why (once).
    match (specs.is_empty(), bad.as_slice()) {
        (true, [one]) => return Err(UsageError(one.clone()).into()),
        (true, _) => return Err(UsageError(format!("no usable source: {}", bad.join("; "))).into()),
        (false, _) => bad.iter().for_each(|e| eprintln!("error: {e}")),
    }

    let model_arg =
        config.model.name.clone().filter(|_| common.model == super::DEFAULT_MODEL).unwrap_or(common.model.clone());
    let layout = match (&common.layout, config.model.layout.as_deref()) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(l)) => Some(l.parse::<LayoutChoice>().map_err(UsageError)?),
        (None, None) => None,
    };
    // Alerts and retention are checked before the model loads, so that a mistake shows at once.
    let out_dir = args.out.clone().or(config.output.dir.clone()).unwrap_or_else(|| PathBuf::from("out"));
    let alerts = config
        .alerts
        .settings(&out_dir, args.mqtt.as_deref(), &args.webhook)
        .map_err(|e| UsageError(format!("{}: {e}", config_name(&args))))?;
    if let Some(a) = &alerts {
        a.check().map_err(|e| UsageError(e.to_string()))?;
    }
    let retention = lookout::sink::retention::RetentionSettings::from_config(
        &out_dir,
        &config.retention,
        args.max_disk_gb,
        args.max_age_days,
    )
    .map_err(|e| UsageError(e.to_string()))?;
    super::writable_out_dir(&out_dir)?;
    let precision = common.precision.or(config.model.precision);
    let model = ModelDir::open_precision(&super::resolve_model(&model_arg)?, layout.as_ref(), precision)?;
    let test_model = model.is_test_model;
    if test_model {
        eprintln!("\n  *** {}: TEST MODEL with random weights: boxes are not meaningful ***\n", model.dir.display());
    }
    if test_model {
        let defaulted = queries.len() - standing_threshold_count(&args, &config);
        if defaulted > 0 {
            queries = standing(lookout::config::TEST_MODEL_THRESHOLD);
            tracing::warn!(
                "test model: {defaulted} of {} queries have no threshold and use {} (not {}), since its random scores \
                 pass a low threshold almost everywhere; give --threshold to choose",
                queries.len(),
                lookout::config::TEST_MODEL_THRESHOLD,
                lookout::config::DEFAULT_THRESHOLD
            );
        }
    }
    let intra = config.model.intra_threads.unwrap_or(common.intra_threads);
    let session = common.session.options(intra, &config)?;
    let detector = lookout::infer::load(model, &session)?;
    let verify = verifier_dir.map(|model| watch::VerifySettings {
        model,
        session: session.clone(),
        precision: verifier_precision,
        frames: config.verify.frames.unwrap_or(lookout::config::DEFAULT_VERIFY_FRAMES),
        seconds: config.verify.seconds.unwrap_or(lookout::config::DEFAULT_VERIFY_SECONDS),
        queue: config.verify.queue.unwrap_or(lookout::config::DEFAULT_VERIFY_QUEUE),
        keep_rejected: config.output.keep_rejected.unwrap_or(true),
    });
    // Thresholds left unset take the model card's defaults; a text threshold means nothing to OWL.
    let queries: Vec<StandingQuery> = match detector.default_thresholds() {
        // The test model's threshold (above) wins over the card's: its random scores are no trained model's.
        Some(d) => {
            let box_threshold = (!test_model).then_some(d.box_threshold);
            queries.into_iter().map(|q| q.with_model_defaults(box_threshold, d.text_threshold)).collect()
        }
        None => {
            if let Some(q) = queries.iter().find(|q| q.text_threshold.is_some()) {
                return Err(UsageError(format!(
                    "query {:?} sets text_threshold, which only Grounding DINO models have; {} is {}: remove it",
                    q.text,
                    detector.model().name,
                    detector.model().family.name()
                ))
                .into());
            }
            queries
        }
    };

    let mut queries = queries;
    let initial_ids = saved.map(|saved| {
        eprintln!(
            "queries: {} from {} (left there by the HTTP API; it wins over -q and [[query]]: delete it to use those)",
            saved.len(),
            out_dir.join(lookout::http::queries::QUERIES_FILE).display()
        );
        let (ids, saved): (Vec<String>, Vec<StandingQuery>) = saved.into_iter().unzip();
        queries = saved;
        ids
    });
    let control = http.as_ref().map(|h| {
        let defaults = detector.default_thresholds();
        let default_threshold = match (test_model, defaults) {
            (true, _) => lookout::config::TEST_MODEL_THRESHOLD,
            (false, Some(d)) => d.box_threshold,
            (false, None) => lookout::config::DEFAULT_THRESHOLD,
        };
        let device = session.device.to_string();
        lookout::http::Control::new(
            &detector.model().name,
            &device,
            &out_dir,
            h.read_only,
            lookout::http::QuerySettings {
                default_threshold,
                default_text_threshold: defaults.and_then(|d| d.text_threshold),
                has_text_threshold: defaults.is_some_and(|d| d.text_threshold.is_some()),
                has_verifier: verify.is_some(),
                initial_ids,
                encoder: std::sync::Mutex::new(Some(detector.text_encoder())),
            },
        )
    });

    let r = &config.reconnect;
    let defaults = ReconnectSettings::default();
    let reconnect = ReconnectSettings {
        initial_ms: r.initial_ms.unwrap_or(defaults.initial_ms),
        max_ms: r.max_ms.unwrap_or(defaults.max_ms),
        multiplier: r.multiplier.unwrap_or(defaults.multiplier),
        max_attempts: r.max_attempts.or(defaults.max_attempts),
        stall_timeout_ms: r.stall_timeout_ms.unwrap_or(defaults.stall_timeout_ms),
    };
    let recording = recording_settings(&config.recording)?;
    let settings = WatchSettings {
        out_dir: out_dir.clone(),
        annotate: args.annotate || config.output.annotate.unwrap_or(false),
        every: args.every.or(config.inference.every).unwrap_or(1).max(1),
        fps: args.fps.or(config.inference.fps),
        max_duration: args.max_seconds.map(Duration::from_secs_f64),
        wall_time: !args.no_wall_time,
        test_model,
        reconnect,
        pipeline: PipelineChoice::from_arg(args.pipeline.as_deref()),
        progress: true,
        source_names: names,
        motion,
        decode_only: args.decode_only,
        clips: (!args.no_clips && config.output.clips.unwrap_or(true)).then(|| {
            let d = lookout::sink::clips::ClipSettings::default();
            lookout::sink::clips::ClipSettings {
                workers: config.output.max_open_clips.unwrap_or(d.workers).max(1),
                make_evidence: config.output.evidence.unwrap_or(true),
                recording: recording.clone(),
                ..d
            }
        }),
        alerts,
        retention,
        serve_rtsp: match &args.serve_rtsp {
            Some(a) => Some(lookout::sink::rtsp::parse_listen(a).map_err(UsageError)?),
            None => config
                .output
                .serve_rtsp
                .as_deref()
                .map(lookout::sink::rtsp::parse_listen)
                .transpose()
                .map_err(UsageError)?,
        },
        shutdown_timeout: Duration::from_secs_f64(
            config.output.shutdown_timeout_s.unwrap_or(lookout::watch::DEFAULT_SHUTDOWN_TIMEOUT_S),
        ),
        not_started,
        verify,
        control: control.clone(),
        realtime: args.realtime,
        ..WatchSettings::default()
    };

    // Ctrl-C / SIGTERM: the first drains, the second exits at once.
    let shutdown = Shutdown::new();
    {
        let shutdown = shutdown.clone();
        ctrlc::set_handler(move || match shutdown.escalate() {
            Level::Abort => {
                super::interrupt_notice("second interrupt: exiting now");
                // Alerts not yet delivered go to the spool first (a few file writes; never more than 3 s).
                shutdown.run_abort_hooks(Duration::from_secs(3));
                std::process::exit(130);
            }
            _ => super::interrupt_notice(
                "interrupt: finishing queued frames and closing files (interrupt again to exit now)",
            ),
        })
        .context("installing the Ctrl-C handler")?;
    }

    let progress = Arc::new(watch::Progress::default());
    let bar = progress_bar(&specs, progress.clone());
    // systemd (deploy/lookout.service is Type=notify with WatchdogSec): ready once the model is loaded, and a
    // watchdog fed while the inference loop goes round.
    let notifier = lookout::watchdog::Notifier::from_env();
    let dog = match lookout::watchdog::watchdog_timeout() {
        Some(t) if notifier.is_enabled() => {
            let p = progress.clone();
            Some(
                lookout::watchdog::Watchdog::spawn(
                    notifier.clone(),
                    t / 2,
                    lookout::watchdog::advanced(move || p.infer_rounds.load(Ordering::Relaxed)),
                )
                .context("starting the watchdog thread")?,
            )
        }
        _ => None,
    };
    let server = match (http, control) {
        (Some(h), Some(c)) => {
            let server = lookout::http::Server::start(h, c).map_err(|e| UsageError(e.to_string()))?;
            eprintln!("http: serving on http://{}/", server.local_addr());
            Some(server)
        }
        _ => None,
    };
    notifier.ready();
    let result = watch::run(detector, queries, specs, settings, shutdown.token(), progress.clone());
    notifier.stopping();
    if let Some(s) = server {
        s.stop();
    }
    if let Some(d) = dog {
        d.stop();
    }
    if let Some((bar, stop, thread)) = bar {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        super::draw_above(None);
        bar.finish_and_clear();
    }
    let summary = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprint!("{summary}");
        eprintln!("events: {}", out_dir.join("events.jsonl").display());
    }
    let any_error = summary.sources.iter().any(|s| s.error.is_some()) || !bad.is_empty();
    Ok(if any_error { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// A source's motion gate: `--motion on|off` decides whether it runs, else the config's `enabled` (the source's,
/// then `[motion]`'s), else its kind (on for live sources, off for files); the other keys come from the config,
/// else the defaults. `where_` names the config section for errors.
fn motion_settings(
    config: &lookout::config::MotionConfig,
    cli: Option<&str>,
    live: bool,
    where_: &str,
) -> Result<lookout::source::MotionSettings, UsageError> {
    let d = lookout::source::MotionSettings::default_for(live);
    let enabled = match cli {
        Some("on") => true,
        Some("off") => false,
        _ => config.enabled.unwrap_or(d.enabled),
    };
    let max_interval = match &config.max_interval {
        Some(text) => {
            let s = lookout::sink::recording::parse_duration_s(text)
                .map_err(|e| UsageError(format!("{where_} max_interval: {e}")))?;
            Duration::from_secs_f64(s)
        }
        None => d.max_interval,
    };
    let settings = lookout::source::MotionSettings {
        enabled,
        sensitivity: config.sensitivity.unwrap_or(d.sensitivity),
        min_area: config.min_area.unwrap_or(d.min_area),
        max_interval,
        ..d
    };
    settings.validate().map_err(|e| UsageError(format!("{where_}: {e}")))?;
    Ok(settings)
}

/// How many of the queries have a threshold of their own: all the -q ones with --threshold, and each [[query]]
/// of the config that sets one.
fn standing_threshold_count(args: &WatchArgs, config: &Config) -> usize {
    let cli = if args.threshold.is_some() { args.query.queries.len() } else { 0 };
    cli + config.queries.iter().filter(|q| q.threshold.is_some()).count()
}

/// How errors name the config: its path, or "the command line" without one.
fn config_name(args: &WatchArgs) -> String {
    match &args.config {
        Some(p) => format!("config {}", p.display()),
        None => "the command line".into(),
    }
}

type BarHandle = (indicatif::ProgressBar, Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>);

/// A progress bar over the frames of the file sources (frames, fps, ETA), on stderr when it is a terminal; none
/// for runs with a live source (they have no end) or when stderr is a file or a pipe. When a file does not say
/// how many frames it has, the bar counts frames and fps without an ETA.
fn progress_bar(specs: &[SourceSpec], progress: Arc<watch::Progress>) -> Option<BarHandle> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || specs.iter().any(|s| s.is_live()) {
        return None;
    }
    // None when a file does not say how many frames it has.
    let total: Option<u64> = specs.iter().map(|s| s.path().and_then(probe_media).and_then(|m| m.frame_count)).sum();
    let fps = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.1} fps", state.per_sec());
    };
    let style = |template: &str, fallback: indicatif::ProgressStyle| {
        indicatif::ProgressStyle::with_template(template).map_or(fallback, |s| s.with_key("fps", fps))
    };
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total.max(1)).with_style(style(
            "{bar:30} {pos}/{len} frames  {fps}  ETA {eta}  {msg}",
            indicatif::ProgressStyle::default_bar(),
        )),
        None => indicatif::ProgressBar::new_spinner()
            .with_style(style("{spinner} {pos} frames  {fps}  {msg}", indicatif::ProgressStyle::default_spinner())),
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, s) = (bar.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            while !s.load(Ordering::Relaxed) {
                b.set_position(progress.frames_processed.load(Ordering::Relaxed));
                let events = progress.events.load(Ordering::Relaxed);
                b.set_message(match progress.clips_pending.load(Ordering::Relaxed) {
                    0 => format!("events {events}"),
                    n => format!("events {events}, finishing: {n} clips being written"),
                });
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .ok()?;
    super::draw_above(Some(bar.clone()));
    Some((bar, stop, thread))
}

/// `[recording]` as the recording's settings; a bad value is a usage error that names the key.
fn recording_settings(
    c: &lookout::config::RecordingConfig,
) -> Result<lookout::sink::recording::RecordingSettings, UsageError> {
    let d = lookout::sink::recording::RecordingSettings::default();
    let segment_s = c.segment_s.unwrap_or(d.segment_s);
    if !(0.5..=3600.0).contains(&segment_s) {
        return Err(UsageError(format!(
            "[recording] segment_s = {segment_s} is out of range; give seconds from 0.5 to 3600"
        )));
    }
    let keep_s = match &c.keep {
        Some(k) => Some(
            lookout::sink::recording::parse_duration_s(k).map_err(|e| UsageError(format!("[recording] keep: {e}")))?,
        ),
        None => None,
    };
    let max_bytes = match c.max_gb {
        Some(g) if g.is_finite() && g > 0.0 => Some((g * 1e9) as u64),
        Some(g) => return Err(UsageError(format!("[recording] max_gb = {g} must be a number of GB above 0"))),
        None => None,
    };
    let min_free_bytes = c.min_free_mb.map_or(d.min_free_bytes, |mb| mb << 20);
    Ok(lookout::sink::recording::RecordingSettings { segment_s, keep_s, max_bytes, min_free_bytes, ..d })
}

/// The verifier's model directory, from `--verifier` (a family, or a model directory or name) and `[verify]`
/// (`verifier`, `model`), checked before any model loads: it exists and is of the family asked for. `query` is a
/// query that verifies, for the error when no verifier is configured.
fn verifier_model(cli: Option<&str>, config: &lookout::config::VerifyConfig, query: &str) -> anyhow::Result<PathBuf> {
    use lookout::config::VerifierKind;
    // A family name, unless a directory of that name is there (a directory always wins, as for -m).
    let (cli_kind, cli_model) = match cli {
        Some(v) if !std::path::Path::new(v).is_dir() && VerifierKind::parse(v).is_some() => {
            (VerifierKind::parse(v), None)
        }
        Some(v) => (None, Some(v.to_string())),
        None => (None, None),
    };
    let kind = cli_kind.or(config.verifier);
    let spec = cli_model
        .or_else(|| config.model.as_ref().map(|m| m.display().to_string()))
        .or_else(|| kind.and_then(VerifierKind::default_model).map(str::to_string));
    let Some(spec) = spec else {
        return Err(UsageError(match kind {
            Some(VerifierKind::Xclip) => format!(
                "query {query:?} verifies with X-CLIP, but no X-CLIP model is configured: set [verify] model = DIR \
                 (X-CLIP has no ONNX on the Hub; export one with models/export_verifier.py --xclip --from-pretrained \
                 microsoft/xclip-base-patch32)"
            ),
            _ => format!(
                "query {query:?} has verify, but no verifier model is configured: give --verifier DIR (or \
                 --verifier clip) or set [verify] model in the config"
            ),
        })
        .into());
    };
    let dir = super::resolve_model(&spec)?;
    let config_json = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&config_json) else {
        return Err(UsageError(format!(
            "verifier {}: no config.json there; give a verifier model directory (models/tiny/clip and \
             models/tiny/verifier-brightness are test ones)",
            dir.display()
        ))
        .into());
    };
    if let Some(kind) = kind {
        let model_type = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("model_type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        if model_type != kind.as_str() {
            return Err(UsageError(format!(
                "verifier {}: its model_type is {model_type:?}, but the verifier asked for is \"{}\"; give a {} model \
                 directory or leave out the verifier's family",
                dir.display(),
                kind.as_str(),
                kind.as_str()
            ))
            .into());
        }
    }
    Ok(dir)
}
