//! Splits one subscriber's downlink (its bandwidth estimate, capped by `MAX_BITRATE_OUT`) over
//! everything it receives: audio first, then screen shares, then cameras, which share what is
//! left by water-filling (no camera gets more than its top layer needs; what it leaves goes to
//! the others).

use crate::protocol::messages::MediaType;

/// One consumer's claim on the downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub media: MediaType,
    /// Bit/s of its lowest layer (or its only one, audio).
    pub minimum: u64,
    /// Bit/s of its highest arriving layer.
    pub maximum: u64,
}

/// Budgets in the order of `claims`, bit/s. `order` is scratch space; both vectors are reused
/// by the caller, so planning allocates nothing once they have grown.
pub fn allocate(available: u64, claims: &[Claim], budgets: &mut Vec<u64>, order: &mut Vec<usize>) {
    budgets.clear();
    budgets.resize(claims.len(), 0);
    let mut left = available;
    // Audio takes what it uses; it is small and matters most.
    for (i, c) in claims.iter().enumerate().filter(|(_, c)| c.media == MediaType::Audio) {
        budgets[i] = c.maximum;
        left = left.saturating_sub(c.maximum);
    }
    // Screen shares next, each as much as it can use.
    for (i, c) in claims.iter().enumerate().filter(|(_, c)| c.media == MediaType::Screen) {
        let give = c.maximum.min(left);
        budgets[i] = give;
        left -= give;
    }
    // Cameras: water-filling. Serving the smallest needs first gives each the lesser of its need
    // and an equal share of what is left, in one pass.
    order.clear();
    order.extend(claims.iter().enumerate().filter(|(_, c)| c.media == MediaType::Camera).map(|(i, _)| i));
    order.sort_unstable_by_key(|i| (claims[*i].maximum, *i));
    let mut waiting = order.len() as u64;
    for &i in order.iter() {
        let give = claims[i].maximum.min(left / waiting);
        budgets[i] = give;
        left -= give;
        waiting -= 1;
    }
}

/// Estimate before the first one arrives (mediasoup's initial available outgoing bitrate).
pub const INITIAL_ESTIMATE: u64 = 600_000;

/// The buffers one subscriber's plan is made in, kept by the shard for the next plan.
#[derive(Debug, Default)]
pub struct PlanScratch {
    pub(crate) keys: Vec<super::consumer::ConsumerKey>,
    pub(crate) claims: Vec<Claim>,
    pub(crate) budgets: Vec<u64>,
    pub(crate) order: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(media: MediaType, minimum: u64, maximum: u64) -> Claim {
        Claim { media, minimum, maximum }
    }

    #[test]
    fn audio_first_then_screen_then_cameras_share_the_rest() {
        let claims = [
            claim(MediaType::Camera, 150_000, 1_500_000),
            claim(MediaType::Audio, 40_000, 40_000),
            claim(MediaType::Screen, 200_000, 2_000_000),
            claim(MediaType::Camera, 150_000, 300_000),
            claim(MediaType::Audio, 40_000, 40_000),
        ];
        let mut b = Vec::new();
        // Plenty: everyone gets everything.
        allocate(10_000_000, &claims, &mut b, &mut Vec::new());
        assert_eq!(b, vec![1_500_000, 40_000, 2_000_000, 300_000, 40_000]);
        // Tight: audio 80k, screen 2M, cameras split 920k; the small one caps at 300k and leaves
        // the rest to the other.
        allocate(3_000_000, &claims, &mut b, &mut Vec::new());
        assert_eq!(b[1] + b[4], 80_000);
        assert_eq!(b[2], 2_000_000);
        assert_eq!(b[3], 300_000);
        assert_eq!(b[0], 3_000_000 - 80_000 - 2_000_000 - 300_000);
        // Starved: audio still gets its share, the screen what is left, cameras nothing.
        allocate(500_000, &claims, &mut b, &mut Vec::new());
        assert_eq!(b, vec![0, 40_000, 420_000, 0, 40_000]);
        let total: u64 = b.iter().sum();
        assert!(total <= 500_000);
    }

    #[test]
    fn equal_cameras_get_equal_shares() {
        let claims = [claim(MediaType::Camera, 100_000, 1_000_000); 4];
        let mut b = Vec::new();
        allocate(2_000_000, &claims, &mut b, &mut Vec::new());
        assert_eq!(b, vec![500_000; 4]);
    }
}
