//! Cache keys: sha256 over length-prefixed named fields, so no two
//! different sequences of fields can hash alike ("ab"+"c" vs "a"+"bc").

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A step's cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 lower-case hex digits.
    pub fn from_hex(text: &str) -> Option<CacheKey> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(CacheKey(bytes))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.hex()[..16])
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The key format's version, the first field of every key: bumped when
/// what keys cover changes, so old entries are never taken for new ones.
pub const KEY_FORMAT: &str = "kiln-cache-v2";

/// Builds a key from named fields, in order.
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// `kind` names the op ("copy", "run", …); [`KEY_FORMAT`] comes first.
    pub fn new(kind: &str) -> KeyBuilder {
        let mut builder = KeyBuilder(Sha256::new());
        builder.field(KEY_FORMAT, kind.as_bytes());
        builder
    }

    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut KeyBuilder {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut KeyBuilder {
        self.field(name, value.as_bytes())
    }

    pub fn key(&mut self, name: &str, key: Option<&CacheKey>) -> &mut KeyBuilder {
        self.field(name, key.map_or(&[][..], |k| &k.0[..]))
    }

    pub fn finish(&self) -> CacheKey {
        CacheKey(self.0.clone().finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_delimited_and_kinds_separate() {
        let a = KeyBuilder::new("run")
            .text("x", "ab")
            .text("y", "c")
            .finish();
        let b = KeyBuilder::new("run")
            .text("x", "a")
            .text("y", "bc")
            .finish();
        let c = KeyBuilder::new("copy")
            .text("x", "ab")
            .text("y", "c")
            .finish();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(CacheKey::from_hex(&a.hex()), Some(a));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }
}
