//! Referring-expression sets: each item is an image, a sentence and the box it describes (or none).
//!
//! Two layouts are read:
//! - **RefCOCO / RefCOCO+ / RefCOCOg** as the `refer` toolkit ships them: a directory with `instances.json`
//!   (COCO: images with their size, annotations with `bbox` `[x, y, w, h]`) and `refs(umd).p` (a Python pickle
//!   of a list of refs: `ref_id`, `ann_id`, `image_id`, `split`, `sentences: [{sent_id, sent, raw}]`), plus the
//!   COCO image directory and the split. One item per sentence of each ref of the split, with the `sent` text
//!   (the lower-cased, tokenised sentence the toolkit's evaluations use) and the box of the ref's annotation.
//! - **JSONL**: one `{"image": "...", "sentence": "...", "box": [x1, y1, x2, y2]}` per line, the box in pixels
//!   of the image, or `"box": null` for a sentence that describes nothing in the image. An image path that is
//!   not absolute is taken relative to the directory of the JSONL file. Blank lines and lines starting with
//!   `#` are skipped.
//!
//! Every item is checked before any model loads (the image exists and is a PNG or JPEG whose header gives its
//! size; the box has a positive width and height and lies inside the image, with [`EDGE_TOLERANCE_PX`]), so that
//! a mistake in the 4,000th line shows at once, as one line naming the file and the entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EvalError, Result};
use crate::geom::PixelBox;

/// How far, in pixels, a box may reach past the image's edge and still count as inside it (COCO's float boxes
/// sometimes end a fraction of a pixel beyond the last column).
pub const EDGE_TOLERANCE_PX: f32 = 1.0;

/// The refs file read when none is named: the UMD split of RefCOCOg, the one most results are reported on.
pub const DEFAULT_REFS_FILE: &str = "refs(umd).p";

/// One sentence to look for in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The image file.
    pub image: PathBuf,
    /// Width and height of the image, from its header.
    pub size: (u32, u32),
    /// What to look for.
    pub sentence: String,
    /// The box the sentence describes, in pixels; `None` when it describes nothing in the image.
    pub truth: Option<PixelBox>,
    /// Which entry of the annotation file this is (`line 3`, `ref_id 12 sent_id 40`), for messages.
    pub entry: String,
}

/// Which layout a set was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `instances.json` + `refs(...).p`.
    Refcoco,
    /// One JSON object per line.
    Jsonl,
}

/// A set of items, in the order of the annotation file.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub layout: Layout,
    /// The JSONL file, or the refs file.
    pub annotations: PathBuf,
    /// The split (RefCOCO layout only).
    pub split: Option<String>,
    pub items: Vec<Item>,
}

impl Dataset {
    /// Items with no target (`box: null`).
    pub fn no_target_count(&self) -> usize {
        self.items.iter().filter(|i| i.truth.is_none()).count()
    }
}

/// Sizes of images already read, so that an image shared by many sentences is opened once.
#[derive(Default)]
struct Sizes(HashMap<PathBuf, std::result::Result<(u32, u32), String>>);

impl Sizes {
    fn of(&mut self, path: &Path) -> std::result::Result<(u32, u32), String> {
        self.0
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                if !path.is_file() {
                    return Err(format!("image {} does not exist", path.display()));
                }
                image::image_dimensions(path)
                    .map_err(|e| format!("image {} cannot be read as PNG or JPEG ({e})", path.display()))
            })
            .clone()
    }
}

/// Checks that `b` is a proper box inside an image of `size`; the reason otherwise.
pub fn check_box(b: &PixelBox, size: (u32, u32)) -> std::result::Result<(), String> {
    let all = [b.x0, b.y0, b.x1, b.y1];
    if all.iter().any(|v| !v.is_finite()) {
        return Err(format!("box {all:?} has a value that is not a number"));
    }
    if b.x1 <= b.x0 || b.y1 <= b.y0 {
        return Err(format!("box {all:?} is empty: it must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1"));
    }
    let (w, h) = (size.0 as f32, size.1 as f32);
    let t = EDGE_TOLERANCE_PX;
    if b.x0 < -t || b.y0 < -t || b.x1 > w + t || b.y1 > h + t {
        return Err(format!("box {all:?} is outside the image ({}x{})", size.0, size.1));
    }
    Ok(())
}

