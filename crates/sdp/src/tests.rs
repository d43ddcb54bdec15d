use super::*;
use proptest::prelude::*;

const ANSWER_PCMU: &str = "v=0\r\no=- 5 7 IN IP4 198.51.100.7\r\ns=call\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn local() -> LocalMedia {
    LocalMedia::new("203.0.113.5".parse().unwrap(), 20000)
}

#[test]
fn offer_has_every_codec_dtmf_ptime_direction_and_address() {
    let text = build_offer(&local(), 99, 1).to_string();
    assert_eq!(
        text,
        "v=0\r\no=dialtone 99 1 IN IP4 203.0.113.5\r\ns=Dialtone\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
         m=audio 20000 RTP/AVP 0 8 111 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0\r\na=fmtp:101 0-16\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
    );
    assert_eq!(SessionDescription::parse(&text).unwrap().to_string(), text);
}

#[test]
fn g722_is_offered_as_static_9_on_an_8000_clock_and_answered_with_or_without_rtpmap() {
    let mut with_g722 = local();
    with_g722.codecs.push(AudioCodec::G722);
    let offer = build_offer(&with_g722, 1, 1);
    let text = offer.to_string();
    assert!(
        text.contains("m=audio 20000 RTP/AVP 0 8 111 9 101\r\n"),
        "{text}"
    );
    assert!(text.contains("a=rtpmap:9 G722/8000\r\n"), "{text}");
    for answer in [
        ANSWER_PCMU
            .replace("RTP/AVP 0 101", "RTP/AVP 9 101")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:9 G722/8000"),
        // The static payload type alone (RFC 3551).
        ANSWER_PCMU
            .replace("RTP/AVP 0 101", "RTP/AVP 9 101")
            .replace("a=rtpmap:0 PCMU/8000\r\n", ""),
    ] {
        let s = negotiate_answer(&offer, &SessionDescription::parse(&answer).unwrap()).unwrap();
        assert_eq!(s.codec.codec, AudioCodec::G722, "{answer}");
        assert_eq!(
            (s.codec.send_payload_type, s.codec.receive_payload_type),
            (9, 9)
        );
    }
}

#[test]
fn ipv6_offer() {
    let offer = build_offer(
        &LocalMedia::new("2001:db8::5".parse().unwrap(), 20002),
        1,
        1,
    );
    let text = offer.to_string();
    assert!(text.contains("c=IN IP6 2001:db8::5\r\n"));
    assert_eq!(SessionDescription::parse(&text).unwrap(), offer);
}

#[test]
fn negotiates_the_answerers_choice_and_telephone_event() {
    let offer = build_offer(&local(), 1, 1);
    let s = negotiate_answer(&offer, &SessionDescription::parse(ANSWER_PCMU).unwrap()).unwrap();
    assert_eq!(s.codec.codec, AudioCodec::Pcmu);
    assert_eq!(
        (s.codec.send_payload_type, s.codec.receive_payload_type),
        (0, 0)
    );
    assert_eq!(s.telephone_event, Some(101));
    assert_eq!(s.remote_rtp, Some("198.51.100.7:30000".parse().unwrap()));
    assert_eq!(s.remote_rtcp, Some("198.51.100.7:30001".parse().unwrap()));
    assert_eq!(s.direction, Direction::SendRecv);
    assert!(!s.on_hold);
    assert_eq!(s.ptime, Some(20));
}

#[test]
fn dynamic_payload_types_are_mapped_by_name() {
    let offer = build_offer(&local(), 1, 1);
    let answer = ANSWER_PCMU
        .replace("RTP/AVP 0 101", "RTP/AVP 96 97")
        .replace(
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1",
        )
        .replace(
            "telephone-event/8000\r\na=fmtp:101",
            "telephone-event/8000\r\na=fmtp:97",
        )
        .replace("a=rtpmap:101", "a=rtpmap:97");
    let s = negotiate_answer(&offer, &SessionDescription::parse(&answer).unwrap()).unwrap();
    assert_eq!(s.codec.codec, AudioCodec::Opus);
    assert_eq!(s.codec.send_payload_type, 96);
    assert_eq!(s.codec.receive_payload_type, 111);
    assert_eq!(s.codec.channels, 2);
    assert_eq!(s.codec.fmtp.as_deref(), Some("useinbandfec=1"));
    assert_eq!(s.telephone_event, Some(97));
}

