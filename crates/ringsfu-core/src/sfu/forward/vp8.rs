//! VP8 picture ids and TL0PICIDX of one outgoing stream, kept continuous across simulcast
//! switches so the subscriber's decoder sees one stream. The payload is shared between
//! subscribers, so the rewrite is a patch str0m applies while copying it into the packet.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

#[derive(Debug, Clone, Default)]
pub struct Vp8Rewriter {
    picture_id_offset: u16,
    tl0_offset: u8,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
    rebase: bool,
}

impl Vp8Rewriter {
    /// The next packet comes from another layer: continue numbering from the last output.
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    /// The patch for one payload, `None` when nothing needs rewriting (or it is not VP8-shaped).
    pub fn rewrite(&mut self, payload: &[u8]) -> Option<Vp8Patch> {
        self.rewritten(payload).and_then(|r| r.patch)
    }

    /// The numbers the subscriber will see for one payload, and the patch that makes it so.
    pub fn rewritten(&mut self, payload: &[u8]) -> Option<Rewritten> {
        let descriptor = Vp8Descriptor::parse(payload).ok()?;
        let picture_id = descriptor.picture_id()?;
        // M bit: a 15-bit picture id (browsers always use those).
        let modulus: u32 = if payload.get(2).is_some_and(|b| b & 0x80 != 0) { 0x8000 } else { 0x80 };
        let tl0 = descriptor.tl0_pic_idx();
        if self.rebase {
            self.rebase = false;
            if let Some(last) = self.last_picture_id {
                let next = (last as u32 + 1) % modulus;
                self.picture_id_offset = ((next + modulus - picture_id as u32 % modulus) % modulus) as u16;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let out_picture_id = ((picture_id as u32 + self.picture_id_offset as u32) % modulus) as u16;
        let out_tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        self.last_picture_id = Some(out_picture_id);
        if out_tl0.is_some() {
            self.last_tl0 = out_tl0;
        }
        let patch = if self.picture_id_offset == 0 && self.tl0_offset == 0 {
            None
        } else {
            let mut builder = descriptor.patch().picture_id(out_picture_id);
            if let Some(t) = out_tl0 {
                builder = builder.tl0_pic_idx(t);
            }
            builder.build().ok()
        };
        Some(Rewritten { picture_id: out_picture_id, tl0_pic_idx: out_tl0, patch })
    }
}

/// Writes a picture id and TL0PICIDX over a copy of a VP8 payload descriptor (RFC 7741 §4.2),
/// keeping its 7- or 15-bit picture id form: ringsfu's own egress patches the copy it is about
/// to encrypt. A descriptor without those fields is left as it is.
pub fn write_numbers(payload: &mut [u8], picture_id: u16, tl0_pic_idx: Option<u8>) {
    // X: extended control bits present; then I (picture id), L (TL0PICIDX).
    if payload.len() < 2 || payload[0] & 0x80 == 0 {
        return;
    }
    let (has_picture_id, has_tl0) = (payload[1] & 0x80 != 0, payload[1] & 0x40 != 0);
    let mut at = 2;
    if has_picture_id {
        let Some(&first) = payload.get(at) else { return };
        if first & 0x80 != 0 {
            if payload.len() < at + 2 {
                return;
            }
            payload[at] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
            payload[at + 1] = picture_id as u8;
            at += 2;
        } else {
            payload[at] = picture_id as u8 & 0x7f;
            at += 1;
        }
    }
    if has_tl0 && let (Some(tl0), Some(byte)) = (tl0_pic_idx, payload.get_mut(at)) {
        *byte = tl0;
    }
}

/// What one payload becomes.
#[derive(Debug, Clone, Copy)]
pub struct Rewritten {
    pub picture_id: u16,
    pub tl0_pic_idx: Option<u8>,
    pub patch: Option<Vp8Patch>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(picture_id: u16, tl0: u8) -> Vec<u8> {
        vec![0x90, 0xe0, 0x80 | (picture_id >> 8) as u8, picture_id as u8, tl0, 0x20, 0x10, 0x02, 0x00, 0xaa]
    }

    fn out(r: &mut Vp8Rewriter, p: &[u8]) -> (u16, u8) {
        let w = r.rewritten(p).unwrap();
        assert_eq!(w.patch.is_some(), r.picture_id_offset != 0 || r.tl0_offset != 0);
        (w.picture_id, w.tl0_pic_idx.unwrap())
    }

    #[test]
    fn written_numbers_land_where_the_descriptor_keeps_them() {
        let mut p = payload(1000, 200);
        write_numbers(&mut p, 0x1234, Some(7));
        assert_eq!(&p[..5], &[0x90, 0xe0, 0x80 | 0x12, 0x34, 7]);
        assert_eq!(&p[5..], &payload(1000, 200)[5..], "the rest is untouched");
        // 7-bit picture id, no TL0PICIDX.
        let mut short = vec![0x90, 0x80, 0x05, 0xaa];
        write_numbers(&mut short, 0x1234, Some(7));
        assert_eq!(short, vec![0x90, 0x80, 0x34, 0xaa]);
        // No extension bits: nothing to write; a truncated descriptor is left alone.
        let mut plain = vec![0x10, 0xaa];
        write_numbers(&mut plain, 9, Some(9));
        assert_eq!(plain, vec![0x10, 0xaa]);
        let mut cut = vec![0x90, 0xe0, 0x80];
        write_numbers(&mut cut, 9, Some(9));
        assert_eq!(cut, vec![0x90, 0xe0, 0x80]);
    }

    #[test]
    fn picture_ids_continue_across_a_switch_and_wrap() {
        let mut r = Vp8Rewriter::default();
        // Layer A: picture ids near the 15-bit wrap.
        for pid in [32_765u16, 32_766, 32_767] {
            let p = payload(pid, 10);
            assert_eq!(out(&mut r, &p), (pid, 10), "untouched before any switch");
        }
        // Switch to layer B, numbered elsewhere.
        r.rebase();
        let p = payload(1000, 200);
        assert_eq!(out(&mut r, &p), (0, 11), "continues after 32767 with 0, TL0 + 1");
        let p = payload(1001, 200);
        assert_eq!(out(&mut r, &p), (1, 11));
        let p = payload(1002, 201);
        assert_eq!(out(&mut r, &p), (2, 12));
    }
}
