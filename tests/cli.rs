//! The operator commands of the `salon` binary.

use salon_signaling::auth::{Claims, KeyStore};
use std::collections::HashMap;
use std::process::Command;

fn salon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(args)
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .output()
        .expect("run salon")
}

/// Runs `salon token create` with `args` and verifies what it printed.
fn created_token(args: &[&str]) -> Claims {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = salon(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let keys = KeyStore::new(HashMap::from([("devkey".to_owned(), "secret".to_owned())]));
    keys.verify(token.trim()).expect("valid token")
}

#[test]
fn token_create_prints_a_join_token_for_the_dev_key() {
    let claims = created_token(&["--room", "standup", "--identity", "ana", "--name", "Ana"]);
    assert_eq!(claims.sub, "ana");
    assert_eq!(claims.name, "Ana");
    assert_eq!(claims.join_room(), Ok("standup"));
    assert!(!claims.video.room_admin);
    let lifetime = claims.exp - claims.nbf.expect("nbf");
    assert_eq!(lifetime, 6 * 3600, "LiveKit's default lifetime");
}

#[test]
fn token_create_admin_and_lifetime() {
    let claims = created_token(&[
        "--room",
        "r",
        "--identity",
        "ops",
        "--admin",
        "--valid-for",
        "30m",
    ]);
    assert!(claims.video.room_admin && claims.video.room_create && claims.video.room_list);
    assert_eq!(claims.exp - claims.nbf.expect("nbf"), 1800);
}

#[test]
fn token_create_refuses_a_bad_lifetime() {
    let out = salon(&[
        "token",
        "create",
        "--room",
        "r",
        "--identity",
        "x",
        "--valid-for",
        "soon",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("duration"));
}
