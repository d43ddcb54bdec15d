//! SIP hot paths: parse+validate an INVITE with SDP (a plain one and RFC 4475's tortuous one),
//! the URI grammar, one full UAC call through the sans-IO core, and stream framing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dialtone_sip_core::framing::StreamFramer;
use dialtone_sip_core::uri::Uri;
use dialtone_sip_core::validate::{Inbound, validate};
use dialtone_sip_core::{CallEvent, Endpoint, EndpointConfig, OutboundCall, Transport};

const SDP: &str = "v=0\r\no=dialtone 1 1 IN IP4 192.0.2.10\r\ns=Dialtone\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 111 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

fn invite() -> String {
    format!(
        "INVITE sip:+15551230000@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nFrom: \"Dialtone\" <sip:+15559870000@192.0.2.10>;tag=1928301774\r\nTo: <sip:+15551230000@192.0.2.20>\r\nCall-ID: a84b4c76e66710@192.0.2.10\r\nCSeq: 314159 INVITE\r\nContact: <sip:dialtone@192.0.2.10:5060>\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nSupported: timer\r\nUser-Agent: Dialtone/0.1.0\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// RFC 4475 §3.1.1.1 (`wsinv`): folding, LWS around every separator, compact and odd-case
/// names, a three-value Via. Answered `481` (its To has a tag), so it must parse fully.
const WSINV: &str = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\nTO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\nfrom   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\nMaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\nContent-Length   : 150\r\ncseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\ns :\r\nNewFangledHeader:   newfangled value\r\n continued newfangled value\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\nContent-Type: application/sdp\r\nRoute:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\nv:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\nm:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33\r\n\r\nv=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";

/// URIs of every shape the grammar reads.
const URIS: &[&str] = &[
    "sip:+15551230000@192.0.2.20:5060;user=phone",
    "sips:alice:secret@[2001:db8::10]:5061;transport=tls;lr?Subject=hi",
    "sip:user;par=u%40example.net@example.com",
    "tel:+1-201-555-0123;ext=7",
    "urn:service:sos",
];

fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .expect("header present")
}

fn response(request: &str, code: u16, reason: &str, tag: &str, extra: &str, body: &str) -> String {
    let to = header(request, "To");
    let to = if to.contains(";tag=") {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    };
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(request, "Via"),
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
        body.len()
    )
}

fn parse(c: &mut Criterion) {
    let message = invite();
    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function("parse_validate_invite_with_sdp", |b| {
        b.iter(|| match validate(black_box(message.as_bytes()), "t") {
            Inbound::Request(r) => black_box(r),
            other => panic!("{other:?}"),
        })
    });
    group.throughput(Throughput::Bytes(WSINV.len() as u64));
    group.bench_function("parse_validate_rfc4475_wsinv", |b| {
        b.iter(|| match validate(black_box(WSINV.as_bytes()), "t") {
            Inbound::Request(r) => black_box(r),
            other => panic!("{other:?}"),
        })
    });
    group.throughput(Throughput::Elements(URIS.len() as u64));
    group.bench_function("parse_uris", |b| {
        b.iter(|| {
            for u in URIS {
                black_box(Uri::parse(black_box(u)).expect("valid"));
            }
        })
    });
    let stream: Vec<u8> = message.repeat(10).into_bytes();
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("tcp_framing_10_invites", |b| {
        b.iter(|| {
            let mut framer = StreamFramer::new();
            framer.push(black_box(&stream));
            let mut n = 0;
            while let Ok(Some(_)) = framer.next_frame() {
                n += 1;
            }
            assert_eq!(n, 10);
        })
    });
    group.finish();
}

/// One whole call through the core: INVITE out, 100/180/200 in, ACK out, BYE out, 200 in.
fn uac_call(c: &mut Criterion) {
    let trunk = "192.0.2.20:5060".parse().unwrap();
    let mut call = OutboundCall::new(
        "sip:+15551230000@192.0.2.20",
        "<sip:+15559870000@192.0.2.10>",
        "<sip:+15551230000@192.0.2.20>",
        trunk,
        Transport::Udp,
    );
    call.sdp_offer = Some(SDP.as_bytes().to_vec());
    let mut endpoint = Endpoint::new(EndpointConfig::new("192.0.2.10", 5060), 1);
    let start = Instant::now();
    let mut tick = 0u64;
    c.bench_function("sip/uac_invite_call_setup_and_bye", |b| {
        b.iter(|| {
            tick += 1;
            let now = start + Duration::from_millis(tick);
            let handle = endpoint.dial(now, call.clone()).unwrap();
            let invite = String::from_utf8(endpoint.poll_transmit().unwrap().payload).unwrap();
            for (code, reason, extra, body) in [
                (100, "Trying", "", ""),
                (180, "Ringing", "Contact: <sip:callee@192.0.2.20>\r\n", ""),
                (200, "OK", "Contact: <sip:callee@192.0.2.20>\r\n", SDP),
            ] {
                let r = response(&invite, code, reason, "callee", extra, body);
                endpoint.handle_message(now, trunk, Transport::Udp, r.as_bytes());
            }
            let ack = endpoint.poll_transmit().unwrap();
            black_box(ack);
            endpoint.hang_up(now, handle).unwrap();
            let bye = String::from_utf8(endpoint.poll_transmit().unwrap().payload).unwrap();
            let ok = response(&bye, 200, "OK", "callee", "", "");
            endpoint.handle_message(now, trunk, Transport::Udp, ok.as_bytes());
            let mut ended = false;
            while let Some(e) = endpoint.poll_event() {
                ended |= matches!(e.kind, CallEvent::Ended { .. });
            }
            assert!(ended);
            // Let Timer K run out so the endpoint does not grow across iterations.
            endpoint.handle_timeout(now + Duration::from_secs(40));
            tick += 40_000;
        })
    });
}

criterion_group!(benches, parse, uac_call);
criterion_main!(benches);
