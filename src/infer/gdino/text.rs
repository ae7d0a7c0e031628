//! Grounding DINO's text side: BERT WordPiece from `tokenizer.json`, the prompt built from the queries, the
//! phrase masks and position ids, the map from token positions back to queries, and the token limit.
//!
//! The queries are joined as `GroundingDinoProcessor` joins a list of labels (`_merge_candidate_labels_text`):
//! each stripped and lower-cased, then `". ".join(...) + "."`, so `["a cat", "a remote control"]` becomes
//! `"a cat. a remote control."`. BERT's pre-tokenizer splits at every punctuation mark, so the ids are
//! `[CLS]`, the tokens of query 0, `.`, the tokens of query 1, `.`, ..., `[SEP]`.
//!
//! The model reads the ids `101` (`[CLS]`), `102` (`[SEP]`), `1012` (`.`) and `1029` (`?`) as phrase boundaries
//! ([`SPECIAL_TOKENS`], a constant in transformers): each phrase attends only to itself and counts its positions
//! from 0 ([`phrase_masks`]). A query that itself holds a `.` or `?` would become two phrases, so it is refused;
//! a trailing one is dropped (people often write Grounding DINO prompts with one).
//!
//! The text is at most `max_text_len` (256) tokens. A set of queries longer than that is split into several
//! passes ([`TextPass`]), each with as many whole queries as fit; a single query that does not fit alone is an
//! error naming it.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};

use crate::infer::{InferError, Result};

/// Token ids that end a phrase: `[CLS]`, `[SEP]`, `.` and `?` of `bert-base-uncased`
/// (`SPECIAL_TOKENS` in transformers' modeling_grounding_dino.py).
pub const SPECIAL_TOKENS: [i64; 4] = [CLS_ID, SEP_ID, DOT_ID, QUESTION_ID];
/// `[CLS]`.
pub const CLS_ID: i64 = 101;
/// `[SEP]`.
pub const SEP_ID: i64 = 102;
/// `.`: ends each query in the prompt.
pub const DOT_ID: i64 = 1012;
/// `?`.
pub const QUESTION_ID: i64 = 1029;
/// transformers' default `max_text_len`: the logits' last axis.
pub const DEFAULT_MAX_TEXT_LEN: usize = 256;

/// A BERT WordPiece tokenizer read from `tokenizer.json`, checked to keep BERT's ids for the phrase boundaries.
pub struct BertTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer").field("path", &self.path).finish()
    }
}

impl BertTokenizer {
    /// Loads `tokenizer.json`. Anything but a WordPiece model with `[CLS]` = 101, `[SEP]` = 102, `.` = 1012 and
    /// `?` = 1029 is refused: the graph finds phrases by those ids, so another vocabulary would give wrong
    /// masks without any error (a CLIP BPE tokenizer, for instance, has none of them).
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |message: String| InferError::Tokenizer { path: path.to_path_buf(), message };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let kind = match inner.get_model() {
            tokenizers::ModelWrapper::WordPiece(_) => None,
            tokenizers::ModelWrapper::BPE(_) => Some("BPE (a CLIP tokenizer?)"),
            tokenizers::ModelWrapper::WordLevel(_) => Some("WordLevel"),
            tokenizers::ModelWrapper::Unigram(_) => Some("Unigram"),
        };
        if let Some(kind) = kind {
            return Err(err(format!(
                "is a {kind} tokenizer, but Grounding DINO needs BERT WordPiece; use the tokenizer.json that came \
                 with the model"
            )));
        }
        for (token, id) in [("[CLS]", CLS_ID), ("[SEP]", SEP_ID), (".", DOT_ID), ("?", QUESTION_ID)] {
            let found = inner.token_to_id(token);
            if found.map(i64::from) != Some(id) {
                return Err(err(format!(
                    "has {token} as id {}, but Grounding DINO finds phrases by BERT's id {id}; use the \
                     tokenizer.json that came with the model",
                    found.map_or_else(|| "none".to_string(), |f| f.to_string())
                )));
            }
        }
        // Padding and truncation are lookout's business (the token limit splits queries instead of cutting).
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| err(e.to_string()))?;
        Ok(BertTokenizer { inner, path: path.to_path_buf() })
    }

    /// Token ids of `text` with `[CLS]` and `[SEP]`, as `BertTokenizerFast(text)` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| InferError::Tokenizer { path: self.path.clone(), message: format!("text {text:?}: {e}") })?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// The token strings of `ids` (for error messages and tests).
    pub fn tokens(&self, ids: &[i64]) -> Vec<String> {
        ids.iter().map(|&i| self.inner.id_to_token(i as u32).unwrap_or_else(|| format!("<{i}>"))).collect()
    }

    /// transformers' `tokenizer.batch_decode` of one list of ids, special tokens kept (the label text of
    /// `post_process_grounded_object_detection`, e.g. `"a cat [SEP]"`). The WordPiece decoder of
    /// `tokenizer.json` joins `##` pieces and, with `cleanup`, removes the space before punctuation as
    /// `clean_up_tokenization_spaces` does.
    pub fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, false).unwrap_or_default()
    }
}

