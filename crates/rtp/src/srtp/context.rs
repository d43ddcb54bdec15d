//! One direction's SRTP and SRTCP state, and a call's pair of them.

use hmac::Mac;

use super::kdf::{SRTCP, SRTP, SessionKeys};
use super::replay::{ReplayWindow, StreamIndex, index};
use super::{MasterKey, RTCP_TAG_LEN, SrtpKeys, SrtpProfile};
use crate::RtpError;

/// SSRCs whose SRTP state a context keeps (the last ones it authenticated).
pub const STREAMS: usize = 4;

/// Bytes of SRTCP's E flag and index word.
const RTCP_INDEX_LEN: usize = 4;
/// The E flag: the SRTCP packet is encrypted.
const E_FLAG: u32 = 1 << 31;
/// The fixed RTCP header and sender SSRC, which SRTCP leaves in clear.
const RTCP_CLEAR_LEN: usize = 8;

/// Per-SSRC state for the last [`STREAMS`] SSRCs seen, kept in place (no allocation): a new
/// SSRC takes a free slot, else the slot after the one taken last.
#[derive(Debug, Clone, Copy)]
struct SsrcTable<T: Copy> {
    entries: [Option<(u32, T)>; STREAMS],
    /// Where the next SSRC's state goes when every slot is taken.
    next_slot: usize,
}

impl<T: Copy> SsrcTable<T> {
    fn new() -> Self {
        Self {
            entries: [None; STREAMS],
            next_slot: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<T> {
        self.entries
            .iter()
            .flatten()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, state)| *state)
    }

    /// Stores `ssrc`'s `state`, in place of its SSRC's or of the oldest other.
    fn keep(&mut self, ssrc: u32, state: T) {
        let slot = self
            .entries
            .iter()
            .position(|e| e.is_some_and(|(s, _)| s == ssrc))
            .or_else(|| self.entries.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                let slot = self.next_slot;
                self.next_slot = (self.next_slot + 1) % STREAMS;
                slot
            });
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Some((ssrc, state));
        }
    }
}

/// One direction of SRTP and SRTCP under one master key: what we send is protected with ours,
/// what we receive unprotected with the far end's.
#[derive(Clone)]
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Bytes of MKI between the encrypted portion and the tag of received packets.
    mki_len: usize,
    /// Each RTP stream's place (rollover counter, highest sequence, replay window).
    streams: SsrcTable<StreamIndex>,
    /// The next SRTCP index to send.
    rtcp_index: u32,
    /// Each SSRC's SRTCP replay window.
    rtcp_replay: SsrcTable<ReplayWindow>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// The length of the RTP header (with CSRCs and extension) at the start of `packet`.
fn header_len(packet: &[u8]) -> Result<usize, RtpError> {
    let malformed = |reason| RtpError::Malformed { reason };
    let first = *packet.first().ok_or(malformed("shorter than its header"))?;
    if first >> 6 != 2 {
        return Err(malformed("version is not 2"));
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = be_u16(packet, len + 2).ok_or(malformed("headers truncated"))?;
        len += 4 + 4 * usize::from(words);
    }
    if len > packet.len() {
        return Err(malformed("headers truncated"));
    }
    Ok(len)
}

