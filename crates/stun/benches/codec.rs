//! Codec benches on packets captured from coturn's client tools against tsunagi
//! (`crates/turn/benches/data/*.hex`, made by `capture.py` there):
//! `turnutils_stunclient`'s Binding request, `turnutils_uclient`'s authenticated
//! Allocate (MESSAGE-INTEGRITY with HMAC-SHA1, and FINGERPRINT) and its 100-byte
//! ChannelData. uclient does not use MESSAGE-INTEGRITY-SHA256: that case is the
//! captured Allocate re-signed with it (same attributes, same key derivation input).
//!
//! `cargo bench -p tsunagi-stun` (not part of the test command).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tsunagi_stun::{
    attr, classify, long_term_key_md5, long_term_key_sha256, ChannelData, IntegrityKey, Message,
    MessageEncoder,
};

/// A captured packet, from its hex dump.
fn packet(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex dump"))
        .collect()
}

const BINDING: &str = include_str!("../../turn/benches/data/binding_request.hex");
const ALLOCATE: &str =
    include_str!("../../turn/benches/data/allocate_request_integrity_sha1_fingerprint.hex");
const CHANNEL_DATA: &str = include_str!("../../turn/benches/data/channel_data_100.hex");

/// The credentials of the capture (`tsunagi --user test:test --realm bench.example.org`).
const USER: &str = "test";
const REALM: &str = "bench.example.org";
const PASSWORD: &str = "test";

/// The captured Allocate with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
fn resign_sha256(raw: &[u8], key: &IntegrityKey) -> Vec<u8> {
    let m = Message::parse(raw).unwrap();
    let mut buf = vec![0u8; 512];
    let mut e = MessageEncoder::new(&mut buf, m.class(), m.method(), m.transaction_id()).unwrap();
    for a in m.attributes() {
        if a.typ == attr::MESSAGE_INTEGRITY || a.typ == attr::FINGERPRINT {
            continue;
        }
        e.attr(a.typ, a.value).unwrap();
    }
    e.message_integrity_sha256(key).unwrap();
    e.fingerprint().unwrap();
    let n = e.finish();
    buf.truncate(n);
    buf
}

fn benches(c: &mut Criterion) {
    let binding = packet(BINDING);
    let allocate = packet(ALLOCATE);
    let channel_data = packet(CHANNEL_DATA);
    let sha1_key = IntegrityKey::from_bytes(&long_term_key_md5(USER, REALM, PASSWORD));
    let sha256_key = IntegrityKey::from_bytes(&long_term_key_sha256(USER, REALM, PASSWORD));
    let allocate256 = resign_sha256(&allocate, &sha256_key);
    // The captures are what they claim to be.
    assert!(Message::parse(&binding).is_ok());
    let m = Message::parse(&allocate).unwrap();
    assert!(m.has_message_integrity() && m.has_valid_fingerprint());
    m.verify_integrity(&sha1_key).unwrap();
    Message::parse(&allocate256)
        .unwrap()
        .verify_integrity(&sha256_key)
        .unwrap();
    assert_eq!(ChannelData::parse(&channel_data).unwrap().data.len(), 100);

    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode Binding request (turnutils_stunclient)", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&binding)).unwrap();
            black_box((m.method(), m.transaction_id()))
        })
    });
    g.bench_function("decode Allocate request (turnutils_uclient, 152 B)", |b| {
        b.iter(|| {
            Message::parse(black_box(&allocate))
                .unwrap()
                .attributes()
                .count()
        })
    });
    g.bench_function("MESSAGE-INTEGRITY check, HMAC-SHA1 (Allocate)", |b| {
        let m = Message::parse(&allocate).unwrap();
        b.iter(|| {
            black_box(&m)
                .verify_integrity(black_box(&sha1_key))
                .unwrap()
        })
    });
    g.bench_function("MESSAGE-INTEGRITY-SHA256 check (Allocate re-signed)", |b| {
        let m = Message::parse(&allocate256).unwrap();
        b.iter(|| {
            black_box(&m)
                .verify_integrity(black_box(&sha256_key))
                .unwrap()
        })
    });
    g.bench_function("FINGERPRINT check (Allocate)", |b| {
        let m = Message::parse(&allocate).unwrap();
        b.iter(|| black_box(&m).has_valid_fingerprint())
    });
    g.bench_function("classify + ChannelData parse (100 B)", |b| {
        b.iter(|| {
            let d = black_box(&channel_data);
            let k = classify(d);
            (k, ChannelData::parse(d).unwrap().channel)
        })
    });
    g.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
