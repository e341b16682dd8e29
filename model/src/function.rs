//! Function (version) types: the create/update requests, the stored record and the `FunctionDto`
//! answered to clients (nvcf-api.md §1.2, §3.1).

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Declares a string enum that serializes in upper case and deserializes case-insensitively, as
/// NVCF's Jackson configuration does (nvcf-api.md §0.3).
#[macro_export]
macro_rules! ci_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// All values, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The canonical spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Case-insensitive parse.
            pub fn parse(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case($text) { return Some(Self::$variant); })+
                None
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    ::serde::de::Error::custom(format!(
                        "unknown {} '{}', expected one of {}",
                        stringify!($name), s, all.join(", ")
                    ))
                })
            }
        }
    };
}

ci_enum! {
    /// Function (version) status (nvcf-api.md §3.1).
    pub enum FunctionStatus {
        Active => "ACTIVE",
        Deploying => "DEPLOYING",
        Error => "ERROR",
        Inactive => "INACTIVE",
        Degraded => "DEGRADED",
        Degrading => "DEGRADING",
    }
}

impl FunctionStatus {
    /// Only ACTIVE and DEGRADING versions take invocations.
    pub const fn is_invocable(self) -> bool {
        matches!(self, Self::Active | Self::Degrading)
    }
}

ci_enum! {
    /// `apiBodyFormat`.
    pub enum ApiBodyFormat { PredictV2 => "PREDICT_V2", Custom => "CUSTOM" }
}

ci_enum! {
    /// `functionType`.
    pub enum FunctionType { Default => "DEFAULT", Streaming => "STREAMING", Llm => "LLM" }
}

ci_enum! {
    /// `health.protocol`.
    pub enum HealthProtocol { Http => "HTTP", Grpc => "gRPC" }
}

ci_enum! {
    /// `visibility` query values of the list endpoints.
    pub enum Visibility { Authorized => "authorized", Private => "private", Public => "public" }
}

/// `{key, value}` of `containerEnvironment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// A model of a model-based or LLM function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDto {
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_config: Option<LlmConfig>,
}

/// `models[].llmConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uris: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rate_limit: Option<String>,
}

/// `resources[]` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDto {
    pub name: Option<String>,
    pub version: Option<String>,
    pub uri: Option<String>,
}

/// `health` as given on input (all fields optional so validation can name what is missing).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthInput {
    pub protocol: Option<HealthProtocol>,
    pub uri: Option<String>,
    pub port: Option<i64>,
    pub timeout: Option<String>,
    pub expected_status_code: Option<i64>,
}

/// `health` as stored and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthDto {
    pub protocol: HealthProtocol,
    pub uri: String,
    pub port: u16,
    pub timeout: String,
    pub expected_status_code: u16,
}

/// A secret on input: `value` is a string or a JSON object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SecretInput {
    pub name: Option<String>,
    pub value: Option<serde_json::Value>,
}

/// A stored secret (the value never leaves the control plane through the public API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub value: serde_json::Value,
}

/// `RateLimitDto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitDto {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempted_nca_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_nca_id_rate: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_rate: Option<String>,
}

/// `telemetries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetriesDto {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_telemetry_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_telemetry_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces_telemetry_id: Option<Uuid>,
}

/// `CreateFunctionRequest`: every field optional here; the control plane validates and names what
/// is missing. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFunctionRequest {
    pub name: Option<String>,
    pub inference_url: Option<String>,
    pub inference_port: Option<i64>,
    pub container_image: Option<String>,
    pub helm_chart: Option<String>,
    pub helm_chart_service_name: Option<String>,
    pub models: Option<Vec<ModelDto>>,
    pub container_args: Option<String>,
    pub container_environment: Option<Vec<EnvVar>>,
    pub health: Option<HealthInput>,
    pub health_uri: Option<String>,
    pub api_body_format: Option<ApiBodyFormat>,
    pub function_type: Option<FunctionType>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub secrets: Option<Vec<SecretInput>>,
    pub resources: Option<Vec<ArtifactDto>>,
    pub rate_limit: Option<RateLimitDto>,
    pub llm_invocation_config: Option<serde_json::Value>,
    pub telemetries: Option<TelemetriesDto>,
    pub utils_container_image: Option<String>,
}

