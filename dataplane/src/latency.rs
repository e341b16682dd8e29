//! Fixed-bucket latency histograms for the two series every call records
//! (`gateway_request_duration_seconds`, `function_request_latency`), with one set of counters per
//! thread, summed and written in Prometheus's text format only when `/metrics` is scraped.
//!
//! Why not the `metrics` exporter's histograms: each of their samples goes into one lock-free
//! bucket that every serving thread writes (an epoch pin with its fence, and atomic adds on a
//! shared cache line), and an upkeep pass sorts the samples into buckets later. A same-round A/B
//! measured those two samples at about 0.7 µs of gateway CPU a call, 4% of throughput
//! (`docs/performance.md`, tenth round). Here a sample is two uncontended atomic updates in the
//! recording thread's own shard.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: sub-millisecond at the bottom (the gateway adds
/// tens of microseconds), up to a minute at the top (long invocations and polls). Every other
/// histogram of the process uses the same bounds ([`LATENCY_BUCKETS_SECONDS`]).
const BOUNDS_NANOS: [u64; 19] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// The bucket bounds in seconds, for the exporter's own histograms.
#[allow(clippy::cast_precision_loss)] // every bound is far below 2^53
pub const LATENCY_BUCKETS_SECONDS: [f64; BOUNDS_NANOS.len()] = {
    let mut out = [0.0; BOUNDS_NANOS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = BOUNDS_NANOS[i] as f64 / 1e9;
        i += 1;
    }
    out
};

/// Shards per histogram. Threads take shards in turn on their first sample, so up to this many
/// recording threads (the serving threads, then the runtime's others) never share one.
const SHARDS: usize = 16;

/// One thread's counters: a count per bucket (the last for samples over every bound) and the sum
/// of the samples in seconds, as `f64` bits. Aligned so that no two shards share a cache line, nor
/// its prefetched pair.
///
/// The sum is a float, as Prometheus's own client libraries keep it: a sum of nanoseconds in a
/// `u64` would wrap after 584 years of summed latency, which a gateway holding a thousand long
/// polls at a time sums in about seven months, and a wrapped sum reads as a counter reset.
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_seconds: AtomicU64,
}

/// One labelled series: a histogram of durations.
pub(crate) struct Histogram {
    shards: [Shard; SHARDS],
}

thread_local! {
    /// The calling thread's shard, taken on its first sample.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The next shard a thread takes.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard_index() -> usize {
    SHARD.with(|slot| {
        slot.get().unwrap_or_else(|| {
            let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            slot.set(Some(index));
            index
        })
    })
}

impl Histogram {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Shard {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_seconds: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    /// Counts one sample.
    pub(crate) fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // `le` buckets: a sample equal to a bound belongs to that bound's bucket.
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        let shard = &self.shards[shard_index()];
        // Relaxed: a scrape only needs each counter to be exact eventually, not ordered with
        // the others (Prometheus tolerates a sum that is a sample ahead of its count).
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        // One compare-and-swap: the shard is its thread's, so it does not loop.
        let _ = shard
            .sum_seconds
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }

    /// The counts per bucket (not cumulative) and the sum, over every shard.
    fn totals(&self) -> ([u64; BOUNDS_NANOS.len() + 1], f64) {
        let mut counts = [0u64; BOUNDS_NANOS.len() + 1];
        let mut sum = 0.0;
        for shard in &self.shards {
            for (total, bucket) in counts.iter_mut().zip(&shard.buckets) {
                *total = total.wrapping_add(bucket.load(Ordering::Relaxed));
            }
            sum += f64::from_bits(shard.sum_seconds.load(Ordering::Relaxed));
        }
        (counts, sum)
    }
}

/// A histogram metric: its name, its description and its series, one per label set. Series are
/// never removed (like the exporter's, which keep a version's series after it is undeployed), so
/// each is leaked once and recorded through a plain reference.
pub(crate) struct Family {
    name: &'static str,
    help: &'static str,
    /// By label text: a lookup per routing snapshot and version stays logarithmic.
    series: Mutex<BTreeMap<String, &'static Histogram>>,
}

impl Family {
    pub(crate) const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// The series of `labels` (name, value pairs, in the order they are written), made on first
    /// use. Called when a handle is made (a route's first answer, a routing snapshot), never per
    /// sample.
    pub(crate) fn series(&self, labels: &[(&str, &str)]) -> &'static Histogram {
        let mut text = String::new();
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let _ = write!(text, "{name}=\"");
            escape_label_value(&mut text, value);
            text.push('"');
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series
            .entry(text)
            .or_insert_with(|| Box::leak(Box::new(Histogram::new())))
    }

    /// Appends the family in Prometheus's text format (nothing while it has no series).
    fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() {
            return;
        }
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (labels, histogram) in series.iter() {
            // `_sum` and `_count` have `{…}` only with labels, as the exporter writes its series;
            // the bucket lines always have it, for `le`.
            let (braced, sep) = if labels.is_empty() {
                (String::new(), "")
            } else {
                (format!("{{{labels}}}"), ",")
            };
            let (counts, sum) = histogram.totals();
            let mut cumulative = 0u64;
            for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(counts) {
                cumulative = cumulative.wrapping_add(count);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative = cumulative.wrapping_add(counts[BOUNDS_NANOS.len()]);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(out, "{name}_sum{braced} {sum}");
            let _ = writeln!(out, "{name}_count{braced} {cumulative}");
        }
        out.push('\n');
    }
}

