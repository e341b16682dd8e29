//! Validation of function create/update requests (nvcf-api.md §1.2): every rule with the message
//! NVCF gives, in Spring's bean-validation shape where NVCF uses it.

use crate::error::{ApiError, ApiResult};
use model::function::{
    ApiBodyFormat, CreateFunctionRequest, FunctionType, HealthDto, HealthProtocol, RateLimitDto,
    SecretRecord, UpdateFunctionRequest,
};
use regex::Regex;
use std::collections::HashSet;
use std::sync::LazyLock;

static NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9A-Z][a-z0-9A-Z\-_]*$"));
static TAG: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9\-_:=]+$"));
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9A-Z][a-z0-9A-Z_.\-]*$"));
static RATE_PART: LazyLock<Regex> = LazyLock::new(|| re(r"^[1-9][0-9]*-([SMHD])$"));
static ISO_DURATION: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^P(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?$")
});

fn re(pattern: &str) -> Regex {
    // The patterns are literals of this file; a typo is caught by the unit tests.
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("bad built-in regex {pattern}: {e}"))
}

/// A bean-validation style 400: `Validation failed: [object=..., field=..., rejected=..., message=...]`.
pub fn field_error(object: &str, field: &str, rejected: Option<&str>, message: &str) -> ApiError {
    let rejected = rejected.map_or_else(
        || "null".to_owned(),
        |r| crate::app::truncate(r, 256).to_owned(),
    );
    ApiError::BadRequest(format!(
        "Validation failed: [object={object}, field={field}, rejected={rejected}, message={message}]"
    ))
}

const CREATE: &str = "createFunctionRequest";

/// The validated parts of a create request that the stored record needs beyond the raw input.
#[derive(Debug)]
pub struct ValidFunction {
    pub name: String,
    pub inference_url: String,
    pub inference_port: Option<u16>,
    pub health: HealthDto,
    pub function_type: FunctionType,
    pub api_body_format: ApiBodyFormat,
    pub secrets: Vec<SecretRecord>,
}

