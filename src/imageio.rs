//! Reading photos from files into 8-bit RGB, with the pixel values transformers gets from Pillow.
//!
//! transformers reads a photo with Pillow, `Image.open(file).convert("RGB")`, so the model sees Pillow's pixels.
//! - **PNG** is lossless: every correct decoder gives the same values, and the `image` crate reads it.
//! - **JPEG** is not. Decoders differ in their inverse DCT and in how they upsample the subsampled chroma
//!   planes, by a few levels on a tenth of the samples of a typical photo (the `image` crate's decoder moved
//!   boxes by up to 0.5 px and scores by 3e-3 on the golden photo). Pillow decodes with libjpeg-turbo and
//!   libjpeg's defaults: the accurate integer IDCT (`JDCT_ISLOW`) and "fancy" (triangle-filter) upsampling,
//!   no scaling (Pillow's `draft` mode is off unless asked for). This module calls libjpeg-turbo the same way,
//!   through its TurboJPEG API (`tj3Decompress8`), whose defaults are exactly those settings.
//!
//! Colour, as Pillow's `convert("RGB")` does it:
//! - grayscale JPEG: each grey level copied to R, G and B;
//! - CMYK and YCCK JPEG: libjpeg gives CMYK; Pillow reads it with Adobe's inverted polarity (`CMYK;I`, for every
//!   CMYK JPEG) and converts it with `R = (255 - K) - (255 - K) * C / 255` (rounded as Pillow's `MULDIV255`),
//!   and the same for G and B. No ICC profile is applied, by Pillow or here.
//!
//! What the format is comes from the file's first bytes, as with Pillow, not from its name.
//!
//! libjpeg's warnings (for example stray bytes before a marker) do not stop Pillow, and do not stop this decoder
//! either. The one exception is a file that ends early: Pillow refuses it ("image file is truncated"), and here
//! it is an error too.
//!
//! Not done: EXIF orientation. transformers' `pipeline(...)` and `load_image` turn the photo upright
//! (`ImageOps.exif_transpose`) before the processor sees it; `Image.open` and the processors do not, and neither
//! does lookout: boxes are in the pixels as stored.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use turbojpeg_sys as tj;

/// Why a photo could not be read. Each message is one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    /// The path does not exist.
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },
    /// The file exists but could not be read.
    #[error("{}: cannot read: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    /// The file is neither a PNG nor a JPEG.
    #[error("{}: not an image lookout can read (use PNG or JPEG)", path.display())]
    NotAnImage { path: PathBuf },
    /// More pixels than [`MAX_PIXELS`], the limit past which Pillow refuses an image as a decompression bomb
    /// (decoding it would take gigabytes of memory).
    #[error(
        "{}: too large ({width}x{height}, {} MP; the limit is {} MP): scale it down first",
        path.display(), megapixels(*width as u64 * *height as u64), megapixels(MAX_PIXELS)
    )]
    TooLarge { path: PathBuf, width: u32, height: u32 },
    /// A PNG or JPEG that does not decode: damaged, cut short, or a kind lookout does not read (12-bit JPEG).
    #[error("{}: cannot decode the image ({reason}); is the file complete?", path.display())]
    Decode { path: PathBuf, reason: String },
}

