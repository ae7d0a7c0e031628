//! Pillow's convolution resize (libImaging/Resample.c, 8 bits per channel), bit for bit: bicubic is OWL-ViT's
//! resize, bilinear is Grounding DINO's.

use image::RgbImage;

/// Pillow's fixed-point precision for 8-bit images: 32 bits less 8 for the value and 2 for overshoot and sign.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A Pillow resampling filter: its kernel and support (`struct filter` in Resample.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.Resampling.BILINEAR` (2): the triangle kernel, support 1.
    Bilinear,
    /// `Image.Resampling.BICUBIC` (3): Keys' cubic with a = -0.5, support 2.
    Bicubic,
}

impl PilFilter {
    /// Half the kernel's width at a scale of one, in input pixels.
    fn support(self) -> f64 {
        match self {
            PilFilter::Bilinear => 1.0,
            PilFilter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            PilFilter::Bilinear => bilinear_filter(x),
            PilFilter::Bicubic => bicubic_filter(x),
        }
    }
}

/// Pillow's triangle kernel (`bilinear_filter` in Resample.c).
fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's bicubic kernel, with a = -0.5 (`bicubic_filter` in Resample.c), same operation order.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of one resampling pass (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct PilCoeffs {
    /// Weights per output pixel, `ksize` slots each (only the first `bounds[i].1` are used).
    k: Vec<i32>,
    ksize: usize,
    /// First input pixel and number of input pixels per output pixel.
    bounds: Vec<(usize, usize)>,
}

impl PilCoeffs {
    fn new(filter: PilFilter, in_size: usize, out_size: usize) -> Self {
        // Pillow takes the span from a float box `(0, 0, w, h)`: `(double)(in1 - in0) / outSize`.
        let scale = (in_size as f32) as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        // Widening the kernel by the scale when downscaling is what makes Pillow anti-alias.
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut k = vec![0i32; out_size * ksize];
        let mut bounds = Vec::with_capacity(out_size);
        let mut w = vec![0f64; ksize];
        for (xx, kk) in k.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, wx) in w[..n].iter_mut().enumerate() {
                *wx = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            for (kx, &wx) in kk.iter_mut().zip(&w[..n]) {
                let wx = if ww != 0.0 { wx / ww } else { wx };
                let fixed = wx * (1u32 << PRECISION_BITS) as f64;
                *kx = if wx < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
            }
            bounds.push((xmin as usize, n));
        }
        PilCoeffs { k, ksize, bounds }
    }

    fn weights(&self, i: usize) -> (usize, &[i32]) {
        let (first, n) = self.bounds[i];
        (first, &self.k[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's `clip8`: drop the fraction (the sum started at one half, so this rounds) and saturate.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const PIL_HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` on 8-bit RGB, bit-exact with Pillow 13 (as transformers
/// calls it, with no `box` and no `reducing_gap`).
///
/// Two passes, each rounded and clipped to 8 bits, so their order changes the result. Pillow 13 runs the vertical
/// pass first when the height shrinks by more than twice as many pixels as the width does, and the horizontal pass
/// first otherwise; Pillow 12 and older always ran the horizontal pass first, so with them tall images differ by a
/// level or two. A pass whose size does not change is skipped. Within a pass the sums are integers, so their order
/// does not matter. An empty source gives a black image; an empty target an empty one.
pub fn resize_bicubic_pil(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_pil(src, width, height, PilFilter::Bicubic)
}

/// Pillow's `Image.resize((width, height), filter)` on 8-bit RGB, bit-exact with Pillow 13, for either filter;
/// [`resize_bicubic_pil`] says what that takes. Bilinear is what `GroundingDinoImageProcessor` resizes with.
pub fn resize_pil(src: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return src.clone();
    }
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(width, height);
    }
    let raw: &[u8] = src.as_raw();
    let out = if out_w == in_w {
        pil_vertical(raw, in_w * 3, 0, &PilCoeffs::new(filter, in_h, out_h))
    } else if out_h == in_h {
        pil_horizontal(raw, in_w, out_w, filter)
    } else if in_h > out_h && (in_h - out_h) as i64 > 2 * (in_w as i64 - out_w as i64) {
        // Pillow 13's `ImagingResampleInner`: vertical first, over whole rows.
        let rows = pil_vertical(raw, in_w * 3, 0, &PilCoeffs::new(filter, in_h, out_h));
        pil_horizontal(&rows, in_w, out_w, filter)
    } else {
        // Horizontal first, and only over the rows the vertical pass reads.
        let vert = PilCoeffs::new(filter, in_h, out_h);
        let first_row = vert.bounds[0].0;
        let last_row = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;
        let rows = pil_horizontal(&raw[first_row * in_w * 3..last_row * in_w * 3], in_w, out_w, filter);
        pil_vertical(&rows, out_w * 3, first_row, &vert)
    };
    RgbImage::from_raw(width, height, out).expect("buffer sized for the output image")
}

/// Horizontal pass over whole rows of packed RGB.
///
/// (Running it as a vertical pass over the transposed image vectorises the sums; that was tried, and the two
/// transposes made a 4000 x 3000 photo twice as slow for a few milliseconds saved on small ones.)
fn pil_horizontal(rows: &[u8], in_w: usize, out_w: usize, filter: PilFilter) -> Vec<u8> {
    let coeffs = PilCoeffs::new(filter, in_w, out_w);
    let mut out = vec![0u8; rows.len() / (in_w * 3) * out_w * 3];
    for (src, dst) in rows.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (first, k) = coeffs.weights(xx);
            let taps = &src[first * 3..(first + k.len()) * 3];
            let (mut s0, mut s1, mut s2) = (PIL_HALF, PIL_HALF, PIL_HALF);
            for (p, &kx) in taps.chunks_exact(3).zip(k) {
                s0 += p[0] as i32 * kx;
                s1 += p[1] as i32 * kx;
                s2 += p[2] as i32 * kx;
            }
            px.copy_from_slice(&[clip8(s0), clip8(s1), clip8(s2)]);
        }
    }
    out
}

