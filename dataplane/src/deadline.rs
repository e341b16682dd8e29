//! A deadline on a future, like `tokio::time::timeout_at`, whose timers are kept per thread and
//! reused rather than made for every call.
//!
//! Every invocation waits for its worker under a deadline (the poll window and its grace, a
//! minute or more), and almost none reaches it. With `timeout_at` each call makes a timer, enters
//! it in the runtime's timer wheel at its first wait, and takes it out again when the worker
//! answers: about 500 instructions a call (callgrind), for a timer that never fires. Here a call
//! borrows a timer from its thread's idle ones and gives it back when done, still entered in the
//! wheel. Moving an entered timer to a *later* deadline only stores the new time (the wheel moves
//! it when its old time comes), so under steady load the wheel is hardly touched.
//!
//! An idle timer keeps the waker of its last call's task (the runtime has no way to take it back
//! short of dropping the timer), which keeps that task's memory until the timer is reused or
//! fires; [`IDLE_PER_THREAD`] bounds how many a thread keeps. A timer that fires while idle wakes
//! that task once, for nothing, and is entered again at its next use.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// The most idle timers a thread keeps; past it, a finished call's timer is dropped (taken out of
/// the wheel). About the calls one serving thread has in flight at once under heavy load.
const IDLE_PER_THREAD: usize = 128;

/// One of the runtime's timers, boxed to be kept apart from the call that used it.
type Timer = Pin<Box<Sleep>>;

thread_local! {
    /// This thread's idle timers, with the runtime they belong to (a thread may serve another
    /// runtime later: tests do). Tokio numbers runtimes from a 64-bit counter, so a later
    /// runtime never takes an earlier one's id.
    static IDLE: RefCell<Option<(Id, Vec<Timer>)>> = const { RefCell::new(None) };
}

/// `inner` unless `deadline` passes first ([`Elapsed`]). Needs a Tokio runtime with its time
/// driver, as `tokio::time::timeout_at` does.
pub(crate) fn deadline<F: Future + Unpin>(deadline: Instant, inner: F) -> Deadline<F> {
    Deadline {
        inner,
        deadline,
        timer: None,
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// The future of [`deadline`].
#[derive(Debug)]
pub(crate) struct Deadline<F> {
    inner: F,
    deadline: Instant,
    /// Borrowed at the first wait (a future that is ready at once needs none), with the runtime
    /// it belongs to.
    timer: Option<(Id, Timer)>,
}

impl<F: Future + Unpin> Future for Deadline<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = Pin::new(&mut this.inner).poll(cx) {
            give_back(this.timer.take());
            return Poll::Ready(Ok(output));
        }
        let deadline = this.deadline;
        let (_, timer) = this.timer.get_or_insert_with(|| borrow(deadline));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                give_back(this.timer.take());
                Poll::Ready(Err(Elapsed))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> Drop for Deadline<F> {
    fn drop(&mut self) {
        give_back(self.timer.take());
    }
}

/// An idle timer of this thread's runtime, set to `deadline`, or a new one.
fn borrow(deadline: Instant) -> (Id, Timer) {
    let runtime = Handle::current().id();
    let idle = IDLE
        .try_with(|idle| match &mut *idle.borrow_mut() {
            Some((id, timers)) if *id == runtime => timers.pop(),
            // Another runtime's timers (or none yet): start over with this one's.
            slot => {
                *slot = Some((runtime, Vec::new()));
                None
            }
        })
        .ok()
        .flatten();
    let timer = match idle {
        Some(mut timer) => {
            timer.as_mut().reset(deadline);
            timer
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    (runtime, timer)
}

/// Keeps `timer` for the thread's next call (while there is room, and the thread's idle timers
/// are those of the timer's runtime).
fn give_back(timer: Option<(Id, Timer)>) {
    let Some((runtime, timer)) = timer else {
        return;
    };
    let _ = IDLE.try_with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut()
            && let Some((id, timers)) = &mut *idle
            && *id == runtime
            && timers.len() < IDLE_PER_THREAD
        {
            timers.push(timer);
        }
    });
}

/// How many idle timers this thread keeps (tests).
#[cfg(test)]
fn idle_here() -> usize {
    IDLE.with(|idle| idle.borrow().as_ref().map_or(0, |(_, timers)| timers.len()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A future that finishes after `ms` milliseconds (boxed: [`deadline`] takes `Unpin` ones).
    fn after(ms: u64) -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }

    fn never() -> Pin<Box<std::future::Pending<()>>> {
        Box::pin(std::future::pending())
    }

    fn in_ms(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_ready_future_needs_no_timer() {
        let answer = deadline(in_ms(1000), std::future::ready(7));
        assert_eq!(answer.await, Ok(7));
        assert_eq!(idle_here(), 0, "no timer was borrowed");
    }

    #[tokio::test]
    async fn the_future_wins_before_the_deadline_and_its_timer_is_kept() {
        assert_eq!(deadline(in_ms(60_000), after(20)).await, Ok(()));
        assert_eq!(idle_here(), 1);
        // The next call reuses it, moved to its own (later) deadline.
        assert_eq!(deadline(in_ms(120_000), after(20)).await, Ok(()));
        assert_eq!(idle_here(), 1);
    }

    #[tokio::test]
    async fn the_deadline_wins_over_a_slow_future() {
        let start = Instant::now();
        assert_eq!(deadline(in_ms(100), never()).await, Err(Elapsed));
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(idle_here(), 1, "a timer that fired is kept too");
    }

    #[tokio::test]
    async fn a_reused_timer_is_set_to_an_earlier_deadline_too() {
        // First a long deadline (the timer is entered in the wheel for it) ...
        assert_eq!(deadline(in_ms(600_000), after(10)).await, Ok(()));
        assert_eq!(idle_here(), 1);
        // ... then the same timer for a much earlier one, which must still fire on time.
        let start = Instant::now();
        assert_eq!(deadline(in_ms(150), never()).await, Err(Elapsed));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_timer_that_fired_while_idle_is_entered_again() {
        assert_eq!(deadline(in_ms(50), after(10)).await, Ok(()));
        // Idle past its deadline: the wheel fires it with no call waiting.
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Reused: neither does it end a call at once, nor does it fail to end one.
        assert_eq!(deadline(in_ms(5_000), after(100)).await, Ok(()));
        let start = Instant::now();
        assert_eq!(deadline(in_ms(150), never()).await, Err(Elapsed));
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_dropped_call_gives_its_timer_back_and_the_thread_keeps_a_bounded_number() {
        let mut calls = Vec::new();
        for _ in 0..IDLE_PER_THREAD + 10 {
            let mut call = Box::pin(deadline(in_ms(60_000), never()));
            // One poll each: each borrows a timer.
            assert!(futures_util::poll!(call.as_mut()).is_pending());
            calls.push(call);
        }
        drop(calls);
        assert_eq!(idle_here(), IDLE_PER_THREAD);
    }

    #[test]
    fn another_runtime_on_the_thread_does_not_use_the_first_ones_timers() {
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                assert_eq!(deadline(in_ms(60_000), after(10)).await, Ok(()));
                let start = Instant::now();
                assert_eq!(deadline(in_ms(100), never()).await, Err(Elapsed));
                assert!(start.elapsed() >= Duration::from_millis(100));
            });
            // The runtime is gone; its timers stay idle here until the next one replaces them.
            drop(runtime);
        }
    }
}
