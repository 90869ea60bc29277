//! Parse the PROXY protocol header at the start of a stream, the way a listener reads
//! it (never more than the parser asks for), and write what it names back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_proxy_protocol::{
    encode_v1, encode_v2, parse, Addresses, Parsed, Version, MAX_LEN, V1_MAX_LEN,
};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Parsed::Header(h)) = whole {
        assert!(h.len <= data.len() && h.len <= MAX_LEN);
        if h.version == Version::V1 {
            assert!(h.len <= V1_MAX_LEN);
        }
    }

    // Read as a listener does: at most `at_least` bytes at a time. It must reach the
    // same verdict, and never take a byte past the header.
    let mut taken = 0;
    let stepped = loop {
        let Some(buf) = data.get(..taken) else { break None };
        match parse(buf) {
            Ok(Parsed::Incomplete { at_least }) => {
                assert!(at_least >= 1 && taken + at_least <= MAX_LEN);
                if taken + at_least > data.len() {
                    // The stream ended before the header did; the whole input agrees.
                    assert!(matches!(whole, Ok(Parsed::Incomplete { .. }) | Err(_)));
                    break None;
                }
                taken += at_least;
            }
            other => break Some(other),
        }
    };
    if let Some(stepped) = stepped {
        // The same header, or a refusal (the reason may differ: a partial line is
        // checked as far as it goes, a whole one field by field).
        match (&stepped, &whole) {
            (Err(_), Err(_)) => {}
            _ => assert_eq!(stepped, whole),
        }
        if let Ok(Parsed::Header(h)) = stepped {
            assert_eq!(h.len, taken);
        }
    }

    // What a header names, written again, reads back the same.
    if let Ok(Parsed::Header(h)) = whole {
        let mut out = Vec::new();
        let written = match (h.version, h.addresses) {
            (Version::V1, Addresses::Local) => return,
            (Version::V1, a) => encode_v1(&a, &mut out),
            (Version::V2, a) => encode_v2(&a, &[], &mut out),
        };
        written.expect("a parsed header can be written");
        match parse(&out) {
            Ok(Parsed::Header(back)) => {
                assert_eq!(back.addresses, h.addresses);
                assert_eq!(back.len, out.len());
            }
            other => panic!("{other:?}"),
        }
    }
});
