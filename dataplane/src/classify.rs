//! Request classification: Host (or `:authority`) and path → which part of the gateway answers.
//! A pure function, following the NVCF gateway's Host routes (`nvcf-api.md` §5) with a path fallback
//! for clients that address the gateway by IP or `localhost`.

use http::Method;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The API Keys service (`api-keys.<gw>`, `/v1/keys`, `/v1/admin/keys`, …), proxied to the control plane.
    KeyService,
    /// The NVCF management API (`api.<gw>`, `/v2/nvcf/…`), proxied to the control plane.
    Management,
    /// Function invocation, answered by the gateway's invocation path.
    Invocation(InvocationKind),
    /// `GET /health`, answered by the gateway itself.
    Health,
    /// No route (also everything under `/internal/`): 404.
    NotFound,
}

/// How an invocation request named its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationKind {
    /// `/v2/nvcf/pexec|exec/...` on `invocation.<gw>` or on a plain host.
    Path,
    /// Host-routed passthrough: `<fid>.invocation.<gw>` or `<vid>.<fid>.invocation.<gw>`.
    HostRouted,
    /// A `function-id` header carrying a UUID.
    FunctionIdHeader,
}

impl Route {
    /// How many metric labels there are ([`Route::index`] is below it).
    pub(crate) const COUNT: usize = 5;

    /// The position of this route's label among the [`Route::COUNT`].
    pub(crate) fn index(self) -> usize {
        match self {
            Self::KeyService => 0,
            Self::Management => 1,
            Self::Invocation(_) => 2,
            Self::Health => 3,
            Self::NotFound => 4,
        }
    }

    /// The bounded metric label for this route.
    pub fn label(self) -> &'static str {
        match self {
            Self::KeyService => "key_service",
            Self::Management => "management",
            Self::Invocation(_) => "invocation",
            Self::Health => "health",
            Self::NotFound => "not_found",
        }
    }
}

/// Host-prefix families (`nvcf-api.md` §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostFamily {
    ApiKeys,
    Api,
    Invocation,
    HostRouted,
}

/// Classifies one request. `host` is the `:authority` or `Host` value (a port is ignored),
/// `function_id` the value of a `function-id` header if any.
pub fn classify(
    method: &Method,
    host: Option<&str>,
    path: &str,
    function_id: Option<&str>,
) -> Route {
    // Internal control-plane endpoints are never reachable through the gateway, whatever the host.
    if is_internal(path) {
        return Route::NotFound;
    }
    let is_health = path == "/health" && (method == Method::GET || method == Method::HEAD);
    match host.map(strip_port).and_then(host_family) {
        Some(HostFamily::ApiKeys) if is_health => Route::Health,
        Some(HostFamily::ApiKeys) => Route::KeyService,
        Some(HostFamily::Api) if is_health => Route::Health,
        Some(HostFamily::Api) => Route::Management,
        Some(HostFamily::Invocation) if is_health => Route::Health,
        Some(HostFamily::Invocation) => Route::Invocation(InvocationKind::Path),
        Some(HostFamily::HostRouted) => Route::Invocation(InvocationKind::HostRouted),
        None if function_id.is_some_and(is_uuid) => {
            Route::Invocation(InvocationKind::FunctionIdHeader)
        }
        None => classify_path(path, is_health),
    }
}

/// The path fallback, for a Host that matches no prefix.
fn classify_path(path: &str, is_health: bool) -> Route {
    if is_health {
        Route::Health
    } else if under(path, "/v2/nvcf/pexec") || under(path, "/v2/nvcf/exec") {
        Route::Invocation(InvocationKind::Path)
    } else if under(path, "/v2/nvcf") {
        Route::Management
    } else if under(path, "/v1/keys")
        || under(path, "/v1/admin/keys")
        || under(path, "/v1/introspect")
        || under(path, "/v1/services")
    {
        Route::KeyService
    } else {
        Route::NotFound
    }
}

