//! Identifier generation for branches, tags, Call-IDs and cnonces.
//!
//! The core owns no entropy source: the driver seeds it (from the OS) and tests seed it with a
//! constant, so every generated message is reproducible in tests.

/// The RFC 3261 branch magic cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A splitmix64 stream of identifiers.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A Via branch with the magic cookie.
    pub fn branch(&mut self) -> String {
        format!("{MAGIC_COOKIE}{:016x}", self.next_u64())
    }

    /// A From/To tag.
    pub fn tag(&mut self) -> String {
        format!("{:012x}", self.next_u64() >> 16)
    }

    /// A globally unique Call-ID.
    pub fn call_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// A client nonce for digest authentication.
    pub fn cnonce(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_reproducible() {
        let mut a = IdGenerator::new(7);
        let mut b = IdGenerator::new(7);
        let first = a.branch();
        assert!(first.starts_with(MAGIC_COOKIE));
        assert_eq!(first, b.branch());
        assert_ne!(a.branch(), first);
        assert_eq!(a.tag().len(), 12);
        assert_eq!(a.call_id().len(), 32);
    }
}
