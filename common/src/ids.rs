//! Newtype identifiers, so a room name is never passed where an identity is
//! expected.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

string_id!(
    /// A room's name, chosen by whoever creates or joins it.
    RoomName
);
string_id!(
    /// A room's server-assigned id (`RM_…`).
    RoomSid
);
string_id!(
    /// A participant's identity, from the token's `sub`; unique in a room.
    ParticipantIdentity
);
string_id!(
    /// A participant session's server-assigned id (`PA_…`).
    ParticipantSid
);
string_id!(
    /// A published track's server-assigned id (`TR_…`).
    TrackSid
);

/// A LiveKit-style id: a prefix such as `PA_` and 12 random base62 characters.
/// livekit-client tells participant and track ids apart by these prefixes.
pub fn new_sid(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut sid = String::with_capacity(prefix.len() + 12);
    sid.push_str(prefix);
    for _ in 0..12 {
        sid.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    sid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_carry_their_prefix_and_differ() {
        let a = new_sid("PA_");
        let b = new_sid("PA_");
        assert!(a.starts_with("PA_"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, b);
    }
}
