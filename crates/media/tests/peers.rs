#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The media pipeline against real peers, over SIP calls placed by our user agent on loopback:
//! SIPp replaying a PCMU speech capture into the call, SIPp echoing our RTP back, and baresip
//! answering, playing a WAV file and recording what it heard — in clear, and with mandatory
//! SDES SRTP. Audio is checked as audio: the right tone or the speech's length and level, in
//! both directions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_media::ring::RING_FRAMES;
use dialtone_media::{
    AudioFrame, FRAME_SAMPLES, FrameSender, MediaCall, MediaCodec, MediaConfig, MediaEngine,
    PortPool, level_dbfs,
};
use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile};
use dialtone_sdp::{
    AudioCodec, CryptoSuite, LocalMedia, OfferedKey, SdesKey, SdesOffer, SessionDescription,
    build_offer, negotiate_answer,
};
use dialtone_sip_ua::{CallEvent, DialRequest, SipUa, Transport, Trunk, UaConfig, UaEvent};
use dialtone_test_support::audio::{sine, tone_amplitude};
use dialtone_test_support::media::{Baresip, speech_ulaw, ulaw_to_wav, write_rtp_pcap};
use dialtone_test_support::{SipTransport, Sipp, SippOptions, free_port, scenario};

const AMPLITUDE: f64 = 8000.0;

/// A call placed to `port` on 127.0.0.1 whose media runs on `engine`, offering `sdes`'s keys
/// if any; `on_media` gets the call's media once answered and returns when the test is done
/// with it (the far end hangs up, or we do when it returns `true`).
async fn call<F, Fut>(
    engine: &Arc<MediaEngine>,
    port: u16,
    ports: (u16, u16),
    sdes: Option<SdesOffer>,
    on_media: F,
) where
    F: FnOnce(MediaCall) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ua = SipUa::start(UaConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), ports.0, ports.1);
    let bound = pool.bind().unwrap();
    let mut local = LocalMedia::new("127.0.0.1".parse().unwrap(), bound.port());
    local.codecs = vec![AudioCodec::Pcmu];
    local.sdes = sdes;
    let offer = build_offer(&local, 1, 1);
    let mut trunk = Trunk::new("peer", "127.0.0.1", Transport::Udp);
    trunk.port = Some(port);
    let mut request = DialRequest::new(Arc::new(trunk), "+15559870000", "+15551230000");
    request.sdp_offer = Some(offer.to_string().into_bytes());
    let mut sip = ua.dial(request).await.unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(20), sip.next_event())
            .await
            .unwrap()
        {
            Some(UaEvent::Call(CallEvent::Answered { sdp })) => break sdp.unwrap(),
            Some(UaEvent::Call(CallEvent::Failed { status, reason })) => {
                panic!("call failed: {status:?} {reason:?}")
            }
            Some(_) => {}
            None => panic!("call ended before an answer"),
        }
    };
    let answer = SessionDescription::parse(std::str::from_utf8(&answer).unwrap()).unwrap();
    let session = negotiate_answer(&offer, &answer).unwrap();
    assert_eq!(session.codec.codec, AudioCodec::Pcmu);
    assert_eq!(session.srtp.is_some(), local.sdes.is_some(), "{answer}");
    assert!(
        session.remote_rtp.unwrap().ip().is_loopback(),
        "media must stay on loopback: {:?}",
        session.remote_rtp
    );
    let media = engine
        .start(
            bound,
            MediaConfig {
                remote: session.remote_rtp,
                remote_rtcp: session.remote_rtcp,
                rtcp_mux: session.rtcp_mux,
                codec: MediaCodec::Pcmu,
                send_payload_type: session.codec.send_payload_type,
                receive_payload_type: session.codec.receive_payload_type,
                telephone_event: session.telephone_event,
                rtp_timeout: Duration::from_secs(30),
                record: None,
                ssrc: 0x1234_5678,
                initial_sequence: 4242,
                initial_timestamp: 0,
                cname: "peers-test".into(),
                srtp: session.srtp.as_ref().map(|s| {
                    SrtpKeys::new(
                        SrtpProfile::Aes128CmHmacSha1_80,
                        MasterKey::new(s.local.key, s.local.salt),
                        MasterKey::new(s.remote.key, s.remote.salt),
                    )
                }),
            },
        )
        .unwrap();
    if on_media(media).await {
        sip.hang_up().unwrap();
    }
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_secs(20), sip.next_event()).await
    {
        if matches!(event, UaEvent::Call(CallEvent::Ended { .. })) {
            break;
        }
    }
    drop(pool);
}

