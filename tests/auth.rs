//! API keys, scopes, rate limits and budgets against the service booted on port 0, on SQLite
//! and the real PostgreSQL, and `bulwark keys` on the real binary.

mod common;

use std::process::Command;
use std::time::Duration;

use bulwark_config::{ProviderConfig, ProviderKind, RateLimit};
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::{TestService, client_with_key};
use serde_json::{Value, json};

/// Makes a key through the API with the service's admin key; returns its token.
async fn make_key(service: &TestService, name: &str, scopes: &[&str], extra: Value) -> String {
    let mut body = json!({ "name": name, "scopes": scopes });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, issued) = service.post_json("/v1/keys", &body).await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"]
        .as_str()
        .expect("a token is issued")
        .to_owned();
    assert!(token.starts_with("bwk_") && token.len() == 47, "{token}");
    assert_eq!(issued["key"]["prefix"], token[..12]);
    token
}

/// Returns a path of the document with every `{param}` replaced by a plausible value.
fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "0190f5c2-7a1e-7cc2-8d7e-3f0c1a2b3c4d"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Proves, for every operation in the OpenAPI document (so a new route cannot be forgotten),
/// that it names one scope as its security requirement (`/live` and `/ready` excepted, and
/// `/health` and `/metrics`, which need `read` unless configured open), that it answers `401`
/// without a key, and `403` with a key lacking that scope. Also: the document lists the
/// four scopes as bearer security schemes, `/openapi.json` is open by default, and an open
/// route takes any valid key (counted) but refuses an unknown one, probes included.
async fn every_route_needs_its_scope(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let anonymous = reqwest::Client::new();
    let document: Value = anonymous
        .get(service.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemes = &document["components"]["securitySchemes"];
    for scope in ["read", "submit", "operate", "admin"] {
        assert_eq!(schemes[scope]["scheme"], "bearer", "{schemes}");
    }
    let read_only = client_with_key(&make_key(&service, "reader", &["read"], json!({})).await);
    let submit_only =
        client_with_key(&make_key(&service, "submitter", &["submit"], json!({})).await);

    let mut num_checked = 0;
    let paths = document["paths"].as_object().expect("paths");
    for (template, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let required: Option<String> = operation["security"]
                .as_array()
                .and_then(|requirements| requirements.first())
                .and_then(|requirement| requirement.as_object())
                .and_then(|requirement| requirement.keys().next().cloned());
            let scope = match (template.as_str(), required) {
                ("/live" | "/ready", None) => continue,
                ("/health" | "/metrics", None) => "read".to_owned(),
                (_, Some(scope)) => scope,
                (_, None) => panic!("{method} {template} has no security requirement"),
            };
            let url = service.url(&concrete_path(template));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let send = |client: &reqwest::Client| {
                client
                    .request(method.clone(), &url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
            };
            let response = send(&anonymous).await.unwrap();
            assert_eq!(response.status(), 401, "{method} {template} without a key");
            assert!(response.headers().contains_key("www-authenticate"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "UNAUTHORIZED", "{method} {template}: {body}");

            let lacking = if scope == "read" {
                &submit_only
            } else {
                &read_only
            };
            let response = send(lacking).await.unwrap();
            assert_eq!(
                response.status(),
                403,
                "{method} {template} with a key lacking `{scope}`"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "FORBIDDEN", "{method} {template}: {body}");
            assert!(body["message"].as_str().unwrap().contains(&scope), "{body}");
            num_checked += 1;
        }
    }
    assert!(num_checked >= 35, "only {num_checked} operations checked");
    for open in ["/live", "/ready"] {
        let status = anonymous
            .get(service.url(open))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status == 200 || status == 503, "{open} is open: {status}");
    }
    service.service.shutdown().await.unwrap();
}

/// Proves a key over its rate gets `429` with `Retry-After` and `RateLimit-*` headers while
/// another key with the same scope is unaffected, and an unknown key is refused with `401`
/// and, past the failed-attempt bucket of its address, `429`.
async fn rate_limits_are_per_key(backend: TestBackend) {
    let service = TestService::start_with(backend, |config| {
        config.auth.rate_limits.submit = RateLimit::new(1, 3);
        config.auth.rate_limits.failed_auth_per_ip = RateLimit::new(1, 2);
    })
    .await;
    let first = client_with_key(&make_key(&service, "first", &["submit"], json!({})).await);
    let second = client_with_key(&make_key(&service, "second", &["submit"], json!({})).await);
    let score = |client: &reqwest::Client| {
        client
            .post(service.url("/v1/sentiment"))
            .json(&json!({"texts": ["a fine day"]}))
            .send()
    };
    for remaining in [2, 1, 0] {
        let response = score(&first).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            remaining.to_string()
        );
    }
    let limited = score(&first).await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["retriable"], true);
    assert_eq!(
        score(&second).await.unwrap().status(),
        200,
        "another key is unaffected"
    );

    let stranger = client_with_key("bwk_NotAKeyAnyoneHas0123456789abcdefghijklmnopq");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(score(&stranger).await.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|status| **status == 401).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics.contains("bulwark_auth_failures_total{reason=\"unknown\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("bulwark_rate_limited_total{limit=\"submit\"}"));
    service.service.shutdown().await.unwrap();
}

