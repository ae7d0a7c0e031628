//! The crop region of an event: the union of its boxes plus the margin, widened, moved inside the frame and made
//! even (see the steps in the [module documentation](super)).

use serde::{Deserialize, Serialize};

use super::{DEFAULT_CROP_MARGIN, EventBoxes, EvidenceSettings, MAX_ASPECT, MIN_REGION_PX};
use crate::geom::PixelBox;

/// Where an event is cropped from the full frame, and the size it is scaled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropRegion {
    /// Left edge in pixels of the full frame; even.
    pub x: u32,
    /// Top edge in pixels of the full frame; even.
    pub y: u32,
    /// Width in pixels of the full frame; even, at least 2.
    pub width: u32,
    /// Height in pixels of the full frame; even, at least 2.
    pub height: u32,
    /// Width of the output (the crop scaled up); even.
    pub out_width: u32,
    /// Height of the output; even.
    pub out_height: u32,
}

impl CropRegion {
    /// The one region of an event's crop clip and crop snapshot: [`CropRegion::around`] the boxes of its frames
    /// and its peak's box, in a frame of `frame_width` x `frame_height` pixels.
    pub fn of_event(boxes: &EventBoxes, frame_width: u32, frame_height: u32, s: &EvidenceSettings) -> Option<Self> {
        let all = boxes.frames.iter().chain([&boxes.peak]).map(|b| b.bbox);
        Self::around(all, frame_width, frame_height, s)
    }

    /// The region for `boxes` in a frame of `frame_width` x `frame_height` pixels (see the module documentation),
    /// or `None` when no box has four finite corners or the frame is less than 2x2 pixels.
    pub fn around(
        boxes: impl IntoIterator<Item = PixelBox>,
        frame_width: u32,
        frame_height: u32,
        s: &EvidenceSettings,
    ) -> Option<CropRegion> {
        // Even frame sizes: an odd last column or row is never part of the crop.
        let (fw, fh) = (frame_width & !1, frame_height & !1);
        if fw < 2 || fh < 2 {
            return None;
        }
        let finite = |b: &PixelBox| b.x0.is_finite() && b.y0.is_finite() && b.x1.is_finite() && b.y1.is_finite();
        let union = boxes
            .into_iter()
            .filter(finite)
            .map(|b| PixelBox { x0: b.x0.min(b.x1), y0: b.y0.min(b.y1), x1: b.x0.max(b.x1), y1: b.y0.max(b.y1) })
            .reduce(|a, b| a.union(&b))?
            .clip(fw, fh);
        let margin = if s.crop_margin.is_finite() { s.crop_margin.max(0.0) } else { DEFAULT_CROP_MARGIN };
        let (fwf, fhf) = (fw as f32, fh as f32);
        let (cx, cy) = ((union.x0 + union.x1) / 2.0, (union.y0 + union.y1) / 2.0);
        let mut w = union.width() * (1.0 + 2.0 * margin);
        let mut h = union.height() * (1.0 + 2.0 * margin);
        w = w.max(MIN_REGION_PX as f32);
        h = h.max(MIN_REGION_PX as f32);
        w = w.max(h / MAX_ASPECT);
        h = h.max(w / MAX_ASPECT);
        let (x0, x1) = place(cx, w.min(fwf), fwf);
        let (y0, y1) = place(cy, h.min(fhf), fhf);
        // Outwards to even pixels; fw and fh are even, so the clamp keeps them even.
        let floor_even = |v: f32| (v.max(0.0).floor() as u32) & !1;
        let ceil_even = |v: f32, max: u32| ((v.ceil().max(0.0) as u32).saturating_add(1) & !1).min(max);
        let (x, y) = (floor_even(x0), floor_even(y0));
        let (width, height) = (ceil_even(x1, fw) - x, ceil_even(y1, fh) - y);
        // At least 2x2: the frame is, and a region of less is grown on the side that has room.
        let (x, width) = at_least_two(x, width, fw);
        let (y, height) = at_least_two(y, height, fh);
        let (out_width, out_height) = scaled_up(width, height, s.crop_min_size);
        Some(CropRegion { x, y, width, height, out_width, out_height })
    }

    /// The region as a box in pixels of the full frame.
    pub fn as_box(&self) -> PixelBox {
        PixelBox {
            x0: self.x as f32,
            y0: self.y as f32,
            x1: (self.x + self.width) as f32,
            y1: (self.y + self.height) as f32,
        }
    }

    /// Whether `b` lies wholly inside the region.
    pub fn contains(&self, b: &PixelBox) -> bool {
        let r = self.as_box();
        b.x0 >= r.x0 && b.y0 >= r.y0 && b.x1 <= r.x1 && b.y1 <= r.y1
    }
}

