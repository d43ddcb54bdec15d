//! Property tests: printing and parsing are inverse on generated messages and on generated
//! URIs, name-addrs and Via values; optional whitespace does not change what is parsed; no
//! input panics; stream framing is independent of how the bytes were chunked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dialtone_sip_core::fields::{NameAddr, Via};
use dialtone_sip_core::framing::{Frame, StreamFramer};
use dialtone_sip_core::uri::{Host, Param, SipUri, TelUri, Uri};
use dialtone_sip_core::validate::{Inbound, validate};
use dialtone_sip_core::{Endpoint, EndpointConfig, Transport};
use proptest::prelude::*;
use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method};

fn arb_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Bye),
        Just(Method::Options),
        Just(Method::Info),
        Just(Method::Update),
        Just(Method::Message),
        Just(Method::Notify),
        Just(Method::Register),
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,10}(\\.[a-z]{2,6}){1,2}",
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
    ]
}

fn uri() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-zA-Z0-9+_.-]{1,12}"),
        host(),
        proptest::option::of(1u16..),
    )
        .prop_map(|(user, host, port)| {
            let mut s = String::from("sip:");
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            s
        })
}

prop_compose! {
    fn arb_request()(
        method in arb_method(),
        ruri in uri(),
        via_host in host(),
        branch in "[0-9a-f]{8,16}",
        max_forwards in 0u8..=70,
        from in uri(),
        from_tag in token(),
        to in uri(),
        to_tag in proptest::option::of(token()),
        call_id in "[a-zA-Z0-9]{1,20}(@[a-z]{1,8})?",
        seq in 1u32..(1 << 31),
        contact in proptest::option::of(uri()),
        extra in proptest::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,30}"), 0..3),
        body in proptest::collection::vec(any::<u8>().prop_filter("ascii", u8::is_ascii), 0..200),
    ) -> rsip::Request {
        let max_forwards = if method == Method::Options { max_forwards } else { max_forwards.max(1) };
        let mut headers = vec![
            Header::Via(rsip::headers::Via::new(format!("SIP/2.0/UDP {via_host};branch=z9hG4bK{branch}"))),
            Header::MaxForwards(rsip::headers::MaxForwards::new(max_forwards.to_string())),
            Header::From(rsip::headers::From::new(format!("<{from}>;tag={from_tag}"))),
            Header::To(rsip::headers::To::new(match to_tag {
                Some(t) => format!("<{to}>;tag={t}"),
                None => format!("<{to}>"),
            })),
            Header::CallId(rsip::headers::CallId::new(call_id)),
            Header::CSeq(rsip::headers::CSeq::new(format!("{seq} {method}"))),
        ];
        if let Some(c) = contact {
            headers.push(Header::Contact(rsip::headers::Contact::new(format!("<{c}>"))));
        }
        for (name, value) in extra {
            headers.push(Header::Other(name, value.trim().to_owned()));
        }
        headers.push(Header::ContentLength(rsip::headers::ContentLength::new(body.len().to_string())));
        rsip::Request {
            method,
            // rsip's own parser misreads some valid user parts (`sip:.@host`); the core's grammar does not.
            uri: rsip::Uri::from(&dialtone_sip_core::uri::Uri::parse(&ruri).unwrap()),
            version: rsip::Version::V2,
            headers: Headers::from(headers),
            body,
        }
    }
}

prop_compose! {
    fn arb_response()(
        code in prop_oneof![100u16..=199, 200u16..=299, 300u16..=699],
        branch in "[0-9a-f]{8,16}",
        from in uri(),
        to in uri(),
        tag in token(),
        seq in 1u32..(1 << 31),
        method in arb_method(),
        body in "[ -~]{0,100}",
    ) -> rsip::Response {
        let headers = vec![
            Header::Via(rsip::headers::Via::new(format!("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{branch}"))),
            Header::From(rsip::headers::From::new(format!("<{from}>;tag=a"))),
            Header::To(rsip::headers::To::new(format!("<{to}>;tag={tag}"))),
            Header::CallId(rsip::headers::CallId::new("c1")),
            Header::CSeq(rsip::headers::CSeq::new(format!("{seq} {method}"))),
            Header::ContentLength(rsip::headers::ContentLength::new(body.len().to_string())),
        ];
        rsip::Response {
            status_code: rsip::StatusCode::from(code),
            version: rsip::Version::V2,
            headers: Headers::from(headers),
            body: body.into_bytes(),
        }
    }
}

/// Strings of `chars` and `escaped`s, `range` of them, for the URI components.
fn escaped_or(chars: &str, range: &str) -> impl Strategy<Value = String> + use<> {
    proptest::string::string_regex(&format!("(([{chars}])|%[0-9a-fA-F]{{2}}){range}")).unwrap()
}

const UNRESERVED: &str = "a-zA-Z0-9\\-_.!~*'()";

