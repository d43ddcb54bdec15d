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
    )
        .prop_map(
            |(media, port, maps, conn, ptime, direction, rtcp_mux, attrs)| {
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
                    other_attributes: attrs
                        .into_iter()
                        .filter(|(n, _)| {
                            Direction::parse(n).is_none()
                                && !["rtpmap", "fmtp", "ptime", "rtcp", "rtcp-mux"]
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
