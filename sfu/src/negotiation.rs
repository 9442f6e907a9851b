//! Offer/answer bookkeeping for the server-offered subscriber connection.
//! Sans-IO: it only says when an offer must be made.

/// Where the subscriber connection's negotiation stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No offer outstanding.
    #[default]
    Stable,
    /// An offer was sent; `again` records that the track set changed since,
    /// so another offer follows the answer.
    AwaitingAnswer { again: bool },
}

impl Negotiation {
    /// The set of tracks changed. Returns true when an offer must go out now.
    #[must_use]
    pub fn tracks_changed(&mut self) -> bool {
        match self {
            Self::Stable => {
                *self = Self::AwaitingAnswer { again: false };
                true
            }
            Self::AwaitingAnswer { again } => {
                *again = true;
                false
            }
        }
    }

    /// The client answered. Returns true when a new offer must go out now.
    #[must_use]
    pub fn answered(&mut self) -> bool {
        match *self {
            Self::AwaitingAnswer { again: true } => {
                *self = Self::AwaitingAnswer { again: false };
                true
            }
            _ => {
                *self = Self::Stable;
                false
            }
        }
    }

    /// Id of offers for `SessionDescription.id`, which livekit-client echoes.
    pub fn is_awaiting(&self) -> bool {
        matches!(self, Self::AwaitingAnswer { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_while_waiting_for_an_answer_makes_one_more_offer() {
        let mut n = Negotiation::default();
        assert!(n.tracks_changed());
        assert!(!n.tracks_changed());
        assert!(!n.tracks_changed());
        assert!(n.answered(), "the queued change needs a second offer");
        assert!(!n.answered());
        assert_eq!(n, Negotiation::Stable);
    }

    #[test]
    fn an_answer_without_changes_settles() {
        let mut n = Negotiation::default();
        assert!(n.tracks_changed());
        assert!(!n.answered());
        assert!(!n.is_awaiting());
    }
}
