//! Synthetic media: Opus-sized audio and VP8-shaped video (real payload descriptors, keyframes,
//! three temporal layers), each packet stamped with its send time and a sequence number so the
//! receiver can measure latency and continuity.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Trailer at the end of every synthetic payload.
const STAMP_MAGIC: &[u8; 4] = b"RSFU";
pub const STAMP_LEN: usize = 16;
/// Largest RTP payload we generate (leaves room for headers, SRTP and extensions under 1200 B).
pub const MAX_PAYLOAD: usize = 1100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Microseconds since the Unix epoch when the packet was generated.
    pub sent_at_us: u64,
    /// Per-source packet counter.
    pub counter: u32,
}

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn push_stamp(out: &mut Vec<u8>, stamp: Stamp) {
    out.extend_from_slice(STAMP_MAGIC);
    out.extend_from_slice(&stamp.sent_at_us.to_be_bytes());
    out.extend_from_slice(&stamp.counter.to_be_bytes());
}

pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let tail = payload.get(payload.len().checked_sub(STAMP_LEN)?..)?;
    if &tail[..4] != STAMP_MAGIC {
        return None;
    }
    Some(Stamp {
        sent_at_us: u64::from_be_bytes(tail[4..12].try_into().ok()?),
        counter: u32::from_be_bytes(tail[12..16].try_into().ok()?),
    })
}

/// One RTP packet to write: (payload type decided by the caller).
#[derive(Debug, Clone)]
pub struct Generated {
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
    pub keyframe: bool,
}

/// Opus-like audio: one packet of `bytes` every 20 ms.
#[derive(Debug, Clone)]
pub struct AudioSource {
    seq: u64,
    timestamp: u32,
    counter: u32,
    bytes: usize,
    next: Option<Instant>,
}

pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

impl AudioSource {
    pub fn new(bytes: usize) -> AudioSource {
        AudioSource { seq: rand::random_range(0..10_000), timestamp: rand::random(), counter: 0, bytes, next: None }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    pub fn generate(&mut self, now: Instant, out: &mut Vec<Generated>) {
        let due = *self.next.get_or_insert(now);
        if due > now {
            return;
        }
        self.next = Some(due.max(now - AUDIO_INTERVAL) + AUDIO_INTERVAL);
        let mut payload = vec![0xfc; self.bytes.saturating_sub(STAMP_LEN)];
        push_stamp(&mut payload, Stamp { sent_at_us: now_us(), counter: self.counter });
        out.push(Generated { seq: self.seq, timestamp: self.timestamp, marker: false, payload, keyframe: false });
        self.seq += 1;
        self.counter += 1;
        self.timestamp = self.timestamp.wrapping_add(960);
    }
}

/// One VP8 simulcast layer: frames at `fps`, sized for `bitrate`, temporal pattern 0-2-1-2.
#[derive(Debug, Clone)]
pub struct VideoSource {
    seq: u64,
    timestamp: u32,
    counter: u32,
    picture_id: u16,
    tl0_pic_idx: u8,
    frame: u64,
    pub bitrate: u64,
    pub fps: u32,
    /// A keyframe every this many frames (0: only when asked).
    pub keyframe_interval: u64,
    keyframe_wanted: bool,
    next: Option<Instant>,
}

impl VideoSource {
    pub fn new(bitrate: u64, fps: u32) -> VideoSource {
        VideoSource {
            seq: rand::random_range(0..10_000),
            timestamp: rand::random(),
            counter: 0,
            picture_id: rand::random_range(0..0x7fff),
            tl0_pic_idx: rand::random(),
            frame: 0,
            bitrate,
            fps: fps.max(1),
            keyframe_interval: (fps as u64) * 3,
            keyframe_wanted: true,
            next: None,
        }
    }

    pub fn request_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    fn interval(&self) -> Duration {
        Duration::from_micros(1_000_000 / self.fps as u64)
    }