fn arb_host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,5}[a-z0-9])?){0,2}\\.?"
            .prop_filter("top label starts with a letter", |h: &String| {
                h.trim_end_matches('.')
                    .rsplit('.')
                    .next()
                    .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_alphabetic()))
            })
            .prop_map(Host::Name),
        any::<[u8; 4]>().prop_map(|o| Host::Ip(IpAddr::V4(Ipv4Addr::from(o)))),
        any::<[u16; 8]>().prop_map(|s| Host::Ip(IpAddr::V6(Ipv6Addr::from(s)))),
    ]
}

fn arb_params(
    name: impl Strategy<Value = String>,
    value: impl Strategy<Value = String>,
    max: usize,
) -> impl Strategy<Value = Vec<Param>> {
    proptest::collection::vec(
        (name, proptest::option::of(value)).prop_map(|(n, v)| Param { name: n, value: v }),
        0..max,
    )
}

prop_compose! {
    fn arb_sip_uri()(
        secure in any::<bool>(),
        user in proptest::option::of(escaped_or(&format!("{UNRESERVED}&=+$,;?/"), "{1,12}")),
        password in proptest::option::of(escaped_or(&format!("{UNRESERVED}&=+$,"), "{0,8}")),
        host in arb_host(),
        port in proptest::option::of(any::<u16>()),
        params in arb_params(
            escaped_or(&format!("{UNRESERVED}\\[\\]/:&+$"), "{1,8}"),
            escaped_or(&format!("{UNRESERVED}\\[\\]/:&+$"), "{1,8}"),
            4,
        ),
        headers in proptest::collection::vec(
            (
                escaped_or(&format!("{UNRESERVED}\\[\\]/?:+$"), "{1,8}"),
                escaped_or(&format!("{UNRESERVED}\\[\\]/?:+$"), "{0,8}"),
            ),
            0..3,
        ),
    ) -> SipUri {
        let password = password.filter(|_| user.is_some());
        SipUri { secure, user, password, host, port, params, headers }
    }
}

fn arb_uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        4 => arb_sip_uri().prop_map(Uri::Sip),
        1 => (
            "\\+[0-9][0-9().-]{0,12}",
            arb_params("[a-zA-Z0-9-]{1,8}", escaped_or(UNRESERVED, "{1,8}"), 3),
        )
            .prop_map(|(number, params)| Uri::Tel(TelUri { number, params })),
        1 => ("[a-zA-Z][a-zA-Z0-9+.-]{0,8}", escaped_or(&format!("{UNRESERVED};/?:@&=+$,"), "{1,20}"))
            .prop_filter("not a scheme with its own grammar", |(scheme, _)| {
                !["sip", "sips", "tel"].contains(&scheme.to_ascii_lowercase().as_str())
            })
            .prop_map(|(scheme, rest)| Uri::Other { scheme, rest }),
    ]
}

fn arb_display() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "\"([ !#-\\[\\]-~]|\\\\[ -~]){0,12}\"",
        proptest::collection::vec(token(), 1..3).prop_map(|w| w.join(" ")),
    ])
}

/// Header parameters: a token name and a token or quoted-string value.
fn arb_header_params() -> impl Strategy<Value = Vec<Param>> {
    proptest::collection::vec(
        (
            token(),
            proptest::option::of(prop_oneof![token(), "\"[ !#-\\[\\]-~]{0,8}\""]),
        )
            .prop_map(|(name, value)| Param { name, value }),
        0..4,
    )
}

prop_compose! {
    fn arb_name_addr()(
        display in arb_display(),
        uri in arb_uri(),
        bracketed in any::<bool>(),
        params in arb_header_params(),
    ) -> NameAddr {
        // An addr-spec cannot hold `;`, `,` or `?` (RFC 3261 §20.10): those need brackets.
        let plain = display.is_none() && !uri.to_string().contains([';', ',', '?']);
        NameAddr { display, uri, bracketed: bracketed || !plain, params }
    }
}

prop_compose! {
    fn arb_via()(
        transport in prop_oneof![Just("UDP".to_owned()), Just("TCP".to_owned()), Just("TLS".to_owned()), token()],
        host in arb_host(),
        port in proptest::option::of(any::<u16>()),
        params in arb_header_params(),
    ) -> Via {
        Via { protocol: "SIP/2.0".into(), transport, host, port, params }
    }
}

/// Spreads optional whitespace (one or more spaces or tabs) around the separators the grammar
/// lets it surround, outside quoted strings and angle brackets.
fn with_lws(text: &str, seps: &str, ws: &[String]) -> String {
    let mut out = String::new();
    let mut ws = ws.iter().cycle();
    let (mut quoted, mut angle) = (false, false);
    let mut escaped = false;
    for c in text.chars() {
        let sep = !quoted && !angle && seps.contains(c);
        if sep {
            out.push_str(ws.next().map_or("", String::as_str));
        }
        out.push(c);
        if sep {
            out.push_str(ws.next().map_or("", String::as_str));
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            _ => {}
        }
    }
    out
}

fn lws() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[ \t]{0,3}", 1..8)
}

