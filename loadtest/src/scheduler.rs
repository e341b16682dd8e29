//! The drivers: closed loop (each of connections × streams slots sends its next request when the
//! last one is answered) and open loop (each slot follows a fixed timetable; latency counts from
//! the intended send time, so a stalled server is not hidden by a client that waits for it).
//!
//! [`OpenLoop`] is the timetable as pure arithmetic: slot `k` of `S` sends requests
//! `i = k, k + S, k + 2S, …`, request `i` intended at `start + i / rate`; the first
//! `ceil(warmup × rate)` requests are warm-up.

use crate::client::{self, ClientError, ErrorKind, RequestTemplate, Sender, Target};
use crate::report::Report;
use crate::stats::Stats;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub target: Arc<Target>,
    pub template: Arc<RequestTemplate>,
    pub connections: usize,
    /// Streams per connection (forced to 1 for HTTP/1.1).
    pub streams: usize,
    /// Open loop when set (requests per second).
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Measured requests to send instead of running for `duration`.
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub lag_threshold: Duration,
    /// Print a progress line on stderr once per second.
    pub progress: bool,
    /// The URL, as given, for the report.
    pub url: String,
}

/// The open-loop timetable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoop {
    pub rate: f64,
    pub slots: u64,
    /// Requests that fall in the warm-up.
    pub warmup_requests: u64,
    /// Total requests (warm-up included), when the run is bounded by a count.
    pub limit: Option<u64>,
    /// Intended send offsets at or past this end the run, when bounded by time.
    pub end: Option<Duration>,
}

impl OpenLoop {
    pub fn new(
        rate: f64,
        slots: u64,
        warmup: Duration,
        requests: Option<u64>,
        duration: Duration,
    ) -> Self {
        let warmup_requests = (warmup.as_secs_f64() * rate).ceil() as u64;
        Self {
            rate,
            slots: slots.max(1),
            warmup_requests,
            limit: requests.map(|n| warmup_requests + n),
            end: if requests.is_some() {
                None
            } else {
                Some(warmup + duration)
            },
        }
    }

    /// Global index of slot `k`'s `j`-th request.
    pub fn index(&self, slot: u64, j: u64) -> u64 {
        slot + j * self.slots
    }

    /// Intended send time of request `i`, from the start.
    pub fn intended(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Whether request `i` is sent at all.
    pub fn in_run(&self, i: u64) -> bool {
        self.limit.is_none_or(|l| i < l) && self.end.is_none_or(|e| self.intended(i) < e)
    }

    /// Whether request `i` is measured (not warm-up).
    pub fn measured(&self, i: u64) -> bool {
        i >= self.warmup_requests
    }
}

/// How late a send left, and from when its latency counts. Within `threshold` the lag is the
/// client's timer granularity and latency counts from the actual send; beyond it (a stalled slot
/// or a client that fell behind) latency counts from the intended time.
pub fn lateness(intended: Instant, sent: Instant, threshold: Duration) -> (Duration, Instant) {
    let lag = sent.saturating_duration_since(intended);
    if lag <= threshold {
        (lag, sent)
    } else {
        (lag, intended)
    }
}

/// One connection, shared by its streams: HTTP/2 and HTTP/3 handles are cloned, an HTTP/1.1 handle is taken
/// by its one slot and given back; a closed one is replaced by a fresh connection.
#[derive(Debug)]
struct Conn {
    target: Arc<Target>,
    cur: Mutex<Option<Sender>>,
}

impl Conn {
    async fn checkout(&self) -> Result<Sender, ClientError> {
        let mut g = self.cur.lock().await;
        if let Some(s) = g.take()
            && !s.is_closed()
        {
            return Ok(match s.share() {
                // HTTP/2 and HTTP/3: the connection stays for the other streams.
                Some(shared) => {
                    *g = Some(s);
                    shared
                }
                None => s,
            });
        }
        let s = client::connect(&self.target).await?;
        *g = s.share();
        Ok(s)
    }

