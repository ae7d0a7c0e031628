//! The results of one model over a set, kept as they come: `<report>/items/<model>.jsonl`, one
//! [`ItemResult`] per line, appended with a single write of the whole line.
//!
//! This is what makes a run resumable: a run that is interrupted (Ctrl-C, a crash, a power cut) keeps every line
//! written, and the next run with the same `--out` reads them back and evaluates only the items not there yet.
//! A line cut short by a crash (the file does not end with a newline) is taken off before appending. A line is
//! checked against the set's item of the same index (same image, same sentence): a log of another set, or of the
//! same set in another order, is refused rather than mixed in.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::dataset::Item;
use super::metrics::ItemResult;
use super::{EvalError, Result};

/// An open run log, appending.
pub struct RunLog {
    path: PathBuf,
    file: File,
}

impl RunLog {
    /// Opens the log at `path` (creating it and its directory), and gives back the results already in it, by
    /// item index, each checked against `items`.
    pub fn open(path: &Path, items: &[Item]) -> Result<(RunLog, BTreeMap<usize, ItemResult>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|err| EvalError::Write { path: dir.into(), err })?;
        }
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(EvalError::Read { path: path.into(), err }),
        };
        // Whole lines only: whatever follows the last newline was cut short.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut done = BTreeMap::new();
        for (n, line) in text[..whole].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let bad = |message: String| EvalError::Resume {
                path: path.into(),
                message: format!("line {}: {message}", n + 1),
            };
            let r: ItemResult = serde_json::from_slice(line).map_err(|e| bad(format!("not a result line ({e})")))?;
            let Some(item) = items.get(r.index) else {
                return Err(bad(format!("item {} is not in the set, which has {}", r.index, items.len())));
            };
            if r.image != item.image.display().to_string() || r.sentence != item.sentence {
                return Err(bad(format!(
                    "item {} was \"{}\" in {}, but the set's item {} ({}) is \"{}\" in {}",
                    r.index,
                    r.sentence,
                    r.image,
                    r.index,
                    item.entry,
                    item.sentence,
                    item.image.display()
                )));
            }
            done.entry(r.index).or_insert(r);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| EvalError::Write { path: path.into(), err })?;
        if whole < text.len() {
            file.set_len(whole as u64).map_err(|err| EvalError::Write { path: path.into(), err })?;
        }
        Ok((RunLog { path: path.into(), file }, done))
    }

    /// Appends one result as one whole line.
    pub fn append(&mut self, r: &ItemResult) -> Result<()> {
        let mut line = serde_json::to_vec(r).expect("a result serialises");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|err| EvalError::Write { path: self.path.clone(), err })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geom::PixelBox;

    fn items() -> Vec<Item> {
        (0..3)
            .map(|i| Item {
                image: PathBuf::from(format!("img{i}.png")),
                size: (10, 10),
                sentence: format!("thing {i}"),
                truth: Some(PixelBox::from([0.0, 0.0, 5.0, 5.0])),
                entry: format!("line {}", i + 1),
            })
            .collect()
    }

    fn result(item: &Item, index: usize) -> ItemResult {
        ItemResult {
            index,
            image: item.image.display().to_string(),
            sentence: item.sentence.clone(),
            truth: item.truth,
            pred: None,
            score: None,
            detect_ms: 1.0,
            encode_ms: 1.0,
        }
    }

    #[test]
    fn keeps_whole_lines_and_drops_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items/m.jsonl");
        let items = items();
        {
            let (mut log, done) = RunLog::open(&path, &items).unwrap();
            assert!(done.is_empty());
            log.append(&result(&items[0], 0)).unwrap();
            log.append(&result(&items[1], 1)).unwrap();
        }
        // A crash in the middle of the third line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"index\":2,\"ima").unwrap();
        let (mut log, done) = RunLog::open(&path, &items).unwrap();
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        log.append(&result(&items[2], 2)).unwrap();
        let (_, done) = RunLog::open(&path, &items).unwrap();
        assert_eq!(done.len(), 3);
    }

    #[test]
    fn refuses_a_log_of_another_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let items = items();
        let (mut log, _) = RunLog::open(&path, &items).unwrap();
        log.append(&result(&items[1], 0)).unwrap();
        let err = RunLog::open(&path, &items).err().unwrap().to_string();
        assert!(err.contains("m.jsonl: line 1: item 0 was \"thing 1\""), "{err}");
        assert!(err.contains("delete this file"), "{err}");
    }
}
