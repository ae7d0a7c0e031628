//! OWLv2's resize: Gaussian anti-aliasing (`scipy.ndimage.gaussian_filter`) and `ndimage.zoom(order=1)`, as
//! transformers copies them from `skimage.transform.resize`, following scipy's arithmetic step by step.

use ndarray::{Array3, ArrayView3, Axis, s};

/// `gaussian_filter`'s default `truncate`: the kernel radius is `int(4 * sigma + 0.5)`.
const GAUSSIAN_TRUNCATE: f64 = 4.0;

/// numpy's pairwise summation (`np.sum` of a contiguous f64 array), which the Gaussian kernel is normalised by.
fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &v| s + v)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let blocks = n - n % 8;
        for chunk in a[8..blocks].chunks_exact(8) {
            for (r, &v) in r.iter_mut().zip(chunk) {
                *r += v;
            }
        }
        let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[blocks..].iter().fold(res, |s, &v| s + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// The centre and one side of scipy's `_gaussian_kernel1d(sigma, 0, radius)` (it is symmetric to the bit).
/// `[1.0]` (the identity) when `gaussian_filter` skips the axis (sigma <= 1e-15).
fn gaussian_half_kernel(sigma: f64) -> Vec<f64> {
    if sigma <= 1e-15 {
        return vec![1.0];
    }
    // Python's int() truncates.
    let radius = (GAUSSIAN_TRUNCATE * sigma + 0.5) as i64;
    let sigma2 = sigma * sigma;
    let phi: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / sigma2 * (x * x) as f64).exp()).collect();
    let sum = numpy_sum(&phi);
    phi[radius as usize..].iter().map(|p| p / sum).collect()
}

/// Index `i` reflected into `0..len` the way ndimage's `mirror` mode does (`d c b | a b c d | c b a`), also when
/// it lies more than one length away.
fn mirror_index(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let (len, s2) = (len as isize, 2 * len as isize - 2);
    let mut i = i;
    if i < 0 {
        i += s2 * (-i / s2);
        i = if i <= 1 - len { i + s2 } else { -i };
    } else if i >= len {
        i -= s2 * (i / s2);
        if i >= len {
            i = s2 - i;
        }
    }
    i as usize
}

/// ndimage's `map_coordinate` for `mirror` mode.
fn mirror_coordinate(x: f64, len: usize) -> f64 {
    if len <= 1 {
        return if x < 0.0 || x > len as f64 - 1.0 { 0.0 } else { x };
    }
    let s2 = (2 * len - 2) as f64;
    if x < 0.0 {
        let x = s2 * ((-x / s2) as i64 as f64) + x;
        if x <= 1.0 - len as f64 { x + s2 } else { -x }
    } else if x > len as f64 - 1.0 {
        let x = x - s2 * ((x / s2) as i64 as f64);
        if x >= len as f64 { s2 - x } else { x }
    } else {
        x
    }
}

/// One output sample of `ndimage.zoom(order=1, mode="mirror", grid_mode=True)` along one axis.
#[derive(Debug, Clone, Copy)]
struct LinearTap {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
}

/// The taps of every output index along an axis of `in_len` zoomed to `out_len`.
fn zoom_taps(in_len: usize, out_len: usize) -> Vec<LinearTap> {
    // `zoom` recomputes the factor as in/out from the shapes it was given.
    let zoom = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|k| {
            // grid_mode: pixel edges align, so sample at the centre of the output pixel.
            let cc = mirror_coordinate((k as f64 + 0.5) * zoom - 0.5, in_len);
            let start = cc.floor();
            // scipy's `get_spline_interpolation_weights`: the last weight is 1 minus the others, not `x`.
            let w0 = 1.0 - (cc - start);
            let w1 = 1.0 - w0;
            let start = start as isize;
            LinearTap { i0: mirror_index(start, in_len), i1: mirror_index(start + 1, in_len), w0, w1 }
        })
        .collect()
}

/// `Owlv2ImageProcessor.resize` on an HWC f32 image in [0, 1] (already padded), to `out_h` x `out_w`.
///
/// The arithmetic, its order and the f32 roundings between passes are scipy's, so the result is scipy's to the bit;
/// only `exp` (the Gaussian weights) comes from the platform's libm, and a libm that rounds differently could move
/// a value by an ulp. Any number of channels; an empty input gives zeros.
pub fn resize_owlv2(src: ArrayView3<f32>, out_h: usize, out_w: usize) -> Array3<f32> {
    let (in_h, in_w, ch) = src.dim();
    let mut out = Array3::zeros((out_h, out_w, ch));
    if in_h == 0 || in_w == 0 || ch == 0 {
        return out;
    }
    // `_clip_warp_output` clips to the input's range; f32::min/max skip NaN like its nanmin/nanmax fallback.
    let (lo, hi) = src.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let fill_row = |y: usize, row: &mut [f32]| {
        for (o, &v) in row.iter_mut().zip(src.index_axis(Axis(0), y).iter()) {
            *o = v;
        }
    };
    resize_owlv2_rows(in_h, in_w, ch, fill_row, out_h, out_w, |oy, planes| {
        for (c, plane) in planes.chunks_exact(out_w).enumerate() {
            for (o, &v) in out.slice_mut(s![oy, .., c]).iter_mut().zip(plane) {
                *o = v.max(lo).min(hi);
            }
        }
    });
    out
}

