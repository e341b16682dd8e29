//! The control plane's HTTP API over real sockets: the key service, function management,
//! deployments, cluster groups, queues, the scope matrix and malformed input. Each test runs its
//! own control plane on a port-0 listener with SQLite in a temporary directory.

mod common;

use common::*;
use http::{Method, StatusCode};
use model::worker::InstanceState;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

// =========================================================================== admin tokens

#[tokio::test]
async fn admin_token_mint_shape_and_loopback_rule() {
    let cp = Cp::start().await;
    let before = at(0);
    let r = cp.post("/v1/admin/keys").json(&json!({})).send().await;
    let dto = r.expect(200).clone();
    assert_eq!(r.header("content-type"), "application/json");
    let value = dto["value"].as_str().expect("value");
    assert!(value.starts_with("nvcf-admin-"), "{value}");
    assert!(
        !value.starts_with("nvapi-"),
        "admin tokens must not look like API keys"
    );
    assert_eq!(dto["status"], "ACTIVE");
    assert_eq!(dto["owner_type"], "SYSTEM");
    assert_eq!(dto["owner_id"], "admin-issuer-proxy");
    assert_eq!(dto["issuer_service_id"], NVCF);
    assert_eq!(dto["audience_service_ids"], json!([NVCF]));
    assert!(
        dto["id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .is_some()
    );
    // 12 h lifetime (the configured default).
    let expires = dto["expires_at"].as_str().expect("expires_at");
    assert!(
        expires > at(11 * 3600).as_str() && expires < at(13 * 3600).as_str(),
        "{expires}"
    );
    assert!(dto["created_at"].as_str().expect("created_at") >= before.as_str());
    let scopes = &dto["authorizations"]["policies"][0]["scopes"];
    for s in [
        "register_function",
        "list_functions",
        "deploy_function",
        "delete_function",
    ] {
        assert!(
            scopes.as_array().expect("scopes").contains(&json!(s)),
            "{scopes}"
        );
    }
    assert!(
        !scopes
            .as_array()
            .expect("scopes")
            .contains(&json!("invoke_function"))
    );

    // An empty body is `{}`; the token works on management calls.
    let r = cp.post("/v1/admin/keys").send().await;
    let token = r.expect(200)["value"].as_str().expect("value").to_owned();
    cp.get("/v2/nvcf/functions")
        .bearer(&token)
        .send()
        .await
        .expect(200);
    // A body that is not JSON is refused.
    cp.post("/v1/admin/keys")
        .body("{nope")
        .send()
        .await
        .problem(400, "JSON parse error");

    // An off-box caller (as the gateway forwards it) is refused.
    cp.post("/v1/admin/keys")
        .remote()
        .json(&json!({}))
        .send()
        .await
        .problem(403, "loopback");
    // The forwarded address is trusted only with the internal token.
    cp.post("/v1/admin/keys")
        .header("x-nvcf-gateway-auth", "not-the-token")
        .header("x-nvcf-client-addr", "10.0.0.5")
        .send()
        .await
        .expect(200);
    cp.stop().await;
}

#[tokio::test]
async fn loopback_callers_over_ipv6_and_mapped_addresses() {
    // Forwarded by the gateway: `::1` and an IPv4-mapped loopback address are loopback callers.
    let cp = Cp::start().await;
    for local in ["::1", "::ffff:127.0.0.1", "127.0.0.2"] {
        cp.post("/v1/admin/keys")
            .header("x-nvcf-gateway-auth", TOKEN)
            .header("x-nvcf-client-addr", local)
            .send()
            .await
            .expect(200);
    }
    for remote in ["::ffff:10.0.0.5", "2001:db8::1", "garbage", ""] {
        cp.post("/v1/admin/keys")
            .header("x-nvcf-gateway-auth", TOKEN)
            .header("x-nvcf-client-addr", remote)
            .send()
            .await
            .problem(403, "loopback");
    }
    cp.stop().await;
    // A dual-stack listener sees local IPv4 clients as `::ffff:127.0.0.1`.
    let dir = tempfile::tempdir().expect("temp dir");
    let cp = Cp::launch_on(dir, test_file(), "[::]:0", "127.0.0.1".parse().ok()).await;
    let token = cp.admin().await;
    cp.post("/v1/keys")
        .key_headers()
        .json(&key_body(&["list_functions"], json!([])))
        .send()
        .await
        .expect(200);
    cp.get("/v2/nvcf/functions")
        .bearer(&token)
        .send()
        .await
        .expect(200);
    cp.stop().await;
}

#[tokio::test]
async fn admin_token_mint_with_bootstrap_secret() {
    let cp = Cp::start_with(|f| f.bootstrap_secret = "bootstrap-secret-42".into()).await;
    cp.post("/v1/admin/keys")
        .send()
        .await
        .problem(401, "Bearer <bootstrap secret>");
    cp.post("/v1/admin/keys")
        .bearer("wrong-secret")
        .send()
        .await
        .problem(401, "Invalid bootstrap secret");
    cp.post("/v1/admin/keys")
        .remote()
        .send()
        .await
        .problem(401, "bootstrap secret");
    let r = cp
        .post("/v1/admin/keys")
        .bearer("bootstrap-secret-42")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.expect(200)["owner_type"], "SYSTEM");
    let r = cp
        .post("/v1/admin/keys")
        .remote()
        .bearer("bootstrap-secret-42")
        .send()
        .await;
    let token = r.expect(200)["value"].as_str().expect("value").to_owned();
    cp.get("/v2/nvcf/functions")
        .bearer(&token)
        .send()
        .await
        .expect(200);
    cp.stop().await;
}

// =========================================================================== API keys

#[tokio::test]
async fn api_key_create_shape_and_use() {
    let cp = Cp::start().await;
    let body = key_body(
        &[
            "invoke_function",
            "list_functions",
            "queue_details",
            "list_functions_details",
        ],
        json!([{"id": "*", "type": "account-functions"}, {"id": "*", "type": "authorized-functions"}]),
    );
    let r = cp.post("/v1/keys").key_headers().json(&body).send().await;
    let dto = r.expect(200).clone();
    let value = dto["value"].as_str().expect("value");
    assert!(value.starts_with("nvapi-"), "{value}");
    assert_eq!(value.len(), "nvapi-".len() + 64);
    assert!(
        dto["id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .is_some()
    );
    assert_eq!(dto["status"], "ACTIVE");
    assert_eq!(dto["owner_type"], "USER");
    assert_eq!(dto["owner_id"], OWNER);
    assert_eq!(dto["issuer_service_id"], NVCF);
    assert_eq!(dto["audience_service_ids"], json!([NVCF]));
    assert_eq!(dto["description"], "invoke key");
    assert_eq!(dto["authorizations"], body["authorizations"]);
    assert!(dto["created_at"].is_string() && dto["expires_at"].is_string());

    cp.get("/v2/nvcf/functions")
        .bearer(value)
        .send()
        .await
        .expect(200);
    // audience_service_ids defaults to the issuing service.
    let mut b = key_body(&["list_functions"], json!([]));
    b.as_object_mut()
        .expect("object")
        .remove("audience_service_ids");
    let dto = cp.create_key(&b).await;
    assert_eq!(dto["audience_service_ids"], json!([NVCF]));
    cp.stop().await;
}

#[tokio::test]
async fn api_key_create_errors() {
    let cp = Cp::start().await;
    let good = key_body(
        &["list_functions"],
        json!([{"id": "*", "type": "account-functions"}]),
    );
    let post = |b: &Value| cp.post("/v1/keys").json(b);

    // Caller headers.
    post(&good)
        .header("key-owner-id", OWNER)
        .send()
        .await
        .problem(400, "Key-Issuer-Id is not set");
    post(&good)
        .header("key-issuer-id", "someone-else")
        .header("key-owner-id", OWNER)
        .send()
        .await
        .problem(400, "Caller service not registered");
    post(&good)
        .header("key-issuer-id", NVCF)
        .send()
        .await
        .problem(400, "Key-Owner-Id is not set");

    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().expect("object").remove(k);
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with("description", json!("bad/description!")),
            "description is invalid",
        ),
        (
            with("description", json!("x".repeat(65))),
            "description is invalid",
        ),
        (with("description", json!("")), "description is invalid"),
        (without("description"), "description is invalid"),
        (
            with("expires_at", json!(at(-60))),
            "expires_at must be in the future and not more than 365 days from now",
        ),
        (
            with("expires_at", json!(at(366 * 86_400))),
            "expires_at must be in the future and not more than 365 days from now",
        ),
        (
            without("expires_at"),
            "expires_at must be in the future and not more than 365 days from now",
        ),
        (
            with("expires_at", json!("tomorrow")),
            "expires_at must be in the future and not more than 365 days from now",
        ),
        (
            with("authorizations", Value::Null),
            "authorizations must not be null",
        ),
        (without("authorizations"), "authorizations must not be null"),
        (
            with("authorizations", json!("scopes")),
            "authorizations must be a JSON object",
        ),
        (
            with("authorizations", json!({"policies": "all"})),
            "authorizations is invalid",
        ),
        (
            with(
                "authorizations",
                json!({"policies": [{"aud": NVCF, "scopes": ["list_functions"], "note": "x".repeat(2100)}]}),
            ),
            "exceeds the maximum of 2048 characters",
        ),
        (
            with("audience_service_ids", json!([])),
            "audience_service_ids invalid",
        ),
        (
            with("audience_service_ids", json!(["other-service"])),
            "audience_service_ids invalid",
        ),
    ];
    for (body, detail) in cases {
        post(&body).key_headers().send().await.problem(400, detail);
    }
    // The limits: up to 365 days is fine.
    post(&with("expires_at", json!(at(364 * 86_400))))
        .key_headers()
        .send()
        .await
        .expect(200);
    // Malformed JSON and wrong types are 400s too.
    cp.post("/v1/keys")
        .key_headers()
        .body("{\"description\":")
        .send()
        .await
        .problem(400, "JSON parse error");
    post(&with("description", json!(5)))
        .key_headers()
        .send()
        .await
        .problem(400, "description");
    cp.post("/v1/keys")
        .key_headers()
        .send()
        .await
        .problem(400, "Required request body is missing");

    // At most 8 active keys per owner and service (one exists already).
    for _ in 0..7 {
        post(&good).key_headers().send().await.expect(200);
    }
    post(&good).key_headers().send().await.problem(
        400,
        "Actor reached maximum allowed number of keys in service",
    );
    // Another owner is not affected.
    post(&good)
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "someone@else")
        .send()
        .await
        .expect(200);
    cp.stop().await;
}

#[tokio::test]
async fn api_key_management_from_off_box_callers() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let key = cp.api_key(&["list_functions"]).await;
    let body = key_body(
        &["list_functions"],
        json!([{"id": "*", "type": "account-functions"}]),
    );

    cp.post("/v1/keys")
        .remote()
        .key_headers()
        .json(&body)
        .send()
        .await
        .problem(
            401,
            "loopback caller or 'Authorization: Bearer <admin token>'",
        );
    cp.post("/v1/keys")
        .remote()
        .key_headers()
        .bearer("garbage")
        .json(&body)
        .send()
        .await
        .problem(401, "admin token");
    cp.post("/v1/keys")
        .remote()
        .key_headers()
        .bearer(&key.value)
        .json(&body)
        .send()
        .await
        .problem(403, "not an API key");
    let dto = cp
        .post("/v1/keys")
        .remote()
        .key_headers()
        .bearer(&admin)
        .json(&body)
        .send()
        .await
        .expect(200)
        .clone();
    assert!(dto["value"].as_str().expect("value").starts_with("nvapi-"));
    cp.get("/v1/keys")
        .remote()
        .key_headers()
        .send()
        .await
        .problem(401, "admin token");
    cp.get("/v1/keys")
        .remote()
        .key_headers()
        .bearer(&key.value)
        .send()
        .await
        .problem(403, "admin token");
    let list = cp
        .get("/v1/keys")
        .remote()
        .key_headers()
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(list.expect(200)["keys"].as_array().expect("keys").len(), 2);
    let path = format!("/v1/keys/{}", key.id);
    cp.get(&path)
        .remote()
        .key_headers()
        .send()
        .await
        .expect(401);
    cp.delete(&path)
        .remote()
        .key_headers()
        .send()
        .await
        .expect(401);
    cp.put(&format!("{path}/authorizations"))
        .remote()
        .key_headers()
        .json(&json!({"authorizations": {"policies": []}}))
        .send()
        .await
        .expect(401);
    cp.delete(&path)
        .remote()
        .key_headers()
        .bearer(&admin)
        .send()
        .await
        .expect(204);
    cp.stop().await;
}