/// An interval of length `len` (at most `max`) centred on `centre` where possible, moved to lie in `[0, max]`.
fn place(centre: f32, len: f32, max: f32) -> (f32, f32) {
    let start = (centre - len / 2.0).clamp(0.0, (max - len).max(0.0));
    (start, (start + len).min(max))
}

/// `(start, len)` grown to at least 2 inside `[0, max]` (`max` is even and at least 2).
fn at_least_two(start: u32, len: u32, max: u32) -> (u32, u32) {
    if len >= 2 { (start, len) } else { (start.min(max - 2), 2) }
}

/// `width` x `height` scaled up, keeping the aspect ratio, until the shorter side is at least `min_size`;
/// both rounded up to even.
fn scaled_up(width: u32, height: u32, min_size: u32) -> (u32, u32) {
    let short = width.min(height).max(1) as u64;
    let min = min_size as u64;
    if short >= min {
        return (width, height);
    }
    // Integer arithmetic, so that the shorter side is exactly `min_size` (rounded up to even), never one more.
    let up = |v: u32| (v as u64 * min).div_ceil(short);
    let even = |v: u64| (v.saturating_add(1) & !1).min(u32::MAX as u64 - 1) as u32;
    (even(up(width)), even(up(height)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(x0: f32, y0: f32, x1: f32, y1: f32) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    fn region(boxes: &[PixelBox], w: u32, h: u32, s: &EvidenceSettings) -> CropRegion {
        CropRegion::around(boxes.iter().copied(), w, h, s).unwrap()
    }

    /// Even offset and size, inside the frame, holding every box (clipped to the frame), output even and at
    /// least the minimum on the shorter side.
    fn check(r: &CropRegion, boxes: &[PixelBox], w: u32, h: u32, min: u32) {
        for v in [r.x, r.y, r.width, r.height, r.out_width, r.out_height] {
            assert_eq!(v % 2, 0, "{r:?}");
        }
        assert!(r.width >= 2 && r.height >= 2, "{r:?}");
        assert!(r.x + r.width <= w && r.y + r.height <= h, "{r:?} in {w}x{h}");
        for b in boxes {
            assert!(r.contains(&b.clip(w & !1, h & !1)), "{r:?} holds {b:?}");
        }
        assert!(r.out_width.min(r.out_height) >= min, "{r:?}");
        assert!(r.out_width >= r.width && r.out_height >= r.height, "{r:?}");
    }

    #[test]
    fn union_plus_margin_centred_and_even() {
        let s = EvidenceSettings::default();
        let boxes = [pb(101.0, 51.0, 151.0, 151.0), pb(121.0, 71.0, 201.0, 131.0)];
        let r = region(&boxes, 640, 272, &s);
        // Union 101..201 x 51..151 (100 x 100), plus 20 % on each side: 81..221 x 31..171.
        assert_eq!((r.x, r.y, r.width, r.height), (80, 30, 142, 142), "{r:?}");
        // 142 < 320: scaled up to 320 x 320.
        assert_eq!((r.out_width, r.out_height), (320, 320));
        check(&r, &boxes, 640, 272, 320);
    }

    #[test]
    fn region_is_moved_inside_the_frame_not_cut() {
        let s = EvidenceSettings::default();
        let boxes = [pb(600.0, 200.0, 640.0, 272.0)];
        let r = region(&boxes, 640, 272, &s);
        // 40 x 72 grows to 56 x 100.8 (margin), moved left and up to end at the frame's edge.
        assert_eq!((r.x + r.width, r.y + r.height), (640, 272), "{r:?}");
        assert_eq!(r.width, 56);
        check(&r, &boxes, 640, 272, 320);
    }

    #[test]
    fn region_larger_than_the_frame_is_the_frame() {
        let s = EvidenceSettings::default();
        let boxes = [pb(-50.0, -20.0, 700.0, 300.0)];
        let r = region(&boxes, 640, 272, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (0, 0, 640, 272, 754, 320));
        check(&r, &boxes, 640, 272, 320);
    }

    /// A frame smaller than `crop_min_size`: cropped to at most itself and scaled up.
    #[test]
    fn a_frame_smaller_than_the_minimum_is_scaled_up() {
        let s = EvidenceSettings::default();
        let boxes = [pb(0.0, 0.0, 200.0, 100.0)];
        let r = region(&boxes, 200, 100, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (0, 0, 200, 100, 640, 320));
        // Odd frame sizes: the last column and row are left out.
        let r = region(&[pb(0.0, 0.0, 201.0, 101.0)], 201, 101, &s);
        assert_eq!((r.width, r.height), (200, 100));
        check(&r, &[], 201, 101, 320);
        // The smallest frame that can be cropped.
        let r = region(&[pb(0.0, 0.0, 1.0, 1.0)], 3, 2, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (0, 0, 2, 2, 320, 320));
        assert_eq!(CropRegion::around([pb(0.0, 0.0, 1.0, 1.0)], 1, 100, &s), None);
        assert_eq!(CropRegion::around([pb(0.0, 0.0, 1.0, 1.0)], 100, 1, &s), None);
    }

    #[test]
    fn thin_and_tiny_boxes_are_widened() {
        let s = EvidenceSettings::default();
        // A 2 x 200 pole: 2.8 wide with the margin, widened to 280 / 4 = 70.
        let boxes = [pb(300.0, 36.0, 302.0, 236.0)];
        let r = region(&boxes, 640, 272, &s);
        assert!(r.width >= 70 && r.width <= 72, "{r:?}");
        assert!(r.height as f32 <= MAX_ASPECT * r.width as f32 + 2.0, "{r:?}");
        check(&r, &boxes, 640, 272, 320);
        // A point: the minimum region.
        let boxes = [pb(10.0, 10.0, 10.0, 10.0)];
        let r = region(&boxes, 640, 272, &s);
        assert!(r.width >= MIN_REGION_PX && r.width <= MIN_REGION_PX + 2, "{r:?}");
        check(&r, &boxes, 640, 272, 320);
    }

    #[test]
    fn broken_boxes_are_ignored_and_none_gives_none() {
        let s = EvidenceSettings::default();
        let good = pb(100.0, 100.0, 140.0, 140.0);
        let r = region(&[pb(f32::NAN, 0.0, 1.0, 1.0), good, pb(0.0, f32::INFINITY, 1.0, 1.0)], 640, 272, &s);
        assert_eq!(r, region(&[good], 640, 272, &s));
        // Corners given the wrong way round are put right.
        assert_eq!(region(&[pb(140.0, 140.0, 100.0, 100.0)], 640, 272, &s), r);
        assert_eq!(CropRegion::around([], 640, 272, &s), None);
        assert_eq!(CropRegion::around([pb(f32::NAN, 0.0, 1.0, 1.0)], 640, 272, &s), None);
    }

    #[test]
    fn margin_and_minimum_size_are_settings() {
        let boxes = [pb(100.0, 100.0, 200.0, 200.0)];
        let s = EvidenceSettings { crop_margin: 0.0, crop_min_size: 50, ..Default::default() };
        let r = region(&boxes, 640, 272, &s);
        assert_eq!((r.x, r.y, r.width, r.height, r.out_width, r.out_height), (100, 100, 100, 100, 100, 100));
        let s = EvidenceSettings { crop_margin: f32::NAN, crop_min_size: 301, ..Default::default() };
        let r = region(&boxes, 640, 272, &s);
        // A margin that is not a number is the default; 301 is rounded up to even.
        assert_eq!((r.width, r.out_width), (140, 302));
    }

    #[test]
    fn the_event_region_holds_every_frame_box_and_the_peak() {
        use super::super::FrameBox;
        let s = EvidenceSettings::default();
        let fb = |i: u64, b: PixelBox| FrameBox { frame: i, pts_s: i as f64 / 25.0, bbox: b, score: 0.5 };
        let frames = [fb(0, pb(100.0, 100.0, 140.0, 160.0)), fb(1, pb(120.0, 90.0, 170.0, 150.0))];
        // A peak that is one of the frames: the region of the frames.
        let r = CropRegion::of_event(&EventBoxes { frames: &frames, peak: frames[1] }, 640, 272, &s).unwrap();
        assert_eq!(r, region(&[frames[0].bbox, frames[1].bbox], 640, 272, &s));
        // A peak outside them (its frame was before the clip's boxes) is in the region too.
        let peak = fb(5, pb(300.0, 20.0, 340.0, 60.0));
        let r = CropRegion::of_event(&EventBoxes { frames: &frames, peak }, 640, 272, &s).unwrap();
        check(&r, &[frames[0].bbox, frames[1].bbox, peak.bbox], 640, 272, 320);
        // No frame boxes: the peak's.
        let r = CropRegion::of_event(&EventBoxes { frames: &[], peak }, 640, 272, &s).unwrap();
        assert_eq!(r, region(&[peak.bbox], 640, 272, &s));
    }

    #[test]
    fn scaling_up_keeps_the_aspect_and_hits_the_minimum() {
        assert_eq!(scaled_up(100, 50, 320), (640, 320));
        assert_eq!(scaled_up(142, 142, 320), (320, 320));
        assert_eq!(scaled_up(98, 142, 320), (320, 464));
        assert_eq!(scaled_up(400, 330, 320), (400, 330));
        assert_eq!(scaled_up(2, 2, 0), (2, 2));
    }
}
