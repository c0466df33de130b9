//! H264 profile from `profile-level-id`, as WebRTC's profile matching uses it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
}

/// (profile_idc, constraint-byte pattern MSB first with `x` = any bit, profile).
const PATTERNS: &[(u8, &str, Profile)] = &[
    (0x42, "x1xx0000", Profile::ConstrainedBaseline),
    (0x4d, "1xxx0000", Profile::ConstrainedBaseline),
    (0x58, "11xx0000", Profile::ConstrainedBaseline),
    (0x42, "x0xx0000", Profile::Baseline),
    (0x58, "10xx0000", Profile::Baseline),
    (0x4d, "0x0x0000", Profile::Main),
    (0x64, "00000000", Profile::High),
    (0x64, "00001100", Profile::ConstrainedHigh),
    (0xf4, "00000000", Profile::PredictiveHigh444),
];

/// The profile of a six-hex-digit `profile-level-id`, or `None` if it names none.
pub fn profile(profile_level_id: &str) -> Option<Profile> {
    if profile_level_id.len() != 6 {
        return None;
    }
    let value = u32::from_str_radix(profile_level_id, 16).ok()?;
    let idc = (value >> 16) as u8;
    let iop = (value >> 8) as u8;
    PATTERNS.iter().find_map(|&(p_idc, pattern, profile)| {
        let matches = p_idc == idc
            && pattern.bytes().enumerate().all(|(i, bit)| {
                let set = iop & (0x80 >> i) != 0;
                match bit {
                    b'1' => set,
                    b'0' => !set,
                    _ => true,
                }
            });
        matches.then_some(profile)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_of_common_ids() {
        let rows = [
            ("42e01f", Some(Profile::ConstrainedBaseline)),
            ("42e00c", Some(Profile::ConstrainedBaseline)),
            ("4d801f", Some(Profile::ConstrainedBaseline)),
            ("4d401f", Some(Profile::Main)),
            ("42001f", Some(Profile::Baseline)),
            ("4d001f", Some(Profile::Main)),
            ("640028", Some(Profile::High)),
            ("640c0d", Some(Profile::ConstrainedHigh)),
            ("f4001f", Some(Profile::PredictiveHigh444)),
            ("ffffff", None),
            ("42e0", None),
            ("zzzzzz", None),
        ];
        for (id, expected) in rows {
            assert_eq!(profile(id), expected, "{id}");
        }
    }
}
