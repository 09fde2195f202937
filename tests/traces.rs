//! One trace from `POST /v1/jobs` through RabbitMQ, the consumer, the job's attempt and a
//! provider call over HTTP, exported over OTLP to an in-process receiver: once over gRPC, once
//! over HTTP/protobuf. Each test installs the node's subscriber for its own (single) thread.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_config::{ProviderConfig, ProviderKind, TelemetryConfig};
use bulwark_providers::simulated::{SimulatorParams, SimulatorServer};
use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::TestService;
use common::broker::{amqp_config, delete_namespace, unique_namespace};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

/// The caller's trace and span, as a client would send them in `traceparent`.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the receiver was sent: every span with its resource's `service.name`.
#[derive(Debug, Default)]
struct Received {
    spans: Mutex<Vec<(String, Span)>>,
}

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("receiver lock");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| resource.attributes.iter())
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| text_of(attribute.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }

    /// Returns the spans of trace `trace_id` received so far.
    fn trace(&self, trace_id: &str) -> Vec<(String, Span)> {
        self.spans
            .lock()
            .expect("receiver lock")
            .iter()
            .filter(|(_, span)| hex(&span.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

fn text_of(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(text) => Some(text.clone()),
        AnyValue::IntValue(number) => Some(number.to_string()),
        AnyValue::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| text_of(attribute.value.as_ref()?.value.as_ref()?))
}

/// The collector's gRPC trace service, storing what it is sent.
#[derive(Debug)]
struct GrpcReceiver {
    received: Arc<Received>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves the gRPC receiver on a free port; returns its endpoint.
async fn start_grpc_receiver(received: Arc<Received>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let addr = listener.local_addr().expect("receiver address");
    let service = TraceServiceServer::new(GrpcReceiver { received });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[poem::handler]
async fn http_traces(received: poem::web::Data<&Arc<Received>>, body: Vec<u8>) -> poem::Response {
    match ExportTraceServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.take(request);
            let answer = ExportTraceServiceResponse {
                partial_success: None,
            };
            poem::Response::builder()
                .content_type("application/x-protobuf")
                .body(answer.encode_to_vec())
        }
        Err(error) => poem::Response::builder()
            .status(poem::http::StatusCode::BAD_REQUEST)
            .body(error.to_string()),
    }
}

/// Serves the OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a free port; returns its
/// base URL.
async fn start_http_receiver(received: Arc<Received>) -> String {
    use poem::EndpointExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let addr = listener.local_addr().expect("receiver address");
    drop(listener);
    let app = poem::Route::new()
        .at("/v1/traces", poem::post(http_traces))
        .data(received);
    let acceptor = poem::listener::TcpListener::bind(addr.to_string());
    tokio::spawn(poem::Server::new(acceptor).run(app));
    format!("http://{addr}")
}

/// Runs a provider job submitted over HTTP with the client's `traceparent`, carried over
/// RabbitMQ, with the node exporting its spans over `protocol`, and checks the trace.
async fn one_trace_over(protocol: &str) {
    let received = Arc::new(Received::default());
    let endpoint = match protocol {
        "grpc" => start_grpc_receiver(received.clone()).await,
        _ => start_http_receiver(received.clone()).await,
    };
    let env: HashMap<String, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_SERVICE_NAME", "bulwark-traced"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let telemetry_config = TelemetryConfig {
        log_level: "warn".to_owned(),
        ..TelemetryConfig::default()
    };
    let (subscriber, _telemetry) =
        bulwark::logging::subscriber(&telemetry_config, "traced-node", &env)
            .expect("the subscriber builds");
    let _default = tracing::subscriber::set_default(subscriber);

    let simulator = SimulatorServer::start("127.0.0.1:0", SimulatorParams::default())
        .await
        .expect("simulator listens");
    let namespace = unique_namespace();
    let base = amqp_config(&namespace);
    let engine_url = simulator.base_url();
    let service = TestService::start_with(TestBackend::Postgres, move |config| {
        base(config);
        config.providers.insert(
            "engine".to_owned(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: Some(engine_url),
                allow_plain_http: true,
                max_attempts: 1,
                ..ProviderConfig::default()
            },
        );
    })
    .await;
    let response = service
        .client
        .post(service.url("/v1/jobs"))
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
        )
        .json(&json!({"kind": "provider.complete",
                      "payload": {"provider": "engine", "prompt": "Best CRM tools?"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.expect("job body");
    assert_eq!(job["trace_id"], CLIENT_TRACE_ID, "{job}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let done = service.wait_for_job(&job_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Spans leave in batches every few seconds: wait until the provider call's has come.
    let spans = eventually(Duration::from_secs(30), || async {
        let spans = received.trace(CLIENT_TRACE_ID);
        spans
            .iter()
            .any(|(_, span)| span.name == "provider.call" || span.name.starts_with("POST engine"))
            .then_some(spans)
    })
    .await;
    let names: Vec<&str> = spans.iter().map(|(_, span)| span.name.as_str()).collect();
    let find = |kind: SpanKind, name_prefix: &str| -> &Span {
        spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| span.kind == kind as i32 && span.name.starts_with(name_prefix))
            .unwrap_or_else(|| panic!("no {kind:?} span named {name_prefix}…: {names:?}"))
    };
    let by_id: HashMap<String, &Span> = spans
        .iter()
        .map(|(_, span)| (hex(&span.span_id), span))
        .collect();
    let descends_from = |span: &Span, ancestor: &Span| {
        let mut parent_id = hex(&span.parent_span_id);
        while let Some(parent) = by_id.get(&parent_id) {
            if parent.span_id == ancestor.span_id {
                return true;
            }
            parent_id = hex(&parent.parent_span_id);
        }
        false
    };

    let server = find(SpanKind::Server, "POST submit_job");
    assert_eq!(
        hex(&server.parent_span_id),
        CLIENT_SPAN_ID,
        "the client's span is its parent"
    );
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("submit_job")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("202")
    );
    let submit = find(SpanKind::Internal, "job.submit");
    assert_eq!(
        submit.parent_span_id, server.span_id,
        "submit under the request"
    );
    let exchange = format!("{namespace}.jobs");
    let publish = find(SpanKind::Producer, &format!("{exchange} publish"));
    assert!(
        descends_from(publish, submit),
        "publish under the submission"
    );
    assert_eq!(
        attribute(publish, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attribute(publish, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(
        attribute(publish, "messaging.destination.name"),
        Some(exchange.clone())
    );
    assert!(
        attribute(publish, "messaging.rabbitmq.destination.routing_key")
            .is_some_and(|key| key.starts_with("provider.complete")),
        "{publish:?}"
    );
    let consumer = find(SpanKind::Consumer, "provider.complete");
    assert_eq!(
        consumer.parent_span_id, publish.span_id,
        "the consumer's span continues the publisher's, across the broker"
    );
    assert_eq!(
        attribute(consumer, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attribute(consumer, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attribute(consumer, "messaging.destination.name"),
        Some(exchange)
    );
    let attempt = find(SpanKind::Internal, "provider.complete attempt");
    assert!(
        descends_from(attempt, consumer),
        "the attempt under the delivery"
    );
    assert_eq!(attribute(attempt, "job.id"), Some(job_id.clone()));
    let client = find(SpanKind::Client, "POST engine");
    assert!(
        descends_from(client, attempt),
        "the provider call under the attempt"
    );
    assert_eq!(
        attribute(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(
        spans.iter().all(|(service, _)| service == "bulwark-traced"),
        "every span names the service"
    );

    let stats = simulator.stats();
    let sent = stats
        .last_traceparent
        .expect("the provider received a traceparent");
    assert_eq!(
        sent,
        format!("00-{CLIENT_TRACE_ID}-{}-01", hex(&client.span_id)),
        "the provider's parent is the client span"
    );

    let metrics = service.get_text("/metrics").await;
    for outcome in ["ended", "exported"] {
        let counted = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "bulwark_trace_spans_total{{outcome=\"{outcome}\"}} "
                ))
            })
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_default();
        assert!(counted > 0.0, "spans {outcome} are counted:\n{metrics}");
    }

    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}

/// Proves one trace runs from `POST /v1/jobs` (continuing the client's `traceparent`) through
/// the RabbitMQ publish (producer) and delivery (consumer, child of the publish across the
/// broker), the job's attempt and the provider call (client), with HTTP and messaging
/// attributes, exported over OTLP/gRPC; that the provider received the client span's
/// `traceparent`; and that the node counts the spans that ended and were exported.
#[tokio::test(flavor = "current_thread")]
async fn one_trace_runs_from_http_through_rabbitmq_to_the_provider_over_grpc() {
    one_trace_over("grpc").await;
}

/// Proves the same trace is exported over OTLP/HTTP with protobuf bodies.
#[tokio::test(flavor = "current_thread")]
async fn one_trace_runs_from_http_through_rabbitmq_to_the_provider_over_http() {
    one_trace_over("http/protobuf").await;
}

/// A JSON value whose objects were checked for duplicate keys while it was read.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

/// Proves every line a traced `bulwark serve` logs through a request and a job is valid JSON
/// with unique keys and names its service, version and node, and that the lines of a traced
/// request carry its trace id and a span id at top level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_is_json_with_unique_keys_and_traced_lines_carry_ids() {
    let received = Arc::new(Received::default());
    let endpoint = start_http_receiver(received.clone()).await;
    let database = bulwark_store::testsuite::TestDatabase::create(TestBackend::Sqlite).await;
    let mut node = common::serve(
        common::serve_command(&database.url)
            .env("BULWARK__JOBS__NODE_ID", "logged-node")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_SERVICE_NAME", "bulwark-logged"),
    );
    let client = common::admin_client();
    let response = client
        .post(format!("{}/v1/jobs", node.base_url))
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
        )
        .header("x-request-id", "logged-request")
        .json(&json!({"kind": "sentiment.analyze", "payload": {"texts": ["a fine day"]}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.expect("job body");
    let job_url = format!(
        "{}/v1/jobs/{}",
        node.base_url,
        job["id"].as_str().expect("id")
    );
    eventually(Duration::from_secs(30), || async {
        let job: Value = client.get(&job_url).send().await.ok()?.json().await.ok()?;
        (job["status"] == "succeeded").then_some(())
    })
    .await;
    let _ = node.child.kill();
    let _ = node.child.wait();

    let lines = node.logs.lock().expect("logs").clone();
    assert!(lines.len() > 5, "{lines:?}");
    let mut request_lines = 0;
    for line in &lines {
        if let Err(error) = serde_json::from_str::<UniqueKeys>(line) {
            panic!("not JSON with unique keys ({error}): {line}");
        }
        let entry: Value = serde_json::from_str(line).expect("json");
        assert_eq!(entry["service"], "bulwark-logged", "{line}");
        assert_eq!(entry["node"], "logged-node", "{line}");
        assert_eq!(entry["version"], env!("CARGO_PKG_VERSION"), "{line}");
        let in_request = entry["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|span| span["request_id"] == "logged-request")
        });
        if in_request {
            request_lines += 1;
            assert_eq!(entry["trace_id"], CLIENT_TRACE_ID, "{line}");
            assert_eq!(entry["span_id"].as_str().map(str::len), Some(16), "{line}");
        }
    }
    assert!(request_lines > 0, "the request logged lines: {lines:?}");
}
