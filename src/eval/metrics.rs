//! The figures of an evaluation, from per-item results.
//!
//! Boxes (`eval refexp`), per model:
//! - **Acc@0.5** (the standard referring-expression metric) and **Acc@0.75**: the share of sentences with a
//!   target whose top-1 box has IoU ≥ 0.5 (≥ 0.75) with the true box. The top-1 box counts whatever its score;
//!   a model that reported no box at all scores IoU 0.
//! - **mean IoU** of the top-1 box over the sentences with a target.
//! - **no-target rate**, when the set has sentences with no target (`box: null`): the share of them for which the
//!   model said "no target", that is, its best score was below the no-target threshold (or it had no box). The
//!   same rule is counted over the sentences with a target too (`false_no_target_rate`: a true box missed).
//! - **accuracy by sentence length**: Acc@0.5 in buckets of words ([`LENGTH_BUCKETS`]).
//! - time per image: the mean wall time of one detection (one image, one sentence), and of encoding a sentence.
//!
//! Intervals (`eval events`): [`temporal_iou`] and [`match_intervals`], a one-to-one matching at a least
//! temporal IoU.

use serde::{Deserialize, Serialize};

use crate::geom::PixelBox;

/// IoU at or above which a top-1 box is a hit for Acc@0.5.
pub const IOU_HIT: f32 = 0.5;
/// IoU at or above which a top-1 box is a hit for Acc@0.75.
pub const IOU_HIT_STRICT: f32 = 0.75;

/// Sentence-length buckets, in words: `(least, most)`, `None` for no upper bound. RefCOCOg's sentences have
/// 8.4 words on average, RefCOCO's 3.6.
pub const LENGTH_BUCKETS: &[(usize, Option<usize>)] = &[(1, Some(4)), (5, Some(8)), (9, Some(12)), (13, None)];

/// What one model gave for one item: one line of the run log ([`super::runlog`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Index of the item in the set.
    pub index: usize,
    /// The image, as the set names it after resolving (for matching on resume, and for the report).
    pub image: String,
    pub sentence: String,
    /// The true box, `None` for a sentence with no target.
    pub truth: Option<PixelBox>,
    /// The model's top-1 box, `None` when it reported none.
    pub pred: Option<PixelBox>,
    /// Its score (0..1).
    pub score: Option<f32>,
    /// Wall time of the detection (preprocess, graphs, selection), in milliseconds.
    pub detect_ms: f64,
    /// Wall time of encoding the sentence, in milliseconds.
    pub encode_ms: f64,
}

impl ItemResult {
    /// IoU of the top-1 box with the true box (0 without a top-1 box); `None` for a sentence with no target.
    pub fn iou(&self) -> Option<f32> {
        let truth = self.truth?;
        Some(self.pred.map_or(0.0, |p| truth.iou(&p)))
    }

    /// Whether the model said "no target": no box, or a best score below `threshold`.
    pub fn said_no_target(&self, threshold: f32) -> bool {
        self.score.is_none_or(|s| s < threshold) || self.pred.is_none()
    }

    /// Words in the sentence.
    pub fn words(&self) -> usize {
        self.sentence.split_whitespace().count()
    }
}

/// The no-target figures of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoTarget {
    /// Below this best score the model is taken to say "no target".
    pub threshold: f32,
    /// Sentences with no target.
    pub sentences: usize,
    /// Of those, the ones the model said "no target" for.
    pub said_no_target: usize,
    /// `said_no_target / sentences`.
    pub rate: f64,
}

/// Acc@0.5 over the sentences of one length bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthBucket {
    /// `"1-4"`, `"13+"`.
    pub words: String,
    /// Sentences with a target in the bucket.
    pub sentences: usize,
    /// `None` for an empty bucket.
    pub acc_50: Option<f64>,
}

/// Every figure of one model over a set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Items evaluated.
    pub items: usize,
    /// Of those, sentences with a target.
    pub with_target: usize,
    /// `None` when no sentence has a target.
    pub acc_50: Option<f64>,
    pub acc_75: Option<f64>,
    pub mean_iou: Option<f64>,
    /// `None` when the set has no sentence without a target.
    pub no_target: Option<NoTarget>,
    /// Share of sentences with a target for which the model said "no target" (same threshold).
    pub false_no_target_rate: Option<f64>,
    /// Mean wall time of one detection (one image, one sentence), in milliseconds.
    pub ms_per_image: f64,
    /// Mean wall time of encoding one sentence, in milliseconds.
    pub encode_ms_per_sentence: f64,
    pub by_length: Vec<LengthBucket>,
}

fn share(hits: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| hits as f64 / of as f64)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The label of a bucket: `"5-8"`, `"13+"`.
pub fn bucket_label(bucket: (usize, Option<usize>)) -> String {
    match bucket.1 {
        Some(most) => format!("{}-{most}", bucket.0),
        None => format!("{}+", bucket.0),
    }
}

