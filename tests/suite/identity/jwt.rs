//! Hand-made JWTs for the token tests, so tests can forge tokens the
//! service must refuse (expired, tampered, unsigned, wrong algorithm,
//! missing claims) with the real signing key. Signatures come from the same
//! crates production uses (ed25519-dalek, RustCrypto HMAC-SHA256); only the
//! token assembly is done by hand, so each part can be bent.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use codeops_tenant::KeyPair;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// header, payload and signature segments of a compact JWT.
pub fn split(token: &str) -> (String, String, String) {
    let mut parts = token.splitn(3, '.');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    (next(), next(), next())
}

pub fn segment_json(segment: &str) -> serde_json::Value {
    serde_json::from_slice(&b64url_decode(segment)).expect("JSON segment")
}

pub fn json_segment(value: &serde_json::Value) -> String {
    b64url(value.to_string().as_bytes())
}

/// An Ed25519 signing key taken out of a `KeyPair`'s PKCS#8 PEM.
pub struct Ed25519(SigningKey);

impl Ed25519 {
    pub fn from_key_pair(pair: &KeyPair) -> Self {
        Self(SigningKey::from_pkcs8_pem(&pair.private_key_pem()).expect("Ed25519 PKCS#8 PEM"))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
}

/// A compact JWT of `header` and `claims`, EdDSA-signed with `key`.
pub fn sign_eddsa(key: &Ed25519, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let signing_input = format!("{}.{}", json_segment(header), json_segment(claims));
    let signature = key.0.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&signature.to_bytes()))
}

/// A compact JWT of `header` and `claims`, HS256-signed with `secret`.
pub fn sign_hs256(secret: &[u8], header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let signing_input = format!("{}.{}", json_segment(header), json_segment(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// An unsigned (`alg: none`) JWT.
pub fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!("{}.{}.", json_segment(header), json_segment(claims))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