/// The sequence number and SSRC of the RTP header at the start of `packet`.
fn sequence_and_ssrc(packet: &[u8]) -> Result<(u16, u32), RtpError> {
    be_u16(packet, 2)
        .zip(be_u32(packet, 8))
        .ok_or(RtpError::Malformed {
            reason: "shorter than its header",
        })
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl SrtpContext {
    /// A context for `profile` under `master`, whose received packets carry `mki_len` bytes of
    /// MKI.
    pub fn new(profile: SrtpProfile, master: &MasterKey, mki_len: usize) -> Self {
        Self {
            profile,
            rtp: SessionKeys::new(master, SRTP),
            rtcp: SessionKeys::new(master, SRTCP),
            mki_len,
            streams: SsrcTable::new(),
            rtcp_index: 0,
            rtcp_replay: SsrcTable::new(),
        }
    }

    /// Protects the RTP packet in `buf[..len]` in place: payload encrypted, tag appended.
    /// Returns the SRTP packet's length; `buf` must have room for the tag.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, RtpError> {
        let tag_len = self.profile.rtp_tag_len();
        let available = buf.len();
        let too_small = RtpError::BufferTooSmall {
            needed: len + tag_len,
            available,
        };
        let packet = buf.get_mut(..len).ok_or(too_small)?;
        let header = header_len(packet)?;
        let (sequence, ssrc) = sequence_and_ssrc(packet)?;
        if available < len + tag_len {
            return Err(too_small);
        }
        let mut stream = self
            .streams
            .get(ssrc)
            .unwrap_or_else(|| StreamIndex::starting_at(sequence));
        let roc = stream.estimate(sequence).ok_or(RtpError::KeyExhausted)?;
        // A keystream is never used twice: a packet index already sent is refused.
        if !stream.replay.is_fresh(index(roc, sequence)) {
            return Err(RtpError::Replayed);
        }
        if let Some(payload) = packet.get_mut(header..) {
            self.rtp
                .apply_keystream(ssrc, index(roc, sequence), payload);
        }
        let mut mac = self.rtp.mac();
        mac.update(packet);
        mac.update(&roc.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        if let (Some(out), Some(tag)) = (buf.get_mut(len..len + tag_len), tag.get(..tag_len)) {
            out.copy_from_slice(tag);
        }
        stream.update(roc, sequence);
        self.streams.keep(ssrc, stream);
        Ok(len + tag_len)
    }

    /// Unprotects the SRTP packet `buf` in place: authenticated, checked against replay,
    /// decrypted. Returns the length of the RTP packet at the start of `buf`.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, RtpError> {
        let trailer = self.profile.rtp_tag_len() + self.mki_len;
        let len = buf.len().checked_sub(trailer).ok_or(RtpError::Malformed {
            reason: "shorter than its SRTP trailer",
        })?;
        let (packet, rest) = buf.split_at_mut(len);
        let header = header_len(packet)?;
        let (sequence, ssrc) = sequence_and_ssrc(packet)?;
        let mut stream = self
            .streams
            .get(ssrc)
            .unwrap_or_else(|| StreamIndex::starting_at(sequence));
        let roc = stream.estimate(sequence).ok_or(RtpError::Replayed)?;
        let packet_index = index(roc, sequence);
        if !stream.replay.is_fresh(packet_index) {
            return Err(RtpError::Replayed);
        }
        let mut mac = self.rtp.mac();
        mac.update(packet);
        mac.update(&roc.to_be_bytes());
        let tag = rest.get(self.mki_len..).unwrap_or_default();
        mac.verify_truncated_left(tag)
            .map_err(|_| RtpError::Unauthenticated)?;
        if let Some(payload) = packet.get_mut(header..) {
            self.rtp.apply_keystream(ssrc, packet_index, payload);
        }
        stream.update(roc, sequence);
        self.streams.keep(ssrc, stream);
        Ok(len)
    }

    /// Protects the compound RTCP packet in `buf[..len]` in place: encrypted after the sender's
    /// SSRC, the E flag and SRTCP index and the tag appended. Returns the SRTCP packet's
    /// length; `buf` must have room for 14 more bytes.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, RtpError> {
        let total = len + RTCP_INDEX_LEN + RTCP_TAG_LEN;
        let available = buf.len();
        if available < total {
            return Err(RtpError::BufferTooSmall {
                needed: total,
                available,
            });
        }
        let ssrc = be_u32(buf.get(..len).unwrap_or_default(), 4).ok_or(RtpError::Malformed {
            reason: "RTCP shorter than its header",
        })?;
        let srtcp_index = self.rtcp_index;
        if srtcp_index >= E_FLAG {
            return Err(RtpError::KeyExhausted);
        }
        if let Some(encrypted) = buf.get_mut(RTCP_CLEAR_LEN..len) {
            self.rtcp
                .apply_keystream(ssrc, u64::from(srtcp_index), encrypted);
        }
        if let Some(word) = buf.get_mut(len..len + RTCP_INDEX_LEN) {
            word.copy_from_slice(&(E_FLAG | srtcp_index).to_be_bytes());
        }
        let mut mac = self.rtcp.mac();
        mac.update(buf.get(..len + RTCP_INDEX_LEN).unwrap_or_default());
        let tag = mac.finalize().into_bytes();
        if let (Some(out), Some(tag)) = (
            buf.get_mut(len + RTCP_INDEX_LEN..total),
            tag.get(..RTCP_TAG_LEN),
        ) {
            out.copy_from_slice(tag);
        }
        self.rtcp_index += 1;
        Ok(total)
    }

    /// Unprotects the SRTCP packet `buf` in place. Returns the length of the RTCP packet at
    /// the start of `buf`.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, RtpError> {
        let short = RtpError::Malformed {
            reason: "shorter than its SRTCP trailer",
        };
        let authenticated = buf
            .len()
            .checked_sub(RTCP_TAG_LEN + self.mki_len)
            .filter(|n| *n >= RTCP_CLEAR_LEN + RTCP_INDEX_LEN)
            .ok_or(short)?;
        let len = authenticated - RTCP_INDEX_LEN;
        let (word, ssrc) = match (be_u32(buf, len), be_u32(buf, 4)) {
            (Some(word), Some(ssrc)) => (word, ssrc),
            _ => return Err(short),
        };
        let srtcp_index = u64::from(word & !E_FLAG);
        let mut window = self.rtcp_replay.get(ssrc).unwrap_or_default();
        if !window.is_fresh(srtcp_index) {
            return Err(RtpError::Replayed);
        }
        let (signed, rest) = buf.split_at_mut(authenticated);
        let mut mac = self.rtcp.mac();
        mac.update(signed);
        mac.verify_truncated_left(rest.get(self.mki_len..).unwrap_or_default())
            .map_err(|_| RtpError::Unauthenticated)?;
        if word & E_FLAG != 0
            && let Some(encrypted) = signed.get_mut(RTCP_CLEAR_LEN..len)
        {
            self.rtcp.apply_keystream(ssrc, srtcp_index, encrypted);
        }
        window.accept(srtcp_index);
        self.rtcp_replay.keep(ssrc, window);
        Ok(len)
    }
}

/// A call's SRTP: our context for what we send, the far end's for what we receive.
#[derive(Debug, Clone)]
pub struct SrtpSession {
    outbound: SrtpContext,
    inbound: SrtpContext,
}

impl SrtpSession {
    /// The contexts of `keys`.
    pub fn new(keys: &SrtpKeys) -> Self {
        Self {
            outbound: SrtpContext::new(keys.profile, &keys.local, 0),
            inbound: SrtpContext::new(keys.profile, &keys.remote, keys.remote_mki_len),
        }
    }

    /// See [`SrtpContext::protect_rtp`].
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, RtpError> {
        self.outbound.protect_rtp(buf, len)
    }

    /// See [`SrtpContext::protect_rtcp`].
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, RtpError> {
        self.outbound.protect_rtcp(buf, len)
    }

    /// See [`SrtpContext::unprotect_rtp`].
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, RtpError> {
        self.inbound.unprotect_rtp(buf)
    }

    /// See [`SrtpContext::unprotect_rtcp`].
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, RtpError> {
        self.inbound.unprotect_rtcp(buf)
    }
}