#[tokio::test]
async fn api_key_list_get_delete() {
    let cp = Cp::start().await;
    let a = cp.api_key(&["list_functions"]).await;
    let b = cp.api_key(&["register_function"]).await;

    let r = cp.get("/v1/keys").key_headers().send().await;
    let keys = r.expect(200)["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 2);
    for k in &keys {
        assert!(
            k.get("value").is_none(),
            "lists never carry the secret: {k}"
        );
        assert!(
            k.get("authorizations").is_none(),
            "lists leave out authorizations: {k}"
        );
        assert_eq!(k["status"], "ACTIVE");
    }
    let ids: Vec<&str> = keys.iter().filter_map(|k| k["id"].as_str()).collect();
    assert!(ids.contains(&a.id.as_str()) && ids.contains(&b.id.as_str()));
    // Another owner sees none of them.
    let r = cp
        .get("/v1/keys")
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "other@owner")
        .send()
        .await;
    assert_eq!(r.expect(200)["keys"], json!([]));
    cp.get("/v1/keys")
        .send()
        .await
        .problem(400, "Key-Issuer-Id is not set");

    let path = format!("/v1/keys/{}", a.id);
    let r = cp.get(&path).key_headers().send().await;
    let dto = r.expect(200);
    assert_eq!(dto["id"], a.id.as_str());
    assert!(dto.get("value").is_none());
    assert_eq!(
        dto["authorizations"]["policies"][0]["scopes"],
        json!(["list_functions"])
    );
    cp.get(&path)
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "other@owner")
        .send()
        .await
        .problem(404, "Key not found");
    cp.get(&format!("/v1/keys/{}", Uuid::new_v4()))
        .key_headers()
        .send()
        .await
        .problem(404, "Key not found");
    cp.get("/v1/keys/not-a-uuid")
        .key_headers()
        .send()
        .await
        .problem(400, "Invalid UUID");
    cp.delete("/v1/keys/not-a-uuid")
        .key_headers()
        .send()
        .await
        .problem(400, "Invalid UUID");
    cp.delete(&path)
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "other@owner")
        .send()
        .await
        .problem(404, "Key not found");

    // Works, then is deleted, then stops working at once.
    cp.get("/v2/nvcf/functions")
        .bearer(&a.value)
        .send()
        .await
        .expect(200);
    let r = cp.delete(&path).key_headers().send().await;
    r.expect(204);
    assert!(r.raw.is_empty());
    cp.get("/v2/nvcf/functions")
        .bearer(&a.value)
        .send()
        .await
        .problem(401, "Invalid or unknown credential");
    cp.get(&path)
        .key_headers()
        .send()
        .await
        .problem(404, "Key not found");
    cp.delete(&path)
        .key_headers()
        .send()
        .await
        .problem(404, "Key not found");
    let r = cp.get("/v1/keys").key_headers().send().await;
    assert_eq!(r.expect(200)["keys"].as_array().expect("keys").len(), 1);
    // Admin tokens are not API keys of any owner.
    let r = cp.post("/v1/admin/keys").send().await;
    let admin_path = format!("/v1/keys/{}", r.expect(200)["id"].as_str().expect("id"));
    cp.get(&admin_path)
        .key_headers()
        .send()
        .await
        .problem(404, "Key not found");
    cp.delete(&admin_path)
        .key_headers()
        .send()
        .await
        .problem(404, "Key not found");
    cp.stop().await;
}

#[tokio::test]
async fn api_key_update_authorizations() {
    let cp = Cp::start().await;
    let k = cp.api_key(&["list_functions"]).await;
    let admin = cp.admin().await;
    let (fid, vid) = cp.create_function(&admin, "echo").await;
    let path = format!("/v1/keys/{}/authorizations", k.id);
    let new_authz = json!({"policies": [{
        "aud": NVCF, "auds": [NVCF], "product": "nv-cloud-functions",
        "resources": [{"id": "*", "type": "account-functions"}],
        "scopes": ["list_functions", "update_function"],
    }]});

    // Before: no update_function.
    cp.put(&fn_path(fid, vid))
        .bearer(&k.value)
        .json(&json!({"tags": ["a"]}))
        .send()
        .await
        .problem(403, "update_function");
    // Validation comes first.
    cp.put(&path)
        .key_headers()
        .json(&json!({"authorizations": null}))
        .send()
        .await
        .problem(400, "authorizations must not be null");
    cp.put(&path)
        .key_headers()
        .body("[")
        .send()
        .await
        .problem(400, "JSON parse error");
    cp.put(&format!("/v1/keys/{}/authorizations", Uuid::new_v4()))
        .key_headers()
        .json(&json!({"authorizations": new_authz}))
        .send()
        .await
        .problem(404, "Key not found");
    cp.put("/v1/keys/zzz/authorizations")
        .key_headers()
        .json(&json!({"authorizations": new_authz}))
        .send()
        .await
        .problem(400, "Invalid UUID");

    // The key service allows one authorization change per 3 s, counting from creation (as
    // NVIDIA's does: creating a key takes the update lock): poll until the window has passed.
    let body = json!({"authorizations": new_authz});
    let dto = eventually("the authorization update window", || {
        let call = cp.put(&path).key_headers().json(&body);
        async move {
            let r = call.send().await;
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                r.problem(429, "");
                None
            } else {
                Some(r.expect(200).clone())
            }
        }
    })
    .await;
    assert_eq!(dto["authorizations"], new_authz);
    assert_eq!(dto["id"], k.id.as_str());
    // A second update right away is too soon.
    cp.put(&path)
        .key_headers()
        .json(&body)
        .send()
        .await
        .problem(429, "at most once every 3 seconds");
    // The new scopes apply at once.
    let r = cp
        .put(&fn_path(fid, vid))
        .bearer(&k.value)
        .json(&json!({"tags": ["a"]}))
        .send()
        .await;
    assert_eq!(r.expect(200)["function"]["tags"], json!(["a"]));
    let r = cp
        .get(&format!("/v1/keys/{}", k.id))
        .key_headers()
        .send()
        .await;
    assert_eq!(r.expect(200)["authorizations"], new_authz);
    cp.stop().await;
}

#[tokio::test]
async fn introspect() {
    let cp = Cp::start().await;
    let k = cp.api_key(&["invoke_function"]).await;
    let r = cp
        .post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": k.value}))
        .send()
        .await;
    let v = r.expect(200).clone();
    assert_eq!(r.header("cache-control"), "max-age=360");
    assert_eq!(v["owner_type"], "USER");
    assert_eq!(v["owner_id"], OWNER);
    assert_eq!(v["key_id"], k.id.as_str());
    assert_eq!(v["issuer_service_id"], NVCF);
    assert_eq!(
        v["authorizations"]["policies"][0]["scopes"],
        json!(["invoke_function"])
    );
    assert!(v.get("value").is_none() && v.get("hash").is_none());

    // A key with one character changed fails its checksum: a format error, before any lookup.
    let mut unknown = k.value.clone();
    unknown.replace_range(10..11, if &k.value[10..11] == "A" { "B" } else { "A" });
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": unknown}))
        .send()
        .await
        .problem(400, "api key format invalid");
    for bad in ["nvapi-short", "", "Bearer x", "nvcf-admin-abc"] {
        cp.post("/v1/introspect")
            .json(&json!({"audience_service_id": NVCF, "key": bad}))
            .send()
            .await
            .problem(400, "api key format invalid");
    }
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": "other", "key": k.value}))
        .send()
        .await
        .problem(400, "audience_service_id invalid");
    cp.post("/v1/introspect")
        .json(&json!({"key": k.value}))
        .send()
        .await
        .problem(400, "audience_service_id invalid");
    cp.post("/v1/introspect")
        .body("{")
        .send()
        .await
        .problem(400, "JSON parse error");
    // Deleted: not found.
    cp.delete(&format!("/v1/keys/{}", k.id))
        .key_headers()
        .send()
        .await
        .expect(204);
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": k.value}))
        .send()
        .await
        .problem(404, "Key not found");
    // An admin token is not an API key.
    let admin = cp.admin().await;
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": admin}))
        .send()
        .await
        .problem(400, "api key format invalid");
    cp.stop().await;
}

#[tokio::test]
async fn introspect_unknown_but_well_formed_key() {
    // A key minted by another installation (another hash secret) is well formed but unknown.
    let other = Cp::start().await;
    let foreign = other.api_key(&["invoke_function"]).await;
    other.stop().await;
    let cp = Cp::start().await;
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": foreign.value}))
        .send()
        .await
        .problem(404, "Key not found");
    cp.get("/v2/nvcf/functions")
        .bearer(&foreign.value)
        .send()
        .await
        .problem(401, "Invalid or unknown credential");
    cp.stop().await;
}

#[tokio::test]
async fn services() {
    let cp = Cp::start().await;
    let r = cp.get("/v1/services").send().await;
    assert_eq!(
        r.expect(200),
        &json!({"services": [{
            "service_id": NVCF,
            "service_name": "nvcf-api",
            "audience_service_ids": [NVCF],
            "max_api_keys_per_user": 8,
            "max_api_key_ttl_days": 365,
            "max_authz_size_chars": 2048,
            "min_authz_update_interval_seconds": 3,
        }]})
    );
    let r = cp.get(&format!("/v1/services/{NVCF}")).send().await;
    assert_eq!(r.expect(200)["service_id"], NVCF);
    cp.get("/v1/services/nope")
        .send()
        .await
        .problem(404, "Service 'nope' not found");
    cp.stop().await;
}

// =========================================================================== functions

#[tokio::test]
async fn function_create_shape() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let body = json!({
        "name": "echo-fn",
        "containerImage": "registry.example.com/team/echo:1.0.0",
        "inferenceUrl": "/echo",
        "inferencePort": 8000,
        "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT10S", "expectedStatusCode": 200},
        "containerEnvironment": [{"key": "LOG_LEVEL", "value": "INFO"}],
        "description": "demo echo",
        "tags": ["demo"],
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "secrets": [{"name": "api-token", "value": "s3cr3t-value"}],
        "someFutureField": {"ignored": true},
    });
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&body)
        .send()
        .await;
    let f = r.expect(200)["function"].clone();
    assert_eq!(r.header("content-type"), "application/json");
    let (fid, vid) = ids(&f);
    assert_ne!(fid, vid);
    assert_eq!(f["ncaId"], "nvcf-default");
    assert_eq!(f["name"], "echo-fn");
    assert_eq!(f["status"], "INACTIVE");
    assert_eq!(f["inferenceUrl"], "/echo");
    assert_eq!(f["inferencePort"], 8000);
    assert_eq!(f["containerImage"], "registry.example.com/team/echo:1.0.0");
    assert_eq!(f["healthUri"], "/health");
    assert_eq!(f["health"], body["health"]);
    assert_eq!(f["functionType"], "DEFAULT");
    assert_eq!(f["apiBodyFormat"], "CUSTOM");
    assert_eq!(f["description"], "demo echo");
    assert_eq!(f["tags"], json!(["demo"]));
    assert_eq!(
        f["containerEnvironment"],
        json!([{"key": "LOG_LEVEL", "value": "INFO"}])
    );
    assert_eq!(f["secrets"], json!(["api-token"]));
    assert!(f["createdAt"].as_str().expect("createdAt").ends_with('Z'));
    // Nulls are omitted, secret values never leave.
    let text = String::from_utf8_lossy(&r.raw);
    assert!(!text.contains("null"), "{text}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(f.get("helmChart").is_none() && f.get("someFutureField").is_none());

    // Defaults and case-insensitive enums.
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&json!({
            "name": "stream", "inferenceUrl": "/s", "containerImage": "img:1",
            "functionType": "streaming", "apiBodyFormat": "predict_v2",
            "health": {"protocol": "grpc", "uri": "/h", "port": 9000, "timeout": "PT1.5S", "expectedStatusCode": 204},
        }))
        .send()
        .await;
    let f = r.expect(200)["function"].clone();
    assert_eq!(f["functionType"], "STREAMING");
    assert_eq!(f["apiBodyFormat"], "PREDICT_V2");
    assert_eq!(f["health"]["protocol"], "gRPC");
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&json!({"name": "defaults", "inferenceUrl": "/d", "containerImage": "img:1"}))
        .send()
        .await;
    let f = r.expect(200)["function"].clone();
    assert_eq!(f["apiBodyFormat"], "CUSTOM");
    assert_eq!(f["functionType"], "DEFAULT");
    assert_eq!(
        f["health"],
        json!({"protocol": "HTTP", "uri": "/v2/health/ready", "port": 8000, "timeout": "PT10S", "expectedStatusCode": 200})
    );
    assert_eq!(f["healthUri"], "/v2/health/ready");
    // Helm and model functions.
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&json!({"name": "helm", "inferenceUrl": "/h", "helmChart": "oci://r/c:1", "helmChartServiceName": "svc"}))
        .send()
        .await;
    assert_eq!(r.expect(200)["function"]["helmChartServiceName"], "svc");
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&json!({"name": "llm", "inferenceUrl": "/v1/chat/completions", "functionType": "LLM",
            "models": [{"name": "m1", "llmConfig": {"uris": ["/v1/chat/completions"], "routingMethod": "round_robin"}}]}))
        .send()
        .await;
    assert_eq!(r.expect(200)["function"]["functionType"], "LLM");
    cp.stop().await;
}

