//! Access tokens: EdDSA-signed JWTs. Identity signs with the private key;
//! every service verifies locally with the public key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::revocation::{RevocationSet, Revoked};

/// The only algorithm accepted: a token signed with anything else, or not
/// signed at all, is rejected before its claims are looked at.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;
pub const DEFAULT_ISSUER: &str = "codeops-identity";
pub const DEFAULT_AUDIENCE: &str = "codeops";
/// Cached verifications kept at most; the cache is cleared when full.
const CACHE_CAPACITY: usize = 16_384;
/// Clock skew between hosts tolerated on `exp` and `nbf`, in seconds: a
/// few seconds, so an expired token is refused almost exactly when it
/// expires.
pub const LEEWAY_SECS: u64 = 5;
/// Default of the longest access-token lifetime (`exp - iat`) a verifier
/// accepts.
pub const DEFAULT_MAX_ACCESS_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid Ed25519 private key PEM: {0}")]
    PrivateKey(String),
    #[error("invalid Ed25519 public key PEM: {0}")]
    PublicKey(String),
    #[error("could not read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Claims of an access token. `sub`, `tid`, `iss`, `aud`, `exp`, `nbf` are
/// all required by the verifier.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Tenant id.
    pub tid: Uuid,
    /// Role code.
    pub role: String,
    /// Permission codes.
    pub perms: Vec<String>,
    pub name: String,
    pub email: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// Token id.
    pub jti: Uuid,
    /// Session id: the refresh-token family the token was issued for, so a
    /// revoked session (logout, password change, deactivation) can be
    /// refused before the token expires.
    pub sid: Uuid,
}

/// The signing key pair of the identity service.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh random key pair, for `codeops dev` and tests.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let signing =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        Ok(Self { signing })
    }

    pub fn private_key_pem(&self) -> String {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes")
            .to_string()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.signing.verifying_key(),
        }
    }
}

/// An Ed25519 verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// From a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| KeyError::PublicKey(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes")
    }

    /// base64url of the raw 32 bytes: the JWK `x`.
    pub fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    /// Key id: the first 16 bytes of the key's SHA-256, base64url.
    pub fn kid(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..16])
    }
}

/// Reads a key from inline PEM text or from a file path.
pub fn read_pem(value: &str) -> Result<String, KeyError> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_owned());
    }
    std::fs::read_to_string(value).map_err(|source| KeyError::Read {
        path: value.to_owned(),
        source,
    })
}

/// Who a token is for and how long it lives.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    /// Lifetime of the access tokens identity signs.
    pub access_ttl: Duration,
    /// Longest lifetime (`exp - iat`) a verifier accepts: a token signed
    /// for longer is refused whatever its signature, so no misconfigured or
    /// older signer can hand out tokens that outlive the revocation bound.
    pub max_access_ttl: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            access_ttl: Duration::from_secs(15 * 60),
            max_access_ttl: DEFAULT_MAX_ACCESS_TTL,
        }
    }
}

/// Issues access tokens (identity service only).
pub struct TokenSigner {
    key: EncodingKey,
    kid: String,
    settings: TokenSettings,
}

/// What a signed token says about the subject.
pub struct Subject<'a> {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub role: &'a str,
    pub permissions: Vec<String>,
    pub name: String,
    pub email: String,
    /// The session (refresh-token family) the token belongs to.
    pub session_id: Uuid,
}

impl TokenSigner {
    pub fn new(keys: &KeyPair, settings: TokenSettings) -> Result<Self, KeyError> {
        let der = keys
            .signing
            .to_pkcs8_der()
            .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        Ok(Self {
            key: EncodingKey::from_ed_der(der.as_bytes()),
            kid: keys.public_key().kid(),
            settings,
        })
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs an access token; returns it with its expiry (Unix seconds).
    pub fn sign(&self, subject: Subject<'_>) -> Result<(String, u64), jsonwebtoken::errors::Error> {
        let now = unix_now();
        let exp = now + self.settings.access_ttl.as_secs();
        let claims = Claims {
            sub: subject.user_id,
            tid: subject.tenant_id,
            role: subject.role.to_owned(),
            perms: subject.permissions,
            name: subject.name,
            email: subject.email,
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            exp,
            nbf: now,
            iat: now,
            jti: Uuid::new_v4(),
            sid: subject.session_id,
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)?;
        Ok((token, exp))
    }
}

/// Why a token was refused. Clients learn only whether it expired (refresh
/// it) or is invalid for any other reason (log in again); the cause itself
/// is logged, not sent.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signed with a known key and otherwise checked, but past its `exp`.
    #[error("token expired")]
    Expired,
    #[error("token rejected: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("token signed by unknown key")]
    UnknownKey,
    #[error("token lifetime of {0} s exceeds the accepted maximum")]
    LifetimeTooLong(u64),
    #[error("the token's session is revoked")]
    SessionRevoked,
    #[error("the token's user is deactivated")]
    UserDeactivated,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        // jsonwebtoken checks the signature before any claim, so an expired
        // signature is a token we really issued.
        match err.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(err),
        }
    }
}

/// Verifies access tokens with a pinned algorithm and required claims, and
/// caches successful verifications until the token expires.
pub struct TokenVerifier {
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
    cache: RwLock<HashMap<String, Claims>>,
    max_ttl: u64,
    revocations: Arc<RevocationSet>,
}

