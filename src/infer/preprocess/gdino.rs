//! Grounding DINO's preprocessing, as `GroundingDinoImageProcessor` (transformers 4.57, the slow processor) does it:
//!
//! 1. resize the 8-bit RGB image with Pillow (`resample`, bilinear by default) to the size its [`ResizeRule`]
//!    gives (shortest edge 800 and longest at most 1333 for the published checkpoints; `max_height`/`max_width`
//!    for the graphs lookout exports at one fixed size);
//! 2. `u8 as f64 * rescale_factor` rounded to f32, then `(x - mean) / std` in f32 (ImageNet mean and std);
//! 3. pad bottom and right with 0.0 (after normalisation) to `pad_size`, or to the largest image of the batch;
//! 4. `pixel_mask`: 1 over the image, 0 over the padding (int64).
//!
//! The model predicts boxes relative to the image inside the padding (the pixel mask tells it where that is),
//! so boxes map back to the original picture by its own width and height ([`Transform::stretch`]), whatever the
//! padding: this is what `post_process_grounded_object_detection` does with `target_sizes`.
//!
//! [`Transform::stretch`]: crate::geom::Transform::stretch

use image::RgbImage;
use ndarray::{ArrayViewMut2, ArrayViewMut3, s};

use super::config::{PIL_BICUBIC, PreprocessorConfig, ResizeRule};
use super::pil::{PilFilter, resize_pil};
use super::{PreprocessError, write_row};

/// `(height, width)` of a picture of `width` x `height` after `GroundingDinoImageProcessor.resize`.
pub fn resized_hw(cfg: &PreprocessorConfig, width: u32, height: u32) -> (u32, u32) {
    cfg.resize.output_hw(cfg.size, height, width)
}

/// `(height, width)` a batch of pictures (each `(width, height)`) is padded to: `pad_size` when the config has
/// one, else the largest resized height and width of the batch (`get_max_height_width`).
pub fn batch_hw(cfg: &PreprocessorConfig, sizes: impl IntoIterator<Item = (u32, u32)>) -> (u32, u32) {
    if let Some(pad) = cfg.pad_size {
        return pad;
    }
    sizes.into_iter().map(|(w, h)| resized_hw(cfg, w, h)).fold((1, 1), |(mh, mw), (h, w)| (mh.max(h), mw.max(w)))
}

/// Resizes, normalises and pads `img` into `out` (`[3, H, W]`, a slot of the batch) and returns the size
/// `(width, height)` of the image inside the padding, for [`pixel_mask_into`].
///
/// When the size the config asks for does not fit the slot (a `pad_size` smaller than a shortest-edge resize,
/// where transformers fails to pad), the picture is fitted into the slot instead (the `max_height`/`max_width`
/// rule with the slot's size). An empty picture gives an all-padding slot and an empty mask.
pub fn letterbox_into(cfg: &PreprocessorConfig, img: &RgbImage, mut out: ArrayViewMut3<f32>) -> (u32, u32) {
    let (slot_h, slot_w) = (out.shape()[1] as u32, out.shape()[2] as u32);
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 || slot_w == 0 || slot_h == 0 {
        out.fill(0.0);
        return (0, 0);
    }
    let (mut rh, mut rw) = resized_hw(cfg, w, h);
    if rh > slot_h || rw > slot_w {
        (rh, rw) = ResizeRule::MaxHeightWidth { max_height: slot_h, max_width: slot_w }.output_hw(cfg.size, h, w);
    }
    let filter = if cfg.resample == PIL_BICUBIC { PilFilter::Bicubic } else { PilFilter::Bilinear };
    let resized;
    // Pillow returns a copy when the size already matches; skip even that.
    let src = if (rw, rh) == (w, h) {
        img
    } else {
        resized = resize_pil(img, rw, rh, filter);
        &resized
    };
    write_padded(cfg, src.as_raw(), rw, rh, rw as usize * 3, out);
    (rw, rh)
}

/// Normalises a packed RGB frame that GStreamer has already scaled (keeping its aspect ratio) into `out`
/// (`[3, H, W]`) and pads it, as [`letterbox_into`] does after its resize. The frame must fit the slot.
/// `stride` is the distance between rows in bytes.
pub fn letterbox_scaled_into(
    cfg: &PreprocessorConfig,
    rgb: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: ArrayViewMut3<f32>,
) -> Result<(), PreprocessError> {
    let (slot_h, slot_w) = (out.shape()[1], out.shape()[2]);
    let frame_error = |problem: String| PreprocessError::Frame { width, height, stride, len: rgb.len(), problem };
    let (w, h) = (width as usize, height as usize);
    if w > slot_w || h > slot_h || w == 0 || h == 0 {
        return Err(frame_error(format!(
            "does not fit the {slot_w}x{slot_h} model input; scale the frame to fit it, keeping its aspect ratio"
        )));
    }
    if stride < w * 3 {
        return Err(frame_error(format!("stride is smaller than a row of {w} RGB pixels; is the format not RGB?")));
    }
    if rgb.len() < stride * (h - 1) + w * 3 {
        return Err(frame_error(format!(
            "buffer is shorter than the {} bytes the frame needs",
            stride * (h - 1) + w * 3
        )));
    }
    write_padded(cfg, rgb, width, height, stride, out);
    Ok(())
}

