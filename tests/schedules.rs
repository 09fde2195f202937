//! `/v1/schedules` on a running service: schedules fire real jobs, changes take effect
//! without a restart, and bad input to every endpoint is refused naming the field.

mod common;

use std::time::Duration;

use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::TestService;
use serde_json::{Value, json};

async fn start() -> TestService {
    TestService::start_with(TestBackend::Sqlite, |config| {
        config.scheduler.max_wait_ms = 50;
    })
    .await
}

fn interval_body(name: &str) -> Value {
    json!({
        "name": name,
        "kind": "sentiment.analyze",
        "payload": {"texts": ["a scheduled text"]},
        "trigger": {"type": "interval", "every_ms": 1000},
    })
}

async fn send(
    service: &TestService,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = service.client.request(method, service.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Proves an interval schedule created through the API fires jobs that succeed, that pausing
/// stops it and resuming starts it again, and that a manual trigger creates a job at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_schedule_fires_jobs_and_obeys_pause() {
    let service = start().await;
    let (status, created) = service
        .post_json("/v1/schedules", &interval_body("every-second"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["misfire_policy"], "fire_once");

    let path = format!("/v1/schedules/{id}");
    let fired = eventually(Duration::from_secs(15), || async {
        let (_, schedule) = service.get_json(&path).await;
        (schedule["num_runs"].as_i64().unwrap_or(0) >= 2).then_some(schedule)
    })
    .await;
    let job = service
        .wait_for_job(fired["last_job_id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let (status, paused) = service
        .post_json(&format!("{path}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["paused_reason"], "operator");
    let runs_when_paused = service.get_json(&path).await.1["num_runs"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let runs_later = service.get_json(&path).await.1["num_runs"]
        .as_i64()
        .unwrap();
    assert_eq!(
        runs_when_paused, runs_later,
        "a paused schedule does not fire"
    );

    let (status, triggered) = service
        .post_json(&format!("{path}/trigger"), &json!({}))
        .await;
    assert_eq!(status, 202, "{triggered}");
    let job = service
        .wait_for_job(triggered["job_id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded");

    let (status, resumed) = service
        .post_json(&format!("{path}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resumed["status"], "active");
    eventually(Duration::from_secs(15), || async {
        let (_, schedule) = service.get_json(&path).await;
        (schedule["num_runs"].as_i64().unwrap_or(0) > runs_later + 1).then_some(())
    })
    .await;
    let (status, runs) = service.get_json(&format!("{path}/runs?limit=100")).await;
    assert_eq!(status, 200);
    assert!(
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["reason"] == "manual")
    );

    let metrics = service.get_text("/metrics").await;
    assert!(
        metrics.contains("bulwark_schedule_lag_seconds"),
        "lag histogram exported"
    );
    assert!(metrics.contains("bulwark_schedule_runs_total"));
}

/// Proves a PATCH takes effect without a restart: a schedule moved from a yearly cron to a
/// one-second interval starts firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_takes_effect_without_restart() {
    let service = start().await;
    let body = json!({
        "name": "yearly",
        "kind": "sentiment.analyze",
        "payload": {"texts": ["happy new year"]},
        "trigger": {"type": "cron", "cron": "0 0 1 1 *", "timezone": "Asia/Tokyo"},
    });
    let (status, created) = service.post_json("/v1/schedules", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["trigger"]["timezone"], "Asia/Tokyo");
    let path = format!("/v1/schedules/{}", created["id"].as_str().unwrap());
    let patch =
        json!({"trigger": {"type": "interval", "every_ms": 1000}, "overlap_policy": "skip"});
    let (status, patched) = send(&service, reqwest::Method::PATCH, &path, Some(&patch)).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["overlap_policy"], "skip");
    eventually(Duration::from_secs(15), || async {
        let (_, schedule) = service.get_json(&path).await;
        (schedule["num_runs"].as_i64().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    let (status, _) = send(&service, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    assert_eq!(service.get_json(&path).await.0, 404);
}

/// Proves every endpoint refuses bad input: 422 naming the field for invalid cron, time zone,
/// interval, policy, kind, payload, limit and cursor; 409 for a name in use; 404 for unknown
/// ids; 400 for malformed JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    let service = start().await;
    let with = |patch: Value| {
        let mut body = interval_body("bad");
        for (key, value) in patch.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let cases = [
        (
            with(json!({"trigger": {"type": "cron", "cron": "61 * * * *"}})),
            "trigger.cron:",
        ),
        (
            with(json!({"trigger": {"type": "cron", "cron": "not a cron"}})),
            "trigger.cron:",
        ),
        (
            with(
                json!({"trigger": {"type": "cron", "cron": "* * * * *", "timezone": "Mars/Base"}}),
            ),
            "trigger.timezone:",
        ),
        (with(json!({"trigger": {"type": "cron"}})), "trigger.cron:"),
        (
            with(json!({"trigger": {"type": "interval", "every_ms": 10}})),
            "trigger.every_ms:",
        ),
        (
            with(json!({"trigger": {"type": "once", "at": "tomorrow"}})),
            "trigger.at:",
        ),
        (
            with(json!({"trigger": {"type": "weekly"}})),
            "trigger.type:",
        ),
        (
            with(json!({"misfire_policy": "sometimes"})),
            "misfire_policy:",
        ),
        (
            with(json!({"overlap_policy": "queue_all"})),
            "overlap_policy:",
        ),
        (with(json!({"kind": "video.render"})), "kind:"),
        (with(json!({"payload": {"texts": []}})), "payload.texts:"),
        (with(json!({"name": " "})), "name:"),
        (
            with(json!({"max_consecutive_failures": -1})),
            "max_consecutive_failures:",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = service.post_json("/v1/schedules", &body).await;
        assert_eq!(status, 422, "{body}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{field} named in: {message}");
        assert_eq!(error["code"], "VALIDATION_FAILED");
    }

    let (status, created) = service
        .post_json("/v1/schedules", &interval_body("taken"))
        .await;
    assert_eq!(status, 201);
    let (status, error) = service
        .post_json("/v1/schedules", &interval_body("taken"))
        .await;
    assert_eq!(status, 409, "{error}");
    assert!(error["message"].as_str().unwrap().starts_with("name:"));

    let path = format!("/v1/schedules/{}", created["id"].as_str().unwrap());
    let bad_patch = json!({"trigger": {"type": "cron", "cron": "* * *", "timezone": "UTC"}});
    let (status, error) = send(&service, reqwest::Method::PATCH, &path, Some(&bad_patch)).await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("trigger.cron:")
    );
    let (status, _) = send(
        &service,
        reqwest::Method::PATCH,
        &path,
        Some(&json!({"colour": "red"})),
    )
    .await;
    assert_eq!(status, 422, "unknown fields are refused, named");

    let response = service
        .client
        .post(service.url("/v1/schedules"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    for query in ["limit=0", "limit=501", "status=sleeping", "cursor=nope"] {
        let (status, error) = service.get_json(&format!("/v1/schedules?{query}")).await;
        assert_eq!(status, 422, "{query}: {error}");
        let field = query.split('=').next().unwrap();
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{error}"
        );
    }

    let unknown = "/v1/schedules/0190d5a0-0000-7000-8000-000000000000";
    assert_eq!(service.get_json(unknown).await.0, 404);
    assert_eq!(
        send(
            &service,
            reqwest::Method::PATCH,
            unknown,
            Some(&json!({"name": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(&service, reqwest::Method::DELETE, unknown, None)
            .await
            .0,
        404
    );
    for action in ["pause", "resume", "trigger"] {
        let (status, error) = service
            .post_json(&format!("{unknown}/{action}"), &json!({}))
            .await;
        assert_eq!(status, 404, "{action}: {error}");
    }
    assert_eq!(service.get_json(&format!("{unknown}/runs")).await.0, 404);
}
