//! Read a relay batch as a node reads its Redis channel, and write what it holds back:
//! any bytes either fail with an error or give frames that encode to the same batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_cluster::{decode_batch, encode_batch};

fuzz_target!(|data: &[u8]| {
    if let Ok((from, frames)) = decode_batch(data) {
        let mut out = Vec::new();
        encode_batch(&from, &frames, &mut out);
        assert_eq!(out.as_slice(), data, "a batch read back is written the same");
        let again = decode_batch(&out).expect("a written batch reads");
        assert_eq!(again, (from, frames));
    }
});
