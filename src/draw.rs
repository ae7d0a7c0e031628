//! Drawing boxes, labels and banners on packed RGB8 images and on I420 frames (see [`crate::picture`]).
//!
//! Used for `locate`'s annotated image and for every frame of the annotated video, so everything here
//! works in place on the caller's buffer and allocates nothing per frame: labels are formatted into a
//! fixed buffer on the stack, and glyphs come from a TrueType font found at run time (DejaVu Sans; see
//! [`font`]), rasterised once and kept, so that a query in any language is drawn as written. Without one,
//! the 8x8 bitmap font of [`font8x8`] is used (ASCII only; anything else is drawn as `?`).
//!
//! Coordinates are pixels with the origin at the top-left corner. Every operation is clipped to the canvas,
//! so boxes and text partly (or wholly) outside it are fine.

pub mod font;

use std::fmt::Write as _;

pub use font::{Font, GLYPH_SIZE};

use crate::geom::{Detection, PixelBox};
use crate::picture::{Picture, PixelFormat, YuvMatrix};
use crate::track::TrackOutput;

/// Text drawn on every picture and clip made with a random-weight test model.
pub const TEST_MODEL_BANNER: &str = "test model: boxes are not meaningful";

/// Red of the warning banner ([`draw_banner`]).
pub const BANNER_COLOR: [u8; 3] = [200, 0, 0];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DrawError {
    /// The buffer is shorter than `stride * (height - 1) + width * 3` bytes.
    #[error("RGB buffer of {len} bytes is too small for {width}x{height} pixels with a stride of {stride} bytes")]
    BufferTooSmall { len: usize, width: u32, height: u32, stride: usize },
    /// The stride is shorter than a row of `width * 3` bytes.
    #[error("stride of {stride} bytes is shorter than a row of {width} RGB pixels")]
    StrideTooSmall { stride: usize, width: u32 },
}

/// An image borrowed for drawing: packed RGB8 (`height` rows of `width` pixels, each row `stride` bytes apart),
/// or an I420 [`Picture`].
///
/// On I420 a colour is drawn as its YUV value; U and V cover 2x2 pixels, so an edge on an odd pixel tints the
/// half of the chroma sample next to it (as an encoder would anyway).
pub struct Canvas<'a> {
    data: &'a mut [u8],
    width: u32,
    height: u32,
    planes: Planes,
    /// Text is drawn with it: [`Font::system`] unless [`Canvas::with_font`] says otherwise.
    font: &'a Font,
}

enum Planes {
    Rgb { stride: usize },
    I420 { offsets: [usize; 3], strides: [usize; 3], matrix: YuvMatrix },
}

impl<'a> Canvas<'a> {
    /// A canvas over `data`, which holds `height` rows of `width` RGB pixels, each row starting `stride` bytes
    /// after the previous one (the bytes between the end of a row and the next are never touched).
    pub fn new(data: &'a mut [u8], width: u32, height: u32, stride: usize) -> Result<Self, DrawError> {
        let row = width as usize * 3;
        if stride < row {
            return Err(DrawError::StrideTooSmall { stride, width });
        }
        let needed = if height == 0 { 0 } else { stride * (height as usize - 1) + row };
        if data.len() < needed {
            return Err(DrawError::BufferTooSmall { len: data.len(), width, height, stride });
        }
        Ok(Canvas { data, width, height, planes: Planes::Rgb { stride }, font: Font::system() })
    }

    /// A canvas over an `image` RGB image (tightly packed rows).
    pub fn from_image(img: &'a mut image::RgbImage) -> Self {
        let (width, height) = img.dimensions();
        let stride = width as usize * 3;
        Canvas { data: img, width, height, planes: Planes::Rgb { stride }, font: Font::system() }
    }

    /// A canvas over a [`Picture`], RGB or I420 (colours are converted with [`YuvMatrix::for_height`]).
    pub fn from_picture(picture: &'a mut Picture) -> Self {
        let (layout, data) = picture.parts_mut();
        let (width, height) = (layout.width, layout.height);
        let planes = match layout.format {
            PixelFormat::Rgb => Planes::Rgb { stride: layout.strides[0] },
            PixelFormat::I420 => {
                Planes::I420 { offsets: layout.offsets, strides: layout.strides, matrix: YuvMatrix::for_height(height) }
            }
        };
        Canvas { data, width, height, planes, font: Font::system() }
    }

    /// The same canvas, drawing text with `font`.
    pub fn with_font(self, font: &'a Font) -> Self {
        Canvas { font, ..self }
    }

