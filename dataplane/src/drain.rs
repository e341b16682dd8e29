//! The listener's drain signal: every connection holds a [`Watch`], the listener fires the
//! [`Drain`] when it stops accepting, and then waits until every watch is gone.
//!
//! Why not a `tokio::sync::watch` channel: a connection's serving task waits on the signal beside
//! its exchanges (a `select!`), so the signal's future is polled every time the task wakes, twice
//! a call. A watch receiver's `changed()` takes the channel's waiter lock on every such poll, and
//! the one channel is shared by every connection on every serving thread: a lock whose cache line
//! moves between cores on every call. Here a poll is one load of a flag that is written once,
//! and the lock is taken only when a watcher starts or stops waiting, or its task's waker changes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// The sending side: fires once, then waits for the watchers to go. Dropping it fires it, as a
/// dropped `watch` sender ended its receivers' waits.
#[derive(Debug)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

/// One connection's view of the signal. Dropping it tells the drain the connection is done.
#[derive(Debug)]
pub(crate) struct Watch {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    fired: Flag,
    /// The wakers of the futures waiting for the signal, by the id each took.
    waiting: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
    /// Watches alive.
    watches: AtomicUsize,
    /// Told when the last watch goes.
    none_left: Notify,
}

/// The fired flag on a cache line (and its prefetched pair) of its own: every connection's poll
/// loads it, and the counters and the lock beside it change on every connection's start and end.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Flag(AtomicBool);

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        // Nothing that holds the lock can panic halfway through a change.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::default(),
        }
    }

    /// A watch for one more connection.
    pub(crate) fn watch(&self) -> Watch {
        self.shared.watches.fetch_add(1, Ordering::AcqRel);
        Watch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Watches alive now.
    pub(crate) fn watches(&self) -> usize {
        self.shared.watches.load(Ordering::Acquire)
    }

    /// Fires the signal: every watch's [`Watch::fired`] completes, now and later.
    pub(crate) fn fire(&self) {
        self.shared.fired.0.store(true, Ordering::Release);
        // Taken after the flag is set: a waiter that registers later sees the flag under the
        // lock; one that registered before is woken here.
        let wakers: Vec<Waker> = self.shared.waiting().drain().map(|(_, w)| w).collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Completes when no watch is left.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.none_left.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the count is read, so that the last drop cannot slip between.
            notified.as_mut().enable();
            if self.watches() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Watch {
    /// Completes once the drain has fired (at once if it already has).
    pub(crate) fn fired(&self) -> Fired<'_> {
        Fired {
            shared: &self.shared,
            registered: None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.shared.watches.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.none_left.notify_waiters();
        }
    }
}

/// The future of [`Watch::fired`].
#[derive(Debug)]
pub(crate) struct Fired<'a> {
    shared: &'a Shared,
    /// The id this future's waker is stored under, and a copy of it to tell whether the task's
    /// waker changed.
    registered: Option<(u64, Waker)>,
}

impl Future for Fired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shared.fired.0.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match &mut this.registered {
            // The usual case: polled again by the same task, nothing to do.
            Some((_, waker)) if waker.will_wake(cx.waker()) => Poll::Pending,
            registered => {
                let mut waiting = this.shared.waiting();
                // Checked again under the lock: `fire` sets the flag before taking it.
                if this.shared.fired.0.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                let id = match registered {
                    Some((id, _)) => *id,
                    None => this.shared.next_id.fetch_add(1, Ordering::Relaxed),
                };
                waiting.insert(id, cx.waker().clone());
                *registered = Some((id, cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

impl Drop for Fired<'_> {
    fn drop(&mut self) {
        if let Some((id, _)) = self.registered.take() {
            self.shared.waiting().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const GUARD: Duration = Duration::from_secs(5);

    /// Yields until `n` futures wait on `drain`: a test of the wake-up path must fire after its
    /// waiters registered, or the flag alone would let them finish.
    async fn until_waiting(drain: &Drain, n: usize) {
        let deadline = std::time::Instant::now() + GUARD;
        while drain.shared.waiting().len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "waiters never registered"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Polls `f` once with a waker that does nothing.
    fn poll_now<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn waiting_watches_complete_when_fired_and_later_ones_at_once() {
        let drain = Drain::new();
        let (a, b) = (drain.watch(), drain.watch());
        assert_eq!(drain.watches(), 2);
        let waiting = tokio::spawn(async move {
            a.fired().await;
            a
        });
        until_waiting(&drain, 1).await;
        {
            let mut early = std::pin::pin!(b.fired());
            assert!(poll_now(early.as_mut()).is_pending());
            assert_eq!(drain.shared.waiting().len(), 2);
            drain.fire();
            assert!(
                drain.shared.waiting().is_empty(),
                "fire wakes and forgets every waiter"
            );
            assert!(poll_now(early.as_mut()).is_ready());
        }
        let a = tokio::time::timeout(GUARD, waiting)
            .await
            .expect("woken")
            .expect("task");
        // Fired stays fired, without registering again.
        b.fired().await;
        assert!(drain.shared.waiting().is_empty());
        drop((a, b));
        assert_eq!(drain.watches(), 0);
    }

    #[tokio::test]
    async fn closed_waits_for_the_last_watch() {
        let drain = Drain::new();
        let watches: Vec<Watch> = (0..3).map(|_| drain.watch()).collect();
        drain.fire();
        let mut closed = std::pin::pin!(drain.closed());
        assert!(poll_now(closed.as_mut()).is_pending());
        let mut watches = watches.into_iter();
        drop(watches.next());
        drop(watches.next());
        assert!(poll_now(closed.as_mut()).is_pending());
        let last = watches.next();
        let dropper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(last);
        });
        tokio::time::timeout(GUARD, closed)
            .await
            .expect("closed once the last watch went");
        dropper.await.expect("task");
        // And at once when there are none.
        Drain::new().closed().await;
    }

    #[tokio::test]
    async fn a_dropped_future_takes_its_waker_and_a_dropped_drain_fires() {
        let drain = Drain::new();
        let watch = drain.watch();
        {
            let mut fired = std::pin::pin!(watch.fired());
            assert!(poll_now(fired.as_mut()).is_pending());
            assert!(poll_now(fired.as_mut()).is_pending());
            assert_eq!(drain.shared.waiting().len(), 1);
        }
        assert!(drain.shared.waiting().is_empty());
        let waiting = tokio::spawn(async move { watch.fired().await });
        until_waiting(&drain, 1).await;
        drop(drain);
        tokio::time::timeout(GUARD, waiting)
            .await
            .expect("a dropped drain fires")
            .expect("task");
    }

    #[test]
    fn watchers_on_many_threads_all_wake() {
        let drain = Drain::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let watch = drain.watch();
                runtime.spawn(async move { watch.fired().await })
            })
            .collect();
        runtime.block_on(until_waiting(&drain, 64));
        drain.fire();
        runtime.block_on(async {
            for task in tasks {
                tokio::time::timeout(GUARD, task)
                    .await
                    .expect("woken")
                    .expect("task");
            }
            tokio::time::timeout(GUARD, drain.closed())
                .await
                .expect("every watch dropped");
        });
    }
}