/// The photo at `path` as 8-bit RGB, with the pixel values Pillow gives (see the module docs).
pub fn load_rgb(path: &Path) -> Result<image::RgbImage, ImageIoError> {
    if !path.exists() {
        return Err(ImageIoError::NotFound { path: path.into() });
    }
    let bytes = std::fs::read(path).map_err(|err| ImageIoError::Read { path: path.into(), err })?;
    let decode_error = |reason: String| ImageIoError::Decode { path: path.into(), reason };
    let too_large = |(width, height): (u32, u32)| ImageIoError::TooLarge { path: path.into(), width, height };
    if is_jpeg(&bytes) {
        let decoded = decode_jpeg(&bytes).map_err(|e| match e {
            JpegError::TooLarge(size) => too_large(size),
            JpegError::Other(reason) => decode_error(reason),
        })?;
        if let Some(warning) = decoded.warning {
            tracing::warn!("{}: {warning} (decoded all the same, as Pillow would)", path.display());
        }
        return Ok(decoded.image);
    }
    match image::guess_format(&bytes) {
        Ok(format @ image::ImageFormat::Png) => {
            let reader = || image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
            // The size is in the header: a huge image is refused before anything is allocated for it.
            let size = reader().into_dimensions().map_err(|e| decode_error(e.to_string()))?;
            if size.0 as u64 * size.1 as u64 > MAX_PIXELS {
                return Err(too_large(size));
            }
            let mut reader = reader();
            // Room for any image within MAX_PIXELS (the default limit of 512 MiB would refuse some of them).
            let mut limits = image::Limits::default();
            limits.max_alloc = Some(MAX_PIXELS * 8);
            reader.limits(limits);
            reader.decode().map(|img| img.to_rgb8()).map_err(|e| match e {
                image::ImageError::Limits(_) => too_large(size),
                e => decode_error(e.to_string()),
            })
        }
        _ => Err(ImageIoError::NotAnImage { path: path.into() }),
    }
}

/// Millions of pixels, rounded to the nearest.
fn megapixels(pixels: u64) -> u64 {
    (pixels + 500_000) / 1_000_000
}

/// A JPEG starts with SOI (FF D8) and then another marker (FF xx).
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
}

/// A decoded JPEG and libjpeg's first warning, if it gave one.
struct DecodedJpeg {
    image: image::RgbImage,
    warning: Option<String>,
}

/// libjpeg's warning when the data ends before the image does (`JWRN_JPEG_EOF` in jerror.h). TurboJPEG's source
/// manager then pads the data with an end marker and carries on, where Pillow's stops and reports the file as
/// truncated.
const PREMATURE_END: &str = "Premature end of JPEG file";

/// Pillow refuses images of more than twice `Image.MAX_IMAGE_PIXELS` (89,478,485) as decompression bombs.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Why a JPEG did not decode.
enum JpegError {
    /// More than [`MAX_PIXELS`]: (width, height).
    TooLarge((u32, u32)),
    /// libjpeg's or TurboJPEG's message.
    Other(String),
}

impl From<String> for JpegError {
    fn from(s: String) -> Self {
        JpegError::Other(s)
    }
}

impl From<&str> for JpegError {
    fn from(s: &str) -> Self {
        JpegError::Other(s.into())
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<DecodedJpeg, JpegError> {
    let mut d = Decompressor::new()?;
    // The TurboJPEG defaults, set anyway because they are what makes the pixels Pillow's: the accurate integer
    // IDCT (JDCT_ISLOW) and fancy upsampling. Warnings do not stop decoding (libjpeg's and Pillow's behaviour).
    d.set(tj::TJPARAM_TJPARAM_FASTDCT, 0)?;
    d.set(tj::TJPARAM_TJPARAM_FASTUPSAMPLE, 0)?;
    d.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 0)?;
    // The size is checked here (after the header) to name it; TurboJPEG's own limit stays as a backstop.
    d.set(tj::TJPARAM_TJPARAM_MAXPIXELS, MAX_PIXELS as i32)?;

    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    let rc = unsafe { tj::tj3DecompressHeader(d.handle, bytes.as_ptr(), bytes.len() as tj::size_t) };
    let header_warning = d.check(rc)?;
    let width = u32::try_from(d.get(tj::TJPARAM_TJPARAM_JPEGWIDTH)).map_err(|_| "no width in the header")?;
    let height = u32::try_from(d.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT)).map_err(|_| "no height in the header")?;
    let colorspace = d.get(tj::TJPARAM_TJPARAM_COLORSPACE) as tj::TJCS;
    let (format, channels) = match colorspace {
        tj::TJCS_TJCS_GRAY => (tj::TJPF_TJPF_GRAY, 1),
        tj::TJCS_TJCS_CMYK | tj::TJCS_TJCS_YCCK => (tj::TJPF_TJPF_CMYK, 4),
        _ => (tj::TJPF_TJPF_RGB, 3),
    };
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(JpegError::TooLarge((width, height)));
    }
    let (w, h) = (width as usize, height as usize);
    let len = w.checked_mul(h).and_then(|n| n.checked_mul(channels)).ok_or("the image is too large")?;
    let mut pixels = vec![0u8; len];
    // SAFETY: `pixels` holds `height` rows of `width * channels` bytes, the size tj3Decompress8 writes for this
    // header and pixel format with no scaling; pitch 0 means rows of exactly that size.
    let rc = unsafe {
        tj::tj3Decompress8(d.handle, bytes.as_ptr(), bytes.len() as tj::size_t, pixels.as_mut_ptr(), 0, format)
    };
    let warning = d.check(rc)?.or(header_warning);
    if warning.as_deref() == Some(PREMATURE_END) {
        return Err(PREMATURE_END.into());
    }
    let rgb = match channels {
        1 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        4 => pixels.chunks_exact(4).flat_map(|p| cmyk_to_rgb([p[0], p[1], p[2], p[3]])).collect(),
        _ => pixels,
    };
    let image = image::RgbImage::from_raw(width, height, rgb).ok_or("the decoder gave the wrong number of bytes")?;
    Ok(DecodedJpeg { image, warning })
}

