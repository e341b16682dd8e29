//! Dynamic batching for `builtin/mlp`: concurrent requests of one function version are gathered
//! into one forward pass and the result is split back per request.
//!
//! Two halves, as in a sans-IO protocol core:
//!
//! * [`BatchPolicy`] decides, from a FIFO queue and a `now` passed in, when a batch is ready and what
//!   it holds. It does no I/O, reads no clock and is unit-tested on its own (and benched in
//!   `benches/batcher.rs`).
//! * [`Batcher`] is the thin async driver: one task per function version that feeds submitted jobs
//!   into the policy, sleeps until the policy's next deadline, skips jobs whose requester went away,
//!   and runs each batch through a `launch` function (which puts the forward pass on the blocking
//!   pool). Batches of one version run one after another; jobs that arrive during a launch form the
//!   next batch, so under load batches fill up by themselves.
//!
//! Policy: a batch holds at most `max_rows` rows. It is launched as soon as it is full (or the next
//! queued job would not fit), or when its oldest job has waited `max_delay`. A job with more rows
//! than `max_rows` runs alone. Order is FIFO: a job never overtakes an older one.

use crate::kernels::KernelError;
use crate::metrics::VersionMetrics;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

// === impl BatchPolicy ===

/// One queued job.
#[derive(Debug)]
pub struct Pending<T> {
    /// When the job's input was complete.
    pub arrived: Instant,
    /// Rows the job contributes to a launch.
    pub rows: usize,
    pub item: T,
}

/// Jobs to launch together.
#[derive(Debug)]
pub struct Batch<T> {
    /// Rows over all entries.
    pub rows: usize,
    /// In arrival order.
    pub entries: Vec<Pending<T>>,
}

/// The batching decision, free of I/O: push jobs, ask whether a batch is ready at `now`, and when
/// to ask again.
#[derive(Debug)]
pub struct BatchPolicy<T> {
    max_rows: usize,
    max_delay: Duration,
    queue: VecDeque<Pending<T>>,
    queued_rows: usize,
}

impl<T> BatchPolicy<T> {
    /// A policy launching at most `max_rows` rows (at least 1) after at most `max_delay`.
    pub fn new(max_rows: usize, max_delay: Duration) -> Self {
        Self {
            max_rows: max_rows.max(1),
            max_delay,
            queue: VecDeque::new(),
            queued_rows: 0,
        }
    }

    /// Queues a job.
    pub fn push(&mut self, arrived: Instant, rows: usize, item: T) {
        self.queued_rows = self.queued_rows.saturating_add(rows);
        self.queue.push_back(Pending {
            arrived,
            rows,
            item,
        });
    }

    /// Jobs queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Rows queued.
    pub fn queued_rows(&self) -> usize {
        self.queued_rows
    }

    /// Drops the jobs `keep` rejects (the driver drops those whose requester went away).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut rows = 0usize;
        self.queue.retain(|p| {
            let k = keep(&p.item);
            if k {
                rows = rows.saturating_add(p.rows);
            }
            k
        });
        self.queued_rows = rows;
    }

    /// When the oldest job's wait runs out; `None` when nothing is queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|p| p.arrived + self.max_delay)
    }

    /// The batch to launch at `now`, if one is due: the front job alone when it has `max_rows` rows
    /// or more; the longest FIFO prefix that fits when waiting cannot make it grow (the queue holds
    /// at least `max_rows` rows); everything when the oldest job has waited `max_delay`.
    pub fn ready(&mut self, now: Instant) -> Option<Batch<T>> {
        let front = self.queue.front()?;
        let due = front.rows >= self.max_rows
            || self.queued_rows >= self.max_rows
            || now >= front.arrived + self.max_delay;
        if due { self.flush() } else { None }
    }

    /// The next batch regardless of deadlines (the front job alone if it is oversized, else the
    /// longest FIFO prefix that fits); `None` when nothing is queued.
    pub fn flush(&mut self) -> Option<Batch<T>> {
        let mut rows = self.queue.front()?.rows;
        let mut take = 1;
        if rows < self.max_rows {
            for p in self.queue.iter().skip(1) {
                match rows.checked_add(p.rows) {
                    Some(r) if r <= self.max_rows => {
                        rows = r;
                        take += 1;
                    }
                    _ => break,
                }
            }
        }
        let entries: Vec<_> = self.queue.drain(..take).collect();
        self.queued_rows = self.queued_rows.saturating_sub(rows);
        Some(Batch { rows, entries })
    }
}

// === impl Batcher ===

/// What a launch answers: `rows × output width` values, or the kernel's error.
pub type LaunchResult = Result<Vec<f32>, KernelError>;

/// Runs one forward pass over `rows` rows laid out row-major.
pub type Launch = Box<
    dyn Fn(Vec<f32>, usize) -> Pin<Box<dyn Future<Output = LaunchResult> + Send>> + Send + Sync,
