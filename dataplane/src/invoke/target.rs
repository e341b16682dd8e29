//! The `target` step of the invocation path: which function (and version) a request names, and which
//! endpoint shape it uses. Pure functions over the method-free parts of the request.
//!
//! * Path router (`invocation.<gw>` or a plain host): `/v2/nvcf/pexec/functions/{fid}[/versions/{vid}]`,
//!   `/v2/nvcf/exec/functions/{fid}[/versions/{vid}]`, and the status polls
//!   `/v2/nvcf/{pexec,exec}/status/{id}`.
//! * Host-routed passthrough: `<fid>.invocation.<gw>` or `<vid>.<fid>.invocation.<gw>` (the version
//!   comes FIRST, as in NVCF's `tlb.rs`).
//! * `function-id` header (+ optional `function-version-id`, which must be a UUID when present).

use uuid::Uuid;

use crate::classify::InvocationKind;
use crate::error::GatewayError;
use crate::headers::RequestHeaders;
use crate::invoke::finish::Named;

/// How the request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `pexec`: the body goes to the version's `inferenceUrl` unchanged.
    Pexec,
    /// `exec`: the JSON-wrapped variant of pexec.
    Exec,
    /// Host-routed or `function-id` passthrough: the client's method, path and query.
    Passthrough,
}

/// What a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) endpoint: Endpoint,
    pub(crate) function_id: Uuid,
    pub(crate) version_id: Option<Uuid>,
}

/// What resolving a request gives: an invocation, or a status poll for a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    Invoke(Target),
    /// `GET /v2/nvcf/{pexec,exec}/status/{id}`.
    Status(String),
}

impl Resolved {
    /// What the access line names for it: the function (and version) of an invocation.
    pub(crate) fn named(&self) -> Option<Named> {
        match self {
            Self::Invoke(t) => Some(Named {
                function_id: t.function_id,
                version_id: t.version_id,
            }),
            Self::Status(_) => None,
        }
    }
}

/// Header naming the function in passthrough mode.
pub(crate) const FUNCTION_ID_HEADER: &str = "function-id";
/// [`FUNCTION_ID_HEADER`] prebuilt (classification looks it up on every request).
pub(crate) const FUNCTION_ID_NAME: http::HeaderName =
    http::HeaderName::from_static(FUNCTION_ID_HEADER);
/// Header naming the version in passthrough mode.
pub(crate) const FUNCTION_VERSION_ID_HEADER: &str = "function-version-id";
const FUNCTION_VERSION_ID_NAME: http::HeaderName =
    http::HeaderName::from_static(FUNCTION_VERSION_ID_HEADER);

/// Resolves the target of an invocation request classified as `kind`. `host` is the request's
/// host (port included or not), `path` its path.
pub(crate) fn resolve(
    kind: InvocationKind,
    host: Option<&str>,
    path: &str,
    headers: RequestHeaders<'_>,
) -> Result<Resolved, GatewayError> {
    match kind {
        InvocationKind::Path => resolve_path(host.unwrap_or_default(), path),
        InvocationKind::HostRouted => resolve_host(host.unwrap_or_default(), path),
        InvocationKind::FunctionIdHeader => resolve_headers(headers),
    }
}

fn no_route(host: &str, path: &str) -> GatewayError {
    GatewayError::NoRoute {
        host: host.to_owned(),
        path: path.to_owned(),
    }
}

/// A UUID in the hyphenated 36-character form NVCF uses (`try_parse` also takes braced and simple
/// forms). No allocation: the host-routed path tries a label that is usually not a UUID.
fn parse_uuid(value: &str) -> Option<Uuid> {
    (value.len() == 36)
        .then(|| Uuid::try_parse(value).ok())
        .flatten()
}

/// The UUID that is the first label of `labels`, and the labels after it. A UUID label is 36
/// bytes, so the dot is looked for there rather than searched for.
fn uuid_label(labels: &str) -> Option<(Uuid, &str)> {
    let (label, rest) = match labels.as_bytes().get(36) {
        // ASCII at 36: both slices fall on character boundaries.
        Some(b'.') => (labels.get(..36)?, labels.get(37..)?),
        None => (labels, ""),
        Some(_) => return None,
    };
    Some((parse_uuid(label)?, rest))
}

