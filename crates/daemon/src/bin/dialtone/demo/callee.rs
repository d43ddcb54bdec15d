//! The demo's callee: SIPp answering as the called party's trunk (`callee_presses_digits.xml`),
//! with its telephone's RTP stream composed beforehand and replayed from the ACK on — a quiet
//! room for the whole call, key 1 pressed six seconds in and # 400 ms later as RFC 4733 events
//! in that same stream (the presses SIPp's own captures recorded), on one SSRC with unbroken
//! sequence numbers and media clock, like a telephone. The stream runs past the end of the call:
//! SIPp stops it when our BYE ends the call.

use std::time::Duration;

use anyhow::Context;
use dialtone_peers::capture::{RtpCapture, room_tone};
use dialtone_peers::dtmf::{KeyPress, sipp_dtmf_captures};
use dialtone_peers::{
    PeerError, SipTransport, Sipp, SippOptions, WorkDir, scenario, sipp_play_pcap,
};

/// The keys the callee presses, in order.
pub(crate) const KEYS: [char; 2] = ['1', '#'];
/// When the first key goes down, after the answer: the prompt is under way.
const FIRST_PRESS: Duration = Duration::from_secs(6);
/// From one key going down to the next.
const BETWEEN_PRESSES: Duration = Duration::from_millis(400);
/// How long the stream runs: as long as the scenario waits for our BYE.
const STREAM: Duration = Duration::from_secs(30);
/// The payload type of `telephone-event` in the scenario's answer.
const TELEPHONE_EVENT: u8 = 101;

/// SIPp, answering with the composed stream.
#[derive(Debug)]
pub(crate) struct Callee {
    sipp: Sipp,
    /// Holds the stream's capture; removed after SIPp has gone (fields drop in order).
    _dir: WorkDir,
}

impl Callee {
    /// Composes the stream and starts SIPp on a free loopback port.
    pub(crate) fn start() -> anyhow::Result<Callee> {
        let captures =
            sipp_dtmf_captures().context("finding SIPp's DTMF captures (install sip-tester)")?;
        let mut stream = RtpCapture::new();
        let mut room = room_tone();
        let mut press_at = FIRST_PRESS;
        for key in KEYS {
            let press = KeyPress::read(&captures, key)?;
            stream
                .audio(&mut room, press_at)
                .key_press(&press, TELEPHONE_EVENT);
            press_at += BETWEEN_PRESSES;
        }
        stream.audio(&mut room, STREAM);
        let dir = WorkDir::for_peer("demo-callee")?;
        let pcap = dir.path().join("callee.pcap");
        stream.write(&pcap)?;
        let sipp = Sipp::uas(
            &scenario("callee_presses_digits.xml"),
            SipTransport::Udp,
            &SippOptions {
                replacements: vec![
                    ("listen_ms".into(), "0".into()),
                    ("presses".into(), sipp_play_pcap(&pcap)),
                ],
                ..SippOptions::default()
            },
        )
        .context("starting SIPp as the callee (install sip-tester)")?;
        Ok(Callee { sipp, _dir: dir })
    }

    /// The port SIPp takes calls on (UDP, 127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.sipp.port
    }

    /// Waits (at most `limit`) for SIPp to finish its call, and fails unless it succeeded.
    pub(crate) fn finish(self, limit: Duration) -> Result<(), PeerError> {
        self.sipp.finish(limit)
    }
}