/// Checks a `CreateFunctionRequest`.
pub fn create_function(r: &CreateFunctionRequest) -> ApiResult<ValidFunction> {
    let name = r.name.as_deref().unwrap_or_default();
    if name.trim().is_empty() {
        return Err(field_error(
            CREATE,
            "name",
            r.name.as_deref(),
            "must not be blank",
        ));
    }
    if name.chars().count() > 128 {
        return Err(field_error(
            CREATE,
            "name",
            Some(name),
            "size must be between 1 and 128",
        ));
    }
    if !NAME.is_match(name) {
        return Err(field_error(
            CREATE,
            "name",
            Some(name),
            "must match \"^[a-z0-9A-Z][a-z0-9A-Z\\-_]*$\"",
        ));
    }
    let inference_url = r.inference_url.as_deref().unwrap_or_default();
    if inference_url.trim().is_empty() {
        return Err(field_error(
            CREATE,
            "inferenceUrl",
            r.inference_url.as_deref(),
            "must not be null",
        ));
    }
    if inference_url.chars().any(char::is_whitespace) {
        return Err(field_error(
            CREATE,
            "inferenceUrl",
            Some(inference_url),
            "must be a valid URI",
        ));
    }
    let inference_port = match r.inference_port {
        None => None,
        Some(p) => Some(port(p).ok_or_else(|| {
            field_error(
                CREATE,
                "inferencePort",
                Some(&p.to_string()),
                "must be between 1 and 65535",
            )
        })?),
    };

    let has_image = r
        .container_image
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty());
    let has_helm = r
        .helm_chart
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty());
    let models = r.models.as_deref().unwrap_or_default();
    if !has_image && !has_helm && models.is_empty() {
        return Err(ApiError::BadRequest(
            "One of 'containerImage', 'models' or 'helmChart' must be specified".into(),
        ));
    }
    if has_image && has_helm {
        return Err(ApiError::BadRequest(
            "'containerImage' and 'helmChart' cannot be specified together".into(),
        ));
    }
    if has_helm
        != r.helm_chart_service_name
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty())
    {
        return Err(ApiError::BadRequest(
            "'helmChart' and 'helmChartServiceName' must be specified together".into(),
        ));
    }
    if has_helm && (r.container_args.is_some() || r.container_environment.is_some()) {
        return Err(ApiError::BadRequest(
            "'containerArgs' and 'containerEnvironment' cannot be specified with 'helmChart'"
                .into(),
        ));
    }
    if let Some(img) = &r.container_image
        && img.chars().any(char::is_whitespace)
    {
        return Err(field_error(
            CREATE,
            "containerImage",
            Some(img),
            "must be a valid URI",
        ));
    }

    let function_type = r.function_type.unwrap_or(FunctionType::Default);
    if function_type == FunctionType::Llm && models.is_empty() {
        return Err(ApiError::BadRequest(
            "Function type 'LLM' requires 'models'".into(),
        ));
    }
    if r.llm_invocation_config.is_some() && function_type != FunctionType::Llm {
        return Err(ApiError::BadRequest(
            "'llmInvocationConfig' is only allowed for functions of type 'LLM'".into(),
        ));
    }
    let mut names = HashSet::new();
    for m in models {
        let mname = m.name.as_deref().unwrap_or_default();
        if mname.trim().is_empty() {
            return Err(field_error(
                CREATE,
                "models[].name",
                None,
                "must not be blank",
            ));
        }
        if !names.insert(mname) {
            return Err(ApiError::BadRequest(format!(
                "Model names must be unique: '{mname}' is repeated"
            )));
        }
        match &m.llm_config {
            Some(llm) => {
                if llm.uris.as_ref().is_none_or(Vec::is_empty) {
                    return Err(ApiError::BadRequest(format!(
                        "Model '{mname}': llmConfig.uris must not be empty"
                    )));
                }
            }
            None => {
                if m.version.as_deref().is_none_or(str::is_empty)
                    || m.uri.as_deref().is_none_or(str::is_empty)
                {
                    return Err(ApiError::BadRequest(format!(
                        "Model '{mname}': 'version' and 'uri' are required"
                    )));
                }
            }
        }
    }

    for e in r.container_environment.as_deref().unwrap_or_default() {
        let key = e.key.as_deref().unwrap_or_default();
        if key.trim().is_empty() {
            return Err(field_error(
                CREATE,
                "containerEnvironment[].key",
                None,
                "must not be blank",
            ));
        }
        if e.value.is_none() {
            return Err(field_error(
                CREATE,
                "containerEnvironment[].value",
                None,
                "must not be null",
            ));
        }
        if key.to_ascii_uppercase().starts_with("NVCF_") {
            return Err(ApiError::BadRequest(format!(
                "Environment variable '{key}' is reserved: names starting with NVCF_ are set by the platform"
            )));
        }
    }

    if let Some(d) = &r.description
        && d.chars().count() > 256
    {
        return Err(field_error(
            CREATE,
            "description",
            Some(d),
            "size must be between 0 and 256",
        ));
    }
    if let Some(tags) = &r.tags {
        tags_ok(tags, CREATE)?;
    }
    let secrets = secrets(r)?;
    for a in r.resources.as_deref().unwrap_or_default() {
        if [&a.name, &a.version, &a.uri]
            .iter()
            .any(|f| f.as_deref().is_none_or(|s| s.trim().is_empty()))
        {
            return Err(ApiError::BadRequest(
                "resources[]: 'name', 'version' and 'uri' are required".into(),
            ));
        }
    }
    if let Some(rl) = &r.rate_limit {
        rate_limit_ok(rl)?;
    }
    if let Some(t) = &r.telemetries
        && t.logs_telemetry_id.is_none()
        && t.metrics_telemetry_id.is_none()
        && t.traces_telemetry_id.is_none()
    {
        return Err(ApiError::BadRequest(
            "telemetries: at least one telemetry id must be set".into(),
        ));
    }

    let health = match &r.health {
        None => HealthDto {
            protocol: HealthProtocol::Http,
            uri: r
                .health_uri
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "/v2/health/ready".into()),
            port: inference_port.unwrap_or(8000),
            timeout: "PT10S".into(),
            expected_status_code: 200,
        },
        Some(h) => {
            let protocol = h
                .protocol
                .ok_or_else(|| field_error(CREATE, "health.protocol", None, "must not be null"))?;
            let uri = h
                .uri
                .clone()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| field_error(CREATE, "health.uri", None, "must not be null"))?;
            let hport = h
                .port
                .ok_or_else(|| field_error(CREATE, "health.port", None, "must not be null"))?;
            let hport = port(hport).ok_or_else(|| {
                field_error(
                    CREATE,
                    "health.port",
                    Some(&hport.to_string()),
                    "must be greater than 0",
                )
            })?;
            let timeout = h
                .timeout
                .clone()
                .ok_or_else(|| field_error(CREATE, "health.timeout", None, "must not be null"))?;
            if !iso_duration_ok(&timeout) {
                return Err(field_error(
                    CREATE,
                    "health.timeout",
                    Some(&timeout),
                    "must be an ISO-8601 duration such as PT10S",
                ));
            }
            let code = h.expected_status_code.ok_or_else(|| {
                field_error(
                    CREATE,
                    "health.expectedStatusCode",
                    None,
                    "must not be null",
                )
            })?;
            let code = u16::try_from(code)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    field_error(
                        CREATE,
                        "health.expectedStatusCode",
                        Some(&code.to_string()),
                        "must be an HTTP status code",
                    )
                })?;
            HealthDto {
                protocol,
                uri,
                port: hport,
                timeout,
                expected_status_code: code,
            }
        }
    };

    Ok(ValidFunction {
        name: name.to_owned(),
        inference_url: inference_url.to_owned(),
        inference_port,
        health,
        function_type,
        api_body_format: r.api_body_format.unwrap_or(ApiBodyFormat::Custom),
        secrets,
    })
}

