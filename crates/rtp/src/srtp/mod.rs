//! # SRTP and SRTCP (RFC 3711) for the SDES suites of RFC 4568
//!
//! Sans-IO and in place: a packet is protected or unprotected inside the caller's buffer, with
//! no allocation and no clock. Two suites, both AES-128 in counter mode with HMAC-SHA1
//! (RFC 4568 §6.2): `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32` (an 80- or 32-bit
//! SRTP tag; SRTCP's is 80 bits for both).
//!
//! * [`MasterKey`]: a 128-bit master key and 112-bit master salt. Its `Debug` shows nothing of
//!   it, and it is wiped when dropped.
//! * Key derivation (`kdf.rs`, RFC 3711 §4.3) with a key derivation rate of 0, which SDES
//!   implies unless `KDR=` says otherwise: six session keys (cipher, auth, salt for SRTP and for
//!   SRTCP) made once, when a [`SrtpContext`] is.
//! * The packet index (`replay.rs`): SRTP's implicit 48-bit index from the rollover counter
//!   and the sequence number, estimated as Appendix A does, so a stream crosses 65535 → 0
//!   (and reordering across it) without losing its place; SRTCP's explicit 31-bit index with
//!   its E flag. Each stream has a 64-packet replay window (§3.3.2): a packet seen before, or
//!   older than the window, is refused ([`RtpError::Replayed`]) before its tag is even
//!   checked; a packet whose tag does not match is refused ([`RtpError::Unauthenticated`]);
//!   the window, the rollover counter and the highest sequence number move only for packets
//!   that authenticate.
//! * [`SrtpSession`]: a call's two contexts, ours (protect, with the key we offered) and the far
//!   end's (unprotect, with the key from its answer), from [`SrtpKeys`].
//!
//! The far end may send several SSRCs over a call (a transfer behind an SBC); the inbound
//! context keeps the state of the last [`STREAMS`] it authenticated.
//!
//! ```
//! use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile, SrtpSession};
//! use dialtone_rtp::RtpSender;
//!
//! let ours = MasterKey::new([1; 16], [2; 14]);
//! let theirs = MasterKey::new([3; 16], [4; 14]);
//! let mut us = SrtpSession::new(&SrtpKeys::new(SrtpProfile::Aes128CmHmacSha1_80, ours.clone(), theirs.clone()));
//! let mut them = SrtpSession::new(&SrtpKeys::new(SrtpProfile::Aes128CmHmacSha1_80, theirs, ours));
//!
//! let mut packet = [0u8; 1500];
//! let n = RtpSender::new(7, 1, 160, 0).write(&[0xd5; 160], 160, &mut packet).unwrap();
//! let protected = us.protect_rtp(&mut packet, n).unwrap();
//! assert_eq!(protected, n + 10);
//! let clear = them.unprotect_rtp(&mut packet[..protected]).unwrap();
//! assert_eq!(&packet[12..clear], &[0xd5; 160][..]);
//! // The same packet again is a replay.
//! # let mut again = [0u8; 1500];
//! # let n = RtpSender::new(7, 1, 160, 0).write(&[0xd5; 160], 160, &mut again).unwrap();
//! # let mut fresh = SrtpSession::new(&SrtpKeys::new(SrtpProfile::Aes128CmHmacSha1_80, MasterKey::new([1; 16], [2; 14]), MasterKey::new([3; 16], [4; 14])));
//! # let protected = fresh.protect_rtp(&mut again, n).unwrap();
//! # assert!(them.unprotect_rtp(&mut again[..protected]).is_err());
//! ```

use std::fmt;

use zeroize::Zeroize;

mod context;
mod kdf;
mod replay;
#[cfg(test)]
mod tests;

pub use context::{STREAMS, SrtpContext, SrtpSession};

/// Bytes of a master key.
pub const MASTER_KEY_LEN: usize = 16;
/// Bytes of a master salt.
pub const MASTER_SALT_LEN: usize = 14;
/// Bytes of SRTCP's tag, for both suites (RFC 4568 §6.2).
pub const RTCP_TAG_LEN: usize = 10;
/// The most bytes protecting adds to a packet: SRTCP's E flag and index, and its tag.
pub const MAX_OVERHEAD: usize = 4 + RTCP_TAG_LEN;

/// An SRTP crypto suite (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag.
    Aes128CmHmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (80 bits on SRTCP).
    Aes128CmHmacSha1_32,
}

impl SrtpProfile {
    /// Bytes of the SRTP authentication tag.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Self::Aes128CmHmacSha1_80 => 10,
            Self::Aes128CmHmacSha1_32 => 4,
        }
    }
}

/// A master key and master salt. Never shown by `Debug`; wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
}

impl MasterKey {
    /// A master key and its salt.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> Self {
        Self { key, salt }
    }

    pub(crate) fn key(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.key
    }

    pub(crate) fn salt(&self) -> &[u8; MASTER_SALT_LEN] {
        &self.salt
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.salt.zeroize();
    }
}

/// A call's SRTP keys: the suite both directions use, the key we protect with (the one we
/// offered) and the key the far end protects with (the one in its answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The suite.
    pub profile: SrtpProfile,
    /// Ours, for what we send.
    pub local: MasterKey,
    /// The far end's, for what we receive.
    pub remote: MasterKey,
    /// Bytes of MKI the far end puts in its packets (RFC 3711 §3.1), 0 for none.
    pub remote_mki_len: usize,
}

impl SrtpKeys {
    /// Keys for `profile`, with no MKI.
    pub fn new(profile: SrtpProfile, local: MasterKey, remote: MasterKey) -> Self {
        Self {
            profile,
            local,
            remote,
            remote_mki_len: 0,
        }
    }
}