    /// The font text is drawn with.
    pub fn font(&self) -> &'a Font {
        self.font
    }

    /// Size in pixels of `text` drawn at `scale` (0 counts as 1) with this canvas's font.
    pub fn text_size(&self, text: &str, scale: u32) -> (u32, u32) {
        self.font.text_size(text, scale)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from the start of one row to the start of the next (of the Y plane for I420).
    pub fn stride(&self) -> usize {
        match &self.planes {
            Planes::Rgb { stride } => *stride,
            Planes::I420 { strides, .. } => strides[0],
        }
    }

    /// The colour of pixel (`x`, `y`), or `None` outside the canvas (converted back to RGB for I420).
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let (x, y) = (x as usize, y as usize);
        match &self.planes {
            Planes::Rgb { stride } => {
                let i = y * stride + x * 3;
                Some([self.data[i], self.data[i + 1], self.data[i + 2]])
            }
            Planes::I420 { offsets, strides, matrix } => {
                let luma = self.data[offsets[0] + y * strides[0] + x];
                let u = self.data[offsets[1] + (y / 2) * strides[1] + x / 2];
                let v = self.data[offsets[2] + (y / 2) * strides[2] + x / 2];
                Some(matrix.to_rgb([luma, u, v]))
            }
        }
    }

    /// Fills the rectangle of `w` x `h` pixels whose top-left corner is (`x`, `y`), clipped to the canvas.
    pub fn fill_rect(&mut self, x: i32, y: i32, w: u32, h: u32, color: [u8; 3]) {
        self.fill_span(x as i64, y as i64, x as i64 + w as i64, y as i64 + h as i64, color);
    }

    /// Fills `[x0, x1) x [y0, y1)` clipped to the canvas.
    fn fill_span(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3]) {
        self.fill(x0, y0, x1, y1, color, true);
    }

    /// [`Self::fill_span`], where on I420 `chroma = false` writes only the luma: glyph strokes a pixel or two
    /// wide would otherwise turn the 2x2 chroma blocks around them grey and wash out the label behind the text.
    /// All drawing ends up here.
    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3], chroma: bool) {
        let x0 = x0.clamp(0, self.width as i64) as usize;
        let x1 = x1.clamp(0, self.width as i64) as usize;
        let y0 = y0.clamp(0, self.height as i64) as usize;
        let y1 = y1.clamp(0, self.height as i64) as usize;
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        match &self.planes {
            Planes::Rgb { stride } => {
                for row in y0..y1 {
                    let start = row * stride;
                    for px in self.data[start + x0 * 3..start + x1 * 3].chunks_exact_mut(3) {
                        px.copy_from_slice(&color);
                    }
                }
            }
            Planes::I420 { offsets, strides, matrix } => {
                let [luma, u, v] = matrix.to_yuv(color);
                for row in y0..y1 {
                    let start = offsets[0] + row * strides[0];
                    self.data[start + x0..start + x1].fill(luma);
                }
                if !chroma {
                    return;
                }
                // Every chroma sample whose 2x2 block the span touches.
                let (cx0, cx1) = (x0 / 2, x1.div_ceil(2));
                for row in y0 / 2..y1.div_ceil(2) {
                    let start = offsets[1] + row * strides[1];
                    self.data[start + cx0..start + cx1].fill(u);
                    let start = offsets[2] + row * strides[2];
                    self.data[start + cx0..start + cx1].fill(v);
                }
            }
        }
    }

    /// What [`Self::blend`] lays down for `color`: the colour itself on RGB, its luma (first) on I420, worked out
    /// once per text rather than per pixel.
    fn ink(&self, color: [u8; 3]) -> [u8; 3] {
        match &self.planes {
            Planes::Rgb { .. } => color,
            Planes::I420 { matrix, .. } => matrix.to_yuv(color),
        }
    }

    /// Lays `ink` (see [`Self::ink`]) over pixel (`x`, `y`) with coverage `alpha` (0 to 255), if it is on the
    /// canvas. On I420 only the luma is blended, as glyph strokes are (see [`Self::fill`]).
    fn blend(&mut self, x: i64, y: i64, ink: [u8; 3], alpha: u8) {
        if alpha == 0 || x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let mix = |under: u8, over: u8| {
            ((under as u32 * (255 - alpha as u32) + over as u32 * alpha as u32 + 127) / 255) as u8
        };
        let (x, y) = (x as usize, y as usize);
        match &self.planes {
            Planes::Rgb { stride } => {
                let i = y * stride + x * 3;
                for (under, over) in self.data[i..i + 3].iter_mut().zip(ink) {
                    *under = mix(*under, over);
                }
            }
            Planes::I420 { offsets, strides, .. } => {
                let i = offsets[0] + y * strides[0] + x;
                self.data[i] = mix(self.data[i], ink[0]);
            }
        }
    }

    /// Draws the outline of `b`, `thickness` pixels wide (at least 1) and inside the box, so that a box that
    /// touches the image's border is drawn whole. The parts outside the canvas are clipped.
    ///
    /// The box's corners are rounded to the nearest pixel edge; a box thinner than a pixel is drawn one pixel wide.
    pub fn draw_box(&mut self, b: &PixelBox, color: [u8; 3], thickness: u32) {
        let Some((x0, y0, x1, y1)) = pixel_rect(b) else {
            return;
        };
        let t = thickness.max(1) as i64;
        // Top, bottom, left, right; the edges overlap at the corners when the box is thinner than 2t.
        self.fill_span(x0, y0, x1, (y0 + t).min(y1), color);
        self.fill_span(x0, (y1 - t).max(y0), x1, y1, color);
        self.fill_span(x0, y0, (x0 + t).min(x1), y1, color);
        self.fill_span((x1 - t).max(x0), y0, x1, y1, color);
    }

    /// Draws `text` with its top-left corner at (`x`, `y`), each glyph pixel a `scale` x `scale` square
    /// (scale 0 counts as 1), on a filled background when `bg` is given. Clipped to the canvas.
    ///
    /// Drawn with the canvas's font (see [`font`]): with the bitmap font, characters outside printable ASCII are
    /// drawn as `?`. Returns the size of the text in pixels, whether or not all of it was visible (see
    /// [`Self::text_size`]).
    pub fn draw_text(
        &mut self,
        x: i32,
        y: i32,
        text: &str,
        color: [u8; 3],
        bg: Option<[u8; 3]>,
        scale: u32,
    ) -> (u32, u32) {
        let scale = scale.max(1);
        let size = self.text_size(text, scale);
        if let Some(bg) = bg {
            self.fill_span(x as i64, y as i64, x as i64 + size.0 as i64, y as i64 + size.1 as i64, bg);
        }
        let font = self.font;
        let (x0, y0) = (x as i64, y as i64);
        let ink = self.ink(color);
        let outlined = font.for_each_glyph(text, scale, |glyph| {
            let r = &glyph.raster;
            let (gx, gy) = (x0 + glyph.x + r.left, y0 + r.top);
            if gx >= self.width as i64 || gx + (r.width as i64) <= 0 || gy >= self.height as i64 {
                return;
            }
            for (row, line) in r.coverage.chunks_exact(r.width.max(1)).enumerate() {
                for (col, &alpha) in line.iter().enumerate() {
                    self.blend(gx + col as i64, gy + row as i64, ink, alpha);
                }
            }
        });
        if outlined {
            return size;
        }
        let advance = (GLYPH_SIZE * scale) as i64;
        let mut gx = x as i64;
        for c in text.chars() {
            if gx >= self.width as i64 {
                break;
            }
            if gx + advance > 0 {
                self.draw_glyph(gx, y as i64, glyph(c), color, scale as i64);
            }
            gx += advance;
        }
        size
    }

    fn draw_glyph(&mut self, x: i64, y: i64, rows: &[u8; 8], color: [u8; 3], scale: i64) {
        for (r, bits) in rows.iter().enumerate() {
            if *bits == 0 {
                continue;
            }
            let py = y + r as i64 * scale;
            for c in 0..8 {
                // font8x8 stores the leftmost pixel of a row in the least significant bit.
                if bits & (1 << c) != 0 {
                    let px = x + c * scale;
                    self.fill(px, py, px + scale, py + scale, color, false);
                }
            }
        }
    }

    /// Puts `text` on a label filled with `color` just above `b`, or inside the box at its top when there is
    /// no room above (a box at the top edge). The label is shifted left to stay on the canvas when it can.
    pub fn draw_label(&mut self, b: &PixelBox, text: &str, color: [u8; 3]) {
        self.draw_label_avoiding(b, text, color, &mut LabelPlacer::new());
    }

    /// [`Self::draw_label`], at the first place near `b` where the label covers none of those already in
    /// `placer` (see [`LabelPlacer`]), which then holds this one too.
    pub fn draw_label_avoiding(&mut self, b: &PixelBox, text: &str, color: [u8; 3], placer: &mut LabelPlacer) {
        let Some(rect) = pixel_rect(b) else {
            return;
        };
        let scale = label_scale(self.width, self.height);
        let pad = scale as i64;
        let (tw, th) = self.text_size(text, scale);
        let (lw, lh) = (tw as i64 + 2 * pad, th as i64 + 2 * pad);
        let label = placer.place(rect, (lw, lh), (self.width as i64, self.height as i64));
        self.fill_span(label.x0, label.y0, label.x1, label.y1, color);
        let (tx, ty) = (clamp_i32(label.x0 + pad), clamp_i32(label.y0 + pad));
        self.draw_text(tx, ty, text, contrast_color(color), None, scale);
    }
}