/// `path` is `prefix` itself or lies below it (segment-wise: `/v1/keysx` is not under `/v1/keys`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether the path, once percent-encoding and dot segments are resolved the way a lenient upstream
/// might resolve them, starts with the `internal` segment. Erring towards "internal" only costs a 404.
fn is_internal(path: &str) -> bool {
    // The usual path has no escapes, backslashes or dots, so nothing can move its first segment:
    // that segment decides, without the resolution below.
    let bytes = path.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'%' | b'\\' | b'.')) {
        let start = bytes.iter().position(|&b| b != b'/').unwrap_or(bytes.len());
        let first = &bytes[start..];
        let end = first.iter().position(|&b| b == b'/').unwrap_or(first.len());
        return first[..end].eq_ignore_ascii_case(b"internal");
    }
    let decoded;
    let path = if path.contains('%') {
        decoded = percent_decode(path);
        decoded.as_str()
    } else {
        path
    };
    // Only the resolved path's first segment matters: the depth of the segment stack and its
    // bottom are all that is kept (no stack allocated per request).
    let mut depth = 0usize;
    let mut first = "";
    for segment in path.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => depth = depth.saturating_sub(1),
            s => {
                if depth == 0 {
                    first = s;
                }
                depth += 1;
            }
        }
        if depth > 0 && first.eq_ignore_ascii_case("internal") {
            return true;
        }
    }
    false
}

/// `%XX` → byte; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h << 4) | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The host without a port: `api.gw:8080` → `api.gw`, `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    // A port is the digits after the last colon: walk back over them only, not over the whole
    // (long, host-routed) name, which a search for the colon from the end would.
    let bytes = host.as_bytes();
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    match bytes.len().checked_sub(digits + 1) {
        // ASCII at `colon`: the slice ends on a character boundary.
        Some(colon) if bytes[colon] == b':' => host.get(..colon).unwrap_or(host),
        _ => host,
    }
}

