//! The pushes the client took from its connection and has not handled
//! yet, bounded in bytes like the connection's own queue (see
//! [`crate::connection::MAX_WAITING_PUSH_BYTES`]): a relay answering a
//! request only after pushing more than the bound cannot grow this queue
//! either.

use std::collections::VecDeque;

use comptoir_protocol::proto::wire::ServerFrame;
use prost::Message;

use crate::connection::MAX_WAITING_PUSH_BYTES;
use crate::error::ClientError;

/// Pushes waiting to be handled, in order, and their encoded bytes.
#[derive(Debug, Default)]
pub(super) struct PushQueue {
    /// Each push with its encoded size (measured once, when queued).
    frames: VecDeque<(ServerFrame, usize)>,
    bytes: usize,
}

impl PushQueue {
    /// Queue `frame`; past the bound, the error to end the connection with
    /// (the frame is dropped: what was not acked comes again).
    pub(super) fn push_back(&mut self, frame: ServerFrame) -> Result<(), ClientError> {
        let size = frame.encoded_len();
        if self.bytes + size > MAX_WAITING_PUSH_BYTES {
            return Err(ClientError::ConnectionClosed(format!(
                "the relay pushed more than this device could take ({} MiB waiting); \
                 connect again",
                MAX_WAITING_PUSH_BYTES / (1024 * 1024)
            )));
        }
        self.bytes += size;
        self.frames.push_back((frame, size));
        Ok(())
    }

    /// How many pushes wait.
    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    /// The oldest push, taken.
    pub(super) fn pop_front(&mut self) -> Option<ServerFrame> {
        let (frame, size) = self.frames.pop_front()?;
        self.bytes -= size;
        Some(frame)
    }

    /// Keep only the pushes `keep` accepts.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&ServerFrame) -> bool) {
        self.frames.retain(|(frame, _)| keep(frame));
        self.bytes = self.frames.iter().map(|(_, size)| size).sum();
    }
}

#[cfg(test)]
mod tests {
    use comptoir_protocol::proto::wire::{Deliver, Envelope, server_frame};

    use super::*;

    fn push(n: usize) -> ServerFrame {
        ServerFrame {
            request_id: 0,
            body: Some(server_frame::Body::Deliver(Deliver {
                envelope: Some(Envelope {
                    ciphertext: vec![n as u8; 200 * 1024],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    /// Past the bound a push is refused (the connection is to end), and
    /// taking pushes makes room again.
    #[test]
    fn the_queue_is_bounded_in_bytes_and_keeps_order() {
        let mut queue = PushQueue::default();
        let mut queued = 0;
        while queue.push_back(push(queued)).is_ok() {
            queued += 1;
        }
        assert!(queued * 200 * 1024 <= MAX_WAITING_PUSH_BYTES);
        assert!(queued > 0);
        let first = queue.pop_front().expect("a push");
        assert_eq!(first, push(0), "oldest first");
        assert!(queue.push_back(push(1)).is_ok(), "room again");
        queue.retain(|_| false);
        assert!(queue.pop_front().is_none());
        assert_eq!(queue.bytes, 0);
    }
}