#[tokio::test]
async fn function_create_validation() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let base = fn_body("ok");
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().expect("object").remove(k);
        b
    };
    let health = |h: Value| with("health", h);
    let full_health = json!({"protocol": "HTTP", "uri": "/h", "port": 8000, "timeout": "PT10S", "expectedStatusCode": 200});
    let health_without = |k: &str| {
        let mut h = full_health.clone();
        h.as_object_mut().expect("object").remove(k);
        health(h)
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            without("name"),
            "field=name, rejected=null, message=must not be blank",
        ),
        (with("name", json!("")), "field=name"),
        (
            with("name", json!("-leading-dash")),
            "field=name, rejected=-leading-dash, message=must match",
        ),
        (with("name", json!("has space")), "field=name"),
        (
            with("name", json!("a".repeat(129))),
            "size must be between 1 and 128",
        ),
        (
            without("inferenceUrl"),
            "field=inferenceUrl, rejected=null, message=must not be null",
        ),
        (with("inferencePort", json!(0)), "field=inferencePort"),
        (
            with("inferencePort", json!(70000)),
            "must be between 1 and 65535",
        ),
        (
            without("containerImage"),
            "One of 'containerImage', 'models' or 'helmChart' must be specified",
        ),
        (
            with("helmChart", json!("oci://r/c:1")),
            "'containerImage' and 'helmChart' cannot be specified together",
        ),
        (
            json!({"name": "h", "inferenceUrl": "/h", "helmChart": "oci://r/c:1"}),
            "'helmChart' and 'helmChartServiceName' must be specified together",
        ),
        (
            json!({"name": "h", "inferenceUrl": "/h", "helmChart": "oci://r/c:1", "helmChartServiceName": "s", "containerArgs": "x"}),
            "cannot be specified with 'helmChart'",
        ),
        (
            with(
                "containerEnvironment",
                json!([{"key": "NVCF_FOO", "value": "1"}]),
            ),
            "'NVCF_FOO' is reserved",
        ),
        (
            with(
                "containerEnvironment",
                json!([{"key": "nvcf_lower", "value": "1"}]),
            ),
            "is reserved",
        ),
        (
            with("containerEnvironment", json!([{"value": "1"}])),
            "containerEnvironment[].key",
        ),
        (
            with("description", json!("d".repeat(257))),
            "field=description",
        ),
        (
            with(
                "tags",
                json!((0..65).map(|i| format!("t{i}")).collect::<Vec<_>>()),
            ),
            "field=tags, rejected=65, message=size must be between 0 and 64",
        ),
        (
            with("tags", json!(["ok", "bad tag"])),
            "field=tags[], rejected=bad tag",
        ),
        (with("tags", json!(["x".repeat(129)])), "field=tags[]"),
        (
            with(
                "secrets",
                json!([{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]),
            ),
            "Duplicate secret name 'a'",
        ),
        (
            with("secrets", json!([{"name": "-bad", "value": "1"}])),
            "field=secrets[].name",
        ),
        (
            with("secrets", json!([{"name": "a", "value": ""}])),
            "value must be 1 to 32768 characters",
        ),
        (
            with("secrets", json!([{"name": "a", "value": 5}])),
            "string or a JSON object",
        ),
        (
            with("secrets", json!([{"name": "a"}])),
            "field=secrets[].value",
        ),
        (
            with("rateLimit", json!({"rateLimit": "10-X"})),
            "field=rateLimit, rejected=10-X",
        ),
        (
            with("rateLimit", json!({"rateLimit": "10-S,5-S"})),
            "no unit repeated",
        ),
        (
            with("rateLimit", json!({"rateLimit": "0-S"})),
            "field=rateLimit",
        ),
        (
            with("rateLimit", json!({})),
            "at least one of 'rateLimit', 'perNcaIdRate' or 'perUserRate'",
        ),
        (
            with(
                "rateLimit",
                json!({"perUserRate": "5-M", "exemptedNcaIds": ["a"]}),
            ),
            "exemptedNcaIds requires 'rateLimit'",
        ),
        (health_without("protocol"), "field=health.protocol"),
        (health_without("uri"), "field=health.uri"),
        (health_without("port"), "field=health.port"),
        (
            health_without("timeout"),
            "field=health.timeout, rejected=null",
        ),
        (
            health_without("expectedStatusCode"),
            "field=health.expectedStatusCode",
        ),
        (
            health(
                json!({"protocol": "HTTP", "uri": "/h", "port": 8000, "timeout": "10s", "expectedStatusCode": 200}),
            ),
            "field=health.timeout, rejected=10s",
        ),
        (
            health(
                json!({"protocol": "HTTP", "uri": "/h", "port": 0, "timeout": "PT1S", "expectedStatusCode": 200}),
            ),
            "field=health.port",
        ),
        (
            health(
                json!({"protocol": "HTTP", "uri": "/h", "port": 80, "timeout": "PT1S", "expectedStatusCode": 1000}),
            ),
            "field=health.expectedStatusCode",
        ),
        (
            json!({"name": "l", "inferenceUrl": "/l", "containerImage": "i", "functionType": "LLM"}),
            "Function type 'LLM' requires 'models'",
        ),
        (
            json!({"name": "m", "inferenceUrl": "/m", "models": [{"name": "a", "version": "1", "uri": "u"}, {"name": "a", "version": "1", "uri": "u"}]}),
            "Model names must be unique",
        ),
        (
            json!({"name": "m", "inferenceUrl": "/m", "models": [{"name": "a"}]}),
            "'version' and 'uri' are required",
        ),
        (with("telemetries", json!({})), "at least one telemetry id"),
        (
            with("resources", json!([{"name": "r"}])),
            "'name', 'version' and 'uri' are required",
        ),
        // Wrong JSON types name the field and the problem.
        (with("inferencePort", json!("abc")), "inferencePort"),
        (
            with("inferencePort", json!("abc")),
            "invalid type: string \"abc\"",
        ),
        (with("tags", json!("demo")), "tags"),
        (
            with("functionType", json!("BATCH")),
            "unknown FunctionType 'BATCH'",
        ),
        (health(json!({"protocol": "SMTP"})), "health.protocol"),
    ];
    for (body, detail) in cases {
        let r = cp
            .post("/v2/nvcf/functions")
            .bearer(&admin)
            .json(&body)
            .send()
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            String::from_utf8_lossy(&r.raw)
        );
        r.problem(400, detail);
        let d = r.json["detail"].as_str().unwrap_or_default();
        assert!(!d.is_empty());
    }
    // Nothing was created by the refused requests.
    let r = cp.get("/v2/nvcf/functions").bearer(&admin).send().await;
    assert_eq!(r.expect(200)["functions"], json!([]));
    // Bean-validation details have NVCF's shape.
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&without("name"))
        .send()
        .await;
    assert_eq!(
        r.problem(400, "")["detail"],
        "Validation failed: [object=createFunctionRequest, field=name, rejected=null, message=must not be blank]"
    );
    // Rejected values are cut at 256 characters.
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&with("description", json!("d".repeat(400))))
        .send()
        .await;
    let d = r.problem(400, "field=description")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        d.contains(&"d".repeat(256)) && !d.contains(&"d".repeat(257)),
        "{d}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn function_create_bad_bodies() {
    let cp = Cp::start_with(|f| f.max_body_bytes = 4096).await;
    let admin = cp.admin().await;
    let post = || cp.post("/v2/nvcf/functions").bearer(&admin);
    post()
        .body("{\"name\": ")
        .send()
        .await
        .problem(400, "JSON parse error");
    post()
        .body("not json at all")
        .send()
        .await
        .problem(400, "JSON parse error");
    post()
        .body("[1,2]")
        .send()
        .await
        .problem(400, "JSON parse error");
    post().body("null").send().await.expect(400);
    post()
        .send()
        .await
        .problem(400, "Required request body is missing");
    post()
        .body("   ")
        .send()
        .await
        .problem(400, "Required request body is missing");
    post()
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .problem(400, "JSON parse error");
    // Over max_body_bytes: 413, whether or not the length was declared up front.
    let mut big = fn_body("big");
    big["description"] = json!("x".repeat(8192));
    post()
        .json(&big)
        .send()
        .await
        .problem(413, "exceeds the limit of 4096 bytes");
    let huge = vec![b' '; 256 * 1024];
    post()
        .body(huge)
        .send()
        .await
        .problem(413, "exceeds the limit");
    // The connection is still usable after a refused body.
    post().json(&fn_body("after")).send().await.expect(200);
    cp.stop().await;
}

#[tokio::test]
async fn function_count_is_capped() {
    let cp = Cp::start_with(|f| f.max_functions = 2).await;
    let admin = cp.admin().await;
    let (fid, _) = cp.create_function(&admin, "one").await;
    cp.create_function(&admin, "two").await;
    cp.post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&fn_body("three"))
        .send()
        .await
        .problem(
            400,
            "Account 'nvcf-default': Reached or exceeded the max limit for the number of functions allowed: 2",
        );
    // Versions of an existing function do not count.
    cp.create_version(&admin, fid).await;
    cp.stop().await;
}