>;

/// One request's share of a batch.
#[derive(Debug)]
pub struct Job {
    pub inputs: Vec<f32>,
    pub rows: usize,
    pub arrived: Instant,
    pub reply: oneshot::Sender<LaunchResult>,
}

/// The handle requests submit jobs through. The driver task ends once every handle is dropped and
/// the queue is drained.
///
/// The channel is unbounded on purpose: the jobs queued for a version are bounded by its
/// `maxRequestConcurrency` (admission happens before a job is submitted), so submission never waits.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
}

/// The driver task has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct Stopped;

impl Batcher {
    /// Starts the driver task of one function version (`metrics` are its handles).
    pub fn spawn(
        max_rows: usize,
        max_delay: Duration,
        metrics: Arc<VersionMetrics>,
        launch: Launch,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(
            BatchPolicy::new(max_rows, max_delay),
            rx,
            metrics,
            launch,
        ));
        Self { tx }
    }

    /// Queues `rows` rows; the receiver answers this job's outputs. Dropping the receiver before the
    /// batch launches takes the job out of the queue.
    pub fn submit(
        &self,
        inputs: Vec<f32>,
        rows: usize,
        arrived: Instant,
    ) -> Result<oneshot::Receiver<LaunchResult>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                inputs,
                rows,
                arrived,
                reply,
            })
            .map_err(|_| Stopped)?;
        Ok(rx)
    }
}

/// Far enough that a disabled sleep never fires.
const IDLE: Duration = Duration::from_secs(3600);