fn uuid(what: &'static str, value: &str) -> Result<Uuid, GatewayError> {
    parse_uuid(value).ok_or_else(|| GatewayError::InvalidId {
        what,
        value: value.chars().take(64).collect(),
    })
}

fn resolve_path(host: &str, path: &str) -> Result<Resolved, GatewayError> {
    let (endpoint, rest) = if let Some(rest) = path.strip_prefix("/v2/nvcf/pexec/") {
        (Endpoint::Pexec, rest)
    } else if let Some(rest) = path.strip_prefix("/v2/nvcf/exec/") {
        (Endpoint::Exec, rest)
    } else {
        return Err(no_route(host, path));
    };
    let mut segments = rest.split('/');
    // At most four segments mean something; a fifth makes any shape unknown.
    let four = [(); 4].map(|_| segments.next());
    if segments.next().is_some() {
        return Err(no_route(host, path));
    }
    match four {
        [Some("status"), Some(id), None, None] if !id.is_empty() => {
            Ok(Resolved::Status(id.to_owned()))
        }
        [Some("functions"), Some(fid), None, None] => Ok(Resolved::Invoke(Target {
            endpoint,
            function_id: uuid("function id", fid)?,
            version_id: None,
        })),
        [Some("functions"), Some(fid), Some("versions"), Some(vid)] => {
            Ok(Resolved::Invoke(Target {
                endpoint,
                function_id: uuid("function id", fid)?,
                version_id: Some(uuid("function version id", vid)?),
            }))
        }
        _ => Err(no_route(host, path)),
    }
}

fn resolve_host(host: &str, path: &str) -> Result<Resolved, GatewayError> {
    // `classify` only sends hosts whose first label is a UUID; a second UUID label makes the first
    // the version (`<vid>.<fid>.invocation.<gw>`).
    let (first, rest) = uuid_label(host).ok_or_else(|| no_route(host, path))?;
    let target = match uuid_label(rest).map(|(second, _)| second) {
        Some(fid) => Target {
            endpoint: Endpoint::Passthrough,
            function_id: fid,
            version_id: Some(first),
        },
        None => Target {
            endpoint: Endpoint::Passthrough,
            function_id: first,
            version_id: None,
        },
    };
    Ok(Resolved::Invoke(target))
}

