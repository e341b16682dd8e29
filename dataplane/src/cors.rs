//! Permissive CORS on the invocation path router, as NVCF's invocation service does with tower-http's
//! `CorsLayer::very_permissive()` (nvcf-api.md §6.2): preflights are answered by the gateway itself
//! (no credential needed), mirroring the origin, method and headers asked for, cached for a day;
//! actual responses mirror the origin and allow credentials. Host-routed calls get none of this:
//! there the function's own server answers `OPTIONS`.

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::headers::RequestHeaders;

/// How long browsers may cache a preflight answer (NVCF: 86400 s).
const MAX_AGE: &str = "86400";
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// The preflight answer, when `method`/`headers` are a CORS preflight (OPTIONS with `Origin` and
/// `Access-Control-Request-Method`).
pub(crate) fn preflight(method: &Method, headers: RequestHeaders<'_>) -> Option<Response<Body>> {
    if method != Method::OPTIONS {
        return None;
    }
    let origin = headers.value(&header::ORIGIN)?;
    let requested = headers.value(&header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, requested);
    if let Some(asked) = headers.value(&header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    h.insert(header::VARY, HeaderValue::from_static(VARY));
    Some(resp)
}

/// Adds the CORS headers of an actual response to a request that came with `origin`.
pub(crate) fn decorate(origin: Option<HeaderValue>, resp: &mut Response<Body>) {
    let Some(origin) = origin else { return };
    // What is set or joined here must see the worker's own value.
    crate::fields::materialize_if_named(
        resp,
        &[
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "vary",
        ],
    );
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn preflight_mirrors_what_was_asked() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        assert!(preflight(&Method::POST, RequestHeaders::map(&h)).is_none());
        let r = preflight(&Method::OPTIONS, RequestHeaders::map(&h)).expect("preflight");
        let g = |n| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            g(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "https://app.example"
        );
        assert_eq!(g(header::ACCESS_CONTROL_ALLOW_METHODS), "POST");
        assert_eq!(
            g(header::ACCESS_CONTROL_ALLOW_HEADERS),
            "authorization, content-type"
        );
        assert_eq!(g(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "true");
        assert_eq!(g(header::ACCESS_CONTROL_MAX_AGE), "86400");
        h.remove(header::ACCESS_CONTROL_REQUEST_METHOD);
        assert!(
            preflight(&Method::OPTIONS, RequestHeaders::map(&h)).is_none(),
            "a plain OPTIONS is not a preflight"
        );
    }
}