/// Every figure over `results`, "no target" meaning a best score below `no_target_threshold`.
pub fn summarize(results: &[ItemResult], no_target_threshold: f32) -> Summary {
    let target: Vec<(&ItemResult, f32)> = results.iter().filter_map(|r| Some((r, r.iou()?))).collect();
    let hits = |t: f32| target.iter().filter(|(_, iou)| *iou >= t).count();
    let empty: Vec<&ItemResult> = results.iter().filter(|r| r.truth.is_none()).collect();
    let no_target = (!empty.is_empty()).then(|| {
        let said = empty.iter().filter(|r| r.said_no_target(no_target_threshold)).count();
        NoTarget {
            threshold: no_target_threshold,
            sentences: empty.len(),
            said_no_target: said,
            rate: said as f64 / empty.len() as f64,
        }
    });
    let missed = target.iter().filter(|(r, _)| r.said_no_target(no_target_threshold)).count();
    let by_length = LENGTH_BUCKETS
        .iter()
        .map(|&(least, most)| {
            let inside: Vec<f32> = target
                .iter()
                .filter(|(r, _)| r.words() >= least && most.is_none_or(|m| r.words() <= m))
                .map(|(_, iou)| *iou)
                .collect();
            let hit = inside.iter().filter(|&&iou| iou >= IOU_HIT).count();
            LengthBucket {
                words: bucket_label((least, most)),
                sentences: inside.len(),
                acc_50: share(hit, inside.len()),
            }
        })
        .collect();
    Summary {
        items: results.len(),
        with_target: target.len(),
        acc_50: share(hits(IOU_HIT), target.len()),
        acc_75: share(hits(IOU_HIT_STRICT), target.len()),
        mean_iou: mean(target.iter().map(|(_, iou)| *iou as f64)),
        no_target,
        false_no_target_rate: share(missed, target.len()),
        ms_per_image: mean(results.iter().map(|r| r.detect_ms)).unwrap_or(0.0),
        encode_ms_per_sentence: mean(results.iter().map(|r| r.encode_ms)).unwrap_or(0.0),
        by_length,
    }
}

/// How wrong an item is, for picking the worst cases: `1 - IoU` for a sentence with a target, and for one
/// without, 1 when the model named a target (its score at or above the threshold), else 0. Ties go to the more
/// confident answer: a confident mistake is worse.
pub fn badness(r: &ItemResult, no_target_threshold: f32) -> (f32, f32) {
    let wrong = match r.iou() {
        Some(iou) => 1.0 - iou,
        None if r.said_no_target(no_target_threshold) => 0.0,
        None => 1.0,
    };
    (wrong, r.score.unwrap_or(0.0))
}

/// The `n` worst items (see [`badness`]), worst first; ties keep the set's order.
pub fn worst(results: &[ItemResult], no_target_threshold: f32, n: usize) -> Vec<&ItemResult> {
    let mut sorted: Vec<&ItemResult> = results.iter().collect();
    sorted.sort_by(|a, b| {
        let (ba, bb) = (badness(a, no_target_threshold), badness(b, no_target_threshold));
        bb.0.total_cmp(&ba.0).then(bb.1.total_cmp(&ba.1)).then(a.index.cmp(&b.index))
    });
    sorted.truncate(n);
    sorted
}

