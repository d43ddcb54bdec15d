//! The call's media as the driver handles it: the early-media listener, the media settings of a
//! negotiated session (SRTP keys included), the answer to a re-offer (the caller's or a second
//! leg's), and the media statistics that go on the call record.

use std::time::Duration;

use dialtone_media::{
    Direction, FrameReceiver, MediaCall, MediaCodec, MediaConfig, MediaEvent, MediaStats, RecordTo,
};
use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile};
use dialtone_sdp::{AudioCodec, CryptoSuite, NegotiatedSession, NegotiatedSrtp};
use dialtone_sip_ua::Call;
use serde_json::Value;
use uuid::Uuid;

use super::sdp::{SdpSession, model_codec};

/// The media settings of call `call_id` negotiated as `session`.
pub(super) fn media_config(
    call_id: Uuid,
    rtp_timeout: Duration,
    session: &NegotiatedSession,
    record: Option<RecordTo>,
) -> MediaConfig {
    // The random bits of the v7 id seed SSRC, sequence and timestamp.
    let random = call_id.as_u128();
    MediaConfig {
        remote: session.remote_rtp,
        remote_rtcp: session.remote_rtcp,
        rtcp_mux: session.rtcp_mux,
        codec: match session.codec.codec {
            AudioCodec::Pcmu => MediaCodec::Pcmu,
            AudioCodec::Pcma => MediaCodec::Pcma,
            AudioCodec::Opus => MediaCodec::Opus,
            AudioCodec::G722 => MediaCodec::G722,
        },
        send_payload_type: session.codec.send_payload_type,
        receive_payload_type: session.codec.receive_payload_type,
        telephone_event: session.telephone_event,
        rtp_timeout,
        record,
        ssrc: random as u32,
        initial_sequence: (random >> 32) as u16,
        initial_timestamp: (random >> 16) as u32,
        cname: format!("dialtone-{call_id}"),
        srtp: session.srtp.as_ref().map(srtp_keys),
    }
}

/// The media's SRTP keys for the SRTP an offer/answer agreed.
fn srtp_keys(srtp: &NegotiatedSrtp) -> SrtpKeys {
    SrtpKeys {
        profile: match srtp.suite {
            CryptoSuite::AesCm128HmacSha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
            CryptoSuite::AesCm128HmacSha1_32 => SrtpProfile::Aes128CmHmacSha1_32,
        },
        local: MasterKey::new(srtp.local.key, srtp.local.salt),
        remote: MasterKey::new(srtp.remote.key, srtp.remote.salt),
        remote_mki_len: srtp.remote.mki.map_or(0, |m| usize::from(m.length)),
    }
}

/// What the far end played before it answered (ringback, announcements), in 20 ms frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct EarlyHeard {
    frames: u64,
    /// Frames above -40 dBFS: tones or speech rather than silence.
    voiced: u64,
}

/// Listens to early media until stopped. Its frames are measured, not given to the brain, whose
/// conversation starts at answer with no stale ringback in its ring.
#[derive(Debug)]
pub(super) struct EarlyListener {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(FrameReceiver, EarlyHeard)>,
}

impl EarlyListener {
    pub(super) fn start(mut inbound: FrameReceiver) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut heard = EarlyHeard::default();
            loop {
                let frame = tokio::select! {
                    f = inbound.recv() => f,
                    _ = &mut stopped => None,
                };
                let Some(frame) = frame else { break };
                heard.frames += 1;
                if dialtone_media::level_dbfs(&frame.samples) > -40.0 {
                    heard.voiced += 1;
                }
            }
            // What came in since is early media too, not the caller's first words.
            while let Some(frame) = inbound.try_recv() {
                heard.frames += 1;
                if dialtone_media::level_dbfs(&frame.samples) > -40.0 {
                    heard.voiced += 1;
                }
            }
            (inbound, heard)
        });
        Self { stop, task }
    }

    /// Stops listening; gives back the ring (for the brain) and what was heard.
    pub(super) async fn stop(self) -> (Option<FrameReceiver>, EarlyHeard) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok((inbound, heard)) => (Some(inbound), heard),
            Err(_) => (None, EarlyHeard::default()),
        }
    }
}

/// The call record's `media_stats`: the media's counters, the early media heard (from a
/// listener still running when the call failed before answer, or as counted at answer), and
/// the codec and SRTP suite of the session agreed last.
pub(super) async fn media_record(
    stats: MediaStats,
    listener: Option<EarlyListener>,
    heard: EarlyHeard,
    session: Option<&NegotiatedSession>,
) -> Option<Value> {
    let heard = match listener {
        Some(l) => l.stop().await.1,
        None => heard,
    };
    let mut record = serde_json::to_value(stats).ok()?;
    if let Some(o) = record.as_object_mut() {
        o.insert("early_media_ms".into(), (heard.frames * 20).into());
        o.insert("early_media_voiced_ms".into(), (heard.voiced * 20).into());
        if let Some(session) = session {
            o.insert(
                "codec".into(),
                model_codec(session.codec.codec).as_str().into(),
            );
            o.insert(
                "srtp".into(),
                session.srtp.as_ref().map(|s| s.suite.as_str()).into(),
            );
        }
    }
    Some(record)
}

/// The next event of the call's media; pending while there is none.
pub(super) async fn next_media_event(media: &mut Option<MediaCall>) -> Option<MediaEvent> {
    match media {
        Some(m) => m.next_event().await,
        None => std::future::pending().await,
    }
}

/// Counts the answered call's media health (jitter buffer, concealment, rings).
pub(super) fn measure_media_health(stats: &MediaStats) {
    metrics::histogram!("dialtone_jitter_buffer_ms").record(f64::from(stats.jitter_buffer_ms));
    metrics::counter!("dialtone_concealed_frames_total").increment(stats.concealed_frames);
    metrics::counter!("dialtone_inbound_ring_overflows_total").increment(stats.inbound_overflow);
    metrics::counter!("dialtone_outbound_ring_underflows_total")
        .increment(stats.outbound_underflow);
}

/// Answers a re-offer on `call` (the caller's or a second leg's) from its current session
/// `sdp`, its `media` redirected to what the offer asks, or refuses it with 488.
pub(super) fn answer_remote_offer(
    call: &Call,
    sdp: &mut SdpSession,
    media: Option<&MediaCall>,
    offer: Option<&[u8]>,
) {
    match sdp.answer_remote_offer(offer) {
        Some((answer, negotiated)) => {
            if let Some(media) = media {
                media.redirect(Direction {
                    sending: negotiated.direction.sends(),
                    receiving: negotiated.direction.receives(),
                    remote: negotiated.remote_rtp,
                });
            }
            tracing::info!(hold = negotiated.on_hold, "answered a re-offer");
            let _ = call.answer_offer(answer.into_bytes());
        }
        None => {
            tracing::warn!("refusing a re-offer we cannot take");
            let _ = call.reject_offer(488);
        }
    }
}
