//! From raw model outputs to boxes in pixels.
//!
//! Two views of the same outputs:
//! - [`transformers_style`] reproduces `post_process_grounded_object_detection` of transformers, box for box
//!   (each patch goes to its best query, no clipping, no NMS). The parity tests compare against it.
//! - [`select`] is what lookout reports: per query, the best box always, plus every other box at or above a
//!   threshold, after per-query non-maximum suppression, clipped to the image, capped at `top_k`.
//!
//! # Which boxes can be reported
//!
//! A box is a match only if it shows something of the picture. OWLv2 pads the picture with grey to a square,
//! and its patches in the padding predict boxes there too: on a 1280x720 photo a box of `[0, 720, 229, 720]`
//! (all of it below the photo) would otherwise be reported, with a crop one pixel high. So a box is reported,
//! by `locate` and `watch` alike, only when both hold:
//! - clipped to the picture it is at least [`MIN_SIDE_PX`] wide and high;
//! - at least [`MIN_INSIDE_FRACTION`] of its area inside the model's input lies on the picture, not in the
//!   padding. A box that is 95% padding is not a match; one cut by the picture's edge (the part beyond the
//!   model's input does not count) still is. OWL-ViT stretches the picture over the whole input, so for it
//!   only the first rule can bite.
//!
//! The best box of a query is the best one that passes; the rules do not apply to [`transformers_style`], which
//! stays box for box what transformers returns.

use crate::geom::{Detection, ModelBox, PixelBox, Transform};

use ndarray::{Array1, Array2};

/// What the model says about one image, before any thresholding.
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// `[P, Q]`: one logit per patch and query.
    pub logits: Array2<f32>,
    /// `[P, 4]`: `(cx, cy, w, h)` relative to the model's square input.
    pub boxes: Array2<f32>,
    /// `[P]`: OWLv2's objectness logits, when the graph gives them.
    pub objectness: Option<Array1<f32>>,
}

impl RawOutput {
    pub fn num_patches(&self) -> usize {
        self.logits.nrows()
    }

    pub fn model_box(&self, patch: usize) -> ModelBox {
        let b = self.boxes.row(patch);
        ModelBox { cx: b[0], cy: b[1], w: b[2], h: b[3] }
    }
}

/// The logistic function, as transformers applies it to logits.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One box of transformers' post-processing: the patch's best query, its score, and the box, not clipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HfBox {
    pub label: usize,
    pub score: f32,
    pub bbox: PixelBox,
}

/// transformers' post-processing: for each patch, the query with the highest logit; kept if its sigmoid is above
/// `threshold`; the box scaled by the transform (OWL-ViT by (W, H), OWLv2 by max(W, H)), not clipped.
pub fn transformers_style(raw: &RawOutput, t: &Transform, threshold: f32) -> Vec<HfBox> {
    let mut out = Vec::new();
    for p in 0..raw.num_patches() {
        let row = raw.logits.row(p);
        let (label, logit) = row
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (q, v)| if v > best.1 { (q, v) } else { best });
        let score = sigmoid(logit);
        if score > threshold {
            out.push(HfBox { label, score, bbox: t.to_pixels_unclipped(&raw.model_box(p)) });
        }
    }
    out
}

/// What [`select`] keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Report every box at or above this score as well as the best one. `None`: the best box only.
    pub threshold: Option<f32>,
    /// Boxes of the same query overlapping a better one by more than this IoU are dropped. Default 0.3.
    pub nms_iou: f32,
    /// At most this many boxes per query. Default: no limit.
    pub top_k: Option<usize>,
    /// Always report the best box of each query, even below the threshold (`locate`), or not (`watch`).
    pub always_best: bool,
}

/// Default for [`Selection::nms_iou`].
pub const DEFAULT_NMS_IOU: f32 = 0.3;

impl Default for Selection {
    fn default() -> Self {
        Selection { threshold: None, nms_iou: DEFAULT_NMS_IOU, top_k: None, always_best: true }
    }
}