    async fn checkin(&self, s: Sender) {
        if let Sender::H1(_) = s
            && !s.is_closed()
        {
            *self.cur.lock().await = Some(s);
        }
    }
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
    finished: AtomicBool,
}

struct Slot {
    conn: Arc<Conn>,
    plan: Arc<RunPlan>,
    live: Arc<Live>,
    stats: Stats,
}

impl Slot {
    /// Sends one request; returns when it completed (`None` when it failed).
    async fn once(&mut self, from: Instant, measured: bool) -> Option<Instant> {
        let fut = async {
            let mut s = self.conn.checkout().await?;
            let r = client::send(&mut s, &self.plan.target, &self.plan.template).await;
            self.conn.checkin(s).await;
            r
        };
        let r = match tokio::time::timeout(self.plan.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        };
        let done = Instant::now();
        self.live.done.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(o) => {
                if measured {
                    self.stats
                        .record(done.saturating_duration_since(from), o.status.as_u16());
                    self.stats.bytes_sent += o.bytes_sent;
                    self.stats.bytes_received += o.bytes_received;
                    self.stats.polls += o.polls;
                }
                Some(done)
            }
            Err(e) => {
                self.live.errors.fetch_add(1, Ordering::Relaxed);
                let kind = e.kind().unwrap_or(ErrorKind::Protocol);
                if measured {
                    self.stats.record_error(kind);
                }
                if kind == ErrorKind::Connect {
                    // Do not spin on a target that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                None
            }
        }
    }
}

async fn closed_slot(mut slot: Slot, start: Instant, tickets: Arc<AtomicU64>) -> Stats {
    let plan = Arc::clone(&slot.plan);
    let measure_start = start + plan.warmup;
    let end = plan
        .requests
        .is_none()
        .then(|| measure_start + plan.duration);
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        let measured = now >= measure_start;
        if measured
            && let Some(n) = plan.requests
            && tickets.fetch_add(1, Ordering::Relaxed) >= n
        {
            break;
        }
        slot.once(now, measured).await;
    }
    slot.stats
}

/// Open loop: the timetable runs on its own OS thread, which sleeps with the kernel's
/// high-resolution timers (tokio's timer wheel has 1 ms granularity, which would add up to a
/// millisecond to every latency) and hands each request index to its slot when it is due.
fn dispatch(start: Instant, tt: OpenLoop, slots: Vec<tokio::sync::mpsc::UnboundedSender<u64>>) {
    for i in 0.. {
        if !tt.in_run(i) {
            break;
        }
        let due = start + tt.intended(i);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let k = (i % tt.slots) as usize;
        if slots[k].send(i).is_err() {
            break;
        }
    }
}

async fn open_slot(
    mut slot: Slot,
    start: Instant,
    tt: OpenLoop,
    mut due: tokio::sync::mpsc::UnboundedReceiver<u64>,
) -> Stats {
    let threshold = slot.plan.lag_threshold;
    let mut last_done = start;
    while let Some(i) = due.recv().await {
        let intended = start + tt.intended(i);
        // Still busy with the previous request when this one was due: the server held the slot.
        let busy_late = last_done > intended;
        let (lag, from) = lateness(intended, Instant::now(), threshold);
        let measured = tt.measured(i);
        if measured {
            slot.stats.record_lag(lag, threshold);
            if !busy_late && lag > threshold {
                // The slot was idle and still started late: the client itself fell behind.
                slot.stats.client_late_sends += 1;
            }
        }
        slot.once(from, measured).await;
        last_done = Instant::now();
    }
    slot.stats
}

