//! Log output. Lines go into per-thread buffers that a flush thread writes to stdout every
//! [`FLUSH_EVERY`], or as soon as [`BATCH_BYTES`] wait, like nginx's `access_log … buffer=
//! flush=`: under load one `writev(2)` carries many lines, no line costs a hand-off to another
//! thread, and the thread that logs never writes unless the flush thread has fallen
//! [`BACKLOG_BYTES`] behind (a stuck stdout then holds up the loggers, as it must, rather than
//! memory growing without bound). The guard [`init`] returns writes out what is left when the
//! process ends.
//!
//! Each logging thread gathers its lines in a stage of its own (access lines are formatted
//! straight into it); a stage of [`STAGE_BYTES`] moves whole, as a buffer and not as a copy, to
//! the queue of buffers the flush thread writes (it takes what is staged on every tick too), and
//! the thread goes on in an emptied buffer from a pool. With two runtime threads logging into one
//! buffer, its lock and the cache lines of its end went back and forth between the cores on every
//! line (the log cost about 1 µs a call more than with one thread, docs/performance.md); copying
//! each stage into a shared batch cost another 300 instructions a line and streamed every line
//! through the cache twice. Lines of one thread stay in order; lines of different threads
//! interleave a stage at a time.
//!
//! Batches are large because a write's cost is mostly per call, not per byte: appending to a log
//! file at an access-log rate (one write every few milliseconds) measured 0.8–1.7 µs per line in
//! 32 KiB writes and 0.5 µs in 256 KiB ones on the benchmark machine (docs/performance.md), so
//! the queued stages go out together, in one vectored write.