/// Feeds a 1 kHz tone into `sender` in real time until `until`.
async fn play_tone(mut sender: FrameSender, until: Instant) {
    let mut index = 0usize;
    while Instant::now() < until && !sender.is_closed() {
        while sender.free() > RING_FRAMES - 5 {
            let mut frame = AudioFrame::silence(Instant::now());
            sine(
                16000,
                1000.0,
                AMPLITUDE,
                index * FRAME_SAMPLES,
                &mut frame.samples,
            );
            index += 1;
            let _ = sender.try_send(frame);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Frames whose level is above -40 dBFS, in a run of frames.
fn voiced(frames: &[AudioFrame]) -> usize {
    frames
        .iter()
        .filter(|f| level_dbfs(&f.samples) > -40.0)
        .count()
}

/// Voiced 20 ms frames of 8 kHz µ-law audio, and its loudest frame's level.
fn ulaw_profile(ulaw: &[u8]) -> (usize, f64) {
    let codec = dialtone_codec::G711::new(dialtone_codec::G711Law::Mu);
    let mut pcm = [0i16; 160];
    let mut count = 0;
    let mut peak = -100.0f64;
    for chunk in ulaw.chunks_exact(160) {
        codec.decode(chunk, &mut pcm);
        let level = level_dbfs(&pcm);
        if level > -40.0 {
            count += 1;
        }
        peak = peak.max(level);
    }
    (count, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_plays_a_speech_recording_that_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let speech = speech_ulaw(
        dir.path(),
        "Hello, this is a reminder of your appointment tomorrow at ten in the morning.",
    )
    .unwrap();
    let pcap = dir.path().join("speech.pcap");
    write_rtp_pcap(&pcap, &speech).unwrap();
    let (sent_voiced, sent_peak) = ulaw_profile(&speech);
    let speech_ms = speech.len() as u64 / 8;
    let sipp = Sipp::uas(
        &scenario("callee_plays_recording.xml"),
        SipTransport::Udp,
        &SippOptions {
            replacements: vec![
                ("pcap".into(), pcap.display().to_string()),
                ("talk_ms".into(), (speech_ms + 1500).to_string()),
            ],
            args: vec!["-mp".into(), free_even_port().to_string()],
            ..SippOptions::default()
        },
    )
    .unwrap();
    let engine = MediaEngine::new(1).unwrap();
    let mut heard = Vec::new();
    call(&engine, sipp.port, (45400, 45499), None, |mut media| {
        let heard = &mut heard;
        async move {
            let mut inbound = media.take_inbound().unwrap();
            let deadline = Instant::now() + Duration::from_millis(speech_ms + 3000);
            // The far end hangs up; the ring ends when we stop the media after that.
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_millis(500), inbound.recv()).await {
                    Ok(Some(f)) => heard.push(f),
                    Ok(None) => break,
                    Err(_) if heard.len() > 10 => break,
                    Err(_) => {}
                }
            }
            let stats = media.stop().await;
            assert_eq!((stats.malformed, stats.lost), (0, 0), "{stats:?}");
            false
        }
    })
    .await;
    sipp.finish(Duration::from_secs(20)).unwrap();
    // The whole recording arrived: as many voiced frames as it has (± a few at the edges),
    // at its level (G.711 both ways, resampled to 16 kHz here).
    let got_voiced = voiced(&heard);
    assert!(
        got_voiced.abs_diff(sent_voiced) <= sent_voiced / 20 + 3,
        "{got_voiced} voiced frames heard, {sent_voiced} sent"
    );
    let got_peak = heard
        .iter()
        .map(|f| level_dbfs(&f.samples))
        .fold(-100.0, f64::max);
    assert!(
        (got_peak - sent_peak).abs() < 1.5,
        "peak {got_peak:.1} dBFS heard, {sent_peak:.1} sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_echoes_our_tone_back_at_its_frequency_and_level() {
    let sipp = Sipp::uas(
        &scenario("callee_echoes.xml"),
        SipTransport::Udp,
        &SippOptions {
            replacements: vec![("talk_ms".into(), "3000".into())],
            args: vec![
                "-mp".into(),
                free_even_port().to_string(),
                "-rtp_echo".into(),
            ],
            ..SippOptions::default()
        },
    )
    .unwrap();
    let engine = MediaEngine::new(1).unwrap();
    let mut heard = Vec::new();
    call(&engine, sipp.port, (45500, 45599), None, |mut media| {
        let heard = &mut heard;
        async move {
            let player = tokio::spawn(play_tone(
                media.take_outbound().unwrap(),
                Instant::now() + Duration::from_millis(2500),
            ));
            let mut inbound = media.take_inbound().unwrap();
            while heard.len() < 100 {
                match tokio::time::timeout(Duration::from_secs(5), inbound.recv()).await {
                    Ok(Some(f)) => heard.push(f),
                    _ => break,
                }
            }
            player.await.unwrap();
            let stats = media.stop().await;
            assert!(
                stats.packets_out >= 100 && stats.packets_in >= 90,
                "{stats:?}"
            );
            false
        }
    })
    .await;
    sipp.finish(Duration::from_secs(20)).unwrap();
    assert_eq!(heard.len(), 100);
    let tail: Vec<i16> = heard[60..].iter().flat_map(|f| f.samples).collect();
    let at = tone_amplitude(&tail, 16000, 1000.0);
    assert!((at - AMPLITUDE).abs() < AMPLITUDE * 0.15, "echo at {at:.0}");
    assert!(tone_amplitude(&tail, 16000, 1500.0) < AMPLITUDE * 0.05);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_hears_us_and_we_hear_baresip() {
    baresip_exchange(false).await;
}

/// baresip with `mediaenc=srtp-mand` takes our `RTP/SAVP` offer's `_80` key and answers with
/// its own: the whole exchange is SRTP (every packet we took authenticated, none refused),
/// and each side hears the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_with_mandatory_srtp_hears_us_and_we_hear_baresip() {
    baresip_exchange(true).await;
}

/// Our offer under `srtp: required`: `RTP/SAVP` with a key for `AES_CM_128_HMAC_SHA1_80`.
fn required_sdes() -> SdesOffer {
    SdesOffer {
        savp: true,
        keys: vec![OfferedKey {
            tag: 1,
            suite: CryptoSuite::AesCm128HmacSha1_80,
            key: SdesKey::new([0x42; 16], [0x24; 14]),
        }],
    }
}

async fn baresip_exchange(srtp: bool) {
    let dir = tempfile::tempdir().unwrap();
    let speech = speech_ulaw(
        dir.path(),
        "One two three four five six seven eight nine ten.",
    )
    .unwrap();
    let wav = dir.path().join("callee.wav");
    ulaw_to_wav(&speech, 8000, &wav).unwrap();
    let (sent_voiced, _) = ulaw_profile(&speech);
    let baresip = if srtp {
        Baresip::srtp_callee(&wav).unwrap()
    } else {
        Baresip::callee(&wav).unwrap()
    };
    let engine = MediaEngine::new(1).unwrap();
    let mut heard = Vec::new();
    let talk = Duration::from_millis(speech.len() as u64 / 8 + 1000);
    let (ports, sdes) = if srtp {
        ((45700, 45799), Some(required_sdes()))
    } else {
        ((45600, 45699), None)
    };
    call(&engine, baresip.port, ports, sdes, |mut media| {
        let heard = &mut heard;
        async move {
            let player = tokio::spawn(play_tone(
                media.take_outbound().unwrap(),
                Instant::now() + talk,
            ));
            let mut inbound = media.take_inbound().unwrap();
            let deadline = Instant::now() + talk;
            while Instant::now() < deadline {
                if let Ok(Some(f)) =
                    tokio::time::timeout(Duration::from_millis(500), inbound.recv()).await
                {
                    heard.push(f);
                }
            }
            player.await.unwrap();
            let stats = media.stop().await;
            assert!(stats.packets_in >= 50, "{stats:?}");
            // Every RTP packet authenticated. (baresip sends two RTCP packets in clear even
            // with mandatory SRTP — its first, an APP "PINGPONG" opening the path, and its
            // BYE when it hangs up — which are dropped as RTCP that cannot be read.)
            assert_eq!(
                (
                    stats.srtp_unauthenticated,
                    stats.srtp_replayed,
                    stats.malformed
                ),
                (0, 0, 0),
                "{stats:?}"
            );
            assert!(stats.rtcp_malformed <= 2, "{stats:?}");
            true
        }
    })
    .await;
    // We heard baresip's file: its speech, at least most of it (baresip's file source starts
    // when the call's audio starts, so the first frames may go by before our media runs).
    let got = voiced(&heard);
    assert!(
        got * 10 >= sent_voiced * 8,
        "{got} voiced frames heard of {sent_voiced}; baresip log:\n{}",
        baresip.log()
    );
    // baresip heard us: its recording of the call carries our 1 kHz tone at our level.
    let recorded = baresip
        .received_wav(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}; baresip log:\n{}", baresip.log()));
    let bytes = std::fs::read(&recorded).unwrap();
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(samples.len() as u32 >= rate, "at least a second recorded");
    let window = (rate / 50 * 10) as usize;
    let middle = &samples[samples.len() / 2 - window / 2..samples.len() / 2 + window / 2];
    let at = tone_amplitude(middle, rate, 1000.0);
    assert!(
        (at - AMPLITUDE).abs() < AMPLITUDE * 0.2,
        "baresip heard {at:.0}"
    );
}

/// An even port nobody holds (SIPp's media port; RTCP goes on the next).
fn free_even_port() -> u16 {
    loop {
        let port = free_port().unwrap();
        if port.is_multiple_of(2)
            && port < 65000
            && std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port + 1))).is_ok()
        {
            return port;
        }
    }
}

