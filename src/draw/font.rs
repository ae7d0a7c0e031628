//! The font labels are drawn with: a TrueType font found at run time, or the built-in 8x8 bitmap font.
//!
//! Queries are sentences in any language ("un café ☕", "ein Fahrrad"), so labels need a font with their glyphs.
//! [`Font::system`] looks for one once per process, in this order:
//! 1. `$LOOKOUT_FONT`: font files (`.ttf`, `.otf`, `.ttc`), separated by `:`, tried first for every character;
//! 2. DejaVu Sans, where the distributions put it (Debian's and Ubuntu's `fonts-dejavu-core`, which
//!    `deploy/install-deps.sh` installs; Fedora's, Arch's and Alpine's packages): Latin, Greek, Cyrillic, Arabic,
//!    Hebrew, Armenian, Georgian and many symbols;
//! 3. for characters those lack, the first installed font that has them among a few well-known ones (Noto Sans
//!    Devanagari and CJK, Lohit Devanagari, Droid Sans Fallback, WenQuanYi), loaded on first need.
//!
//! A character that no font here has is drawn as the first font's "missing glyph" box, and a warning says, once,
//! which character and what to install. With no TrueType font at all, the bitmap font of [`font8x8`] is used (ASCII
//! only; anything else is `?`) and a warning says so once.
//!
//! Text is laid out glyph by glyph with the font's advances and kerning; scripts whose letters change shape with
//! their neighbours (Arabic joining, Devanagari conjuncts) are not shaped, so they show as separate letters.
//!
//! Glyphs are rasterised once per font, glyph and size, and kept (at most [`CACHE_LIMIT`] of them): drawing the
//! labels of a video frame allocates nothing once its characters have been seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ab_glyph::{Font as _, FontVec, GlyphId, PxScale, ScaleFont as _};

/// Width and height of one glyph of the bitmap font, in pixels at scale 1.
pub const GLYPH_SIZE: u32 = 8;

/// Text height (ascent to descent) per step of label scale with a TrueType font, in pixels: 13 pixels is the
/// smallest size at which DejaVu Sans stays legible on a 640x360 frame.
pub const OUTLINE_PX_PER_SCALE: f32 = 13.0;

/// Rasterised glyphs kept; past it the cache starts again (a frame's labels use a few dozen).
pub const CACHE_LIMIT: usize = 4096;

/// Where distributions install DejaVu Sans.
const DEJAVU_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", // Debian, Ubuntu: fonts-dejavu-core
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf", // Fedora: dejavu-sans-fonts
    "/usr/share/fonts/TTF/DejaVuSans.ttf",             // Arch: ttf-dejavu
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",          // Alpine: font-dejavu
];

/// Fonts for the scripts DejaVu Sans lacks, tried in this order when a character is missing from the others.
const FALLBACK_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf", // fonts-noto-core
    "/usr/share/fonts/truetype/lohit-devanagari/Lohit-Devanagari.ttf", // fonts-lohit-deva
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", // fonts-noto-cjk
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", // fonts-droid-fallback
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",         // fonts-wqy-microhei
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",           // fonts-wqy-zenhei
];

/// A glyph's coverage, 0 (none) to 255 (full), in rows of `width`; placed `left` pixels right of the pen and `top`
/// pixels below the top of the line.
#[derive(Debug)]
pub struct Raster {
    pub left: i64,
    pub top: i64,
    pub width: usize,
    pub height: usize,
    pub coverage: Vec<u8>,
}

/// A font to draw text with.
pub struct Font {
    kind: Kind,
}

enum Kind {
    /// The 8x8 bitmap font: ASCII, `?` for the rest.
    Bitmap,
    /// TrueType faces: each character comes from the first that has it.
    Outline(Outlines),
}

struct Outlines {
    /// `$LOOKOUT_FONT` and DejaVu Sans (at least one).
    faces: Vec<Face>,
    /// The fallbacks of [`FALLBACK_PATHS`] that are installed, loaded the first time a character is missing
    /// from `faces`.
    fallbacks: OnceLock<Vec<Face>>,
    /// Rasterised glyphs by (face index, counting `faces` then `fallbacks`; glyph; pixel size).
    cache: Mutex<HashMap<(usize, u16, u32), Arc<Raster>>>,
}

struct Face {
    path: PathBuf,
    font: FontVec,
}

impl Face {
    /// The font in `path` (the first of a collection), or why not.
    fn load(path: &Path) -> Result<Face, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let font = FontVec::try_from_vec_and_index(bytes, 0).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Face { path: path.to_path_buf(), font })
    }
}

/// A glyph to draw: its raster and where its pen position is, in pixels from the start of the text.
pub struct Placed {
    pub x: i64,
    pub raster: Arc<Raster>,
}

