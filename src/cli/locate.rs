//! `lookout locate`: find each query in still images.
//!
//! Every query runs in one pass through each image, and the text is encoded once for all the images.
//! For each image and query: the best box, its score and a crop (`<out>/<image>-<n>.jpg`), plus an annotated
//! copy of the image (`<out>/<image>-annotated.jpg`). A bad image is reported and skipped; the others still run.
//!
//! With `--rerank clip` the detector's K best boxes of each query are scored again by CLIP, crop against sentence
//! ([`lookout::infer::clip::ClipModel::rerank`]), and reported in the order of the combined score
//! ([`lookout::infer::clip::combine`]), with both scores.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use lookout::draw::{Canvas, LabelPlacer, annotate_detections_with, banner_rect, draw_banner};
use lookout::geom::{Detection, PixelBox};
use lookout::infer::postprocess::{DEFAULT_NMS_IOU, Selection};
use lookout::infer::{Detector, Image, ModelDir, QuerySet};
use lookout::watch::TEST_MODEL_BANNER;

use super::{ModelArgs, QueryArgs, UsageError, values};

#[derive(Debug, Args)]
pub struct LocateArgs {
    /// Images to search (PNG or JPEG).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub query: QueryArgs,
    /// Also report every other box scoring at least T (0 to 1), after non-maximum suppression
    /// [default: none, only the best box of each query; 0.65 with the test model]
    #[arg(long, value_name = "T", help_heading = "Queries", allow_negative_numbers = true,
          value_parser = values::unit_interval)]
    pub threshold: Option<f32>,
    /// Report at most K boxes per query (1 or more) [default: no limit]
    #[arg(long, value_name = "K", help_heading = "Queries", allow_negative_numbers = true,
          value_parser = values::at_least_one_usize)]
    pub top_k: Option<usize>,
    /// Drop boxes of the same query that overlap a better one by more than this IoU (more than 0, at most 1).
    #[arg(long, value_name = "IOU", help_heading = "Queries", default_value_t = DEFAULT_NMS_IOU,
          allow_negative_numbers = true, value_parser = values::iou)]
    pub nms_iou: f32,
    /// Directory for crops and annotated images.
    #[arg(long, value_name = "DIR", help_heading = "Output", default_value = "out")]
    pub out: PathBuf,
    /// Print one JSON object per image on stdout instead of text.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Do not write crops and annotated images.
    #[arg(long, help_heading = "Output")]
    pub no_images: bool,
    /// Score the detector's K best boxes of each query again with CLIP (the crop against the sentence) and report
    /// them best first by the combined score sqrt(detector score x CLIP score), with both scores; see README,
    /// "Re-ranking with CLIP"
    #[arg(long, value_name = "clip", help_heading = "Re-ranking")]
    pub rerank: Option<RerankWith>,
    /// The CLIP model for --rerank: a directory or a name from `lookout models list`
    #[arg(long, value_name = "DIR|NAME", help_heading = "Re-ranking", requires = "rerank",
          default_value = DEFAULT_RERANK_MODEL)]
    pub rerank_model: String,
    /// How many of the detector's boxes per query CLIP scores (1 or more; above --threshold when given)
    #[arg(long, value_name = "K", help_heading = "Re-ranking", requires = "rerank", allow_negative_numbers = true,
          default_value_t = DEFAULT_RERANK_K, value_parser = values::at_least_one_usize)]
    pub rerank_k: usize,
    /// Print a JSON line of per-image timings (preprocess, inference, postprocess, in ms) on stderr at the end.
    /// Used by `make bench-locate`.
    #[arg(long, help_heading = "Output")]
    pub timings: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// What `--rerank` scores the boxes again with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RerankWith {
    // CLIP (`CLIPModel`): image-text similarity of each box's crop and its sentence. (A `//` comment: a
    // documented value would switch `--help` to its long layout.)
    Clip,
}

/// `--rerank-model` when not given: the manifest's CLIP (`lookout models fetch clip-vit-base-patch32`).
pub const DEFAULT_RERANK_MODEL: &str = "clip-vit-base-patch32";
/// `--rerank-k` when not given.
pub const DEFAULT_RERANK_K: usize = 5;