#[tokio::test]
async fn function_versions_list_ids_get() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let (fid, vid) = cp.create_function(&admin, "multi").await;
    let (other, other_vid) = cp.create_function(&admin, "other").await;

    // Create version: same id, new versionId.
    let r = cp
        .post(&format!("/v2/nvcf/functions/{fid}/versions"))
        .bearer(&admin)
        .json(&fn_body("multi"))
        .send()
        .await;
    let (id2, vid2) = ids(&r.expect(200)["function"]);
    assert_eq!(id2, fid);
    assert_ne!(vid2, vid);
    assert_eq!(r.json["function"]["status"], "INACTIVE");
    let unknown = Uuid::new_v4();
    cp.post(&format!("/v2/nvcf/functions/{unknown}/versions"))
        .bearer(&admin)
        .json(&fn_body("x"))
        .send()
        .await
        .problem(
            404,
            &format!("Function id '{unknown}': Not found in account 'nvcf-default'"),
        );
    let mut streaming = fn_body("multi");
    streaming["functionType"] = json!("STREAMING");
    cp.post(&format!("/v2/nvcf/functions/{fid}/versions"))
        .bearer(&admin)
        .json(&streaming)
        .send()
        .await
        .problem(
            400,
            "All versions must have the same function type 'DEFAULT'",
        );
    cp.post("/v2/nvcf/functions/nope/versions")
        .bearer(&admin)
        .json(&fn_body("x"))
        .send()
        .await
        .problem(400, "Invalid UUID");

    // List: all visibilities by default, private = all, public and authorized = none.
    let list = |q: &'static str| {
        let call = cp.get(&format!("/v2/nvcf/functions{q}")).bearer(&admin);
        async move { call.send().await }
    };
    let r = list("").await;
    assert_eq!(
        r.expect(200)["functions"].as_array().expect("list").len(),
        3
    );
    let r = list("?visibility=private").await;
    assert_eq!(
        r.expect(200)["functions"].as_array().expect("list").len(),
        3
    );
    let r = list("?visibility=public").await;
    assert_eq!(r.expect(200)["functions"], json!([]));
    let r = list("?visibility=authorized").await;
    assert_eq!(r.expect(200)["functions"], json!([]));
    let r = list("?visibility=public,private").await;
    assert_eq!(
        r.expect(200)["functions"].as_array().expect("list").len(),
        3
    );
    let r = list("?visibility=PRIVATE&visibility=public").await;
    assert_eq!(
        r.expect(200)["functions"].as_array().expect("list").len(),
        3
    );
    list("?visibility=everyone")
        .await
        .problem(400, "Failed to convert 'visibility' with value: 'everyone'");

    // Ids: distinct function ids.
    let r = cp.get("/v2/nvcf/functions/ids").bearer(&admin).send().await;
    let mut got: Vec<String> = r.expect(200)["functionIds"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    got.sort();
    let mut want = vec![fid.to_string(), other.to_string()];
    want.sort();
    assert_eq!(got, want);
    let r = cp
        .get("/v2/nvcf/functions/ids?visibility=public")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(r.expect(200)["functionIds"], json!([]));
    cp.get("/v2/nvcf/functions/ids?visibility=x")
        .bearer(&admin)
        .send()
        .await
        .problem(400, "visibility");

    // Versions of one function.
    let r = cp
        .get(&format!("/v2/nvcf/functions/{fid}/versions"))
        .bearer(&admin)
        .send()
        .await;
    let vs: Vec<Uuid> = r.expect(200)["functions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|f| ids(f).1)
        .collect();
    assert_eq!(vs, vec![vid, vid2]);
    cp.get(&format!("/v2/nvcf/functions/{unknown}/versions"))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Not found in account");

    // Get.
    let f = cp.function(&admin, fid, vid).await;
    assert_eq!(ids(&f), (fid, vid));
    cp.get(&fn_path(fid, other_vid))
        .bearer(&admin)
        .send()
        .await
        .problem(
            404,
            &format!(
                "Function id '{fid}', version '{other_vid}': Not found in account 'nvcf-default'"
            ),
        );
    cp.get(&fn_path(fid, Uuid::new_v4()))
        .bearer(&admin)
        .send()
        .await
        .expect(404);
    cp.get(&format!("/v2/nvcf/functions/{fid}/versions/not-a-uuid"))
        .bearer(&admin)
        .send()
        .await
        .problem(
            400,
            "Failed to convert 'functionVersionId' with value: 'not-a-uuid'",
        );
    cp.get(&format!("/v2/nvcf/functions/xyz/versions/{vid}"))
        .bearer(&admin)
        .send()
        .await
        .problem(400, "'functionId'");
    cp.get(&format!("{}?includeSecrets=maybe", fn_path(fid, vid)))
        .bearer(&admin)
        .send()
        .await
        .problem(400, "includeSecrets");
    cp.stop().await;
}

#[tokio::test]
async fn function_get_hides_secret_values() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let mut body = fn_body("secretive");
    body["secrets"] = json!([
        {"name": "token", "value": "very-secret-1"},
        {"name": "cfg.json", "value": {"password": "very-secret-2"}},
    ]);
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&body)
        .send()
        .await;
    let (fid, vid) = ids(&r.expect(200)["function"]);
    let r = cp.get(&fn_path(fid, vid)).bearer(&admin).send().await;
    assert_eq!(
        r.expect(200)["function"]["secrets"],
        json!(["token", "cfg.json"])
    );
    let text = String::from_utf8_lossy(&r.raw).into_owned();
    assert!(!text.contains("very-secret"), "{text}");
    let r = cp
        .get(&format!("{}?includeSecrets=false", fn_path(fid, vid)))
        .bearer(&admin)
        .send()
        .await;
    assert!(
        r.expect(200)["function"].get("secrets").is_none(),
        "{}",
        r.json
    );
    let r = cp
        .get(&format!("{}?includeSecrets=TRUE", fn_path(fid, vid)))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        r.expect(200)["function"]["secrets"],
        json!(["token", "cfg.json"])
    );
    for path in [
        "/v2/nvcf/functions".to_owned(),
        format!("/v2/nvcf/functions/{fid}/versions"),
    ] {
        let r = cp.get(&path).bearer(&admin).send().await;
        r.expect(200);
        assert!(!String::from_utf8_lossy(&r.raw).contains("very-secret"));
    }
    cp.stop().await;
}

#[tokio::test]
async fn function_update_and_metadata_alias() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let mut body = fn_body("upd");
    body["tags"] = json!(["old", "keep"]);
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&body)
        .send()
        .await;
    let (fid, vid) = ids(&r.expect(200)["function"]);

    let r = cp
        .put(&fn_path(fid, vid))
        .bearer(&admin)
        .json(&json!({"tags": ["new"], "unknownField": 1}))
        .send()
        .await;
    assert_eq!(r.expect(200)["function"]["tags"], json!(["new"]));
    assert_eq!(cp.function(&admin, fid, vid).await["tags"], json!(["new"]));
    let r = cp
        .put(&fn_path(fid, vid))
        .bearer(&admin)
        .json(&json!({"rateLimit": {"rateLimit": "10-S, 100-M", "syncCheck": true}}))
        .send()
        .await;
    let f = r.expect(200)["function"].clone();
    assert_eq!(
        f["rateLimit"],
        json!({"rateLimit": "10-S, 100-M", "syncCheck": true})
    );
    assert_eq!(f["tags"], json!(["new"]), "omitted fields keep their value");

    let meta = format!("/v2/nvcf/metadata/functions/{fid}/versions/{vid}");
    let r = cp
        .put(&meta)
        .bearer(&admin)
        .json(&json!({"tags": ["via-alias"]}))
        .send()
        .await;
    assert_eq!(r.expect(200)["function"]["tags"], json!(["via-alias"]));
    let r = cp
        .put(&meta)
        .bearer(&admin)
        .json(&json!({"tags": []}))
        .send()
        .await;
    assert!(r.expect(200)["function"].get("tags").is_none());

    for path in [fn_path(fid, vid), meta.clone()] {
        cp.put(&path)
            .bearer(&admin)
            .json(&json!({}))
            .send()
            .await
            .problem(
                400,
                "At least one of 'tags', 'rateLimit', 'modelUpdates' or 'llmInvocationConfig'",
            );
        cp.put(&path)
            .bearer(&admin)
            .json(&json!({"tags": ["bad tag"]}))
            .send()
            .await
            .problem(400, "field=tags[]");
        cp.put(&path)
            .bearer(&admin)
            .json(&json!({"rateLimit": {"rateLimit": "fast"}}))
            .send()
            .await
            .problem(400, "field=rateLimit");
        cp.put(&path)
            .bearer(&admin)
            .json(
                &json!({"modelUpdates": [{"modelName": "m", "llmConfig": {"routingMethod": "x"}}]}),
            )
            .send()
            .await
            .problem(400, "Model 'm' is not part of this function version");
        cp.put(&path)
            .bearer(&admin)
            .json(&json!({"llmInvocationConfig": {}}))
            .send()
            .await
            .problem(400, "only allowed for functions of type 'LLM'");
        cp.put(&path)
            .bearer(&admin)
            .send()
            .await
            .problem(400, "Required request body is missing");
        cp.put(&path)
            .bearer(&admin)
            .body("{")
            .send()
            .await
            .problem(400, "JSON parse error");
        cp.put(&path)
            .bearer(&admin)
            .json(&json!({"tags": "x"}))
            .send()
            .await
            .problem(400, "tags");
    }
    let unknown = Uuid::new_v4();
    cp.put(&fn_path(fid, unknown))
        .bearer(&admin)
        .json(&json!({"tags": ["a"]}))
        .send()
        .await
        .problem(404, "Not found in account");
    cp.put(&format!("/v2/nvcf/metadata/functions/{fid}/versions/bad"))
        .bearer(&admin)
        .json(&json!({"tags": ["a"]}))
        .send()
        .await
        .problem(400, "Invalid UUID");

    // LLM model updates.
    let r = cp
        .post("/v2/nvcf/functions")
        .bearer(&admin)
        .json(&json!({"name": "llm", "inferenceUrl": "/v1/chat/completions", "functionType": "LLM",
            "models": [{"name": "m1", "llmConfig": {"uris": ["/v1/chat/completions"], "routingMethod": "round_robin"}}]}))
        .send()
        .await;
    let (lf, lv) = ids(&r.expect(200)["function"]);
    let r = cp
        .put(&fn_path(lf, lv))
        .bearer(&admin)
        .json(&json!({"modelUpdates": [{"modelName": "m1", "llmConfig": {"tokenRateLimit": "1000-S"}}]}))
        .send()
        .await;
    let m = &r.expect(200)["function"]["models"][0]["llmConfig"];
    assert_eq!(m["tokenRateLimit"], "1000-S");
    assert_eq!(m["routingMethod"], "round_robin");
    cp.put(&fn_path(lf, lv))
        .bearer(&admin)
        .json(&json!({"modelUpdates": [{"modelName": "m1", "llmConfig": {}}]}))
        .send()
        .await
        .problem(400, "must set 'tokenRateLimit' or 'routingMethod'");
    cp.stop().await;
}

#[tokio::test]
async fn function_delete_removes_version_and_deployment() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "del").await;
    let vid2 = cp.create_version(&admin, fid).await;
    let dep = cp.deploy(&admin, fid, vid, 1, 1).await;
    let did = dep["deploymentId"]
        .as_str()
        .expect("deploymentId")
        .to_owned();
    eventually("an instance on w1", || async {
        (!cp.instances_of("w1").await.is_empty()).then_some(())
    })
    .await;

    let r = cp.delete(&fn_path(fid, vid)).bearer(&admin).send().await;
    r.expect(204);
    assert!(r.raw.is_empty());
    cp.get(&fn_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Not found in account");
    cp.delete(&fn_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Not found in account");
    cp.get(&format!("/v2/nvcf/deployments/{did}"))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Not found in account");
    cp.get(&dep_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .expect(404);
    assert!(
        cp.instances_of("w1").await.is_empty(),
        "the deployment's instances are gone"
    );
    // The other version is untouched.
    assert_eq!(ids(&cp.function(&admin, fid, vid2).await), (fid, vid2));
    cp.delete(&fn_path(fid, vid2))
        .bearer(&admin)
        .send()
        .await
        .expect(204);
    cp.get(&format!("/v2/nvcf/functions/{fid}/versions"))
        .bearer(&admin)
        .send()
        .await
        .expect(404);
    cp.delete(&format!("/v2/nvcf/functions/{fid}/versions/x"))
        .bearer(&admin)
        .send()
        .await
        .problem(400, "Invalid UUID");
    cp.stop().await;
}

// =========================================================================== deployments

#[tokio::test]
async fn deployment_needs_registered_workers() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let (fid, vid) = cp.create_function(&admin, "nowhere").await;
    cp.post(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&dep_body(1, 1))
        .send()
        .await
        .problem(400, "No cluster groups found");
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "INACTIVE");
    cp.stop().await;
}

