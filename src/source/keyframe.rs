//! Which packets a decoder can start from, read from the bitstream for the codecs whose containers mark them
//! wrong.
//!
//! A clip starts at the keyframe at or before its pre-roll ([`super::PreRollRing::since`]), and GStreamer says
//! which packets are keyframes with the `DELTA_UNIT` flag, which the demuxer sets from the container. For H.264
//! and H.265 a parser sets it again from the NAL units, but DivX 3 has no parser, MJPEG's and MPEG-4 part 2's
//! keep the demuxer's flag, and AVI files from CCTV recorders often mark only their first frame in the index
//! (then every later packet is a delta unit: a clip of an event 16.5 s in started at 0.0 s, the only "keyframe")
//! or have no index at all (then every packet is a keyframe: clips started on a P-frame). For these codecs the
//! picture type at the start of each packet decides:
//!
//! | caps                                                       | keyframe when                                        |
//! |------------------------------------------------------------|------------------------------------------------------|
//! | `image/jpeg` (MJPEG)                                       | always: every frame stands alone                     |
//! | `video/x-msmpeg` v4.2, v4.3; `video/x-divx` v3 (DivX ;-) 3) | the first 2 bits (picture type) are 0, an I-picture  |
//! | `video/mpeg` v4, `video/x-divx` v4/v5, `video/x-xvid`       | the first VOP (after `00 00 01 B6`) is coded I (`00`)|
//! | `video/x-vp8`                                              | bit 0 of the frame tag is 0 (RFC 6386, 9.1)           |
//!
//! The MS-MPEG4 picture header is FFmpeg's `ff_msmpeg4_decode_picture_header` (v2 and v3 start with the 2-bit
//! type, I = 0, P = 1); the VOP header is ISO/IEC 14496-2, 6.2.5 (`vop_coding_type`). Other codecs keep the
//! container's flag.

use gstreamer as gst;

/// How a codec says that a packet is a keyframe (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeSyntax {
    /// Every frame is a keyframe (MJPEG).
    EveryFrame,
    /// MS-MPEG4 v2/v3 (DivX 3): a 2-bit picture type at the start of the frame.
    MsMpeg4,
    /// MPEG-4 part 2 (DivX 4/5, Xvid): the coding type of the first VOP.
    Mpeg4Vop,
    /// VP8: the frame tag's first bit.
    Vp8,
}

/// How far into a packet the first VOP start code is looked for: past a VOL header and user data, not the
/// whole frame.
const VOP_SEARCH_BYTES: usize = 4096;

impl KeyframeSyntax {
    /// The syntax of the codec of `caps`, or `None` for a codec whose container (or parser) flags are kept.
    pub fn of_caps(caps: &gst::CapsRef) -> Option<Self> {
        let s = caps.structure(0)?;
        let version = |field: &str| s.get::<i32>(field).ok();
        match s.name().as_str() {
            "image/jpeg" => Some(KeyframeSyntax::EveryFrame),
            "video/x-msmpeg" => matches!(version("msmpegversion"), Some(42 | 43)).then_some(KeyframeSyntax::MsMpeg4),
            "video/x-divx" => match version("divxversion") {
                Some(3) => Some(KeyframeSyntax::MsMpeg4),
                Some(4 | 5) => Some(KeyframeSyntax::Mpeg4Vop),
                _ => None,
            },
            "video/x-xvid" => Some(KeyframeSyntax::Mpeg4Vop),
            "video/mpeg" => (version("mpegversion") == Some(4)).then_some(KeyframeSyntax::Mpeg4Vop),
            "video/x-vp8" => Some(KeyframeSyntax::Vp8),
            _ => None,
        }
    }

    /// Whether the packet `data` is a keyframe, or `None` when it does not say (empty, or no VOP in it).
    pub fn is_keyframe(self, data: &[u8]) -> Option<bool> {
        match self {
            KeyframeSyntax::EveryFrame => Some(true),
            KeyframeSyntax::MsMpeg4 => data.first().map(|b| b >> 6 == 0),
            KeyframeSyntax::Mpeg4Vop => {
                let head = &data[..data.len().min(VOP_SEARCH_BYTES)];
                let vop = head.windows(4).position(|w| w == [0, 0, 1, 0xB6])?;
                head.get(vop + 4).map(|b| b >> 6 == 0)
            }
            KeyframeSyntax::Vp8 => data.first().map(|b| b & 1 == 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(s: &str) -> gst::Caps {
        gst::init().unwrap();
        s.parse().unwrap()
    }

    #[test]
    fn the_codecs_read_from_the_bitstream() {
        let of = |s: &str| KeyframeSyntax::of_caps(&caps(s));
        assert_eq!(of("image/jpeg"), Some(KeyframeSyntax::EveryFrame));
        assert_eq!(of("video/x-msmpeg, msmpegversion=(int)43"), Some(KeyframeSyntax::MsMpeg4));
        assert_eq!(of("video/x-divx, divxversion=(int)3"), Some(KeyframeSyntax::MsMpeg4));
        assert_eq!(of("video/x-divx, divxversion=(int)5"), Some(KeyframeSyntax::Mpeg4Vop));
        assert_eq!(of("video/mpeg, mpegversion=(int)4, systemstream=(boolean)false"), Some(KeyframeSyntax::Mpeg4Vop));
        assert_eq!(of("video/x-vp8"), Some(KeyframeSyntax::Vp8));
        // The parsers of these set the flag from the bitstream already; MS-MPEG4 v1 has another header.
        assert_eq!(of("video/x-h264, stream-format=avc"), None);
        assert_eq!(of("video/x-h265"), None);
        assert_eq!(of("video/mpeg, mpegversion=(int)2"), None);
        assert_eq!(of("video/x-msmpeg, msmpegversion=(int)41"), None);
    }

    #[test]
    fn picture_types() {
        // DivX 3: avenc_msmpeg4's I-picture starts 0x07 (type 00), its P-pictures 0x45 (type 01).
        assert_eq!(KeyframeSyntax::MsMpeg4.is_keyframe(&[0x07, 0x7b, 0xc0]), Some(true));
        assert_eq!(KeyframeSyntax::MsMpeg4.is_keyframe(&[0x45, 0xff]), Some(false));
        assert_eq!(KeyframeSyntax::MsMpeg4.is_keyframe(&[]), None);
        // MPEG-4: a VOL header, then the VOP; I = 00, P = 01, B = 10.
        let vop = |coding: u8| [&[0, 0, 1, 0x20, 0x08, 0xc8][..], &[0, 0, 1, 0xB6, coding << 6 | 0x12]].concat();
        assert_eq!(KeyframeSyntax::Mpeg4Vop.is_keyframe(&vop(0)), Some(true));
        assert_eq!(KeyframeSyntax::Mpeg4Vop.is_keyframe(&vop(1)), Some(false));
        assert_eq!(KeyframeSyntax::Mpeg4Vop.is_keyframe(&vop(2)), Some(false));
        assert_eq!(KeyframeSyntax::Mpeg4Vop.is_keyframe(&[0, 0, 1, 0x20, 0x08]), None, "no VOP: the flag stays");
        // VP8: frame tag bit 0 is 0 on a key frame (which has the start code 9d 01 2a at byte 3).
        assert_eq!(KeyframeSyntax::Vp8.is_keyframe(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a]), Some(true));
        assert_eq!(KeyframeSyntax::Vp8.is_keyframe(&[0x31, 0x0c, 0x00]), Some(false));
        assert_eq!(KeyframeSyntax::EveryFrame.is_keyframe(&[0xff, 0xd8]), Some(true));
    }
}
