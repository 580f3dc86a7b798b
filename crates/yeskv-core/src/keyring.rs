//! The cluster keyring: the shared secrets that authenticate causal context tokens and encrypt
//! gossip, with rotation (Serf/Consul's gossip keyring, Garage's `rpc_secret`).
//!
//! A [`Keyring`] is an ordered list of 32-byte keys (at most [`KEYRING_KEYS_MAX`]). The first is
//! the *primary*: it signs and encrypts. Every key is accepted when checking, so a rotation is
//! three steps, each rolled out to every node before the next: add the new key (second line),
//! move it to the top (it now signs; the old one is still accepted), drop the old one (what it
//! signed is refused from then on).
//!
//! Keys are never used directly: each use gets its own [`Subkeys`], derived per key as
//! `HMAC-SHA256(key, "yeskv/" + purpose)` (HKDF-Expand with one block and no info is the same
//! construction), so a context MAC can never be replayed as a gossip packet or the reverse.
//!
//! The file format (`security.cluster_keys`): one base64url (no padding) key per line, blank
//! lines and lines starting with `#` ignored, first key primary.
//!
//! Without a keyring, [`Keyring::unkeyed`] derives one fixed key from the cluster name. It is
//! *not a secret* (anyone who knows the cluster name computes it): it keeps tokens working in
//! development and tests, and detects accidental tampering, nothing more.
//!
//! This module is pure: generating a key (randomness) is the caller's job.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes of one cluster key.
pub const KEY_BYTES: usize = 32;
/// Most keys in a keyring: a rotation needs two; a few more leave room for mistakes, and each
/// key is one more MAC or decryption tried on every token or packet signed by none of them.
pub const KEYRING_KEYS_MAX: usize = 8;
/// Longest keyring file read, in bytes (comments included).
pub const KEYRING_FILE_BYTES_MAX: usize = 64 * 1024;

/// What a subkey is for: one subkey per purpose (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// MACs of causal context tokens.
    Contexts,
    /// Encryption of gossip packets.
    Gossip,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Contexts => b"yeskv/contexts",
            Purpose::Gossip => b"yeskv/gossip",
        }
    }
}

/// Why a keyring was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster keyring: {0}")]
pub struct KeyringError(pub String);

/// The cluster keys, primary first (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<[u8; KEY_BYTES]>,
    /// Whether the keys come from a keyring file (secret) rather than the cluster name.
    secret: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .field("secret", &self.secret)
            .finish()
    }
}

impl Keyring {
    /// A keyring of these keys, the first primary. Refused when empty, past
    /// [`KEYRING_KEYS_MAX`], or when a key appears twice.
    pub fn new(keys: Vec<[u8; KEY_BYTES]>) -> Result<Keyring, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError(
                "no key (a keyring holds 1 or more keys)".into(),
            ));
        }
        if keys.len() > KEYRING_KEYS_MAX {
            return Err(KeyringError(format!(
                "{} keys, at most {KEYRING_KEYS_MAX}",
                keys.len()
            )));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                return Err(KeyringError(format!("key {} appears twice", i + 1)));
            }
        }
        Ok(Keyring { keys, secret: true })
    }

    /// The fixed, public keyring of a cluster run without one (module docs): one key,
    /// SHA-256 of a label and the cluster name.
    pub fn unkeyed(cluster_name: &str) -> Keyring {
        let mut hash = Sha256::new();
        hash.update(b"yeskv/unkeyed-cluster/");
        hash.update(cluster_name.as_bytes());
        Keyring {
            keys: vec![hash.finalize().into()],
            secret: false,
        }
    }

    /// Reads the file format (module docs).
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        if text.len() > KEYRING_FILE_BYTES_MAX {
            return Err(KeyringError(format!(
                "{} bytes, at most {KEYRING_FILE_BYTES_MAX}",
                text.len()
            )));
        }
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(
                decode_key(line)
                    .map_err(|reason| KeyringError(format!("line {}: {reason}", number + 1)))?,
            );
        }
        Keyring::new(keys)
    }

    /// The file format of this keyring: a comment, then one key per line, primary first.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# yeskv cluster keyring: one key per line, the first signs and encrypts, every key\n\
             # is accepted. Keep it secret (mode 0600) and identical on every node.\n",
        );
        for key in &self.keys {
            out.push_str(&encode_key(key));
            out.push('\n');
        }
        out
    }

    /// This keyring with `key` added as the new primary (the first step of a rotation done in
    /// one go: `yeskv keyring rotate`). Refused past [`KEYRING_KEYS_MAX`] or for a key it holds.
    pub fn with_primary(&self, key: [u8; KEY_BYTES]) -> Result<Keyring, KeyringError> {
        let mut keys = vec![key];
        keys.extend_from_slice(&self.keys);
        Keyring::new(keys)
    }

    /// The keys, primary first.
    pub fn keys(&self) -> &[[u8; KEY_BYTES]] {
        &self.keys
    }

    /// Whether the keys are secret (from a keyring file), not [`Keyring::unkeyed`].
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The subkeys for `purpose`, in the keyring's order.
    pub fn derive(&self, purpose: Purpose) -> Subkeys {
        Subkeys {
            keys: self
                .keys
                .iter()
                .map(|key| {
                    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                        .expect("HMAC takes a key of any length");
                    mac.update(purpose.label());
                    mac.finalize().into_bytes().into()
                })
                .collect(),
        }
    }
}