#[tokio::test]
async fn deployment_create_and_validation() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "dep").await;
    let spec = |f: &dyn Fn(&mut Value)| {
        let mut b = dep_body(1, 2);
        f(&mut b["deploymentSpecifications"][0]);
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            spec(&|s| s["gpu"] = json!("X")),
            "Invalid GPU 'X' specified",
        ),
        (
            spec(&|s| s["instanceType"] = json!("X")),
            "Invalid InstanceType 'X' specified",
        ),
        (
            spec(&|s| s["backend"] = json!("elsewhere")),
            "Invalid backend 'elsewhere' specified",
        ),
        (
            spec(&|s| {
                s["minInstances"] = json!(3);
                s["maxInstances"] = json!(2);
            }),
            "minInstances (3) must be less than or equal to maxInstances (2)",
        ),
        (
            spec(&|s| s["maxRequestConcurrency"] = json!(0)),
            "field=deploymentSpecifications[0].maxRequestConcurrency, rejected=0, message=must be greater than or equal to 1",
        ),
        (
            spec(&|s| s["maxRequestConcurrency"] = json!(16385)),
            "rejected=16385, message=must be less than or equal to 16384",
        ),
        (
            spec(&|s| {
                s.as_object_mut().expect("spec").remove("gpu");
            }),
            "field=deploymentSpecifications[0].gpu, rejected=null, message=must not be null",
        ),
        (
            spec(&|s| {
                s.as_object_mut().expect("spec").remove("instanceType");
            }),
            "field=deploymentSpecifications[0].instanceType",
        ),
        (
            spec(&|s| {
                s.as_object_mut().expect("spec").remove("minInstances");
            }),
            "field=deploymentSpecifications[0].minInstances",
        ),
        (
            spec(&|s| s["maxInstances"] = json!(0)),
            "field=deploymentSpecifications[0].maxInstances",
        ),
        (
            spec(&|s| s["minInstances"] = json!(-1)),
            "must be greater than or equal to 0",
        ),
        (
            spec(&|s| s["clusters"] = json!(["local"])),
            "'backend' and 'clusters' cannot be specified together",
        ),
        (
            spec(&|s| s["configuration"] = json!({"a": 1})),
            "only allowed for Helm-based functions",
        ),
        (
            spec(&|s| s["preferredOrder"] = json!(100)),
            "preferredOrder",
        ),
        (spec(&|s| s["minInstances"] = json!("one")), "minInstances"),
        (
            json!({"deploymentSpecifications": []}),
            "field=deploymentSpecifications, rejected=null, message=must not be empty",
        ),
        (json!({}), "deploymentSpecifications"),
    ];
    for (body, detail) in cases {
        let r = cp
            .post(&dep_path(fid, vid))
            .bearer(&admin)
            .json(&body)
            .send()
            .await;
        r.problem(400, detail);
    }
    cp.post(&dep_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .problem(400, "Required request body");
    cp.post(&dep_path(fid, vid))
        .bearer(&admin)
        .body("{")
        .send()
        .await
        .problem(400, "JSON parse error");
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "INACTIVE");
    let unknown = Uuid::new_v4();
    cp.post(&dep_path(fid, unknown))
        .bearer(&admin)
        .json(&dep_body(1, 1))
        .send()
        .await
        .problem(404, "Not found in account");
    cp.post(&format!(
        "/v2/nvcf/deployments/functions/{fid}/versions/bad"
    ))
    .bearer(&admin)
    .json(&dep_body(1, 1))
    .send()
    .await
    .problem(400, "Invalid UUID");

    // Names match case-insensitively and come back canonical; backend defaults to the group.
    let body = json!({"deploymentSpecifications": [{
        "gpu": "a10g", "instanceType": "ncp.gpu.a10g_1x", "minInstances": 1, "maxInstances": 1,
    }]});
    let r = cp
        .post(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&body)
        .send()
        .await;
    let d = r.expect(200)["deployment"].clone();
    assert_eq!(d["functionId"], fid.to_string());
    assert_eq!(d["functionVersionId"], vid.to_string());
    assert!(
        d["deploymentId"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .is_some()
    );
    assert_eq!(d["functionName"], "dep");
    assert_eq!(d["ncaId"], "nvcf-default");
    assert_eq!(d["functionStatus"], "DEPLOYING");
    let s = &d["deploymentSpecifications"][0];
    assert!(
        s["gpuSpecificationId"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .is_some()
    );
    assert_eq!(s["gpu"], GPU);
    assert_eq!(s["instanceType"], INSTANCE_TYPE);
    assert_eq!(s["backend"], GROUP);
    assert_eq!(s["minInstances"], 1);
    assert_eq!(s["maxInstances"], 1);
    assert_eq!(s["maxRequestConcurrency"], 1);
    assert!(d["createdAt"].is_string() && d["lastUpdatedAt"].is_string());
    assert!(d.get("healthInfo").is_none());
    assert!(!String::from_utf8_lossy(&r.raw).contains("null"));
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "DEPLOYING");

    // A second POST while DEPLOYING.
    cp.post(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&dep_body(1, 1))
        .send()
        .await
        .problem(
            400,
            &format!("Function id '{fid}', version '{vid}': Status DEPLOYING, use PATCH endpoint to update gpu-specification"),
        );

    // minInstances 0 everywhere: ACTIVE at once; and a second POST on ACTIVE is refused too.
    let (f0, v0) = cp.create_function(&admin, "zero").await;
    let d = cp.deploy(&admin, f0, v0, 0, 1).await;
    assert_eq!(d["functionStatus"], "ACTIVE");
    assert_eq!(cp.function(&admin, f0, v0).await["status"], "ACTIVE");
    cp.post(&dep_path(f0, v0))
        .bearer(&admin)
        .json(&dep_body(0, 1))
        .send()
        .await
        .problem(400, "Status ACTIVE, use PATCH endpoint");
    cp.stop().await;
}

#[tokio::test]
async fn deployment_get_patch_put_delete() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "getme").await;
    let created = cp.deploy(&admin, fid, vid, 1, 1).await;
    let did = created["deploymentId"].as_str().expect("id").to_owned();
    let sid = created["deploymentSpecifications"][0]["gpuSpecificationId"]
        .as_str()
        .expect("spec id")
        .to_owned();

    // GET by function/version and by id.
    let r = cp.get(&dep_path(fid, vid)).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["deployment"]["deploymentId"], did.as_str());
    let by_id = format!("/v2/nvcf/deployments/{did}");
    let r = cp.get(&by_id).bearer(&admin).send().await;
    assert_eq!(
        r.expect(200)["deployment"]["functionVersionId"],
        vid.to_string()
    );
    let (f2, v2) = cp.create_function(&admin, "undeployed").await;
    cp.get(&dep_path(f2, v2))
        .bearer(&admin)
        .send()
        .await
        .problem(
            404,
            &format!("Function id '{f2}', version '{v2}': Deployment not found"),
        );
    cp.get(&dep_path(f2, Uuid::new_v4()))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Not found");
    let unknown = Uuid::new_v4();
    cp.get(&format!("/v2/nvcf/deployments/{unknown}"))
        .bearer(&admin)
        .send()
        .await
        .problem(
            404,
            &format!("Deployment id '{unknown}': Not found in account 'nvcf-default'"),
        );
    cp.get("/v2/nvcf/deployments/not-a-uuid")
        .bearer(&admin)
        .send()
        .await
        .problem(
            400,
            "Failed to convert 'deploymentId' with value: 'not-a-uuid'",
        );

    // PATCH one specification.
    let patch = format!("/v2/nvcf/deployments/{did}/gpu-specifications/{sid}");
    let r = cp
        .patch(&patch)
        .bearer(&admin)
        .json(&json!({"maxInstances": 3}))
        .send()
        .await;
    let s = r.expect(200)["gpuSpecification"].clone();
    assert_eq!(s["gpuSpecificationId"], sid.as_str());
    assert_eq!(s["maxInstances"], 3);
    assert_eq!(s["minInstances"], 1);
    assert_eq!(s["gpu"], GPU);
    let r = cp
        .patch(&patch)
        .bearer(&admin)
        .json(&json!({"minInstances": 2, "maxInstances": 2, "autoscalingConfigurationPolicy": "custom_configuration"}))
        .send()
        .await;
    let s = r.expect(200)["gpuSpecification"].clone();
    assert_eq!(
        (s["minInstances"].clone(), s["maxInstances"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(s["autoscalingConfigurationPolicy"], "CUSTOM_CONFIGURATION");
    let r = cp.get(&by_id).bearer(&admin).send().await;
    assert_eq!(
        r.expect(200)["deployment"]["deploymentSpecifications"][0]["minInstances"],
        2
    );
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({}))
        .send()
        .await
        .problem(400, "At least one of 'maxInstances', 'minInstances'");
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"minInstances": 5}))
        .send()
        .await
        .problem(
            400,
            "minInstances (5) must be less than or equal to maxInstances (2)",
        );
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"minInstances": -1}))
        .send()
        .await
        .problem(400, "field=minInstances");
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"maxInstances": 0}))
        .send()
        .await
        .problem(400, "field=maxInstances");
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"autoscalingConfigurationPolicy": "WHATEVER"}))
        .send()
        .await
        .problem(400, "autoscalingConfigurationPolicy");
    cp.patch(&patch)
        .bearer(&admin)
        .body("{")
        .send()
        .await
        .problem(400, "JSON parse error");
    cp.patch(&patch)
        .bearer(&admin)
        .send()
        .await
        .problem(400, "Required request body");
    let other_spec = Uuid::new_v4();
    cp.patch(&format!(
        "/v2/nvcf/deployments/{did}/gpu-specifications/{other_spec}"
    ))
    .bearer(&admin)
    .json(&json!({"maxInstances": 2}))
    .send()
    .await
    .problem(404, &format!("GPU specification '{other_spec}' not found"));
    cp.patch(&format!(
        "/v2/nvcf/deployments/{unknown}/gpu-specifications/{sid}"
    ))
    .bearer(&admin)
    .json(&json!({"maxInstances": 2}))
    .send()
    .await
    .problem(404, "Not found in account");
    cp.patch(&format!(
        "/v2/nvcf/deployments/{did}/gpu-specifications/nope"
    ))
    .bearer(&admin)
    .json(&json!({"maxInstances": 2}))
    .send()
    .await
    .problem(400, "'gpuSpecificationId'");

    // Deprecated PUT: counts may change, the GPU may not.
    let r = cp
        .put(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&dep_body(0, 4))
        .send()
        .await;
    let s = r.expect(200)["deployment"]["deploymentSpecifications"][0].clone();
    assert_eq!(
        (s["minInstances"].clone(), s["maxInstances"].clone()),
        (json!(0), json!(4))
    );
    assert_eq!(s["maxRequestConcurrency"], 4);
    assert_eq!(s["gpuSpecificationId"], sid.as_str());
    let mut other_gpu = dep_body(1, 1);
    other_gpu["deploymentSpecifications"][0]["gpu"] = json!("H100");
    cp.put(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&other_gpu)
        .send()
        .await
        .problem(400, "gpu, instanceType, backend and clusters cannot change");
    let mut two = dep_body(1, 1);
    two["deploymentSpecifications"] = json!([
        two["deploymentSpecifications"][0].clone(),
        two["deploymentSpecifications"][0].clone()
    ]);
    cp.put(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&two)
        .send()
        .await
        .problem(400, "use PATCH endpoint");
    cp.put(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&dep_body(3, 1))
        .send()
        .await
        .problem(400, "must be less than or equal to maxInstances");
    cp.put(&dep_path(f2, v2))
        .bearer(&admin)
        .json(&dep_body(1, 1))
        .send()
        .await
        .problem(404, "Deployment not found");

    // DELETE (not graceful): 200 with the INACTIVE function; the deployment is gone.
    let r = cp.delete(&dep_path(fid, vid)).bearer(&admin).send().await;
    let f = r.expect(200)["function"].clone();
    assert_eq!(ids(&f), (fid, vid));
    assert_eq!(f["status"], "INACTIVE");
    cp.get(&dep_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Deployment not found");
    cp.get(&by_id).bearer(&admin).send().await.expect(404);
    assert_eq!(cp.function(&admin, fid, vid).await["status"], "INACTIVE");
    assert!(cp.instances_of("w1").await.is_empty());
    cp.delete(&dep_path(fid, vid))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Deployment not found");
    cp.delete(&format!("{}?graceful=perhaps", dep_path(fid, vid)))
        .bearer(&admin)
        .send()
        .await
        .problem(400, "graceful");
    // It can be deployed again.
    cp.deploy(&admin, fid, vid, 1, 1).await;
    cp.stop().await;
}

