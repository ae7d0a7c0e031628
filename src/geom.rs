//! Boxes and the coordinate spaces they live in.
//!
//! A model predicts boxes as `(cx, cy, w, h)` relative to its square input ([`ModelBox`]).
//! Users see boxes in pixels of the original image ([`PixelBox`]).
//! [`Transform`] records how preprocessing mapped the image into the model's input,
//! and [`Transform::to_pixels`] is the one conversion between the two spaces.

use serde::{Deserialize, Serialize};

/// A box predicted by the model: centre and size, each relative to the model's square input (0..1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelBox {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

/// A box in pixels of the original image: corners `(x0, y0)` and `(x1, y1)`, `x1 >= x0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(into = "[f32; 4]", from = "[f32; 4]")]
pub struct PixelBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl From<PixelBox> for [f32; 4] {
    fn from(b: PixelBox) -> Self {
        [b.x0, b.y0, b.x1, b.y1]
    }
}

impl From<[f32; 4]> for PixelBox {
    fn from(a: [f32; 4]) -> Self {
        PixelBox { x0: a[0], y0: a[1], x1: a[2], y1: a[3] }
    }
}

impl PixelBox {
    pub fn width(&self) -> f32 {
        (self.x1 - self.x0).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y1 - self.y0).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &PixelBox) -> f32 {
        let ix = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let iy = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// The box clipped to an image of `width` x `height` pixels.
    pub fn clip(&self, width: u32, height: u32) -> PixelBox {
        let (w, h) = (width as f32, height as f32);
        PixelBox {
            x0: self.x0.clamp(0.0, w),
            y0: self.y0.clamp(0.0, h),
            x1: self.x1.clamp(0.0, w),
            y1: self.y1.clamp(0.0, h),
        }
    }

    /// The smallest box holding both.
    pub fn union(&self, other: &PixelBox) -> PixelBox {
        PixelBox {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// How preprocessing placed the original image into the model's input.
///
/// transformers scales OWL-ViT boxes by (W, H), because the image was stretched to a square,
/// and OWLv2 boxes by max(W, H), because the image was padded at the bottom and right to a square first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Width of the original image in pixels.
    pub orig_width: u32,
    /// Height of the original image in pixels.
    pub orig_height: u32,
    /// Pixels of the original image per unit of relative model x.
    pub scale_x: f32,
    /// Pixels of the original image per unit of relative model y.
    pub scale_y: f32,
}

impl Transform {
    /// OWL-ViT: the image is stretched to the square input.
    pub fn stretch(orig_width: u32, orig_height: u32) -> Self {
        Transform { orig_width, orig_height, scale_x: orig_width as f32, scale_y: orig_height as f32 }
    }

    /// OWLv2: the image is padded at the bottom and right to a square of side max(W, H).
    pub fn pad_square(orig_width: u32, orig_height: u32) -> Self {
        let side = orig_width.max(orig_height) as f32;
        Transform { orig_width, orig_height, scale_x: side, scale_y: side }
    }

    /// The box in pixels of the original image, not clipped (as transformers returns it).
    pub fn to_pixels_unclipped(&self, b: &ModelBox) -> PixelBox {
        PixelBox {
            x0: (b.cx - 0.5 * b.w) * self.scale_x,
            y0: (b.cy - 0.5 * b.h) * self.scale_y,
            x1: (b.cx + 0.5 * b.w) * self.scale_x,
            y1: (b.cy + 0.5 * b.h) * self.scale_y,
        }
    }

    /// The box in pixels of the original image, clipped to it.
    pub fn to_pixels(&self, b: &ModelBox) -> PixelBox {
        self.to_pixels_unclipped(b).clip(self.orig_width, self.orig_height)
    }
}

/// How `GroundingDinoImageProcessor.resize` picks the size of a resized image (OWL always uses `Exact`). Shared by
/// preprocessing (`infer`) and by the video branch that scales frames the same way (`source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeRule {
    /// `{"height", "width"}`: exactly [`PreprocessorConfig::size`], aspect ratio not kept.
    Exact,
    /// `{"max_height", "max_width"}`: the largest size of the same aspect ratio that fits
    /// (`get_image_size_for_max_height_width`); the graphs lookout exports are made for this form.
    MaxHeightWidth { max_height: u32, max_width: u32 },
    /// `{"shortest_edge", "longest_edge"}`: the shorter side to `shortest_edge` unless the longer would then
    /// pass `longest_edge` (`get_size_with_aspect_ratio`); the published checkpoints' form (800 and 1333).
    ShortestEdge { shortest_edge: u32, longest_edge: u32 },
}

impl ResizeRule {
    /// The largest `(height, width)` the rule can give (for [`ResizeRule::Exact`], `exact`): what a batch of
    /// any images pads to at most, up to rounding.
    pub fn bound(&self, exact: (u32, u32)) -> (u32, u32) {
        match *self {
            ResizeRule::Exact => exact,
            ResizeRule::MaxHeightWidth { max_height, max_width } => (max_height, max_width),
            ResizeRule::ShortestEdge { longest_edge, .. } => (longest_edge, longest_edge),
        }
    }

    /// `(height, width)` of an image of `height` x `width` after resizing, with transformers' arithmetic
    /// (Python floats and `int()`, which truncates; `round()` rounds half to even). Each side is at least 1.
    pub fn output_hw(&self, exact: (u32, u32), height: u32, width: u32) -> (u32, u32) {
        let (h, w) = (height.max(1) as f64, width.max(1) as f64);
        let (oh, ow) = match *self {
            ResizeRule::Exact => return exact,
            ResizeRule::MaxHeightWidth { max_height, max_width } => {
                let scale = (max_height as f64 / h).min(max_width as f64 / w);
                ((h * scale) as u32, (w * scale) as u32)
            }
            ResizeRule::ShortestEdge { shortest_edge, longest_edge } => {
                let (min_side, max_side) = (h.min(w), h.max(w));
                let mut size = shortest_edge as f64;
                let mut raw_size = None;
                if max_side / min_side * size > longest_edge as f64 {
                    let raw = longest_edge as f64 * min_side / max_side;
                    raw_size = Some(raw);
                    size = round_half_even(raw);
                }
                if (h <= w && h == size) || (w <= h && w == size) {
                    (height, width)
                } else if w < h {
                    let oh = match raw_size {
                        Some(raw) => raw * h / w,
                        None => size * h / w,
                    };
                    (oh as u32, size as u32)
                } else {
                    let ow = match raw_size {
                        Some(raw) => raw * w / h,
                        None => size * w / h,
                    };
                    (size as u32, ow as u32)
                }
            }
        };
        (oh.max(1), ow.max(1))
    }
}

/// Python's `round()` of a float: to the nearest integer, halves to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }
}

