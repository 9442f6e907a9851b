//! LiveKit-format access tokens: HS256 JWTs whose `iss` names the API key,
//! `sub` the identity, and whose `video` claim carries the grants.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Why a token was refused. The message is safe to show the client: it
/// never includes the token or a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing access token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("unknown API key")]
    UnknownKey,
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is not valid for this room")]
    WrongRoom,
    #[error("permission denied: token lacks the {0} grant")]
    MissingGrant(&'static str),
}

/// The `video` claim. Booleans LiveKit treats as "true unless said" are
/// options here, so that absence and `false` stay distinct.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_join: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_record: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub hidden: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub recorder: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl VideoGrant {
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }
    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }
    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or(true)
    }
    pub fn can_update_own_metadata(&self) -> bool {
        self.can_update_own_metadata.unwrap_or(false)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub attributes: HashMap<String, String>,
    #[serde(default)]
    pub video: VideoGrant,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

impl Claims {
    /// Checks that these claims let their holder join `room`.
    pub fn check_join(&self, room: &str) -> Result<(), AuthError> {
        if !self.video.room_join {
            return Err(AuthError::MissingGrant("roomJoin"));
        }
        if self.video.room.as_deref() != Some(room) {
            return Err(AuthError::WrongRoom);
        }
        if self.sub.is_empty() {
            return Err(AuthError::Invalid("token has no identity".to_owned()));
        }
        Ok(())
    }

    /// The room a join token is for.
    pub fn join_room(&self) -> Result<&str, AuthError> {
        let room = self.video.room.as_deref().ok_or(AuthError::WrongRoom)?;
        self.check_join(room)?;
        Ok(room)
    }
}

/// LiveKit's default token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// The API keys this server accepts, key → secret.
#[derive(Clone, Default)]
pub struct KeyStore {
    keys: HashMap<String, String>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("KeyStore")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyStore {
    pub fn new(keys: HashMap<String, String>) -> Self {
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn secret(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// The API keys' names (never their secrets).
    pub fn names(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Parses LiveKit's key list format: `key: secret` pairs separated by
    /// newlines or commas (the `LIVEKIT_KEYS` variable and key files).
    pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
        let mut keys = HashMap::new();
        for entry in text.split([',', '\n']) {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (key, secret) = entry
                .split_once(':')
                .ok_or_else(|| "expected `key: secret`".to_owned())?;
            let (key, secret) = (key.trim(), secret.trim());
            if key.is_empty() || secret.is_empty() {
                return Err("expected `key: secret`".to_owned());
            }
            keys.insert(key.to_owned(), secret.to_owned());
        }
        Ok(keys)
    }

    /// Verifies a token's signature and lifetime and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        verify_at(self, token, unix_now())
    }
}

/// JWT times are whole seconds since the epoch.
fn unix_now() -> u64 {
    (salon_common::unix_millis() / 1000) as u64
}

fn verify_at(keys: &KeyStore, token: &str, now: u64) -> Result<Claims, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    // The key is named inside the token; read it unverified, then verify
    // everything with that key's secret.
    let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| AuthError::Invalid(e.to_string()))?;
    let secret = keys.secret(&unverified.iss).ok_or(AuthError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    // exp and nbf are checked below against our own clock input, so that
    // tests can pin time.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))?;
    let claims = data.claims;
    if claims.exp + LEEWAY_SECS < now {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
        return Err(AuthError::NotYetValid);
    }
    Ok(claims)
}

/// What a new token says.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub grant: VideoGrant,
    pub ttl: Option<Duration>,
}

/// Signs a token with `key`/`secret`, as livekit-server-sdk's AccessToken does.
pub fn create_token(key: &str, secret: &str, spec: TokenSpec) -> Result<String, AuthError> {
    let now = unix_now();
    let ttl = spec.ttl.unwrap_or(DEFAULT_TOKEN_TTL);
    let claims = Claims {
        iss: key.to_owned(),
        sub: spec.identity,
        nbf: Some(now),
        exp: now + ttl.as_secs(),
        name: spec.name,
        metadata: spec.metadata,
        attributes: spec.attributes,
        video: spec.grant,
        jti: salon_common::new_sid(""),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// A fresh copy of `claims` valid for as long as the original was, signed
/// with the same key: LiveKit sends one to connected clients so that they
/// can reconnect after their first token has expired.
impl Claims {
    /// Takes on what the room now says of the holder (an admin changed its
    /// permissions, or it its own name or attributes), so that a refreshed
    /// token rejoins as the participant is now: an admitted guest must not
    /// go back to the waiting room on reconnecting. True if anything changed.
    pub fn follow(&mut self, info: &livekit_protocol::ParticipantInfo) -> bool {
        let before = self.clone();
        self.name.clone_from(&info.name);
        self.metadata.clone_from(&info.metadata);
        self.attributes.clone_from(&info.attributes);
        if let Some(p) = &info.permission {
            let v = &mut self.video;
            v.can_publish = Some(p.can_publish);
            v.can_subscribe = Some(p.can_subscribe);
            v.can_publish_data = Some(p.can_publish_data);
            v.can_update_own_metadata = Some(p.can_update_metadata);
            v.hidden = p.hidden;
        }
        *self != before
    }
}

pub fn refresh_token(keys: &KeyStore, claims: &Claims) -> Result<String, AuthError> {
    let secret = keys.secret(&claims.iss).ok_or(AuthError::UnknownKey)?;
    let now = unix_now();
    let lifetime = claims
        .nbf
        .map(|nbf| claims.exp.saturating_sub(nbf))
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_TOKEN_TTL.as_secs());
    let fresh = Claims {
        nbf: Some(now),
        exp: now + lifetime,
        jti: salon_common::new_sid(""),
        ..claims.clone()
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &fresh,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
