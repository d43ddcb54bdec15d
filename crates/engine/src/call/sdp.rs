//! The call's SDP: our offer, what the far end agreed to, and our answers to its re-offers.
//!
//! SRTP follows the trunk's [`SrtpMode`] (SDES keys, RFC 4568, which travel only over TLS):
//!
//! * `off`: today's offer, byte for byte; keys in an answer are ignored.
//! * `optional`: best-effort SRTP — our `RTP/AVP` offer carries `a=crypto` keys (both suites,
//!   `_80` first). A far end that knows SDES answers with its key and the media is SRTP; one
//!   that does not ignores the unknown attribute (RFC 4566) and answers plain RTP, which is
//!   taken. This is what carriers and PBXs do for optional encryption (Asterisk's
//!   optimistic encryption, FreeSWITCH's optional SRTP, baresip's `srtp`): an `RTP/SAVP`
//!   offer would be refused outright (488, or the stream at port 0) by the many trunks that
//!   do not run SRTP, and falling back would cost a second INVITE, and a second ring.
//! * `required`: `RTP/SAVP` with the same keys; an answer without a usable key ends the call
//!   ([`Refusal::NoKey`] → `srtp_unavailable`), and its media never starts, so nothing is sent
//!   in clear.
//!
//! [`srtp_policy`] is the one place that decides.
//!
//! The offer lists the trunk's codecs in its order of preference ([`sdp_codec`] maps the
//! model's names onto the SDP crate's codecs, [`model_codec`] back for the call record).

use std::net::IpAddr;

use dialtone_model::{Codec, SrtpMode};
use dialtone_sdp::{
    AudioCodec, CryptoSuite, LocalMedia, NegotiatedSession, OfferedKey, SdesKey, SdesOffer,
    SdpError, SessionDescription, build_offer, negotiate_answer,
};
use rand::Rng;
use uuid::Uuid;

/// Why an answer's SDP cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It does not parse, or has no codec or address we can use.
    Unusable,
    /// SRTP is required and it brings no usable key, or it brings keys we cannot use.
    NoKey,
}

/// Our side of the call's offer/answer exchanges.
#[derive(Debug)]
pub(super) struct SdpSession {
    local: LocalMedia,
    offer: SessionDescription,
    srtp: SrtpMode,
    /// The `o=` line's session id.
    session_id: u64,
    /// The `o=` line's version, bumped with each description we send.
    version: u64,
    /// What was agreed last (early answer, answer, re-offer).
    current: Option<NegotiatedSession>,
    /// Why the last answer was refused, for a 2xx without SDP after it.
    refused: Option<Refusal>,
}

/// Fresh SDES keys for our offer: one per suite we run, `_80` first, each drawn from the
/// operating system's randomness.
fn fresh_keys() -> Vec<OfferedKey> {
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ]
    .into_iter()
    .zip(1..)
    .map(|(suite, tag)| {
        let mut key = SdesKey::new([0; 16], [0; 14]);
        rng.fill_bytes(&mut key.key);
        rng.fill_bytes(&mut key.salt);
        OfferedKey { tag, suite, key }
    })
    .collect()
}

/// The SDP codec of a trunk's codec.
pub(super) fn sdp_codec(codec: Codec) -> AudioCodec {
    match codec {
        Codec::Opus => AudioCodec::Opus,
        Codec::G722 => AudioCodec::G722,
        Codec::Pcmu => AudioCodec::Pcmu,
        Codec::Pcma => AudioCodec::Pcma,
    }
}

/// The model's name for a negotiated codec.
pub(super) fn model_codec(codec: AudioCodec) -> Codec {
    match codec {
        AudioCodec::Opus => Codec::Opus,
        AudioCodec::G722 => Codec::G722,
        AudioCodec::Pcmu => Codec::Pcmu,
        AudioCodec::Pcma => Codec::Pcma,
    }
}

/// The SRTP `srtp` makes our offer carry.
fn sdes_offer(srtp: SrtpMode) -> Option<SdesOffer> {
    match srtp {
        SrtpMode::Off => None,
        SrtpMode::Optional | SrtpMode::Required => Some(SdesOffer {
            savp: srtp == SrtpMode::Required,
            keys: fresh_keys(),
        }),
    }
}