#[tokio::test]
async fn deployment_error_status_blocks_redeploy() {
    // The worker heartbeats once: with the usual 500 ms it could be LOST (its failed instance
    // dropped, and the error with it) before the deployment is read on a loaded machine.
    let cp = Cp::start_with(|f| f.heartbeat_timeout = Duration::from_secs(10)).await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "broken").await;
    cp.deploy(&admin, fid, vid, 1, 1).await;
    let inst = eventually("an instance", || async {
        cp.instances_of("w1").await.first().copied()
    })
    .await;
    cp.heartbeat("w1", vec![report(inst, InstanceState::Failed, 0)])
        .await
        .expect(200);
    cp.wait_status(&admin, fid, vid, "ERROR").await;
    let r = cp.get(&dep_path(fid, vid)).bearer(&admin).send().await;
    let d = r.expect(200)["deployment"].clone();
    assert_eq!(d["functionStatus"], "ERROR");
    assert_eq!(
        d["healthInfo"],
        json!([{"gpu": GPU, "backend": GROUP, "instanceType": INSTANCE_TYPE, "error": "image pull failed"}])
    );
    cp.post(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&dep_body(1, 1))
        .send()
        .await
        .problem(400, "Function already has a deployment with errors");
    let r = cp.delete(&dep_path(fid, vid)).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["function"]["status"], "INACTIVE");
    cp.deploy(&admin, fid, vid, 1, 1).await;
    cp.stop().await;
}

// =========================================================================== cluster groups, GPUs, queues

#[tokio::test]
async fn cluster_groups_and_supported_gpus() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let r = cp.get("/v2/nvcf/clusterGroups").bearer(&admin).send().await;
    assert_eq!(r.expect(200), &json!({"clusterGroups": []}));
    let r = cp.get("/v2/nvcf/supportedGpus").bearer(&admin).send().await;
    assert_eq!(r.expect(200), &json!([]));

    cp.register_worker("w1").await.expect(200);
    let r = cp.get("/v2/nvcf/clusterGroups").bearer(&admin).send().await;
    let groups = r.expect(200)["clusterGroups"].clone();
    assert_eq!(groups.as_array().expect("groups").len(), 1);
    let g = &groups[0];
    assert_eq!(g["name"], GROUP);
    assert!(
        g["id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .is_some()
    );
    assert_eq!(g["ncaId"], "nvcf-default");
    assert_eq!(g["authorizedNcaIds"], json!(["nvcf-default"]));
    assert_eq!(
        g["gpus"],
        json!([{"name": GPU, "instanceTypes": [{"name": INSTANCE_TYPE, "description": "One A10G", "default": true}]}])
    );
    assert_eq!(g["clusters"][0]["name"], "local");
    let r = cp.get("/v2/nvcf/supportedGpus").bearer(&admin).send().await;
    assert_eq!(r.expect(200), &json!([{"gpu": GPU, "backend": GROUP}]));

    // list_cluster_groups is a JWT-only scope in NVCF: an API key holding it is refused.
    let key = cp
        .api_key(&["list_cluster_groups", "register_function", "list_functions"])
        .await;
    cp.get("/v2/nvcf/clusterGroups")
        .bearer(&key.value)
        .send()
        .await
        .problem(403, "list_cluster_groups");
    cp.get("/v2/nvcf/supportedGpus")
        .bearer(&key.value)
        .send()
        .await
        .expect(200);
    let key = cp.api_key(&["list_functions"]).await;
    cp.get("/v2/nvcf/supportedGpus")
        .bearer(&key.value)
        .send()
        .await
        .problem(403, "register_function");
    cp.stop().await;
}

#[tokio::test]
async fn queues() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "queued").await;
    let vid2 = cp.create_version(&admin, fid).await;
    let fq = format!("/v2/nvcf/queues/functions/{fid}");
    let vq = format!("/v2/nvcf/queues/functions/{fid}/versions/{vid}");
    let not_deployed =
        format!("Function id '{fid}': Queue not found - Function is likely not deployed");
    cp.get(&fq)
        .bearer(&admin)
        .send()
        .await
        .problem(404, &not_deployed);
    cp.get(&vq)
        .bearer(&admin)
        .send()
        .await
        .problem(404, &not_deployed);

    cp.deploy(&admin, fid, vid, 1, 1).await;
    let r = cp.get(&fq).bearer(&admin).send().await;
    assert_eq!(
        r.expect(200),
        &json!({"functionId": fid, "queues": [{
            "functionVersionId": vid, "functionName": "queued", "functionStatus": "DEPLOYING", "queueDepth": 0,
        }]})
    );
    let r = cp.get(&vq).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["queues"][0]["queueDepth"], 0);

    // Gateways report their waiting invocations; the endpoints answer the sum of the reports.
    let report = |depth: u64| json!({"queues": [{"functionVersionId": vid, "queueDepth": depth}], "validForMs": 60_000});
    cp.post("/internal/v1/gateways/g1/queues")
        .bearer(TOKEN)
        .json(&report(3))
        .send()
        .await
        .expect(200);
    cp.post("/internal/v1/gateways/g2/queues")
        .bearer(TOKEN)
        .json(&report(4))
        .send()
        .await
        .expect(200);
    let r = cp.get(&fq).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["queues"][0]["queueDepth"], 7);
    // A new report replaces the gateway's last one; an empty one clears it.
    cp.post("/internal/v1/gateways/g1/queues")
        .bearer(TOKEN)
        .json(&json!({"queues": [], "validForMs": 60_000}))
        .send()
        .await
        .expect(200);
    let r = cp.get(&vq).bearer(&admin).send().await;
    assert_eq!(r.expect(200)["queues"][0]["queueDepth"], 4);
    // Only gateways (the internal credential) report.
    cp.post("/internal/v1/gateways/g3/queues")
        .bearer(&admin)
        .json(&report(100))
        .send()
        .await
        .problem(401, "Invalid internal credential");
    cp.post("/internal/v1/gateways/g3/queues")
        .bearer(TOKEN)
        .json(&json!({"queues": [{"functionVersionId": "nope", "queueDepth": 1}], "validForMs": 1}))
        .send()
        .await
        .problem(400, "");
    cp.get(&format!("/v2/nvcf/queues/functions/{fid}/versions/{vid2}"))
        .bearer(&admin)
        .send()
        .await
        .problem(404, &not_deployed);
    let unknown = Uuid::new_v4();
    cp.get(&format!("/v2/nvcf/queues/functions/{unknown}"))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "Not found in account");
    cp.get(&format!(
        "/v2/nvcf/queues/functions/{fid}/versions/{unknown}"
    ))
    .bearer(&admin)
    .send()
    .await
    .problem(404, "Not found in account");
    cp.get("/v2/nvcf/queues/functions/nope")
        .bearer(&admin)
        .send()
        .await
        .problem(400, "Invalid UUID");
    cp.get(&format!("/v2/nvcf/queues/functions/{fid}/versions/nope"))
        .bearer(&admin)
        .send()
        .await
        .problem(400, "'versionId'");
    cp.stop().await;
}

// =========================================================================== scopes

#[tokio::test]
async fn resource_entries_limit_a_key_to_one_function() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "mine").await;
    let (other, other_vid) = cp.create_function(&admin, "theirs").await;
    let all = [
        "list_functions",
        "list_functions_details",
        "update_function",
        "delete_function",
        "deploy_function",
        "queue_details",
        "register_function",
    ];
    let key = cp
        .api_key_on(
            &all,
            json!([{"type": "function", "id": format!("{fid}/*")}]),
        )
        .await;
    let k = key.value.as_str();

    let r = cp.get("/v2/nvcf/functions").bearer(k).send().await;
    let listed: Vec<Uuid> = r.expect(200)["functions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| ids(f).0)
        .collect();
    assert_eq!(listed, vec![fid]);
    let r = cp.get("/v2/nvcf/functions/ids").bearer(k).send().await;
    assert_eq!(r.expect(200)["functionIds"], json!([fid]));
    cp.get(&fn_path(fid, vid))
        .bearer(k)
        .send()
        .await
        .expect(200);
    let missing = format!("Function '{other}':  Missing resource entry in ApiKey for the function");
    cp.get(&fn_path(other, other_vid))
        .bearer(k)
        .send()
        .await
        .problem(403, &missing);
    cp.get(&format!("/v2/nvcf/functions/{other}/versions"))
        .bearer(k)
        .send()
        .await
        .problem(403, &missing);
    cp.put(&fn_path(other, other_vid))
        .bearer(k)
        .json(&json!({"tags": ["x"]}))
        .send()
        .await
        .problem(403, &missing);
    cp.delete(&fn_path(other, other_vid))
        .bearer(k)
        .send()
        .await
        .problem(403, &missing);
    cp.post(&dep_path(other, other_vid))
        .bearer(k)
        .json(&dep_body(0, 1))
        .send()
        .await
        .problem(403, &missing);
    cp.get(&format!("/v2/nvcf/queues/functions/{other}"))
        .bearer(k)
        .send()
        .await
        .problem(403, &missing);
    cp.post(&format!("/v2/nvcf/functions/{other}/versions"))
        .bearer(k)
        .json(&fn_body("x"))
        .send()
        .await
        .problem(403, &missing);
    // Creating functions needs the whole account.
    cp.post("/v2/nvcf/functions")
        .bearer(k)
        .json(&fn_body("new"))
        .send()
        .await
        .problem(403, "account-functions");
    // Its own function: everything works.
    cp.post(&format!("/v2/nvcf/functions/{fid}/versions"))
        .bearer(k)
        .json(&fn_body("mine"))
        .send()
        .await
        .expect(200);
    let d = cp.deploy(k, fid, vid, 0, 1).await;
    let did = d["deploymentId"].as_str().expect("id").to_owned();
    cp.get(&format!("/v2/nvcf/deployments/{did}"))
        .bearer(k)
        .send()
        .await
        .expect(200);
    let od = cp.deploy(&admin, other, other_vid, 0, 1).await;
    let odid = od["deploymentId"].as_str().expect("id").to_owned();
    cp.get(&format!("/v2/nvcf/deployments/{odid}"))
        .bearer(k)
        .send()
        .await
        .problem(403, &missing);
    cp.get(&format!("/v2/nvcf/queues/functions/{fid}"))
        .bearer(k)
        .send()
        .await
        .expect(200);

    // A key pinned to one version.
    let pinned = cp
        .api_key_on(
            &["list_functions"],
            json!([{"type": "function", "id": format!("{fid}/{vid}")}]),
        )
        .await;
    let r = cp
        .get(&format!("/v2/nvcf/functions/{fid}/versions"))
        .bearer(&pinned.value)
        .send()
        .await;
    assert_eq!(
        r.expect(200)["functions"]
            .as_array()
            .expect("versions")
            .len(),
        1
    );
    cp.stop().await;
}

/// One management endpoint of the scope matrix.
struct Endpoint {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Scopes any of which grants the call.
    scopes: &'static [&'static str],
}

fn ep(
    method: Method,
    path: String,
    body: Option<Value>,
    scopes: &'static [&'static str],
) -> Endpoint {
    Endpoint {
        method,
        path,
        body,
        scopes,
    }
}

const MANAGEMENT_SCOPES: &[&str] = &[
    "register_function",
    "list_functions",
    "list_functions_details",
    "update_function",
    "delete_function",
    "deploy_function",
    "queue_details",
    "invoke_function",
];

