//! The report of `eval refexp`: `results.json`, and `index.html` with the tables, a bar chart comparing the
//! models (inline SVG) and the worst cases, each a JPEG beside `index.html` (`worst/<model>-<rank>.jpg`) with the
//! true box in green and the predicted one in red.
//!
//! The page is self-contained: no script, no stylesheet or font from elsewhere, so it opens offline and can be
//! mailed as a folder. A model with random weights (a test model) is marked as such in both files and on each of
//! its pictures ([`crate::draw::TEST_MODEL_BANNER`]).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::dataset::Layout;
use super::metrics::{ItemResult, Summary};
use super::{EvalError, Result};
use crate::draw::{Canvas, LabelPlacer, TEST_MODEL_BANNER, banner_rect, box_thickness, draw_banner};
use crate::geom::PixelBox;

/// Worst cases drawn per model.
pub const WORST_CASES: usize = 20;
/// Longest side, in pixels, of a worst-case picture (they are scaled down to keep the report small).
pub const CASE_MAX_SIDE: u32 = 640;
/// Colour of the true box.
pub const TRUTH_COLOR: [u8; 3] = [0, 200, 0];
/// Colour of the predicted box.
pub const PRED_COLOR: [u8; 3] = [230, 30, 30];

/// What was evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    pub layout: Layout,
    /// The JSONL file or the refs pickle.
    pub annotations: String,
    pub split: Option<String>,
    /// Items in the set.
    pub items_in_set: usize,
    /// Items evaluated (the first `limit`, or all).
    pub items: usize,
    pub limit: Option<usize>,
    /// Of those evaluated, sentences with no target.
    pub no_target: usize,
}

/// One of the worst cases of a model.
#[derive(Debug, Clone, Serialize)]
pub struct WorstCase {
    pub rank: usize,
    pub index: usize,
    /// The entry of the annotation file (`line 3`, `ref_id 12 sent_id 40`).
    pub entry: String,
    pub image: String,
    pub sentence: String,
    pub truth: Option<PixelBox>,
    pub pred: Option<PixelBox>,
    pub score: Option<f32>,
    pub iou: Option<f32>,
    /// The drawn picture, relative to the report directory.
    pub picture: String,
}

/// One model's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Names the model's files in the report (`items/<key>.jsonl`, `worst/<key>-<rank>.jpg`).
    pub key: String,
    pub model: String,
    pub dir: String,
    pub family: String,
    pub layout: String,
    /// Random weights: the figures measure nothing but the code path.
    pub test_model: bool,
    #[serde(flatten)]
    pub summary: Summary,
    pub worst: Vec<WorstCase>,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub dataset: DatasetInfo,
    /// How each model ran: one sentence per pass, top-1 box.
    pub protocol: String,
    pub models: Vec<ModelReport>,
}

/// The protocol, as stated in both files.
pub const PROTOCOL: &str = "one sentence per detection pass (Grounding DINO's queries in one prompt interact, \
    so each sentence runs alone, as RefCOCO evaluations do; OWL runs the same way so that times compare); \
    the top-1 box counts whatever its score; \"no target\" = best score below the model's no-target threshold";