/// Runs the plan and returns the report.
pub async fn run(plan: RunPlan) -> Result<Report, ClientError> {
    if plan.connections == 0 {
        return Err(ClientError::Config(
            "--connections must be at least 1".into(),
        ));
    }
    let streams = if plan.target.proto == crate::Proto::H1 {
        1
    } else {
        plan.streams.max(1)
    };
    if let Some(r) = plan.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(ClientError::Config(
            "--rate must be a positive number".into(),
        ));
    }
    let plan = Arc::new(RunPlan { streams, ..plan });
    let live = Arc::new(Live::default());
    let slots = (plan.connections * streams) as u64;
    let tickets = Arc::new(AtomicU64::new(0));
    let tt = plan
        .rate
        .map(|r| OpenLoop::new(r, slots, plan.warmup, plan.requests, plan.duration));

    let conns: Vec<Arc<Conn>> = (0..plan.connections)
        .map(|_| {
            Arc::new(Conn {
                target: Arc::clone(&plan.target),
                cur: Mutex::new(None),
            })
        })
        .collect();
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let progress = plan
        .progress
        .then(|| tokio::spawn(progress_line(Arc::clone(&live), start, plan.warmup)));
    let mut tasks = Vec::with_capacity(slots as usize);
    let mut dues = Vec::new();
    for _ in 0..slots {
        let slot = Slot {
            conn: Arc::clone(&conns[tasks.len() % conns.len()]),
            plan: Arc::clone(&plan),
            live: Arc::clone(&live),
            stats: Stats::new(),
        };
        tasks.push(match tt {
            Some(tt) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                dues.push(tx);
                tokio::spawn(open_slot(slot, start, tt, rx))
            }
            None => tokio::spawn(closed_slot(slot, start, Arc::clone(&tickets))),
        });
    }
    let dispatcher = tt.map(|tt| std::thread::spawn(move || dispatch(start, tt, dues)));
    let mut stats = Stats::new();
    for t in tasks {
        match t.await {
            Ok(s) => stats.merge(&s),
            Err(e) => return Err(ClientError::Config(format!("a load task failed: {e}"))),
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_start);
    if let Some(d) = dispatcher {
        let _ = d.join();
    }
    live.finished.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    Ok(Report::new(&plan, &stats, elapsed))
}

async fn progress_line(live: Arc<Live>, start: Instant, warmup: Duration) {
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last = 0;
    while !live.finished.load(Ordering::Relaxed) {
        tick.tick().await;
        if live.finished.load(Ordering::Relaxed) {
            break;
        }
        let done = live.done.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs();
        // The phase of the second that just ended.
        let phase = if start.elapsed().saturating_sub(Duration::from_secs(1)) < warmup {
            "warmup"
        } else {
            "run"
        };
        eprintln!(
            "[{secs:>4}s {phase:>6}] {done} requests, {} req/s, {} errors",
            done - last,
            live.errors.load(Ordering::Relaxed)
        );
        last = done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_timetable() {
        // 1000 req/s over 4 slots, 0.5 s warm-up, 1 s measured.
        let tt = OpenLoop::new(
            1000.0,
            4,
            Duration::from_millis(500),
            None,
            Duration::from_secs(1),
        );
        assert_eq!(tt.warmup_requests, 500);
        assert_eq!(tt.index(3, 2), 11);
        assert_eq!(tt.intended(11), Duration::from_millis(11));
        assert!(!tt.measured(499));
        assert!(tt.measured(500));
        assert!(tt.in_run(1499));
        assert!(!tt.in_run(1500));
        // Every index is sent by exactly one slot, in order within each slot.
        let mut sent: Vec<u64> = (0..4)
            .flat_map(|k| {
                (0..)
                    .map(move |j| tt.index(k, j))
                    .take_while(|i| tt.in_run(*i))
            })
            .collect();
        sent.sort_unstable();
        assert_eq!(sent, (0..1500).collect::<Vec<_>>());

        // Bounded by count: warm-up plus N.
        let tt = OpenLoop::new(
            200.0,
            3,
            Duration::from_millis(100),
            Some(50),
            Duration::from_secs(99),
        );
        assert_eq!(tt.warmup_requests, 20);
        assert!(tt.in_run(69));
        assert!(!tt.in_run(70));
        assert_eq!(
            (0..1000)
                .filter(|i| tt.in_run(*i) && tt.measured(*i))
                .count(),
            50
        );
    }

    #[test]
    fn lateness_counts_stalls_from_the_intended_time() {
        let t0 = Instant::now();
        let thr = Duration::from_millis(1);
        // Timer slop: measured from the actual send.
        let sent = t0 + Duration::from_micros(300);
        assert_eq!(lateness(t0, sent, thr), (Duration::from_micros(300), sent));
        // A stall: measured from the intended time, so the wait counts as latency.
        let sent = t0 + Duration::from_millis(40);
        assert_eq!(lateness(t0, sent, thr), (Duration::from_millis(40), t0));
        // Early (cannot happen with sleep_until, but must not underflow).
        assert_eq!(lateness(sent, t0, thr), (Duration::ZERO, t0));

        let mut s = Stats::new();
        for lag_ms in [0, 2, 5, 0] {
            s.record_lag(Duration::from_millis(lag_ms), thr);
        }
        assert_eq!(s.late_sends, 2);
        assert_eq!(s.max_lag_us, 5000);
    }
}