fn host_family(host: &str) -> Option<HostFamily> {
    let has_prefix = |prefix: &str| {
        host.len() > prefix.len()
            && host.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    if has_prefix("api-keys.") {
        Some(HostFamily::ApiKeys)
    } else if has_prefix("api.") {
        Some(HostFamily::Api)
    } else if has_prefix("invocation.") {
        Some(HostFamily::Invocation)
    } else if host.len() > 36 && host.as_bytes()[36] == b'.' && host.get(..36).is_some_and(is_uuid)
    {
        Some(HostFamily::HostRouted)
    } else {
        None
    }
}

/// A hyphenated UUID (`8-4-4-4-12` hex digits), the form NVCF uses for function and version ids.
fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FID: &str = "0f6d3c8e-9a3b-4c1e-8d2f-1a2b3c4d5e6f";
    const VID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

    fn get(host: Option<&str>, path: &str) -> Route {
        classify(&Method::GET, host, path, None)
    }
    fn post(host: Option<&str>, path: &str) -> Route {
        classify(&Method::POST, host, path, None)
    }

    #[test]
    fn host_prefixes() {
        assert_eq!(
            post(Some("api-keys.127.0.0.1:8080"), "/v1/admin/keys"),
            Route::KeyService
        );
        assert_eq!(
            get(Some("API-KEYS.gw.example"), "/anything"),
            Route::KeyService
        );
        assert_eq!(get(Some("api.x"), "/v2/nvcf/functions"), Route::Management);
        assert_eq!(
            get(Some("Api.X:80"), "/v2/nvcf/pexec/functions/x"),
            Route::Management
        );
        assert_eq!(
            post(Some("invocation.gw"), "/v2/nvcf/pexec/functions/x"),
            Route::Invocation(InvocationKind::Path)
        );
        let routed = Route::Invocation(InvocationKind::HostRouted);
        assert_eq!(
            post(Some(&format!("{FID}.invocation.gw:8080")), "/v1/chat"),
            routed
        );
        assert_eq!(
            post(Some(&format!("{VID}.{FID}.invocation.gw")), "/"),
            routed
        );
        assert_eq!(
            get(
                Some(&format!("{}.invocation.gw", FID.to_uppercase())),
                "/health"
            ),
            routed
        );
    }

    #[test]
    fn prefix_needs_a_dot_and_something_after_it() {
        assert_eq!(get(Some("api"), "/x"), Route::NotFound);
        assert_eq!(get(Some("api."), "/x"), Route::NotFound);
        assert_eq!(get(Some("apix.gw"), "/x"), Route::NotFound);
        assert_eq!(get(Some("api-keysx.gw"), "/x"), Route::NotFound);
        // A UUID not followed by a dot, or a near-UUID, is not host routing.
        assert_eq!(get(Some(FID), "/x"), Route::NotFound);
        assert_eq!(
            get(Some(&format!("{}.gw", &FID[..35])), "/x"),
            Route::NotFound
        );
        assert_eq!(
            get(Some(&format!("{}g.gw", &FID[..35])), "/x"),
            Route::NotFound
        );
    }

    #[test]
    fn path_fallback_for_plain_hosts() {
        for host in [
            Some("127.0.0.1:8080"),
            Some("localhost"),
            Some("[::1]:8080"),
            None,
        ] {
            let inv = Route::Invocation(InvocationKind::Path);
            assert_eq!(post(host, "/v2/nvcf/pexec/functions/abc"), inv);
            assert_eq!(get(host, "/v2/nvcf/pexec/status/abc"), inv);
            assert_eq!(post(host, "/v2/nvcf/exec/functions/abc"), inv);
            assert_eq!(get(host, "/v2/nvcf/functions"), Route::Management);
            assert_eq!(get(host, "/v2/nvcf"), Route::Management);
            assert_eq!(get(host, "/v2/nvcf/pexecx"), Route::Management);
            for p in [
                "/v1/keys",
                "/v1/keys/abc",
                "/v1/admin/keys",
                "/v1/introspect",
                "/v1/services",
                "/v1/services/x/keys",
            ] {
                assert_eq!(post(host, p), Route::KeyService, "{p}");
            }
            assert_eq!(get(host, "/v1/keysx"), Route::NotFound);
            assert_eq!(get(host, "/v2/nvcfx"), Route::NotFound);
            assert_eq!(get(host, "/"), Route::NotFound);
            assert_eq!(get(host, "/health"), Route::Health);
            assert_eq!(post(host, "/health"), Route::NotFound);
        }
        assert_eq!(get(Some("foo.example"), "/x"), Route::NotFound);
    }

    #[test]
    fn health_on_named_hosts() {
        for host in ["api.gw", "api-keys.gw:1", "invocation.gw"] {
            assert_eq!(get(Some(host), "/health"), Route::Health, "{host}");
            assert_eq!(
                classify(&Method::HEAD, Some(host), "/health", None),
                Route::Health
            );
        }
        assert_eq!(post(Some("api.gw"), "/health"), Route::Management);
    }

    #[test]
    fn internal_is_never_routed() {
        for host in [
            Some("api.x"),
            Some("api-keys.x"),
            Some("invocation.x"),
            Some("127.0.0.1"),
            None,
        ] {
            for p in [
                "/internal/v1/feed",
                "/internal",
                "/internal/",
                "//internal/v1/feed",
                "/./internal/v1/feed",
                "/v2/../internal/v1/feed",
                "/v2/nvcf/../../internal/v1/feed",
                "/%69nternal/v1/feed",
                "/INTERNAL/v1/feed",
                "/%49NTERNAL%2fx",
                "/v2/%2e%2e/internal/x",
                "/v2%2f..%2finternal",
                "\\internal\\v1",
            ] {
                assert_eq!(get(host, p), Route::NotFound, "{host:?} {p}");
            }
        }
        let fid_host = format!("{FID}.invocation.gw");
        assert_eq!(get(Some(&fid_host), "/internal/v1/feed"), Route::NotFound);
        assert_eq!(
            classify(&Method::GET, None, "/internal/x", Some(FID)),
            Route::NotFound,
            "function-id header does not open /internal"
        );
        // Only the first segment counts.
        assert_eq!(get(Some("api.x"), "/v2/nvcf/internal"), Route::Management);
        assert_eq!(get(Some("api.x"), "/internalx"), Route::Management);
    }

    #[test]
    fn function_id_header() {
        let h = Route::Invocation(InvocationKind::FunctionIdHeader);
        assert_eq!(
            classify(&Method::POST, Some("127.0.0.1"), "/x", Some(FID)),
            h
        );
        assert_eq!(classify(&Method::POST, None, "/v1/keys", Some(FID)), h);
        assert_eq!(
            classify(&Method::POST, Some("localhost"), "/x", Some("nope")),
            Route::NotFound
        );
        // Host prefixes win over the header.
        assert_eq!(
            classify(&Method::GET, Some("api.x"), "/v2/nvcf/functions", Some(FID)),
            Route::Management
        );
    }

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port("a.b:"), "a.b");
        assert_eq!(strip_port(":8080"), "");
        assert_eq!(strip_port("8080"), "8080");
        // Not a port: the host is left whole (and matches no family).
        assert_eq!(strip_port("a.b:http"), "a.b:http");
        assert_eq!(strip_port("a.b:8x0"), "a.b:8x0");
    }

    #[test]
    fn labels_are_bounded() {
        let all = [
            Route::KeyService,
            Route::Management,
            Route::Invocation(InvocationKind::Path),
            Route::Health,
            Route::NotFound,
        ];
        let labels: Vec<_> = all.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "key_service",
                "management",
                "invocation",
                "health",
                "not_found"
            ]
        );
    }
}
