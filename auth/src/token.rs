use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every token starts with this, so it is recognisable in a leaked file or a secret scanner.
pub const TOKEN_PREFIX: &str = "bwk_";
/// Random bytes in a token: 256 bits.
const TOKEN_RANDOM_BYTES: usize = 32;
/// `bwk_` and 43 base64url characters.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;
/// Characters of a token shown to people: `bwk_` and eight more.
const VISIBLE_LEN: usize = TOKEN_PREFIX.len() + 8;

/// Returns a new token: `bwk_` and 256 random bits from the operating system, base64url.
pub fn generate_token() -> String {
    let mut random = [0_u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut random).expect("the operating system's random source is readable");
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random))
}

/// Returns true when `text` has the shape of a token this crate generates.
pub fn is_token_shaped(text: &str) -> bool {
    text.len() == TOKEN_LEN
        && text.starts_with(TOKEN_PREFIX)
        && text[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Returns the part of a token that may be shown: `bwk_` and eight characters.
pub fn visible_prefix(token: &str) -> String {
    token.chars().take(VISIBLE_LEN).collect()
}

/// Makes keyed digests of tokens: HMAC-SHA-256 under the server secret, as hex. A fast keyed
/// hash, not a password hash: tokens carry 256 random bits, so nothing is gained by slowing
/// the check down, and a stolen table is useless without the secret.
#[derive(Clone)]
pub struct KeyDigester {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyDigester {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("KeyDigester(***)")
    }
}

impl KeyDigester {
    pub fn new(secret: &[u8]) -> KeyDigester {
        KeyDigester {
            keyed: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Returns the digest of `token`.
    pub fn digest_bytes(&self, token: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Returns the hex digest of `token`, as stored.
    pub fn digest(&self, token: &str) -> String {
        to_hex(&self.digest_bytes(token))
    }
}

/// Returns `bytes` as lowercase hex.
pub fn to_hex(bytes: &[u8; 32]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Reads a stored hex digest back; `None` when it is not 64 hex digits.
pub fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0_u8; 32];
    for (index, pair) in digits.chunks_exact(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        bytes[index] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves tokens are well formed, unique, and shown only by their prefix.
    #[test]
    fn tokens_are_random_and_shaped() {
        let first = generate_token();
        let second = generate_token();
        assert_ne!(first, second);
        assert!(is_token_shaped(&first), "{first}");
        assert_eq!(visible_prefix(&first).len(), 12);
        assert!(!is_token_shaped("bwk_short"));
        assert!(!is_token_shaped(&first.replace("bwk_", "xyz_")));
    }

    /// Proves stored hex digests read back to the same bytes, and anything else is refused.
    #[test]
    fn hex_round_trips() {
        let digest = KeyDigester::new(b"secret").digest_bytes("bwk_x");
        assert_eq!(from_hex(&to_hex(&digest)), Some(digest));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"zz".repeat(32)), None);
    }

    /// Proves the digest depends on the secret and matches HMAC-SHA-256's published vector
    /// (RFC 4231, test case 2).
    #[test]
    fn digests_are_keyed() {
        let digester = KeyDigester::new(b"Jefe");
        assert_eq!(
            digester.digest("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(
            KeyDigester::new(b"one").digest("token"),
            KeyDigester::new(b"two").digest("token")
        );
    }
}