#[tokio::test]
async fn scope_matrix() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "matrix").await;
    let d = cp.deploy(&admin, fid, vid, 0, 1).await;
    let did = d["deploymentId"].as_str().expect("id").to_owned();
    let sid = d["deploymentSpecifications"][0]["gpuSpecificationId"]
        .as_str()
        .expect("sid")
        .to_owned();

    // Credentials: an expired key, a deleted key (both with every scope).
    let every = key_body(
        MANAGEMENT_SCOPES,
        json!([{"id": "*", "type": "account-functions"}]),
    );
    let expired = cp
        .post("/v1/keys")
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "expiring")
        .json(&every)
        .send()
        .await
        .expect(200)
        .clone();
    let deleted = cp
        .post("/v1/keys")
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "deleted")
        .json(&every)
        .send()
        .await
        .expect(200)
        .clone();
    cp.delete(&format!("/v1/keys/{}", deleted["id"].as_str().expect("id")))
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", "deleted")
        .send()
        .await
        .expect(204);
    let (dir, file) = cp.stop().await;
    expire_key(&dir, expired["id"].as_str().expect("id"));
    let cp = Cp::launch(dir, file).await;
    let expired = expired["value"].as_str().expect("value").to_owned();
    let deleted = deleted["value"].as_str().expect("value").to_owned();

    let fp = fn_path(fid, vid);
    let dp = dep_path(fid, vid);
    let list: &[&str] = &["list_functions", "list_functions_details"];
    let endpoints = vec![
        ep(
            Method::POST,
            "/v2/nvcf/functions".into(),
            Some(fn_body("m2")),
            &["register_function"],
        ),
        ep(
            Method::POST,
            format!("/v2/nvcf/functions/{fid}/versions"),
            Some(fn_body("m")),
            &["register_function"],
        ),
        ep(Method::GET, "/v2/nvcf/functions".into(), None, list),
        ep(Method::GET, "/v2/nvcf/functions/ids".into(), None, list),
        ep(
            Method::GET,
            format!("/v2/nvcf/functions/{fid}/versions"),
            None,
            list,
        ),
        ep(Method::GET, fp.clone(), None, list),
        ep(
            Method::PUT,
            fp.clone(),
            Some(json!({"tags": ["t"]})),
            &["update_function"],
        ),
        ep(
            Method::PUT,
            format!("/v2/nvcf/metadata/functions/{fid}/versions/{vid}"),
            Some(json!({"tags": ["t"]})),
            &["update_function"],
        ),
        ep(
            Method::POST,
            dp.clone(),
            Some(dep_body(0, 1)),
            &["deploy_function"],
        ),
        ep(Method::GET, dp.clone(), None, &["deploy_function"]),
        ep(
            Method::GET,
            format!("/v2/nvcf/deployments/{did}"),
            None,
            &["deploy_function"],
        ),
        ep(
            Method::PATCH,
            format!("/v2/nvcf/deployments/{did}/gpu-specifications/{sid}"),
            Some(json!({"maxInstances": 2})),
            &["deploy_function"],
        ),
        ep(
            Method::PUT,
            dp.clone(),
            Some(dep_body(0, 1)),
            &["deploy_function"],
        ),
        ep(
            Method::GET,
            "/v2/nvcf/supportedGpus".into(),
            None,
            &["register_function"],
        ),
        ep(
            Method::GET,
            format!("/v2/nvcf/queues/functions/{fid}"),
            None,
            &["queue_details"],
        ),
        ep(
            Method::GET,
            format!("/v2/nvcf/queues/functions/{fid}/versions/{vid}"),
            None,
            &["queue_details"],
        ),
        // Destructive ones last.
        ep(Method::DELETE, dp.clone(), None, &["deploy_function"]),
        ep(Method::DELETE, fp.clone(), None, &["delete_function"]),
    ];

    for e in &endpoints {
        let call = |token: Option<&str>| {
            let mut c = cp.call(e.method.clone(), &e.path);
            if let Some(t) = token {
                c = c.bearer(t);
            }
            if let Some(b) = &e.body {
                c = c.json(b);
            }
            c
        };
        let what = format!("{} {}", e.method, e.path);
        let r = call(None).send().await;
        r.problem(401, "Header of type `authorization` was missing");
        assert_eq!(r.header("www-authenticate"), "Bearer", "{what}");
        call(Some("garbage"))
            .send()
            .await
            .problem(401, "Invalid bearer token");
        call(Some("nvapi-garbage"))
            .send()
            .await
            .problem(401, "api key format invalid");
        call(None)
            .header("authorization", "Basic dXNlcjpwdw==")
            .send()
            .await
            .problem(401, "Bearer <token>");
        call(Some(&expired))
            .send()
            .await
            .problem(401, "Credential expired");
        call(Some(&deleted))
            .send()
            .await
            .problem(401, "Invalid or unknown credential");
        // A key with every other scope.
        let others: Vec<&str> = MANAGEMENT_SCOPES
            .iter()
            .copied()
            .filter(|s| !e.scopes.contains(s))
            .collect();
        let lacking = key_as(&cp, &format!("lacking-{what}"), &others).await;
        let r = call(Some(&lacking)).send().await;
        r.problem(403, "lacks the required scope");
        r.problem(403, e.scopes[0]);
        // A key with exactly (one of) the scope(s), then the admin token.
        for s in e.scopes {
            let holder = key_as(&cp, &format!("holder-{s}-{what}"), &[s]).await;
            let r = call(Some(&holder)).send().await;
            r.authorized();
            if e.method == Method::DELETE {
                break; // the first success consumed the resource
            }
        }
        if e.method != Method::DELETE {
            call(Some(&admin)).send().await.authorized();
        }
    }

    // clusterGroups: the admin token; never an API key.
    let cg = "/v2/nvcf/clusterGroups";
    cp.get(cg).bearer(&admin).send().await.expect(200);
    cp.get(cg).send().await.problem(401, "authorization");
    cp.get(cg)
        .bearer("garbage")
        .send()
        .await
        .problem(401, "Invalid bearer token");
    cp.get(cg)
        .bearer(&expired)
        .send()
        .await
        .problem(401, "Credential expired");
    cp.get(cg)
        .bearer(&deleted)
        .send()
        .await
        .problem(401, "Invalid or unknown credential");
    let everything = key_as(
        &cp,
        "everything",
        &[MANAGEMENT_SCOPES, &["list_cluster_groups"]].concat(),
    )
    .await;
    cp.get(cg)
        .bearer(&everything)
        .send()
        .await
        .problem(403, "list_cluster_groups");
    cp.stop().await;
}

/// An API key for a fresh owner holding `scopes` on the whole account.
async fn key_as(cp: &Conn, owner: &str, scopes: &[&str]) -> String {
    let owner: String = owner
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let r = cp
        .post("/v1/keys")
        .header("key-issuer-id", NVCF)
        .header("key-owner-id", &owner)
        .json(&key_body(
            scopes,
            json!([{"id": "*", "type": "account-functions"}]),
        ))
        .send()
        .await;
    r.expect(200)["value"].as_str().expect("value").to_owned()
}

/// Rewrites a stored key's `expires_at` to an hour ago (the control plane must be stopped).
fn expire_key(dir: &tempfile::TempDir, id: &str) {
    expire_key_at(dir, id, -3600);
}

/// Rewrites a stored key's `expires_at` to `offset_secs` from now (the control plane must be
/// stopped).
fn expire_key_at(dir: &tempfile::TempDir, id: &str, offset_secs: i64) {
    let db = rusqlite::Connection::open(dir.path().join("controlplane.db")).expect("open db");
    let body: String = db
        .query_row(
            "SELECT body FROM entities WHERE kind = 'key' AND id = ?1",
            [id],
            |r| r.get(0),
        )
        .expect("stored key");
    let mut v: Value = serde_json::from_str(&body).expect("key json");
    assert_eq!(v["kind"], "key");
    v["value"]["expires_at"] = json!(at(offset_secs));
    let n = db
        .execute(
            "UPDATE entities SET body = ?1 WHERE kind = 'key' AND id = ?2",
            [v.to_string(), id.to_owned()],
        )
        .expect("update key");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn expired_key_is_refused_everywhere() {
    let cp = Cp::start().await;
    let key = cp.api_key(&["list_functions", "invoke_function"]).await;
    let (dir, file) = cp.stop().await;
    expire_key(&dir, &key.id);
    let cp = Cp::launch(dir, file).await;
    cp.get("/v2/nvcf/functions")
        .bearer(&key.value)
        .send()
        .await
        .problem(401, "Credential expired");
    let r = cp
        .get(&format!("/v1/keys/{}", key.id))
        .key_headers()
        .send()
        .await;
    assert_eq!(r.expect(200)["status"], "EXPIRED");
    let r = cp.get("/v1/keys").key_headers().send().await;
    assert_eq!(r.expect(200)["keys"][0]["status"], "EXPIRED");
    cp.post("/v1/introspect")
        .json(&json!({"audience_service_id": NVCF, "key": key.value}))
        .send()
        .await
        .problem(404, "Key not found");
    cp.put(&format!("/v1/keys/{}/authorizations", key.id))
        .key_headers()
        .json(&json!({"authorizations": {"policies": []}}))
        .send()
        .await
        .problem(400, "Key is not active");
    // Expired keys do not count against the 8-key cap.
    for _ in 0..8 {
        cp.api_key(&["list_functions"]).await;
    }
    cp.stop().await;
}

// =========================================================================== bad input everywhere

#[tokio::test]
async fn unknown_routes_wrong_methods_and_bad_paths() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let r = cp.get("/nope").send().await;
    r.problem(404, "No endpoint GET /nope");
    cp.get("/v2/nvcf/functions/")
        .bearer(&admin)
        .send()
        .await
        .expect(404);
    cp.get(&format!("/v2/nvcf/functions/{}", Uuid::new_v4()))
        .bearer(&admin)
        .send()
        .await
        .problem(404, "No endpoint");
    cp.post("/v3/openapi")
        .send()
        .await
        .problem(404, "No endpoint POST /v3/openapi");

    let wrong: Vec<(Method, &str)> = vec![
        (Method::DELETE, "/v2/nvcf/functions"),
        (Method::PUT, "/v2/nvcf/functions/ids"),
        (Method::PATCH, "/v1/keys"),
        (Method::GET, "/v1/admin/keys"),
        (Method::GET, "/v1/introspect"),
        (Method::POST, "/v2/nvcf/clusterGroups"),
        (Method::POST, "/health"),
        (Method::PUT, "/internal/v1/feed"),
        (Method::GET, "/internal/v1/workers"),
    ];
    for (m, p) in wrong {
        let r = cp.call(m.clone(), p).send().await;
        r.problem(405, &format!("Request method '{m}' is not supported"));
        // The problem body replaces axum's, but the `Allow` header it set survives.
        assert!(!r.header("allow").is_empty(), "{m} {p}: no Allow header");
    }
    // Path parameters that are not UUIDs, or not UTF-8.
    let fid = Uuid::new_v4();
    for path in [
        format!("/v2/nvcf/functions/{fid}/versions/%FF"),
        "/v1/keys/%C0%AF".to_owned(),
    ] {
        let r = cp.get(&path).bearer(&admin).key_headers().send().await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            String::from_utf8_lossy(&r.raw)
        );
        assert_eq!(r.header("content-type"), "application/problem+json");
    }
    let long = "x".repeat(1000);
    let r = cp
        .get(&format!("/v2/nvcf/deployments/{long}"))
        .bearer(&admin)
        .send()
        .await;
    let d = r.problem(400, "Invalid UUID")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(d.len() < 700, "rejected values are cut: {}", d.len());
    cp.stop().await;
}

#[tokio::test]
async fn malformed_bodies_never_500() {
    let cp = Cp::start_with(|f| f.max_body_bytes = 2048).await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);
    let (fid, vid) = cp.create_function(&admin, "bodies").await;
    let d = cp.deploy(&admin, fid, vid, 0, 1).await;
    let did = d["deploymentId"].as_str().expect("id").to_owned();
    let sid = d["deploymentSpecifications"][0]["gpuSpecificationId"]
        .as_str()
        .expect("sid")
        .to_owned();
    let key = cp.api_key(&["list_functions"]).await;
    let targets: Vec<(Method, String)> = vec![
        (Method::POST, "/v2/nvcf/functions".into()),
        (Method::POST, format!("/v2/nvcf/functions/{fid}/versions")),
        (Method::PUT, fn_path(fid, vid)),
        (
            Method::PUT,
            format!("/v2/nvcf/metadata/functions/{fid}/versions/{vid}"),
        ),
        (Method::PUT, dep_path(fid, vid)),
        (
            Method::PATCH,
            format!("/v2/nvcf/deployments/{did}/gpu-specifications/{sid}"),
        ),
        (Method::POST, "/v1/keys".into()),
        (Method::PUT, format!("/v1/keys/{}/authorizations", key.id)),
        (Method::POST, "/v1/introspect".into()),
        (Method::POST, "/internal/v1/workers".into()),
        (Method::POST, "/internal/v1/workers/w1/heartbeat".into()),
        (Method::POST, "/internal/v1/gateways/g1/queues".into()),
    ];
    let bodies: Vec<(Vec<u8>, u16)> = vec![
        (b"{".to_vec(), 400),
        (b"{\"a\":1}}".to_vec(), 400),
        (b"\"just a string\"".to_vec(), 400),
        (b"12".to_vec(), 400),
        (b"[]".to_vec(), 400),
        (vec![0xc3, 0x28], 400),
        (b"{\"deploymentSpecifications\": 5, \"tags\": 5, \"authorizations\": 5, \"key\": 5, \"workerId\": 5, \"healthy\": \"yes\", \"minInstances\": \"x\", \"name\": 7}".to_vec(), 400),
        (vec![b'x'; 3000], 413),
        // Deep nesting, in an ignored field and in a parsed one.
        (format!("{{\"zz\":{}{}}}", "[".repeat(900), "]".repeat(900)).into_bytes(), 400),
        (format!("{{\"authorizations\":{}1{}}}", "[".repeat(900), "]".repeat(900)).into_bytes(), 400),
    ];
    for (method, path) in &targets {
        for (body, want) in &bodies {
            let token = if path.starts_with("/internal") {
                TOKEN
            } else {
                admin.as_str()
            };
            let r = cp
                .call(method.clone(), path)
                .bearer(token)
                .key_headers()
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            assert!(
                r.status.is_client_error(),
                "{method} {path} with {:?}: {} {}",
                String::from_utf8_lossy(&body[..body.len().min(40)]),
                r.status,
                String::from_utf8_lossy(&r.raw)
            );
            r.problem(*want, "");
        }
    }
    cp.stop().await;
}

