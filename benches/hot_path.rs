//! Question: what does the gateway spend per invocation before it talks to a worker — checking the
//! bearer against the key index (keyed hash + lookup + status/expiry) and looking the function up in
//! the routing snapshot? The goal is under 1 µs together, the target 0.3 µs (docs/performance.md),
//! so that authorization never shows next to a proxied request's ~20 µs of CPU. A client sends
//! the same token on every call, so the common case is the thread's digest memo hitting; the
//! first call with a token (a memo miss) pays the keyed hash, measured here over 1000 tokens.

use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::keys::{KeyIndex, authorize_invoke};
use dataplane::routing::RoutingSnapshot;
use model::credentials::{KeyHasher, RANDOM_CHARS, checksum};
use model::feed::{Entity, FeedMessage, FeedState};
use model::function::{
    ApiBodyFormat, FunctionStatus, FunctionType, FunctionVersion, HealthDto, HealthProtocol,
};
use model::keys::{KeyRecord, KeyStatus};
use model::scopes::CredentialKind;
use model::time::Timestamp;
use std::hint::black_box;
use std::time::Duration;
use uuid::Uuid;

const SECRET: &str = "5ec2e7";

fn key(i: usize) -> String {
    let head = format!("nvapi-{:0>width$}", i, width = RANDOM_CHARS);
    format!("{head}{}", checksum(&head))
}

fn function(id: Uuid) -> FunctionVersion {
    FunctionVersion {
        id,
        version_id: Uuid::new_v4(),
        nca_id: model::NCA_ID.into(),
        name: "bench".into(),
        status: FunctionStatus::Active,
        inference_url: "/infer".into(),
        inference_port: None,
        container_args: None,
        container_environment: vec![],
        models: vec![],
        container_image: Some("builtin/echo".into()),
        api_body_format: ApiBodyFormat::Custom,
        helm_chart: None,
        helm_chart_service_name: None,
        health: HealthDto {
            protocol: HealthProtocol::Http,
            uri: "/h".into(),
            port: 8000,
            timeout: "PT10S".into(),
            expected_status_code: 200,
        },
        created_at: Timestamp::now(),
        resources: vec![],
        tags: vec![],
        description: None,
        function_type: FunctionType::Default,
        secrets: vec![],
        rate_limit: None,
        llm_invocation_config: None,
        telemetries: None,
        utils_container_image: None,
    }
}

/// 1000 keys and 50 functions (NVIDIA's per-account function limit).
fn state() -> (FeedState, Vec<Uuid>) {
    let hasher = KeyHasher::new(SECRET);
    let now = Timestamp::now();
    let mut entities = Vec::new();
    for i in 0..1000 {
        entities.push(Entity::Key(KeyRecord {
            id: Uuid::new_v4(),
            kind: CredentialKind::ApiKey,
            hash: hasher.hash(&key(i)),
            status: KeyStatus::Active,
            owner_type: "USER".into(),
            owner_id: format!("owner-{i}"),
            issuer_service_id: model::NVCF_SERVICE_ID.into(),
            audience_service_ids: vec![model::NVCF_SERVICE_ID.into()],
            description: "bench".into(),
            created_at: now,
            expires_at: now.plus(Duration::from_secs(86_400)),
            authorizations: serde_json::json!({"policies": [{"aud": model::NVCF_SERVICE_ID,
                "resources": [{"id": "*", "type": "account-functions"}],
                "scopes": ["invoke_function", "list_functions"]}]}),
            authz_updated_at: None,
            admin_scopes: vec![],
        }));
    }
    let ids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    entities.extend(ids.iter().map(|id| Entity::Function(function(*id))));
    let mut s = FeedState::default();
    s.apply(FeedMessage::Snapshot {
        revision: 1,
        key_hash_secret: SECRET.into(),
        entities,
    })
    .unwrap_or_else(|e| panic!("snapshot: {e}"));
    (s, ids)
}

fn bench(c: &mut Criterion) {
    let (state, ids) = state();
    let index = KeyIndex::build(&state, "nvapi-");
    let routes = RoutingSnapshot::build(&state);
    let header = format!("Bearer {}", key(500)).into_bytes();
    let fid = ids[25];
    let now = Timestamp::now();

    c.bench_function(
        "authenticate, repeated token (memo hit + index lookup)",
        |b| {
            b.iter(|| {
                index
                    .authenticate(Some(black_box(&header)), now)
                    .map(|g| g.key_id)
            })
        },
    );
    // 1000 tokens in turn against the memo's 16 slots: nearly every call misses it.
    let headers: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("Bearer {}", key(i)).into_bytes())
        .collect();
    let mut next = headers.iter().cycle();
    c.bench_function("authenticate, new token (keyed hash + index lookup)", |b| {
        b.iter(|| {
            let header = next.next().map(Vec::as_slice);
            index.authenticate(black_box(header), now).map(|g| g.key_id)
        })
    });
    c.bench_function("route lookup", |b| {
        b.iter(|| routes.lookup(black_box(fid), None, 7).map(|r| r.version_id))
    });
    c.bench_function("authenticate + authorize + route", |b| {
        b.iter(|| {
            let grants = index.authenticate(Some(black_box(&header)), now).ok()?;
            authorize_invoke(grants, fid, None).ok()?;
            routes
                .lookup(black_box(fid), None, 7)
                .ok()
                .map(|r| r.version_id)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