/// A callee without SRTP (baresip with no `srtp` module) and our `RTP/SAVP` offer (`srtp:
/// required`): it refuses the offer with 488, and no media ever starts. (The engine records
/// that as `srtp_unavailable`; an answer without a key would be refused the same way, by us.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_without_srtp_refuses_a_required_offer() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("callee.wav");
    dialtone_test_support::media::write_wav(&wav, 8000, &[0; 8000]).unwrap();
    let baresip = Baresip::callee(&wav).unwrap();
    let ua = SipUa::start(UaConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let mut local = LocalMedia::new("127.0.0.1".parse().unwrap(), 45800);
    local.codecs = vec![AudioCodec::Pcmu];
    local.sdes = Some(required_sdes());
    let offer = build_offer(&local, 1, 1);
    let mut trunk = Trunk::new("peer", "127.0.0.1", Transport::Udp);
    trunk.port = Some(baresip.port);
    let mut request = DialRequest::new(Arc::new(trunk), "+15559870000", "+15551230000");
    request.sdp_offer = Some(offer.to_string().into_bytes());
    let mut sip = ua.dial(request).await.unwrap();
    let failed = loop {
        match tokio::time::timeout(Duration::from_secs(20), sip.next_event())
            .await
            .unwrap()
        {
            Some(UaEvent::Call(CallEvent::Answered { sdp })) => {
                let text = String::from_utf8(sdp.unwrap_or_default()).unwrap();
                panic!("answered: {text}");
            }
            Some(UaEvent::Call(CallEvent::Failed { status, reason })) => break (status, reason),
            Some(_) => {}
            None => panic!("call ended before a final response"),
        }
    };
    assert_eq!(
        failed,
        (Some(488), dialtone_sip_ua::EndReason::IncompatibleMedia),
        "baresip log:\n{}",
        baresip.log()
    );
}
