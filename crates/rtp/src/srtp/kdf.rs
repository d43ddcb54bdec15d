//! Session keys (RFC 3711 §4.3) and the AES-CM keystream and HMAC-SHA1 tag they make (§4.1.1,
//! §4.2.1).
//!
//! With a key derivation rate of 0 each session key is the AES-CM keystream of the master key,
//! started at `(master_salt XOR (label << 48)) << 16`, as long as the key: labels 0, 1, 2
//! make SRTP's cipher key, auth key and salt, 3, 4, 5 SRTCP's.

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher, StreamCipherCoreWrapper};
use hmac::Hmac;
use sha1::Sha1;
use zeroize::Zeroize;

use super::{MASTER_SALT_LEN, MasterKey};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type Aes128CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr128BE>;

/// Bytes of the HMAC-SHA1 session auth key (n_a = 160).
const AUTH_KEY_LEN: usize = 20;

/// The labels of one protocol's cipher key, auth key and salt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Labels {
    cipher: u8,
    auth: u8,
    salt: u8,
}

/// SRTP's labels.
pub(super) const SRTP: Labels = Labels {
    cipher: 0,
    auth: 1,
    salt: 2,
};
/// SRTCP's labels.
pub(super) const SRTCP: Labels = Labels {
    cipher: 3,
    auth: 4,
    salt: 5,
};

/// Writes the session key of `label` into `out` (its length is the key's).
pub(super) fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(master.salt());
    // key_id = label || r (48 bits, 0 at a KDR of 0), right-aligned under the 112-bit salt.
    iv[MASTER_SALT_LEN - 7] ^= label;
    out.fill(0);
    Aes128Ctr::new(master.key().into(), &iv.into()).apply_keystream(out);
}

/// SHA-1's block length: HMAC-SHA1's key length once padded.
const SHA1_BLOCK_LEN: usize = 64;

/// One protocol's session keys, ready to use: the AES key schedule and the keyed HMAC state
/// are made once and copied for each packet.
#[derive(Clone)]
pub(super) struct SessionKeys {
    cipher: Aes128,
    auth: Hmac<Sha1>,
    salt: [u8; MASTER_SALT_LEN],
}

impl SessionKeys {
    pub(super) fn new(master: &MasterKey, labels: Labels) -> Self {
        let mut cipher_key = [0u8; 16];
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        derive(master, labels.cipher, &mut cipher_key);
        derive(master, labels.auth, &mut auth_key);
        derive(master, labels.salt, &mut salt);
        let cipher = Aes128::new(&cipher_key.into());
        // HMAC pads a key shorter than SHA-1's 64-byte block with zeros (RFC 2104 §2): the
        // padded block is the same key, and of the one length `KeyInit` takes.
        let mut block = [0u8; SHA1_BLOCK_LEN];
        for (b, k) in block.iter_mut().zip(auth_key) {
            *b = k;
        }
        let auth = <Hmac<Sha1> as KeyInit>::new(&block.into());
        block.zeroize();
        cipher_key.zeroize();
        auth_key.zeroize();
        Self { cipher, auth, salt }
    }

    /// XORs `data` with the keystream of packet `index` of stream `ssrc`: AES-CM with the IV
    /// `(salt << 16) XOR (ssrc << 64) XOR (index << 16)`.
    pub(super) fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MASTER_SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= i;
        }
        let core = Aes128CtrCore::inner_iv_init(self.cipher.clone(), &iv.into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
    }

    /// The keyed HMAC, ready for the authenticated portion.
    pub(super) fn mac(&self) -> Hmac<Sha1> {
        self.auth.clone()
    }

    #[cfg(test)]
    pub(super) fn salt(&self) -> &[u8; MASTER_SALT_LEN] {
        &self.salt
    }
}
