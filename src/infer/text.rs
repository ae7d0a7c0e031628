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
        let (ids, truncated) = self.ids(text, CONTEXT_LEN)?;
        let mut out = EncodedQuery { ids: [PAD_ID; CONTEXT_LEN], mask: [0; CONTEXT_LEN], truncated };
        for (i, id) in ids.iter().enumerate() {
            out.ids[i] = *id;
            out.mask[i] = 1;
        }
        Ok(out)
    }

    /// BOS, the text's tokens and EOS, cut to `context` tokens (EOS kept last), and whether it was cut.
    fn ids(&self, text: &str, context: usize) -> Result<(Vec<i64>, bool)> {
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
        let truncated = ids.len() > context;
        if truncated {
            tracing::warn!(
                query = text,
                tokens = ids.len(),
                "query is longer than {context} tokens; only its first {} tokens are used. Shorten it",
                context - 2
            );
            ids.truncate(context - 1);
            ids.push(self.eos as i64);
        }
        Ok((ids, truncated))
    }

    /// The id of `token`, when the vocabulary has it (e.g. the padding token a `tokenizer_config.json` names).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokenizes a set of texts into `[N, context]` ids and mask, padded with `pad`: for a text model whose
    /// context is not OWL's [`CONTEXT_LEN`] (X-CLIP's is 77, padded with end-of-text). `context` is at least 2.
    pub fn encode_all_to(&self, texts: &[String], context: usize, pad: i64) -> Result<(Array2<i64>, Array2<i64>)> {
        if texts.is_empty() {
            return Err(InferError::NoQueries);
        }
        let context = context.max(2);
        let mut ids = Array2::from_elem((texts.len(), context), pad);
        let mut mask = Array2::zeros((texts.len(), context));
        for (q, text) in texts.iter().enumerate() {
            let (row, _) = self.ids(text, context)?;
            for (i, id) in row.into_iter().enumerate() {
                ids[[q, i]] = id;
                mask[[q, i]] = 1;
            }
        }
        Ok((ids, mask))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> QueryTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/owlvit/tokenizer.json");
        QueryTokenizer::from_file(&dir).unwrap()
    }

    /// Another context and padding id (X-CLIP's 77, padded with end-of-text) give the same tokens as OWL's 16
    /// (which the parity tests check against transformers), then padding, and cut long texts with EOS last.
    #[test]
    fn a_longer_context_pads_with_the_given_id() {
        let t = tiny();
        let texts = vec!["a person riding a bicycle".to_string(), "a car".to_string()];
        let (ids16, mask16) = t.encode_all(&texts).unwrap();
        assert_eq!(t.encode_all_to(&texts, CONTEXT_LEN, PAD_ID).unwrap(), (ids16.clone(), mask16.clone()));
        let eos = i64::from(t.eos);
        let (ids, mask) = t.encode_all_to(&texts, 77, eos).unwrap();
        assert_eq!(ids.dim(), (2, 77));
        for q in 0..2 {
            let n = mask16.row(q).sum() as usize;
            assert_eq!(ids.row(q).slice(ndarray::s![..n]), ids16.row(q).slice(ndarray::s![..n]));
            assert!(ids.row(q).iter().skip(n).all(|&i| i == eos) && mask.row(q).sum() as usize == n);
        }
        let (ids, mask) = t.encode_all_to(&texts[..1], 4, eos).unwrap();
        assert_eq!((ids[[0, 0]], ids[[0, 3]], mask.row(0).sum()), (i64::from(t.bos), eos, 4));
        assert_eq!(t.token_id("!"), Some(0));
    }
}