fn port(p: i64) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p > 0)
}

fn tags_ok(tags: &[String], object: &str) -> ApiResult<()> {
    if tags.len() > 64 {
        return Err(field_error(
            object,
            "tags",
            Some(&tags.len().to_string()),
            "size must be between 0 and 64",
        ));
    }
    for t in tags {
        if t.chars().count() > 128 || !TAG.is_match(t) {
            return Err(field_error(
                object,
                "tags[]",
                Some(t),
                "must match \"[a-zA-Z0-9\\-_:=]+\" and be at most 128 characters",
            ));
        }
    }
    Ok(())
}

fn secrets(r: &CreateFunctionRequest) -> ApiResult<Vec<SecretRecord>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for s in r.secrets.as_deref().unwrap_or_default() {
        let name = s.name.as_deref().unwrap_or_default();
        if name.is_empty() || name.chars().count() > 48 || !SECRET_NAME.is_match(name) {
            return Err(field_error(
                CREATE,
                "secrets[].name",
                Some(name),
                "must match \"^[a-z0-9A-Z][a-z0-9A-Z\\_\\.\\-]*$\" and be 1 to 48 characters",
            ));
        }
        if !seen.insert(name) {
            return Err(ApiError::BadRequest(format!(
                "Duplicate secret name '{name}'"
            )));
        }
        let value = s
            .value
            .clone()
            .ok_or_else(|| field_error(CREATE, "secrets[].value", None, "must not be null"))?;
        let len = match &value {
            serde_json::Value::String(v) => v.chars().count(),
            serde_json::Value::Object(_) => value.to_string().chars().count(),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Secret '{name}': value must be a string or a JSON object"
                )));
            }
        };
        if !(1..=32768).contains(&len) {
            return Err(ApiError::BadRequest(format!(
                "Secret '{name}': value must be 1 to 32768 characters"
            )));
        }
        out.push(SecretRecord {
            name: name.to_owned(),
            value,
        });
    }
    Ok(out)
}

/// `<n>-<S|M|H|D>[,<n>-<unit>...]` with no unit repeated: NVCF's
/// `^(?!.*-([SMHD]).*-\1)[1-9]\d*-[SMHD](,\s*[1-9]\d*-[SMHD])*$` (whitespace only after a comma).
fn rate_ok(rate: &str) -> bool {
    let mut units = HashSet::new();
    rate.split(',').enumerate().all(|(i, part)| {
        let part = if i == 0 { part } else { part.trim_start() };
        RATE_PART
            .captures(part)
            .is_some_and(|c| units.insert(c.get(1).map(|m| m.as_str()).unwrap_or_default()))
    })
}

fn rate_limit_ok(rl: &RateLimitDto) -> ApiResult<()> {
    let bad_rate = |field: &str, v: &str| {
        field_error(
            "rateLimitDto",
            field,
            Some(v),
            "must match \"<n>-<S|M|H|D>[,<n>-<unit>...]\" with no unit repeated",
        )
    };
    if rl.rate_limit.is_none() && rl.per_nca_id_rate.is_none() && rl.per_user_rate.is_none() {
        return Err(ApiError::BadRequest(
            "rateLimit: at least one of 'rateLimit', 'perNcaIdRate' or 'perUserRate' must be set"
                .into(),
        ));
    }
    if let Some(r) = &rl.rate_limit
        && !rate_ok(r)
    {
        return Err(bad_rate("rateLimit", r));
    }
    if let Some(r) = &rl.per_user_rate
        && !rate_ok(r)
    {
        return Err(bad_rate("perUserRate", r));
    }
    if let Some(m) = &rl.per_nca_id_rate {
        if m.len() > 32 {
            return Err(ApiError::BadRequest(
                "rateLimit.perNcaIdRate: at most 32 entries".into(),
            ));
        }
        for r in m.values() {
            if !rate_ok(r) {
                return Err(bad_rate("perNcaIdRate", r));
            }
        }
    }
    if let Some(ex) = &rl.exempted_nca_ids {
        if ex.len() > 32 {
            return Err(ApiError::BadRequest(
                "rateLimit.exemptedNcaIds: at most 32 entries".into(),
            ));
        }
        if rl.rate_limit.is_none() {
            return Err(ApiError::BadRequest(
                "rateLimit.exemptedNcaIds requires 'rateLimit'".into(),
            ));
        }
        if let Some(m) = &rl.per_nca_id_rate
            && let Some(both) = ex.iter().find(|id| m.contains_key(*id))
        {
            return Err(ApiError::BadRequest(format!(
                "rateLimit: '{both}' cannot be in both 'perNcaIdRate' and 'exemptedNcaIds'"
            )));
        }
    }
    Ok(())
}

