//! The driver's side of a bridged transfer's second leg: placed like the call itself
//! ([`place`](super::driver) shares the dialling), its media started on its answer from the same
//! media workers, and the relay — the caller's media spliced ([`dialtone_media::splice`]) so the
//! caller hears ringback while it rings, then the destination's decoded frames, and the
//! caller's frames go into the leg's outbound ring. Both directions run on the media clock;
//! nothing passes through a tokio task.

use dialtone_media::{BoundPort, Feed, MediaCall, Splice};
use dialtone_sip_ua::Call;

use super::input::{LegInput, MediaOutcome};
use super::media::media_config;
use super::sdp::SdpSession;
use crate::Engine;
use crate::port_share::PortShare;

/// A second leg: its call, its port until its media starts, its offer, its media.
pub(super) struct Leg {
    pub(super) call: Call,
    pub(super) port: Option<BoundPort>,
    pub(super) sdp: SdpSession,
    pub(super) media: Option<MediaCall>,
    /// Its share of the organisation's media ports, held while it lives.
    pub(super) _share: PortShare,
}

impl Leg {
    /// Starts the leg's media on its answer `sdp` (without one, the answer is unusable: the
    /// leg offered and never had early media).
    pub(super) fn connect(&mut self, engine: &Engine, sdp: Option<&[u8]>) -> MediaOutcome {
        let session = match sdp.map(|sdp| self.sdp.negotiate(sdp)) {
            Some(Ok(session)) => session,
            Some(Err(refusal)) => {
                tracing::warn!(?refusal, "the destination's answer SDP is unusable");
                return MediaOutcome::Unusable;
            }
            None => return MediaOutcome::Unusable,
        };
        let Some(port) = self.port.take() else {
            return MediaOutcome::Unavailable;
        };
        // A seed of its own: the leg's SSRC and sequence differ from the caller's. The leg
        // records nothing itself: the caller's recording has both sides of the bridge (what the
        // caller said, and the destination's audio the caller was sent).
        let config = media_config(
            uuid::Uuid::now_v7(),
            engine.config.rtp_timeout,
            &session,
            None,
        );
        match engine.media.start(port, config) {
            Ok(media) => {
                tracing::info!(codec = %session.codec.name, "the destination answered");
                self.sdp.agree(session);
                self.media = Some(media);
                MediaOutcome::Started
            }
            Err(error) => {
                tracing::error!(%error, "the second leg's media did not start");
                MediaOutcome::Unavailable
            }
        }
    }

    /// Answers the destination's re-offer as the caller's is.
    pub(super) fn answer_remote_offer(&mut self, offer: Option<&[u8]>) {
        super::media::answer_remote_offer(&self.call, &mut self.sdp, self.media.as_ref(), offer);
    }

    /// Hangs the leg up (CANCEL or BYE) and stops its media.
    pub(super) async fn hang_up(self) {
        let _ = self.call.hang_up();
        if let Some(media) = self.media {
            let stats = media.stop().await;
            tracing::info!(
                packets_in = stats.packets_in,
                packets_out = stats.packets_out,
                "the second leg's media stopped"
            );
        }
    }
}

/// The caller waits: ringback goes out instead of the brain's audio.
pub(super) fn hold(caller: &MediaCall) {
    caller.splice(Some(Splice {
        feed: Feed::Ringback,
        copy_to: None,
    }));
}

/// Relays the caller's media and the leg's both ways; `false` when the leg's rings are gone.
pub(super) fn relay(caller: &MediaCall, leg: &mut Leg) -> bool {
    let Some(media) = leg.media.as_mut() else {
        return false;
    };
    let (Some(inbound), Some(outbound)) = (media.take_inbound(), media.take_outbound()) else {
        return false;
    };
    caller.splice(Some(Splice {
        feed: Feed::Frames(inbound),
        copy_to: Some(outbound),
    }));
    true
}

/// The next thing that happens to the leg; pending without one. A user agent that stops
/// without a final event counts as the leg's end.
pub(super) async fn next_leg_input(leg: &mut Option<Leg>) -> Option<LegInput> {
    let Some(Leg { call, media, .. }) = leg.as_mut() else {
        return std::future::pending().await;
    };
    let media_event = async {
        match media.as_mut() {
            Some(media) => media.next_event().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = call.next_event() => match event {
            Some(event) => LegInput::from_ua(event),
            None => Some(LegInput::Ended),
        },
        Some(event) = media_event => LegInput::from_media(event),
    }
}

/// Whether a leg event ends the leg (its call is over: the driver lets it go).
pub(super) fn ends_leg(input: &LegInput) -> bool {
    matches!(input, LegInput::Failed { .. } | LegInput::Ended)
}