/// Writes `width` x `height` packed RGB rows (`stride` bytes apart) at the top left of `out`, rescaled and
/// normalised, and 0.0 everywhere else (transformers pads the normalised image with zeros).
fn write_padded(
    cfg: &PreprocessorConfig,
    rgb: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    mut out: ArrayViewMut3<f32>,
) {
    let (w, h) = (width as usize, height as usize);
    let lut = cfg.tensor_lut();
    for (c, lut) in lut.iter().enumerate() {
        let mut plane = out.slice_mut(s![c, .., ..]);
        for (y, mut row) in plane.outer_iter_mut().enumerate() {
            if y < h {
                let src = &rgb[y * stride..y * stride + w * 3];
                write_row(row.slice_mut(s![..w]), src.chunks_exact(3).map(|p| lut[p[c] as usize]));
                row.slice_mut(s![w..]).fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
    }
}

/// `make_pixel_mask`: 1 over the top-left `width` x `height` of `out` (`[H, W]`), 0 elsewhere.
pub fn pixel_mask_into(width: u32, height: u32, mut out: ArrayViewMut2<i64>) {
    out.fill(0);
    let (h, w) = ((height as usize).min(out.shape()[0]), (width as usize).min(out.shape()[1]));
    out.slice_mut(s![..h, ..w]).fill(1);
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_abs_diff, npy, synth};
    use super::*;
    use ndarray::{Array3, Array4, Axis};

    macro_rules! golden {
        ($name:literal) => {
            npy(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/gdino_preprocess/", $name, ".npy")))
        };
    }

    fn config(json: &str) -> PreprocessorConfig {
        PreprocessorConfig::from_json_for(super::super::Family::GroundingDino, json).unwrap()
    }

    /// The whole processor on a batch: `(pixel_values, pixel_mask)` as transformers gives them.
    fn run(cfg: &PreprocessorConfig, sizes: &[(u32, u32)]) -> (Array4<f32>, ndarray::Array3<i64>) {
        let (bh, bw) = batch_hw(cfg, sizes.iter().copied());
        let mut pixels = Array4::from_elem((sizes.len(), 3, bh as usize, bw as usize), f32::NAN);
        let mut mask = Array3::from_elem((sizes.len(), bh as usize, bw as usize), -1i64);
        for (b, &(w, h)) in sizes.iter().enumerate() {
            let (vw, vh) = letterbox_into(cfg, &synth(w, h), pixels.index_axis_mut(Axis(0), b));
            pixel_mask_into(vw, vh, mask.index_axis_mut(Axis(0), b));
        }
        (pixels, mask)
    }

    /// Pillow bilinear is bit-exact and the float steps are done in transformers' order: equal to the bit.
    #[test]
    fn processor_matches_transformers_exactly() {
        let fixed32 = r#"{"size": {"max_height": 32, "max_width": 32}, "pad_size": {"height": 32, "width": 32}}"#;
        let cases = [
            (fixed32, vec![(37, 23)], golden!("proc_fixed32_pixel_values"), golden!("proc_fixed32_pixel_mask")),
            (
                fixed32,
                vec![(23, 37)],
                golden!("proc_fixed32_tall_pixel_values"),
                golden!("proc_fixed32_tall_pixel_mask"),
            ),
            // The limiting side comes out one short (int(49 * (32 / 49)) = 31), as in transformers.
            (
                fixed32,
                vec![(49, 5)],
                golden!("proc_fixed32_trunc_pixel_values"),
                golden!("proc_fixed32_trunc_pixel_mask"),
            ),
            (
                r#"{"size": {"max_height": 24, "max_width": 40}, "pad_size": {"height": 24, "width": 40}}"#,
                vec![(97, 60), (13, 9)],
                golden!("proc_fixed24x40_pixel_values"),
                golden!("proc_fixed24x40_pixel_mask"),
            ),
            (
                r#"{"size": {"shortest_edge": 20, "longest_edge": 33}}"#,
                vec![(37, 23), (23, 37), (60, 10)],
                golden!("proc_edge20_max33_pixel_values"),
                golden!("proc_edge20_max33_pixel_mask"),
            ),
            (
                r#"{"size": {"shortest_edge": 16, "longest_edge": 1333}}"#,
                vec![(16, 30), (200, 150)],
                golden!("proc_edge16_max1333_pixel_values"),
                golden!("proc_edge16_max1333_pixel_mask"),
            ),
        ];
        for (json, sizes, want_pixels, want_mask) in cases {
            let cfg = config(json);
            let (pixels, mask) = run(&cfg, &sizes);
            assert_eq!(pixels.shape(), want_pixels.shape.as_slice(), "{json} {sizes:?}");
            assert_eq!(mask.shape(), want_mask.shape.as_slice(), "{json} {sizes:?}");
            let diff = max_abs_diff(pixels.as_slice().unwrap(), &want_pixels.f32s());
            assert_eq!(diff, 0.0, "{json} {sizes:?}: transformers differs by {diff}");
            let want_mask: Vec<i64> =
                want_mask.data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
            assert_eq!(mask.as_slice().unwrap(), want_mask.as_slice(), "{json} {sizes:?}");
        }
    }

    #[test]
    fn sizes_follow_transformers_rules() {
        let edge = PreprocessorConfig::grounding_dino();
        // 1280x720: 800 / 720 * 1280 = 1422 > 1333, so the longer side is capped: round(749.8) = 750.
        assert_eq!(resized_hw(&edge, 1280, 720), (750, 1333));
        assert_eq!(resized_hw(&edge, 720, 1280), (1333, 750));
        assert_eq!(resized_hw(&edge, 640, 480), (800, 1066));
        // Already at the shortest edge: unchanged.
        assert_eq!(resized_hw(&edge, 1000, 800), (800, 1000));
        let fixed =
            config(r#"{"size": {"max_height": 320, "max_width": 320}, "pad_size": {"height": 320, "width": 320}}"#);
        assert_eq!(resized_hw(&fixed, 1280, 720), (180, 320));
        assert_eq!(resized_hw(&fixed, 100, 200), (320, 160));
        // transformers truncates `w * (320 / w)` too: 1232 x 693 comes out 319 wide.
        assert_eq!(resized_hw(&fixed, 1232, 693), (179, 319));
        assert_eq!(batch_hw(&fixed, [(5, 5)]), (320, 320));
        assert_eq!(batch_hw(&edge, [(1280, 720), (720, 1280)]), (1333, 1333));
    }

    #[test]
    fn a_picture_too_large_for_the_slot_is_fitted_into_it() {
        let cfg = PreprocessorConfig::grounding_dino();
        let mut out = Array3::from_elem((3, 20, 30), f32::NAN);
        assert_eq!(letterbox_into(&cfg, &synth(60, 20), out.view_mut()), (30, 10));
        assert!(out.iter().all(|v| v.is_finite()));
        assert!(out.slice(s![.., 10.., ..]).iter().all(|&v| v == 0.0));
    }

    /// A frame GStreamer already scaled needs no resize: the fast path gives what the full recipe gives.
    #[test]
    fn scaled_frame_matches_full_recipe_when_no_resize_is_needed() {
        let cfg = config(r#"{"size": {"max_height": 32, "max_width": 32}, "pad_size": {"height": 32, "width": 32}}"#);
        let img = synth(32, 20);
        let stride = 32 * 3 + 5;
        let mut rgb = vec![0xAAu8; stride * 20];
        for (y, row) in img.as_raw().chunks_exact(32 * 3).enumerate() {
            rgb[y * stride..y * stride + row.len()].copy_from_slice(row);
        }
        let mut fast = Array3::from_elem((3, 32, 32), f32::NAN);
        letterbox_scaled_into(&cfg, &rgb, 32, 20, stride, fast.view_mut()).unwrap();
        let mut full = Array3::from_elem((3, 32, 32), f32::NAN);
        assert_eq!(letterbox_into(&cfg, &img, full.view_mut()), (32, 20));
        assert_eq!(fast, full);
        let err = letterbox_scaled_into(&cfg, &rgb, 33, 20, stride, fast.view_mut()).unwrap_err();
        assert!(err.to_string().contains("33x20"), "{err}");
    }

    #[test]
    fn configs_parse_with_transformers_defaults() {
        // IDEA-Research/grounding-dino-tiny's preprocessor_config.json.
        let hub = PreprocessorConfig::from_json(
            r#"{"do_normalize": true, "do_pad": true, "do_rescale": true, "do_resize": true, "format": "coco_detection",
                "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "GroundingDinoImageProcessor",
                "image_std": [0.229, 0.224, 0.225], "processor_class": "GroundingDinoProcessor", "resample": 2,
                "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 1333, "shortest_edge": 800}}"#,
        )
        .unwrap();
        assert_eq!(hub, PreprocessorConfig::grounding_dino());
        hub.check(super::super::Family::MmGroundingDino).unwrap();
        let int_size = config(r#"{"size": 600, "max_size": 1000}"#);
        assert_eq!(int_size.resize, ResizeRule::ShortestEdge { shortest_edge: 600, longest_edge: 1000 });
        for (json, field) in [
            (r#"{"size": {"shortest_edge": 800}}"#, "size"),
            (r#"{"resample": 0}"#, "resample"),
            (r#"{"do_pad": false}"#, "do_pad"),
            (r#"{"size": {"max_height": 64, "max_width": 64}, "pad_size": {"height": 32, "width": 64}}"#, "pad_size"),
        ] {
            match PreprocessorConfig::from_json_for(super::super::Family::GroundingDino, json) {
                Err(PreprocessError::Config { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(matches!(
            PreprocessorConfig::from_json_for(
                super::super::Family::Owlv2,
                r#"{"image_processor_type": "GroundingDinoImageProcessor"}"#
            ),
            Err(PreprocessError::FamilyMismatch { .. })
        ));
    }
}
