//! Cheap clock readings for the per-call path. A call used to read the clock nine times; a
//! precise reading (`Instant::now`, `SystemTime::now`) costs about 30 ns on a virtual machine's
//! TSC clock (40–60 ns on a busy one). Where a few milliseconds do not matter (the age of an idle
//! worker connection, the second of a `date` line) the kernel's coarse clocks answer in about
//! 8 ns, and the access line's wall time is derived from the monotonic reading that gave its
//! latency (`benches/clock.rs`).

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime};

use rustix::time::{ClockId, clock_gettime};

/// Milliseconds on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): it advances
/// once a scheduler tick (1–10 ms) and never goes back. For ages measured in seconds.
pub(crate) fn coarse_millis() -> u64 {
    let t = clock_gettime(ClockId::MonotonicCoarse);
    // A monotonic clock's reading is never negative.
    u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Whole seconds since the Unix epoch on the kernel's coarse wall clock
/// (`CLOCK_REALTIME_COARSE`, at most a tick behind the precise one). Zero before 1970.
pub(crate) fn coarse_unix_secs() -> u64 {
    u64::try_from(clock_gettime(ClockId::RealtimeCoarse).tv_sec).unwrap_or(0)
}

/// How long a thread goes on deriving wall time from one pair of readings: a stepped wall
/// clock (an operator's `date -s`, NTP's first sync) shows within this. Between steps both
/// clocks run at the same (slewed) rate, so nothing drifts meanwhile.
const RECALIBRATE: Duration = Duration::from_secs(1);

thread_local! {
    /// The thread's last precise pair of readings: (monotonic, wall).
    static CALIBRATION: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// The wall time at `now`, a monotonic reading already taken: the thread's last wall reading
/// plus the monotonic time since, with a fresh wall reading at most once a [`RECALIBRATE`].
pub(crate) fn wall_at(now: Instant) -> SystemTime {
    if let Some((mono, wall)) = CALIBRATION.get()
        && let Some(since) = now.checked_duration_since(mono)
        && since < RECALIBRATE
    {
        return wall + since;
    }
    let wall = SystemTime::now();
    CALIBRATION.set(Some((now, wall)));
    wall
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_agree_with_the_precise_ones() {
        let precise = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let coarse = coarse_unix_secs();
        assert!(coarse.abs_diff(precise) <= 1, "{coarse} vs {precise}");

        let a = coarse_millis();
        std::thread::sleep(Duration::from_millis(30));
        let b = coarse_millis();
        // A tick is at most 10 ms (HZ=100) on any kernel this runs on.
        assert!((20..1000).contains(&(b - a)), "{a} → {b}");
    }

    #[test]
    fn wall_time_follows_the_monotonic_reading() {
        let now = Instant::now();
        // Calibrated at a later monotonic time, so that the reading at `now` (earlier than
        // that) must take a fresh wall reading rather than subtract: the test starts from a
        // known calibration whatever ran on this thread before.
        let _ = wall_at(now + Duration::from_secs(10));
        let first = wall_at(now);
        let gap = SystemTime::now()
            .duration_since(first)
            .unwrap_or_else(|e| e.duration());
        assert!(gap < Duration::from_millis(50), "{gap:?}");
        // Later readings within the second are the first plus the monotonic time between.
        let later = now + Duration::from_millis(250);
        assert_eq!(wall_at(later), first + Duration::from_millis(250));
    }

    #[test]
    fn wall_time_is_read_again_after_a_second() {
        let now = Instant::now();
        let first = wall_at(now);
        let much_later = now + Duration::from_secs(5);
        // Recalibrated: the wall clock's own reading (now-ish), not first + 5 s.
        let again = wall_at(much_later);
        let off = again.duration_since(first).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(1), "{off:?}");
    }
}
