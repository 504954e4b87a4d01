//! Feishu's HTTP-callback cryptography: AES-256-CBC bodies keyed by the
//! SHA-256 of the Encrypt Key, the SHA-256 request signature over
//! timestamp ‖ nonce ‖ encrypt key ‖ raw body (hex, not an HMAC), and the
//! SHA-1 signature of old-style card callbacks keyed by the verification token.
//! Signatures are compared in constant time.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the encrypted body is not base64")]
    Base64,
    #[error("the encrypted body is too short or not a whole number of AES blocks")]
    Length,
    #[error("the encrypted body does not decrypt with this Encrypt Key (bad padding)")]
    Padding,
    #[error("the decrypted body is not UTF-8")]
    Utf8,
}

/// The AES key derived from an Encrypt Key.
#[derive(Clone)]
pub struct EncryptKey {
    raw: String,
    aes: [u8; 32],
}

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptKey(***)")
    }
}

impl EncryptKey {
    pub fn new(raw: &str) -> Self {
        Self { raw: raw.to_owned(), aes: Sha256::digest(raw.as_bytes()).into() }
    }

    /// Decrypts the `encrypt` field of a callback body: base64(IV ‖ ciphertext).
    pub fn decrypt(&self, encrypted: &str) -> Result<String, CryptoError> {
        let raw =
            base64::engine::general_purpose::STANDARD.decode(encrypted.trim()).map_err(|_| CryptoError::Base64)?;
        if raw.len() < 32 || raw.len() % 16 != 0 {
            return Err(CryptoError::Length);
        }
        let (iv, ciphertext) = raw.split_at(16);
        let plain = Aes256CbcDec::new(&self.aes.into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| CryptoError::Padding)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Utf8)
    }

    /// Checks `X-Lark-Signature` = hex(SHA-256(timestamp ‖ nonce ‖ encrypt key ‖ body)).
    pub fn verify(&self, timestamp: &str, nonce: &str, body: &[u8], signature: &str) -> bool {
        let mut hash = Sha256::new();
        hash.update(timestamp.as_bytes());
        hash.update(nonce.as_bytes());
        hash.update(self.raw.as_bytes());
        hash.update(body);
        equal_hex(&hash.finalize(), signature)
    }
}

/// Checks an old card callback's signature: hex(SHA-1(timestamp ‖ nonce ‖ token ‖ body)).
pub fn verify_card_v1(token: &str, timestamp: &str, nonce: &str, body: &[u8], signature: &str) -> bool {
    let mut hash = Sha1::new();
    hash.update(timestamp.as_bytes());
    hash.update(nonce.as_bytes());
    hash.update(token.as_bytes());
    hash.update(body);
    equal_hex(&hash.finalize(), signature)
}

/// Constant-time comparison of a digest with its claimed lowercase hex form.
fn equal_hex(digest: &[u8], claimed: &str) -> bool {
    let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let claimed = claimed.trim().to_ascii_lowercase();
    expected.len() == claimed.len() && bool::from(expected.as_bytes().ct_eq(claimed.as_bytes()))
}

/// Constant-time string equality, for verification tokens.
pub fn equal_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from the protocol reference (shared/ref/feishu.md §3, §4).
    const OUR_CIPHERTEXT: &str = "AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHr2K2c4pSoIiYBFkqtMS3SqfNpZktBDcpkWXI03j3FJ5YYlblu4fCuMnYOPX6/qAerp4A069LHI50EPF7l69Zjf";

    #[test]
    fn decrypts_the_documented_and_our_vectors() {
        let key = EncryptKey::new("test key");
        assert_eq!(key.decrypt("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap(), "hello world");
        assert_eq!(
            key.decrypt(OUR_CIPHERTEXT).unwrap(),
            r#"{"challenge":"ajls384kdj","token":"vtok","type":"url_verification"}"#
        );
    }

    #[test]
    fn refuses_bad_ciphertexts() {
        let key = EncryptKey::new("test key");
        assert_eq!(key.decrypt("not base64!"), Err(CryptoError::Base64));
        assert_eq!(key.decrypt("AAECAwQFBgcICQoLDA0ODw=="), Err(CryptoError::Length));
        assert_eq!(EncryptKey::new("other key").decrypt(OUR_CIPHERTEXT), Err(CryptoError::Padding));
    }

    #[test]
    fn verifies_the_sha256_signature() {
        let key = EncryptKey::new("test key");
        let body = format!(r#"{{"encrypt":"{OUR_CIPHERTEXT}"}}"#);
        let good = "0ed56b2683582c2d30459473c17e69f90354fb82e9010a7eb6823a983d879230";
        assert!(key.verify("1700000000", "abc123", body.as_bytes(), good));
        assert!(key.verify("1700000000", "abc123", body.as_bytes(), &good.to_uppercase()));
        assert!(!key.verify("1700000001", "abc123", body.as_bytes(), good));
        // The HMAC/base64 construction some blogs describe is a different thing and must fail.
        assert!(!key.verify("1700000000", "abc123", body.as_bytes(), "P/8yN4oZP+cw6PZxHO/qW5jO2jNWTr0pFyLHir+NuzM="));
    }

    #[test]
    fn verifies_the_old_card_signature() {
        let body = r#"{"open_id":"ou_user1","open_message_id":"om_msg1","open_chat_id":"oc_chat1","tenant_key":"t1","token":"c-abc","action":{"value":{"op":"ack"},"tag":"button"}}"#;
        assert!(verify_card_v1(
            "vtok",
            "1700000000",
            "abc123",
            body.as_bytes(),
            "26a3e0b6a2edf5e1f3c7ad75352ebec3a98e2dfb"
        ));
        assert!(!verify_card_v1(
            "other",
            "1700000000",
            "abc123",
            body.as_bytes(),
            "26a3e0b6a2edf5e1f3c7ad75352ebec3a98e2dfb"
        ));
    }
}