use std::cell::RefCell;
use std::io::{self, IoSlice, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Queued bytes that wake the flush thread before its tick: at 25k lines a second (about
/// 8 MB/s) the [`FLUSH_EVERY`] tick comes first.
const BATCH_BYTES: usize = 1024 * 1024;
/// Queued bytes past which a logging thread writes the queue itself.
const BACKLOG_BYTES: usize = 4 * BATCH_BYTES;
/// Longest a line waits.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Staged bytes that move to the queue at once.
const STAGE_BYTES: usize = 32 * 1024;
/// A stage's room: the line that crosses [`STAGE_BYTES`] fits without growing it.
const STAGE_ROOM: usize = STAGE_BYTES + 8 * 1024;
/// Emptied buffers kept for reuse (a backlog's worth); more, or larger ones, are freed.
const POOL_BUFFERS: usize = BACKLOG_BYTES / STAGE_BYTES;
/// Buffers handed to one `writev(2)` (under Linux's `IOV_MAX`).
const WRITE_SLICES: usize = 256;

/// One thread's lines not yet queued.
type Stage = Arc<Mutex<Vec<u8>>>;

thread_local! {
    /// This thread's stage for each log (one in the process; tests make several), by the id of
    /// its [`Shared`].
    static STAGES: RefCell<Vec<(u64, Stage)>> = const { RefCell::new(Vec::new()) };
}

/// Tells logs apart in [`STAGES`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Where batches go (stdout; a test's collector).
type Out = Box<dyn Write + Send>;

/// Whole-line buffers waiting to be written, in the order they were filled.
#[derive(Debug, Default)]
struct Queue {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

struct Shared {
    /// Its key in the threads' [`STAGES`].
    id: u64,
    /// Filled stages (and a flush's partial ones), oldest first.
    queue: Mutex<Queue>,
    /// Emptied buffers for the next stages.
    pool: Mutex<Vec<Vec<u8>>>,
    /// Locked before the queue is released, so that batches go out in the order they were queued.
    out: Mutex<Out>,
    /// Whether a flush thread writes the batches (else whoever fills one writes it).
    flusher: AtomicBool,
    /// A batch is full: set by the logger that filled it, cleared by the flush thread.
    full: Mutex<bool>,
    /// Wakes the flush thread when `full` is set.
    wake: Condvar,
    /// Every logging thread's stage, queued on each flush.
    stages: Mutex<Vec<Stage>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new(Box::new(io::stdout()))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Locks `m`; a panic mid-append leaves at worst a partial line: keep logging.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `buffers` to `out` whole, many per `writev(2)`.
fn write_all_buffers(out: &mut dyn Write, buffers: &[Vec<u8>]) -> io::Result<()> {
    let mut rest = buffers;
    while !rest.is_empty() {
        let take = rest.len().min(WRITE_SLICES);
        let mut slices: Vec<IoSlice<'_>> = rest[..take].iter().map(|b| IoSlice::new(b)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match out.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        rest = &rest[take..];
    }
    Ok(())
}

impl Shared {
    fn new(out: Out) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::default(),
            pool: Mutex::default(),
            out: Mutex::new(out),
            flusher: AtomicBool::new(false),
            full: Mutex::new(false),
            wake: Condvar::new(),
            stages: Mutex::default(),
        }
    }

    /// An empty buffer for a stage: a used one when there is one.
    fn empty_buffer(&self) -> Vec<u8> {
        lock(&self.pool)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(STAGE_ROOM))
    }

    /// Writes out what `queue` holds.
    fn write_out(&self, mut queue: MutexGuard<'_, Queue>) {
        if queue.buffers.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut *queue);
        let mut out = lock(&self.out);
        drop(queue);
        // Nowhere to report a failed log write.
        let _ = write_all_buffers(&mut **out, &batch.buffers);
        let _ = out.flush();
        drop(out);
        let mut pool = lock(&self.pool);
        for mut buffer in batch.buffers {
            if pool.len() < POOL_BUFFERS && buffer.capacity() <= 2 * STAGE_ROOM {
                buffer.clear();
                pool.push(buffer);
            }
        }
    }

    /// Writes out what is staged and queued.
    ///
    /// Locks are taken in one order everywhere (the list of stages, a stage, the queue), and a
    /// stage is queued under its own lock, so one thread's lines stay in order.
    fn flush(&self) {
        let mut stages = lock(&self.stages);
        for stage in stages.iter() {
            let mut staged = lock(stage);
            if !staged.is_empty() {
                let lines = std::mem::replace(&mut *staged, self.empty_buffer());
                lock(&self.queue).push(lines);
            }
        }
        // A stage only this list holds belonged to a thread that has ended, and is empty now.
        stages.retain(|stage| Arc::strong_count(stage) > 1);
        drop(stages);
        self.write_out(lock(&self.queue));
    }

    /// Adds whole lines, which `write` appends to the buffer it is given, to this thread's stage,
    /// and queues a full stage. A thread whose stages are gone (a line logged while its
    /// thread-locals are torn down) queues its lines alone.
    fn append_with(&self, write: &mut dyn FnMut(&mut Vec<u8>)) {
        let staged = STAGES
            .try_with(|stages| match stages.try_borrow_mut() {
                Ok(mut stages) => {
                    self.stage(&mut stages, write);
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        if !staged {
            let mut lines = Vec::new();
            write(&mut lines);
            self.enqueue(lines);
        }
    }

    /// Adds `bytes`, whole lines, as [`Self::append_with`] does.
    fn append(&self, bytes: &[u8]) {
        self.append_with(&mut |buf| buf.extend_from_slice(bytes));
    }

    /// Has `write` add to this thread's stage among `stages`, made and registered at its first
    /// line.
    fn stage(&self, stages: &mut Vec<(u64, Stage)>, write: &mut dyn FnMut(&mut Vec<u8>)) {
        let stage = match stages.iter().position(|(id, _)| *id == self.id) {
            Some(i) => &stages[i].1,
            None => {
                // Stages of logs that are gone go with the first line for a new one.
                stages.retain(|(_, stage)| Arc::strong_count(stage) > 1);
                let stage = Stage::new(Mutex::new(self.empty_buffer()));
                lock(&self.stages).push(Arc::clone(&stage));
                stages.push((self.id, stage));
                &stages[stages.len() - 1].1
            }
        };
        let mut staged = lock(stage);
        write(&mut staged);
        if staged.len() >= STAGE_BYTES {
            let lines = std::mem::replace(&mut *staged, self.empty_buffer());
            self.enqueue(lines);
        }
    }

    /// Queues whole lines; a full batch wakes the flush thread, or is written here when there is
    /// none or it is [`BACKLOG_BYTES`] behind.
    fn enqueue(&self, lines: Vec<u8>) {
        if lines.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        queue.push(lines);
        let bytes = queue.bytes;
        if bytes < BATCH_BYTES {
            return;
        }
        if self.flusher.load(Ordering::Relaxed) && bytes < BACKLOG_BYTES {
            drop(queue);
            let mut full = lock(&self.full);
            if !*full {
                *full = true;
                self.wake.notify_one();
            }
        } else {
            self.write_out(queue);
        }
    }

    /// The flush thread: writes the batch every [`FLUSH_EVERY`], or when a logger filled it,
    /// until `shared` is gone.
    fn flush_loop(shared: &std::sync::Weak<Self>) {
        while let Some(this) = shared.upgrade() {
            this.flusher.store(true, Ordering::Relaxed);
            {
                let full = lock(&this.full);
                let (mut full, _) = this
                    .wake
                    .wait_timeout_while(full, FLUSH_EVERY, |full| !*full)
                    .unwrap_or_else(PoisonError::into_inner);
                *full = false;
            }
            this.flush();
        }
    }
}

impl Queue {
    fn push(&mut self, lines: Vec<u8>) {
        self.bytes += lines.len();
        self.buffers.push(lines);
    }
}

/// The `MakeWriter` of the subscriber.
#[derive(Debug, Clone, Default)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// One event's writer: appends to the thread's stage.
#[derive(Debug)]
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.shared.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
        }
    }
}