#[tokio::test]
async fn internal_endpoints_need_the_internal_token() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    let reg = serde_json::to_value(registration("w1")).expect("json");
    cp.post("/internal/v1/workers")
        .json(&reg)
        .send()
        .await
        .problem(401, "authorization");
    cp.post("/internal/v1/workers")
        .bearer(&admin)
        .json(&reg)
        .send()
        .await
        .problem(401, "Invalid internal credential");
    let (status, lines) = cp.feed(0, 1, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(lines[0]["type"], "urn:nv-boot:problem-details:unauthorized");
    let (status, _) = cp.feed(0, 1, Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, lines) = cp.feed(0, 1, Some("x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{lines:?}");
    cp.get("/internal/v1/feed?since=abc")
        .bearer(TOKEN)
        .send()
        .await
        .problem(400, "since must be a revision number");

    // Registration validation.
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut r = reg.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            bad(&|r| r["workerId"] = json!("")),
            "workerId must be 1 to 128 characters",
        ),
        (
            bad(&|r| r["workerId"] = json!("a/b")),
            "workerId must be 1 to 128 characters of [A-Za-z0-9._:-], got 'a/b'",
        ),
        (
            bad(&|r| r["workerId"] = json!("gpu node")),
            "workerId must be",
        ),
        (
            bad(&|r| r["workerId"] = json!("w".repeat(129))),
            "workerId must be",
        ),
        (
            bad(&|r| r["address"] = json!("ftp://x")),
            "address must be an http(s) URL",
        ),
        (
            bad(&|r| r["clusterGroup"] = json!(" ")),
            "clusterGroup and cluster must not be empty",
        ),
        (
            bad(&|r| r["capacity"] = json!(0)),
            "capacity must be at least 1",
        ),
        (
            bad(&|r| r["gpus"] = json!([])),
            "at least one GPU and one instance type",
        ),
        (
            bad(&|r| r["instanceTypes"][0]["gpu"] = json!("H100")),
            "names GPU 'H100', which the worker does not offer",
        ),
        (bad(&|r| r["capacity"] = json!(-1)), "capacity"),
    ];
    for (body, detail) in cases {
        cp.post("/internal/v1/workers")
            .bearer(TOKEN)
            .json(&body)
            .send()
            .await
            .problem(400, detail);
    }
    let ack = cp.register_worker("w1").await.expect(200).clone();
    assert_eq!(ack["workerId"], "w1");
    assert_eq!(ack["heartbeatIntervalMs"], 100);
    assert!(ack["revision"].as_u64().expect("revision") > 0);
    cp.heartbeat("nobody", vec![])
        .await
        .problem(404, "Worker 'nobody' is not registered");
    cp.post("/internal/v1/workers/w1/heartbeat")
        .bearer(TOKEN)
        .json(&json!({"healthy": true, "instances": [{"instanceId": "x", "state": "ready"}]}))
        .send()
        .await
        .problem(400, "JSON parse error");
    cp.heartbeat("w1", vec![]).await.expect(200);
    cp.stop().await;
}

#[tokio::test]
async fn deployment_specification_details() {
    let cp = Cp::start().await;
    let admin = cp.admin().await;
    cp.register_worker("w1").await.expect(200);

    // Optional fields come back as given; `clusters` instead of `backend` names the cluster.
    let (fid, vid) = cp.create_function(&admin, "detailed").await;
    let spec = json!({
        "gpu": GPU, "instanceType": INSTANCE_TYPE, "clusters": ["local"], "minInstances": 0, "maxInstances": 1,
        "regions": ["us-west"], "attributes": ["fast"], "availabilityZones": ["a"], "preferredOrder": 3,
        "cpuArch": "amd64", "os": "linux", "driverVersion": "550", "storage": "10G",
        "systemMemory": "32G", "gpuMemory": "24G",
        "autoscalingConfiguration": {"scaleUpDetails": {"factor": 1.5, "threshold": 80}},
    });
    let r = cp
        .post(&dep_path(fid, vid))
        .bearer(&admin)
        .json(&json!({"deploymentSpecifications": [spec]}))
        .send()
        .await;
    let s = r.expect(200)["deployment"]["deploymentSpecifications"][0].clone();
    for k in [
        "clusters",
        "regions",
        "attributes",
        "availabilityZones",
        "preferredOrder",
        "cpuArch",
        "os",
        "driverVersion",
        "storage",
        "systemMemory",
        "gpuMemory",
        "autoscalingConfiguration",
    ] {
        assert_eq!(s[k], spec[k], "{k}: {s}");
    }
    assert_eq!(s["backend"], GROUP);
    let (f2, v2) = cp.create_function(&admin, "nowhere").await;
    let mut bad = spec.clone();
    bad["clusters"] = json!(["elsewhere"]);
    cp.post(&dep_path(f2, v2))
        .bearer(&admin)
        .json(&json!({"deploymentSpecifications": [bad]}))
        .send()
        .await
        .problem(400, "Invalid cluster 'elsewhere' specified");

    // Counts are Java ints: larger values are refused, and the largest ones never overflow.
    let huge = |min: i64, max: i64| json!({"gpu": GPU, "instanceType": INSTANCE_TYPE, "minInstances": min, "maxInstances": max});
    cp.post(&dep_path(f2, v2))
        .bearer(&admin)
        .json(&json!({"deploymentSpecifications": [huge(0, 2_147_483_648)]}))
        .send()
        .await
        .problem(400, "field=deploymentSpecifications[0].maxInstances, rejected=2147483648, message=must be less than or equal to 2147483647");
    let max = i64::from(i32::MAX);
    let r = cp
        .post(&dep_path(f2, v2))
        .bearer(&admin)
        .json(
            &json!({"deploymentSpecifications": [huge(max, max), huge(max, max), huge(max, max)]}),
        )
        .send()
        .await;
    let d = r.expect(200)["deployment"].clone();
    assert_eq!(d["functionStatus"], "DEPLOYING");
    let patch = format!(
        "/v2/nvcf/deployments/{}/gpu-specifications/{}",
        d["deploymentId"].as_str().expect("id"),
        d["deploymentSpecifications"][0]["gpuSpecificationId"]
            .as_str()
            .expect("sid")
    );
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"maxInstances": 4_294_967_296u64}))
        .send()
        .await
        .problem(400, "field=maxInstances, rejected=4294967296, message=must be less than or equal to 2147483647");
    cp.patch(&patch)
        .bearer(&admin)
        .json(&json!({"minInstances": 1}))
        .send()
        .await
        .expect(200);
    // The control plane still works (status engine included).
    assert_eq!(cp.function(&admin, f2, v2).await["status"], "DEPLOYING");
    cp.create_function(&admin, "still-fine").await;
    cp.stop().await;
}

/// Sends raw bytes as one HTTP/1.1 exchange (`Connection: close` expected in `head`); returns the
/// status and body.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json")
            || status < 400,
        "{head}"
    );
    (status, body.to_owned())
}

#[tokio::test]
async fn raw_http_edge_cases() {
    let cp = Cp::start_with(|f| f.max_body_bytes = 4096).await;
    let admin = cp.admin().await;

    // A chunked body (no declared length) that outgrows the limit: 413, not a reset.
    let mut req = format!(
        "POST /v2/nvcf/functions HTTP/1.1\r\nHost: cp\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        req.extend_from_slice(b"800\r\n");
        req.extend_from_slice(&[b' '; 0x800]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_exchange(cp.addr, &req).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("exceeds the limit of 4096 bytes"), "{body}");

    // A small chunked body is fine.
    let json = serde_json::to_vec(&fn_body("chunked")).expect("json");
    let mut req = format!(
        "POST /v2/nvcf/functions HTTP/1.1\r\nHost: cp\r\nAuthorization: Bearer {admin}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        json.len()
    )
    .into_bytes();
    req.extend_from_slice(&json);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, body) = raw_exchange(cp.addr, &req).await;
    assert_eq!(status, 200, "{body}");

    // Header values that are not UTF-8.
    let mut req = b"GET /v2/nvcf/functions HTTP/1.1\r\nHost: cp\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n".to_vec();
    let (status, body) = raw_exchange(cp.addr, &req).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Unauthorized access"), "{body}");
    req = b"GET /v1/keys HTTP/1.1\r\nHost: cp\r\nConnection: close\r\nKey-Issuer-Id: nvidia-cloud-functions-ncp-service-id-aketm\r\nKey-Owner-Id: \xe9t\xe9\r\n\r\n".to_vec();
    let (status, body) = raw_exchange(cp.addr, &req).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Key-Owner-Id is not set"), "{body}");
    // A lying Content-Length larger than the limit is refused before reading.
    let req: &[u8] = b"POST /v1/introspect HTTP/1.1\r\nHost: cp\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n{}";
    let (status, _) = raw_exchange(cp.addr, req).await;
    assert_eq!(status, 413);
    // The server is still fine.
    cp.get("/health").send().await.expect(200);
    cp.stop().await;
}

#[tokio::test]
async fn keys_expired_for_two_days_are_purged() {
    let cp = Cp::start().await;
    let old = cp.api_key(&["list_functions"]).await;
    let recent = cp.api_key(&["list_functions"]).await;
    let (dir, file) = cp.stop().await;
    expire_key_at(&dir, &old.id, -3 * 86_400);
    expire_key_at(&dir, &recent.id, -86_400);
    let cp = Cp::launch(dir, file).await;
    eventually("the long-expired key purged", || async {
        let r = cp
            .get(&format!("/v1/keys/{}", old.id))
            .key_headers()
            .send()
            .await;
        (r.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let r = cp.get("/v1/keys").key_headers().send().await;
    let keys = r.expect(200)["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], recent.id.as_str());
    assert_eq!(keys[0]["status"], "EXPIRED");
    let still_there = cp.snapshot().await.to_string().contains(&old.id);
    assert!(!still_there, "the purge reaches the feed");
    cp.get("/v2/nvcf/functions")
        .bearer(&old.value)
        .send()
        .await
        .problem(401, "Invalid or unknown credential");
    cp.stop().await;
}

#[tokio::test]
async fn authentication_comes_before_path_validation() {
    let cp = Cp::start().await;
    // No credential: 401 even though the path parameter is not a UUID (NVCF's filter order).
    cp.get("/v2/nvcf/functions/not-a-uuid/versions/also-not")
        .send()
        .await
        .problem(401, "Header of type `authorization` was missing");
    cp.get("/v2/nvcf/deployments/not-a-uuid")
        .bearer("garbage")
        .send()
        .await
        .problem(401, "Invalid bearer token");
    // With a valid credential the malformed UUID is the 400.
    let admin = cp.admin().await;
    cp.get("/v2/nvcf/functions/not-a-uuid/versions/also-not")
        .bearer(&admin)
        .send()
        .await
        .problem(400, "Invalid UUID string: not-a-uuid");
}
