//! The sessions and users identity has revoked, as every verifier must know
//! them before the tokens naming them expire.
//!
//! Access tokens are verified locally, so without this set a token stays
//! good for its whole lifetime after its session is revoked (logout,
//! password change, reuse of a refresh token, tenant suspension) or its
//! user deactivated. Identity publishes those facts on its internal
//! revocation feed; every process polls it and records them here, and the
//! verifier consults the set after checking a token's signature.
//!
//! Entries are kept only as long as a token they could refuse may still be
//! valid: a revoked session issues no new tokens and a deactivated user
//! cannot log in, so every such token was issued before the entry's time
//! and expires at most one maximum token lifetime later.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use uuid::Uuid;

use crate::token::{Claims, unix_now};

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Its session (refresh-token family) was revoked.
    Session,
    /// Its user was deactivated after the token was issued.
    User,
}

/// Revoked sessions and deactivated users, with when it happened (Unix
/// seconds of identity's database clock).
#[derive(Debug)]
pub struct RevocationSet {
    state: RwLock<State>,
    retention: u64,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<Uuid, u64>,
    users: HashMap<Uuid, u64>,
}

impl RevocationSet {
    /// An empty set that forgets an entry `retention` after its time.
    pub fn new(retention: Duration) -> Self {
        Self {
            state: RwLock::new(State::default()),
            retention: retention.as_secs(),
        }
    }