/// One box found for one query, in pixels of the original image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index of the query in the query set that produced it.
    pub query: usize,
    /// Sigmoid of the model's logit, 0..1.
    pub score: f32,
    /// The box, clipped to the image.
    #[serde(rename = "box")]
    pub bbox: PixelBox,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_scales_by_width_and_height() {
        let t = Transform::stretch(200, 100);
        let b = t.to_pixels(&ModelBox { cx: 0.5, cy: 0.5, w: 0.5, h: 0.5 });
        assert_eq!(b, PixelBox { x0: 50.0, y0: 25.0, x1: 150.0, y1: 75.0 });
    }

    #[test]
    fn pad_square_scales_by_longest_side_and_clips() {
        let t = Transform::pad_square(200, 100);
        let m = ModelBox { cx: 0.5, cy: 0.5, w: 0.5, h: 0.5 };
        assert_eq!(t.to_pixels_unclipped(&m), PixelBox { x0: 50.0, y0: 50.0, x1: 150.0, y1: 150.0 });
        assert_eq!(t.to_pixels(&m), PixelBox { x0: 50.0, y0: 50.0, x1: 150.0, y1: 100.0 });
    }

    #[test]
    fn iou_of_half_overlap() {
        let a = PixelBox { x0: 0.0, y0: 0.0, x1: 2.0, y1: 2.0 };
        let b = PixelBox { x0: 1.0, y0: 0.0, x1: 3.0, y1: 2.0 };
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&PixelBox::default()), 0.0);
    }
}