/// Proves a key's daily provider-call budget holds for `provider.complete` jobs and audits
/// (an audit is charged all its calls up front, and refused whole when they do not fit), that
/// an idempotent replay is not charged twice, and that another key has its own budget.
async fn provider_budgets(backend: TestBackend) {
    let service = TestService::start_with(backend, |config| {
        config.providers.insert(
            "sim".to_owned(),
            ProviderConfig {
                kind: ProviderKind::Simulated,
                ..ProviderConfig::default()
            },
        );
    })
    .await;
    let limited = make_key(
        &service,
        "budgeted",
        &["submit"],
        json!({"daily_provider_calls": 3}),
    )
    .await;
    let client = client_with_key(&limited);
    let complete = |key: &str| {
        client
            .post(service.url("/v1/jobs"))
            .json(&json!({
                "kind": "provider.complete",
                "payload": {"provider": "sim", "prompt": "best crm?"},
                "idempotency_key": key
            }))
            .send()
    };
    assert_eq!(complete("one").await.unwrap().status(), 202);
    assert_eq!(complete("one").await.unwrap().status(), 200, "a replay");
    assert_eq!(complete("two").await.unwrap().status(), 202);
    let audit = |prompts: Vec<&str>| {
        client
            .post(service.url("/v1/audits"))
            .json(&json!({"brand": "Acme", "prompts": prompts, "providers": ["sim"]}))
            .send()
    };
    let refused = audit(vec!["a?", "b?"]).await.unwrap();
    assert_eq!(
        refused.status(),
        429,
        "two calls do not fit in the one left"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().starts_with("budget:"),
        "{body}"
    );
    assert_eq!(
        audit(vec!["a?"]).await.unwrap().status(),
        202,
        "one call fits"
    );
    assert_eq!(
        complete("three").await.unwrap().status(),
        429,
        "the budget is spent"
    );
    let (status, _) = service
        .post_json(
            "/v1/jobs",
            &json!({"kind": "provider.complete", "payload": {"provider": "sim", "prompt": "x"}}),
        )
        .await;
    assert_eq!(status, 202, "the admin key has its own budget");
    service.service.shutdown().await.unwrap();
}

