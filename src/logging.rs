//! Log output. Lines go into one shared buffer that is written to stdout when it holds
//! [`BATCH_BYTES`] or every [`FLUSH_EVERY`], like nginx's `access_log … buffer= flush=`: under
//! load one `write(2)` carries many lines, and no line costs a hand-off to another thread. The
//! guard [`init`] returns writes out what is left when the process ends.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Buffered bytes that trigger a write at once.
const BATCH_BYTES: usize = 32 * 1024;
/// Longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic mid-append leaves at worst a partial line: keep logging.
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out `buf`'s contents; stdout is locked before the buffer is released so that
    /// batches reach stdout in the order they were filled.
    fn write_out(mut buf: MutexGuard<'_, Vec<u8>>) {
        if buf.is_empty() {
            return;
        }
        // The next batch starts with room for a whole batch: no regrowth line by line.
        let data = std::mem::replace(&mut *buf, Vec::with_capacity(BATCH_BYTES + 4096));
        let mut out = io::stdout().lock();
        drop(buf);
        // Nowhere to report a failed log write.
        let _ = out.write_all(&data);
        let _ = out.flush();
    }

    fn flush(&self) {
        Self::write_out(self.lock());
    }

    /// Adds whole lines to the batch, writing it out when full.
    fn append(&self, bytes: &[u8]) {
        let mut buf = self.lock();
        buf.extend_from_slice(bytes);
        if buf.len() >= BATCH_BYTES {
            Self::write_out(buf);
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

    #[test]
    fn lines_gather_until_the_batch_size() {
        let b = Batched::default();
        b.make_writer().write_all(b"one line\n").expect("write");
        assert_eq!(&b.shared.lock()[..], b"one line\n");
        // A batch's worth goes out (to the test's stdout) and leaves the buffer empty.
        let big = vec![b'x'; BATCH_BYTES];
        b.make_writer().write_all(&big).expect("write");
        assert!(b.shared.lock().is_empty());
    }
}