/// Cache of rows computed on demand, each keyed by its row index; `slots` rows, slot `row % slots`.
///
/// Callers ask for rows in (nearly) increasing order and never need more than `slots` consecutive rows at once,
/// so each row is computed about once and nothing the size of the whole image is allocated.
struct RowRing {
    data: Vec<f32>,
    keys: Vec<usize>,
    row_len: usize,
}

impl RowRing {
    fn new(slots: usize, row_len: usize) -> Self {
        RowRing { data: vec![0.0; slots * row_len], keys: vec![usize::MAX; slots], row_len }
    }

    /// Makes sure `row` is present, computing it with `fill` if not.
    fn load(&mut self, row: usize, fill: impl FnOnce(&mut [f32])) {
        let slot = row % self.keys.len();
        if self.keys[slot] != row {
            fill(&mut self.data[slot * self.row_len..(slot + 1) * self.row_len]);
            self.keys[slot] = row;
        }
    }

    fn get(&self, row: usize) -> &[f32] {
        let slot = row % self.keys.len();
        debug_assert_eq!(self.keys[slot], row);
        &self.data[slot * self.row_len..(slot + 1) * self.row_len]
    }
}

/// The OWLv2 resize over a row source: `fill_row(y, row)` writes input row `y` (`in_w * ch` values, HWC) and
/// `emit(oy, planes)` receives each output row before clipping, one plane per channel (`ch * out_w` values).
///
/// scipy blurs along axis 0 and stores f32, then along axis 1 and stores f32, then zooms with all four taps summed
/// in f64 and stores f32. Here the same values are computed lazily: only the input rows the zoom reads are
/// blurred, which is what makes downscaling a large photo cheap. The result is the same to the bit.
pub(super) fn resize_owlv2_rows(
    in_h: usize,
    in_w: usize,
    ch: usize,
    mut fill_row: impl FnMut(usize, &mut [f32]),
    out_h: usize,
    out_w: usize,
    mut emit: impl FnMut(usize, &[f32]),
) {
    if out_h == 0 || out_w == 0 {
        return;
    }
    let row_len = in_w * ch;
    // skimage's anti-aliasing: sigma = max(0, (in / out - 1) / 2) per axis (0 on the channel axis). A radius-0
    // kernel is exactly [1.0], the identity, and is skipped.
    let sigma = |i: usize, o: usize| ((i as f64 / o as f64 - 1.0) / 2.0).max(0.0);
    let ky = gaussian_half_kernel(sigma(in_h, out_h));
    let kx = gaussian_half_kernel(sigma(in_w, out_w));
    let (ry, rx) = (ky.len() - 1, kx.len() - 1);
    let ty = zoom_taps(in_h, out_h);
    let tx = zoom_taps(in_w, out_w);
    let wx0: Vec<f64> = tx.iter().map(|t| t.w0).collect();
    let wx1: Vec<f64> = tx.iter().map(|t| t.w1).collect();

    // Source rows for the axis-0 blur: a blurred row needs the 2 * ry + 1 rows around it (mirrored).
    let mut src_rows = RowRing::new((2 * ry + 1).min(in_h), row_len);
    // Input rows blurred along both axes and gathered for the zoom: per channel, the value at each output column's
    // first tap, then at its second. The zoom reads two such rows per output row.
    let mut gathered = RowRing::new(2.min(in_h), 2 * ch * out_w);
    let mut window = vec![0usize; 2 * ry + 1];
    // One axis-0-blurred row with rx mirrored pixels on each side, as scipy extends a line before correlating it.
    let mut ext = vec![0f32; (in_w + 2 * rx) * ch];
    let mut blurred = vec![0f32; row_len];
    let mut line = vec![0f32; ch * out_w];

    let mut prepare_row = |r: usize, dst: &mut [f32]| {
        for (i, slot) in window.iter_mut().enumerate() {
            *slot = mirror_index(r as isize + i as isize - ry as isize, in_h);
            src_rows.load(*slot, |row| fill_row(*slot, row));
        }
        let middle = rx * ch..rx * ch + row_len;
        if ry == 0 {
            ext[middle.clone()].copy_from_slice(src_rows.get(r));
        } else {
            let rows: Vec<&[f32]> = window.iter().map(|&y| src_rows.get(y)).collect();
            correlate_symmetric(&mut ext[middle.clone()], &ky, &rows);
        }
        let row: &[f32] = if rx == 0 {
            &ext[middle]
        } else {
            for p in 1..=rx {
                let left = mirror_index(-(p as isize), in_w);
                let right = mirror_index((in_w - 1 + p) as isize, in_w);
                ext.copy_within((rx + left) * ch..(rx + left + 1) * ch, (rx - p) * ch);
                ext.copy_within((rx + right) * ch..(rx + right + 1) * ch, (rx + in_w - 1 + p) * ch);
            }
            // Every column is computed: contiguous shifted slices vectorise, a gather of the needed ones would not.
            let shifted: Vec<&[f32]> = (0..=2 * rx).map(|j| &ext[j * ch..j * ch + row_len]).collect();
            correlate_symmetric(&mut blurred, &kx, &shifted);
            &blurred
        };
        let (first, second) = dst.split_at_mut(ch * out_w);
        for c in 0..ch {
            let plane = c * out_w..(c + 1) * out_w;
            for ((f, s), t) in first[plane.clone()].iter_mut().zip(&mut second[plane]).zip(&tx) {
                *f = row[t.i0 * ch + c];
                *s = row[t.i1 * ch + c];
            }
        }
    };

    for (oy, t) in ty.iter().enumerate() {
        gathered.load(t.i0, |dst| prepare_row(t.i0, dst));
        gathered.load(t.i1, |dst| prepare_row(t.i1, dst));
        let (g0, g1) = (gathered.get(t.i0), gathered.get(t.i1));
        for (c, out) in line.chunks_exact_mut(out_w).enumerate() {
            let (first0, second0) = g0.split_at(ch * out_w);
            let (first1, second1) = g1.split_at(ch * out_w);
            let plane = c * out_w..(c + 1) * out_w;
            let row0 = (&first0[plane.clone()], &second0[plane.clone()]);
            let row1 = (&first1[plane.clone()], &second1[plane]);
            zoom_line(out, row0, row1, (t.w0, t.w1), (&wx0, &wx1));
        }
        emit(oy, &line);
    }
}

