//! Full-resolution frames in the two pixel formats lookout draws on and encodes.
//!
//! - **I420** (planar YUV 4:2:0) is what H.264/H.265 decoders put out and what H.264 encoders take in. The
//!   full-frame branch of the templates asks for it, so an annotated 1080p frame is never converted to RGB and
//!   back: that pair of conversions alone costs about 16 ms of CPU per 1080p frame, and RGB is twice the bytes.
//! - **RGB** (packed, 3 bytes a pixel) is what a template that ends its full branch in `format=RGB` gives.
//!
//! A [`Picture`] owns its pixels in GStreamer's default layout for its format and size (rows padded to 4 bytes,
//! planes one after the other), the same layout `appsrc` expects for those caps, so handing it to an encoder is
//! one copy of the whole buffer.

use gstreamer_video as gst_video;

/// Pixel format of a [`Picture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed RGB, 3 bytes a pixel.
    Rgb,
    /// Planar YUV 4:2:0: a full-size Y plane, then U and V planes of half the width and height (rounded up).
    I420,
}

impl PixelFormat {
    /// GStreamer's name of the format, as written in caps (`video/x-raw,format=I420`).
    pub fn caps_name(self) -> &'static str {
        match self {
            PixelFormat::Rgb => "RGB",
            PixelFormat::I420 => "I420",
        }
    }

    /// The GStreamer video format.
    pub fn video_format(self) -> gst_video::VideoFormat {
        match self {
            PixelFormat::Rgb => gst_video::VideoFormat::Rgb,
            PixelFormat::I420 => gst_video::VideoFormat::I420,
        }
    }

    /// The format of a GStreamer video format lookout can draw on, if it is one.
    pub fn from_video_format(format: gst_video::VideoFormat) -> Option<PixelFormat> {
        match format {
            gst_video::VideoFormat::Rgb => Some(PixelFormat::Rgb),
            gst_video::VideoFormat::I420 => Some(PixelFormat::I420),
            _ => None,
        }
    }

    /// Number of planes: 1 for RGB, 3 for I420.
    pub fn planes(self) -> usize {
        match self {
            PixelFormat::Rgb => 1,
            PixelFormat::I420 => 3,
        }
    }
}

/// Where each plane starts and how far apart its rows are, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Start of each plane (unused planes are 0).
    pub offsets: [usize; 3],
    /// Bytes from one row to the next in each plane (unused planes are 0).
    pub strides: [usize; 3],
    /// Bytes of the whole frame.
    pub size: usize,
}

impl Layout {
    /// GStreamer's default layout of `format` at `width` x `height`, or `None` for an empty or absurd size.
    pub fn new(format: PixelFormat, width: u32, height: u32) -> Option<Layout> {
        if width == 0 || height == 0 {
            return None;
        }
        let info = gst_video::VideoInfo::builder(format.video_format(), width, height).build().ok()?;
        let mut offsets = [0; 3];
        let mut strides = [0; 3];
        for p in 0..format.planes() {
            offsets[p] = info.offset()[p];
            strides[p] = usize::try_from(info.stride()[p]).ok()?;
        }
        Some(Layout { format, width, height, offsets, strides, size: info.size() })
    }

    /// Width and height of plane `p` in samples (bytes for I420, pixels for RGB).
    pub fn plane_size(&self, p: usize) -> (u32, u32) {
        match (self.format, p) {
            (PixelFormat::I420, 1 | 2) => (self.width.div_ceil(2), self.height.div_ceil(2)),
            _ => (self.width, self.height),
        }
    }

    /// Bytes of one row of plane `p` without padding.
    pub fn row_bytes(&self, p: usize) -> usize {
        let (w, _) = self.plane_size(p);
        match self.format {
            PixelFormat::Rgb => w as usize * 3,
            PixelFormat::I420 => w as usize,
        }
    }
}

/// Whether `planes` (each `(data, stride)`) hold a `format` frame of `width` x `height`: every plane there, each
/// row long enough and no row past the end.
pub fn planes_fit(format: PixelFormat, width: u32, height: u32, planes: &[(&[u8], usize)]) -> bool {
    let Some(layout) = Layout::new(format, width, height) else {
        return false;
    };
    planes.len() >= format.planes()
        && planes.iter().enumerate().take(format.planes()).all(|(p, (data, stride))| {
            let (_, rows) = layout.plane_size(p);
            let row = layout.row_bytes(p);
            *stride >= row && data.len() >= stride * (rows as usize - 1) + row
        })
}

/// A frame whose pixels lookout owns, in GStreamer's default layout (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    layout: Layout,
    data: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Picture({:?} {}x{}, {} bytes)",
            self.layout.format,
            self.layout.width,
            self.layout.height,
            self.data.len()
        )
    }
}

