//! Waiting a bounded time for an action the device task does (a reply,
//! a template, an accept): the whole action (queueing the command, then
//! its outcome) runs in a task of its own from the start, so whatever the
//! waiter does (its time runs out, or its request is dropped when the
//! browser leaves, even while the device's queue is full) the action
//! still reaches the device, and its outcome is either taken by the
//! waiter or handed to `late`, never lost between the two.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
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

/// `late`, called at most once, by whichever side finds the outcome
/// untaken: the action's task (the waiter gone) or the waiter's drop (an
/// outcome that arrived as it was dropped).
struct Late<L>(Arc<Mutex<Option<L>>>);

impl<L> Late<L> {
    fn hand_over<T>(&self, outcome: Option<T>)
    where
        L: FnOnce(Option<T>),
    {
        let late = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(late) = late {
            late(outcome);
        }
    }
}

/// The waiter's end: dropped with an outcome in it that nobody took (the
/// request dropped just as it came), it hands the outcome over.
struct Answer<T, L: FnOnce(Option<T>)> {
    answer: oneshot::Receiver<Option<T>>,
    late: Late<L>,
}

impl<T, L: FnOnce(Option<T>)> Drop for Answer<T, L> {
    fn drop(&mut self) {
        self.answer.close();
        if let Ok(outcome) = self.answer.try_recv() {
            self.late.hand_over(outcome);
        }
    }
}