/// Prometheus's label value escaping: backslash, double quote and newline.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Time from request head to response head, by route.
pub(crate) static REQUEST_DURATION: Family = Family::new(
    crate::metrics::REQUEST_DURATION_SECONDS,
    "Time from receiving a request head to sending the response head (bodies stream afterwards). Label: route.",
);

/// Time from the invocation's request head to the worker's response head, by function version.
pub(crate) static FUNCTION_LATENCY: Family = Family::new(
    crate::metrics::FUNCTION_REQUEST_LATENCY,
    "Time from the invocation's request head to the worker's response head (NVIDIA's function.request.latency). Labels: function_id, function_version_id.",
);

/// Appends the gateway's own histograms to a Prometheus scrape, in the text format (`/metrics`
/// writes the exporter's metrics first, then these).
pub fn render(out: &mut String) {
    REQUEST_DURATION.render(out);
    FUNCTION_LATENCY.render(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family_text(family: &Family) -> String {
        let mut out = String::new();
        family.render(&mut out);
        out
    }

    #[test]
    fn samples_land_in_le_buckets_and_render_cumulatively() {
        let family = Family::new("t_seconds", "A test.");
        assert_eq!(family_text(&family), "", "no series, nothing written");
        let h = family.series(&[("route", "invocation")]);
        h.record(Duration::from_micros(50)); // equal to the first bound: its bucket
        h.record(Duration::from_micros(51));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(61)); // over every bound
        let text = family_text(&family);
        let line = |le: &str| format!("t_seconds_bucket{{route=\"invocation\",le=\"{le}\"}} ");
        for (le, n) in [
            ("0.00005", 1),
            ("0.0001", 2),
            ("0.0025", 2),
            ("0.005", 3),
            ("60", 3),
            ("+Inf", 4),
        ] {
            assert!(text.contains(&format!("{}{n}\n", line(le))), "{le}: {text}");
        }
        assert!(text.starts_with("# HELP t_seconds A test.\n# TYPE t_seconds histogram\n"));
        assert!(
            text.contains("t_seconds_count{route=\"invocation\"} 4\n"),
            "{text}"
        );
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("t_seconds_sum{route=\"invocation\"} "))
            .and_then(|v| v.parse().ok())
            .expect("a sum line");
        assert!((sum - 61.003_101).abs() < 1e-9, "{sum}");
        assert_eq!(text.matches("_bucket{").count(), BOUNDS_NANOS.len() + 1);
    }

    #[test]
    fn one_series_per_label_set_and_labels_are_escaped() {
        let family = Family::new("t", "h");
        let a = family.series(&[("k", "a\"b\\c\nd")]);
        let again = family.series(&[("k", "a\"b\\c\nd")]);
        assert!(std::ptr::eq(a, again));
        let b = family.series(&[]);
        assert!(!std::ptr::eq(a, b));
        b.record(Duration::ZERO);
        let text = family_text(&family);
        assert!(
            text.contains("t_count{k=\"a\\\"b\\\\c\\nd\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("t_bucket{le=\"0.00005\"} 1\n"), "{text}");
        assert!(text.contains("t_count 1\n"), "{text}");
        assert!(text.contains("t_sum 0\n"), "{text}");
    }

    #[test]
    fn threads_record_into_their_own_shards_and_every_sample_is_summed() {
        let family = Family::new("t", "h");
        let h = family.series(&[]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        h.record(Duration::from_micros(200));
                    }
                });
            }
        });
        let (counts, sum) = h.totals();
        assert_eq!(counts[2], 4000);
        assert_eq!(counts.iter().sum::<u64>(), 4000);
        assert!((sum - 0.8).abs() < 1e-9, "{sum}");
        let used = h
            .shards
            .iter()
            .filter(|s| s.buckets[2].load(Ordering::Relaxed) > 0)
            .count();
        assert!(used > 1, "four threads shared one shard");
    }

    #[test]
    fn bounds_in_seconds_match_the_nanosecond_bounds() {
        assert_eq!(LATENCY_BUCKETS_SECONDS[0], 0.00005);
        assert_eq!(LATENCY_BUCKETS_SECONDS[13], 1.0);
        assert_eq!(LATENCY_BUCKETS_SECONDS[18], 60.0);
        assert!(BOUNDS_NANOS.windows(2).all(|w| w[0] < w[1]));
    }
}