impl Picture {
    /// A black picture, or `None` for an empty or absurd size.
    pub fn black(format: PixelFormat, width: u32, height: u32) -> Option<Picture> {
        let layout = Layout::new(format, width, height)?;
        let mut data = vec![0u8; layout.size];
        if format == PixelFormat::I420 {
            // Black is Y 16, U = V = 128 in limited range.
            let luma_end = layout.offsets[1];
            data[..luma_end].fill(16);
            data[luma_end..].fill(128);
        }
        Some(Picture { layout, data })
    }

    /// Packed RGB (`width * height * 3` bytes, no row padding), e.g. an image file or a test pattern.
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8]) -> Option<Picture> {
        let layout = Layout::new(PixelFormat::Rgb, width, height)?;
        let row = width as usize * 3;
        if rgb.len() != row * height as usize {
            return None;
        }
        let mut data = vec![0u8; layout.size];
        for (dst, src) in data.chunks_mut(layout.strides[0]).zip(rgb.chunks(row)) {
            dst[..row].copy_from_slice(src);
        }
        Some(Picture { layout, data })
    }

    /// Fills this picture from planes given as `(data, stride)`, reshaping it first when the format or size
    /// differs (the buffer is kept when it is big enough, so a caller that reuses one picture allocates once).
    /// `None` when a plane is missing or too short.
    pub fn copy_from_planes(
        &mut self,
        format: PixelFormat,
        width: u32,
        height: u32,
        planes: &[(&[u8], usize)],
    ) -> Option<()> {
        if (self.layout.format, self.layout.width, self.layout.height) != (format, width, height) {
            self.layout = Layout::new(format, width, height)?;
            self.data.resize(self.layout.size, 0);
        }
        let layout = self.layout;
        if !planes_fit(format, width, height, planes) {
            return None;
        }
        for (p, (src, src_stride)) in planes.iter().enumerate().take(format.planes()) {
            let (_, rows) = layout.plane_size(p);
            let row = layout.row_bytes(p);
            let dst = &mut self.data[layout.offsets[p]..];
            for y in 0..rows as usize {
                let d = y * layout.strides[p];
                let s = y * src_stride;
                dst[d..d + row].copy_from_slice(&src[s..s + row]);
            }
        }
        Some(())
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn format(&self) -> PixelFormat {
        self.layout.format
    }

    pub fn width(&self) -> u32 {
        self.layout.width
    }

    pub fn height(&self) -> u32 {
        self.layout.height
    }

    /// The whole frame: [`Layout::size`] bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The whole frame, writable, with its layout.
    pub fn parts_mut(&mut self) -> (&Layout, &mut [u8]) {
        (&self.layout, &mut self.data)
    }

    /// Packed RGB of the picture (`width * height * 3` bytes), converting I420 with the colour matrix
    /// [`YuvMatrix::for_height`] picks. For tests and snapshots, not for every frame.
    pub fn to_rgb(&self) -> Vec<u8> {
        let l = &self.layout;
        let mut out = Vec::with_capacity(l.width as usize * l.height as usize * 3);
        match l.format {
            PixelFormat::Rgb => {
                for y in 0..l.height as usize {
                    let s = y * l.strides[0];
                    out.extend_from_slice(&self.data[s..s + l.width as usize * 3]);
                }
            }
            PixelFormat::I420 => {
                let m = YuvMatrix::for_height(l.height);
                for y in 0..l.height as usize {
                    for x in 0..l.width as usize {
                        let luma = self.data[l.offsets[0] + y * l.strides[0] + x];
                        let c = (y / 2) * l.strides[1] + x / 2;
                        let u = self.data[l.offsets[1] + c];
                        let v = self.data[l.offsets[2] + (y / 2) * l.strides[2] + x / 2];
                        out.extend_from_slice(&m.to_rgb([luma, u, v]));
                    }
                }
            }
        }
        out
    }
}

/// The colour matrix used to turn RGB colours into YUV (limited range, as decoders give it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YuvMatrix {
    /// ITU-R BT.601: standard definition.
    Bt601,
    /// ITU-R BT.709: HD.
    Bt709,
}

impl YuvMatrix {
    /// BT.709 from 720 lines up, BT.601 below: GStreamer's guess for caps that do not say.
    pub fn for_height(height: u32) -> YuvMatrix {
        if height >= 720 { YuvMatrix::Bt709 } else { YuvMatrix::Bt601 }
    }