#[test]
fn no_common_codec_names_both_lists() {
    let offer = build_offer(&local(), 1, 1);
    let answer = ANSWER_PCMU
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    let err = negotiate_answer(&offer, &SessionDescription::parse(&answer).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no codec in common (offered: PCMU, PCMA, opus, telephone-event; answered: G729)"
    );
}

#[test]
fn rejected_stream_hold_and_direction() {
    let offer = build_offer(&local(), 1, 1);
    let rejected = ANSWER_PCMU.replace("m=audio 30000", "m=audio 0");
    assert_eq!(
        negotiate_answer(&offer, &SessionDescription::parse(&rejected).unwrap()),
        Err(SdpError::StreamRejected)
    );
    let held = ANSWER_PCMU.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
    let s = negotiate_answer(&offer, &SessionDescription::parse(&held).unwrap()).unwrap();
    assert!(s.on_hold);
    assert_eq!(s.remote_rtp, None);
    let sendonly = ANSWER_PCMU.replace("a=sendrecv", "a=sendonly");
    let s = negotiate_answer(&offer, &SessionDescription::parse(&sendonly).unwrap()).unwrap();
    assert!(s.on_hold);
    assert_eq!(s.direction, Direction::RecvOnly);
    let recvonly = ANSWER_PCMU.replace("a=sendrecv", "a=recvonly");
    let s = negotiate_answer(&offer, &SessionDescription::parse(&recvonly).unwrap()).unwrap();
    assert_eq!(s.direction, Direction::SendOnly);
    assert!(!s.on_hold);
}

#[test]
fn media_level_connection_and_rtcp_attributes_win() {
    let offer = build_offer(&local(), 1, 1);
    let answer = ANSWER_PCMU.replace(
        "a=ptime:20\r\n",
        "c=IN IP4 198.51.100.9\r\na=rtcp:40001\r\na=ptime:20\r\n",
    );
    let s = negotiate_answer(&offer, &SessionDescription::parse(&answer).unwrap()).unwrap();
    assert_eq!(s.remote_rtp, Some("198.51.100.9:30000".parse().unwrap()));
    assert_eq!(s.remote_rtcp, Some("198.51.100.9:40001".parse().unwrap()));
}

#[test]
fn answers_a_hold_reinvite_then_unhold_keeping_the_codec() {
    let offer = build_offer(&local(), 1, 1);
    let current =
        negotiate_answer(&offer, &SessionDescription::parse(ANSWER_PCMU).unwrap()).unwrap();
    let hold = ANSWER_PCMU
        .replace("RTP/AVP 0 101", "RTP/AVP 8 0 101")
        .replace("a=sendrecv", "a=sendonly");
    let (answer, s) = answer_offer(
        &SessionDescription::parse(&hold).unwrap(),
        &local(),
        Some(&current),
        1,
        2,
    )
    .unwrap();
    assert_eq!(s.codec.codec, AudioCodec::Pcmu, "current codec kept");
    assert_eq!(s.direction, Direction::RecvOnly);
    assert!(s.on_hold);
    let text = answer.to_string();
    assert!(text.contains("o=dialtone 1 2 IN IP4 203.0.113.5\r\n"));
    assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"));
    assert!(text.contains("a=recvonly\r\n"));

    let legacy_hold = ANSWER_PCMU.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
    let (_, s) = answer_offer(
        &SessionDescription::parse(&legacy_hold).unwrap(),
        &local(),
        Some(&current),
        1,
        3,
    )
    .unwrap();
    assert!(s.on_hold);
    assert_eq!(s.direction, Direction::RecvOnly);

    let (answer, s) = answer_offer(
        &SessionDescription::parse(ANSWER_PCMU).unwrap(),
        &local(),
        Some(&current),
        1,
        4,
    )
    .unwrap();
    assert!(!s.on_hold);
    assert!(answer.to_string().contains("a=sendrecv\r\n"));
}