proptest! {
    #[test]
    fn uris_round_trip(uri in arb_uri()) {
        let printed = uri.to_string();
        prop_assert_eq!(Uri::parse(&printed), Some(uri), "{}", printed);
    }

    #[test]
    fn sip_uris_print_the_same_through_rsip(uri in arb_sip_uri().prop_filter("no headers", |u| u.headers.is_empty())) {
        let uri = Uri::Sip(uri);
        let rsip_uri = rsip::Uri::from(&uri);
        prop_assert_eq!(
            rsip_uri.to_string().to_ascii_lowercase(),
            uri.to_string().to_ascii_lowercase()
        );
    }

    #[test]
    fn name_addrs_round_trip_with_any_optional_whitespace(
        list in proptest::collection::vec(arb_name_addr(), 1..3),
        ws in lws(),
    ) {
        let printed = list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        prop_assert_eq!(NameAddr::parse_list(&printed), Some(list.clone()), "{}", printed);
        // Whitespace cannot go inside an addr-spec's URI, so this half brackets every URI.
        let bracketed: Vec<NameAddr> =
            list.into_iter().map(|a| NameAddr { bracketed: true, ..a }).collect();
        let printed = bracketed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let spaced = with_lws(&printed, ";=,", &ws);
        prop_assert_eq!(NameAddr::parse_list(&spaced), Some(bracketed), "{}", spaced);
    }

    #[test]
    fn vias_round_trip_with_any_optional_whitespace(
        vias in proptest::collection::vec(arb_via(), 1..4),
        ws in lws(),
    ) {
        let printed = vias.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        prop_assert_eq!(Via::parse_list(&printed), Some(vias.clone()), "{}", printed);
        let spaced = with_lws(&printed, "/;=,", &ws);
        prop_assert_eq!(Via::parse_list(&spaced), Some(vias), "{}", spaced);
    }

    #[test]
    fn arbitrary_text_never_panics_the_grammar(text in "\\PC{0,80}") {
        if let Some(uri) = Uri::parse(&text) {
            prop_assert_eq!(Uri::parse(&uri.to_string()), Some(uri.clone()));
            let _ = rsip::Uri::from(&uri);
        }
        if let Some(list) = NameAddr::parse_list(&text) {
            let printed = list.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
            prop_assert_eq!(NameAddr::parse_list(&printed), Some(list));
        }
        let _ = Via::parse_list(&text);
    }
}

proptest! {
    #[test]
    fn requests_round_trip(request in arb_request()) {
        let printed = request.to_string();
        match validate(printed.as_bytes(), "t") {
            Inbound::Request(parsed) => {
                prop_assert_eq!(&parsed, &request);
                prop_assert_eq!(parsed.to_string(), printed);
            }
            other => prop_assert!(false, "refused {printed:?}: {other:?}"),
        }
    }

    #[test]
    fn responses_round_trip(response in arb_response()) {
        let printed = response.to_string();
        match validate(printed.as_bytes(), "t") {
            Inbound::Response(parsed) => prop_assert_eq!(parsed, response),
            other => prop_assert!(false, "dropped {printed:?}: {other:?}"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = validate(&bytes, "t");
        let mut ep = Endpoint::new(EndpointConfig::new("127.0.0.1", 5060), 1);
        ep.handle_message(std::time::Instant::now(), "127.0.0.1:9".parse().unwrap(), Transport::Udp, &bytes);
        let mut framer = StreamFramer::new();
        framer.push(&bytes);
        while let Ok(Some(_)) = framer.next_frame() {}
    }

    #[test]
    fn mutated_messages_never_panic(
        request in arb_request(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = request.to_string().into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, byte),
            }
        }
        let mut ep = Endpoint::new(EndpointConfig::new("127.0.0.1", 5060), 1);
        ep.handle_message(std::time::Instant::now(), "127.0.0.1:9".parse().unwrap(), Transport::Udp, &bytes);
        let stats = ep.stats();
        // Every message is accounted for: handled, refused or dropped, never lost silently.
        prop_assert_eq!(stats.messages_received, 1);
    }

    #[test]
    fn stream_framing_ignores_chunk_boundaries(
        requests in proptest::collection::vec(arb_request(), 1..4),
        cuts in proptest::collection::vec(1usize..64, 1..40),
        keepalive in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for r in &requests {
            if keepalive { stream.extend_from_slice(b"\r\n\r\n"); }
            stream.extend_from_slice(r.to_string().as_bytes());
        }
        let mut framer = StreamFramer::new();
        let mut messages = Vec::new();
        let mut pings = 0;
        let mut rest = stream.as_slice();
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            framer.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(frame) = framer.next_frame().unwrap() {
                match frame {
                    Frame::Message(m) => messages.push(m),
                    Frame::KeepAlivePing => pings += 1,
                }
            }
        }
        let expected: Vec<Vec<u8>> = requests.iter().map(|r| r.to_string().into_bytes()).collect();
        prop_assert_eq!(messages, expected);
        prop_assert_eq!(pings, if keepalive { requests.len() } else { 0 });
    }
}
