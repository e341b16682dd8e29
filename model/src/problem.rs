//! RFC 7807 problem documents in the shape NVCF's services answer (nvcf-api.md §0.4).

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// Content type of every error body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem document. `type` is `urn:nv-boot:problem-details:<kebab reason>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Problem {
    /// A problem for `status` with the nv-boot type URN derived from the reason phrase.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        Self {
            type_: Some(type_urn(status)),
            title,
            status: status.as_u16(),
            detail: Some(detail.into()),
            instance: None,
        }
    }

    /// Sets `instance` (the request path).
    #[must_use]
    pub fn with_instance(mut self, path: impl Into<String>) -> Self {
        self.instance = Some(path.into());
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `urn:nv-boot:problem-details:` + the reason phrase in kebab case, e.g. `bad-request`.
pub fn type_urn(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    let kebab: String = reason
        .chars()
        .filter_map(|c| match c {
            ' ' | '-' => Some('-'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    format!("urn:nv-boot:problem-details:{kebab}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urn_is_kebab_reason() {
        assert_eq!(
            type_urn(StatusCode::NOT_FOUND),
            "urn:nv-boot:problem-details:not-found"
        );
        assert_eq!(
            type_urn(StatusCode::TOO_MANY_REQUESTS),
            "urn:nv-boot:problem-details:too-many-requests"
        );
        assert_eq!(
            type_urn(StatusCode::BAD_REQUEST),
            "urn:nv-boot:problem-details:bad-request"
        );
    }

    #[test]
    fn body_omits_nulls() {
        let p = Problem::new(StatusCode::BAD_REQUEST, "bad").with_instance("/x");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap_or_default();
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["instance"], "/x");
        let p = Problem {
            detail: None,
            instance: None,
            ..p
        };
        let s = String::from_utf8(p.to_json()).unwrap_or_default();
        assert!(
            !s.contains("\"detail\"") && !s.contains("\"instance\""),
            "{s}"
        );
    }
}
