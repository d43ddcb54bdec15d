//! SDES (RFC 4568): the `a=crypto` attribute and the keys it carries.
//!
//! `a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]` (§9.1), where each
//! key-param is `inline:<base64 of key || salt>[|<lifetime>][|<MKI>:<length>]`. An attribute
//! is parsed as written ([`CryptoAttribute`]) and printed back the same; its keys are read
//! only for a suite we run ([`CryptoAttribute::usable_key`]). Keys never show in `Debug`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Bytes of an SDES master key for the AES-128 suites.
pub const KEY_LEN: usize = 16;
/// Bytes of an SDES master salt for the AES-128 suites.
pub const SALT_LEN: usize = 14;
/// Most MKI bytes accepted on a key (the MKI value must fit 32 bits).
const MAX_MKI_LEN: u8 = 4;

/// A crypto suite we run (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// `AES_CM_128_HMAC_SHA1_80`.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`.
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    /// The suite's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite named `name`, if we run it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::AesCm128HmacSha1_80, Self::AesCm128HmacSha1_32]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A master key identifier (RFC 3711 §3.1) as a key-param gives it: its value and its length
/// in bytes on each packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    /// The value.
    pub value: u32,
    /// Bytes it takes on each packet.
    pub length: u8,
}

/// One direction's SDES key: master key and salt, with the MKI its packets carry.
/// `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    /// The master key.
    pub key: [u8; KEY_LEN],
    /// The master salt.
    pub salt: [u8; SALT_LEN],
    /// The MKI on each packet, if any.
    pub mki: Option<Mki>,
}

impl SdesKey {
    /// A key without MKI.
    pub fn new(key: [u8; KEY_LEN], salt: [u8; SALT_LEN]) -> Self {
        Self {
            key,
            salt,
            mki: None,
        }
    }

    fn inline(&self) -> String {
        let mut bytes = [0u8; KEY_LEN + SALT_LEN];
        bytes[..KEY_LEN].copy_from_slice(&self.key);
        bytes[KEY_LEN..].copy_from_slice(&self.salt);
        let mut param = format!("inline:{}", STANDARD.encode(bytes));
        if let Some(mki) = self.mki {
            param.push_str(&format!("|{}:{}", mki.value, mki.length));
        }
        param
    }

    /// The key of one key-param, `inline:<key||salt>[|lifetime][|mki:length]`.
    fn parse(param: &str) -> Option<Self> {
        let mut parts = param.strip_prefix("inline:")?.split('|');
        let bytes = STANDARD.decode(parts.next()?).ok()?;
        let (key, salt) = bytes.split_at_checked(KEY_LEN)?;
        let mut sdes = Self::new(key.try_into().ok()?, salt.try_into().ok()?);
        for part in parts {
            match part.split_once(':') {
                Some((value, length)) if sdes.mki.is_none() => {
                    let length: u8 = length.parse().ok()?;
                    if !(1..=MAX_MKI_LEN).contains(&length) {
                        return None;
                    }
                    sdes.mki = Some(Mki {
                        value: value.parse().ok()?,
                        length,
                    });
                }
                // A lifetime, `2^n` or a count: the call ends long before any real one.
                None if lifetime(part).is_some() => {}
                _ => return None,
            }
        }
        Some(sdes)
    }
}

/// A key lifetime in packets, `2^n` or decimal.
fn lifetime(text: &str) -> Option<u64> {
    match text.strip_prefix("2^") {
        Some(power) => 1u64.checked_shl(power.parse().ok()?),
        None => text.parse().ok(),
    }
}

impl fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesKey")
            .field("mki", &self.mki)
            .finish_non_exhaustive()
    }
}

/// An `a=crypto` attribute, as written. `Debug` hides its key-params.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag (1 to 9 digits) an answer names the offer's attribute by.
    pub tag: u32,
    /// The crypto suite's name.
    pub suite: String,
    /// The key-params, as written (secret).
    pub key_params: String,
    /// Session parameters (`KDR=`, `WSH=`, `UNENCRYPTED_SRTP`, ...), as written.
    pub session_params: Vec<String>,
}

impl CryptoAttribute {
    /// The attribute offering (or answering with) `key` for `suite` under `tag`.
    pub fn new(tag: u32, suite: CryptoSuite, key: &SdesKey) -> Self {
        Self {
            tag,
            suite: suite.as_str().to_owned(),
            key_params: key.inline(),
            session_params: Vec::new(),
        }
    }

    /// Parses the value of an `a=crypto` attribute; `None` where it breaks the §9.1 grammar.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split_whitespace();
        let tag = fields.next()?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let suite = fields.next()?;
        let key_params = fields.next()?;
        if !suite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || !key_params.contains(':')
        {
            return None;
        }
        Some(Self {
            tag: tag.parse().ok()?,
            suite: suite.to_owned(),
            key_params: key_params.to_owned(),
            session_params: fields.map(str::to_owned).collect(),
        })
    }

    /// The suite and key, when we run the suite and can honour the attribute: one `inline`
    /// key (the first of several), base64 of 30 bytes, an MKI of at most 4 bytes, and no
    /// session parameter but a zero key derivation rate or a window size hint (the
    /// `UNENCRYPTED_*`, `FEC_*` and other rates would change the transform).
    pub fn usable_key(&self) -> Option<(CryptoSuite, SdesKey)> {
        let suite = CryptoSuite::from_name(&self.suite)?;
        let honoured = self
            .session_params
            .iter()
            .all(|p| p == "KDR=0" || p.starts_with("WSH="));
        if !honoured {
            return None;
        }
        let key = SdesKey::parse(self.key_params.split(';').next()?)?;
        Some((suite, key))
    }
}

impl fmt::Display for CryptoAttribute {
    /// The attribute's value, as it goes after `a=crypto:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.tag, self.suite, self.key_params)?;
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CryptoAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoAttribute")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key_params", &"<redacted>")
            .field("session_params", &self.session_params)
            .finish()
    }
}