async fn drive(
    mut policy: BatchPolicy<Job>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    metrics: Arc<VersionMetrics>,
    launch: Launch,
) {
    let mut open = true;
    loop {
        while open {
            match rx.try_recv() {
                Ok(job) => policy.push(job.arrived, job.rows, job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        // A requester that went away (stream reset, client gone) dropped its receiver.
        policy.retain(|job| !job.reply.is_closed());
        let batch = if open {
            policy.ready(Instant::now())
        } else {
            policy.flush()
        };
        if let Some(batch) = batch {
            run(batch, &metrics, &launch).await;
            continue;
        }
        if !open {
            return;
        }
        let wake = policy
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => policy.push(job.arrived, job.rows, job),
                None => open = false,
            },
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

async fn run(batch: Batch<Job>, metrics: &VersionMetrics, launch: &Launch) {
    let start = Instant::now();
    for e in &batch.entries {
        metrics.queue_wait(start.saturating_duration_since(e.item.arrived));
    }
    metrics.batch(batch.rows);
    let Batch { rows, mut entries } = batch;
    let inputs = if entries.len() == 1 {
        std::mem::take(&mut entries[0].item.inputs)
    } else {
        let mut all = Vec::with_capacity(entries.iter().map(|e| e.item.inputs.len()).sum());
        for e in &entries {
            all.extend_from_slice(&e.item.inputs);
        }
        all
    };
    let result = launch(inputs, rows).await;
    let outputs = match result {
        Ok(out) if rows > 0 && out.len() % rows == 0 => out,
        Ok(out) => {
            let e = KernelError::Device {
                message: format!("forward returned {} values for {rows} rows", out.len()),
                lost: false,
            };
            for p in entries {
                let _ = p.item.reply.send(Err(e.clone()));
            }
            drop(out);
            return;
        }
        Err(e) => {
            for p in entries {
                let _ = p.item.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let width = outputs.len() / rows;
    let mut offset = 0;
    for p in entries {
        let n = p.rows * width;
        let part = outputs.get(offset..offset + n).map(<[f32]>::to_vec);
        offset += n;
        // A requester gone during the launch just misses its answer.
        let _ = p.item.reply.send(part.ok_or_else(|| KernelError::Device {
            message: "batch outputs shorter than its rows".into(),
            lost: false,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ids(b: &Batch<u32>) -> Vec<u32> {
        b.entries.iter().map(|p| p.item).collect()
    }

    #[test]
    fn waits_for_the_deadline_then_takes_everything() {
        let t0 = Instant::now();
        let mut p = BatchPolicy::new(8, ms(2));
        assert!(p.ready(t0).is_none());
        assert_eq!(p.next_deadline(), None);
        p.push(t0, 2, 1);
        p.push(t0 + ms(1), 3, 2);
        assert_eq!(p.next_deadline(), Some(t0 + ms(2)));
        assert!(p.ready(t0 + ms(1)).is_none());
        let b = p.ready(t0 + ms(2)).expect("due");
        assert_eq!((b.rows, ids(&b)), (5, vec![1, 2]));
        assert!(p.is_empty());
        assert_eq!(p.queued_rows(), 0);
    }

    #[test]
    fn launches_at_once_when_full() {
        let t0 = Instant::now();
        let mut p = BatchPolicy::new(4, ms(100));
        for i in 0..5 {
            p.push(t0, 1, i);
        }
        let b = p.ready(t0).expect("full");
        assert_eq!((b.rows, ids(&b)), (4, vec![0, 1, 2, 3]));
        assert!(p.ready(t0).is_none(), "one row left waits");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_job_that_does_not_fit_closes_the_batch_and_keeps_fifo_order() {
        let t0 = Instant::now();
        let mut p = BatchPolicy::new(8, ms(100));
        p.push(t0, 3, 1);
        p.push(t0, 6, 2);
        p.push(t0, 1, 3);
        let b = p.ready(t0).expect("waiting cannot grow the prefix");
        assert_eq!((b.rows, ids(&b)), (3, vec![1]));
        assert!(
            p.ready(t0).is_none(),
            "7 rows left: they wait for the deadline"
        );
        let b = p.ready(t0 + ms(100)).expect("due");
        assert_eq!(ids(&b), vec![2, 3]);
    }

    #[test]
    fn oversized_jobs_run_alone() {
        let t0 = Instant::now();
        let mut p = BatchPolicy::new(4, ms(100));
        p.push(t0, 10, 1);
        p.push(t0, 1, 2);
        let b = p.ready(t0).expect("oversized is due at once");
        assert_eq!((b.rows, ids(&b)), (10, vec![1]));
        assert!(p.ready(t0).is_none());
        p.push(t0, 9, 3);
        let b = p.ready(t0).expect("queue over max");
        assert_eq!(ids(&b), vec![2]);
        let b = p.flush().expect("flush");
        assert_eq!((b.rows, ids(&b)), (9, vec![3]));
        assert!(p.flush().is_none());
    }

    #[test]
    fn retain_drops_jobs_and_their_rows() {
        let t0 = Instant::now();
        let mut p = BatchPolicy::new(4, ms(5));
        p.push(t0, 1, 1);
        p.push(t0 + ms(3), 2, 2);
        p.retain(|i| *i != 1);
        assert_eq!((p.len(), p.queued_rows()), (1, 2));
        assert_eq!(
            p.next_deadline(),
            Some(t0 + ms(8)),
            "the deadline follows the new front"
        );
        let b = p.ready(t0 + ms(8)).expect("due");
        assert_eq!(ids(&b), vec![2]);
    }

    #[test]
    fn zero_delay_launches_whatever_is_queued() {
        let t0 = Instant::now();
        let mut p = BatchPolicy::new(64, Duration::ZERO);
        p.push(t0, 1, 1);
        p.push(t0, 1, 2);
        assert_eq!(p.ready(t0).map(|b| ids(&b)), Some(vec![1, 2]));
    }

    /// A launch that doubles every value and counts its calls.
    fn doubling(calls: Arc<AtomicUsize>) -> Launch {
        Box::new(move |inputs: Vec<f32>, _rows| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(inputs.iter().map(|v| v * 2.0).collect()) })
        })
    }

    #[tokio::test]
    async fn driver_batches_concurrent_jobs_and_splits_results() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = Batcher::spawn(
            64,
            ms(20),
            Arc::new(VersionMetrics::new("v".into())),
            doubling(Arc::clone(&calls)),
        );
        let now = Instant::now();
        let rxs: Vec<_> = (0..8)
            .map(|i| {
                b.submit(vec![i as f32, 10.0 + i as f32], 1, now)
                    .expect("submit")
            })
            .collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            let out = rx.await.expect("answered").expect("ok");
            assert_eq!(out, vec![2.0 * i as f32, 2.0 * (10.0 + i as f32)]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn driver_skips_jobs_whose_requester_left() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = Batcher::spawn(
            64,
            ms(30),
            Arc::new(VersionMetrics::new("v".into())),
            doubling(Arc::clone(&calls)),
        );
        let gone = b.submit(vec![1.0], 1, Instant::now()).expect("submit");
        drop(gone);
        let kept = b.submit(vec![3.0], 1, Instant::now()).expect("submit");
        assert_eq!(kept.await.expect("answered").expect("ok"), vec![6.0]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn driver_reports_errors_to_every_job_and_stops_when_dropped() {
        let launch: Launch = Box::new(|_, _| {
            Box::pin(async {
                Err(KernelError::Device {
                    message: "boom".into(),
                    lost: true,
                })
            })
        });
        let b = Batcher::spawn(4, ms(1), Arc::new(VersionMetrics::new("v".into())), launch);
        let r1 = b.submit(vec![1.0], 1, Instant::now()).expect("submit");
        let r2 = b.submit(vec![1.0], 1, Instant::now()).expect("submit");
        drop(b);
        for r in [r1, r2] {
            assert!(matches!(
                r.await.expect("answered"),
                Err(KernelError::Device { lost: true, .. })
            ));
        }
    }
}