/// One line of the JSONL layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlLine {
    image: String,
    sentence: String,
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
}

/// Reads a JSONL set (see the module docs), checking every line.
pub fn load_jsonl(path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).map_err(|err| EvalError::Read { path: path.into(), err })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut sizes = Sizes::default();
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = format!("line {}", n + 1);
        let bad = |message: String| EvalError::Annotation { file: path.into(), entry: entry.clone(), message };
        let parsed: JsonlLine = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "not an object {{\"image\": \"...\", \"sentence\": \"...\", \"box\": [x1, y1, x2, y2] or null}} ({e})"
            ))
        })?;
        if parsed.sentence.trim().is_empty() {
            return Err(bad("the sentence is empty".into()));
        }
        let image = base.join(&parsed.image);
        let size = sizes.of(&image).map_err(bad)?;
        let truth = parsed.bbox.map(PixelBox::from);
        if let Some(b) = &truth {
            check_box(b, size).map_err(bad)?;
        }
        items.push(Item { image, size, sentence: parsed.sentence, truth, entry });
    }
    if items.is_empty() {
        return Err(EvalError::BadFile { path: path.into(), message: "no items: the file has no JSON lines".into() });
    }
    Ok(Dataset { layout: Layout::Jsonl, annotations: path.into(), split: None, items })
}

/// A ref of the `refer` toolkit's pickle: the fields lookout reads (the others are ignored).
#[derive(Debug, Deserialize)]
struct Ref {
    ref_id: i64,
    ann_id: i64,
    image_id: i64,
    split: String,
    sentences: Vec<RefSentence>,
}

#[derive(Debug, Deserialize)]
struct RefSentence {
    sent_id: i64,
    sent: String,
}

#[derive(Debug, Deserialize)]
struct Instances {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Debug, Deserialize)]
struct CocoImage {
    id: i64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Debug, Deserialize)]
struct CocoAnnotation {
    id: i64,
    image_id: i64,
    /// `[x, y, width, height]` in pixels.
    bbox: [f32; 4],
}

/// Reads the refs pickle (Python 2 `str` and Python 3 `str` alike: byte strings are decoded as UTF-8).
fn read_refs(path: &Path) -> Result<Vec<Ref>> {
    let file = std::fs::File::open(path).map_err(|err| EvalError::Read { path: path.into(), err })?;
    let options = serde_pickle::DeOptions::new().decode_strings();
    serde_pickle::from_reader(std::io::BufReader::new(file), options).map_err(|e| EvalError::BadFile {
        path: path.into(),
        message: format!("not a pickled list of refs as the refer toolkit writes them ({e})"),
    })
}

