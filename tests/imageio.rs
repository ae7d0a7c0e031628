//! Photos decode to the pixels transformers gets from Pillow (`Image.open(f).convert("RGB")`).
//!
//! The JPEG fixtures and `tests/golden/jpeg/decode.json` come from models/export_owl.py: matplotlib's
//! grace_hopper.jpg, and small crops of the other photos that Pillow encoded in each chroma subsampling,
//! progressive, grayscale and CMYK. The golden holds the sha256 of Pillow's decoded RGB buffer and a few pixels.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fixture, golden, tiny_model};
use lookout::imageio::{ImageIoError, load_rgb};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
struct DecodeGolden {
    pillow: String,
    libjpeg_turbo: String,
    images: Vec<DecodedJpeg>,
}

#[derive(Debug, Deserialize)]
struct DecodedJpeg {
    file: String,
    width: u32,
    height: u32,
    jpeg_mode: String,
    rgb_sha256: String,
    pixels: Vec<Pixel>,
}

#[derive(Debug, Deserialize)]
struct Pixel {
    x: u32,
    y: u32,
    rgb: [u8; 3],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn jpeg_decodes_to_pillows_pixels_exactly() {
    let g: DecodeGolden = serde_json::from_str(&std::fs::read_to_string(golden("jpeg/decode.json")).unwrap()).unwrap();
    assert!(g.images.len() >= 6, "the golden covers the photo and each kind of JPEG");
    for want in &g.images {
        let what =
            format!("{} ({}; Pillow {}, libjpeg-turbo {})", want.file, want.jpeg_mode, g.pillow, g.libjpeg_turbo);
        let img = load_rgb(&fixture(&want.file)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((img.width(), img.height()), (want.width, want.height), "{what}: size");
        for p in &want.pixels {
            assert_eq!(img.get_pixel(p.x, p.y).0, p.rgb, "{what}: pixel ({}, {})", p.x, p.y);
        }
        assert_eq!(hex(&Sha256::digest(img.as_raw())), want.rgb_sha256, "{what}: sha256 of the RGB buffer");
    }
}

/// grace_hopper.png is Pillow's decode of grace_hopper.jpg; a mismatch here says how far off and where.
#[test]
fn grace_hopper_jpg_decodes_to_grace_hopper_png() {
    let jpg = load_rgb(&fixture("grace_hopper.jpg")).unwrap();
    let png = load_rgb(&fixture("grace_hopper.png")).unwrap();
    assert_eq!(jpg.dimensions(), png.dimensions());
    let diffs: Vec<(usize, i16)> = jpg
        .as_raw()
        .iter()
        .zip(png.as_raw())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (&a, &b))| (i, a as i16 - b as i16))
        .collect();
    let worst = diffs.iter().map(|d| d.1.abs()).max().unwrap_or(0);
    assert!(
        diffs.is_empty(),
        "{} of {} samples differ from Pillow's decode, by up to {worst}; first at pixel {}",
        diffs.len(),
        jpg.as_raw().len(),
        diffs[0].0 / 3
    );
}

/// libjpeg warns about, and Pillow accepts, stray bytes before the end marker (some cameras write them).
#[test]
fn jpeg_with_stray_bytes_before_the_end_decodes_as_pillow_does() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("grace_hopper.jpg")).unwrap();
    assert_eq!(&bytes[bytes.len() - 2..], &[0xff, 0xd9]);
    let mut stray = bytes[..bytes.len() - 2].to_vec();
    stray.extend_from_slice(&[0, 0, 0, 0xff, 0xd9]);
    let path = dir.path().join("stray.jpg");
    std::fs::write(&path, &stray).unwrap();
    assert_eq!(load_rgb(&path).unwrap(), load_rgb(&fixture("grace_hopper.jpg")).unwrap());
}