/// Temporal IoU of two intervals `(start, end)` in seconds: overlap over union; 0 when the union is empty.
pub fn temporal_iou(a: (f64, f64), b: (f64, f64)) -> f64 {
    let inter = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    let union = (a.1 - a.0).max(0.0) + (b.1 - b.0).max(0.0) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// One-to-one matching of `predicted` to `truth` intervals with temporal IoU ≥ `min_iou`: greedily, the pair of
/// highest IoU first (ties: the earlier prediction, then the earlier truth), as detection benchmarks match.
/// Returns `(predicted index, truth index, IoU)` for each match, in predicted order.
pub fn match_intervals(predicted: &[(f64, f64)], truth: &[(f64, f64)], min_iou: f64) -> Vec<(usize, usize, f64)> {
    let mut pairs: Vec<(usize, usize, f64)> = Vec::new();
    for (p, a) in predicted.iter().enumerate() {
        for (t, b) in truth.iter().enumerate() {
            let iou = temporal_iou(*a, *b);
            if iou >= min_iou {
                pairs.push((p, t, iou));
            }
        }
    }
    pairs.sort_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(&y.0)).then(x.1.cmp(&y.1)));
    let (mut p_used, mut t_used) = (vec![false; predicted.len()], vec![false; truth.len()]);
    let mut out = Vec::new();
    for (p, t, iou) in pairs {
        if !p_used[p] && !t_used[t] {
            p_used[p] = true;
            t_used[t] = true;
            out.push((p, t, iou));
        }
    }
    out.sort_by_key(|m| m.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: usize, sentence: &str, truth: Option<[f32; 4]>, pred: Option<[f32; 4]>, score: f32) -> ItemResult {
        ItemResult {
            index,
            image: "a.png".into(),
            sentence: sentence.into(),
            truth: truth.map(PixelBox::from),
            pred: pred.map(PixelBox::from),
            score: pred.map(|_| score),
            detect_ms: 10.0 * (index + 1) as f64,
            encode_ms: 1.0,
        }
    }

    #[test]
    fn box_iou_by_hand() {
        // [0,0,10,10] and [5,0,15,10]: overlap 5x10 = 50, union 100 + 100 - 50 = 150.
        let a = PixelBox::from([0.0, 0.0, 10.0, 10.0]);
        let b = PixelBox::from([5.0, 0.0, 15.0, 10.0]);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        // [0,0,10,10] in [0,0,10,20]: 100 / 200.
        assert_eq!(a.iou(&PixelBox::from([0.0, 0.0, 10.0, 20.0])), 0.5);
    }

    #[test]
    fn summary_by_hand() {
        let t = [0.0, 0.0, 10.0, 10.0];
        let results = vec![
            // IoU 1: a hit at 0.5 and at 0.75. 3 words.
            item(0, "the red cup", Some(t), Some(t), 0.9),
            // IoU 0.5 exactly: a hit at 0.5, not at 0.75. 5 words.
            item(1, "the cup on the left", Some(t), Some([0.0, 0.0, 10.0, 20.0]), 0.3),
            // IoU 0 (no box). 2 words.
            item(2, "a dog", Some(t), None, 0.0),
            // No target; best score 0.1 < 0.25: said "no target" (right).
            item(3, "a unicorn", None, Some(t), 0.1),
            // No target; best score 0.6: named a target (wrong).
            item(4, "a flying car", None, Some(t), 0.6),
        ];
        let s = summarize(&results, 0.25);
        assert_eq!((s.items, s.with_target), (5, 3));
        assert_eq!(s.acc_50, Some(2.0 / 3.0));
        assert_eq!(s.acc_75, Some(1.0 / 3.0));
        assert_eq!(s.mean_iou, Some(0.5)); // (1 + 0.5 + 0) / 3
        let nt = s.no_target.unwrap();
        assert_eq!((nt.sentences, nt.said_no_target, nt.rate), (2, 1, 0.5));
        // Of the sentences with a target, "a dog" has no box: said "no target".
        assert_eq!(s.false_no_target_rate, Some(1.0 / 3.0));
        assert_eq!(s.ms_per_image, 30.0); // (10 + 20 + 30 + 40 + 50) / 5
        assert_eq!(s.by_length[0].words, "1-4");
        assert_eq!((s.by_length[0].sentences, s.by_length[0].acc_50), (2, Some(0.5)));
        assert_eq!((s.by_length[1].sentences, s.by_length[1].acc_50), (1, Some(1.0)));
        assert_eq!((s.by_length[3].words.as_str(), s.by_length[3].acc_50), ("13+", None));
        // Worst first: the missed dog (1 - 0), the confident flying car (1), then the half hit.
        let w: Vec<usize> = worst(&results, 0.25, 3).iter().map(|r| r.index).collect();
        assert_eq!(w, vec![4, 2, 1]);
    }

    #[test]
    fn no_no_target_figures_without_such_sentences() {
        let s = summarize(&[item(0, "a cup", Some([0.0, 0.0, 1.0, 1.0]), Some([0.0, 0.0, 1.0, 1.0]), 0.5)], 0.2);
        assert_eq!(s.no_target, None);
        assert_eq!(s.acc_50, Some(1.0));
    }

    #[test]
    fn temporal_iou_by_hand() {
        // [0, 10] and [5, 20]: overlap 5, union 20.
        assert_eq!(temporal_iou((0.0, 10.0), (5.0, 20.0)), 0.25);
        assert_eq!(temporal_iou((0.0, 10.0), (10.0, 20.0)), 0.0);
        assert_eq!(temporal_iou((2.0, 4.0), (0.0, 10.0)), 0.2);
        assert_eq!(temporal_iou((3.0, 3.0), (3.0, 3.0)), 0.0);
    }

    #[test]
    fn matching_is_one_to_one_best_first() {
        let truth = [(0.0, 10.0), (20.0, 30.0)];
        let predicted = [
            (1.0, 9.0),   // IoU 0.8 with truth 0
            (0.0, 12.0),  // IoU 10/12 = 0.833 with truth 0: wins it
            (22.0, 40.0), // IoU 8/20 = 0.4 with truth 1: a match at 0.3
            (50.0, 60.0), // nothing
        ];
        let m = match_intervals(&predicted, &truth, 0.3);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].0, m[0].1), (1, 0));
        assert!((m[0].2 - 10.0 / 12.0).abs() < 1e-12);
        assert_eq!((m[1].0, m[1].1), (2, 1));
        assert!((m[1].2 - 0.4).abs() < 1e-12);
        // At 0.5 the second truth is missed.
        assert_eq!(match_intervals(&predicted, &truth, 0.5).len(), 1);
    }
}