    pub fn generate(&mut self, now: Instant, out: &mut Vec<Generated>) {
        let due = *self.next.get_or_insert(now);
        if due > now {
            return;
        }
        let interval = self.interval();
        self.next = Some(due.max(now - interval) + interval);
        let keyframe = self.keyframe_wanted || (self.keyframe_interval > 0 && self.frame % self.keyframe_interval == 0);
        self.keyframe_wanted = false;
        // Temporal layer pattern of L1T3: 0, 2, 1, 2; a keyframe restarts it.
        let tid: u8 = if keyframe { 0 } else { [0, 2, 1, 2][(self.frame % 4) as usize] };
        if tid == 0 {
            self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
        }
        let average = (self.bitrate / 8 / self.fps as u64) as usize;
        let frame_bytes = if keyframe { (average * 4).max(1200) } else { average.max(200) };
        let per_packet = MAX_PAYLOAD - STAMP_LEN - 16;
        let packets = frame_bytes.div_ceil(per_packet).max(1);
        let sent_at_us = now_us();
        for i in 0..packets {
            let start = i == 0;
            let mut payload = Vec::with_capacity(MAX_PAYLOAD);
            // VP8 payload descriptor: X, S (first packet), PID 0; I L T; 15-bit PictureID; TL0PICIDX; TID.
            payload.push(if start { 0x90 } else { 0x80 });
            payload.push(0xe0);
            payload.push(0x80 | (self.picture_id >> 8) as u8);
            payload.push(self.picture_id as u8);
            payload.push(self.tl0_pic_idx);
            payload.push((tid << 6) | 0x20);
            if start {
                // VP8 frame header: P bit clear for a key frame.
                payload.extend_from_slice(&[if keyframe { 0x10 } else { 0x11 }, 0x02, 0x00]);
                if keyframe {
                    payload.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
                }
            }
            let size = (frame_bytes / packets).clamp(STAMP_LEN + 8, per_packet);
            payload.resize(size.max(payload.len()), 0x5a);
            push_stamp(&mut payload, Stamp { sent_at_us, counter: self.counter });
            out.push(Generated {
                seq: self.seq,
                timestamp: self.timestamp,
                marker: i + 1 == packets,
                payload,
                keyframe: keyframe && start,
            });
            self.seq += 1;
            self.counter += 1;
        }
        self.frame += 1;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.timestamp = self.timestamp.wrapping_add(90_000 / self.fps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsfu_core::sfu::forward::keyframe::starts_keyframe;
    use ringsfu_core::sfu::ortc::Mime;

    #[test]
    fn video_frames_carry_stamps_and_real_descriptors() {
        let t0 = Instant::now();
        let mut v = VideoSource::new(600_000, 30);
        let mut out = Vec::new();
        v.generate(t0, &mut out);
        assert!(out[0].keyframe);
        assert!(starts_keyframe(Mime::Vp8, &out[0].payload));
        assert!(!starts_keyframe(Mime::Vp8, &out[1].payload));
        assert!(out.last().unwrap().marker);
        let stamps: Vec<u32> = out.iter().map(|g| read_stamp(&g.payload).unwrap().counter).collect();
        assert_eq!(stamps, (0..out.len() as u32).collect::<Vec<_>>());
        let n = out.len();
        v.generate(t0 + Duration::from_millis(34), &mut out);
        assert!(!out[n].keyframe && !starts_keyframe(Mime::Vp8, &out[n].payload));
        assert_eq!(out[n].seq, out[n - 1].seq + 1);
        v.request_keyframe();
        let m = out.len();
        v.generate(t0 + Duration::from_millis(67), &mut out);
        assert!(starts_keyframe(Mime::Vp8, &out[m].payload));
    }

    #[test]
    fn audio_every_twenty_milliseconds() {
        let t0 = Instant::now();
        let mut a = AudioSource::new(120);
        let mut out = Vec::new();
        for ms in (0..=100).step_by(10) {
            a.generate(t0 + Duration::from_millis(ms), &mut out);
        }
        assert_eq!(out.len(), 6);
        assert_eq!(out[1].timestamp.wrapping_sub(out[0].timestamp), 960);
        assert_eq!(out[0].payload.len(), 120);
    }
}