#[test]
fn answer_refuses_extra_streams_with_port_zero() {
    let offer = format!("{ANSWER_PCMU}m=video 40000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
    let (answer, _) = answer_offer(
        &SessionDescription::parse(&offer).unwrap(),
        &local(),
        None,
        1,
        1,
    )
    .unwrap();
    assert_eq!(answer.media.len(), 2);
    assert_eq!(answer.media[1].port, 0);
    assert_eq!(answer.media[1].media, "video");
}

#[test]
fn malformed_descriptions_are_errors_naming_the_line() {
    let cases = [
        (
            "v=0\r\no=- 1\r\ns=-\r\n",
            SdpError::MalformedField {
                line: 2,
                field: "o=",
            },
        ),
        (
            "o=- 1 1 IN IP4 a\r\ns=-\r\n",
            SdpError::Missing { field: "v=" },
        ),
        ("v=0\r\nnonsense\r\n", SdpError::MalformedLine { line: 2 }),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio x RTP/AVP 0\r\n",
            SdpError::MalformedField {
                line: 4,
                field: "m=",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 999.1.1.1\r\n",
            SdpError::MalformedField {
                line: 4,
                field: "c=",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n",
            SdpError::MalformedField {
                line: 5,
                field: "rtpmap",
            },
        ),
    ];
    for (text, err) in cases {
        assert_eq!(SessionDescription::parse(text), Err(err), "{text:?}");
    }
}

#[test]
fn unknown_attributes_survive_a_round_trip() {
    let text = format!("{ANSWER_PCMU}a=label:1\r\na=x-custom\r\n");
    let parsed = SessionDescription::parse(&text).unwrap();
    assert_eq!(
        parsed.audio().unwrap().other_attributes,
        vec![
            ("label".to_owned(), Some("1".to_owned())),
            ("x-custom".to_owned(), None)
        ]
    );
    assert_eq!(
        SessionDescription::parse(&parsed.to_string()).unwrap(),
        parsed
    );
}

fn arb_direction() -> impl Strategy<Value = Option<Direction>> {
    prop_oneof![
        Just(None),
        Just(Some(Direction::SendRecv)),
        Just(Some(Direction::SendOnly)),
        Just(Some(Direction::RecvOnly)),
        Just(Some(Direction::Inactive)),
    ]
}

fn arb_media() -> impl Strategy<Value = MediaDescription> {
    (
        "[a-z]{1,8}",
        any::<u16>(),
        proptest::collection::vec(
            (any::<u8>(), "[A-Za-z0-9-]{1,12}", 1u32..200_000, 1u8..3),
            0..4,
        ),
        proptest::option::of(any::<[u8; 4]>()),
        proptest::option::of(1u32..200),
        arb_direction(),
        any::<bool>(),
        proptest::collection::vec(
            (
                "[a-z][a-z0-9-]{0,10}",
                proptest::option::of("[a-z0-9 =;/]{1,16}"),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                0u32..1_000_000_000,
                "[A-Z0-9_]{1,24}",
                "inline:[A-Za-z0-9+/=|:^]{1,50}",
                proptest::collection::vec("[A-Z_]{1,8}(=[0-9]{1,3})?", 0..2),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(media, port, maps, conn, ptime, direction, rtcp_mux, attrs, crypto)| {
                let rtpmaps: Vec<RtpMap> = maps
                    .into_iter()
                    .map(|(pt, enc, clock, ch)| RtpMap {
                        payload_type: pt,
                        encoding: enc,
                        clock_rate: clock,
                        channels: ch,
                    })
                    .collect();
                MediaDescription {
                    formats: rtpmaps.iter().map(|r| r.payload_type.to_string()).collect(),
                    media,
                    port,
                    protocol: "RTP/AVP".into(),
                    connection: conn.map(IpAddr::from),
                    rtpmaps,
                    fmtps: Vec::new(),
                    ptime,
                    direction,
                    rtcp_mux,
                    rtcp_port: None,
                    crypto: crypto
                        .into_iter()
                        .map(|(tag, suite, key_params, session_params)| CryptoAttribute {
                            tag,
                            suite,
                            key_params,
                            session_params,
                        })
                        .collect(),
                    other_attributes: attrs
                        .into_iter()
                        .filter(|(n, _)| {
                            Direction::parse(n).is_none()
                                && !["rtpmap", "fmtp", "ptime", "rtcp", "rtcp-mux", "crypto"]
                                    .contains(&n.as_str())
                        })
                        .map(|(n, v)| (n, v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())))
                        .collect(),
                }
            },
        )
}

proptest! {
    #[test]
    fn print_then_parse_is_identity(
        id in any::<u64>(),
        version in any::<u64>(),
        name in "[A-Za-z0-9 ]{0,20}".prop_map(|s| s.trim().to_owned()).prop_filter("non-empty", |s| !s.is_empty()),
        conn in proptest::option::of(any::<[u8; 16]>()),
        direction in arb_direction(),
        media in proptest::collection::vec(arb_media(), 0..3),
    ) {
        let sd = SessionDescription {
            origin: Origin { username: "-".into(), session_id: id, version, address: "IN IP4 192.0.2.1".into() },
            session_name: name,
            connection: conn.map(IpAddr::from),
            timing: (0, 0),
            direction,
            other_attributes: Vec::new(),
            media,
        };
        let text = sd.to_string();
        prop_assert_eq!(SessionDescription::parse(&text).unwrap(), sd);
    }

    #[test]
    fn parse_never_panics(text in "(?s).{0,400}") {
        let _ = SessionDescription::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_line_shaped_input(lines in proptest::collection::vec("[vosctmab]=[ -~]{0,40}", 0..20)) {
        let text = lines.join("\r\n");
        if let Ok(sd) = SessionDescription::parse(&text) {
            let offer = build_offer(&local(), 1, 1);
            let _ = negotiate_answer(&offer, &sd);
            let _ = answer_offer(&sd, &local(), None, 1, 2);
        }
    }
}

// SDES (RFC 4568).

const KEY_80: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

fn sdes_local(savp: bool) -> LocalMedia {
    let mut l = local();
    l.sdes = Some(SdesOffer {
        savp,
        keys: vec![
            OfferedKey {
                tag: 1,
                suite: CryptoSuite::AesCm128HmacSha1_80,
                key: SdesKey::new([1; 16], [2; 14]),
            },
            OfferedKey {
                tag: 2,
                suite: CryptoSuite::AesCm128HmacSha1_32,
                key: SdesKey::new([3; 16], [4; 14]),
            },
        ],
    });
    l
}

fn answer_with(protocol: &str, crypto: &[&str]) -> SessionDescription {
    let mut text = ANSWER_PCMU.replace("RTP/AVP", protocol);
    for c in crypto {
        text.push_str(&format!("a=crypto:{c}\r\n"));
    }
    SessionDescription::parse(&text).unwrap()
}

#[test]
fn crypto_attributes_parse_and_print_as_written() {
    for value in [
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"),
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4"),
        format!("42 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}|1066:2 KDR=0 WSH=64"),
        "7 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP".to_owned(),
    ] {
        let attribute = CryptoAttribute::parse(&value).unwrap();
        assert_eq!(attribute.to_string(), value);
    }
    let a = CryptoAttribute::parse(&format!(
        "42 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}|2^31|1066:2 WSH=64"
    ))
    .unwrap();
    assert_eq!(a.tag, 42);
    let (suite, key) = a.usable_key().unwrap();
    assert_eq!(suite, CryptoSuite::AesCm128HmacSha1_32);
    assert_eq!(
        key.mki,
        Some(Mki {
            value: 1066,
            length: 2
        })
    );
    assert_eq!(&key.key[..4], b"YS__");
    // Our own keys print as inline base64 of key || salt and read back.
    let ours = CryptoAttribute::new(
        3,
        CryptoSuite::AesCm128HmacSha1_80,
        &SdesKey::new([7; 16], [9; 14]),
    );
    assert_eq!(
        ours.to_string(),
        "3 AES_CM_128_HMAC_SHA1_80 inline:BwcHBwcHBwcHBwcHBwcHBwkJCQkJCQkJCQkJCQkJ"
    );
    assert_eq!(ours.usable_key().unwrap().1, SdesKey::new([7; 16], [9; 14]));
}

#[test]
fn crypto_attributes_breaking_the_grammar_are_errors_and_unusable_keys_are_told_apart() {
    for bad in [
        "",
        "1",
        "x AES_CM_128_HMAC_SHA1_80 inline:abc",
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:abc",
        "1 AES-CM inline:abc",
        "1 AES_CM_128_HMAC_SHA1_80 nokeymethod",
    ] {
        assert!(CryptoAttribute::parse(bad).is_none(), "{bad:?}");
        let text = ANSWER_PCMU.to_owned() + &format!("a=crypto:{bad}\r\n");
        assert!(matches!(
            SessionDescription::parse(&text),
            Err(SdpError::MalformedField {
                field: "crypto",
                ..
            })
        ));
    }
    for unusable in [
        // Unknown suite, short key, bad base64, a key method other than inline.
        format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}"),
        "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_owned(),
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_owned(),
        format!("1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_80}"),
        // An MKI over 4 bytes, a session parameter that changes the transform.
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1:5"),
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNENCRYPTED_SRTP"),
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} KDR=10"),
    ] {
        assert!(
            CryptoAttribute::parse(&unusable)
                .unwrap()
                .usable_key()
                .is_none(),
            "{unusable}"
        );
    }
}

#[test]
fn keys_never_show_in_debug() {
    let offer = build_offer(&sdes_local(true), 1, 1);
    let answer = answer_with(
        "RTP/SAVP",
        &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
    );
    let session = negotiate_answer(&offer, &answer).unwrap();
    let shown = format!("{offer:?} {answer:?} {session:?} {:?}", sdes_local(true));
    assert!(
        !shown.contains(KEY_80) && !shown.contains("inline"),
        "{shown}"
    );
    assert!(
        !shown.contains("[1, 1,") && !shown.contains("key: ["),
        "{shown}"
    );
}

#[test]
fn an_srtp_offer_carries_its_keys_on_savp_or_best_effort_on_avp() {
    let text = build_offer(&sdes_local(true), 1, 1).to_string();
    assert!(
        text.contains("m=audio 20000 RTP/SAVP 0 8 111 101\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "a=sendrecv\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AQEBAQEBAQEBAQEBAQEBAQICAgICAgICAgICAgIC\r\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:AwMDAwMDAwMDAwMDAwMDAwQEBAQEBAQEBAQEBAQE\r\n"
        ),
        "{text}"
    );
    assert_eq!(SessionDescription::parse(&text).unwrap().to_string(), text);
    let best_effort = build_offer(&sdes_local(false), 1, 1).to_string();
    assert!(best_effort.contains("m=audio 20000 RTP/AVP 0 8 111 101\r\n"));
    assert_eq!(best_effort.matches("a=crypto:").count(), 2);
}

#[test]
fn the_answer_picks_one_of_our_tags_and_its_key_is_theirs() {
    let offer = build_offer(&sdes_local(true), 1, 1);
    let answer = answer_with(
        "RTP/SAVP",
        &[
            // An unknown suite is passed over, then our tag 2 with its suite is taken.
            &format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}"),
            &format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}"),
        ],
    );
    let srtp = negotiate_answer(&offer, &answer).unwrap().srtp.unwrap();
    assert_eq!(srtp.tag, 2);
    assert_eq!(srtp.suite, CryptoSuite::AesCm128HmacSha1_32);
    assert_eq!(srtp.local, SdesKey::new([3; 16], [4; 14]));
    assert_eq!(&srtp.remote.key[..4], b"YS__");
}

