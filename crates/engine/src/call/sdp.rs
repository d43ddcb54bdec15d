//! The call's SDP: our offer, what the far end agreed to, and our answers to its re-offers.

use std::net::IpAddr;

use dialtone_sdp::{
    AudioCodec, LocalMedia, NegotiatedSession, SessionDescription, build_offer, negotiate_answer,
};
use uuid::Uuid;

/// Our side of the call's offer/answer exchanges.
#[derive(Debug)]
pub(super) struct SdpSession {
    local: LocalMedia,
    offer: SessionDescription,
    /// The `o=` line's session id.
    session_id: u64,
    /// The `o=` line's version, bumped with each description we send.
    version: u64,
    /// What was agreed last (early answer, answer, re-offer).
    current: Option<NegotiatedSession>,
}

impl SdpSession {
    /// Our offer for media at `address:port` for call `call_id`: PCMU, PCMA, Opus and G.722,
    /// in that order (G.711 first: the cheapest to run, and what every trunk takes; a far end
    /// that prefers wideband picks Opus or G.722 from the list).
    pub(super) fn offer(address: IpAddr, port: u16, call_id: Uuid) -> Self {
        let mut local = LocalMedia::new(address, port);
        local.codecs = vec![
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::Opus,
            AudioCodec::G722,
        ];
        let session_id = u64::from(port) << 32 | u64::from(call_id.as_u128() as u32);
        let offer = build_offer(&local, session_id, 1);
        Self {
            local,
            offer,
            session_id,
            version: 1,
            current: None,
        }
    }

    /// The offer, as it goes in the INVITE.
    pub(super) fn offer_bytes(&self) -> Vec<u8> {
        self.offer.to_string().into_bytes()
    }

    /// The session the far end's answer `sdp` to our offer makes, if it makes one.
    pub(super) fn negotiate(&self, sdp: &[u8]) -> Option<NegotiatedSession> {
        let answer = SessionDescription::parse(std::str::from_utf8(sdp).ok()?).ok()?;
        negotiate_answer(&self.offer, &answer).ok()
    }

    /// What was agreed last.
    pub(super) fn current(&self) -> Option<&NegotiatedSession> {
        self.current.as_ref()
    }

    /// Makes `session` the agreed one.
    pub(super) fn agree(&mut self, session: NegotiatedSession) {
        self.current = Some(session);
    }

    /// Our answer to a re-INVITE/UPDATE offer (hold, resume, refresh, a new address), from the
    /// current session, which it replaces. The media pipeline cannot switch codec mid-call, so
    /// an offer that drops the current codec is refused (`None`, to be answered 488). An
    /// offerless re-INVITE gets our current description as the offer.
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