/// A query as it goes into the prompt: stripped, lower-cased, without a trailing `.` or `?`.
/// An empty query, or one with a `.` or `?` inside, is an error naming it.
pub fn clean_query(text: &str) -> Result<String> {
    let mut q = text.trim().to_lowercase();
    while q.ends_with(['.', '?']) {
        q.pop();
        q.truncate(q.trim_end().len());
    }
    if q.is_empty() {
        return Err(InferError::EmptyQuery);
    }
    if q.contains(['.', '?']) {
        return Err(InferError::Query {
            query: text.to_string(),
            message: "has a '.' or '?' inside, which Grounding DINO reads as the end of a query; remove it or \
                      give two queries"
                .into(),
        });
    }
    Ok(q)
}

/// The text `GroundingDinoProcessor` makes of a list of (clean) queries: `"a cat. a remote control."`.
pub fn join_queries<S: AsRef<str>>(queries: &[S]) -> String {
    let mut out = String::new();
    for (i, q) in queries.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(q.as_ref());
        out.push('.');
    }
    out
}

/// `generate_masks_with_special_tokens_and_transfer_map` for one row of ids: the `[T, T]` phrase attention mask
/// and the `[T]` position ids.
///
/// Walking the special positions in order with `prev` (starting at 0): a special position `i` other than the
/// first and last column closes the block `prev + 1 ..= i`, which attends to itself and is numbered from 0;
/// every other position attends only to itself, with position 0.
pub fn phrase_masks(ids: &[i64]) -> (Array2<bool>, Array1<i64>) {
    let t = ids.len();
    let mut mask = Array2::from_shape_fn((t, t), |(r, c)| r == c);
    let mut position_ids = Array1::zeros(t);
    let mut prev = 0usize;
    for (i, id) in ids.iter().enumerate() {
        if !SPECIAL_TOKENS.contains(id) {
            continue;
        }
        if i != 0 && i != t - 1 {
            for r in prev + 1..=i {
                for c in prev + 1..=i {
                    mask[[r, c]] = true;
                }
                position_ids[r] = (r - prev - 1) as i64;
            }
        }
        prev = i;
    }
    (mask, position_ids)
}

/// The token positions of one query in a pass: `start..end`, its word pieces (not the `.` after them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuerySpan {
    /// Index of the query in the whole query set.
    pub query: usize,
    pub start: usize,
    pub end: usize,
}

/// One run of the text: as many whole queries as fit the token limit, and everything the graphs take for them.
#[derive(Debug, Clone)]
pub struct TextPass {
    /// The prompt, e.g. `"a cat. a remote control."`.
    pub text: String,
    /// `[T]` token ids, `[CLS]` ... `[SEP]`.
    pub input_ids: Array1<i64>,
    /// `[T, T]`.
    pub text_self_attention_masks: Array2<bool>,
    /// `[T]`.
    pub position_ids: Array1<i64>,
    /// Where each query of this pass sits, in query order.
    pub spans: Vec<QuerySpan>,
}

impl TextPass {
    /// `T`.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// `token_type_ids`: all 0 (one segment).
    pub fn token_type_ids(&self) -> Array1<i64> {
        Array1::zeros(self.len())
    }

    /// `attention_mask`: all 1 (no padding within a pass).
    pub fn attention_mask(&self) -> Array1<i64> {
        Array1::ones(self.len())
    }
}