/// The keys of one purpose, primary first ([`Keyring::derive`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Subkeys {
    keys: Vec<[u8; KEY_BYTES]>,
}

impl std::fmt::Debug for Subkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subkeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Subkeys {
    /// The key that signs or encrypts.
    pub fn primary(&self) -> &[u8; KEY_BYTES] {
        // A keyring is never empty, so neither are its subkeys.
        &self.keys[0]
    }

    /// Every accepted key, primary first.
    pub fn all(&self) -> &[[u8; KEY_BYTES]] {
        &self.keys
    }
}

/// A key as the keyring file writes it: base64url without padding (43 characters).
pub fn encode_key(key: &[u8; KEY_BYTES]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// Reads one key of the file format.
pub fn decode_key(text: &str) -> Result<[u8; KEY_BYTES], String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| "not base64url (no padding)".to_string())?;
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice())
        .map_err(|_| format!("a key is {KEY_BYTES} bytes, got {}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_render_round_trip_with_comments() {
        let ring = Keyring::new(vec![[1; 32], [2; 32]]).expect("valid");
        let text = ring.render();
        assert!(text.starts_with('#'));
        let back = Keyring::parse(&format!("{text}\n# a comment\n\n")).expect("parses");
        assert_eq!(back, ring);
        assert_eq!(back.keys()[0], [1; 32]);
        assert!(back.is_secret());
    }

    #[test]
    fn bad_keyrings_are_refused_with_the_line() {
        assert!(Keyring::parse("# only a comment\n")
            .expect_err("refused")
            .0
            .contains("no key"));
        let short = URL_SAFE_NO_PAD.encode([0u8; 16]);
        let err = Keyring::parse(&format!("# c\n{short}\n"))
            .expect_err("refused")
            .0;
        assert!(err.contains("line 2") && err.contains("32 bytes"), "{err}");
        assert!(Keyring::parse("not base64!\n")
            .expect_err("refused")
            .0
            .contains("line 1"));
        let key = encode_key(&[7; 32]);
        assert!(Keyring::parse(&format!("{key}\n{key}\n"))
            .expect_err("refused")
            .0
            .contains("twice"));
        let many: String = (0..=KEYRING_KEYS_MAX as u8)
            .map(|i| encode_key(&[i; 32]) + "\n")
            .collect();
        assert!(Keyring::parse(&many)
            .expect_err("refused")
            .0
            .contains("at most"));
    }

    #[test]
    fn subkeys_differ_per_purpose_and_key_and_keep_the_order() {
        let ring = Keyring::new(vec![[1; 32], [2; 32]]).expect("valid");
        let contexts = ring.derive(Purpose::Contexts);
        let gossip = ring.derive(Purpose::Gossip);
        assert_eq!(contexts.all().len(), 2);
        assert_ne!(contexts.primary(), gossip.primary());
        assert_ne!(contexts.all()[0], contexts.all()[1]);
        assert_ne!(contexts.primary(), &[1; 32]);
        let rotated = ring.with_primary([3; 32]).expect("room");
        assert_eq!(
            rotated.derive(Purpose::Contexts).all()[1],
            *contexts.primary()
        );
    }

    #[test]
    fn unkeyed_rings_depend_on_the_cluster_name_only() {
        assert_eq!(Keyring::unkeyed("a"), Keyring::unkeyed("a"));
        assert_ne!(Keyring::unkeyed("a"), Keyring::unkeyed("b"));
        assert!(!Keyring::unkeyed("a").is_secret());
        assert!(format!("{:?}", Keyring::unkeyed("a")).contains("keys: 1"));
    }
}
