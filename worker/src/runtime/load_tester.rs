//! `builtin/load-tester`: the request shape of NVIDIA's *Load Tester Supreme* sample.
//!
//! Body (JSON object; unknown fields ignored):
//!
//! | field | type | default | meaning |
//! |---|---|---|---|
//! | `message` | string | — | the text to repeat (required unless `size` is given) |
//! | `repeats` | integer ≥ 0 | 1 | how many times |
//! | `delay` | seconds, number ≥ 0 | 0 | wait before answering (plain) or between events (stream); at most `max-load-tester-delay` (60 s by default) |
//! | `size` | integer ≥ 0 | — | random alphanumeric text of this length instead of `message` (at most 64 MiB) |
//! | `stream` | bool | false | with `Accept: text/event-stream`, one SSE event per repeat |
//!
//! Plain answer: `text/plain`, the message repeated `repeats` times, built by the backend's
//! `repeat` kernel, sent after `delay`. Stream answer: `text/event-stream`, event `i` (`data:
//! <message>` then a blank line; a message with line breaks spans several `data:` lines) sent at
//! `i × delay` from the start, each flushed as it is produced. `stream: true` without that `Accept`
//! gets the plain answer. A stream holds at most [`MAX_STREAM_EVENTS`] events.

use super::{
    Body, BoxError, Ctx, Invocation, RuntimeError, full, json_field, json_object, read_body,
};
use crate::kernels::MAX_REPEAT_BYTES;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::time::{Duration, Instant};

/// Most events one stream sends (bounds a stream of an empty message, which `repeat`'s byte limit
/// does not).
pub const MAX_STREAM_EVENTS: u64 = 100_000;

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
struct Params {
    text: Text,
    repeats: u64,
    delay: Duration,
    stream: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Text {
    Message(String),
    Random(usize),
}

impl Text {
    fn len(&self) -> usize {
        match self {
            Self::Message(m) => m.len(),
            Self::Random(n) => *n,
        }
    }

    /// The message bytes (random text is generated here, on the blocking pool).
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Message(m) => m.as_bytes().to_vec(),
            Self::Random(n) => random_alphanumeric(*n),
        }
    }
}

fn parse(body: &[u8], max_delay: Duration) -> Result<Params, RuntimeError> {
    let mut o = json_object(body)?;
    let message: Option<String> = json_field(&mut o, "message", "a string")?;
    let size: Option<u64> = json_field(&mut o, "size", "a non-negative integer")?;
    let repeats: u64 = json_field(&mut o, "repeats", "a non-negative integer")?.unwrap_or(1);
    let delay: f64 = json_field(&mut o, "delay", "a number of seconds")?.unwrap_or(0.0);
    let stream: bool = json_field(&mut o, "stream", "a boolean")?.unwrap_or(false);
    if !delay.is_finite() || delay < 0.0 {
        return Err(RuntimeError::BadRequest(format!(
            "`delay` must be a non-negative number of seconds, got {delay}"
        )));
    }
    if delay > max_delay.as_secs_f64() {
        return Err(RuntimeError::BadRequest(format!(
            "`delay` of {delay} s exceeds this worker's limit of {} s",
            max_delay.as_secs_f64()
        )));
    }
    let text = match (size, message) {
        (Some(n), _) => {
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_REPEAT_BYTES)
                .ok_or_else(|| {
                    RuntimeError::BadRequest(format!(
                        "`size` must be at most {MAX_REPEAT_BYTES} bytes, got {n}"
                    ))
                })?;
            Text::Random(n)
        }
        (None, Some(m)) => Text::Message(m),
        (None, None) => {
            return Err(RuntimeError::BadRequest(
                "`message` is required (or `size` for random text)".into(),
            ));
        }
    };
    Ok(Params {
        text,
        repeats,
        delay: Duration::from_secs_f64(delay),
        stream,
    })
}