/// Per-image timings for `--timings`.
#[derive(Debug, Default, Serialize)]
struct Timings {
    model_load_ms: f64,
    encode_queries_ms: f64,
    preprocess_ms: Vec<f64>,
    infer_ms: Vec<f64>,
    post_ms: Vec<f64>,
    /// CPU time of the whole process (every thread) over each image's detection, so that the cores used while
    /// inferring can be compared with another runtime's (`make bench-locate`).
    cpu_ms: Vec<f64>,
}

/// CPU time used so far by every thread of this process, in ms.
fn process_cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct it is given and has no other effect.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of `--json` output.
#[derive(Debug, Serialize)]
pub struct ImageReport {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub model: String,
    /// The graphs that ran, as `--layout` names them: `split`, `hf` or `hf:<variant>` (e.g. `hf:quantized`).
    pub layout: String,
    /// The image side's precision: `fp32`, `int8` (`--precision int8`, or an 8-bit hf variant), or the name of
    /// another hf variant (`fp16`).
    pub precision: String,
    pub results: Vec<ResultItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotated: Option<String>,
    /// How the results were re-ranked, with `--rerank`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RerankInfo>,
}

/// The `rerank` object of a report.
#[derive(Debug, Clone, Serialize)]
pub struct RerankInfo {
    /// The CLIP model's name (its directory's).
    pub model: String,
    /// Boxes per query scored.
    pub k: usize,
    /// `score` of each result: sqrt(detector_score x clip_score).
    pub rule: &'static str,
    /// The CLIP model has random weights: its scores mean nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_model: bool,
}

/// [`RerankInfo::rule`].
pub const RERANK_RULE: &str = "score = sqrt(detector_score * clip_score)";

#[derive(Debug, Serialize)]
pub struct ResultItem {
    pub query: String,
    #[serde(rename = "box")]
    pub bbox: PixelBox,
    /// The detector's score; with `--rerank` the combined score ([`RERANK_RULE`]).
    pub score: f32,
    /// With `--rerank`: the detector's own score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_score: Option<f32>,
    /// With `--rerank`: CLIP's probability that this crop is the one the sentence describes, among the query's
    /// candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_score: Option<f32>,
    /// With `--rerank`: the cosine similarity of the crop's and the sentence's CLIP embeddings (-1 to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_similarity: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
}

/// A re-ranked box's detector score, CLIP score and CLIP similarity.
type ClipScores = (f32, f32, f32);

/// CLIP, loaded for `--rerank`, and the queries' normalised text embeddings.
struct Reranker {
    clip: lookout::infer::ClipModel,
    queries: ndarray::Array2<f32>,
    info: RerankInfo,
}