    fn coefficients(self) -> (f32, f32) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        }
    }

    /// `[Y, U, V]` of an RGB colour, limited range (Y 16..235, U and V 16..240).
    pub fn to_yuv(self, rgb: [u8; 3]) -> [u8; 3] {
        let (kr, kb) = self.coefficients();
        let [r, g, b] = rgb.map(|c| c as f32 / 255.0);
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let u = (b - y) / (2.0 * (1.0 - kb));
        let v = (r - y) / (2.0 * (1.0 - kr));
        let q = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        [q(16.0 + 219.0 * y), q(128.0 + 224.0 * u), q(128.0 + 224.0 * v)]
    }

    /// The RGB colour of a limited-range `[Y, U, V]`.
    pub fn to_rgb(self, yuv: [u8; 3]) -> [u8; 3] {
        let (kr, kb) = self.coefficients();
        let y = (yuv[0] as f32 - 16.0) / 219.0;
        let u = (yuv[1] as f32 - 128.0) / 224.0;
        let v = (yuv[2] as f32 - 128.0) / 224.0;
        let r = y + 2.0 * (1.0 - kr) * v;
        let b = y + 2.0 * (1.0 - kb) * u;
        let g = (y - kr * r - kb * b) / (1.0 - kr - kb);
        [r, g, b].map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        gstreamer::init().expect("GStreamer initialises");
    }

    #[test]
    fn i420_layout_is_gstreamers() {
        init();
        // 1920x1080: Y rows of 1920, chroma rows of 960, planes back to back.
        let l = Layout::new(PixelFormat::I420, 1920, 1080).expect("layout");
        assert_eq!(l.strides, [1920, 960, 960]);
        assert_eq!(l.offsets, [0, 1920 * 1080, 1920 * 1080 + 960 * 540]);
        assert_eq!(l.size, 1920 * 1080 * 3 / 2);
        // Odd sizes: chroma rounded up, rows padded to 4 bytes.
        let l = Layout::new(PixelFormat::I420, 635, 271).expect("layout");
        assert_eq!(l.plane_size(1), (318, 136));
        assert_eq!(l.strides, [636, 320, 320]);
        let l = Layout::new(PixelFormat::Rgb, 5, 2).expect("layout");
        assert_eq!((l.strides[0], l.size), (16, 32));
        assert!(Layout::new(PixelFormat::I420, 0, 10).is_none());
    }

    #[test]
    fn colours_round_trip_through_yuv() {
        for m in [YuvMatrix::Bt601, YuvMatrix::Bt709] {
            assert_eq!(m.to_yuv([0, 0, 0]), [16, 128, 128]);
            assert_eq!(m.to_yuv([255, 255, 255]), [235, 128, 128]);
            for c in [[255, 0, 0], [60, 180, 75], [0, 130, 200], [255, 225, 25]] {
                let back = m.to_rgb(m.to_yuv(c));
                for i in 0..3 {
                    assert!((back[i] as i32 - c[i] as i32).abs() <= 3, "{m:?} {c:?} -> {back:?}");
                }
            }
        }
        // The two matrices differ where it shows: saturated red.
        assert_ne!(YuvMatrix::Bt601.to_yuv([255, 0, 0]), YuvMatrix::Bt709.to_yuv([255, 0, 0]));
    }

    #[test]
    fn planes_are_copied_row_by_row_and_the_buffer_is_reused() {
        init();
        let mut pic = Picture::black(PixelFormat::Rgb, 2, 2).expect("picture");
        let y: Vec<u8> = (0..4 * 3).collect(); // 4x3 luma, stride 4
        let u = [100u8, 101, 0, 0, 102, 103, 0, 0]; // 2x2 chroma, stride 4
        let v = [200u8, 201, 0, 0, 202, 203, 0, 0];
        pic.copy_from_planes(PixelFormat::I420, 4, 3, &[(&y, 4), (&u, 4), (&v, 4)]).expect("copied");
        let l = *pic.layout();
        assert_eq!((l.format, l.width, l.height), (PixelFormat::I420, 4, 3));
        assert_eq!(&pic.data()[..12], &y[..]);
        assert_eq!(&pic.data()[l.offsets[1]..l.offsets[1] + 2], &[100, 101]);
        assert_eq!(&pic.data()[l.offsets[1] + l.strides[1]..][..2], &[102, 103]);
        assert_eq!(&pic.data()[l.offsets[2] + l.strides[2]..][..2], &[202, 203]);
        // A plane too short is refused.
        assert!(pic.copy_from_planes(PixelFormat::I420, 4, 3, &[(&y[..11], 4), (&u, 4), (&v, 4)]).is_none());
    }

    #[test]
    fn rgb_round_trips_and_i420_converts_back() {
        init();
        let rgb: Vec<u8> = (0..3 * 3 * 2).map(|i| (i * 13) as u8).collect();
        let pic = Picture::from_rgb(3, 2, &rgb).expect("picture");
        assert_eq!(pic.to_rgb(), rgb);
        assert!(Picture::from_rgb(3, 2, &rgb[1..]).is_none());
        let black = Picture::black(PixelFormat::I420, 6, 4).expect("picture");
        assert!(black.to_rgb().iter().all(|&c| c == 0));
    }
}