/// Vertical pass; `rows` starts at source row `row_offset`.
fn pil_vertical(rows: &[u8], row_len: usize, row_offset: usize, coeffs: &PilCoeffs) -> Vec<u8> {
    let out_h = coeffs.bounds.len();
    let mut out = vec![0u8; out_h * row_len];
    // Accumulating a whole row per tap keeps the inner loop contiguous (it vectorises).
    let mut acc = vec![0i32; row_len];
    for (yy, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let (first, k) = coeffs.weights(yy);
        acc.fill(PIL_HALF);
        for (y, &ky) in k.iter().enumerate() {
            let start = (first + y - row_offset) * row_len;
            accumulate_scaled(&mut acc, &rows[start..start + row_len], ky);
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// `acc[i] += row[i] * k`, with AVX2 where the CPU has it (integer arithmetic: identical either way).
fn accumulate_scaled(acc: &mut [i32], row: &[u8], k: i32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { accumulate_scaled_avx2(acc, row, k) };
    }
    accumulate_scaled_portable(acc, row, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_scaled_avx2(acc: &mut [i32], row: &[u8], k: i32) {
    accumulate_scaled_portable(acc, row, k)
}

#[inline(always)]
fn accumulate_scaled_portable(acc: &mut [i32], row: &[u8], k: i32) {
    for (a, &p) in acc.iter_mut().zip(row) {
        *a += p as i32 * k;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{golden, npy, synth};
    use super::*;

    #[test]
    fn pil_bicubic_is_bit_exact() {
        let cases = [
            ((37, 23, 16, 16), golden!("pil_37x23_to_16x16")),
            ((13, 9, 29, 31), golden!("pil_13x9_to_29x31")),
            ((50, 20, 20, 50), golden!("pil_50x20_to_20x50")),
            ((64, 48, 64, 20), golden!("pil_64x48_to_64x20")),
            ((31, 40, 12, 40), golden!("pil_31x40_to_12x40")),
            ((200, 150, 24, 24), golden!("pil_200x150_to_24x24")),
            // Height shrinks by more than twice the width: Pillow 13 runs the vertical pass first.
            ((30, 70, 16, 16), golden!("pil_30x70_to_16x16")),
            ((13, 40, 20, 12), golden!("pil_13x40_to_20x12")),
        ];
        for ((w, h, ow, oh), want) in cases {
            assert_eq!(want.shape, [oh as usize, ow as usize, 3]);
            let got = resize_bicubic_pil(&synth(w, h), ow, oh);
            let max = got.as_raw().iter().zip(want.data).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
            assert_eq!(max, 0, "{w}x{h} -> {ow}x{oh}: Pillow differs by up to {max}");
        }
    }

    /// Bilinear is the same resampler with another kernel; downscales widen it by the scale (anti-aliasing).
    #[test]
    fn pil_bilinear_is_bit_exact() {
        macro_rules! bilinear {
            ($name:literal) => {
                npy(include_bytes!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/golden/gdino_preprocess/bilinear_",
                    $name,
                    ".npy"
                )))
            };
        }
        let cases = [
            ((37, 23, 16, 16), bilinear!("37x23_to_16x16")),
            ((13, 9, 29, 31), bilinear!("13x9_to_29x31")),
            ((50, 20, 20, 50), bilinear!("50x20_to_20x50")),
            ((64, 48, 64, 20), bilinear!("64x48_to_64x20")),
            ((31, 40, 12, 40), bilinear!("31x40_to_12x40")),
            ((200, 150, 24, 24), bilinear!("200x150_to_24x24")),
            ((30, 70, 16, 16), bilinear!("30x70_to_16x16")),
            ((13, 40, 20, 12), bilinear!("13x40_to_20x12")),
            ((97, 60, 80, 49), bilinear!("97x60_to_80x49")),
            ((120, 90, 33, 25), bilinear!("120x90_to_33x25")),
        ];
        for ((w, h, ow, oh), want) in cases {
            assert_eq!(want.shape, [oh as usize, ow as usize, 3]);
            let got = resize_pil(&synth(w, h), ow, oh, PilFilter::Bilinear);
            let max = got.as_raw().iter().zip(want.data).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
            assert_eq!(max, 0, "{w}x{h} -> {ow}x{oh}: Pillow differs by up to {max}");
            // Not the bicubic result by accident.
            if (w, h) != (ow, oh) {
                assert_ne!(got, resize_bicubic_pil(&synth(w, h), ow, oh), "{w}x{h} -> {ow}x{oh}");
            }
        }
    }

    #[test]
    fn pil_same_size_is_a_copy() {
        let img = synth(7, 5);
        assert_eq!(resize_bicubic_pil(&img, 7, 5), img);
    }
}