impl BertTokenizer {
    /// Tokenizes the queries into passes of at most `max_len` tokens and at most `max_queries` queries (no limit
    /// when `None`), each with whole queries in order. Fails on no queries, an empty query, a query with a `.` or
    /// `?` inside, and a query too long for a pass of its own.
    pub fn passes(&self, texts: &[String], max_len: usize, max_queries: Option<usize>) -> Result<Vec<TextPass>> {
        if texts.is_empty() {
            return Err(InferError::NoQueries);
        }
        // Each query's word pieces, without [CLS] / [SEP]. BERT's pre-tokenizer splits at whitespace and
        // punctuation, so the prompt's ids are these pieces with a `.` after each (checked below).
        let mut pieces: Vec<Vec<i64>> = Vec::with_capacity(texts.len());
        let mut cleaned = Vec::with_capacity(texts.len());
        for text in texts {
            let q = clean_query(text)?;
            let ids = self.encode(&q)?;
            let inner = ids.get(1..ids.len().saturating_sub(1)).unwrap_or_default().to_vec();
            if inner.is_empty() {
                return Err(InferError::Query {
                    query: text.clone(),
                    message: "gives no tokens; give words that describe what to find".into(),
                });
            }
            if inner.iter().any(|id| SPECIAL_TOKENS.contains(id)) {
                return Err(InferError::Query {
                    query: text.clone(),
                    message: "tokenizes to a phrase boundary ('.', '?', [CLS] or [SEP]); reword it".into(),
                });
            }
            // [CLS] query . [SEP]
            if inner.len() + 3 > max_len {
                return Err(InferError::Query {
                    query: text.clone(),
                    message: format!(
                        "is {} tokens, more than the {} the model reads at once; shorten it",
                        inner.len() + 3,
                        max_len
                    ),
                });
            }
            pieces.push(inner);
            cleaned.push(q);
        }
        // Greedy packing in query order: a pass takes queries while [CLS] + (pieces + '.')* + [SEP] fits.
        let mut passes = Vec::new();
        let mut first = 0;
        while first < texts.len() {
            let mut len = 2;
            let mut last = first;
            while last < texts.len()
                && len + pieces[last].len() < max_len
                && max_queries.is_none_or(|m| last - first < m)
            {
                len += pieces[last].len() + 1;
                last += 1;
            }
            passes.push(self.pass(&cleaned[first..last], &pieces[first..last], first)?);
            first = last;
        }
        if passes.len() > 1 && max_queries.is_none() {
            let total: usize = pieces.iter().map(|p| p.len() + 1).sum::<usize>() + 2;
            tracing::info!(
                queries = texts.len(),
                tokens = total,
                limit = max_len,
                passes = passes.len(),
                "the queries are longer than the model's text limit together: they run in {} passes per image",
                passes.len()
            );
        }
        Ok(passes)
    }

    fn pass(&self, queries: &[String], pieces: &[Vec<i64>], first_query: usize) -> Result<TextPass> {
        let text = join_queries(queries);
        let ids = self.encode(&text)?;
        let mut expected = vec![CLS_ID];
        let mut spans = Vec::with_capacity(queries.len());
        for (k, p) in pieces.iter().enumerate() {
            spans.push(QuerySpan { query: first_query + k, start: expected.len(), end: expected.len() + p.len() });
            expected.extend_from_slice(p);
            expected.push(DOT_ID);
        }
        expected.push(SEP_ID);
        if ids != expected {
            // Only a tokenizer whose pre-tokenizer joins across punctuation could get here.
            return Err(InferError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "tokenizes {text:?} as {:?}, not query by query; is it BERT's tokenizer?",
                    self.tokens(&ids)
                ),
            });
        }
        let (text_self_attention_masks, position_ids) = phrase_masks(&ids);
        Ok(TextPass { text, input_ids: Array1::from(ids), text_self_attention_masks, position_ids, spans })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_joined_as_the_processor_joins_them() {
        let q: Vec<String> = ["  A Cat ", "a remote control."].iter().map(|t| clean_query(t).unwrap()).collect();
        assert_eq!(join_queries(&q), "a cat. a remote control.");
        assert_eq!(clean_query("is anyone there? ").unwrap(), "is anyone there");
        assert!(matches!(clean_query(" . "), Err(InferError::EmptyQuery)));
        let err = clean_query("a cat. a dog").unwrap_err().to_string();
        assert!(err.contains("\"a cat. a dog\"") && err.contains("'.'"), "{err}");
    }

    /// transformers' loop, by hand: `[CLS] a cat . a remote control . [SEP]`.
    #[test]
    fn phrase_masks_follow_transformers() {
        let ids = [101, 1037, 4937, 1012, 1037, 6556, 2491, 1012, 102];
        let (mask, pos) = phrase_masks(&ids);
        assert_eq!(pos.to_vec(), [0, 0, 1, 2, 0, 1, 2, 3, 0]);
        let blocks = [0, 1, 1, 1, 2, 2, 2, 2, 3];
        for r in 0..ids.len() {
            for c in 0..ids.len() {
                assert_eq!(mask[[r, c]], blocks[r] == blocks[c], "({r}, {c})");
            }
        }
        // Padding after [SEP] is not special: identity rows, position 0; the [SEP] not in the last column is a
        // block of its own.
        let (mask, pos) = phrase_masks(&[101, 7, 1012, 102, 0, 0]);
        assert_eq!(pos.to_vec(), [0, 0, 1, 0, 0, 0]);
        assert!(mask[[1, 2]] && mask[[2, 1]] && mask[[3, 3]] && !mask[[3, 2]] && !mask[[4, 5]] && mask[[5, 5]]);
        // A `?` ends a phrase too, and a row without [CLS] at 0 starts its first block at 1.
        let (_, pos) = phrase_masks(&[5, 6, 1029, 7, 102]);
        assert_eq!(pos.to_vec(), [0, 0, 1, 0, 0]);
    }
}
