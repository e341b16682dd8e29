//! Log output. Lines go into one shared buffer that is written to stdout when it holds
//! [`BATCH_BYTES`] or every [`FLUSH_EVERY`], like nginx's `access_log … buffer= flush=`: under
//! load one `write(2)` carries many lines, and no line costs a hand-off to another thread. The
//! guard [`init`] returns writes out what is left when the process ends.
//!
//! Batches are large because a write's cost is mostly per call, not per byte: appending to a log
//! file at an access-log rate (one write every few milliseconds) measured 0.8–1.7 µs per line in
//! 32 KiB writes and 0.5 µs in 256 KiB ones on the benchmark machine (docs/performance.md). Two
//! buffers take turns, so a batch never lands in freshly allocated memory.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Buffered bytes that trigger a write at once: at 25k lines a second (about 8 MB/s) the
/// [`FLUSH_EVERY`] tick writes first.
const BATCH_BYTES: usize = 1024 * 1024;
/// Room for the line that crosses [`BATCH_BYTES`].
const BATCH_ROOM: usize = BATCH_BYTES + 64 * 1024;
/// Longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Where batches go (stdout; a test's collector).
type Out = Box<dyn Write + Send>;

struct Shared {
    /// The batch being filled.
    buf: Mutex<Vec<u8>>,
    /// The other buffer, empty, when no batch is being written out.
    spare: Mutex<Vec<u8>>,
    /// Locked before a batch is released, so that batches go out in the order they were filled.
    out: Mutex<Out>,
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

impl Shared {
    fn new(out: Out) -> Self {
        Self {
            buf: Mutex::default(),
            spare: Mutex::default(),
            out: Mutex::new(out),
        }
    }

    /// Writes out the batch in `buf`.
    fn write_out(&self, mut buf: MutexGuard<'_, Vec<u8>>) {
        if buf.is_empty() {
            return;
        }
        // The writer of the previous batch has handed its buffer back unless it is still
        // writing; only then does the next batch start in a new one.
        let mut next = std::mem::take(&mut *lock(&self.spare));
        if next.capacity() == 0 {
            next.reserve_exact(BATCH_ROOM);
        }
        let mut data = std::mem::replace(&mut *buf, next);
        let mut out = lock(&self.out);
        drop(buf);
        // Nowhere to report a failed log write.
        let _ = out.write_all(&data);
        let _ = out.flush();
        drop(out);
        data.clear();
        *lock(&self.spare) = data;
    }

    fn flush(&self) {
        self.write_out(lock(&self.buf));
    }

    /// Adds whole lines to the batch, writing it out when full.
    fn append(&self, bytes: &[u8]) {
        let mut buf = lock(&self.buf);
        buf.extend_from_slice(bytes);
        if buf.len() >= BATCH_BYTES {
            self.write_out(buf);
        }
    }
}

/// The `MakeWriter` of the subscriber.
#[derive(Debug, Clone, Default)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// One event's writer: appends to the shared buffer.
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
/// terminal. Starts the thread that flushes the buffer every [`FLUSH_EVERY`].
pub fn init(filter: &str) -> FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = Batched::default();
    let shared = Arc::clone(&writer.shared);
    let ticker = Arc::downgrade(&writer.shared);
    // A plain thread: it must flush even while the async runtime is busy or stuck.
    let _ = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            while let Some(shared) = ticker.upgrade() {
                shared.flush();
                drop(shared);
                std::thread::sleep(FLUSH_EVERY);
            }
        });
    let ansi = io::stdout().is_terminal();
    if !ansi {
        // Access lines skip the formatter (same text; a terminal gets tracing's colours instead).
        let sink = Arc::clone(&shared);
        dataplane::access::set_sink(Box::new(move |line| sink.append(line)));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        .init();
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
    fn lines_gather_until_the_batch_size_and_the_buffers_take_turns() {
        let out = Collected::default();
        let b = Batched {
            shared: Arc::new(Shared::new(Box::new(out.clone()))),
        };
        b.make_writer().write_all(b"one line\n").expect("write");
        assert_eq!(&lock(&b.shared.buf)[..], b"one line\n");
        assert!(
            lock(&out.0).is_empty(),
            "nothing written before a batch is full"
        );
        // A batch's worth goes out and leaves the buffer empty.
        let big = vec![b'x'; BATCH_BYTES];
        b.make_writer().write_all(&big).expect("write");
        assert!(lock(&b.shared.buf).is_empty());
        assert_eq!(lock(&out.0).len(), BATCH_BYTES + 9);
        // The written buffer comes back, emptied, for the batch after the next.
        let first = {
            let spare = lock(&b.shared.spare);
            assert!(spare.is_empty() && spare.capacity() >= BATCH_BYTES);
            spare.as_ptr()
        };
        b.make_writer().write_all(b"two\n").expect("write");
        b.shared.flush();
        assert_eq!(
            lock(&b.shared.buf).as_ptr(),
            first,
            "the spare is filled next"
        );
        assert!(lock(&out.0).ends_with(b"xtwo\n"));
    }
}
