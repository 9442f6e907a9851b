use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn keys() -> KeyStore {
    KeyStore::new(HashMap::from([("devkey".to_owned(), "secret".to_owned())]))
}

fn join_spec(room: &str) -> TokenSpec {
    TokenSpec {
        identity: "alice".to_owned(),
        grant: VideoGrant {
            room: Some(room.to_owned()),
            room_join: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn sign(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn claims_for(room: &str, nbf: u64, exp: u64) -> Claims {
    Claims {
        iss: "devkey".to_owned(),
        sub: "alice".to_owned(),
        nbf: Some(nbf),
        exp,
        video: join_spec(room).grant,
        ..Default::default()
    }
}

#[test]
fn a_fresh_token_verifies_and_allows_its_room() {
    let token = create_token("devkey", "secret", join_spec("standup")).expect("token");
    let claims = keys().verify(&token).expect("valid");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.join_room(), Ok("standup"));
    assert!(
        claims.video.can_publish(),
        "publish is allowed unless denied"
    );
}

#[test]
fn an_expired_token_is_refused() {
    let now = unix_now();
    let token = sign(&claims_for("r", now - 7200, now - 3600), "secret");
    assert_eq!(keys().verify(&token), Err(AuthError::Expired));
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let now = unix_now();
    let token = sign(&claims_for("r", now + 3600, now + 7200), "secret");
    assert_eq!(keys().verify(&token), Err(AuthError::NotYetValid));
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let now = unix_now();
    let token = sign(&claims_for("r", now, now + 60), "not-the-secret");
    assert!(matches!(keys().verify(&token), Err(AuthError::Invalid(_))));
}

#[test]
fn an_unknown_api_key_is_refused() {
    let token = create_token("otherkey", "secret", join_spec("r")).expect("token");
    assert_eq!(keys().verify(&token), Err(AuthError::UnknownKey));
}

#[test]
fn a_token_for_another_room_cannot_join_this_one() {
    let token = create_token("devkey", "secret", join_spec("room-a")).expect("token");
    let claims = keys().verify(&token).expect("valid");
    assert_eq!(claims.check_join("room-b"), Err(AuthError::WrongRoom));
}

#[test]
fn a_token_without_room_join_cannot_join() {
    let mut spec = join_spec("r");
    spec.grant.room_join = false;
    let token = create_token("devkey", "secret", spec).expect("token");
    let claims = keys().verify(&token).expect("valid");
    assert_eq!(
        claims.check_join("r"),
        Err(AuthError::MissingGrant("roomJoin"))
    );
}

#[test]
fn a_token_with_alg_none_is_refused() {
    let now = unix_now();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_for("r", now, now + 60)).expect("json"));
    let token = format!("{header}.{body}.");
    assert!(matches!(keys().verify(&token), Err(AuthError::Invalid(_))));
}

#[test]
fn garbage_is_refused_without_panicking() {
    for token in ["", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.!!!.x", "\u{0}"] {
        assert!(keys().verify(token).is_err(), "{token:?}");
    }
}

#[test]
fn denied_publish_stays_denied() {
    let mut spec = join_spec("r");
    spec.grant.can_publish = Some(false);
    let token = create_token("devkey", "secret", spec).expect("token");
    let claims = keys().verify(&token).expect("valid");
    assert!(!claims.video.can_publish());
}

#[test]
fn key_lists_parse_like_livekit_keys() {
    let keys = KeyStore::parse("devkey: secret, other: s2\n# comment\n").expect("parse");
    assert_eq!(keys.get("devkey").map(String::as_str), Some("secret"));
    assert_eq!(keys.get("other").map(String::as_str), Some("s2"));
    assert!(KeyStore::parse("nocolon").is_err());
}

#[test]
fn a_refreshed_token_keeps_the_grants_and_lifetime_but_not_the_old_expiry() {
    let now = unix_now();
    let original = claims_for("r", now - 500, now + 100);
    let refreshed = refresh_token(&keys(), &original).expect("refresh");
    let claims = keys().verify(&refreshed).expect("valid");
    assert_eq!(claims.sub, original.sub);
    assert_eq!(claims.video, original.video);
    assert!(claims.exp >= now + 600, "a full lifetime from now");
    assert!(claims.exp <= now + 610);
}
