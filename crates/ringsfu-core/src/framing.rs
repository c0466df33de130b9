//! RFC 4571 framing (each datagram behind a 2-byte length), as ICE-TCP carries WebRTC: used by
//! the shards' ICE-TCP connections and by the synthetic client.

/// The largest frame accepted: an RTP packet or DTLS record fits in a 1500-byte MTU; a length
/// prefix above this (or of zero) is not a WebRTC peer and closes the connection.
pub const MAX_FRAME: usize = 4096;

/// A length prefix no WebRTC peer sends: 0, or above [`MAX_FRAME`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength(pub usize);

/// Reassembles RFC 4571 frames from the bytes of a stream, as they come (a frame split over
/// reads, several frames in one read).
#[derive(Debug, Default)]
pub struct Deframer {
    /// The start of a frame not yet complete, length prefix included.
    partial: Vec<u8>,
}

impl Deframer {
    /// Feeds the next bytes of the stream; `on_frame` gets each frame completed by them. After an
    /// error the stream is unusable (the caller closes it).
    pub fn push(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(&[u8])) -> Result<(), BadLength> {
        if !self.partial.is_empty() {
            if self.partial.len() < 2 {
                let take = (2 - self.partial.len()).min(bytes.len());
                self.partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.partial.len() < 2 {
                    return Ok(());
                }
            }
            let len = frame_length(&self.partial)?;
            let take = (2 + len - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < 2 + len {
                return Ok(());
            }
            on_frame(&self.partial[2..]);
            self.partial.clear();
        }
        // Whole frames straight from the caller's buffer: only a frame's incomplete tail is copied.
        while bytes.len() >= 2 {
            let len = frame_length(bytes)?;
            if bytes.len() < 2 + len {
                break;
            }
            on_frame(&bytes[2..2 + len]);
            bytes = &bytes[2 + len..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends `datagram` to `out` as one frame (its length, then it). The caller keeps datagrams
/// within [`MAX_FRAME`]; a longer one would be refused by the peer's [`Deframer`].
pub fn push_frame(out: &mut Vec<u8>, datagram: &[u8]) {
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
}

fn frame_length(prefix: &[u8]) -> Result<usize, BadLength> {
    let len = u16::from_be_bytes([prefix[0], prefix[1]]) as usize;
    if len == 0 || len > MAX_FRAME { Err(BadLength(len)) } else { Ok(len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for f in frames {
            push_frame(&mut bytes, f);
        }
        bytes
    }

    /// Feeds `bytes` in the given chunk sizes (the last chunk takes the rest); returns the frames.
    fn deframe(bytes: &[u8], chunks: &[usize]) -> Result<Vec<Vec<u8>>, BadLength> {
        let mut d = Deframer::default();
        let mut frames = Vec::new();
        let mut rest = bytes;
        for &n in chunks {
            let (now, later) = rest.split_at(n.min(rest.len()));
            d.push(now, |f| frames.push(f.to_vec()))?;
            rest = later;
        }
        d.push(rest, |f| frames.push(f.to_vec()))?;
        Ok(frames)
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let a = vec![0x80; 1200];
        let b = vec![0x00; 20];
        let c = vec![0x16; MAX_FRAME];
        let bytes = framed(&[&a, &b, &c]);
        let want = vec![a, b, c];
        // Every cut in two, including inside the length prefixes.
        for cut in 0..=bytes.len() {
            assert_eq!(deframe(&bytes, &[cut]).unwrap(), want, "cut at {cut}");
        }
        // One byte at a time.
        assert_eq!(deframe(&bytes, &vec![1; bytes.len()]).unwrap(), want);
        // All at once.
        assert_eq!(deframe(&bytes, &[]).unwrap(), want);
    }

    #[test]
    fn a_length_of_zero_or_above_the_largest_frame_is_refused() {
        let cases: [(&[u8], Result<usize, BadLength>); 4] = [
            (&[0x00, 0x00], Err(BadLength(0))),
            (&[0x10, 0x01, 0xaa], Err(BadLength(MAX_FRAME + 1))),
            (&[0xff, 0xff], Err(BadLength(65535))),
            (&[0x00, 0x01, 0xaa], Ok(1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(deframe(bytes, &[]).map(|f| f.len()), want, "{bytes:?}");
            // Also when the prefix arrives in two pieces, after a good frame.
            let mut stream = framed(&[&[0x80; 3]]);
            stream.extend_from_slice(bytes);
            let cut = stream.len() - bytes.len() + 1;
            assert_eq!(deframe(&stream, &[cut]).map(|f| f.len() - 1), want, "{bytes:?} split");
        }
    }
}
