//! Optional encryption of the stored signing keys (`WARDEN_KEY_ENCRYPTION_KEY`),
//! so that a copy of the database alone cannot mint tokens.
//! XChaCha20-Poly1305 with a random nonce per key, and the key's `kid` as
//! associated data so that a ciphertext cannot be moved to another row.
//!
//! Once a key-encryption key is configured, a key stored in the clear is
//! refused (`open`): it was written by a process without the key (a replica
//! started without it, an older release), and using it would put a key
//! that sits readable in the database back to signing. The only place a
//! clear key is taken in is the sealing step at start
//! (`tokens::load_or_create_keys`), which seals it and rotates in a new key.

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::domain::error::{Error, Result};

/// Marks a stored private key as sealed (a plain PKCS#8 key starts with 0x30).
const MAGIC: &[u8] = b"wke1";
const NONCE_LEN: usize = 24;

/// Wiped from memory when dropped, as is every copy.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct KeyEncryptionKey([u8; 32]);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

impl KeyEncryptionKey {
    /// 32 bytes, as base64 (standard or URL-safe, padded or not) or as 64
    /// hex digits, with surrounding whitespace ignored (so the file that
    /// `openssl rand -base64 32 > file` writes, newline and all, is one).
    /// Error messages never quote the text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                (0..32)
                    .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                    .collect::<std::result::Result<Vec<u8>, _>>()
                    .map_err(|e| e.to_string())?
            } else {
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())
                    .ok_or("must be 32 bytes as base64 or 64 hex digits")?
            },
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("must be 32 bytes, not {}", bytes.len()))?;
        Ok(Self(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        // A 32-byte key is what XChaCha20-Poly1305 takes.
        XChaCha20Poly1305::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The form a private key is stored in: sealed when a key-encryption key is
/// configured, as is otherwise.
pub fn seal(kek: Option<&KeyEncryptionKey>, kid: &str, private_der: &[u8]) -> Result<Vec<u8>> {
    let Some(kek) = kek else {
        return Ok(private_der.to_vec());
    };
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let ciphertext = kek
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: private_der,
                aad: kid.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("cannot encrypt signing key {kid}"))?;
    Ok([MAGIC, &nonce, &ciphertext].concat())
}

/// The PKCS#8 DER of a stored private key, wiped when dropped. With a
/// key-encryption key configured, a key stored in the clear is an error,
/// not a key: see the module's comment.
pub fn open(
    kek: Option<&KeyEncryptionKey>,
    kid: &str,
    stored: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if !is_sealed(stored) {
        if kek.is_some() {
            return Err(Error::Unexpected(anyhow::anyhow!(
                "signing key {kid} is stored in the clear although WARDEN_KEY_ENCRYPTION_KEY is \
                 set: a process without the key-encryption key wrote it; refusing to use it \
                 (restart a server with the key-encryption key to seal it and rotate it out)"
            )));
        }
        return Ok(Zeroizing::new(stored.to_vec()));
    }
    let kek = kek.ok_or_else(|| {
        Error::Unexpected(anyhow::anyhow!(
            "signing key {kid} is encrypted: set WARDEN_KEY_ENCRYPTION_KEY"
        ))
    })?;
    let rest = &stored[MAGIC.len()..];
    if rest.len() < NONCE_LEN {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "signing key {kid} is damaged"
        )));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap_or([0; NONCE_LEN]);
    kek.cipher()
        .decrypt(&XNonce::from(nonce), Payload {
            msg: ciphertext,
            aad: kid.as_bytes(),
        })
        .map(Zeroizing::new)
        .map_err(|_| {
            Error::Unexpected(anyhow::anyhow!(
                "cannot decrypt signing key {kid}: is WARDEN_KEY_ENCRYPTION_KEY the key it was encrypted with?"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey([byte; 32])
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_kid() {
        let der = b"0\x82private key material";
        let sealed = seal(Some(&kek(1)), "kid-1", der).unwrap();
        assert!(is_sealed(&sealed));
        assert!(
            !sealed.windows(der.len()).any(|w| w == der),
            "no plaintext inside"
        );
        assert_eq!(
            open(Some(&kek(1)), "kid-1", &sealed).unwrap().as_slice(),
            der
        );
        assert!(
            open(Some(&kek(2)), "kid-1", &sealed).is_err(),
            "another kek"
        );
        assert!(
            open(Some(&kek(1)), "kid-2", &sealed).is_err(),
            "moved to another row"
        );
        assert!(
            open(None, "kid-1", &sealed)
                .unwrap_err()
                .to_string()
                .contains("WARDEN_KEY_ENCRYPTION_KEY")
        );
    }

    #[test]
    fn without_a_kek_keys_are_stored_and_opened_as_they_are() {
        assert_eq!(seal(None, "k", b"0abc").unwrap(), b"0abc");
        assert_eq!(open(None, "k", b"0abc").unwrap().as_slice(), b"0abc");
    }

    #[test]
    fn with_a_kek_a_key_stored_in_the_clear_is_refused_not_used() {
        let clear = b"0\x82private key material";
        let refused = open(Some(&kek(1)), "kid-1", clear).unwrap_err().to_string();
        assert!(refused.contains("in the clear"), "{refused}");
        assert!(refused.contains("kid-1"), "names the key: {refused}");
        assert!(
            !refused.contains("private key material"),
            "no key material in the message"
        );
    }

    #[test]
    fn a_damaged_sealed_key_is_an_error_not_a_panic() {
        for damaged in [
            &b"wke1"[..],
            b"wke1short",
            &[b"wke1".as_slice(), &[0u8; 40]].concat(),
        ] {
            assert!(open(Some(&kek(1)), "k", damaged).is_err());
        }
    }

    #[test]
    fn a_kek_is_32_bytes_in_base64_or_hex() {
        let b64 = STANDARD.encode([7u8; 32]);
        assert_eq!(KeyEncryptionKey::parse(&b64).unwrap(), kek(7));
        assert_eq!(
            KeyEncryptionKey::parse(&URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap(),
            kek(7)
        );
        assert_eq!(KeyEncryptionKey::parse(&"07".repeat(32)).unwrap(), kek(7));
        assert!(KeyEncryptionKey::parse("short").is_err());
        assert!(KeyEncryptionKey::parse(&STANDARD.encode([7u8; 16])).is_err());
        assert_eq!(
            KeyEncryptionKey::parse(&format!("{b64}\n")).unwrap(),
            kek(7),
            "as `openssl rand -base64 32 > file` writes it"
        );
        assert_eq!(
            KeyEncryptionKey::parse(&format!("{}\r\n", "07".repeat(32))).unwrap(),
            kek(7)
        );
        let secret = STANDARD.encode([9u8; 31]);
        let refused = KeyEncryptionKey::parse(&secret).unwrap_err();
        assert!(!refused.contains(&secret), "{refused}");
        assert_eq!(format!("{:?}", kek(7)), "KeyEncryptionKey([redacted])");
    }
}
