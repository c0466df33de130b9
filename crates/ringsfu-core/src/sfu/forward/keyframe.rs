//! Does this RTP payload start a keyframe? Per codec, reading only the payload descriptor and
//! the first NAL/frame header bytes.

use crate::sfu::ortc::Mime;

pub fn starts_keyframe(mime: Mime, payload: &[u8]) -> bool {
    match mime {
        Mime::Vp8 => vp8(payload),
        Mime::Vp9 => vp9(payload),
        Mime::H264 => h264(payload),
        _ => false,
    }
}

/// RFC 7741: S=1, PID=0, and the VP8 frame header's P bit (inverse key frame flag) clear.
fn vp8(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x0f;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&x) = p.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID / KEYIDX
        }
    }
    p.get(at).is_some_and(|header| header & 0x01 == 0)
}

/// VP9 payload descriptor: B (start of frame) set and P (inter-picture predicted) clear, on the
/// base spatial layer.
fn vp9(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    let inter_predicted = first & 0x40 != 0;
    let layer_indices = first & 0x20 != 0;
    let begins_frame = first & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if !layer_indices {
        return true;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&pid) = p.get(at) else { return false };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID(3) U(1) SID(3) D(1); SID must be 0.
    p.get(at).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice or an SPS, alone, in a STAP-A, or at the start of an FU-A.
fn h264(p: &[u8]) -> bool {
    let Some(&header) = p.first() else { return false };
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    match header & 0x1f {
        24 => {
            // STAP-A: 16-bit size + NAL unit, repeated.
            let mut at = 1;
            while at + 2 < p.len() {
                let size = u16::from_be_bytes([p[at], p[at + 1]]) as usize;
                if size == 0 {
                    return false;
                }
                if is_key(p[at + 2] & 0x1f) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_and_delta_frames() {
        // X=1, S=1, PID=0; I=1 with a 15-bit picture id; then a key frame header (P=0).
        assert!(starts_keyframe(Mime::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x10, 0x02]));
        // Same with P=1: a delta frame.
        assert!(!starts_keyframe(Mime::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x11, 0x02]));
        // Not the start of a partition.
        assert!(!starts_keyframe(Mime::Vp8, &[0x80, 0x80, 0x81, 0x23, 0x10]));
        // Minimal descriptor, key frame.
        assert!(starts_keyframe(Mime::Vp8, &[0x10, 0x00]));
        assert!(!starts_keyframe(Mime::Vp8, &[]));
        assert!(!starts_keyframe(Mime::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn h264_idr_sps_stap_and_fu() {
        assert!(starts_keyframe(Mime::H264, &[0x65, 0x88])); // IDR
        assert!(starts_keyframe(Mime::H264, &[0x67, 0x42])); // SPS
        assert!(!starts_keyframe(Mime::H264, &[0x41, 0x9a])); // non-IDR slice
        assert!(starts_keyframe(Mime::H264, &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce])); // STAP-A with SPS
        assert!(starts_keyframe(Mime::H264, &[0x7c, 0x85, 0x88])); // FU-A start of IDR
        assert!(!starts_keyframe(Mime::H264, &[0x7c, 0x05, 0x88])); // FU-A middle
    }

    #[test]
    fn vp9_start_of_intra_frame() {
        assert!(starts_keyframe(Mime::Vp9, &[0x08, 0x00]));
        assert!(!starts_keyframe(Mime::Vp9, &[0x48, 0x00])); // inter predicted
        assert!(!starts_keyframe(Mime::Vp9, &[0x00, 0x00])); // not the beginning of a frame
        assert!(starts_keyframe(Mime::Vp9, &[0x28, 0x00])); // L=1, SID 0
        assert!(!starts_keyframe(Mime::Vp9, &[0x28, 0x02])); // L=1, SID 1
    }
}
