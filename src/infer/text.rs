//! Tokenizing queries the way the OWL-ViT and OWLv2 processors do.
//!
//! CLIP BPE with a context of [`CONTEXT_LEN`] tokens: `<|startoftext|>` (BOS), the text, `<|endoftext|>` (EOS),
//! then padding with id [`PAD_ID`] up to the context, with attention mask 1 over BOS..EOS.
//! The text model pools the hidden state at the *argmax* of the ids, which is the EOS only if EOS is the largest id
//! in the vocabulary; [`QueryTokenizer::from_file`] checks that, because a tokenizer that breaks it silently
//! gives wrong embeddings.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::{InferError, Result};

/// Tokens per query, including BOS and EOS; OWL-ViT's text model has 16 position embeddings.
pub const CONTEXT_LEN: usize = 16;
/// Padding id of the OWL-ViT processors (the token "!").
pub const PAD_ID: i64 = 0;
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// One tokenized query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedQuery {
    pub ids: [i64; CONTEXT_LEN],
    pub mask: [i64; CONTEXT_LEN],
    /// True when the query was longer than the context and was cut (keeping EOS last).
    pub truncated: bool,
}

/// A CLIP tokenizer loaded from `tokenizer.json`.
pub struct QueryTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pub bos: u32,
    pub eos: u32,
}

impl std::fmt::Debug for QueryTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryTokenizer")
            .field("path", &self.path)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl QueryTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |message: String| InferError::Tokenizer { path: path.to_path_buf(), message };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        // Padding and truncation are done here, the same way for every tokenizer.json, whatever it says.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| err(e.to_string()))?;
        let bos =
            inner.token_to_id(BOS).ok_or_else(|| err(format!("has no {BOS} token; it is not a CLIP tokenizer")))?;
        let eos =
            inner.token_to_id(EOS).ok_or_else(|| err(format!("has no {EOS} token; it is not a CLIP tokenizer")))?;
        let vocab = inner.get_vocab_size(true) as u32;
        if eos + 1 != vocab {
            return Err(err(format!(
                "EOS id {eos} is not the largest id (vocabulary has {vocab}); the OWL text model pools at the \
                 largest id, so this tokenizer would give wrong query embeddings"
            )));
        }
        Ok(QueryTokenizer { inner, path: path.to_path_buf(), bos, eos })
    }

    /// Tokenizes one query. An empty query is an error; an overlong one is cut with a warning.
    pub fn encode(&self, text: &str) -> Result<EncodedQuery> {
        if text.trim().is_empty() {
            return Err(InferError::EmptyQuery);
        }
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| InferError::Tokenizer { path: self.path.clone(), message: format!("query {text:?}: {e}") })?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        // tokenizer.json normally adds BOS/EOS itself; make sure of both.
        if ids.first() != Some(&(self.bos as i64)) {
            ids.insert(0, self.bos as i64);
        }
        if ids.last() != Some(&(self.eos as i64)) {
            ids.push(self.eos as i64);
        }
        let truncated = ids.len() > CONTEXT_LEN;
        if truncated {
            tracing::warn!(
                query = text,
                tokens = ids.len(),
                "query is longer than {CONTEXT_LEN} tokens; only its first {} tokens are used. Shorten it",
                CONTEXT_LEN - 2
            );
            ids.truncate(CONTEXT_LEN - 1);
            ids.push(self.eos as i64);
        }
        let mut out = EncodedQuery { ids: [PAD_ID; CONTEXT_LEN], mask: [0; CONTEXT_LEN], truncated };
        for (i, id) in ids.iter().enumerate() {
            out.ids[i] = *id;
            out.mask[i] = 1;
        }
        Ok(out)
    }

    /// Tokenizes a set of queries into `[Q, CONTEXT_LEN]` ids and mask.
    pub fn encode_all(&self, texts: &[String]) -> Result<(Array2<i64>, Array2<i64>)> {
        if texts.is_empty() {
            return Err(InferError::NoQueries);
        }
        let mut ids = Array2::zeros((texts.len(), CONTEXT_LEN));
        let mut mask = Array2::zeros((texts.len(), CONTEXT_LEN));
        for (q, text) in texts.iter().enumerate() {
            let e = self.encode(text)?;
            for i in 0..CONTEXT_LEN {
                ids[[q, i]] = e.ids[i];
                mask[[q, i]] = e.mask[i];
            }
        }
        Ok((ids, mask))
    }
}