#[test]
fn an_answer_without_a_usable_key_is_refused_unless_it_declines_srtp_on_avp() {
    let offer = build_offer(&sdes_local(false), 1, 1);
    // Plain RTP/AVP without a=crypto: SRTP declined, the session is plain.
    let plain = negotiate_answer(&offer, &answer_with("RTP/AVP", &[])).unwrap();
    assert_eq!(plain.srtp, None);
    for answer in [
        answer_with("RTP/SAVP", &[]),
        // A tag we did not offer, our tag with the other suite, an unusable key.
        answer_with(
            "RTP/SAVP",
            &[&format!("9 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
        ),
        answer_with(
            "RTP/AVP",
            &[&format!("1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}")],
        ),
        answer_with("RTP/AVP", &["1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ="]),
    ] {
        assert_eq!(
            negotiate_answer(&offer, &answer),
            Err(SdpError::NoUsableKey),
            "{answer}"
        );
    }
    // Without keys in our offer, an answer's are none of our business.
    let no_sdes = build_offer(&local(), 1, 1);
    let answer = answer_with(
        "RTP/SAVP",
        &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
    );
    assert_eq!(negotiate_answer(&no_sdes, &answer).unwrap().srtp, None);
}

#[test]
fn a_reoffer_keeps_the_keys_or_is_refused() {
    let offer = build_offer(&sdes_local(true), 1, 1);
    let answer = answer_with(
        "RTP/SAVP",
        &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
    );
    let current = negotiate_answer(&offer, &answer).unwrap();
    // A hold with the same key under another tag: answered with our key under that tag.
    let hold = answer_with(
        "RTP/SAVP",
        &[&format!("5 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
    )
    .to_string()
    .replace("a=sendrecv", "a=sendonly");
    let hold = SessionDescription::parse(&hold).unwrap();
    let (ours, negotiated) = answer_offer(&hold, &local(), Some(&current), 1, 2).unwrap();
    let text = ours.to_string();
    assert!(text.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{text}");
    assert!(
        text.contains(
            "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:AQEBAQEBAQEBAQEBAQEBAQICAgICAgICAgICAgIC\r\n"
        ),
        "{text}"
    );
    assert_eq!(negotiated.srtp.as_ref().map(|s| s.tag), Some(5));
    assert_eq!(
        negotiated.srtp.unwrap().remote,
        current.srtp.clone().unwrap().remote
    );
    // New keys, or no keys: refused.
    for reoffer in [
        answer_with(
            "RTP/SAVP",
            &["1 AES_CM_128_HMAC_SHA1_80 inline:AwMDAwMDAwMDAwMDAwMDAwQEBAQEBAQEBAQEBAQE"],
        ),
        answer_with("RTP/AVP", &[]),
    ] {
        assert_eq!(
            answer_offer(&reoffer, &local(), Some(&current), 1, 3).err(),
            Some(SdpError::NoUsableKey)
        );
    }
    // A plain call takes no SAVP re-offer, and answers an AVP one with keys plainly.
    let plain =
        negotiate_answer(&build_offer(&local(), 1, 1), &answer_with("RTP/AVP", &[])).unwrap();
    let savp = answer_with(
        "RTP/SAVP",
        &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
    );
    assert_eq!(
        answer_offer(&savp, &local(), Some(&plain), 1, 2).err(),
        Some(SdpError::NoUsableKey)
    );
    let avp = answer_with(
        "RTP/AVP",
        &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")],
    );
    let (ours, negotiated) = answer_offer(&avp, &local(), Some(&plain), 1, 2).unwrap();
    assert!(!ours.to_string().contains("crypto") && negotiated.srtp.is_none());
}
