//! The OWL class head, done in Rust for the split layout.
//!
//! transformers' `OwlViTClassPredictionHead` computes, for patch p and query q:
//! ```text
//! logits[p, q] = (class_embeds[p] · q̂ + logit_shift[p]) * logit_scale[p],   q̂ = q / (‖q‖ + 1e-6)
//! ```
//! The image embedder graph already normalises `class_embeds` and applies `elu(x) + 1` to `logit_scale`,
//! so only the query normalisation and one matrix product are left: cheap enough that 20 queries cost
//! about what one costs.

use ndarray::{Array2, ArrayView1, ArrayView2};

/// Normalises each query embedding as the head does: `q / (‖q‖ + 1e-6)`.
pub fn normalize_queries(embeds: ArrayView2<f32>) -> Array2<f32> {
    let mut out = embeds.to_owned();
    for mut row in out.rows_mut() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.mapv_inplace(|v| v / (norm + 1e-6));
    }
    out
}

/// Logits `[P, Q]` from class embeddings `[P, D]`, normalised queries `[Q, D]`, shift `[P]` and scale `[P]`.
pub fn class_logits(
    class_embeds: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    shift: ArrayView1<f32>,
    scale: ArrayView1<f32>,
) -> Array2<f32> {
    let mut logits = class_embeds.dot(&queries.t());
    for (p, mut row) in logits.rows_mut().into_iter().enumerate() {
        let (s, k) = (shift[p], scale[p]);
        row.mapv_inplace(|v| (v + s) * k);
    }
    logits
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    #[test]
    fn matches_the_formula() {
        let q = normalize_queries(arr2(&[[3.0f32, 4.0]]).view());
        assert!((q[[0, 0]] - 0.6).abs() < 1e-6 && (q[[0, 1]] - 0.8).abs() < 1e-6);
        let e = arr2(&[[1.0f32, 0.0], [0.0, 1.0]]);
        let l = class_logits(e.view(), q.view(), arr1(&[0.5, -1.0]).view(), arr1(&[2.0, 3.0]).view());
        assert!((l[[0, 0]] - (0.6 + 0.5) * 2.0).abs() < 1e-5);
        assert!((l[[1, 0]] - (0.8 - 1.0) * 3.0).abs() < 1e-5);
    }
}