/// Whether the session an answer makes may be used under `srtp`: SRTP when it brings our
/// suite's key, plain only when SRTP is not required.
pub(super) fn srtp_policy(
    srtp: SrtpMode,
    negotiated: Result<NegotiatedSession, SdpError>,
) -> Result<NegotiatedSession, Refusal> {
    match negotiated {
        Err(SdpError::NoUsableKey) => Err(Refusal::NoKey),
        Err(_) => Err(Refusal::Unusable),
        Ok(session) if session.srtp.is_none() && srtp == SrtpMode::Required => Err(Refusal::NoKey),
        Ok(session) => Ok(session),
    }
}

impl SdpSession {
    /// Our offer for media at `address:port` for call `call_id`: the trunk's `codecs` in its
    /// order of preference (RFC 3264 §5.1: the answerer takes the first it supports), with
    /// SRTP as `srtp` says.
    pub(super) fn offer(
        address: IpAddr,
        port: u16,
        call_id: Uuid,
        srtp: SrtpMode,
        codecs: &[Codec],
    ) -> Self {
        let mut local = LocalMedia::new(address, port);
        local.codecs = codecs.iter().copied().map(sdp_codec).collect();
        local.sdes = sdes_offer(srtp);
        let session_id = u64::from(port) << 32 | u64::from(call_id.as_u128() as u32);
        let offer = build_offer(&local, session_id, 1);
        Self {
            local,
            offer,
            srtp,
            session_id,
            version: 1,
            current: None,
            refused: None,
        }
    }

    /// Our answer to a caller's `offer` (a call placed to us) for media at `address:port`:
    /// the first of the trunk's `codecs` (its order of preference) that the offer contains,
    /// under the trunk's `srtp` mode; the session it makes is agreed at once. Returns the
    /// answer's text.
    pub(super) fn answer(
        address: IpAddr,
        port: u16,
        call_id: Uuid,
        (srtp, codecs): (SrtpMode, &[Codec]),
        offer: &[u8],
    ) -> Result<(Self, String), Refusal> {
        let mut session = Self::offer(address, port, call_id, srtp, codecs);
        let offer = std::str::from_utf8(offer)
            .map_err(|_| SdpError::NoAudio)
            .and_then(SessionDescription::parse);
        let answered = offer.and_then(|offer| {
            let mut first_error = SdpError::NoAudio;
            for (i, codec) in session.local.codecs.iter().enumerate() {
                let mut one = session.local.clone();
                one.codecs = vec![*codec];
                match dialtone_sdp::answer_offer(
                    &offer,
                    &one,
                    None,
                    session.session_id,
                    session.version,
                ) {
                    Ok(answered) => return Ok(answered),
                    Err(error) if i == 0 => first_error = error,
                    Err(_) => {}
                }
            }
            Err(first_error)
        });
        let (answer, negotiated) = match answered {
            Ok((answer, negotiated)) => (answer, Ok(negotiated)),
            Err(error) => (session.offer.clone(), Err(error)),
        };
        let negotiated = srtp_policy(srtp, negotiated)?;
        session.current = Some(negotiated);
        Ok((session, answer.to_string()))
    }

    /// The offer, as it goes in the INVITE.
    pub(super) fn offer_bytes(&self) -> Vec<u8> {
        self.offer.to_string().into_bytes()
    }

    /// The session the far end's answer `sdp` to our offer makes, if the trunk's SRTP mode
    /// lets it be used.
    pub(super) fn negotiate(&mut self, sdp: &[u8]) -> Result<NegotiatedSession, Refusal> {
        let negotiated = std::str::from_utf8(sdp)
            .map_err(|_| SdpError::NoAudio)
            .and_then(SessionDescription::parse)
            .and_then(|answer| negotiate_answer(&self.offer, &answer));
        let session = srtp_policy(self.srtp, negotiated);
        self.refused = session.as_ref().err().copied();
        session
    }

    /// What was agreed last.
    pub(super) fn current(&self) -> Option<&NegotiatedSession> {
        self.current.as_ref()
    }

    /// Why the last answer was refused, if it was.
    pub(super) fn refused(&self) -> Option<Refusal> {
        self.refused
    }

    /// Makes `session` the agreed one.
    pub(super) fn agree(&mut self, session: NegotiatedSession) {
        self.current = Some(session);
    }