/// Pillow's CMYK -> RGB for one pixel as libjpeg gives it. Pillow stores JPEG CMYK inverted (`CMYK;I`), so its
/// `255 - K` is libjpeg's K and its C is `255 - C` of libjpeg's.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = k as u32;
    let channel = |v: u8| (nk - muldiv255(255 - v as u32, nk)) as u8;
    [channel(c), channel(m), channel(y)]
}

/// `a * b / 255`, rounded as Pillow's `MULDIV255` macro does it.
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// A TurboJPEG decompressor handle, destroyed on drop.
struct Decompressor {
    handle: tj::tjhandle,
}

impl Decompressor {
    fn new() -> Result<Self, String> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked below.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
        if handle.is_null() {
            // SAFETY: with a null handle, tj3GetErrorStr returns the thread's last global error message.
            return Err(unsafe { message(tj::tj3GetErrorStr(std::ptr::null_mut())) });
        }
        Ok(Self { handle })
    }

    fn set(&mut self, param: tj::TJPARAM, value: i32) -> Result<(), String> {
        // SAFETY: `self.handle` is a live handle.
        let rc = unsafe { tj::tj3Set(self.handle, param as i32, value) };
        self.check(rc).map(|_| ())
    }

    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: `self.handle` is a live handle.
        unsafe { tj::tj3Get(self.handle, param as i32) }
    }

    /// The outcome of a call that returned `rc`: `Ok(None)` on success, `Ok(Some(warning))` when libjpeg warned
    /// and went on, `Err` when it stopped.
    fn check(&mut self, rc: i32) -> Result<Option<String>, String> {
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: `self.handle` is a live handle; the message is copied before the next TurboJPEG call.
        let (code, text) = unsafe { (tj::tj3GetErrorCode(self.handle), message(tj::tj3GetErrorStr(self.handle))) };
        if code == tj::TJERR_TJERR_WARNING as i32 { Ok(Some(text)) } else { Err(text) }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.handle) }
    }
}

/// TurboJPEG's message, on one line (libjpeg's messages are one line; this makes sure of it).
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string.
unsafe fn message(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        return "unknown TurboJPEG error".into();
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ptr) }.to_string_lossy();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_rounds_as_pillow_does() {
        // Pillow's MULDIV255 is round(a * b / 255) for every pair of bytes.
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                assert_eq!(muldiv255(a, b), (a * b * 2 + 255) / 510, "{a} * {b}");
            }
        }
    }

    #[test]
    fn cmyk_white_black_and_grey() {
        // libjpeg's CMYK of an Adobe file is inverted: 255 is no ink.
        assert_eq!(cmyk_to_rgb([255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([0, 255, 255, 255]), [0, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 128]), [128, 128, 128]);
    }

    #[test]
    fn only_the_start_of_image_marker_makes_a_jpeg() {
        assert!(is_jpeg(&[0xff, 0xd8, 0xff, 0xe0]));
        assert!(!is_jpeg(b"\x89PNG\r\n\x1a\n"));
        assert!(!is_jpeg(&[0xff, 0xd8]));
    }
}