/// Run `action` (its outcome, or `None` if the device task dropped it
/// undone) in a task of its own and wait up to `wait` for it; past that,
/// or if this future is dropped first, `late` gets what it gave when it
/// ends (`None` included).
pub async fn wait_or_hand_over<T, L>(
    action: impl Future<Output = Option<T>> + Send + 'static,
    wait: Duration,
    late: L,
) -> Waited<T>
where
    T: Send + 'static,
    L: FnOnce(Option<T>) + Send + 'static,
{
    let late = Arc::new(Mutex::new(Some(late)));
    let (forward, answer) = oneshot::channel();
    let task_late = Late(Arc::clone(&late));
    tokio::spawn(async move {
        if let Err(outcome) = forward.send(action.await) {
            task_late.hand_over(outcome);
        }
    });
    let mut waiting = Answer {
        answer,
        late: Late(late),
    };
    let given = match tokio::time::timeout(wait, &mut waiting.answer).await {
        Ok(given) => given,
        Err(_) => {
            // Closed first, so an outcome is either taken here or goes to
            // `late`, never lost between the two.
            waiting.answer.close();
            match waiting.answer.try_recv() {
                Ok(given) => Ok(given),
                Err(_) => return Waited::Later,
            }
        }
    };
    match given {
        Ok(Some(outcome)) => Waited::Done(outcome),
        // Dropped undone, or the action's task ended without an answer.
        Ok(None) | Err(_) => Waited::Dropped,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Waker};

    use tokio::sync::mpsc;

    use super::*;

    /// A `late` that reports what it got on the returned receiver.
    fn reported() -> (
        impl FnOnce(Option<u32>) + Send + 'static,
        oneshot::Receiver<Option<u32>>,
    ) {
        let (tx, rx) = oneshot::channel();
        (
            move |outcome| {
                let _ = tx.send(outcome);
            },
            rx,
        )
    }

    /// The action of a device that answers on `outcome`.
    async fn answered(outcome: oneshot::Receiver<u32>) -> Option<u32> {
        outcome.await.ok()
    }

    /// Poll `waiting` once (it must not be done), then drop it: the
    /// browser left.
    fn poll_once_then_drop<F: Future>(waiting: F) {
        let mut waiting = std::pin::pin!(waiting);
        let polled = waiting
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }

    #[tokio::test]
    async fn an_outcome_in_time_is_taken_and_not_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (late, heard) = reported();
        let _ = device.send(7);
        let waited = wait_or_hand_over(answered(outcome), Duration::from_secs(10), late).await;
        assert_eq!(waited, Waited::Done(7));
        assert!(heard.await.is_err(), "late was never called");
    }

    #[tokio::test]
    async fn an_outcome_past_the_wait_is_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (late, heard) = reported();
        let waited = wait_or_hand_over(answered(outcome), Duration::ZERO, late).await;
        assert_eq!(waited, Waited::Later);
        let _ = device.send(8);
        assert_eq!(heard.await, Ok(Some(8)));
    }

    /// The browser leaves: the waiting request is dropped before its time
    /// is up, and the outcome that comes after is still handed over.
    #[tokio::test]
    async fn an_outcome_after_the_waiter_was_dropped_is_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (late, heard) = reported();
        poll_once_then_drop(wait_or_hand_over(
            answered(outcome),
            Duration::from_secs(10),
            late,
        ));
        let _ = device.send(9);
        assert_eq!(heard.await, Ok(Some(9)));
    }

    /// The browser leaves while the device's queue is full: the action
    /// still reaches the device once there is room, and its outcome is
    /// handed over.
    #[tokio::test]
    async fn an_action_queued_behind_a_full_queue_outlives_its_waiter() {
        let (queue, mut device) = mpsc::channel::<oneshot::Sender<u32>>(1);
        let (busy, _busy_outcome) = oneshot::channel();
        queue.try_send(busy).expect("room for one");
        let (reply, outcome) = oneshot::channel();
        let action = async move {
            queue.send(reply).await.ok()?;
            outcome.await.ok()
        };
        let (late, heard) = reported();
        poll_once_then_drop(wait_or_hand_over(action, Duration::from_secs(10), late));
        let _busy = device.recv().await.expect("the first command");
        let queued = device.recv().await.expect("the action reached the device");
        let _ = queued.send(10);
        assert_eq!(heard.await, Ok(Some(10)));
    }

    /// The outcome reaches the waiter's end just as the request is
    /// dropped, before the waiter took it: it is handed over (before, it
    /// was lost with the waiter).
    #[tokio::test]
    async fn an_outcome_that_came_as_the_waiter_was_dropped_is_handed_over() {
        let (device, outcome) = oneshot::channel();
        let (returning, returned) = oneshot::channel::<()>();
        // The action says it is done as it returns; on this test's
        // single-threaded runtime its task forwards the outcome in the
        // same turn, before this test runs again.
        let action = async move {
            let outcome = outcome.await.ok();
            let _ = returning.send(());
            outcome
        };
        let (late, heard) = reported();
        {
            let waiting = wait_or_hand_over(action, Duration::from_secs(10), late);
            let mut waiting = std::pin::pin!(waiting);
            let polled = waiting
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending());
            let _ = device.send(11);
            returned.await.expect("the action returned");
            // The waiter is dropped here, its outcome untaken.
        }
        assert_eq!(heard.await, Ok(Some(11)));
    }

    #[tokio::test]
    async fn an_action_the_device_dropped_is_said_so() {
        let (device, outcome) = oneshot::channel::<u32>();
        let (late, heard) = reported();
        drop(device);
        let waited = wait_or_hand_over(answered(outcome), Duration::from_secs(10), late).await;
        assert_eq!(waited, Waited::Dropped);
        assert!(heard.await.is_err(), "late was never called");
    }

    /// Dropped undone after its waiter left: `late` hears of it (as no
    /// outcome), so an accept recorded first can be undone.
    #[tokio::test]
    async fn an_action_dropped_after_its_waiter_left_is_handed_over_as_none() {
        let (device, outcome) = oneshot::channel::<u32>();
        let (late, heard) = reported();
        poll_once_then_drop(wait_or_hand_over(
            answered(outcome),
            Duration::from_secs(10),
            late,
        ));
        drop(device);
        assert_eq!(heard.await, Ok(None));
    }
}