/// A label's rectangle, `[x0, x1) x [y0, y1)` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl LabelRect {
    fn overlaps(&self, o: &LabelRect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// Where the labels of one picture went, so that a label never covers another: when boxes of different queries
/// coincide (two queries that find the same object), the second label goes above the first, or inside or below
/// the box. Kept on the stack (no allocation per frame); past [`LabelPlacer::CAPACITY`] labels the rest are
/// placed without looking (terminal and JSON output list every result anyway).
pub struct LabelPlacer {
    placed: [LabelRect; Self::CAPACITY],
    len: usize,
}

impl Default for LabelPlacer {
    fn default() -> Self {
        Self::new()
    }
}

impl LabelPlacer {
    /// Labels remembered per picture.
    pub const CAPACITY: usize = 128;
    /// Steps of one label height tried above, inside and below a box.
    const STEPS: i64 = 16;

    pub fn new() -> Self {
        LabelPlacer { placed: [LabelRect { x0: 0, y0: 0, x1: 0, y1: 0 }; Self::CAPACITY], len: 0 }
    }

    /// Keeps labels off `r` (a banner, a timestamp), as if a label were there.
    pub fn reserve(&mut self, r: LabelRect) {
        if self.len < Self::CAPACITY {
            self.placed[self.len] = r;
            self.len += 1;
        }
    }

    /// The labels placed so far (and the reserved rectangles).
    pub fn placed(&self) -> &[LabelRect] {
        &self.placed[..self.len]
    }

    /// Places a label of `size` (width, height) for the box `b` (`[x0, x1) x [y0, y1)`) on a canvas of `canvas`
    /// (width, height), and remembers it. Tried in order, one label height further each round: above the box,
    /// inside it from its top, below it; the first place on the canvas that covers no earlier label wins. With
    /// none free, the label goes where the first round put it. Left-aligned with the box, shifted left to stay
    /// on the canvas.
    pub fn place(&mut self, b: (i64, i64, i64, i64), size: (i64, i64), canvas: (i64, i64)) -> LabelRect {
        let (bx0, by0, _, by1) = b;
        let (lw, lh) = size;
        let (cw, ch) = canvas;
        let x0 = bx0.min(cw - lw).max(0);
        let at = |y0: i64| LabelRect { x0, y0, x1: x0 + lw, y1: y0 + lh };
        let on_canvas = |y0: i64| y0 >= 0 && (y0 + lh <= ch || y0 == 0);
        let free = |r: &LabelRect| !self.placed().iter().any(|p| p.overlaps(r));
        let candidates =
            (0..Self::STEPS).flat_map(|k| [by0 - (k + 1) * lh, by0 + k * lh, by1 + k * lh]).filter(|&y| on_canvas(y));
        let mut first = None;
        let mut chosen = None;
        for y in candidates {
            let r = at(y);
            first.get_or_insert(r);
            if free(&r) {
                chosen = Some(r);
                break;
            }
        }
        let rect = chosen.or(first).unwrap_or_else(|| at(by0.max(0)));
        if self.len < Self::CAPACITY {
            self.placed[self.len] = rect;
            self.len += 1;
        }
        rect
    }
}

/// The box as the half-open pixel rectangle `[x0, x1) x [y0, y1)`, at least one pixel wide and high,
/// or `None` when a corner is not a number.
fn pixel_rect(b: &PixelBox) -> Option<(i64, i64, i64, i64)> {
    if !(b.x0.is_finite() && b.y0.is_finite() && b.x1.is_finite() && b.y1.is_finite()) {
        return None;
    }
    // Far outside any canvas, but small enough that the arithmetic on them cannot overflow.
    const LIMIT: f32 = 1.0e9;
    let round = |v: f32| v.clamp(-LIMIT, LIMIT).round() as i64;
    let (x0, y0) = (round(b.x0.min(b.x1)), round(b.y0.min(b.y1)));
    let (x1, y1) = (round(b.x0.max(b.x1)).max(x0 + 1), round(b.y0.max(b.y1)).max(y0 + 1));
    Some((x0, y0, x1, y1))
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The bitmap of `c`: printable ASCII as it is, anything else as `?`.
fn glyph(c: char) -> &'static [u8; 8] {
    let code = if (' '..='~').contains(&c) { c as usize } else { '?' as usize };
    &font8x8::legacy::BASIC_LEGACY[code]
}

/// Black or white, whichever reads better on `bg`.
pub fn contrast_color(bg: [u8; 3]) -> [u8; 3] {
    // ITU-R BT.601 luma.
    let luma = 299 * bg[0] as u32 + 587 * bg[1] as u32 + 114 * bg[2] as u32;
    if luma > 140_000 { [0, 0, 0] } else { [255, 255, 255] }
}

/// Colours that are told apart easily and carry black or white text well (after Sasha Trubetskoy's
/// "20 simple, distinct colors"), ordered so that neighbouring queries differ most.
const PALETTE: [[u8; 3]; 12] = [
    [60, 180, 75],   // green
    [0, 130, 200],   // blue
    [245, 130, 48],  // orange
    [145, 30, 180],  // purple
    [255, 225, 25],  // yellow
    [70, 240, 240],  // cyan
    [240, 50, 230],  // magenta
    [230, 25, 75],   // red
    [210, 245, 60],  // lime
    [0, 128, 128],   // teal
    [250, 190, 212], // pink
    [170, 110, 40],  // brown
];

/// The colour for query (or track) `index`, from a fixed palette of 12 that repeats.
pub fn color_for(index: usize) -> [u8; 3] {
    PALETTE[index % PALETTE.len()]
}

/// Text scale for labels: 1 up to 800 pixels on the short side, then one step per 400 pixels, at most 4.
pub fn label_scale(width: u32, height: u32) -> u32 {
    (width.min(height) / 400).clamp(1, 4)
}

/// Box outline thickness: 2 pixels, and one more per 360 pixels on the short side beyond 360, at most 6.
pub fn box_thickness(width: u32, height: u32) -> u32 {
    (1 + width.min(height) / 360).clamp(2, 6)
}

/// What [`annotate_detections`] needs to know of one box.
pub trait Annotated {
    /// The box in pixels of the image drawn on.
    fn bbox(&self) -> PixelBox;
    /// Index of the query that found it: picks the label and the colour.
    fn query(&self) -> usize;
    /// Score, 0..1, printed with two decimals.
    fn score(&self) -> f32;
    /// The track id printed as `#id`, if the box belongs to a track.
    fn track_id(&self) -> Option<u64> {
        None
    }
}

impl Annotated for Detection {
    fn bbox(&self) -> PixelBox {
        self.bbox
    }
    fn query(&self) -> usize {
        self.query
    }
    fn score(&self) -> f32 {
        self.score
    }
}

impl Annotated for TrackOutput {
    fn bbox(&self) -> PixelBox {
        self.bbox
    }
    fn query(&self) -> usize {
        self.query
    }
    fn score(&self) -> f32 {
        self.score
    }
    fn track_id(&self) -> Option<u64> {
        Some(self.track_id)
    }
}

/// Text of at most [`LabelText::CAPACITY`] bytes of UTF-8 kept on the stack, so that labels are formatted without
/// allocating; longer text is cut at a character boundary.
struct LabelText {
    buf: [u8; Self::CAPACITY],
    len: usize,
}

impl LabelText {
    const CAPACITY: usize = 192;

    fn new() -> Self {
        LabelText { buf: [0; Self::CAPACITY], len: 0 }
    }

    fn as_str(&self) -> &str {
        // Only whole characters are ever written (see `write_str`).
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl std::fmt::Write for LabelText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            let n = c.len_utf8();
            if self.len + n > Self::CAPACITY {
                break;
            }
            c.encode_utf8(&mut self.buf[self.len..self.len + n]);
            self.len += n;
        }
        Ok(())
    }
}