/// Proves a key's life: made with an expiry it shows as active, rotation issues a new key
/// while the old keeps working for the grace period and then not at all, and revocation takes
/// effect at once; keys are listed without tokens, and every admin and operate change (keys,
/// a dead-letter purge) is audited under the acting key's name.
async fn key_lifecycle(backend: TestBackend) {
    let service = TestService::start(backend).await;
    let old_token = make_key(
        &service,
        "ci-bot",
        &["read"],
        json!({"expires_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    let old = client_with_key(&old_token);
    let (_, keys) = service.get_json("/v1/keys").await;
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["name"] == "ci-bot")
        .cloned()
        .expect("the key is listed");
    assert_eq!(listed["status"], "active");
    assert!(
        listed["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2099-01-01")
    );
    assert!(!keys.to_string().contains(&old_token), "no token is listed");
    let old_id = listed["id"].as_str().unwrap().to_owned();

    let read = |client: &reqwest::Client| client.get(service.url("/v1/jobs")).send();
    assert_eq!(read(&old).await.unwrap().status(), 200);
    let (status, rotated) = service
        .post_json(
            &format!("/v1/keys/{old_id}/rotate"),
            &json!({"grace_ms": 800}),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(rotated["key"]["rotated_from"], old_id.as_str());
    let new = client_with_key(rotated["token"].as_str().unwrap());
    assert_eq!(read(&new).await.unwrap().status(), 200);
    assert_eq!(
        read(&old).await.unwrap().status(),
        200,
        "within the grace period"
    );
    eventually(Duration::from_secs(5), || async {
        (read(&old).await.unwrap().status() == 401).then_some(())
    })
    .await;

    let new_id = rotated["key"]["id"].as_str().unwrap();
    let response = service
        .client
        .delete(service.url(&format!("/v1/keys/{new_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(read(&new).await.unwrap().status(), 401, "revoked at once");
    let (status, refused) = service
        .post_json(&format!("/v1/keys/{new_id}/rotate"), &json!({}))
        .await;
    assert_eq!(status, 409, "{refused}");
    let (status, invalid) = service
        .post_json("/v1/keys", &json!({"name": "bad name", "scopes": ["read"]}))
        .await;
    assert_eq!(status, 422, "{invalid}");
    assert!(invalid["message"].as_str().unwrap().starts_with("name"));

    let purged = service
        .client
        .delete(service.url("/v1/dead-letters?all=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200, "an operate change");
    let actions = service.service.store.list_ops_actions(20).await.unwrap();
    for action in [
        "create_key",
        "rotate_key",
        "revoke_key",
        "purge_dead_letters",
    ] {
        assert!(
            actions
                .iter()
                .any(|entry| entry.action == action && entry.actor == "key:tests"),
            "{action} audited: {actions:?}"
        );
    }
    service.service.shutdown().await.unwrap();
}

on_both_backends!(scopes, every_route_needs_its_scope, multi_thread);
on_both_backends!(rate_limits, rate_limits_are_per_key, multi_thread);
on_both_backends!(budgets, provider_budgets, multi_thread);
on_both_backends!(lifecycle, key_lifecycle, multi_thread);

/// Proves `bulwark keys` on the real binary: `create` prints a token that a node on the same
/// database accepts, `list` shows the key without it, `revoke` stops it, bad input exits 2
/// naming the flag, and a node refuses a malformed bootstrap key at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cli_manages_keys_on_the_database() {
    let database = bulwark_store::testsuite::TestDatabase::create(TestBackend::Sqlite).await;
    let keys = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &database.url)
            .env("BULWARK_LOG", "error")
            .output()
            .expect("bulwark keys runs")
    };
    let created = keys(&[
        "create",
        "--name",
        "deploy",
        "--scope",
        "read,submit",
        "--expires-in",
        "30d",
    ]);
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(bulwark_auth::is_token_shaped(&token), "{token}");

    let listed = keys(&["list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "deploy");
    assert_eq!(listed[0]["scopes"], "read,submit");
    assert!(!listed.to_string().contains(&token));
    let id = listed[0]["id"].as_str().unwrap().to_owned();

    let served = common::serve(&mut common::serve_command(&database.url));
    let client = client_with_key(&token);
    let jobs_url = format!("{}/v1/jobs", served.base_url);
    assert_eq!(client.get(&jobs_url).send().await.unwrap().status(), 200);
    let revoked = keys(&["revoke", &id]);
    assert!(revoked.status.success(), "{revoked:?}");
    eventually(Duration::from_secs(10), || async {
        (client.get(&jobs_url).send().await.unwrap().status() == 401).then_some(())
    })
    .await;
    let mut child = served.child;
    let _ = child.kill();
    let _ = child.wait();

    let bad_scope = keys(&["create", "--name", "x", "--scope", "root"]);
    assert_eq!(bad_scope.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("--scope"));
    let bad_duration = keys(&[
        "create",
        "--name",
        "x",
        "--scope",
        "read",
        "--expires-in",
        "soon",
    ]);
    assert_eq!(bad_duration.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_duration.stderr).contains("--expires-in"));

    let refused = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("serve")
        .env("DATABASE_URL", &database.url)
        .env("BULWARK_HTTP_ADDR", "127.0.0.1:0")
        .env("BULWARK_BOOTSTRAP_ADMIN_KEY", "hunter2")
        .env("BULWARK_LOG", "error")
        .output()
        .expect("bulwark serve runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("auth.bootstrap_admin_key"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the refused key is not echoed");
}