    /// Our answer to a re-INVITE/UPDATE offer (hold, resume, refresh, a new address), from the
    /// current session, which it replaces. The media pipeline cannot switch codec or SRTP keys
    /// mid-call, so an offer that drops the current codec, changes the keys or drops SRTP is
    /// refused (`None`, to be answered 488). An offerless re-INVITE gets our current
    /// description as the offer.
    pub(super) fn answer_remote_offer(
        &mut self,
        offer: Option<&[u8]>,
    ) -> Option<(String, NegotiatedSession)> {
        self.version += 1;
        let answered = answer_remote_offer(
            offer,
            &self.local,
            self.current.as_ref(),
            (self.session_id, self.version),
        )?;
        self.current = Some(answered.1.clone());
        Some(answered)
    }
}

fn answer_remote_offer(
    offer: Option<&[u8]>,
    local: &LocalMedia,
    current: Option<&NegotiatedSession>,
    (session_id, version): (u64, u64),
) -> Option<(String, NegotiatedSession)> {
    let current = current?;
    let Some(offer) = offer else {
        let mut ours = local.clone();
        ours.codecs = vec![current.codec.codec];
        ours.sdes = current.srtp.as_ref().map(|srtp| SdesOffer {
            savp: local.sdes.as_ref().is_some_and(|s| s.savp),
            keys: vec![OfferedKey {
                tag: srtp.tag,
                suite: srtp.suite,
                key: srtp.local.clone(),
            }],
        });
        return Some((
            build_offer(&ours, session_id, version).to_string(),
            current.clone(),
        ));
    };
    let offer = SessionDescription::parse(std::str::from_utf8(offer).ok()?).ok()?;
    let (answer, negotiated) =
        dialtone_sdp::answer_offer(&offer, local, Some(current), session_id, version).ok()?;
    (negotiated.codec.codec == current.codec.codec).then(|| (answer.to_string(), negotiated))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    const ANSWER: &str = "v=0\r\no=- 5 7 IN IP4 198.51.100.7\r\ns=call\r\nc=IN IP4 198.51.100.7\r\n\
         t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
    const THEIR_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn session(srtp: SrtpMode) -> SdpSession {
        offer(srtp, Codec::DEFAULT_PREFERENCE)
    }

    fn offer(srtp: SrtpMode, codecs: &[Codec]) -> SdpSession {
        SdpSession::offer(
            "203.0.113.5".parse().unwrap(),
            20000,
            Uuid::nil(),
            srtp,
            codecs,
        )
    }

    fn answer(protocol: &str, crypto: Option<&str>) -> Vec<u8> {
        let mut text = ANSWER.replace("RTP/AVP", protocol);
        if let Some(c) = crypto {
            text.push_str(&format!("a=crypto:{c}\r\n"));
        }
        text.into_bytes()
    }

    /// A caller's offer of PCMA then PCMU (the caller prefers PCMA).
    const CALLER_OFFER: &str = "v=0\r\no=- 9 9 IN IP4 198.51.100.9\r\ns=-\r\n\
         c=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0 101\r\n\
         a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn answered(codecs: &[Codec]) -> Result<(SdpSession, String), Refusal> {
        SdpSession::answer(
            "203.0.113.5".parse().unwrap(),
            20000,
            Uuid::nil(),
            (SrtpMode::Off, codecs),
            CALLER_OFFER.as_bytes(),
        )
    }

    #[test]
    fn a_callers_offer_is_answered_with_the_trunks_first_codec_it_contains() {
        let (session, text) = answered(&[Codec::Opus, Codec::Pcmu, Codec::Pcma]).unwrap();
        assert_eq!(session.current().unwrap().codec.codec, AudioCodec::Pcmu);
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert_eq!(
            session.current().unwrap().remote_rtp,
            Some("198.51.100.9:40000".parse().unwrap())
        );
        let (session, _) = answered(&[Codec::Pcma, Codec::Pcmu]).unwrap();
        assert_eq!(session.current().unwrap().codec.codec, AudioCodec::Pcma);
        assert_eq!(
            answered(&[Codec::Opus, Codec::G722]).err(),
            Some(Refusal::Unusable)
        );
        let garbage = SdpSession::answer(
            "203.0.113.5".parse().unwrap(),
            20000,
            Uuid::nil(),
            (SrtpMode::Off, Codec::DEFAULT_PREFERENCE),
            b"not sdp",
        );
        assert_eq!(garbage.err(), Some(Refusal::Unusable));
    }

    #[test]
    fn off_offers_plain_rtp_without_keys() {
        let text = String::from_utf8(session(SrtpMode::Off).offer_bytes()).unwrap();
        assert!(
            text.contains("m=audio 20000 RTP/AVP 111 9 0 8 101\r\n"),
            "{text}"
        );
        assert!(!text.contains("crypto"));
        // Keys in an answer to a plain offer change nothing.
        let keyed = answer(
            "RTP/AVP",
            Some(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}")),
        );
        assert_eq!(session(SrtpMode::Off).negotiate(&keyed).unwrap().srtp, None);
    }

    #[test]
    fn optional_offers_keys_on_avp_and_takes_a_plain_answer_or_a_keyed_one() {
        let mut optional = session(SrtpMode::Optional);
        let text = String::from_utf8(optional.offer_bytes()).unwrap();
        assert!(text.contains("m=audio 20000 RTP/AVP "), "{text}");
        assert!(text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
        assert!(text.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
        assert_eq!(
            optional.negotiate(&answer("RTP/AVP", None)).unwrap().srtp,
            None
        );
        let keyed = answer(
            "RTP/AVP",
            Some(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{THEIR_KEY}")),
        );
        let srtp = optional.negotiate(&keyed).unwrap().srtp.unwrap();
        assert_eq!(srtp.suite, CryptoSuite::AesCm128HmacSha1_32);
        // Keys the answer brings but we cannot use are no plain answer: refused.
        let wrong_tag = answer(
            "RTP/AVP",
            Some(&format!("7 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}")),
        );
        assert_eq!(optional.negotiate(&wrong_tag).err(), Some(Refusal::NoKey));
    }

    #[test]
    fn required_offers_savp_and_refuses_an_answer_without_a_usable_key() {
        let mut required = session(SrtpMode::Required);
        let text = String::from_utf8(required.offer_bytes()).unwrap();
        assert!(text.contains("m=audio 20000 RTP/SAVP "), "{text}");
        for refused in [
            answer("RTP/AVP", None),
            answer("RTP/SAVP", None),
            answer(
                "RTP/SAVP",
                Some(&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{THEIR_KEY}")),
            ),
        ] {
            assert_eq!(required.negotiate(&refused).err(), Some(Refusal::NoKey));
            assert_eq!(required.refused(), Some(Refusal::NoKey));
        }
        assert_eq!(
            required.negotiate(b"garbage").err(),
            Some(Refusal::Unusable)
        );
        let keyed = answer(
            "RTP/SAVP",
            Some(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}")),
        );
        assert!(required.negotiate(&keyed).unwrap().srtp.is_some());
        assert_eq!(required.refused(), None);
    }

    #[test]
    fn every_offer_draws_fresh_keys_and_an_offerless_reinvite_offers_the_agreed_one() {
        let a = String::from_utf8(session(SrtpMode::Required).offer_bytes()).unwrap();
        let b = String::from_utf8(session(SrtpMode::Required).offer_bytes()).unwrap();
        assert_ne!(a, b);
        let mut s = session(SrtpMode::Required);
        let keyed = answer(
            "RTP/SAVP",
            Some(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}")),
        );
        let agreed = s.negotiate(&keyed).unwrap();
        s.agree(agreed);
        let (ours, _) = s.answer_remote_offer(None).unwrap();
        assert!(ours.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{ours}");
        assert_eq!(
            ours.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80").count(),
            1
        );
        assert!(!ours.contains("a=crypto:2"));
    }

    #[test]
    fn the_offer_lists_the_trunks_codecs_best_first_and_only_those() {
        let text =
            String::from_utf8(offer(SrtpMode::Off, &[Codec::G722, Codec::Pcma]).offer_bytes())
                .unwrap();
        assert!(text.contains("m=audio 20000 RTP/AVP 9 8 101\r\n"), "{text}");
        assert!(!text.contains("PCMU") && !text.contains("opus"), "{text}");
        // An answer in a codec the trunk left out is refused.
        let mut pcma_only = offer(SrtpMode::Off, &[Codec::Pcma]);
        assert_eq!(
            pcma_only.negotiate(ANSWER.as_bytes()).err(),
            Some(Refusal::Unusable)
        );
        for codec in Codec::ALL {
            assert_eq!(model_codec(sdp_codec(*codec)), *codec);
        }
    }
}