/// Said once per process: no TrueType font, or a character no font has.
static WARNED_NO_FONT: AtomicBool = AtomicBool::new(false);
static WARNED_MISSING: AtomicBool = AtomicBool::new(false);

impl Font {
    /// The built-in 8x8 bitmap font (ASCII only).
    pub fn bitmap() -> &'static Font {
        static BITMAP: Font = Font { kind: Kind::Bitmap };
        &BITMAP
    }

    /// The font found on this machine (see the module docs), looked for once; the bitmap font when there is none.
    pub fn system() -> &'static Font {
        static SYSTEM: OnceLock<Font> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let wanted: Vec<PathBuf> = std::env::var_os("LOOKOUT_FONT")
                .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
                .unwrap_or_default();
            Font::from_paths(&wanted, DEJAVU_PATHS)
        })
    }

    /// The first font of `wanted` that loads (each one that does not is named in a warning), then the first of
    /// `defaults` that is installed; the bitmap font, with a warning, when none is.
    pub fn from_paths(wanted: &[PathBuf], defaults: &[&str]) -> Font {
        let mut faces = Vec::new();
        for path in wanted {
            match Face::load(path) {
                Ok(face) => faces.push(face),
                Err(e) => tracing::warn!("LOOKOUT_FONT: cannot use {e}"),
            }
        }
        if let Some(face) = defaults.iter().map(Path::new).filter(|p| p.is_file()).find_map(|p| Face::load(p).ok()) {
            faces.push(face);
        }
        if faces.is_empty() {
            if !WARNED_NO_FONT.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "no TrueType font found (looked for DejaVu Sans in {}): labels are drawn with the built-in ASCII \
                     font, other characters as '?'; install fonts-dejavu-core (deploy/install-deps.sh does) or set \
                     LOOKOUT_FONT to a .ttf file",
                    defaults.join(", ")
                );
            }
            return Font { kind: Kind::Bitmap };
        }
        tracing::debug!(font = %faces[0].path.display(), "label font");
        Font { kind: Kind::Outline(Outlines { faces, fallbacks: OnceLock::new(), cache: Mutex::default() }) }
    }

    /// A TrueType font from `path` alone (no fallbacks), for tests and callers that bring their own.
    pub fn from_file(path: &Path) -> Result<Font, String> {
        let face = Face::load(path)?;
        Ok(Font {
            kind: Kind::Outline(Outlines {
                faces: vec![face],
                fallbacks: OnceLock::from(Vec::new()),
                cache: Mutex::default(),
            }),
        })
    }

    /// True for the 8x8 bitmap font.
    pub fn is_bitmap(&self) -> bool {
        matches!(self.kind, Kind::Bitmap)
    }

    /// The file of the first TrueType face, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Bitmap => None,
            Kind::Outline(o) => o.faces.first().map(|f| f.path.as_path()),
        }
    }

    /// Height of a line of text at `scale` (0 counts as 1), in pixels.
    pub fn line_height(&self, scale: u32) -> u32 {
        let scale = scale.max(1);
        match &self.kind {
            Kind::Bitmap => GLYPH_SIZE * scale,
            Kind::Outline(_) => (OUTLINE_PX_PER_SCALE * scale as f32).round() as u32,
        }
    }

    /// Size in pixels of `text` drawn at `scale` (0 counts as 1): its advance width and [`Self::line_height`].
    pub fn text_size(&self, text: &str, scale: u32) -> (u32, u32) {
        let scale = scale.max(1);
        match &self.kind {
            Kind::Bitmap => {
                let chars = text.chars().count() as u32;
                (chars.saturating_mul(GLYPH_SIZE * scale), GLYPH_SIZE * scale)
            }
            Kind::Outline(o) => {
                let height = self.line_height(scale);
                let mut width = 0.0f32;
                o.walk(text, height, |_, _, _| {}, |w| width = w);
                (width.ceil() as u32, height)
            }
        }
    }

    /// Calls `draw` with each glyph of `text` at `scale`, left to right, for [`Kind::Outline`] fonts; returns
    /// false (drawing nothing) for the bitmap font, which the canvas draws itself.
    pub fn for_each_glyph(&self, text: &str, scale: u32, mut draw: impl FnMut(Placed)) -> bool {
        let Kind::Outline(o) = &self.kind else {
            return false;
        };
        let height = self.line_height(scale);
        o.walk(
            text,
            height,
            |face, id, x| {
                if let Some(raster) = o.raster(face, id, height) {
                    draw(Placed { x, raster });
                }
            },
            |_| {},
        );
        if let Some(c) = text.chars().find(|&c| !c.is_control() && o.face_for(c).is_none())
            && !WARNED_MISSING.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "no font here has a glyph for {c:?} (U+{:04X}) in the label {text:?}: it is drawn as a box; install a \
                 font for its script (fonts-noto-core, fonts-noto-cjk) or set LOOKOUT_FONT to one",
                c as u32
            );
        }
        true
    }
}