/// ISO-8601 durations as Java's `Duration.parse` takes them (days, hours, minutes, seconds).
pub fn iso_duration_ok(s: &str) -> bool {
    s != "P" && s != "PT" && !s.ends_with('T') && ISO_DURATION.is_match(s)
}

/// Checks an `UpdateFunctionRequest` against the models the version has.
pub fn update_function(
    r: &UpdateFunctionRequest,
    model_names: &[String],
    function_type: FunctionType,
) -> ApiResult<()> {
    if r.tags.is_none()
        && r.rate_limit.is_none()
        && r.model_updates.is_none()
        && r.llm_invocation_config.is_none()
    {
        return Err(ApiError::BadRequest(
            "At least one of 'tags', 'rateLimit', 'modelUpdates' or 'llmInvocationConfig' must be specified".into(),
        ));
    }
    if let Some(tags) = &r.tags {
        tags_ok(tags, "updateFunctionRequest")?;
    }
    if let Some(rl) = &r.rate_limit {
        rate_limit_ok(rl)?;
    }
    if r.llm_invocation_config.is_some() && function_type != FunctionType::Llm {
        return Err(ApiError::BadRequest(
            "'llmInvocationConfig' is only allowed for functions of type 'LLM'".into(),
        ));
    }
    let mut seen = HashSet::new();
    for u in r.model_updates.as_deref().unwrap_or_default() {
        let name = u.model_name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(field_error(
                "updateFunctionRequest",
                "modelUpdates[].modelName",
                None,
                "must not be blank",
            ));
        }
        if !seen.insert(name) {
            return Err(ApiError::BadRequest(format!(
                "Model names must be unique: '{name}' is repeated"
            )));
        }
        if !model_names.iter().any(|m| m == name) {
            return Err(ApiError::BadRequest(format!(
                "Model '{name}' is not part of this function version"
            )));
        }
        let ok = u
            .llm_config
            .as_ref()
            .is_some_and(|c| c.token_rate_limit.is_some() || c.routing_method.is_some());
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "Model '{name}': each model update must set 'tokenRateLimit' or 'routingMethod'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> CreateFunctionRequest {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn regexes_compile_and_rates_parse() {
        assert!(NAME.is_match("echo-fn_1") && !NAME.is_match("-x") && !NAME.is_match("a b"));
        assert!(
            rate_ok("10-S")
                && rate_ok("10-S, 100-M")
                && rate_ok("10-S,\t100-M")
                && !rate_ok(" 10-S")
                && !rate_ok("10-S ,100-M")
                && !rate_ok("10-S,")
                && !rate_ok("10-S,5-S")
                && !rate_ok("0-S")
                && !rate_ok("5-X")
        );
        assert!(iso_duration_ok("PT10S") && iso_duration_ok("PT1.5S") && iso_duration_ok("P1DT2H"));
        assert!(!iso_duration_ok("PT") && !iso_duration_ok("10s") && !iso_duration_ok("P1DT"));
    }

    #[test]
    fn create_defaults_and_errors() {
        let v = create_function(&req(r#"{"name":"echo","inferenceUrl":"/echo","containerImage":"builtin/echo","inferencePort":9000}"#))
            .expect("valid");
        assert_eq!(v.health.port, 9000);
        assert_eq!(v.health.uri, "/v2/health/ready");
        assert_eq!(v.function_type, FunctionType::Default);
        let e = create_function(&req(r#"{"inferenceUrl":"/echo","containerImage":"x"}"#))
            .expect_err("no name");
        assert!(e.detail().contains("field=name"), "{e}");
        let e = create_function(&req(r#"{"name":"a","inferenceUrl":"/e"}"#)).expect_err("no image");
        assert!(e.detail().contains("containerImage"), "{e}");
        let e = create_function(&req(
            r#"{"name":"a","inferenceUrl":"/e","containerImage":"x","containerEnvironment":[{"key":"NVCF_X","value":"1"}]}"#,
        ))
        .expect_err("reserved env");
        assert!(e.detail().contains("reserved"), "{e}");
        let e = create_function(&req(r#"{"name":"a","inferenceUrl":"/e","containerImage":"x","health":{"protocol":"http","uri":"/h","port":1,"timeout":"10s","expectedStatusCode":200}}"#))
            .expect_err("bad timeout");
        assert!(e.detail().contains("health.timeout"), "{e}");
    }
}