fn resolve_headers(headers: RequestHeaders<'_>) -> Result<Resolved, GatewayError> {
    let text = |name: &http::HeaderName| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let fid = text(&FUNCTION_ID_NAME).unwrap_or_default();
    let function_id = uuid("function-id", fid.trim())?;
    let version_id = match text(&FUNCTION_VERSION_ID_NAME) {
        Some(v) => Some(uuid("function-version-id", v.trim())?),
        None => None,
    };
    Ok(Resolved::Invoke(Target {
        endpoint: Endpoint::Passthrough,
        function_id,
        version_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    const FID: &str = "0f6d3c8e-9a3b-4c1e-8d2f-1a2b3c4d5e6f";
    const VID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

    fn fid() -> Uuid {
        FID.parse().expect("fid")
    }
    fn vid() -> Uuid {
        VID.parse().expect("vid")
    }
    fn path(p: &str) -> Result<Resolved, GatewayError> {
        resolve(
            InvocationKind::Path,
            None,
            p,
            RequestHeaders::map(&HeaderMap::new()),
        )
    }

    #[test]
    fn path_forms() {
        assert_eq!(
            path(&format!("/v2/nvcf/pexec/functions/{FID}")).expect("pexec"),
            Resolved::Invoke(Target {
                endpoint: Endpoint::Pexec,
                function_id: fid(),
                version_id: None
            })
        );
        assert_eq!(
            path(&format!("/v2/nvcf/exec/functions/{FID}/versions/{VID}")).expect("exec"),
            Resolved::Invoke(Target {
                endpoint: Endpoint::Exec,
                function_id: fid(),
                version_id: Some(vid())
            })
        );
        assert_eq!(
            path("/v2/nvcf/pexec/status/abc").expect("status"),
            Resolved::Status("abc".into())
        );
        assert_eq!(
            path("/v2/nvcf/exec/status/abc").expect("status"),
            Resolved::Status("abc".into())
        );
        let e = path("/v2/nvcf/pexec/functions/nope").expect_err("bad id");
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.to_string(), "invalid function id 'nope': must be a UUID");
        let e = path(&format!("/v2/nvcf/pexec/functions/{FID}/versions/x")).expect_err("bad");
        assert_eq!(e.status().as_u16(), 400);
        for p in [
            "/v2/nvcf/pexec",
            "/v2/nvcf/pexec/",
            "/v2/nvcf/pexec/functions",
            "/v2/nvcf/pexec/status/",
            "/v2/nvcf/pexec/other/x",
            &format!("/v2/nvcf/pexec/functions/{FID}/x"),
            &format!("/v2/nvcf/pexec/functions/{FID}/versions/{VID}/x"),
        ] {
            assert_eq!(path(p).expect_err(p).status().as_u16(), 404, "{p}");
        }
    }

    #[test]
    fn host_forms_put_the_version_first() {
        let h = HeaderMap::new();
        let r = resolve(
            InvocationKind::HostRouted,
            Some(&format!("{FID}.invocation.gw:8080")),
            "/x",
            RequestHeaders::map(&h),
        )
        .expect("fid host");
        assert_eq!(
            r,
            Resolved::Invoke(Target {
                endpoint: Endpoint::Passthrough,
                function_id: fid(),
                version_id: None
            })
        );
        let r = resolve(
            InvocationKind::HostRouted,
            Some(&format!("{VID}.{FID}.invocation.gw")),
            "/x",
            RequestHeaders::map(&h),
        )
        .expect("vid host");
        assert_eq!(
            r,
            Resolved::Invoke(Target {
                endpoint: Endpoint::Passthrough,
                function_id: fid(),
                version_id: Some(vid())
            })
        );
        // Labels are whole: a UUID with more after it in its label is not one.
        let host = |name: String| {
            resolve(
                InvocationKind::HostRouted,
                Some(&name),
                "/x",
                RequestHeaders::map(&h),
            )
        };
        let only_fid = Resolved::Invoke(Target {
            endpoint: Endpoint::Passthrough,
            function_id: fid(),
            version_id: None,
        });
        assert_eq!(host(FID.to_owned()).expect("bare"), only_fid);
        assert_eq!(
            host(format!("{VID}.{FID}")).expect("two labels"),
            Resolved::Invoke(Target {
                endpoint: Endpoint::Passthrough,
                function_id: fid(),
                version_id: Some(vid())
            })
        );
        for bad in [
            format!("{FID}x.invocation.gw"),
            format!("{FID}\u{e9}.gw"),
            "x.gw".into(),
        ] {
            assert_eq!(
                host(bad.clone()).expect_err(&bad).status().as_u16(),
                404,
                "{bad}"
            );
        }
        assert_eq!(
            host(format!("{FID}.{VID}x.gw")).expect("second label not a UUID"),
            only_fid
        );
    }

    #[test]
    fn header_forms() {
        let by_headers = |h: &HeaderMap| {
            resolve(
                InvocationKind::FunctionIdHeader,
                None,
                "/x",
                RequestHeaders::map(h),
            )
        };
        let mut h = HeaderMap::new();
        h.insert(FUNCTION_ID_HEADER, HeaderValue::from_static(FID));
        let r = by_headers(&h).expect("fid");
        assert_eq!(
            r,
            Resolved::Invoke(Target {
                endpoint: Endpoint::Passthrough,
                function_id: fid(),
                version_id: None
            })
        );
        h.insert(FUNCTION_VERSION_ID_HEADER, HeaderValue::from_static(VID));
        let r = by_headers(&h).expect("both");
        assert!(matches!(r, Resolved::Invoke(t) if t.version_id == Some(vid())));
        h.insert(FUNCTION_VERSION_ID_HEADER, HeaderValue::from_static("v1"));
        let e = by_headers(&h).expect_err("bad vid");
        assert_eq!(e.status().as_u16(), 400);
    }
}
