//! `builtin/saxpy`: `y = a·x + y` over f32 vectors.
//!
//! * JSON: `{"a": number, "x": [numbers], "y": [numbers]}` (x and y of equal length) answered
//!   `{"y": [...]}`.
//! * `Content-Type: application/octet-stream`: `a`, then the `n` values of `x`, then the `n` of
//!   `y`, all little-endian f32 (so `4 + 8n` bytes), answered as the `n` result values,
//!   little-endian f32, `application/octet-stream`.

use super::{
    Body, Ctx, Invocation, RuntimeError, f32s_from_le, f32s_to_le, full, is_octet_stream,
    json_field, json_object, json_response, offload, read_body,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::time::Instant;

/// `(a, x, y)` of a body.
type Args = (f32, Vec<f32>, Vec<f32>);

fn parse_json(body: &[u8]) -> Result<Args, RuntimeError> {
    let mut o = json_object(body)?;
    let a: f32 = json_field(&mut o, "a", "a number")?
        .ok_or_else(|| RuntimeError::BadRequest("`a` is required".into()))?;
    let x: Vec<f32> = json_field(&mut o, "x", "an array of numbers")?
        .ok_or_else(|| RuntimeError::BadRequest("`x` is required".into()))?;
    let y: Vec<f32> = json_field(&mut o, "y", "an array of numbers")?
        .ok_or_else(|| RuntimeError::BadRequest("`y` is required".into()))?;
    if x.len() != y.len() {
        return Err(RuntimeError::BadRequest(format!(
            "`x` and `y` must have the same length (x has {}, y has {})",
            x.len(),
            y.len()
        )));
    }
    Ok((a, x, y))
}

fn parse_binary(body: &[u8]) -> Result<Args, RuntimeError> {
    if body.len() < 4 || !(body.len() - 4).is_multiple_of(8) {
        return Err(RuntimeError::BadRequest(format!(
            "an application/octet-stream saxpy body is `a` then `x` then `y` as little-endian f32, \
             4 + 8n bytes for vectors of n values; got {} bytes",
            body.len()
        )));
    }
    let n = (body.len() - 4) / 8;
    let a = f32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let x = f32s_from_le(&body[4..4 + 4 * n]);
    let y = f32s_from_le(&body[4 + 4 * n..]);
    Ok((a, x, y))
}

/// Answers a saxpy request.
pub async fn serve(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    let binary = is_octet_stream(req.headers());
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, ctx.cfg.max_body_bytes).await?;
    let (a, x, y) = offload(body.len(), move || {
        if binary {
            parse_binary(&body)
        } else {
            parse_json(&body)
        }
    })
    .await?;
    let arrived = Instant::now();
    let out = ctx
        .exec
        .run(&inv.metrics, "saxpy", Some(arrived), move |b| {
            b.saxpy(a, &x, &y)
        })
        .await?;
    if binary {
        return Ok(full(
            StatusCode::OK,
            "application/octet-stream",
            f32s_to_le(&out),
        ));
    }
    #[derive(serde::Serialize)]
    struct Answer {
        y: Vec<f32>,
    }
    json_response(out.len() * 8, Answer { y: out }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_binary_forms() {
        let (a, x, y) = parse_json(br#"{"a":2,"x":[1,2],"y":[3,4]}"#).expect("ok");
        assert_eq!((a, x, y), (2.0, vec![1.0, 2.0], vec![3.0, 4.0]));
        let mut bin = f32s_to_le(&[2.0]);
        bin.extend(f32s_to_le(&[1.0, 2.0, 3.0, 4.0]));
        assert_eq!(
            parse_binary(&bin).expect("ok"),
            (2.0, vec![1.0, 2.0], vec![3.0, 4.0])
        );
        assert_eq!(
            parse_binary(&f32s_to_le(&[5.0])).expect("n = 0").1,
            Vec::<f32>::new()
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"a":2,"x":[1],"y":[3,4]}"#,
                "same length (x has 1, y has 2)",
            ),
            (br#"{"a":"2","x":[1],"y":[3]}"#, "`a` must be a number"),
            (
                br#"{"a":2,"x":[1,"b"],"y":[3,4]}"#,
                "`x` must be an array of numbers",
            ),
            (br#"{"a":2,"y":[3]}"#, "`x` is required"),
            (br#"{"a":2,"#, "malformed JSON"),
        ];
        for (body, want) in cases {
            let e = parse_json(body).expect_err(want);
            assert!(e.to_string().contains(want), "{e}");
        }
        let e = parse_binary(&[0u8; 13]).expect_err("13 bytes");
        assert!(e.to_string().contains("got 13 bytes"), "{e}");
        assert!(parse_binary(&[0u8; 3]).is_err());
    }
}