/// Draws one case: `img` scaled to at most [`CASE_MAX_SIDE`], the true box in green and the predicted one in
/// red with their labels, and the test-model banner when `test_model`. Written as JPEG to `out`.
pub fn draw_case(img: &image::RgbImage, r: &ItemResult, test_model: bool, out: &Path) -> Result<()> {
    let (w, h) = img.dimensions();
    let scale = (CASE_MAX_SIDE as f32 / w.max(h) as f32).min(1.0);
    let (sw, sh) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
    let mut small = if scale < 1.0 {
        image::imageops::resize(img, sw, sh, image::imageops::FilterType::Triangle)
    } else {
        img.clone()
    };
    let scaled = |b: PixelBox| PixelBox { x0: b.x0 * scale, y0: b.y0 * scale, x1: b.x1 * scale, y1: b.y1 * scale };
    {
        let mut canvas = Canvas::from_image(&mut small);
        let mut placer = LabelPlacer::new();
        if test_model {
            placer.reserve(banner_rect(&canvas, TEST_MODEL_BANNER));
        }
        let thickness = box_thickness(sw, sh);
        if let Some(t) = r.truth {
            canvas.draw_box(&scaled(t), TRUTH_COLOR, thickness);
            canvas.draw_label_avoiding(&scaled(t), "truth", TRUTH_COLOR, &mut placer);
        }
        if let Some(p) = r.pred {
            canvas.draw_box(&scaled(p), PRED_COLOR, thickness);
            let label = match r.iou() {
                Some(iou) => format!("predicted {:.2} (IoU {iou:.2})", r.score.unwrap_or(0.0)),
                None => format!("predicted {:.2}", r.score.unwrap_or(0.0)),
            };
            canvas.draw_label_avoiding(&scaled(p), &label, PRED_COLOR, &mut placer);
        }
        if test_model {
            draw_banner(&mut canvas, TEST_MODEL_BANNER);
        }
    }
    let write = || -> std::io::Result<()> {
        let tmp = out.with_extension("jpg.tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 85)
            .encode_image(&small)
            .map_err(std::io::Error::other)?;
        w.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|err| EvalError::Write { path: out.into(), err })
}

/// Writes `results.json` (to a temporary name, then renamed).
pub fn write_json(results: &Results, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(results).expect("results serialise") + "\n";
    write_atomic(path, text.as_bytes())
}

/// Writes `index.html` (to a temporary name, then renamed).
pub fn write_html(results: &Results, path: &Path) -> Result<()> {
    write_atomic(path, html(results).as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|err| EvalError::Write { path: path.into(), err })
}

/// Text made safe for HTML, in elements and in attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

/// Bar colours, one per model (the annotation palette's first ones, readable on white).
const BAR_COLORS: &[&str] = &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// One figure of a model's summary, for the chart.
type Figure = fn(&Summary) -> Option<f64>;

/// The bar chart: one group per figure (all from 0 to 1), one bar per model.
fn chart(models: &[ModelReport]) -> String {
    let mut figures: Vec<(&str, Figure)> =
        vec![("Acc@0.5", |s| s.acc_50), ("Acc@0.75", |s| s.acc_75), ("mean IoU", |s| s.mean_iou)];
    if models.iter().any(|m| m.summary.no_target.is_some()) {
        figures.push(("no-target rate", |s| s.no_target.as_ref().map(|n| n.rate)));
    }
    let (bar_w, gap, plot_h, left, top) = (28.0, 30.0, 200.0, 40.0, 10.0);
    let group_w = bar_w * models.len() as f64 + gap;
    let width = left + group_w * figures.len() as f64 + 10.0;
    let height = top + plot_h + 60.0 + 18.0 * models.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" \
         aria-label=\"models compared\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    for tick in 0..=4 {
        let v = tick as f64 / 4.0;
        let y = top + plot_h * (1.0 - v);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
            width - 10.0,
            left - 4.0,
            y + 4.0
        );
    }
    for (g, (name, get)) in figures.iter().enumerate() {
        let gx = left + gap / 2.0 + g as f64 * group_w;
        for (m, model) in models.iter().enumerate() {
            let v = get(&model.summary).unwrap_or(0.0).clamp(0.0, 1.0);
            let h = plot_h * v;
            let x = gx + m as f64 * bar_w;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{}: {name} {v:.3}</title></rect>",
                top + plot_h - h,
                bar_w - 2.0,
                BAR_COLORS[m % BAR_COLORS.len()],
                escape(&model.model)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            gx + bar_w * models.len() as f64 / 2.0,
            top + plot_h + 16.0
        );
    }
    for (m, model) in models.iter().enumerate() {
        let y = top + plot_h + 36.0 + 18.0 * m as f64;
        let test = if model.test_model { " (test model: random weights)" } else { "" };
        let _ = write!(
            s,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}{test}</text>",
            y - 10.0,
            BAR_COLORS[m % BAR_COLORS.len()],
            left + 18.0,
            y,
            escape(&model.model)
        );
    }
    s.push_str("</svg>");
    s
}