impl Outlines {
    /// The face (index over `faces` then `fallbacks`) that has `c`.
    fn face_for(&self, c: char) -> Option<usize> {
        if let Some(i) = self.faces.iter().position(|f| f.font.glyph_id(c).0 != 0) {
            return Some(i);
        }
        let fallbacks = self.fallbacks.get_or_init(|| {
            FALLBACK_PATHS.iter().map(Path::new).filter(|p| p.is_file()).filter_map(|p| Face::load(p).ok()).collect()
        });
        fallbacks.iter().position(|f| f.font.glyph_id(c).0 != 0).map(|i| self.faces.len() + i)
    }

    fn face(&self, index: usize) -> &Face {
        match index.checked_sub(self.faces.len()) {
            None => &self.faces[index],
            Some(i) => &self.fallbacks.get().expect("a fallback index comes from face_for")[i],
        }
    }

    /// The scale of a face on a line `height` pixels high: ab_glyph's pixel scale is the ascent-to-descent
    /// height, so every face (fallbacks included) fills the same line.
    fn px_scale(height: u32) -> PxScale {
        PxScale::from(height as f32)
    }

    /// Lays out `text` on a line `height` pixels high: `glyph(face, id, pen x)` for each character, then `width`
    /// with the total advance.
    fn walk(&self, text: &str, height: u32, mut glyph: impl FnMut(usize, GlyphId, i64), width: impl FnOnce(f32)) {
        let mut pen = 0.0f32;
        let mut last: Option<(usize, GlyphId)> = None;
        for c in text.chars().filter(|c| !c.is_control()) {
            let (face_index, id) = match self.face_for(c) {
                Some(i) => (i, self.face(i).font.glyph_id(c)),
                // The first face's missing-glyph box.
                None => (0, GlyphId(0)),
            };
            let face = self.face(face_index);
            let scaled = face.font.as_scaled(Self::px_scale(height));
            if let Some((lf, lid)) = last
                && lf == face_index
            {
                pen += scaled.kern(lid, id);
            }
            glyph(face_index, id, pen.round() as i64);
            pen += scaled.h_advance(id);
            last = Some((face_index, id));
        }
        width(pen);
    }

    /// The raster of glyph `id` of face `face` on a line `height` pixels high, from the cache or made now.
    fn raster(&self, face: usize, id: GlyphId, height: u32) -> Option<Arc<Raster>> {
        let key = (face, id.0, height);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cache.get(&key) {
            return Some(r.clone());
        }
        let f = self.face(face);
        let scale = Self::px_scale(height);
        let scaled = f.font.as_scaled(scale);
        // The baseline sits `ascent` below the top of the line.
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(0.0, scaled.ascent()));
        let raster = match f.font.outline_glyph(glyph) {
            Some(outlined) => {
                let bounds = outlined.px_bounds();
                let (width, height) = (bounds.width() as usize, bounds.height() as usize);
                let mut coverage = vec![0u8; width * height];
                outlined.draw(|x, y, c| {
                    if let Some(v) = coverage.get_mut(y as usize * width + x as usize) {
                        *v = (c.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                });
                Raster { left: bounds.min.x as i64, top: bounds.min.y as i64, width, height, coverage }
            }
            // A space, or a glyph without an outline: nothing to draw.
            None => Raster { left: 0, top: 0, width: 0, height: 0, coverage: Vec::new() },
        };
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let raster = Arc::new(raster);
        cache.insert(key, raster.clone());
        Some(raster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_font_falls_back_to_the_bitmap_font() {
        let f = Font::from_paths(&[PathBuf::from("/nonexistent/font.ttf")], &["/nonexistent/DejaVuSans.ttf"]);
        assert!(f.is_bitmap());
        assert_eq!(f.text_size("abc", 2), (48, 16));
    }

    #[test]
    fn the_installer_installs_the_font_looked_for_first() {
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/install-deps.sh")).unwrap();
        assert!(script.lines().any(|l| l.trim_start().starts_with("fonts-dejavu-core")), "install-deps.sh");
        assert_eq!(DEJAVU_PATHS[0], "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "where that package puts it");
    }

    #[test]
    fn dejavu_is_found_and_measures_text() {
        let f = Font::system();
        assert!(
            !f.is_bitmap(),
            "DejaVu Sans is not installed here: apt install fonts-dejavu-core (deploy/install-deps.sh does)"
        );
        let (w1, h1) = f.text_size("a", 1);
        let (w2, h2) = f.text_size("aa", 1);
        assert_eq!((h1, h2), (13, 13));
        assert!(w1 > 3 && w2 >= 2 * w1 - 1 && w2 <= 2 * w1 + 1, "{w1} {w2}");
        assert_eq!(f.text_size("a", 2).1, 26);
        assert_eq!(f.text_size("", 1), (0, 13));
    }
}
