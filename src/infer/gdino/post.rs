//! From Grounding DINO's raw outputs to boxes in pixels, two ways:
//!
//! - [`transformers_style`] is `GroundingDinoProcessor.post_process_grounded_object_detection`, box for box: a box
//!   (one of the model's `Q` object queries) is kept when its best token probability over the whole prompt is
//!   above the box threshold, and its label text is the decoded tokens above the text threshold. The parity tests
//!   compare against it.
//! - [`select`] is what lookout reports. A box's score for a query is the best probability over that query's own
//!   tokens ([`query_scores`]); each box is given to the query whose tokens score highest (the first on ties),
//!   as the label transformers prints names that query; then lookout's selection
//!   ([`crate::infer::postprocess::select_scored`]): per query the best box always (for `locate`), every box
//!   given to it at or above the threshold, NMS, `top_k`, clipping and the reportable-box rule.
//!
//! Boxes are `(cx, cy, w, h)` relative to the picture inside the padding (the pixel mask tells the model where
//! it is), so they map back by the picture's own size ([`Transform::stretch`]), as transformers scales them by
//! `target_sizes`.

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::text::{BertTokenizer, QuerySpan};
use crate::geom::{Detection, ModelBox, PixelBox, Transform};
use crate::infer::postprocess::{Selection, reportable_box, select_scored, sigmoid};

/// One box of transformers' post-processing.
#[derive(Debug, Clone, PartialEq)]
pub struct HfBox {
    /// The model's object query (0..Q).
    pub index: usize,
    /// The best token probability over the whole prompt (special tokens included).
    pub score: f32,
    /// The query whose tokens score highest (lookout's label).
    pub label: usize,
    /// The label text transformers gives: the tokens above the text threshold, decoded.
    pub text: String,
    /// Not clipped.
    pub bbox: PixelBox,
}

/// `[Q, num_queries]`: for each box, the best probability over each query's token positions.
pub fn query_scores(logits: ArrayView2<f32>, spans: &[QuerySpan]) -> Array2<f32> {
    Array2::from_shape_fn((logits.nrows(), spans.len()), |(b, k)| {
        let s = spans[k];
        let best = logits.row(b).slice(ndarray::s![s.start..s.end]).iter().copied().fold(f32::NEG_INFINITY, f32::max);
        sigmoid(best)
    })
}

/// The index (into `spans`) of the query whose tokens score highest in `row`, the first on ties.
pub fn best_query(row: ArrayView1<f32>) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (k, &v)| if v > best.1 { (k, v) } else { best }).0
}

/// `post_process_grounded_object_detection(outputs, input_ids, threshold, text_threshold, target_sizes)` for one
/// picture: `logits` `[Q, 256]`, `boxes` `[Q, 4]`, the pass's `input_ids` and spans.
#[allow(clippy::too_many_arguments)]
pub fn transformers_style(
    logits: ArrayView2<f32>,
    boxes: ArrayView2<f32>,
    input_ids: &[i64],
    spans: &[QuerySpan],
    tokenizer: &BertTokenizer,
    t: &Transform,
    box_threshold: f32,
    text_threshold: f32,
) -> Vec<HfBox> {
    let scores = query_scores(logits, spans);
    let width = logits.ncols();
    let mut out = Vec::new();
    for q in 0..logits.nrows() {
        let probs: Vec<f32> = logits.row(q).iter().map(|&l| sigmoid(l)).collect();
        let score = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if score <= box_threshold {
            continue;
        }
        // `get_phrases_from_posmap`: the first and the last position (of the 256) never name a box.
        let ids: Vec<i64> = (1..width.saturating_sub(1))
            .filter(|&i| i < input_ids.len() && probs[i] > text_threshold)
            .map(|i| input_ids[i])
            .collect();
        let b = boxes.row(q);
        let m = ModelBox { cx: b[0], cy: b[1], w: b[2], h: b[3] };
        out.push(HfBox {
            index: q,
            score,
            label: spans[best_query(scores.row(q))].query,
            text: tokenizer.decode(&ids),
            bbox: t.to_pixels_unclipped(&m),
        });
    }
    out
}

/// lookout's selection for one picture and one text pass; `Detection::query` is the index in the whole query set.
pub fn select(
    logits: ArrayView2<f32>,
    boxes: ArrayView2<f32>,
    spans: &[QuerySpan],
    t: &Transform,
    sel: &Selection,
) -> Vec<Detection> {
    let scores = query_scores(logits, spans);
    let labels: Vec<usize> = (0..scores.nrows()).map(|b| best_query(scores.row(b))).collect();
    let reportable: Vec<Option<PixelBox>> = boxes
        .rows()
        .into_iter()
        .map(|b| reportable_box(t, &ModelBox { cx: b[0], cy: b[1], w: b[2], h: b[3] }))
        .collect();
    let mut out = select_scored(&reportable, spans.len(), |b, k| scores[[b, k]], |b, k| labels[b] == k, sel);
    for d in &mut out {
        d.query = spans[d.query].query;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    fn spans() -> Vec<QuerySpan> {
        // [CLS] a cat . a remote control . [SEP]
        vec![QuerySpan { query: 4, start: 1, end: 3 }, QuerySpan { query: 5, start: 4, end: 7 }]
    }

    fn logits(rows: &[[f32; 9]]) -> Array2<f32> {
        let mut l = Array2::from_elem((rows.len(), 12), f32::NEG_INFINITY);
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                l[[r, c]] = *v;
            }
        }
        l
    }

    #[test]
    fn each_box_goes_to_the_query_whose_tokens_score_highest() {
        let l = logits(&[
            // box 0: "cat" strongest (query 4); box 1: "remote" (query 5); box 2: [CLS] strongest, then "control".
            [-5.0, -1.0, 3.0, -2.0, -4.0, 1.0, -1.0, -9.0, -9.0],
            [-5.0, -1.0, 0.0, -2.0, -4.0, 2.0, 1.0, -9.0, -9.0],
            [4.0, -3.0, -3.0, -2.0, -4.0, -1.0, 0.5, -9.0, -9.0],
        ]);
        let boxes = arr2(&[[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]]);
        let t = Transform::stretch(100, 50);
        let scores = query_scores(l.view(), &spans());
        assert!((scores[[0, 0]] - sigmoid(3.0)).abs() < 1e-7 && (scores[[2, 1]] - sigmoid(0.5)).abs() < 1e-7);
        let all = select(
            l.view(),
            boxes.view(),
            &spans(),
            &t,
            &Selection { threshold: Some(0.3), always_best: false, ..Selection::default() },
        );
        let got: Vec<(usize, f32)> = all.iter().map(|d| (d.query, d.score)).collect();
        assert_eq!(got, [(4, sigmoid(3.0)), (5, sigmoid(2.0)), (5, sigmoid(0.5))]);
        let b = all[0].bbox;
        for (got, want) in [(b.x0, 15.0), (b.y0, 7.5), (b.x1, 35.0), (b.y1, 17.5)] {
            assert!((got - want).abs() < 1e-4, "{b:?}");
        }
        // locate: the best box of each query, even the one given to another query.
        let best = select(l.view(), boxes.view(), &spans(), &t, &Selection::default());
        let got: Vec<(usize, f32)> = best.iter().map(|d| (d.query, d.score)).collect();
        assert_eq!(got, [(4, sigmoid(3.0)), (5, sigmoid(2.0))]);
    }
}