pub fn run(args: LocateArgs) -> anyhow::Result<ExitCode> {
    let common = &args.model;
    let texts = &args.query.queries;
    if texts.is_empty() {
        return Err(UsageError("no queries: give at least one with -q \"a vendor selling vegetables\"".into()).into());
    }
    if !args.no_images {
        super::writable_out_dir(&args.out)?;
    }
    // The re-ranking model first: a wrong --rerank-model is named before the detector loads.
    let rerank_dir = match args.rerank {
        Some(RerankWith::Clip) => Some(super::resolve_model(&args.rerank_model)?),
        None => None,
    };
    let model_dir = super::resolve_model(&common.model)?;
    let model = ModelDir::open_precision(&model_dir, common.layout.as_ref(), common.precision)?;
    let mut threshold = args.threshold;
    if model.is_test_model {
        tracing::warn!("{}: test model with random weights: boxes are not meaningful", model.dir.display());
        if threshold.is_none() {
            threshold = Some(lookout::config::TEST_MODEL_THRESHOLD);
            tracing::warn!(
                "test model: no --threshold given, so other boxes are reported from {} up, since its random scores \
                 pass a low threshold almost everywhere",
                lookout::config::TEST_MODEL_THRESHOLD
            );
        }
    }
    let opts = common.session.options(common.intra_threads, &lookout::config::Config::default())?;
    let mut timings = Timings::default();
    let t0 = Instant::now();
    let mut detector = lookout::infer::load(model, &opts)?;
    timings.model_load_ms = ms(t0.elapsed());
    let t0 = Instant::now();
    let queries = detector.encode(texts)?;
    timings.encode_queries_ms = ms(t0.elapsed());
    let mut selection = Selection { threshold, nms_iou: args.nms_iou, top_k: args.top_k, always_best: true };
    let mut reranker = match rerank_dir {
        Some(dir) => {
            let mut clip = lookout::infer::ClipModel::open(&dir, &opts)?;
            if clip.is_test_model() {
                tracing::warn!("{}: test model with random weights: CLIP scores are not meaningful", dir.display());
            }
            let queries = lookout::infer::clip::normalized(&clip.text_embeds(texts)?);
            // The candidates: the K best boxes of each query after NMS (above --threshold when given, else any
            // score: the test model's default threshold is for reporting, not for choosing candidates).
            selection = Selection {
                threshold: Some(args.threshold.unwrap_or(0.0)),
                nms_iou: args.nms_iou,
                top_k: Some(args.rerank_k),
                always_best: true,
            };
            let info = RerankInfo {
                model: clip.name().to_string(),
                k: args.rerank_k,
                rule: RERANK_RULE,
                test_model: clip.is_test_model(),
            };
            Some(Reranker { clip, queries, info })
        }
        None => None,
    };

    let mut failed = 0usize;
    let stdout = std::io::stdout();
    for image in &args.images {
        match locate_one(detector.as_mut(), reranker.as_mut(), &queries, image, &args, &selection, &mut timings) {
            Ok(report) => {
                let mut out = stdout.lock();
                if args.json {
                    serde_json::to_writer(&mut out, &report)?;
                    writeln!(out)?;
                } else {
                    print_report(&mut out, &report)?;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", super::error_chain(&e));
            }
        }
    }
    if args.timings {
        eprintln!("{}", serde_json::to_string(&timings)?);
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn print_report(out: &mut impl Write, r: &ImageReport) -> std::io::Result<()> {
    match &r.rerank {
        None => {
            writeln!(out, "{} ({}x{}, model {}, {}, {})", r.image, r.width, r.height, r.model, r.layout, r.precision)?
        }
        Some(k) => writeln!(
            out,
            "{} ({}x{}, model {}, {}, {}, re-ranked by {}{}: {})",
            r.image,
            r.width,
            r.height,
            r.model,
            r.layout,
            r.precision,
            k.model,
            if k.test_model { " (test model)" } else { "" },
            k.rule
        )?,
    }
    for item in &r.results {
        let b = item.bbox;
        // Padded to 40 terminal columns, not characters: "咖啡杯" takes 6.
        let pad = 40usize.saturating_sub(unicode_width::UnicodeWidthStr::width(item.query.as_str()));
        write!(
            out,
            "  {}{:pad$} {:.3}  [{:.0}, {:.0}, {:.0}, {:.0}]",
            item.query, "", item.score, b.x0, b.y0, b.x1, b.y1
        )?;
        if let (Some(det), Some(clip)) = (item.detector_score, item.clip_score) {
            write!(out, "  (detector {det:.3}, clip {clip:.3})")?;
        }
        match &item.crop {
            Some(c) => writeln!(out, "  {c}")?,
            None => writeln!(out)?,
        }
    }
    if let Some(a) = &r.annotated {
        writeln!(out, "  annotated: {a}")?;
    }
    Ok(())
}

/// Opens an image as RGB8; the error names the file and says what is wrong with it.
pub fn load_image(path: &Path) -> anyhow::Result<image::RgbImage> {
    // JPEG through libjpeg-turbo as Pillow decodes it, PNG through the `image` crate (lookout::imageio).
    lookout::imageio::load_rgb(path).map_err(|e| UsageError(e.to_string()).into())
}

fn locate_one(
    detector: &mut dyn Detector,
    reranker: Option<&mut Reranker>,
    queries: &QuerySet,
    path: &Path,
    args: &LocateArgs,
    selection: &Selection,
    timings: &mut Timings,
) -> anyhow::Result<ImageReport> {
    let img = load_image(path)?;
    let cpu0 = process_cpu_ms();
    let detections = detector
        .detect(&[Image::Rgb(&img)], queries, selection)
        .and_then(|mut per_image| per_image.remove(0))
        .with_context(|| format!("{}", path.display()))?;
    let t = detector.last_timings();
    timings.preprocess_ms.push(ms(t.preprocess));
    timings.infer_ms.push(ms(t.run));
    timings.post_ms.push(ms(t.select));
    timings.cpu_ms.push(process_cpu_ms() - cpu0);

    // Each result: the box (with the score it is ranked by), and the detector's and CLIP's scores when re-ranked.
    let rerank_info = reranker.as_ref().map(|r| r.info.clone());
    let scored: Vec<(Detection, Option<ClipScores>)> = match reranker {
        None => detections.iter().map(|d| (*d, None)).collect(),
        Some(r) => {
            let reranked =
                r.clip.rerank(&img, &detections, &r.queries).with_context(|| format!("{}", path.display()))?;
            let mut per_query = vec![0usize; queries.len()];
            reranked
                .into_iter()
                .filter(|x| {
                    per_query[x.detection.query] += 1;
                    args.top_k.is_none_or(|k| per_query[x.detection.query] <= k)
                })
                .map(|x| {
                    let d = Detection { score: x.score, ..x.detection };
                    (d, Some((x.detection.score, x.clip_score, x.clip_similarity)))
                })
                .collect()
        }
    };
    let detections: Vec<Detection> = scored.iter().map(|(d, _)| *d).collect();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let mut results = Vec::with_capacity(scored.len());
    for (n, (d, clip)) in scored.iter().enumerate() {
        let crop = if args.no_images { None } else { Some(write_crop(&img, d, &args.out, &stem, n + 1)?) };
        results.push(ResultItem {
            query: queries.texts()[d.query].clone(),
            bbox: d.bbox,
            score: d.score,
            detector_score: clip.map(|c| c.0),
            clip_score: clip.map(|c| c.1),
            clip_similarity: clip.map(|c| c.2),
            crop: crop.map(|p| p.display().to_string()),
        });
    }
    let test_model = detector.model().is_test_model || rerank_info.as_ref().is_some_and(|r| r.test_model);
    let annotated = if args.no_images {
        None
    } else {
        Some(write_annotated(img.clone(), &detections, queries.texts(), &args.out, &stem, test_model)?)
    };
    Ok(ImageReport {
        image: path.display().to_string(),
        width: img.width(),
        height: img.height(),
        model: detector.model().name.clone(),
        layout: detector.model().layout_choice().to_string(),
        precision: detector.model().precision_label(),
        results,
        annotated: annotated.map(|p| p.display().to_string()),
        rerank: rerank_info,
    })
}

/// The crop of `d` from the original image; at least one pixel even for a degenerate box.
fn write_crop(img: &image::RgbImage, d: &Detection, out: &Path, stem: &str, n: usize) -> anyhow::Result<PathBuf> {
    // The same crop --rerank scores.
    let crop = lookout::infer::clip::crop_box(img, &d.bbox);
    let path = out.join(format!("{stem}-{n}.jpg"));
    save_jpeg(&crop, &path)?;
    Ok(path)
}

fn write_annotated(
    mut img: image::RgbImage,
    detections: &[Detection],
    labels: &[String],
    out: &Path,
    stem: &str,
    test_model: bool,
) -> anyhow::Result<PathBuf> {
    {
        let mut canvas = Canvas::from_image(&mut img);
        // Labels keep off the banner, which is drawn last so that no box covers it.
        let mut placer = LabelPlacer::new();
        if test_model {
            placer.reserve(banner_rect(&canvas, TEST_MODEL_BANNER));
        }
        annotate_detections_with(&mut canvas, detections, labels, &mut placer);
        if test_model {
            draw_banner(&mut canvas, TEST_MODEL_BANNER);
        }
    }
    let path = out.join(format!("{stem}-annotated.jpg"));
    save_jpeg(&img, &path)?;
    Ok(path)
}

/// Writes to a temporary name and renames, so a full disk never leaves a half-written JPEG under the final name.
fn save_jpeg(img: &image::RgbImage, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("jpg.tmp");
    let write = || -> anyhow::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 92).encode_image(img)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.context(format!("cannot write {}", path.display()))
    })
}
