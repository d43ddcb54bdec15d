//! SDP: build and print our offer; parse an answer and negotiate it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dialtone_sdp::{LocalMedia, SessionDescription, build_offer, negotiate_answer};

const ANSWER: &str = "v=0\r\no=- 5 7 IN IP4 198.51.100.7\r\ns=call\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn sdp(c: &mut Criterion) {
    let local = LocalMedia::new("203.0.113.5".parse().unwrap(), 20000);
    c.bench_function("sdp/build_and_print_offer", |b| {
        b.iter(|| black_box(build_offer(black_box(&local), 1, 1).to_string()))
    });
    let offer = build_offer(&local, 1, 1);
    c.bench_function("sdp/parse_and_negotiate_answer", |b| {
        b.iter(|| {
            let answer = SessionDescription::parse(black_box(ANSWER)).unwrap();
            black_box(negotiate_answer(&offer, &answer).unwrap())
        })
    });
}

criterion_group!(benches, sdp);
criterion_main!(benches);
