//! Waiting a bounded time for the device task's outcome of an action (a
//! reply, a template, an accept): the outcome is awaited in a task of its
//! own from the start and forwarded, so whatever the waiter does (its
//! time runs out, or its request is dropped when the browser leaves) the
//! outcome is either taken by the waiter or handed to `late`, never lost
//! between the two.

use std::time::Duration;

use tokio::sync::oneshot;

/// What waiting for an outcome gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T> {
    /// The outcome, in time.
    Done(T),
    /// The device task dropped the action (the daemon is stopping).
    Dropped,
    /// Not in time: the outcome goes to `late` when it comes.
    Later,
}

/// Wait up to `wait` for `outcome`; past it, or if this future is
/// dropped first, `late` gets the outcome when it comes.
pub async fn wait_or_hand_over<T: Send + 'static>(
    outcome: oneshot::Receiver<T>,
    wait: Duration,
    late: impl FnOnce(T) + Send + 'static,
) -> Waited<T> {
    let (forward, mut answer) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(outcome) = outcome.await
            && let Err(outcome) = forward.send(outcome)
        {
            late(outcome);
        }
    });
    match tokio::time::timeout(wait, &mut answer).await {
        Ok(Ok(outcome)) => Waited::Done(outcome),
        Ok(Err(_)) => Waited::Dropped,
        Err(_) => {
            // Closed first, so an outcome is either taken here or goes to
            // `late`, never lost between the two.
            answer.close();
            match answer.try_recv() {
                Ok(outcome) => Waited::Done(outcome),
                Err(_) => Waited::Later,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Waker};

    use super::*;

    /// A `late` that reports what it got on the returned receiver.
    fn reported() -> (impl FnOnce(u32) + Send + 'static, oneshot::Receiver<u32>) {
        let (tx, rx) = oneshot::channel();
        (
            move |outcome| {
                let _ = tx.send(outcome);
            },
            rx,
        )
    }

    #[tokio::test]
    async fn an_outcome_in_time_is_taken_and_not_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (late, heard) = reported();
        let _ = device.send(7);
        let waited = wait_or_hand_over(outcome, Duration::from_secs(10), late).await;
        assert_eq!(waited, Waited::Done(7));
        assert!(heard.await.is_err(), "late was never called");
    }

    #[tokio::test]
    async fn an_outcome_past_the_wait_is_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (late, heard) = reported();
        let waited = wait_or_hand_over(outcome, Duration::ZERO, late).await;
        assert_eq!(waited, Waited::Later);
        let _ = device.send(8);
        assert_eq!(heard.await, Ok(8));
    }

    /// The browser leaves: the waiting request is dropped before its time
    /// is up, and the outcome that comes after is still handed over.
    #[tokio::test]
    async fn an_outcome_after_the_waiter_was_dropped_is_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (late, heard) = reported();
        {
            let waiting = wait_or_hand_over(outcome, Duration::from_secs(10), late);
            let mut waiting = std::pin::pin!(waiting);
            let polled = waiting
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending());
        }
        let _ = device.send(9);
        assert_eq!(heard.await, Ok(9));
    }

    #[tokio::test]
    async fn an_action_the_device_dropped_is_said_so() {
        let (device, outcome) = oneshot::channel::<u32>();
        let (late, _heard) = reported();
        drop(device);
        let waited = wait_or_hand_over(outcome, Duration::from_secs(10), late).await;
        assert_eq!(waited, Waited::Dropped);
    }
}
