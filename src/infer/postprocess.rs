//! From raw model outputs to boxes in pixels.
//!
//! Two views of the same outputs:
//! - [`transformers_style`] reproduces `post_process_grounded_object_detection` of transformers, box for box
//!   (each patch goes to its best query, no clipping, no NMS). The parity tests compare against it.
//! - [`select`] is what lookout reports: per query, the best box always, plus every other box at or above a
//!   threshold, after per-query non-maximum suppression, clipped to the image, capped at `top_k`.

use crate::geom::{Detection, PixelBox, Transform};

use super::detector::RawOutput;

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

/// Per query: candidate boxes by score, NMS, clipped to the image; ordered by query, then by score (best first).
pub fn select(raw: &RawOutput, t: &Transform, sel: &Selection) -> Vec<Detection> {
    let num_queries = raw.logits.ncols();
    let mut out = Vec::new();
    let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(raw.num_patches());
    for q in 0..num_queries {
        candidates.clear();
        let column = raw.logits.column(q);
        let mut best = (f32::NEG_INFINITY, 0usize);
        for (p, &logit) in column.iter().enumerate() {
            let score = sigmoid(logit);
            if score > best.0 {
                best = (score, p);
            }
            if sel.threshold.is_some_and(|th| score >= th) {
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
            let bbox = t.to_pixels(&raw.model_box(p));
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
