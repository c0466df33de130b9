//! Micro-benchmarks of the packet path and the bus (`make bench` runs them with criterion).

#[path = "../tests/fixtures/consumer.rs"]
mod fixture;

use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use fixture::vp8_consumer;
use ringsfu::runtime::udp::SendBatch;
use ringsfu_common::auth::{Key, sign, verify};
use ringsfu_core::protocol::envelope::decode_frame;
use ringsfu_core::protocol::messages::ClientMessage;
use ringsfu_core::sfu::consumer::Consumer;
use ringsfu_core::sfu::demux::{self, Demux, PeekIds};
use ringsfu_core::sfu::forward::layer::{LayerInfo, LayerSelector, SelectorConfig};
use ringsfu_core::sfu::forward::{Decision, Incoming};
use serde_json::json;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn rtp_packet() -> Vec<u8> {
    let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x03, 0x40, b'1', 0xa1, b'r', b'2', 0x32, 0x00, 0x01, 0x02, 0, 0, 0]);
    p.extend_from_slice(&[0u8; 1000]);
    p
}

fn demux_benches(c: &mut Criterion) {
    let mut d: Demux<u32> = Demux::default();
    let addrs: Vec<SocketAddr> =
        (0..10_000).map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000))).collect();
    for (i, a) in addrs.iter().enumerate() {
        d.learn(*a, i as u32);
    }
    let mut i = 0;
    c.bench_function("demux: source address lookup (10k transports)", |b| {
        b.iter(|| {
            i = (i + 7919) % addrs.len();
            black_box(d.by_addr(&addrs[i]))
        })
    });
    let packet = rtp_packet();
    let ids = PeekIds { mid: Some(4), rid: Some(10), rrid: Some(11), ..Default::default() };
    c.bench_function("demux: RTP header peek (mid, rid)", |b| {
        b.iter(|| black_box(demux::peek_rtp(black_box(&packet), ids)))
    });
}

fn forward_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan-out");
    for n in [1u64, 10, 50] {
        group.throughput(Throughput::Elements(n));
        let mut consumers: Vec<Consumer> = (0..n).map(|i| vp8_consumer(i, 2)).collect();
        let t0 = Instant::now();
        let mut seq = 1000u64;
        let payload = [0x90u8, 0xe0, 0x80, 0x42, 0x07, 0x20, 0x11, 0x02, 0x00, 0xaa];
        group.bench_function(format!("decide + rewrite + VP8 patch, {n} consumers"), |b| {
            b.iter(|| {
                seq += 1;
                let incoming = Incoming {
                    layer: 2,
                    seq,
                    timestamp: (seq as u32).wrapping_mul(3000),
                    router_payload_type: 101,
                    keyframe: false,
                    late: false,
                    producer_paused: false,
                };
                for c in consumers.iter_mut() {
                    let d = c.decide(&incoming, true, t0);
                    let patch = c.vp8_mut().and_then(|v| v.rewrite(&payload));
                    black_box((matches!(d, Decision::Forward { .. }), patch));
                }
            })
        });
    }
    group.finish();
    let mut others: Vec<Consumer> = (0..50).map(|i| vp8_consumer(i, 0)).collect();
    let t0 = Instant::now();
    c.bench_function("layer filter: skip a packet of another layer (50 consumers)", |b| {
        let incoming = Incoming {
            layer: 2,
            seq: 5,
            timestamp: 0,
            router_payload_type: 101,
            keyframe: false,
            late: false,
            producer_paused: false,
        };
        b.iter(|| {
            for c in others.iter_mut() {
                black_box(c.decide(&incoming, true, t0));
            }
        })
    });
    let layers = [
        LayerInfo { bitrate: Some(150_000), active: true },
        LayerInfo { bitrate: Some(500_000), active: true },
        LayerInfo { bitrate: Some(1_500_000), active: true },
    ];
    let config = SelectorConfig::default();
    let mut selector = LayerSelector::default();
    let mut now = Instant::now();
    let mut budget = 0u64;
    c.bench_function("layer selector: one decision", |b| {
        b.iter(|| {
            now += Duration::from_millis(200);
            budget = (budget + 370_000) % 3_000_000;
            black_box(selector.update(&config, now, budget, &layers))
        })
    });
}

fn batching_benches(c: &mut Criterion) {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.set_nonblocking(true).unwrap();
    let dest = rx.local_addr().unwrap();
    let payload = vec![0u8; 1200];
    let mut batch: SendBatch<&[u8]> = SendBatch::new(32);
    let mut group = c.benchmark_group("batching");
    group.throughput(Throughput::Elements(32));
    group.bench_function("queue 32 datagrams + one sendmmsg", |b| {
        b.iter(|| {
            for _ in 0..32 {
                batch.push(dest, &payload);
            }
            black_box(batch.flush(tx.as_raw_fd()))
        })
    });
    group.finish();
}