/// `modelUpdates[]` of `UpdateFunctionRequest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelUpdate {
    pub model_name: Option<String>,
    pub llm_config: Option<LlmConfig>,
}

/// `UpdateFunctionRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFunctionRequest {
    pub tags: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitDto>,
    pub model_updates: Option<Vec<ModelUpdate>>,
    pub llm_invocation_config: Option<serde_json::Value>,
}

/// One function version as the control plane stores it and the feed carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionVersion {
    pub id: Uuid,
    pub version_id: Uuid,
    pub nca_id: String,
    pub name: String,
    pub status: FunctionStatus,
    pub inference_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_args: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_environment: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    pub api_body_format: ApiBodyFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_chart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_chart_service_name: Option<String>,
    pub health: HealthDto,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ArtifactDto>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub function_type: FunctionType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_invocation_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetries: Option<TelemetriesDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utils_container_image: Option<String>,
}

/// `InstanceDto` entries of `activeInstances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDto {
    pub instance_id: String,
    pub function_id: Uuid,
    pub function_version_id: Uuid,
    pub instance_type: String,
    pub instance_status: String,
    pub nca_id: String,
    pub gpu: String,
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub instance_created_at: Timestamp,
    pub instance_updated_at: Timestamp,
}

/// `FunctionDto` as answered to clients (nulls omitted, secrets by name only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDto {
    pub id: Uuid,
    pub nca_id: String,
    pub version_id: Uuid,
    pub name: String,
    pub status: FunctionStatus,
    pub inference_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by_different_account: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_args: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_environment: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    pub api_body_format: ApiBodyFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_chart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_chart_service_name: Option<String>,
    pub health_uri: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_instances: Vec<InstanceDto>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ArtifactDto>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub health: HealthDto,
    pub function_type: FunctionType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_invocation_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetries: Option<TelemetriesDto>,
}

impl FunctionDto {
    /// Renders a stored version. `details` adds the instances (callers holding
    /// `list_functions_details`); `include_secrets` lists secret names.
    pub fn from_version(
        v: &FunctionVersion,
        instances: Vec<InstanceDto>,
        details: bool,
        include_secrets: bool,
    ) -> Self {
        Self {
            id: v.id,
            nca_id: v.nca_id.clone(),
            version_id: v.version_id,
            name: v.name.clone(),
            status: v.status,
            inference_url: v.inference_url.clone(),
            owned_by_different_account: None,
            inference_port: v.inference_port,
            container_args: v.container_args.clone(),
            container_environment: v.container_environment.clone(),
            models: v.models.clone(),
            container_image: v.container_image.clone(),
            api_body_format: v.api_body_format,
            helm_chart: v.helm_chart.clone(),
            helm_chart_service_name: v.helm_chart_service_name.clone(),
            health_uri: v.health.uri.clone(),
            created_at: v.created_at,
            active_instances: if details { instances } else { Vec::new() },
            resources: v.resources.clone(),
            tags: v.tags.clone(),
            description: v.description.clone(),
            health: v.health.clone(),
            function_type: v.function_type,
            secrets: if include_secrets {
                v.secrets.iter().map(|s| s.name.clone()).collect()
            } else {
                Vec::new()
            },
            rate_limit: v.rate_limit.clone(),
            llm_invocation_config: v.llm_invocation_config.clone(),
            telemetries: v.telemetries.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_case_insensitively() {
        assert_eq!(FunctionType::parse("llm"), Some(FunctionType::Llm));
        assert_eq!(HealthProtocol::parse("GRPC"), Some(HealthProtocol::Grpc));
        let r: CreateFunctionRequest = serde_json::from_str(
            r#"{"functionType":"streaming","apiBodyFormat":"predict_v2","x":1}"#,
        )
        .expect("parse");
        assert_eq!(r.function_type, Some(FunctionType::Streaming));
        assert_eq!(r.api_body_format, Some(ApiBodyFormat::PredictV2));
        let e = serde_json::from_str::<CreateFunctionRequest>(r#"{"functionType":"batch"}"#)
            .expect_err("bad enum");
        assert!(
            e.to_string().contains("unknown FunctionType 'batch'"),
            "{e}"
        );
    }
}