    /// Records revoked sessions and deactivated users (id, Unix seconds),
    /// and forgets entries no live token can match any more. Recording an
    /// entry twice keeps its latest time.
    pub fn record(
        &self,
        sessions: impl IntoIterator<Item = (Uuid, u64)>,
        users: impl IntoIterator<Item = (Uuid, u64)>,
    ) {
        let horizon = unix_now().saturating_sub(self.retention);
        let mut state = self.state.write().expect("revocation set poisoned");
        for (id, at) in sessions {
            let entry = state.sessions.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
        for (id, at) in users {
            let entry = state.users.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
        state.sessions.retain(|_, at| *at >= horizon);
        state.users.retain(|_, at| *at >= horizon);
    }

    /// Whether the token must be refused: its session is revoked, or its
    /// user was deactivated after it was issued (a token issued later
    /// belongs to a user who was reactivated and logged in again).
    pub fn refuses(&self, claims: &Claims) -> Option<Revoked> {
        let state = self.state.read().expect("revocation set poisoned");
        if state.sessions.contains_key(&claims.sid) {
            return Some(Revoked::Session);
        }
        match state.users.get(&claims.sub) {
            Some(at) if claims.iat <= *at => Some(Revoked::User),
            _ => None,
        }
    }

    /// How many sessions and users the set holds.
    pub fn len(&self) -> (usize, usize) {
        let state = self.state.read().expect("revocation set poisoned");
        (state.sessions.len(), state.users.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::token::{
        ALGORITHM, KeyPair, Subject, TokenError, TokenSettings, TokenSigner, TokenVerifier,
    };

    fn subject(session_id: Uuid) -> Subject<'static> {
        Subject {
            user_id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            role: "VIEWER",
            permissions: vec!["user.read".into()],
            name: "Dan".into(),
            email: "dan@example.test".into(),
            session_id,
        }
    }

    /// Signs `claims` with `keys` as identity would, whatever they say.
    fn sign(keys: &KeyPair, claims: &Claims) -> String {
        let key = EncodingKey::from_ed_pem(keys.private_key_pem().as_bytes()).expect("key");
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(keys.public_key().kid());
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    #[test]
    fn the_verifier_refuses_a_token_of_a_revoked_session_even_once_cached() {
        let keys = KeyPair::generate().expect("keys");
        let settings = TokenSettings::default();
        let verifier = TokenVerifier::new(&[keys.public_key()], &settings).expect("verifier");
        let signer = TokenSigner::new(&keys, settings).expect("signer");
        let session = Uuid::new_v4();
        let (token, _) = signer.sign(subject(session)).expect("sign");
        let claims = verifier
            .verify(&token)
            .expect("valid before the revocation");
        assert_eq!(claims.sid, session);
        verifier.revocations().record([(session, unix_now())], []);
        assert!(matches!(
            verifier.verify(&token),
            Err(TokenError::SessionRevoked)
        ));
    }

    #[test]
    fn the_verifier_refuses_tokens_living_longer_than_the_maximum() {
        let keys = KeyPair::generate().expect("keys");
        let verifier = TokenVerifier::new(
            &[keys.public_key()],
            &TokenSettings {
                max_access_ttl: Duration::from_secs(3600),
                ..TokenSettings::default()
            },
        )
        .expect("verifier");
        let long_lived = TokenSigner::new(
            &keys,
            TokenSettings {
                access_ttl: Duration::from_secs(3601),
                ..TokenSettings::default()
            },
        )
        .expect("signer");
        let (token, _) = long_lived.sign(subject(Uuid::new_v4())).expect("sign");
        assert!(matches!(
            verifier.verify(&token),
            Err(TokenError::LifetimeTooLong(3601))
        ));
    }

    #[test]
    fn a_token_dated_in_the_future_cannot_outlive_the_maximum() {
        let keys = KeyPair::generate().expect("keys");
        let verifier =
            TokenVerifier::new(&[keys.public_key()], &TokenSettings::default()).expect("verifier");
        let now = unix_now();
        let mut claims = claims(Uuid::new_v4(), Uuid::new_v4(), now + 7200);
        claims.iss = crate::token::DEFAULT_ISSUER.into();
        claims.aud = crate::token::DEFAULT_AUDIENCE.into();
        claims.nbf = now - 1;
        assert!(matches!(
            verifier.verify(&sign(&keys, &claims)),
            Err(TokenError::LifetimeTooLong(_))
        ));
    }

    #[test]
    fn the_expiry_leeway_is_a_few_seconds() {
        let keys = KeyPair::generate().expect("keys");
        let verifier =
            TokenVerifier::new(&[keys.public_key()], &TokenSettings::default()).expect("verifier");
        let now = unix_now();
        let mut claims = claims(Uuid::new_v4(), Uuid::new_v4(), now - 600);
        claims.iss = crate::token::DEFAULT_ISSUER.into();
        claims.aud = crate::token::DEFAULT_AUDIENCE.into();
        claims.exp = now - 2;
        assert!(
            verifier.verify(&sign(&keys, &claims)).is_ok(),
            "within the leeway: clock skew"
        );
        claims.exp = now - 10;
        assert!(
            verifier.verify(&sign(&keys, &claims)).is_err(),
            "ten seconds after expiry is too late"
        );
    }

    fn claims(sub: Uuid, sid: Uuid, iat: u64) -> Claims {
        Claims {
            sub,
            tid: Uuid::new_v4(),
            role: "VIEWER".into(),
            perms: vec![],
            name: "n".into(),
            email: "e@x.test".into(),
            iss: "i".into(),
            aud: "a".into(),
            exp: iat + 900,
            nbf: iat,
            iat,
            jti: Uuid::new_v4(),
            sid,
        }
    }

    #[test]
    fn a_revoked_session_is_refused_and_others_are_not() {
        let set = RevocationSet::new(Duration::from_secs(3600));
        let (user, revoked, live) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = unix_now();
        set.record([(revoked, now)], []);
        assert_eq!(
            set.refuses(&claims(user, revoked, now - 10)),
            Some(Revoked::Session)
        );
        assert_eq!(set.refuses(&claims(user, live, now - 10)), None);
    }

    #[test]
    fn a_deactivated_user_is_refused_for_tokens_issued_until_then() {
        let set = RevocationSet::new(Duration::from_secs(3600));
        let user = Uuid::new_v4();
        let now = unix_now();
        set.record([], [(user, now - 60)]);
        assert_eq!(
            set.refuses(&claims(user, Uuid::new_v4(), now - 120)),
            Some(Revoked::User)
        );
        assert_eq!(
            set.refuses(&claims(user, Uuid::new_v4(), now - 60)),
            Some(Revoked::User)
        );
        assert_eq!(set.refuses(&claims(user, Uuid::new_v4(), now)), None);
    }

    #[test]
    fn entries_older_than_the_retention_are_forgotten() {
        let set = RevocationSet::new(Duration::from_secs(100));
        let now = unix_now();
        set.record(
            [(Uuid::new_v4(), now - 500), (Uuid::new_v4(), now)],
            [(Uuid::new_v4(), now - 500)],
        );
        assert_eq!(set.len(), (1, 0));
    }
}
