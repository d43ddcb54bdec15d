//! Identifier generation for branches, tags, Call-IDs and cnonces.
//!
//! RFC 3261 §19.3 asks for tags and Call-IDs that an attacker cannot guess, so every identifier
//! is drawn from a CSPRNG: ChaCha12 ([`rand::rngs::StdRng`]). A deployment keys it from the
//! operating system ([`IdGenerator::from_os_rng`]); tests may key it from a constant
//! ([`IdGenerator::new`]) so that every generated message is reproducible. Either way the key is
//! taken once, at construction: drawing an identifier reads nothing from the outside.
//!
//! Sizes: branches and tags carry 64 random bits, Call-IDs 128, cnonces 64, all in lower-case
//! hex of fixed width.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The RFC 3261 branch magic cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A CSPRNG stream of identifiers. Not `Clone`: two copies would hand out the same ids.
#[derive(Debug)]
pub struct IdGenerator {
    rng: StdRng,
}

impl IdGenerator {
    /// A generator keyed from the operating system's randomness: the one for production.
    pub fn from_os_rng() -> Self {
        Self {
            rng: rand::make_rng(),
        }
    }

    /// A generator keyed from `seed`, for tests: the same seed gives the same ids within a
    /// build. Its ids are only as unguessable as the 64-bit seed, so production uses
    /// [`IdGenerator::from_os_rng`].
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A Via branch with the magic cookie.
    pub fn branch(&mut self) -> String {
        format!("{MAGIC_COOKIE}{:016x}", self.rng.next_u64())
    }

    /// A From/To tag.
    pub fn tag(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }

    /// A globally unique Call-ID.
    pub fn call_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }

    /// A client nonce for digest authentication.
    pub fn cnonce(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_lower_hex(s: &str) -> bool {
        s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn seeded_ids_are_distinct_and_reproducible() {
        let mut a = IdGenerator::new(7);
        let mut b = IdGenerator::new(7);
        let first = a.branch();
        assert!(first.starts_with(MAGIC_COOKIE));
        assert_eq!(first, b.branch());
        let second = a.branch();
        assert_ne!(second, first);
        assert_eq!(second, b.branch());
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.call_id(), b.call_id());
        assert_ne!(IdGenerator::new(8).branch(), first);
    }

    #[test]
    fn os_keyed_generators_differ() {
        let (mut a, mut b) = (IdGenerator::from_os_rng(), IdGenerator::from_os_rng());
        assert_ne!(a.call_id(), b.call_id());
        assert_ne!(a.branch(), b.branch());
    }

    #[test]
    fn ids_have_their_shape_and_never_repeat() {
        const DRAWS: usize = 10_000;
        for mut ids in [IdGenerator::from_os_rng(), IdGenerator::new(0x5eed)] {
            let mut seen = HashSet::new();
            for _ in 0..DRAWS {
                let branch = ids.branch();
                let suffix = branch.strip_prefix(MAGIC_COOKIE).expect("magic cookie");
                assert!(suffix.len() == 16 && is_lower_hex(suffix), "{branch}");

                let tag = ids.tag();
                assert!(
                    tag.len() == 16 && is_lower_hex(&tag),
                    "{tag}: 64 bits in hex"
                );

                let call_id = ids.call_id();
                assert!(
                    call_id.len() == 32 && is_lower_hex(&call_id),
                    "{call_id}: 128 bits in hex"
                );

                let cnonce = ids.cnonce();
                assert!(cnonce.len() == 16 && is_lower_hex(&cnonce), "{cnonce}");

                for id in [branch, tag, call_id, cnonce] {
                    assert!(seen.insert(id.clone()), "{id} drawn twice");
                }
            }
            assert_eq!(seen.len(), 4 * DRAWS);
        }
    }
}