/// Least width and height, in pixels of the picture, of a reported box after clipping.
pub const MIN_SIDE_PX: f32 = 1.0;
/// Least share of a reported box's area (within the model's input) that lies on the picture, not in padding.
pub const MIN_INSIDE_FRACTION: f32 = 0.5;

/// The box `m` clipped to the picture, if it can be reported (see the module's rules); `None` otherwise.
pub fn reportable_box(t: &Transform, m: &ModelBox) -> Option<PixelBox> {
    let raw = t.to_pixels_unclipped(m);
    let on_picture = raw.clip(t.orig_width, t.orig_height);
    if !(on_picture.width() >= MIN_SIDE_PX && on_picture.height() >= MIN_SIDE_PX) {
        return None;
    }
    // The model's input covers [0, scale_x] x [0, scale_y] in pixels: the picture and, for OWLv2, its padding.
    let in_input = PixelBox {
        x0: raw.x0.clamp(0.0, t.scale_x),
        y0: raw.y0.clamp(0.0, t.scale_y),
        x1: raw.x1.clamp(0.0, t.scale_x),
        y1: raw.y1.clamp(0.0, t.scale_y),
    };
    (on_picture.area() >= MIN_INSIDE_FRACTION * in_input.area()).then_some(on_picture)
}

/// Per query: candidate boxes by score, NMS, clipped to the image; ordered by query, then by score (best first).
/// Only boxes that pass [`reportable_box`] are candidates, the best box included.
pub fn select(raw: &RawOutput, t: &Transform, sel: &Selection) -> Vec<Detection> {
    // A patch's box is the same for every query: decide once which patches may be reported.
    let boxes: Vec<Option<PixelBox>> = (0..raw.num_patches()).map(|p| reportable_box(t, &raw.model_box(p))).collect();
    select_scored(&boxes, raw.logits.ncols(), |p, q| sigmoid(raw.logits[[p, q]]), |_, _| true, sel)
}