/// Draws each item's box in its query's colour, then a label `"<label> 0.42"` (and `" #<track id>"` for a
/// track) above it. `labels[query]` names the query; a query without a label is shown as `q<index>`.
///
/// Labels are drawn after every box so that no box covers a label, and each where it covers no earlier label
/// (see [`LabelPlacer`]).
pub fn annotate_detections<A: Annotated>(canvas: &mut Canvas<'_>, items: &[A], labels: &[String]) {
    annotate_detections_with(canvas, items, labels, &mut LabelPlacer::new());
}

/// [`annotate_detections`], with labels kept off what `placer` already holds: for example the strip a banner
/// drawn afterwards will cover ([`banner_rect`], given to [`LabelPlacer::reserve`]).
pub fn annotate_detections_with<A: Annotated>(
    canvas: &mut Canvas<'_>,
    items: &[A],
    labels: &[String],
    placer: &mut LabelPlacer,
) {
    let thickness = box_thickness(canvas.width, canvas.height);
    for item in items {
        canvas.draw_box(&item.bbox(), color_for(item.query()), thickness);
    }
    for item in items {
        let mut text = LabelText::new();
        // Writing to a LabelText never fails.
        let _ = match labels.get(item.query()) {
            Some(label) => write!(text, "{label} {:.2}", item.score()),
            None => write!(text, "q{} {:.2}", item.query(), item.score()),
        };
        if let Some(id) = item.track_id() {
            let _ = write!(text, " #{id}");
        }
        canvas.draw_label_avoiding(&item.bbox(), text.as_str(), color_for(item.query()), placer);
    }
}

/// Draws a loud red banner across the full width at the top with `text` in white, centred, as large as fits
/// (scale 1 to 4). Returns the banner's height in pixels.
///
/// Used for warnings that must not be missed on any frame, such as "test model: boxes are not meaningful".
pub fn draw_banner(canvas: &mut Canvas<'_>, text: &str) -> u32 {
    let (scale, pad, (tw, th)) = banner_layout(canvas, text);
    let height = th + 2 * pad;
    canvas.fill_rect(0, 0, canvas.width, height, BANNER_COLOR);
    let x = (canvas.width.saturating_sub(tw) / 2) as i32;
    canvas.draw_text(x, pad as i32, text, [255, 255, 255], None, scale);
    height
}

/// Where [`draw_banner`] would put its banner for `text`: the full width, from the top.
pub fn banner_rect(canvas: &Canvas<'_>, text: &str) -> LabelRect {
    let (_, pad, (_, th)) = banner_layout(canvas, text);
    LabelRect { x0: 0, y0: 0, x1: canvas.width as i64, y1: (th + 2 * pad) as i64 }
}

/// The banner's text scale (as large as fits, 1 to 4), padding and text size.
fn banner_layout(canvas: &Canvas<'_>, text: &str) -> (u32, u32, (u32, u32)) {
    let fits = |s: u32| canvas.text_size(text, s).0 + 6 * s <= canvas.width;
    let scale = (1..=4).rev().find(|&s| fits(s)).unwrap_or(1);
    (scale, 3 * scale, canvas.text_size(text, scale))
}

/// The motion gate's label while something moves, and the outline of the moving region: amber.
pub const MOTION_COLOR: [u8; 3] = [255, 176, 0];
/// The motion gate's label while nothing moves: grey.
pub const STILL_COLOR: [u8; 3] = [110, 110, 110];

/// The motion gate's label: "motion" or "still".
fn motion_text(moving: bool) -> &'static str {
    if moving { "motion" } else { "still" }
}

/// Draws the motion gate's state at the bottom-right corner ("motion" in black on amber, "still" in white on
/// grey) and, when given, the outline of the moving region, one pixel wide in amber. Draw it before the
/// detections, so that their boxes and labels are on top.
pub fn draw_motion(canvas: &mut Canvas<'_>, moving: bool, region: Option<&PixelBox>) {
    if let Some(r) = region {
        canvas.draw_box(r, MOTION_COLOR, 1);
    }
    let scale = label_scale(canvas.width, canvas.height);
    let pad = 2 * scale as i32;
    let r = motion_rect(canvas, moving);
    let (bg, fg) = if moving { (MOTION_COLOR, [0, 0, 0]) } else { (STILL_COLOR, [255, 255, 255]) };
    let (x, y) = (clamp_i32(r.x0), clamp_i32(r.y0));
    canvas.fill_rect(x, y, (r.x1 - r.x0) as u32, (r.y1 - r.y0) as u32, bg);
    canvas.draw_text(x.saturating_add(pad), y.saturating_add(pad), motion_text(moving), fg, None, scale);
}

/// Where [`draw_motion`] puts its label: a strip at the bottom-right corner.
pub fn motion_rect(canvas: &Canvas<'_>, moving: bool) -> LabelRect {
    let scale = label_scale(canvas.width, canvas.height);
    let pad = 2 * scale as i64;
    let (tw, th) = canvas.text_size(motion_text(moving), scale);
    let (w, h) = (tw as i64 + 2 * pad, th as i64 + 2 * pad);
    LabelRect {
        x0: canvas.width as i64 - w,
        y0: canvas.height as i64 - h,
        x1: canvas.width as i64,
        y1: canvas.height as i64,
    }
}