/// Pillow refuses a JPEG that ends early ("image file is truncated"), even one that lacks only its end marker.
#[test]
fn truncated_jpeg_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("grace_hopper.jpg")).unwrap();
    for (name, len) in [("half.jpg", bytes.len() / 2), ("no-end-marker.jpg", bytes.len() - 2)] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let e = match load_rgb(&path) {
            Ok(_) => panic!("{name}: decoded, but Pillow refuses it as truncated"),
            Err(e) => e,
        };
        assert!(matches!(e, ImageIoError::Decode { .. }), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(&path.display().to_string()) && msg.ends_with("is the file complete?"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn other_bad_files_are_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jpg");
    let e = load_rgb(&missing).map(|_| ()).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: no such file", missing.display()));
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    // The content decides, as with Pillow, not the name.
    let e = load_rgb(&text).map(|_| ()).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: not an image lookout can read (use PNG or JPEG)", text.display()));
    // A JPEG start marker and nothing else.
    let header_only = dir.path().join("header-only.jpg");
    std::fs::write(&header_only, [0xff, 0xd8, 0xff, 0xe0]).unwrap();
    let e = load_rgb(&header_only).map(|_| ()).unwrap_err();
    assert!(matches!(e, ImageIoError::Decode { .. }), "{e:?}");
}

/// `locate` on the JPEG reports exactly what it reports on its Pillow decode.
#[test]
fn locate_on_the_jpeg_matches_locate_on_its_pillow_decode() {
    let run = |image: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .env("RUST_LOG", "warn")
            .args(["locate", "--json", "--no-images", "--threshold", "0.2"])
            .arg(image)
            .arg("-m")
            .arg(tiny_model("owlv2"))
            .args(["-q", "a woman in uniform", "-q", "a flag"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_object_mut().unwrap().remove("image");
        v
    };
    let (jpg, png) = (run(&fixture("grace_hopper.jpg")), run(&fixture("grace_hopper.png")));
    assert_eq!((&jpg["width"], &jpg["height"]), (&png["width"], &png["height"]));
    let (jr, pr) = (jpg["results"].as_array().unwrap(), png["results"].as_array().unwrap());
    assert!(!pr.is_empty());
    assert_eq!(jr.len(), pr.len(), "number of results");
    for (n, (j, p)) in jr.iter().zip(pr).enumerate() {
        assert_eq!(j, p, "result {n}");
    }
}

/// CRC-32 (ISO-HDLC, as PNG uses it), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG that says it is `width` x `height` RGB, with one IDAT of a few bytes: enough for its header to be read.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&crc32(&[kind, data].concat()).to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    // zlib: a stored block of 4 zero bytes.
    let idat = [0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x00];
    [b"\x89PNG\r\n\x1a\n".to_vec(), chunk(b"IHDR", &ihdr), chunk(b"IDAT", &idat), chunk(b"IEND", &[])].concat()
}

/// grace_hopper.jpg with the size in its start-of-frame marker changed to `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut b = std::fs::read(fixture("grace_hopper.jpg")).unwrap();
    let mut i = 2;
    loop {
        assert_eq!(b[i], 0xff, "a marker at {i}");
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if matches!(b[i + 1], 0xc0..=0xc2) {
            b[i + 5..i + 7].copy_from_slice(&height.to_be_bytes());
            b[i + 7..i + 9].copy_from_slice(&width.to_be_bytes());
            return b;
        }
        i += 2 + len;
    }
}

/// An image of more pixels than Pillow accepts (16000x16000 = 256 MP) is refused as too large, naming its size
/// and the limit, before any memory is taken for it; not as a damaged file.
#[test]
fn too_large_images_are_refused_naming_the_size_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("huge.png", png_header_only(16000, 16000)), ("huge.jpg", jpeg_claiming(16000, 16000))] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = load_rgb(&path).map(|_| ()).unwrap_err();
        assert!(matches!(e, ImageIoError::TooLarge { width: 16000, height: 16000, .. }), "{name}: {e:?}");
        assert_eq!(
            e.to_string(),
            format!("{}: too large (16000x16000, 256 MP; the limit is 179 MP): scale it down first", path.display())
        );
    }
    assert_eq!(lookout::imageio::MAX_PIXELS, 178_956_970, "Pillow's: twice Image.MAX_IMAGE_PIXELS");
}