impl TokenVerifier {
    pub fn new(public_keys: &[PublicKey], settings: &TokenSettings) -> Result<Self, KeyError> {
        let keys = public_keys
            .iter()
            .map(|k| {
                DecodingKey::from_ed_components(&k.x())
                    .map(|d| (k.kid(), d))
                    .map_err(|e| KeyError::PublicKey(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let max_ttl = settings.max_access_ttl.as_secs();
        Ok(Self {
            keys,
            validation,
            cache: RwLock::new(HashMap::new()),
            max_ttl,
            // Past its entry's time plus the longest token lifetime (and the
            // leeway), no token an entry could refuse is still valid.
            revocations: Arc::new(RevocationSet::new(Duration::from_secs(
                max_ttl + 2 * LEEWAY_SECS,
            ))),
        })
    }

    /// The revoked sessions and users this verifier refuses; the revocation
    /// feed fills it.
    pub fn revocations(&self) -> Arc<RevocationSet> {
        self.revocations.clone()
    }

    /// A token's claims if it is signed by a known key, valid now, no
    /// longer-lived than accepted, and neither its session nor its user
    /// has been revoked.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verify_at(token, unix_now())?;
        self.check_lifetime_and_revocation(&claims)?;
        Ok(claims)
    }

    fn check_lifetime_and_revocation(&self, claims: &Claims) -> Result<(), TokenError> {
        // Measured from the earlier of `iat` and `nbf` (the latter is
        // checked to have passed), so a token dated in the future cannot
        // stay usable for longer than the maximum from now.
        let lifetime = claims.exp.saturating_sub(claims.iat.min(claims.nbf));
        if lifetime > self.max_ttl {
            return Err(TokenError::LifetimeTooLong(lifetime));
        }
        match self.revocations.refuses(claims) {
            None => Ok(()),
            Some(Revoked::Session) => Err(TokenError::SessionRevoked),
            Some(Revoked::User) => Err(TokenError::UserDeactivated),
        }
    }

    /// `verify` with the cache judged at `now`, so tests can move past an
    /// expiry without waiting for it.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let cached = self
            .cache
            .read()
            .expect("token cache poisoned")
            .get(token)
            .cloned();
        if let Some(claims) = cached {
            if claims.exp > now {
                return Ok(claims);
            }
            // Its signature was checked when it was cached: past `exp` and
            // the leeway the full check grants, it is expired and nothing
            // else. Inside the leeway the full check below decides.
            if claims.exp.saturating_add(self.validation.leeway) < now {
                self.cache
                    .write()
                    .expect("token cache poisoned")
                    .remove(token);
                return Err(TokenError::Expired);
            }
        }
        let header = jsonwebtoken::decode_header(token)?;
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.iter().find(|(k, _)| k == kid),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        };
        let (_, key) = key.ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)?;
        let mut cache = self.cache.write().expect("token cache poisoned");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(token.to_owned(), data.claims.clone());
        Ok(data.claims)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier_and_signer() -> (TokenVerifier, TokenSigner) {
        let keys = KeyPair::generate().expect("key pair");
        let settings = TokenSettings::default();
        let verifier = TokenVerifier::new(&[keys.public_key()], &settings).expect("verifier");
        let signer = TokenSigner::new(&keys, settings).expect("signer");
        (verifier, signer)
    }

    fn subject() -> Subject<'static> {
        Subject {
            user_id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            role: "OWNER",
            permissions: vec!["user.read".into()],
            name: "Alice".into(),
            email: "alice@example.test".into(),
            session_id: Uuid::new_v4(),
        }
    }

    /// A token signed with `signer`'s key whose `exp` passed long ago.
    fn expired_token(signer: &TokenSigner) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: Uuid::new_v4(),
            tid: Uuid::new_v4(),
            role: "OWNER".into(),
            perms: vec![],
            name: "Alice".into(),
            email: "alice@example.test".into(),
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            exp: now - 3600,
            nbf: now - 7200,
            iat: now - 7200,
            jti: Uuid::new_v4(),
            sid: Uuid::new_v4(),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, &claims, &signer.key).expect("sign expired claims")
    }

    #[test]
    fn an_expired_token_with_a_good_signature_is_expired() {
        let (verifier, signer) = verifier_and_signer();
        let err = verifier
            .verify(&expired_token(&signer))
            .expect_err("expired");
        assert!(matches!(err, TokenError::Expired), "{err:?}");
    }

    #[test]
    fn an_expired_token_with_a_bad_signature_is_invalid_not_expired() {
        let (verifier, signer) = verifier_and_signer();
        let token = expired_token(&signer);
        let (rest, signature) = token.rsplit_once('.').expect("three segments");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{rest}.{flipped}{}", &signature[1..]);
        let err = verifier.verify(&tampered).expect_err("tampered");
        assert!(matches!(err, TokenError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn garbage_is_invalid() {
        let (verifier, _) = verifier_and_signer();
        let err = verifier.verify("not-a-token").expect_err("garbage");
        assert!(matches!(err, TokenError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn a_cached_token_is_refused_as_expired_once_its_expiry_and_leeway_pass() {
        let (verifier, signer) = verifier_and_signer();
        let (token, exp) = signer.sign(subject()).expect("sign");
        verifier.verify(&token).expect("a fresh token verifies");
        assert!(verifier.verify_at(&token, exp - 1).is_ok(), "before exp");
        let later = exp + verifier.validation.leeway + 1;
        let err = verifier.verify_at(&token, later).expect_err("expired");
        assert!(matches!(err, TokenError::Expired), "{err:?}");
        assert!(
            !verifier.cache.read().expect("cache").contains_key(&token),
            "an expired token stays cached"
        );
    }
}