/// The selection of [`select`] over any family's boxes: `boxes[p]` is box `p` clipped to the picture (`None` when
/// it cannot be reported), `score(p, q)` its score for query `q`, and `eligible(p, q)` whether it may be
/// reported for `q` above the threshold (Grounding DINO gives each box to one query). The best box of a query is
/// chosen among all reportable boxes, eligible or not.
pub fn select_scored(
    boxes: &[Option<PixelBox>],
    num_queries: usize,
    score: impl Fn(usize, usize) -> f32,
    eligible: impl Fn(usize, usize) -> bool,
    sel: &Selection,
) -> Vec<Detection> {
    let mut out = Vec::new();
    let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(boxes.len());
    for q in 0..num_queries {
        candidates.clear();
        let mut best = (f32::NEG_INFINITY, 0usize);
        for (p, b) in boxes.iter().enumerate() {
            if b.is_none() {
                continue;
            }
            let score = score(p, q);
            if score > best.0 {
                best = (score, p);
            }
            if sel.threshold.is_some_and(|th| score >= th) && eligible(p, q) {
                candidates.push((score, p));
            }
        }
        if sel.always_best && !candidates.iter().any(|c| c.1 == best.1) && best.0.is_finite() {
            candidates.push(best);
        }
        // Highest score first; ties by patch index so the order is deterministic.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let first = out.len();
        for &(score, p) in &candidates {
            let Some(bbox) = boxes[p] else { continue };
            let suppressed = out[first..].iter().any(|d: &Detection| d.bbox.iou(&bbox) > sel.nms_iou);
            if suppressed {
                continue;
            }
            out.push(Detection { query: q, score, bbox });
            if sel.top_k.is_some_and(|k| out.len() - first >= k) {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, arr2};

    fn raw(logits: Array2<f32>, boxes: Array2<f32>) -> RawOutput {
        RawOutput { logits, boxes, objectness: None }
    }

    #[test]
    fn best_box_is_always_reported_and_nms_drops_overlaps() {
        // Three patches, one query: patches 0 and 1 overlap, 2 is elsewhere.
        let r = raw(
            arr2(&[[2.0], [1.5], [-3.0]]),
            arr2(&[[0.25, 0.25, 0.2, 0.2], [0.26, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]),
        );
        let t = Transform::stretch(100, 100);
        let best = select(&r, &t, &Selection::default());
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].query, 0);
        assert!((best[0].score - sigmoid(2.0)).abs() < 1e-6);

        let all = select(&r, &t, &Selection { threshold: Some(0.01), ..Selection::default() });
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].score > all[1].score);

        let one = select(&r, &t, &Selection { threshold: Some(0.01), top_k: Some(1), ..Selection::default() });
        assert_eq!(one.len(), 1);

        let none = select(&r, &t, &Selection { threshold: Some(0.99), always_best: false, ..Selection::default() });
        assert!(none.is_empty());
    }

    #[test]
    fn boxes_in_the_padding_are_never_reported() {
        // OWLv2 on a 1280x720 picture: the input square is 1280x1280, rows 720.. are grey padding.
        // Patch 0 (the best score) lies wholly in the padding: today's defect reported [0, 720, 229.3, 720].
        // Patch 1 is 80% padding; patch 2 is on the picture, with a low score; patch 3 straddles the right edge
        // of the input (outside the model's input does not count) and is on the picture otherwise.
        let t = Transform::pad_square(1280, 720);
        let side = 1280.0f32;
        let b = |x0: f32, y0: f32, x1: f32, y1: f32| {
            [(x0 + x1) / 2.0 / side, (y0 + y1) / 2.0 / side, (x1 - x0) / side, (y1 - y0) / side]
        };
        let r = raw(
            arr2(&[[5.0], [4.0], [-2.0], [-3.0]]),
            arr2(&[
                b(0.0, 800.0, 229.3, 1000.0),
                b(0.0, 640.0, 200.0, 1040.0),
                b(100.0, 100.0, 300.0, 400.0),
                b(1200.0, 100.0, 1400.0, 300.0),
            ]),
        );
        let best = select(&r, &t, &Selection::default());
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].bbox, PixelBox { x0: 100.0, y0: 100.0, x1: 300.0, y1: 400.0 }, "{best:?}");
        let all = select(&r, &t, &Selection { threshold: Some(0.0), nms_iou: 1.0, ..Selection::default() });
        assert_eq!(all.len(), 2, "{all:?}");
        for d in &all {
            assert!(d.bbox.width() >= MIN_SIDE_PX && d.bbox.height() >= MIN_SIDE_PX, "{d:?}");
            assert!(d.bbox.y1 <= 720.0 && d.bbox.x1 <= 1280.0, "{d:?}");
        }
        assert_eq!(all[1].bbox, PixelBox { x0: 1200.0, y0: 100.0, x1: 1280.0, y1: 300.0 });
    }

    #[test]
    fn degenerate_boxes_are_not_reported_for_owlvit_either() {
        // A box of no height at the bottom edge of a stretched picture: not a match; the next best is.
        let t = Transform::stretch(100, 50);
        let r = raw(arr2(&[[3.0], [1.0]]), arr2(&[[0.5, 1.0, 0.4, 0.0], [0.5, 0.5, 0.2, 0.2]]));
        let best = select(&r, &t, &Selection::default());
        assert_eq!(best.len(), 1);
        assert!((best[0].score - sigmoid(1.0)).abs() < 1e-6 && best[0].bbox.height() > 1.0, "{best:?}");
        assert!(reportable_box(&t, &ModelBox { cx: 0.5, cy: 1.0, w: 0.4, h: 0.0 }).is_none());
    }

    #[test]
    fn transformers_style_takes_best_query_per_patch() {
        let r = raw(arr2(&[[0.0, 1.0], [-5.0, -6.0]]), arr2(&[[0.5, 0.5, 1.2, 0.2], [0.5, 0.5, 0.1, 0.1]]));
        let t = Transform::stretch(10, 20);
        let b = transformers_style(&r, &t, 0.1);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].label, 1);
        // Not clipped: the box is wider than the image.
        assert!(b[0].bbox.x0 < 0.0 && b[0].bbox.x1 > 10.0);
    }
}
