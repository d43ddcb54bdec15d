//! The RFC 4733 digit captures the `sip-tester` package ships for SIPp's `play_pcap_audio`
//! (`dtmf_2833_<key>.pcap`: one key press each, recorded from a telephone): where they are, the
//! scenario steps that replay them as they are, and their packets, for a stream of our own
//! ([`crate::capture::RtpCapture::key_press`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{PeerError, sipp_play_pcap};

/// The folder of the captures, found through dpkg.
pub fn sipp_dtmf_captures() -> Result<PathBuf, PeerError> {
    let out = Command::new("dpkg")
        .args(["-L", "sip-tester"])
        .output()
        .map_err(PeerError::io("asking dpkg where sip-tester's files are"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with("dtmf_2833_1.pcap"))
        .and_then(|l| Path::new(l).parent().map(Path::to_path_buf))
        .ok_or_else(|| PeerError::Failed {
            peer: "dpkg",
            status: out.status,
            log: "sip-tester ships no dtmf_2833_1.pcap".into(),
        })
}

/// The capture of `key` (0-9, `*`, `#`) in `captures`; `None` for other characters.
fn capture_of(captures: &Path, key: char) -> Option<PathBuf> {
    let name = match key {
        '0'..='9' => key.to_string(),
        '#' => "pound".to_owned(),
        '*' => "star".to_owned(),
        _ => return None,
    };
    Some(captures.join(format!("dtmf_2833_{name}.pcap")))
}

/// SIPp scenario steps pressing `keys` (0-9, `*`, `#`; others are skipped) 400 ms apart by
/// replaying the captures in `captures` ([`sipp_dtmf_captures`]) as they are; for the
/// `__PRESSES__` of `callee_presses_digits.xml`.
pub fn sipp_key_presses(captures: &Path, keys: &str) -> String {
    keys.chars()
        .filter_map(|k| capture_of(captures, k))
        .map(|capture| sipp_play_pcap(&capture) + "  <pause milliseconds=\"400\"/>\n")
        .collect()
}

/// One packet of a captured key press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPacket {
    /// When it was sent, after the press's first packet.
    pub offset: Duration,
    /// Its marker bit (set on the first packet of an event).
    pub marker: bool,
    /// Its RFC 4733 payload: event code, end bit, volume, duration.
    pub payload: Vec<u8>,
}

/// The packets of one captured key press, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPress {
    /// The key.
    pub key: char,
    /// Its packets.
    pub packets: Vec<EventPacket>,
}

impl KeyPress {
    /// Reads the press of `key` (0-9, `*`, `#`) from the captures in `captures`
    /// ([`sipp_dtmf_captures`]).
    pub fn read(captures: &Path, key: char) -> Result<KeyPress, PeerError> {
        let path = capture_of(captures, key).ok_or_else(|| PeerError::Invalid {
            what: format!("{key:?} is no DTMF key"),
        })?;
        let invalid = |why: String| PeerError::Invalid {
            what: format!("{}: {why}", path.display()),
        };
        let bytes =
            std::fs::read(&path).map_err(PeerError::io(format!("reading {}", path.display())))?;
        let mut packets = Vec::new();
        for (offset, datagram) in crate::pcap::read_udp(&bytes).map_err(invalid)? {
            let rtp = dialtone_rtp::parse(datagram).map_err(|e| invalid(e.to_string()))?;
            if dialtone_rtp::dtmf::EventPayload::parse(rtp.payload).is_none() {
                return Err(invalid("a packet that is no RFC 4733 event".into()));
            }
            packets.push(EventPacket {
                offset,
                marker: rtp.marker,
                payload: rtp.payload.to_vec(),
            });
        }
        if packets.is_empty() {
            return Err(invalid("no packets".into()));
        }
        Ok(KeyPress { key, packets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presses_replay_the_capture_of_each_key_and_skip_the_rest() {
        let steps = sipp_key_presses(Path::new("/c"), "1#x*");
        let played: Vec<&str> = steps
            .lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter(|v| v.ends_with(".pcap"))
            .collect();
        assert_eq!(
            played,
            [
                "/c/dtmf_2833_1.pcap",
                "/c/dtmf_2833_pound.pcap",
                "/c/dtmf_2833_star.pcap"
            ]
        );
    }
}