/// The access log's way into the same stages (`dataplane::access::set_sink`).
struct AccessSink(Arc<Shared>);

impl dataplane::access::Sink for AccessSink {
    fn append_with(&self, write: &mut dyn FnMut(&mut Vec<u8>)) {
        self.0.append_with(write);
    }
}

/// Writes out what is buffered when dropped (hold it for the life of the process).
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.flush();
    }
}

/// Installs the subscriber with `filter` (an `EnvFilter` directive); colours only when stdout is a
/// terminal. Starts the thread that writes the batches.
pub fn init(filter: &str) -> FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = Batched::default();
    let shared = Arc::clone(&writer.shared);
    let ticker = Arc::downgrade(&writer.shared);
    // A plain thread: it must flush even while the async runtime is busy or stuck.
    let _ = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || Shared::flush_loop(&ticker));
    let ansi = io::stdout().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        .init();
    if !ansi {
        // Access lines skip the formatter (same text; a terminal gets tracing's colours instead).
        // Set after the subscriber, whose `access` filter the sink reads once.
        dataplane::access::set_sink(Box::new(AccessSink(Arc::clone(&shared))));
    }
    FlushGuard { shared }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what is written out.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);

    impl Write for Collected {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_gather_until_the_batch_size_and_buffers_are_reused() {
        let out = Collected::default();
        let b = Batched {
            shared: Arc::new(Shared::new(Box::new(out.clone()))),
        };
        b.make_writer().write_all(b"one line\n").expect("write");
        assert!(
            lock(&b.shared.queue).buffers.is_empty(),
            "a line waits in its stage"
        );
        assert!(
            lock(&out.0).is_empty(),
            "nothing written before a batch is full"
        );
        // A batch's worth of stages goes out together and leaves the queue empty.
        let mut line = vec![b'x'; STAGE_BYTES - 1];
        line.push(b'\n');
        let stages = BATCH_BYTES / STAGE_BYTES;
        for _ in 0..stages {
            b.make_writer().write_all(&line).expect("write");
        }
        assert!(lock(&b.shared.queue).buffers.is_empty());
        assert_eq!(lock(&out.0).len(), stages * STAGE_BYTES + 9);
        assert!(lock(&out.0).starts_with(b"one line\nxxx"));
        // The written buffers come back, emptied, and the next stages are made of them.
        let pooled: Vec<*const u8> = lock(&b.shared.pool).iter().map(|b| b.as_ptr()).collect();
        assert_eq!(pooled.len(), stages);
        assert!(
            lock(&b.shared.pool)
                .iter()
                .all(|b| b.is_empty() && b.capacity() >= STAGE_ROOM)
        );
        b.make_writer().write_all(&line).expect("write");
        assert_eq!(lock(&b.shared.pool).len(), stages - 1);
        let staged = lock(&lock(&b.shared.stages)[0]).as_ptr();
        assert!(pooled.contains(&staged), "the next stage is a used buffer");
        b.make_writer().write_all(b"two\n").expect("write");
        b.shared.flush();
        assert!(lock(&out.0).ends_with(b"x\ntwo\n"));
        // A buffer grown past a stage's size is freed, not kept.
        b.make_writer()
            .write_all(&vec![b'y'; BACKLOG_BYTES])
            .expect("write");
        assert!(
            lock(&b.shared.pool)
                .iter()
                .all(|b| b.capacity() <= 2 * STAGE_ROOM)
        );
    }

    #[test]
    fn with_a_flush_thread_a_full_batch_wakes_it_and_a_backlog_is_written_in_place() {
        let out = Collected::default();
        let shared = Shared::new(Box::new(out.clone()));
        shared.flusher.store(true, Ordering::Relaxed);
        shared.append(&vec![b'a'; BATCH_BYTES]);
        assert!(lock(&shared.stages)[0].lock().expect("stage").is_empty());
        assert!(
            lock(&out.0).is_empty(),
            "the logger leaves the write to the flush thread"
        );
        assert!(*lock(&shared.full), "and wakes it");
        // The flush thread has not come: past the backlog the logger writes itself.
        shared.append(&vec![b'b'; BACKLOG_BYTES]);
        assert_eq!(lock(&out.0).len(), BATCH_BYTES + BACKLOG_BYTES);
        assert!(lock(&shared.queue).buffers.is_empty());
    }

    #[test]
    fn each_thread_stages_its_lines_and_a_flush_takes_every_stage_in_order() {
        let out = Collected::default();
        let shared = Arc::new(Shared::new(Box::new(out.clone())));
        // A small line stays in the thread's stage; a stage's worth is queued.
        shared.append(b"main 1\n");
        assert!(lock(&shared.queue).buffers.is_empty());
        let line = [b'm'; 1023];
        for _ in 0..STAGE_BYTES / 1024 {
            shared.append(&line);
            shared.append(b"\n");
        }
        assert!(lock(&shared.queue).buffers[0].starts_with(b"main 1\nmmm"));
        assert!(lock(&out.0).is_empty());
        // Another thread's lines, logged and left when it ends, are not lost.
        let other = Arc::clone(&shared);
        std::thread::spawn(move || other.append(b"other\n"))
            .join()
            .expect("thread");
        shared.append(b"main 2\n");
        assert_eq!(lock(&shared.stages).len(), 2);
        shared.flush();
        let written = String::from_utf8(lock(&out.0).clone()).expect("utf-8");
        assert!(written.starts_with("main 1\nmmm"), "{written:.20}");
        // Stage by stage: this thread's lines, then the other's.
        assert!(written.ends_with("main 2\nother\n"), "{written:.20}");
        // The ended thread's stage is dropped once emptied; this thread's stays.
        assert_eq!(lock(&shared.stages).len(), 1);
        // A second log on the same thread gets a stage of its own.
        let out2 = Collected::default();
        let second = Shared::new(Box::new(out2.clone()));
        second.append(b"second\n");
        shared.append(b"first\n");
        second.flush();
        shared.flush();
        assert_eq!(&lock(&out2.0)[..], b"second\n");
        assert!(lock(&out.0).ends_with(b"other\nfirst\n"));
    }

    #[test]
    fn lines_written_into_the_stage_arrive_as_written() {
        let out = Collected::default();
        let shared = Shared::new(Box::new(out.clone()));
        for i in 0..3 {
            shared.append_with(&mut |buf| {
                buf.extend_from_slice(b"line ");
                buf.push(b'0' + i);
                buf.push(b'\n');
            });
        }
        shared.flush();
        assert_eq!(&lock(&out.0)[..], b"line 0\nline 1\nline 2\n");
    }

    /// Takes at most 1000 bytes a call, and only from the first buffer.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let n = bytes.len().min(1000);
            self.0.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_buffer_is_written_whole_whatever_each_write_takes() {
        let buffers: Vec<Vec<u8>> = (0..WRITE_SLICES + 7)
            .map(|i| vec![b'a' + (i % 26) as u8; 1 + i * 13 % 2500])
            .collect();
        let mut out = Trickle(Vec::new());
        write_all_buffers(&mut out, &buffers).expect("written");
        assert_eq!(out.0, buffers.concat());
    }

    #[test]
    fn a_line_logged_while_a_thread_ends_is_kept() {
        /// Logs when the thread's locals are torn down (after its stages, or before).
        struct LogsOnDrop(Arc<Shared>);
        impl Drop for LogsOnDrop {
            fn drop(&mut self) {
                self.0.append(b"at exit\n");
            }
        }
        thread_local! {
            static GUARD: RefCell<Option<LogsOnDrop>> = const { RefCell::new(None) };
        }
        let out = Collected::default();
        let shared = Arc::new(Shared::new(Box::new(out.clone())));
        let other = Arc::clone(&shared);
        std::thread::spawn(move || {
            // Registered before the stages, so torn down after them.
            GUARD.with_borrow_mut(|g| *g = Some(LogsOnDrop(Arc::clone(&other))));
            other.append(b"running\n");
        })
        .join()
        .expect("no panic at thread exit");
        shared.flush();
        let written = String::from_utf8(lock(&out.0).clone()).expect("utf-8");
        assert!(written.contains("running\n"), "{written}");
        assert!(written.contains("at exit\n"), "{written}");
    }

    #[test]
    fn the_flush_thread_writes_batches_and_ends_with_the_log() {
        let out = Collected::default();
        let shared = Arc::new(Shared::new(Box::new(out.clone())));
        let weak = Arc::downgrade(&shared);
        let thread = std::thread::spawn(move || Shared::flush_loop(&weak));
        shared.append(b"one\n");
        shared.append(&vec![b'x'; BATCH_BYTES]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&out.0).len() < BATCH_BYTES + 4 {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(lock(&out.0).starts_with(b"one\nxxx"));
        drop(shared);
        thread
            .join()
            .expect("the flush thread ends once the log is gone");
    }
}