fn control_benches(c: &mut Criterion) {
    let key = Key::from_base64("u6bsUQEWrHdKIuYplirRnbBmLbrKV5PxKG7DtA71mng=").unwrap();
    let token = sign(json!({"iss": "https://odoo.example.com:channel:42", "key": "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "exp": 4_000_000_000u64}).as_object().unwrap(), &key);
    c.bench_function("JWT verify (HS256)", |b| b.iter(|| black_box(verify(black_box(&token), &key, 1_800_000_000.0))));
    let frame = json!([
        {"message": {"name": "C_INFO_CHANGE", "payload": {"info": {"isTalking": true, "isSelfMuted": false}}}},
        {"message": {"name": "BROADCAST", "payload": {"type": "reaction", "emoji": "+1"}}},
        {"message": {"name": "CONSUMPTION_CHANGE", "payload": {"sessionId": 7, "states": {"camera": false}}}, "needResponse": "c_0_12"}
    ])
    .to_string();
    c.bench_function("bus: decode a 3-envelope frame and parse its messages", |b| {
        b.iter_batched(
            || frame.clone(),
            |f| {
                for env in decode_frame(&f).unwrap() {
                    if let ringsfu_core::protocol::Envelope::Message { name, payload }
                    | ringsfu_core::protocol::Envelope::Request { name, payload, .. } = env
                    {
                        black_box(ClientMessage::parse(&name, payload).ok());
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
}

fn egress_benches(c: &mut Criterion) {
    use ringsfu_core::sfu::forward::direct::{DirectExtensions, DirectStream, Outgoing, RtxStream};
    use ringsfu_core::sfu::srtp::{Exported, SrtpSender};
    use str0m::crypto::dtls::SrtpProfile;
    let mut group = c.benchmark_group("own egress");
    for (name, profile, len) in
        [("AES-128-GCM", SrtpProfile::AEAD_AES_128_GCM, 56), ("AES-256-GCM", SrtpProfile::AEAD_AES_256_GCM, 88)]
    {
        let mut srtp =
            SrtpSender::new(&Exported { material: (0..len as u8).collect(), profile, active: false }).unwrap();
        let ext = DirectExtensions { mid: Some(1), audio_level: Some(6), ..Default::default() };
        let mut stream = DirectStream::new(0x1234_5678, "0", ext, 48_000);
        let payload = [7u8; 100];
        let mut buf = Vec::with_capacity(1500);
        let now = Instant::now();
        let mut seq = 0u64;
        group.bench_function(format!("write header + {name} seal, 100-byte Opus payload"), |b| {
            b.iter(|| {
                seq += 1;
                let p = Outgoing {
                    seq,
                    timestamp: seq as u32 * 960,
                    payload_type: 100,
                    marker: false,
                    audio_level: Some((30, true)),
                    video_orientation: None,
                    vp8: None,
                    payload: &payload,
                };
                black_box(stream.write_rtp(&mut srtp, &mut buf, now, &p, None))
            })
        });
        // Video: mid and transport-wide sequence number, VP8 picture id rewritten in the copy,
        // the packet kept for retransmission (a reference count on the shared payload).
        let ext = DirectExtensions { mid: Some(1), twcc: Some(5), ..Default::default() };
        let mut stream = DirectStream::new(0x1234_5678, "1", ext, 90_000);
        stream.rtx = Some(RtxStream::new(0x1234_5679, [(101u8, 102u8)].into_iter().collect(), 1));
        let mut vp8 = vec![0x90u8, 0xe0, 0x80, 0x01, 0x07, 0x20];
        vp8.resize(1100, 0x55);
        let shared = std::sync::Arc::new(vp8);
        let mut seq = 0u64;
        group.bench_function(
            format!("video: write header + {name} seal + keep for RTX, 1,100-byte VP8 payload"),
            |b| {
                b.iter(|| {
                    seq += 1;
                    let p = Outgoing {
                        seq,
                        timestamp: seq as u32 * 3000,
                        payload_type: 101,
                        marker: false,
                        audio_level: None,
                        video_orientation: None,
                        vp8: Some((seq as u16 & 0x7fff, Some(seq as u8))),
                        payload: &shared,
                    };
                    let written = stream.write_rtp(&mut srtp, &mut buf, now, &p, Some(seq as u16));
                    stream.remember(&p, &shared);
                    black_box(written)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, demux_benches, forward_benches, batching_benches, control_benches, egress_benches);
criterion_main!(benches);