/// One output line of `NI_ZoomShift` (order 1): `row0` and `row1` are the two input rows' values at each output
/// column's two taps. scipy adds the four taps in this order, each as `value * wy * wx` in f64 (the channel axis's
/// own weight is 1, and its neighbour's weight 0 adds nothing). AVX2 where available, as in [`correlate_symmetric`].
fn zoom_line(out: &mut [f32], row0: (&[f32], &[f32]), row1: (&[f32], &[f32]), wy: (f64, f64), wx: (&[f64], &[f64])) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { zoom_line_avx2(out, row0, row1, wy, wx) };
    }
    zoom_line_portable(out, row0, row1, wy, wx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn zoom_line_avx2(
    out: &mut [f32],
    row0: (&[f32], &[f32]),
    row1: (&[f32], &[f32]),
    wy: (f64, f64),
    wx: (&[f64], &[f64]),
) {
    zoom_line_portable(out, row0, row1, wy, wx)
}

#[inline(always)]
fn zoom_line_portable(
    out: &mut [f32],
    (a, b): (&[f32], &[f32]),
    (c, d): (&[f32], &[f32]),
    (wy0, wy1): (f64, f64),
    (wx0, wx1): (&[f64], &[f64]),
) {
    let n = out.len();
    let (a, b, c, d, wx0, wx1) = (&a[..n], &b[..n], &c[..n], &d[..n], &wx0[..n], &wx1[..n]);
    for i in 0..n {
        let mut v = a[i] as f64 * wy0 * wx0[i];
        v += b[i] as f64 * wy0 * wx1[i];
        v += c[i] as f64 * wy1 * wx0[i];
        v += d[i] as f64 * wy1 * wx1[i];
        out[i] = v as f32;
    }
}

/// One pass of scipy's `correlate1d` with a symmetric kernel (`half[0]` the centre), over whole lines at once,
/// stored as f32 like scipy's output array: `lines[j]` is the input shifted by `j - radius`. Like scipy each value
/// starts from centre * w0 and adds `(left + right) * w[j]` from the outermost `j` inwards, in f64.
///
/// This is most of the time spent downscaling a large photo, so it uses AVX2 where the CPU has it (same
/// operations, 4 lanes instead of SSE2's 2; Rust never fuses multiply-adds, so the results are identical).
fn correlate_symmetric(dst: &mut [f32], half: &[f64], lines: &[&[f32]]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { correlate_symmetric_avx2(dst, half, lines) };
    }
    correlate_symmetric_portable(dst, half, lines)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn correlate_symmetric_avx2(dst: &mut [f32], half: &[f64], lines: &[&[f32]]) {
    correlate_symmetric_portable(dst, half, lines)
}

#[inline(always)]
fn correlate_symmetric_portable(dst: &mut [f32], half: &[f64], lines: &[&[f32]]) {
    // Blocks of 16 values stay in registers across all taps (a running sum per tap in memory is slower).
    const B: usize = 16;
    let n = dst.len();
    let split = n - n % B;
    for (b, out) in dst[..split].chunks_exact_mut(B).enumerate() {
        correlate_block::<B>(out.try_into().expect("block of B"), half, lines, b * B);
    }
    for (i, out) in dst[split..].iter_mut().enumerate() {
        correlate_block::<1>(std::array::from_mut(out), half, lines, split + i);
    }
}

/// `B` outputs of [`correlate_symmetric`] starting at `start`; a fixed size so the loops unroll and vectorise.
#[inline(always)]
fn correlate_block<const B: usize>(out: &mut [f32; B], half: &[f64], lines: &[&[f32]], start: usize) {
    let r = half.len() - 1;
    let at = |j: usize| -> &[f32; B] { lines[j][start..start + B].try_into().expect("block of B") };
    let centre = at(r);
    let mut t = [0f64; B];
    for k in 0..B {
        t[k] = centre[k] as f64 * half[0];
    }
    for j in (1..=r).rev() {
        let (left, right, w) = (at(r - j), at(r + j), half[j]);
        for k in 0..B {
            t[k] += (left[k] as f64 + right[k] as f64) * w;
        }
    }
    for k in 0..B {
        out[k] = t[k] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{golden, max_abs_diff, npy, synth};
    use super::*;
    use image::RgbImage;

    /// The rescaled (and, when `pad`, padded) f32 image `Owlv2ImageProcessor.resize` receives.
    fn rescaled(img: &RgbImage, pad: bool) -> Array3<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (ph, pw) = if pad { (h.max(w), h.max(w)) } else { (h, w) };
        let mut a = Array3::from_elem((ph, pw, 3), 0.5f32);
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                a[[y as usize, x as usize, c]] = (p[c] as f64 * (1.0 / 255.0)) as f32;
            }
        }
        a
    }

    /// Measured: 0 (bit-exact). The allowance is for a libm whose `exp` rounds the Gaussian weights differently.
    const OWLV2_RESIZE_TOLERANCE: f32 = 1e-6;

    #[test]
    fn owlv2_resize_matches_scipy() {
        let cases = [
            ((37, 23, true, 16, 16), golden!("v2resize_37x23_pad_to_16x16")),
            ((9, 13, true, 29, 29), golden!("v2resize_9x13_pad_to_29x29")),
            ((97, 60, true, 24, 24), golden!("v2resize_97x60_pad_to_24x24")),
            ((30, 40, false, 24, 16), golden!("v2resize_30x40_to_24x16")),
            ((10, 7, true, 2, 2), golden!("v2resize_10x7_pad_to_2x2")),
            ((5, 5, true, 3, 3), golden!("v2resize_5x5_pad_to_3x3")),
            // A kernel radius (10) beyond the image (6): the mirror wraps more than once.
            ((6, 4, true, 1, 1), golden!("v2resize_6x4_pad_to_1x1")),
        ];
        for ((w, h, pad, ow, oh), want) in cases {
            assert_eq!(want.shape, [oh, ow, 3]);
            let got = resize_owlv2(rescaled(&synth(w, h), pad).view(), oh, ow);
            let diff = max_abs_diff(got.as_slice().unwrap(), &want.f32s());
            assert!(diff <= OWLV2_RESIZE_TOLERANCE, "{w}x{h} -> {ow}x{oh}: scipy differs by {diff}");
        }
    }

    #[test]
    fn mirror_matches_ndimage() {
        // d c b | a b c d | c b a, repeating: numpy's `np.pad(np.arange(4), 7, mode="reflect")`.
        let got: Vec<usize> = (-7..11).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, [1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]);
        assert_eq!(mirror_index(5, 1), 0);
        // `ndi.zoom(np.arange(4.0), 2, order=1, mode="mirror", grid_mode=True)`: the ends reflect about the edge
        // pixels' centres.
        let line = [0.0, 1.0, 2.0, 3.0];
        let got: Vec<f64> = zoom_taps(4, 8).iter().map(|t| line[t.i0] * t.w0 + line[t.i1] * t.w1).collect();
        assert_eq!(got, [0.25, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 2.75]);
    }

    #[test]
    fn numpy_sum_is_pairwise() {
        // Sixteen 0.1s: `np.sum` (8 interleaved partial sums) gives 1.6, a sequential sum 1.6000000000000003.
        let a = vec![0.1; 16];
        assert_eq!(numpy_sum(&a), 1.6);
        assert_eq!(a.iter().sum::<f64>(), 1.6000000000000003);
    }
}
