//! Serving threads (`dataplane.serving-threads`): threads with one single-threaded Tokio runtime
//! each, which serve the connections the accept loop hands them in turn, as nginx's worker
//! processes serve theirs. A connection, its calls and their worker connections then stay on one
//! thread: no work stealing and no cross-thread wake-ups, and idle worker connections are pooled
//! per thread ([`current`] names the calling thread's pool).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

/// A connection's work. It is built on the thread that serves it: its socket has to be
/// registered with that thread's runtime.
pub(crate) type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

thread_local! {
    /// This thread's number among the serving threads, from 1; 0 on every other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The calling thread's number among the serving threads (from 1), or 0 when it is not one.
pub(crate) fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The running serving threads.
#[derive(Debug)]
pub(crate) struct ServingThreads {
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    /// The thread the next connection goes to.
    next: usize,
    stop: watch::Sender<bool>,
    ended: Vec<oneshot::Receiver<()>>,
}

impl ServingThreads {
    /// Starts `n` threads (at least one), each with its own runtime.
    pub(crate) fn start(n: usize) -> io::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let mut threads = Self {
            jobs: Vec::with_capacity(n),
            next: 0,
            stop,
            ended: Vec::with_capacity(n),
        };
        for index in 1..=n.max(1) {
            // Built here rather than on the thread, so that a failure is the caller's error.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (jobs, jobs_rx) = mpsc::unbounded_channel();
            let (ended, ended_rx) = oneshot::channel();
            let stop = stop_rx.clone();
            std::thread::Builder::new()
                .name(format!("nvcf-serve-{index}"))
                .spawn(move || {
                    serve(index, &runtime, jobs_rx, stop);
                    // Cancels the connections still open: the caller's drain gave up on them.
                    drop(runtime);
                    let _ = ended.send(());
                })?;
            threads.jobs.push(jobs);
            threads.ended.push(ended_rx);
        }
        Ok(threads)
    }

    /// Hands `job` to the next thread in turn.
    pub(crate) fn hand(&mut self, job: Job) {
        let index = self.next;
        self.next = (index + 1) % self.jobs.len();
        if self.jobs[index].send(job).is_err() {
            // Only after `stop`, which takes `self`: the connection is dropped, hence closed.
            debug!(thread = index + 1, "a serving thread has stopped");
        }
    }

    /// Stops the threads, dropping the connections they still serve, and waits until they end.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        drop(self.jobs);
        for ended in self.ended {
            let _ = ended.await;
        }
    }
}

/// A serving thread: spawns each job it is handed on its runtime until told to stop. (When the
/// accept loop ends first, the connections go on until their drain ends and the stop comes.)
fn serve(
    index: usize,
    runtime: &Runtime,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    INDEX.set(index);
    runtime.block_on(async move {
        let stopped = stop.wait_for(|stop| *stop);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return,
                job = jobs.recv() => match job {
                    Some(job) => {
                        tokio::spawn(job());
                    }
                    None => {
                        let _ = stopped.await;
                        return;
                    }
                },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn jobs_go_round_the_threads_and_run_on_their_own_runtimes() {
        let mut threads = ServingThreads::start(3).expect("start");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done, mut done_rx) = mpsc::unbounded_channel();
        for _ in 0..6 {
            let (seen, done) = (Arc::clone(&seen), done.clone());
            threads.hand(Box::new(move || {
                // Built on the serving thread, inside its runtime.
                let index = current();
                let single = tokio::runtime::Handle::current().runtime_flavor()
                    == tokio::runtime::RuntimeFlavor::CurrentThread;
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    seen.lock().expect("lock").push((index, single));
                    let _ = done.send(());
                })
            }));
        }
        for _ in 0..6 {
            done_rx.recv().await.expect("job ran");
        }
        let seen = seen.lock().expect("lock").clone();
        let indexes: Vec<usize> = seen.iter().map(|&(i, _)| i).collect();
        let distinct: HashSet<usize> = indexes.iter().copied().collect();
        assert_eq!(distinct, HashSet::from([1, 2, 3]), "{indexes:?}");
        for i in 1..=3 {
            assert_eq!(
                indexes.iter().filter(|&&x| x == i).count(),
                2,
                "{indexes:?}"
            );
        }
        assert!(
            seen.iter().all(|&(_, single)| single),
            "single-threaded runtimes"
        );
        assert_eq!(
            current(),
            0,
            "the test's own thread is not a serving thread"
        );
        threads.stop().await;
    }

    #[tokio::test]
    async fn stop_ends_the_threads_and_drops_what_they_still_run() {
        let mut threads = ServingThreads::start(2).expect("start");
        let (started, mut started_rx) = mpsc::unbounded_channel();
        let (dropped, mut dropped_rx) = mpsc::unbounded_channel::<()>();
        for _ in 0..2 {
            let (started, dropped) = (started.clone(), dropped.clone());
            threads.hand(Box::new(move || {
                Box::pin(async move {
                    // Held until the task is dropped with its runtime.
                    let _guard = dropped;
                    let _ = started.send(());
                    std::future::pending::<()>().await;
                })
            }));
        }
        drop(dropped);
        for _ in 0..2 {
            started_rx.recv().await.expect("started");
        }
        threads.stop().await;
        assert!(
            dropped_rx.recv().await.is_none(),
            "every never-ending job was dropped when its thread stopped"
        );
    }
}