/// Reads the RefCOCO layout: `dir/instances.json` and `dir/<refs_file>`, keeping the refs of `split`, with
/// images in `images`. Every item is checked (see the module docs).
pub fn load_refcoco(dir: &Path, refs_file: &str, images: &Path, split: &str) -> Result<Dataset> {
    let refs_path = dir.join(refs_file);
    let inst_path = dir.join("instances.json");
    let refs = read_refs(&refs_path)?;
    let inst_file = std::fs::File::open(&inst_path).map_err(|err| EvalError::Read { path: inst_path.clone(), err })?;
    let instances: Instances = serde_json::from_reader(std::io::BufReader::new(inst_file)).map_err(|e| {
        EvalError::BadFile { path: inst_path.clone(), message: format!("not COCO instances JSON ({e})") }
    })?;
    let images_by_id: HashMap<i64, &CocoImage> = instances.images.iter().map(|i| (i.id, i)).collect();
    let anns_by_id: HashMap<i64, &CocoAnnotation> = instances.annotations.iter().map(|a| (a.id, a)).collect();
    let splits: std::collections::BTreeSet<&str> = refs.iter().map(|r| r.split.as_str()).collect();
    let mut sizes = Sizes::default();
    let mut items = Vec::new();
    for r in refs.iter().filter(|r| r.split == split) {
        let entry = format!("ref_id {}", r.ref_id);
        let bad = |message: String| EvalError::Annotation { file: refs_path.clone(), entry: entry.clone(), message };
        let ann = anns_by_id
            .get(&r.ann_id)
            .ok_or_else(|| bad(format!("ann_id {} is not in {}", r.ann_id, inst_path.display())))?;
        if ann.image_id != r.image_id {
            return Err(bad(format!("ann_id {} is of image {}, not {}", r.ann_id, ann.image_id, r.image_id)));
        }
        let img = images_by_id
            .get(&r.image_id)
            .ok_or_else(|| bad(format!("image_id {} is not in {}", r.image_id, inst_path.display())))?;
        let path = images.join(&img.file_name);
        let size = sizes.of(&path).map_err(|m| bad(format!("{m}; is --images the COCO train2014 directory?")))?;
        if size != (img.width, img.height) {
            return Err(bad(format!(
                "image {} is {}x{}, but instances.json says {}x{}",
                path.display(),
                size.0,
                size.1,
                img.width,
                img.height
            )));
        }
        let [x, y, w, h] = ann.bbox;
        let truth = PixelBox { x0: x, y0: y, x1: x + w, y1: y + h };
        check_box(&truth, size).map_err(|m| bad(format!("ann_id {}: {m}", r.ann_id)))?;
        for s in &r.sentences {
            let entry = format!("ref_id {} sent_id {}", r.ref_id, s.sent_id);
            if s.sent.trim().is_empty() {
                return Err(EvalError::Annotation { file: refs_path, entry, message: "the sentence is empty".into() });
            }
            items.push(Item { image: path.clone(), size, sentence: s.sent.clone(), truth: Some(truth), entry });
        }
    }
    if items.is_empty() {
        let have: Vec<&str> = splits.into_iter().collect();
        return Err(EvalError::BadFile {
            path: refs_path,
            message: format!("no refs in split \"{split}\"; its splits are: {}", have.join(", ")),
        });
    }
    Ok(Dataset { layout: Layout::Refcoco, annotations: refs_path, split: Some(split.into()), items })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The toolkit's files were written by Python 2's `cPickle.dump` (protocol 0, `str` as byte strings): such a
    /// pickle, made by hand (Python 3 can only write text strings), reads as the protocol-2 fixture does.
    #[test]
    fn reads_a_python2_pickle() {
        let py2 =
            b"(lp0\n(dp1\nS'ref_id'\np2\nI1\nsS'ann_id'\np3\nI10\nsS'image_id'\np4\nI1\nsS'split'\np5\nS'val'\np6\n\
            sS'sentences'\np7\n(lp8\n(dp9\nS'sent_id'\np10\nI5\nsS'sent'\np11\nS'a cup'\np12\nsS'tokens'\np13\n(lp14\n\
            S'a'\naS'cup'\nasasa.";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs(umd).p");
        std::fs::write(&path, py2).unwrap();
        let refs = read_refs(&path).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!((refs[0].ref_id, refs[0].ann_id, refs[0].image_id, refs[0].split.as_str()), (1, 10, 1, "val"));
        assert_eq!((refs[0].sentences[0].sent_id, refs[0].sentences[0].sent.as_str()), (5, "a cup"));
        std::fs::write(&path, b"not a pickle").unwrap();
        assert!(read_refs(&path).unwrap_err().to_string().contains("not a pickled list of refs"));
    }

    #[test]
    fn a_box_must_be_proper_and_inside_the_image() {
        let b = |a: [f32; 4]| PixelBox::from(a);
        assert!(check_box(&b([0.0, 0.0, 100.0, 50.0]), (100, 50)).is_ok());
        assert!(check_box(&b([-0.5, 0.0, 100.5, 50.0]), (100, 50)).is_ok(), "within the tolerance");
        let outside = check_box(&b([10.0, 10.0, 120.0, 40.0]), (100, 50)).unwrap_err();
        assert!(outside.contains("outside the image (100x50)"), "{outside}");
        assert!(check_box(&b([10.0, 10.0, 10.0, 40.0]), (100, 50)).unwrap_err().contains("empty"));
        assert!(check_box(&b([f32::NAN, 10.0, 10.0, 40.0]), (100, 50)).is_err());
    }
}