/// Draws `text` (a timestamp) in white on black at the bottom-left corner.
pub fn draw_timestamp(canvas: &mut Canvas<'_>, text: &str) {
    let scale = label_scale(canvas.width, canvas.height);
    let pad = 2 * scale;
    let r = timestamp_rect(canvas, text);
    let y = clamp_i32(r.y0);
    canvas.fill_rect(0, y, (r.x1 - r.x0) as u32, (r.y1 - r.y0) as u32, [0, 0, 0]);
    canvas.draw_text(pad as i32, y.saturating_add(pad as i32), text, [255, 255, 255], None, scale);
}

/// Where [`draw_timestamp`] would put `text`: its strip at the bottom-left corner.
pub fn timestamp_rect(canvas: &Canvas<'_>, text: &str) -> LabelRect {
    let scale = label_scale(canvas.width, canvas.height);
    let pad = 2 * scale as i64;
    let (tw, th) = canvas.text_size(text, scale);
    let y0 = canvas.height as i64 - th as i64 - 2 * pad;
    LabelRect { x0: 0, y0, x1: tw as i64 + 2 * pad, y1: canvas.height as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_motion_state_is_labelled_bottom_right_and_its_region_outlined() {
        let mut img = image::RgbImage::new(200, 100);
        let mut canvas = Canvas::from_image(&mut img);
        let region = PixelBox { x0: 20.0, y0: 10.0, x1: 60.0, y1: 40.0 };
        draw_motion(&mut canvas, true, Some(&region));
        let r = motion_rect(&canvas, true);
        assert_eq!((r.x1, r.y1), (200, 100));
        // The label's background in its corner, the outline on the region's edge, nothing inside it.
        assert_eq!(canvas.pixel(199, 99), Some(MOTION_COLOR));
        assert_eq!(canvas.pixel(20, 20), Some(MOTION_COLOR));
        assert_eq!(canvas.pixel(40, 25), Some([0, 0, 0]));
        draw_motion(&mut canvas, false, None);
        assert_eq!(canvas.pixel(199, 99), Some(STILL_COLOR));
        assert!(motion_rect(&canvas, false).x0 > r.x0, "\"still\" is shorter than \"motion\"");
    }

    const BLACK: [u8; 3] = [0, 0, 0];
    const RED: [u8; 3] = [255, 0, 0];

    fn pb(x0: f32, y0: f32, x1: f32, y1: f32) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    /// Pixels of `img` that differ from black.
    fn changed(img: &image::RgbImage) -> Vec<(u32, u32)> {
        img.enumerate_pixels().filter(|(_, _, p)| p.0 != BLACK).map(|(x, y, _)| (x, y)).collect()
    }

    #[test]
    fn new_checks_buffer_and_stride() {
        let mut buf = vec![0u8; 10 * 3 * 4];
        assert!(Canvas::new(&mut buf, 10, 4, 30).is_ok());
        assert!(matches!(Canvas::new(&mut buf, 10, 4, 29), Err(DrawError::StrideTooSmall { .. })));
        assert!(matches!(Canvas::new(&mut buf, 10, 5, 30), Err(DrawError::BufferTooSmall { .. })));
        // The last row needs no padding after it.
        let mut buf = vec![0u8; 32 * 3 + 30];
        assert!(Canvas::new(&mut buf, 10, 4, 32).is_ok());
    }

    #[test]
    fn fill_rect_changes_exactly_the_rect() {
        let mut img = image::RgbImage::new(10, 8);
        Canvas::from_image(&mut img).fill_rect(2, 3, 4, 2, RED);
        let expected: Vec<(u32, u32)> = (3..5).flat_map(|y| (2..6).map(move |x| (x, y))).collect();
        let mut got = changed(&img);
        got.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(got, expected);
        assert_eq!(img.get_pixel(2, 3).0, RED);
    }

    #[test]
    fn box_outline_leaves_inside_and_outside_alone() {
        let mut img = image::RgbImage::new(20, 20);
        Canvas::from_image(&mut img).draw_box(&pb(4.0, 5.0, 14.0, 15.0), RED, 1);
        for (x, y, p) in img.enumerate_pixels() {
            let on_edge = (4..14).contains(&x) && (5..15).contains(&y) && (x == 4 || x == 13 || y == 5 || y == 14);
            assert_eq!(p.0 == RED, on_edge, "pixel ({x}, {y})");
        }
    }

    #[test]
    fn thick_box_grows_inward() {
        let mut img = image::RgbImage::new(20, 20);
        Canvas::from_image(&mut img).draw_box(&pb(0.0, 0.0, 20.0, 20.0), RED, 3);
        assert_eq!(img.get_pixel(0, 0).0, RED);
        assert_eq!(img.get_pixel(19, 19).0, RED);
        assert_eq!(img.get_pixel(2, 10).0, RED);
        assert_eq!(img.get_pixel(3, 10).0, BLACK);
        assert_eq!(img.get_pixel(16, 10).0, BLACK);
        assert_eq!(img.get_pixel(17, 10).0, RED);
    }

    #[test]
    fn box_is_clipped_at_the_edges() {
        let mut img = image::RgbImage::new(16, 16);
        let mut canvas = Canvas::from_image(&mut img);
        // Top and left edges are off the canvas; the bottom and right edges show.
        canvas.draw_box(&pb(-5.0, -5.0, 10.0, 10.0), RED, 1);
        assert_eq!(img.get_pixel(0, 9).0, RED);
        assert_eq!(img.get_pixel(9, 0).0, RED);
        assert_eq!(img.get_pixel(0, 0).0, BLACK);
        assert_eq!(img.get_pixel(10, 9).0, BLACK);
        assert_eq!(changed(&img).len(), 10 + 10 - 1);
    }

    #[test]
    fn boxes_outside_or_broken_draw_nothing() {
        let mut img = image::RgbImage::new(16, 16);
        let mut canvas = Canvas::from_image(&mut img);
        canvas.draw_box(&pb(20.0, 20.0, 30.0, 30.0), RED, 2);
        canvas.draw_box(&pb(-30.0, 2.0, -20.0, 8.0), RED, 2);
        canvas.draw_box(&pb(f32::NAN, 0.0, 5.0, 5.0), RED, 2);
        canvas.draw_box(&pb(f32::NEG_INFINITY, 0.0, f32::INFINITY, 5.0), RED, 2);
        canvas.draw_label(&pb(f32::NAN, 0.0, 5.0, 5.0), "x", RED);
        assert!(changed(&img).is_empty());
        // Huge but finite boxes are clipped, not overflowed.
        Canvas::from_image(&mut img).draw_box(&pb(-1e30, -1e30, 1e30, 1e30), RED, 2);
        assert!(changed(&img).is_empty());
    }

    #[test]
    fn stride_padding_is_never_touched() {
        let (w, h, stride) = (6u32, 5u32, 6 * 3 + 5);
        let mut buf = vec![7u8; stride * h as usize];
        let mut canvas = Canvas::new(&mut buf, w, h, stride).unwrap();
        canvas.fill_rect(-3, -3, 100, 100, RED);
        canvas.draw_text(0, 0, "WWW", [1, 2, 3], Some([4, 5, 6]), 1);
        for row in 0..h as usize {
            assert!(buf[row * stride + 18..(row + 1) * stride].iter().all(|&b| b == 7), "padding of row {row}");
        }
    }

    /// The pixels of a glyph drawn at scale 1 match its bitmap exactly.
    #[test]
    fn text_renders_the_glyph_bitmap() {
        let mut img = image::RgbImage::new(8, 8);
        let size = Canvas::from_image(&mut img).with_font(Font::bitmap()).draw_text(0, 0, "A", RED, None, 1);
        assert_eq!(size, (8, 8));
        let a = font8x8::legacy::BASIC_LEGACY['A' as usize];
        for (x, y, p) in img.enumerate_pixels() {
            assert_eq!(p.0 == RED, a[y as usize] & (1 << x) != 0, "pixel ({x}, {y})");
        }
        // 'A' has its crossbar on row 4: pixels 0..=5 (0x3F).
        assert_eq!(a[4], 0x3F);
    }

    #[test]
    fn text_scales_and_fills_background() {
        let mut img = image::RgbImage::new(20, 20);
        let bg = [0, 0, 90];
        let size = Canvas::from_image(&mut img).with_font(Font::bitmap()).draw_text(1, 1, "A", RED, Some(bg), 2);
        assert_eq!(size, (16, 16));
        let a = font8x8::legacy::BASIC_LEGACY['A' as usize];
        for (x, y, p) in img.enumerate_pixels() {
            let inside = (1..17).contains(&x) && (1..17).contains(&y);
            let expected = if !inside {
                BLACK
            } else if a[((y - 1) / 2) as usize] & (1 << ((x - 1) / 2)) != 0 {
                RED
            } else {
                bg
            };
            assert_eq!(p.0, expected, "pixel ({x}, {y})");
        }
    }

    #[test]
    fn text_is_clipped_and_unknown_chars_are_question_marks() {
        let mut a = image::RgbImage::new(12, 6);
        Canvas::from_image(&mut a).with_font(Font::bitmap()).draw_text(-4, -2, "é€AB", RED, None, 1);
        let mut b = image::RgbImage::new(12, 6);
        Canvas::from_image(&mut b).with_font(Font::bitmap()).draw_text(-4, -2, "??AB", RED, None, 1);
        assert_eq!(a, b);
        assert!(!changed(&a).is_empty());
        // Far off-canvas text draws nothing.
        let mut c = image::RgbImage::new(12, 6);
        Canvas::from_image(&mut c).with_font(Font::bitmap()).draw_text(i32::MIN, i32::MAX, "AB", RED, Some(RED), 3);
        Canvas::from_image(&mut c).with_font(Font::bitmap()).draw_text(50, 0, "AB", RED, Some(RED), 3);
        assert!(changed(&c).is_empty());
    }

    #[test]
    fn label_goes_above_the_box_or_inside_at_the_top() {
        let mut img = image::RgbImage::new(100, 100);
        Canvas::from_image(&mut img).with_font(Font::bitmap()).draw_label(&pb(20.0, 50.0, 80.0, 90.0), "ab", RED);
        let ys: Vec<u32> = changed(&img).iter().map(|&(_, y)| y).collect();
        assert!(ys.iter().all(|&y| y < 50), "label above the box");
        assert_eq!(*ys.iter().max().unwrap(), 49);

        let mut img = image::RgbImage::new(100, 100);
        Canvas::from_image(&mut img).with_font(Font::bitmap()).draw_label(&pb(20.0, 0.0, 80.0, 90.0), "ab", RED);
        let ys: Vec<u32> = changed(&img).iter().map(|&(_, y)| y).collect();
        assert_eq!(*ys.iter().min().unwrap(), 0, "label inside the box, at its top");
        assert!(ys.iter().all(|&y| y < 12));
    }

    #[test]
    fn label_is_shifted_to_stay_on_the_canvas() {
        let mut img = image::RgbImage::new(100, 100);
        Canvas::from_image(&mut img).with_font(Font::bitmap()).draw_label(&pb(95.0, 50.0, 100.0, 60.0), "abcd", RED);
        let xs: Vec<u32> = changed(&img).iter().map(|&(x, _)| x).collect();
        // 4 glyphs + 1 pixel of padding on each side.
        assert_eq!(*xs.iter().min().unwrap(), 100 - 34);
        assert_eq!(*xs.iter().max().unwrap(), 99);
    }

    /// Boxes of different queries on the same object: each label stays whole, none covers another.
    #[test]
    fn labels_of_coinciding_boxes_never_hide_one_another() {
        let labels: Vec<String> = ["a cat", "a small animal", "a pet"].iter().map(|s| s.to_string()).collect();
        let (w, h) = (220, 180);
        let b = pb(40.0, 60.0, 160.0, 130.0);
        let dets: Vec<Detection> =
            (0..3).map(|q| Detection { query: q, score: 0.5 + q as f32 / 10.0, bbox: b }).collect();
        let mut all = image::RgbImage::new(w, h);
        annotate_detections(&mut Canvas::from_image(&mut all), &dets, &labels);
        // Each label drawn alone where it went: the whole picture shows exactly that, so nothing covers it.
        let mut placer = LabelPlacer::new();
        for (q, d) in dets.iter().enumerate() {
            let mut alone = image::RgbImage::new(w, h);
            let text = format!("{} {:.2}", labels[q], d.score);
            Canvas::from_image(&mut alone).draw_label_avoiding(&d.bbox, &text, color_for(q), &mut placer);
            let r = *placer.placed().last().unwrap();
            assert!(r.x0 >= 0 && r.y0 >= 0 && r.x1 <= w as i64 && r.y1 <= h as i64, "{r:?}");
            for y in r.y0..r.y1 {
                for x in r.x0..r.x1 {
                    let (x, y) = (x as u32, y as u32);
                    assert_eq!(all.get_pixel(x, y), alone.get_pixel(x, y), "label {q} at ({x},{y})");
                }
            }
        }
        let rects = placer.placed();
        for i in 0..rects.len() {
            for j in 0..i {
                assert!(!rects[i].overlaps(&rects[j]), "{:?} and {:?}", rects[i], rects[j]);
            }
        }
    }

    /// A box at the top of a picture with the test-model banner: its label is not under the banner.
    #[test]
    fn labels_keep_off_a_reserved_banner() {
        let text = "test model: boxes are not meaningful";
        let det = Detection { query: 0, score: 0.5, bbox: pb(40.0, 10.0, 200.0, 120.0) };
        let labels = vec!["a cat".to_string()];
        let mut img = image::RgbImage::new(320, 240);
        let mut canvas = Canvas::from_image(&mut img);
        let banner = banner_rect(&canvas, text);
        let mut placer = LabelPlacer::new();
        placer.reserve(banner);
        annotate_detections_with(&mut canvas, &[det], &labels, &mut placer);
        let label = placer.placed()[1];
        assert!(label.y0 >= banner.y1, "{label:?} under {banner:?}");
        assert_eq!(draw_banner(&mut canvas, text) as i64, banner.y1);
        // The label is whole after the banner is drawn.
        let color = color_for(0);
        assert!((label.x0..label.x1).all(|x| img.get_pixel(x as u32, label.y0 as u32).0 == color));

        // The timestamp's strip is where it is drawn.
        let mut img = image::RgbImage::from_pixel(320, 240, image::Rgb([255, 255, 255]));
        let mut canvas = Canvas::from_image(&mut img);
        let r = timestamp_rect(&canvas, "cam #3 t=1.00s");
        draw_timestamp(&mut canvas, "cam #3 t=1.00s");
        let dark = |x: i64, y: i64| img.get_pixel(x as u32, y as u32).0 == [0, 0, 0];
        assert!(dark(r.x0, r.y0) && dark(r.x1 - 1, r.y1 - 1), "{r:?}");
        assert!(!dark(r.x1, r.y1 - 1) && !dark(r.x0, r.y0 - 1), "{r:?}");
    }

    #[test]
    fn the_placer_tries_above_inside_then_below() {
        let mut p = LabelPlacer::new();
        let canvas = (200, 200);
        let b = (20, 50, 120, 150);
        let first = p.place(b, (40, 10), canvas);
        assert_eq!(first, LabelRect { x0: 20, y0: 40, x1: 60, y1: 50 }, "above");
        assert_eq!(p.place(b, (40, 10), canvas).y0, 50, "inside the box, at its top");
        assert_eq!(p.place(b, (40, 10), canvas).y0, 150, "below the box");
        assert_eq!(p.place(b, (40, 10), canvas).y0, 30, "above the first");
        // A box at the top: above is off the canvas, so inside from its top, then below, then inside under the
        // first.
        let mut p = LabelPlacer::new();
        let top = (20, 0, 120, 100);
        assert_eq!(p.place(top, (40, 10), canvas).y0, 0);
        assert_eq!(p.place(top, (40, 10), canvas).y0, 100);
        assert_eq!(p.place(top, (40, 10), canvas).y0, 10);
        // No free place at all: where the first round put it.
        let mut p = LabelPlacer::new();
        let tiny = (0, 0, 10, 10);
        assert_eq!(p.place(tiny, (10, 10), (10, 10)).y0, 0);
        assert_eq!(p.place(tiny, (10, 10), (10, 10)).y0, 0);
        assert!(p.placed().windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn palette_colours_are_distinct_and_repeat() {
        for i in 0..PALETTE.len() {
            for j in 0..i {
                assert_ne!(color_for(i), color_for(j));
            }
        }
        assert_eq!(color_for(3), color_for(3 + PALETTE.len()));
    }

    struct Tracked(Detection, u64);

    impl Annotated for Tracked {
        fn bbox(&self) -> PixelBox {
            self.0.bbox
        }
        fn query(&self) -> usize {
            self.0.query
        }
        fn score(&self) -> f32 {
            self.0.score
        }
        fn track_id(&self) -> Option<u64> {
            Some(self.1)
        }
    }

    #[test]
    fn annotate_draws_box_and_label_in_the_query_colour() {
        let det = Detection { query: 1, score: 0.4242, bbox: pb(40.0, 60.0, 120.0, 110.0) };
        let labels = vec!["cat".to_string(), "a dog".to_string()];
        let mut img = image::RgbImage::new(200, 150);
        annotate_detections(&mut Canvas::from_image(&mut img).with_font(Font::bitmap()), &[det], &labels);
        let color = color_for(1);
        assert_eq!(img.get_pixel(40, 90).0, color, "left edge");
        assert_eq!(img.get_pixel(119, 90).0, color, "right edge");
        assert_eq!(img.get_pixel(80, 90).0, BLACK, "inside");
        assert_eq!(img.get_pixel(150, 90).0, BLACK, "outside");
        // The label "a dog 0.42" (10 glyphs) sits on a filled strip above the box.
        assert_eq!(img.get_pixel(40, 59).0, color);
        assert_eq!(img.get_pixel(40 + 10 * 8 + 1, 59).0, color);
        assert_eq!(img.get_pixel(40 + 10 * 8 + 2, 59).0, BLACK);

        // With a track id the label is longer: "a dog 0.42 #7".
        let mut img2 = image::RgbImage::new(200, 150);
        annotate_detections(&mut Canvas::from_image(&mut img2).with_font(Font::bitmap()), &[Tracked(det, 7)], &labels);
        assert_eq!(img2.get_pixel(40 + 13 * 8 + 1, 59).0, color);
        assert_eq!(img2.get_pixel(40 + 13 * 8 + 2, 59).0, BLACK);

        // A query without a label is named by its index, and nothing panics.
        let det = Detection { query: 9, ..det };
        annotate_detections(&mut Canvas::from_image(&mut img).with_font(Font::bitmap()), &[det], &labels);
    }

    #[test]
    fn label_text_is_cut_at_a_character() {
        let mut t = LabelText::new();
        write!(t, "{}", "é".repeat(200)).unwrap();
        assert_eq!(t.as_str().len(), LabelText::CAPACITY);
        assert!(t.as_str().chars().all(|c| c == 'é'));
        let mut t = LabelText::new();
        write!(t, "a{}", "☕".repeat(100)).unwrap();
        // 1 + 63 * 3 bytes: a 64th cup would not fit whole.
        assert_eq!(t.as_str().len(), 190);
    }

    /// The label "un café ☕" is drawn with DejaVu Sans's glyphs: "é" is not "e" nor "?", and "☕" is a cup, not the
    /// box of a missing glyph.
    #[test]
    fn unicode_text_is_drawn_with_its_glyphs() {
        let font = Font::system();
        assert!(!font.is_bitmap(), "DejaVu Sans is not installed: apt install fonts-dejavu-core");
        let draw = |text: &str| {
            let mut img = image::RgbImage::new(60, 40);
            Canvas::from_image(&mut img).draw_text(4, 4, text, [255, 255, 255], None, 2);
            img
        };
        let (e_acute, e, question) = (draw("é"), draw("e"), draw("?"));
        assert!(!changed(&e_acute).is_empty());
        assert_ne!(e_acute, e);
        assert_ne!(e_acute, question);
        // The accent is above the letter: below it, "é" is "e" (DejaVu builds it from "e" and an acute).
        let top_of_e = changed(&e).iter().map(|&(_, y)| y).min().unwrap();
        for (x, y, p) in e_acute.enumerate_pixels() {
            if y >= top_of_e {
                assert_eq!(p, e.get_pixel(x, y), "({x},{y})");
            }
        }
        assert!(changed(&e_acute).iter().any(|&(_, y)| y < top_of_e), "the accent");
        let cup = draw("☕");
        let missing = draw("\u{10FFFD}");
        assert!(!changed(&cup).is_empty() && cup != missing && cup != question);
        // Text with its size from the font: wider for wider text, one line high.
        let canvas_w = |t: &str| Canvas::from_image(&mut image::RgbImage::new(1, 1)).text_size(t, 1);
        assert!(canvas_w("un café ☕").0 > canvas_w("un café").0);
        assert_eq!(canvas_w("un café ☕").1, font.line_height(1));
    }

    /// Text is anti-aliased: edge pixels are mixed with what is under them, on RGB as on I420's luma.
    #[test]
    fn outline_text_is_blended_over_the_picture() {
        let mut img = image::RgbImage::from_pixel(40, 30, image::Rgb([0, 0, 200]));
        Canvas::from_image(&mut img).draw_text(2, 2, "Ag", [255, 255, 255], None, 2);
        let mixed = img.pixels().filter(|p| p.0 != [0, 0, 200] && p.0 != [255, 255, 255]).count();
        let full = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert!(mixed > 10 && full > 10, "{mixed} mixed, {full} full");
        // Mixed pixels lie between the two colours.
        assert!(img.pixels().all(|p| p.0[0] == p.0[1] && p.0[2] >= 200));
    }

    #[test]
    fn banner_spans_the_top_and_timestamp_the_bottom_left() {
        let mut img = image::RgbImage::new(320, 240);
        let h = draw_banner(
            &mut Canvas::from_image(&mut img).with_font(Font::bitmap()),
            "test model: boxes are not meaningful",
        );
        // 36 glyphs fit at scale 1 only (36 * 16 + 12 > 320).
        assert_eq!(h, 8 + 6);
        assert_eq!(img.get_pixel(0, 0).0, BANNER_COLOR);
        assert_eq!(img.get_pixel(319, h - 1).0, BANNER_COLOR);
        assert_eq!(img.get_pixel(160, h).0, BLACK);
        assert!((0..320).any(|x| img.get_pixel(x, 5).0 == [255, 255, 255]), "text is drawn");

        draw_timestamp(&mut Canvas::from_image(&mut img).with_font(Font::bitmap()), "00:01.5");
        assert!((0..60).any(|x| img.get_pixel(x, 236).0 == [255, 255, 255]), "timestamp text is drawn");
        assert_eq!(img.get_pixel(300, 236).0, BLACK);
        assert_eq!(img.get_pixel(2, 200).0, BLACK);
    }

    /// The same drawing on I420 looks like it does on RGB: every pixel within the colour conversion's
    /// rounding, and chroma never written outside the 2x2 blocks the shapes touch.
    #[test]
    fn i420_drawing_matches_rgb_drawing() {
        gstreamer::init().expect("GStreamer initialises");
        let (w, h) = (200u32, 150u32);
        let det = Detection { query: 1, score: 0.4242, bbox: pb(41.0, 61.0, 121.0, 111.0) };
        let labels = vec!["cat".to_string(), "a dog".to_string()];
        let mut img = image::RgbImage::new(w, h);
        let mut pic = Picture::black(PixelFormat::I420, w, h).expect("picture");
        for canvas in [&mut Canvas::from_image(&mut img), &mut Canvas::from_picture(&mut pic)] {
            annotate_detections(canvas, &[det], &labels);
            draw_timestamp(canvas, "cam #3 t=1.00s");
        }
        let m = YuvMatrix::for_height(h);
        let l = *pic.layout();
        let mut text_pixels = 0;
        for y in 0..h {
            for x in 0..w {
                let want = img.get_pixel(x, y).0;
                // Luma is exact to rounding everywhere, text included.
                let luma = pic.data()[y as usize * l.strides[0] + x as usize];
                assert!((luma as i32 - m.to_yuv(want)[0] as i32).abs() <= 1, "({x},{y}) luma {luma} for {want:?}");
                if want.iter().all(|&c| c >= 200) {
                    text_pixels += 1;
                }
                // Away from edges (chroma covers 2x2 pixels), the colour is the RGB drawing's.
                let uniform = (x.saturating_sub(2)..(x + 3).min(w))
                    .all(|a| (y.saturating_sub(2)..(y + 3).min(h)).all(|b| img.get_pixel(a, b).0 == want));
                if uniform {
                    let got = Canvas::from_picture(&mut pic).pixel(x, y).expect("inside");
                    for i in 0..3 {
                        assert!((got[i] as i32 - want[i] as i32).abs() <= 4, "({x},{y}): {got:?} vs {want:?}");
                    }
                }
            }
        }
        assert!(text_pixels > 50, "the label and timestamp text are drawn ({text_pixels} pixels)");
        let canvas = Canvas::from_picture(&mut pic);
        // Far from anything drawn, the frame is untouched black.
        assert_eq!(canvas.pixel(180, 20), Some([0, 0, 0]));
    }

    #[test]
    fn i420_box_on_odd_edges_stays_inside_its_chroma_blocks() {
        gstreamer::init().expect("GStreamer initialises");
        let mut pic = Picture::black(PixelFormat::I420, 16, 16).expect("picture");
        Canvas::from_picture(&mut pic).fill_rect(3, 5, 3, 3, [255, 0, 0]);
        let l = *pic.layout();
        let data = pic.data();
        let red = YuvMatrix::Bt601.to_yuv([255, 0, 0]);
        for y in 0..16usize {
            for x in 0..16usize {
                let inside = (3..6).contains(&x) && (5..8).contains(&y);
                assert_eq!(data[y * l.strides[0] + x], if inside { red[0] } else { 16 }, "Y ({x},{y})");
            }
        }
        for cy in 0..8usize {
            for cx in 0..8usize {
                let touched = (1..3).contains(&cx) && (2..4).contains(&cy);
                let u = data[l.offsets[1] + cy * l.strides[1] + cx];
                let v = data[l.offsets[2] + cy * l.strides[2] + cx];
                assert_eq!((u, v), if touched { (red[1], red[2]) } else { (128, 128) }, "UV ({cx},{cy})");
            }
        }
    }
}
