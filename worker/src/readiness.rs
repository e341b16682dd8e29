//! Whether an assigned instance can serve: built-in images are ready as soon as they are assigned
//! (their kernels ship in the worker); any other image is an inference server the operator runs
//! beside the worker, ready once its health check answers the expected status.

use model::function::FunctionVersion;
use model::worker::InstanceState;
use std::time::Duration;

/// Built-in images this worker serves.
pub const BUILTIN_IMAGES: &[&str] = &[
    "builtin/echo",
    "builtin/load-tester",
    "builtin/saxpy",
    "builtin/mlp",
];

/// How an instance's readiness is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Known right away.
    Now(InstanceState, Option<String>),
    /// Probe `GET http://127.0.0.1:<port><uri>` and expect `status`.
    Probe {
        port: u16,
        uri: String,
        status: u16,
        timeout: Duration,
    },
}

/// Decides how to check a function version's instance.
pub fn check_for(f: &FunctionVersion) -> Check {
    let Some(image) = f.container_image.as_deref() else {
        return Check::Now(
            InstanceState::Failed,
            Some("only container-image functions can run on this worker (no helm or model-only functions)".into()),
        );
    };
    let image_name = image.split([':', '@']).next().unwrap_or(image);
    if image_name.starts_with("builtin/") {
        return if BUILTIN_IMAGES.contains(&image_name) {
            Check::Now(InstanceState::Ready, None)
        } else {
            Check::Now(
                InstanceState::Failed,
                Some(format!(
                    "unknown built-in image '{image_name}'; available: {}",
                    BUILTIN_IMAGES.join(", ")
                )),
            )
        };
    }
    Check::Probe {
        port: f.health.port,
        uri: f.health.uri.clone(),
        status: f.health.expected_status_code,
        timeout: iso_seconds(&f.health.timeout).unwrap_or(Duration::from_secs(10)),
    }
}

/// Seconds of a simple ISO-8601 duration (`PT10S`, `PT1M30S`, `P1D`).
pub fn iso_seconds(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut total = 0f64;
    if let Some(d) = days.strip_suffix('D') {
        total += d.parse::<f64>().ok()? * 86_400.0;
    } else if !days.is_empty() {
        return None;
    }
    let mut num = String::new();
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let v: f64 = num.parse().ok()?;
                total += v * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    num.is_empty().then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(iso_seconds("PT10S"), Some(Duration::from_secs(10)));
        assert_eq!(iso_seconds("PT1M30S"), Some(Duration::from_secs(90)));
        assert_eq!(iso_seconds("P1D"), Some(Duration::from_secs(86_400)));
        assert_eq!(iso_seconds("PT1.5S"), Some(Duration::from_millis(1500)));
        assert_eq!(iso_seconds("10s"), None);
    }
}