/// The whole page.
pub fn html(r: &Results) -> String {
    let mut s = String::new();
    s.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lookout eval</title>\n<style>\
         body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\
         .test{background:#c80000;color:#fff;padding:6px 10px;font-weight:bold}\
         figure{display:inline-block;margin:8px;max-width:320px;vertical-align:top}figure img{max-width:320px}\
         figcaption{font-size:13px}</style></head><body>\n<h1>lookout eval refexp</h1>\n",
    );
    let d = &r.dataset;
    let _ = writeln!(
        s,
        "<p>Set: {} ({}{}), {} items evaluated{} of {} in the set, {} with no target.</p>\n<p>Protocol: {}.</p>",
        escape(&d.annotations),
        match d.layout {
            Layout::Refcoco => "RefCOCO layout",
            Layout::Jsonl => "JSONL",
        },
        d.split.as_deref().map(|sp| format!(", split {}", escape(sp))).unwrap_or_default(),
        d.items,
        d.limit.map(|l| format!(" (--limit {l})")).unwrap_or_default(),
        d.items_in_set,
        d.no_target,
        escape(PROTOCOL)
    );
    let tests: Vec<&str> = r.models.iter().filter(|m| m.test_model).map(|m| m.model.as_str()).collect();
    if !tests.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"test\">Test model with random weights: {}. Their figures measure nothing but the code path.</p>",
            escape(&tests.join(", "))
        );
    }
    s.push_str(
        "<h2>Results</h2>\n<table><tr><th>model</th><th>family</th><th>layout</th><th>items</th><th>Acc@0.5</th>\
         <th>Acc@0.75</th><th>mean IoU</th><th>no-target rate</th><th>no-target threshold</th><th>ms per image</th>\
         <th>ms to encode a sentence</th></tr>\n",
    );
    for m in &r.models {
        let sm = &m.summary;
        let _ = writeln!(
            s,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.1}</td><td>{:.1}</td></tr>",
            escape(&m.model),
            if m.test_model { " <b>(test model)</b>" } else { "" },
            escape(&m.family),
            escape(&m.layout),
            sm.items,
            pct(sm.acc_50),
            pct(sm.acc_75),
            num(sm.mean_iou),
            sm.no_target.as_ref().map_or("–".into(), |n| format!(
                "{} ({} of {})",
                pct(Some(n.rate)),
                n.said_no_target,
                n.sentences
            )),
            sm.no_target.as_ref().map_or("–".into(), |n| format!("{:.2}", n.threshold)),
            sm.ms_per_image,
            sm.encode_ms_per_sentence
        );
    }
    s.push_str("</table>\n<h2>Compared</h2>\n");
    s.push_str(&chart(&r.models));
    s.push_str("\n<h2>Acc@0.5 by sentence length (words)</h2>\n<table><tr><th>words</th>");
    for m in &r.models {
        let _ = write!(s, "<th>{}</th>", escape(&m.model));
    }
    s.push_str("</tr>\n");
    if let Some(first) = r.models.first() {
        for (b, bucket) in first.summary.by_length.iter().enumerate() {
            let _ = write!(s, "<tr><td>{}</td>", escape(&bucket.words));
            for m in &r.models {
                let mb = &m.summary.by_length[b];
                let _ = write!(s, "<td>{} ({} sentences)</td>", pct(mb.acc_50), mb.sentences);
            }
            s.push_str("</tr>\n");
        }
    }
    s.push_str("</table>\n");
    for m in &r.models {
        let _ = writeln!(
            s,
            "<h2>The {} worst cases of {}{}</h2>\n<p>True box in green, predicted box in red.</p>",
            m.worst.len(),
            escape(&m.model),
            if m.test_model { " (test model: random weights)" } else { "" }
        );
        for c in &m.worst {
            let _ = writeln!(
                s,
                "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}. \"{}\" — {}; score {}, IoU {}<br><small>{} ({})</small>\
                 </figcaption></figure>",
                escape(&c.picture),
                escape(&c.sentence),
                c.rank,
                escape(&c.sentence),
                if c.truth.is_some() { "has a target" } else { "no target" },
                c.score.map_or("–".into(), |v| format!("{v:.3}")),
                c.iou.map_or("–".into(), |v| format!("{v:.3}")),
                escape(&c.image),
                escape(&c.entry)
            );
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a <b> & \"c\" 'd'"), "a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;");
    }
}
