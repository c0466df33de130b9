//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the bodies the fuzz
//! targets run, on stable: an input that once crashed a target fails this test if the bug returns.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut replayed = 0;
    let mut failed = Vec::new();
    for entry in entries {
        let path = entry.expect("corpus entries are readable").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
        replayed += 1;
    }
    assert!(replayed > 0, "corpus {} is empty", dir.display());
    assert!(failed.is_empty(), "{target} panics on {} of {replayed} corpus files: {failed:#?}", failed.len());
}

#[test]
fn jwt() {
    replay("jwt", ringsfu::fuzzing::jwt);
}

#[test]
fn bus_frame() {
    replay("bus_frame", ringsfu::fuzzing::bus_frame);
}

#[test]
fn rtp_parameters() {
    replay("rtp_parameters", ringsfu::fuzzing::rtp_parameters);
}

#[test]
fn udp_demux() {
    replay("udp_demux", ringsfu::fuzzing::udp_demux);
}
