//! A call placed to us, once routed to an agent: its media is made ready before it is
//! answered ([`Engine::prepare_answer`]: a port under the organisation's share, our SDP answer
//! to the caller's offer, the media started on it), then it runs through the same driver and
//! machine as a dispatched call ([`Engine::run_answering`]): recorded `ringing`, answered with
//! `200 OK`, the brain started at the caller's ACK, and everything after as for an outbound
//! call (BYE either way, re-INVITEs, the maximum duration, the RTP timeout).

use dialtone_media::{MediaCall, RecordTo};
use dialtone_model::{Codec, SrtpMode};
use dialtone_sip_ua::Call;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::driver::CallDriver;
use super::input::Control;
use super::media::media_config;
use super::progress::ProgressLog;
use super::sdp::SdpSession;
use crate::caps::Held;
use crate::port_share::PortShare;
use crate::{CallPlan, Engine};

/// Why a call placed to us cannot be answered, as the SIP status it is refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unanswerable {
    /// No media port is free for the organisation (`503`).
    NoPort,
    /// The offer has no codec, address or key we can use, or there is none (`488`).
    Offer,
}

impl Unanswerable {
    /// The SIP status the call is refused with.
    pub(crate) fn status(self) -> u16 {
        match self {
            Unanswerable::NoPort => 503,
            Unanswerable::Offer => 488,
        }
    }
}

/// The media of a call placed to us, ready before it is answered.
#[derive(Debug)]
pub(crate) struct Prepared {
    media: MediaCall,
    sdp: SdpSession,
    answer: String,
    port_share: PortShare,
}

impl Engine {
    /// Takes a port under organisation `org`'s share, answers the caller's `offer` under the
    /// trunk's `srtp` mode with the first of its `codecs` the offer has, and starts the media
    /// on the session agreed.
    pub(crate) fn prepare_answer(
        &self,
        org: Uuid,
        (srtp, codecs): (SrtpMode, &[Codec]),
        offer: Option<&[u8]>,
        record: Option<RecordTo>,
    ) -> Result<Prepared, Unanswerable> {
        let offer = offer.ok_or(Unanswerable::Offer)?;
        let port_share = self.port_shares.take(org).ok_or(Unanswerable::NoPort)?;
        let port = self.ports.bind().map_err(|error| {
            metrics::counter!("dialtone_media_ports_refused_total").increment(1);
            tracing::error!(%error, organization = %org, "no RTP port for a call placed to us");
            Unanswerable::NoPort
        })?;
        // The media's SSRC, sequence and timestamp are seeded from a fresh v7 id: the call's
        // own id is made when its row is written, after the media is known to work.
        let seed = Uuid::now_v7();
        let (sdp, answer) = SdpSession::answer(
            self.config.rtp_advertised,
            port.port(),
            seed,
            (srtp, codecs),
            offer,
        )
        .map_err(|refusal| {
            tracing::info!(?refusal, "the caller's offer cannot be answered");
            Unanswerable::Offer
        })?;
        let session = sdp.current().cloned().ok_or(Unanswerable::Offer)?;
        let config = media_config(seed, self.config.rtp_timeout, &session, record);
        let media = self.media.start(port, config).map_err(|error| {
            tracing::error!(%error, "media did not start for a call placed to us");
            Unanswerable::NoPort
        })?;
        tracing::info!(
            codec = %session.codec.name,
            srtp = session.srtp.as_ref().map(|s| s.suite.as_str()),
            "media ready for a call placed to us"
        );
        Ok(Prepared {
            media,
            sdp,
            answer,
            port_share,
        })
    }

    /// Runs a call placed to us, written as `queued`, with its media ready, until all it did
    /// is recorded.
    pub(crate) async fn run_answering(
        &self,
        plan: CallPlan,
        call: Call,
        sip_call_id: String,
        prepared: Prepared,
        held: Held,
        controls: mpsc::UnboundedReceiver<Control>,
    ) {
        let progress = ProgressLog::start(self.storage.clone(), self.changes.clone(), plan.id);
        let driver = CallDriver::answering(
            self,
            plan,
            &progress,
            sip_call_id,
            super::driver::Answering {
                call,
                media: prepared.media,
                sdp: prepared.sdp,
                answer: prepared.answer.into_bytes(),
                port_share: prepared.port_share,
                held,
            },
        );
        driver.run(controls).await;
        progress.close().await;
    }
}