/// Random text of `n` characters from `[A-Za-z0-9]` (xorshift seeded from a v4 UUID: varied, not
/// secret).
fn random_alphanumeric(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = (uuid::Uuid::new_v4().as_u128() as u64) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

fn wants_event_stream(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// One SSE event carrying `text`: a `data:` line per line of text, then a blank line.
fn sse_event(text: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 8);
    for line in text.split(|b| *b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Answers a load-tester request.
pub async fn serve(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    let stream_wanted = wants_event_stream(&req);
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, ctx.cfg.max_body_bytes).await?;
    let p = parse(&body, ctx.cfg.max_load_tester_delay)?;
    let streaming = p.stream && stream_wanted;
    if streaming && p.repeats > MAX_STREAM_EVENTS {
        return Err(RuntimeError::BadRequest(format!(
            "a stream sends at most {MAX_STREAM_EVENTS} events; `repeats` is {}",
            p.repeats
        )));
    }
    let times = usize::try_from(p.repeats).map_err(|_| {
        RuntimeError::BadRequest(format!("`repeats` of {} is too large", p.repeats))
    })?;
    let unit = p.text.len();
    let text = p.text.clone();
    let arrived = Instant::now();
    let out = ctx
        .exec
        .run(&inv.metrics, "repeat", Some(arrived), move |b| {
            b.repeat(&text.bytes(), times)
        })
        .await?;
    if !streaming {
        tokio::time::sleep(p.delay).await;
        return Ok(full(StatusCode::OK, "text/plain; charset=utf-8", out));
    }
    let text = Bytes::from(out);
    let start = tokio::time::Instant::now();
    let delay = p.delay;
    let events = stream::unfold(0usize, move |i| {
        let text = text.clone();
        async move {
            if i >= times {
                return None;
            }
            tokio::time::sleep_until(start + delay * i as u32).await;
            let event = sse_event(&text[i * unit..(i + 1) * unit]);
            Some((Ok::<_, BoxError>(Frame::data(event)), i + 1))
        }
    });
    let mut resp = Response::new(StreamBody::new(events).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn parses_defaults_and_fields() {
        let p = parse(br#"{"message":"hi"}"#, MAX).expect("ok");
        assert_eq!(
            p,
            Params {
                text: Text::Message("hi".into()),
                repeats: 1,
                delay: Duration::ZERO,
                stream: false
            }
        );
        let p = parse(br#"{"size":5,"repeats":0,"delay":0.25,"stream":true}"#, MAX).expect("ok");
        assert_eq!(p.text, Text::Random(5));
        assert_eq!(
            (p.repeats, p.delay, p.stream),
            (0, Duration::from_millis(250), true)
        );
    }

    #[test]
    fn rejects_what_is_wrong_by_name() {
        let cases: [(&[u8], &str); 7] = [
            (br#"{"message":1}"#, "`message` must be a string"),
            (
                br#"{"message":"a","repeats":-1}"#,
                "`repeats` must be a non-negative integer",
            ),
            (br#"{"message":"a","repeats":"x"}"#, "`repeats` must be"),
            (
                br#"{"message":"a","delay":-1}"#,
                "`delay` must be a non-negative",
            ),
            (
                br#"{"message":"a","delay":61}"#,
                "exceeds this worker's limit",
            ),
            (br#"{"size":999999999999}"#, "`size` must be at most"),
            (br#"{}"#, "`message` is required"),
        ];
        for (body, want) in cases {
            let e = parse(body, MAX).expect_err(want);
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn random_text_is_alphanumeric() {
        let t = random_alphanumeric(1000);
        assert_eq!(t.len(), 1000);
        assert!(t.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(random_alphanumeric(32), random_alphanumeric(32));
    }

    #[test]
    fn events_split_lines() {
        assert_eq!(&sse_event(b"hi")[..], b"data: hi\n\n");
        assert_eq!(&sse_event(b"a\r\nb")[..], b"data: a\ndata: b\n\n");
        assert_eq!(&sse_event(b"")[..], b"data: \n\n");
    }
}
