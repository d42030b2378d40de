//! A message's delivery status as the backend sees it, and the one rule
//! about it: statuses never go backwards. The relay and the customer's
//! devices report them separately (the relay's `Delivered`, the end to
//! end encrypted read receipt), so a `read` can arrive before the
//! `delivered` it implies; the late `delivered` is then ignored, and no
//! webhook reports it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an outgoing message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Stored by the daemon, waiting for the relay (the daemon is offline).
    Queued,
    /// Stored durably by the relay.
    Sent,
    /// Stored by one of the customer's devices.
    Delivered,
    /// Read by the customer.
    Read,
    /// Refused for good; it will not be sent.
    Failed,
    /// A message the customer sent (incoming messages have no outgoing
    /// status).
    Received,
}

impl MessageStatus {
    /// The stored name (also the webhook's `status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Sent,
            Self::Delivered,
            Self::Read,
            Self::Failed,
            Self::Received,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether a message standing at `self` may move to `next`: only
    /// forward along queued → sent → delivered → read; `failed` only
    /// before the customer had it (a delivered message cannot fail);
    /// nothing leaves `failed` or `read`, and incoming messages never move.
    pub fn advances_to(self, next: Self) -> bool {
        use MessageStatus::*;
        match (self, next) {
            (Received, _) | (_, Received) | (Failed, _) | (_, Queued) => false,
            (Queued | Sent, Failed) => true,
            (_, Failed) => false,
            (from, to) => rank(to) > rank(from),
        }
    }
}

fn rank(status: MessageStatus) -> u8 {
    match status {
        MessageStatus::Queued => 0,
        MessageStatus::Sent => 1,
        MessageStatus::Delivered => 2,
        MessageStatus::Read => 3,
        MessageStatus::Failed | MessageStatus::Received => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::{self, *};

    #[test]
    fn statuses_only_move_forward() {
        let cases: &[(MessageStatus, MessageStatus, bool)] = &[
            (Queued, Sent, true),
            (Queued, Delivered, true),
            (Sent, Delivered, true),
            (Sent, Read, true),
            (Delivered, Read, true),
            // Out of order: a read before its delivered; the late one is dropped.
            (Read, Delivered, false),
            (Read, Sent, false),
            (Delivered, Sent, false),
            (Sent, Sent, false),
            (Read, Read, false),
            (Queued, Failed, true),
            (Sent, Failed, true),
            (Delivered, Failed, false),
            (Read, Failed, false),
            (Failed, Sent, false),
            (Failed, Read, false),
            (Sent, Queued, false),
            (Received, Read, false),
            (Sent, Received, false),
        ];
        for (from, to, allowed) in cases {
            assert_eq!(from.advances_to(*to), *allowed, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [Queued, Sent, Delivered, Read, Failed, Received] {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MessageStatus::parse("lost"), None);
    }
}
