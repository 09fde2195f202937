use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{Body, EndpointExt, IntoResponse, Request, Response, Route, Server, get, handler, post};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use super::{FaultDice, FaultKnobs, FaultOutcome, SimulatedEngine, SimulatedEngineParams};
use crate::CompletionRequest;
use crate::wire::{
    ChatAnswer, ChatChoice, ChatRequest, ChatResponse, ChatUsage, ContentBlock, MessagesRequest,
    MessagesResponse, MessagesUsage,
};

/// How long a "hung" request waits before the simulator gives up on it itself.
const HANG_FOR: Duration = Duration::from_secs(600);

/// Counts of what the simulator did, from `GET /admin/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SimulatorStats {
    pub requests: u64,
    /// Requests that carried a well-formed W3C `traceparent`.
    #[serde(default)]
    pub traced: u64,
    /// The `traceparent` of the last traced request, to check trace propagation.
    #[serde(default)]
    pub last_traceparent: Option<String>,
    pub answered: u64,
    pub hung: u64,
    pub dropped: u64,
    pub errors: u64,
    pub rate_limited: u64,
    pub malformed: u64,
    pub unauthorized: u64,
}

#[derive(Debug, Default)]
struct StatCounters {
    requests: AtomicU64,
    traced: AtomicU64,
    last_traceparent: std::sync::Mutex<Option<String>>,
    answered: AtomicU64,
    hung: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    malformed: AtomicU64,
    unauthorized: AtomicU64,
}

impl StatCounters {
    fn snapshot(&self) -> SimulatorStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SimulatorStats {
            requests: read(&self.requests),
            traced: read(&self.traced),
            last_traceparent: self
                .last_traceparent
                .lock()
                .map(|last| last.clone())
                .unwrap_or_default(),
            answered: read(&self.answered),
            hung: read(&self.hung),
            dropped: read(&self.dropped),
            errors: read(&self.errors),
            rate_limited: read(&self.rate_limited),
            malformed: read(&self.malformed),
            unauthorized: read(&self.unauthorized),
        }
    }
}

/// What a simulator server is started with.
#[derive(Debug, Clone, Default)]
pub struct SimulatorParams {
    pub engine: SimulatedEngineParams,
    pub faults: FaultKnobs,
    /// When set, requests must carry it (`Authorization: Bearer` or `x-api-key`); a wrong key is
    /// answered `401` with the presented key echoed back, as some real providers do, so tests
    /// can prove adapters scrub it.
    pub api_key: Option<String>,
}

#[derive(Debug)]
struct SimulatorState {
    engine: SimulatedEngine,
    faults: RwLock<FaultKnobs>,
    dice: FaultDice,
    api_key: Option<String>,
    stats: StatCounters,
}

impl SimulatorState {
    fn faults(&self) -> FaultKnobs {
        self.faults
            .read()
            .map(|knobs| knobs.clone())
            .unwrap_or_default()
    }
}

/// The two wire formats the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
}

/// Returns the simulator's HTTP app: `POST /v1/chat/completions` (OpenAI format),
/// `POST /v1/messages` (Anthropic format), `GET|PUT /admin/faults` and `GET /admin/stats`.
pub fn simulator_app(params: SimulatorParams) -> impl poem::Endpoint {
    let state = Arc::new(new_state(params));
    routes(state)
}

fn new_state(params: SimulatorParams) -> SimulatorState {
    SimulatorState {
        dice: FaultDice::new(params.engine.seed),
        engine: SimulatedEngine::new(params.engine),
        faults: RwLock::new(params.faults),
        api_key: params.api_key,
        stats: StatCounters::default(),
    }
}

fn routes(state: Arc<SimulatorState>) -> impl poem::Endpoint {
    Route::new()
        .at("/v1/chat/completions", post(openai_chat_completions))
        .at("/v1/messages", post(anthropic_messages))
        .at("/admin/faults", get(get_faults).put(put_faults))
        .at("/admin/stats", get(get_stats))
        .data(state)
}

/// A simulator listening on a socket, for tests, benchmarks and `bulwark simulate-provider`.
#[derive(Debug)]
pub struct SimulatorServer {
    addr: SocketAddr,
    state: Arc<SimulatorState>,
    stop_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimulatorServer {
    /// Listens on `addr` (port 0 picks a free port) and serves until [`SimulatorServer::stop`].
    pub async fn start(addr: &str, params: SimulatorParams) -> std::io::Result<SimulatorServer> {
        let acceptor = TcpListener::bind(addr).into_acceptor().await?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|local| local.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("listener has no socket address"))?;
        let state = Arc::new(new_state(params));
        let app = routes(Arc::clone(&state));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                app,
                async move {
                    let _ = stop_rx.await;
                },
                Some(Duration::from_secs(1)),
            ),
        );
        info!(addr = %local_addr, "simulated provider listening");
        Ok(SimulatorServer {
            addr: local_addr,
            state,
            stop_tx: Some(stop_tx),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns `http://<addr>/v1`, the base URL both adapters take.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Replaces the fault knobs, as `PUT /admin/faults` does.
    pub fn set_faults(&self, knobs: FaultKnobs) {
        if let Ok(mut faults) = self.state.faults.write() {
            *faults = knobs;
        }
    }

    pub fn stats(&self) -> SimulatorStats {
        self.state.stats.snapshot()
    }

    /// Waits until the server stops by itself (for `bulwark simulate-provider`).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let _keep_running = self.stop_tx.take();
        (&mut self.task)
            .await
            .map_err(|error| std::io::Error::other(error.to_string()))?
    }

    /// Stops listening; requests in flight get a second to finish.
    pub async fn stop(mut self) {
        if let Some(stop_tx) = self.stop_tx.take() {
            let _ = stop_tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[handler]
fn get_faults(Data(state): Data<&Arc<SimulatorState>>) -> Json<FaultKnobs> {
    Json(state.faults())
}

#[handler]
fn put_faults(Data(state): Data<&Arc<SimulatorState>>, Json(knobs): Json<FaultKnobs>) -> Response {
    if let Err(message) = knobs.validate() {
        return (StatusCode::UNPROCESSABLE_ENTITY, message).into_response();
    }
    info!(?knobs, "fault knobs changed");
    if let Ok(mut faults) = state.faults.write() {
        *faults = knobs.clone();
    }
    Json(knobs).into_response()
}

#[handler]
fn get_stats(Data(state): Data<&Arc<SimulatorState>>) -> Json<SimulatorStats> {
    Json(state.stats.snapshot())
}

#[handler]
async fn openai_chat_completions(
    state: Data<&Arc<SimulatorState>>,
    request: &Request,
    body: Body,
) -> Response {
    serve(state.0, request, body, Format::OpenAi).await
}

#[handler]
async fn anthropic_messages(
    state: Data<&Arc<SimulatorState>>,
    request: &Request,
    body: Body,
) -> Response {
    serve(state.0, request, body, Format::Anthropic).await
}

/// Parses the request in its format into a [`CompletionRequest`] and the model it named.
fn parse(
    format: Format,
    bytes: &[u8],
    seed_header: Option<u64>,
) -> Result<(CompletionRequest, String), String> {
    match format {
        Format::OpenAi => {
            let chat: ChatRequest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            let system = chat
                .messages
                .iter()
                .find(|message| message.role == "system")
                .map(|message| message.content.clone());
            let prompt = chat
                .messages
                .iter()
                .rev()
                .find(|message| message.role == "user")
                .map(|message| message.content.clone())
                .ok_or_else(|| "messages: no user message".to_owned())?;
            let request = CompletionRequest {
                prompt,
                system,
                max_tokens: chat.max_tokens,
                temperature: chat.temperature,
                seed: chat.seed.or(seed_header),
                request_id: None,
            };
            Ok((request, chat.model))
        }
        Format::Anthropic => {
            let messages: MessagesRequest =
                serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            let prompt = messages
                .messages
                .iter()
                .rev()
                .find(|turn| turn.role == "user")
                .map(|turn| turn.content.text())
                .ok_or_else(|| "messages: no user turn".to_owned())?;
            let request = CompletionRequest {
                prompt,
                system: messages.system,
                max_tokens: Some(messages.max_tokens),
                temperature: messages.temperature,
                seed: seed_header,
                request_id: None,
            };
            Ok((request, messages.model))
        }
    }
}

fn presented_key(request: &Request, format: Format) -> Option<String> {
    let header = match format {
        Format::OpenAi => request
            .header("authorization")
            .map(|value| value.trim_start_matches("Bearer ").to_owned()),
        Format::Anthropic => request.header("x-api-key").map(str::to_owned),
    };
    header.filter(|key| !key.is_empty())
}

async fn serve(state: &SimulatorState, request: &Request, body: Body, format: Format) -> Response {
    let stats = &state.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let traceparent_opt = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| bulwark_core::trace_id_of(value).is_some());
    if let Some(traceparent) = traceparent_opt {
        stats.traced.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = stats.last_traceparent.lock() {
            *last = Some(traceparent.to_owned());
        }
    }
    if let Some(expected) = &state.api_key {
        let presented = presented_key(request, format).unwrap_or_default();
        if &presented != expected {
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            let message = format!("Incorrect API key provided: {presented}");
            return error_response(
                format,
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                &message,
            );
        }
    }
    if format == Format::Anthropic && request.header("anthropic-version").is_none() {
        return error_response(
            format,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let seed_header = request
        .header("x-bulwark-seed")
        .and_then(|value| value.parse::<u64>().ok());
    let bytes = match body.into_vec().await {
        Ok(bytes) => bytes,
        Err(error) => {
            return error_response(
                format,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &error.to_string(),
            );
        }
    };
    let (completion_request, model) = match parse(format, &bytes, seed_header) {
        Ok(parsed) => parsed,
        Err(message) => {
            return error_response(
                format,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &message,
            );
        }
    };
    let (delay, outcome) = state.dice.roll(&state.faults());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let request_id = request.header("x-request-id").map(str::to_owned);
    let response = match outcome {
        FaultOutcome::Answer => {
            stats.answered.fetch_add(1, Ordering::Relaxed);
            answer(state, format, &completion_request, model)
        }
        FaultOutcome::Hang => {
            stats.hung.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(HANG_FOR).await;
            error_response(format, StatusCode::GATEWAY_TIMEOUT, "timeout", "hung")
        }
        FaultOutcome::Drop => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            // Headers go out, then the body fails: the connection is cut mid-answer.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
                Ok(br#"{"id":"sim-dropped","choices":["#.to_vec()),
                Err(std::io::Error::other("simulated connection drop")),
            ];
            Response::builder()
                .status(StatusCode::OK)
                .content_type("application/json")
                .body(Body::from_bytes_stream(futures::stream::iter(chunks)))
        }
        FaultOutcome::Error => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            match format {
                Format::OpenAi => error_response(
                    format,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "The server had an error while processing your request.",
                ),
                Format::Anthropic => error_response(
                    format,
                    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "overloaded_error",
                    "Overloaded",
                ),
            }
        }
        FaultOutcome::RateLimited { retry_after } => {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut response = error_response(
                format,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Rate limit reached, please try again later.",
            );
            let seconds = retry_after.as_millis().div_ceil(1_000).to_string();
            let millis = retry_after.as_millis().to_string();
            let headers = response.headers_mut();
            if let Ok(value) = seconds.parse() {
                headers.insert("retry-after", value);
            }
            if let Ok(value) = millis.parse() {
                headers.insert("retry-after-ms", value);
            }
            response
        }
        FaultOutcome::Malformed => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            Response::builder()
                .status(StatusCode::OK)
                .content_type("application/json")
                .body(r#"{"id": "sim-malformed", "choices": [{"message": "#)
        }
    };
    match request_id.and_then(|id| id.parse().ok()) {
        Some(value) => {
            let mut response = response;
            response.headers_mut().insert("x-request-id", value);
            response
        }
        None => response,
    }
}

fn answer(
    state: &SimulatorState,
    format: Format,
    request: &CompletionRequest,
    requested_model: String,
) -> Response {
    let generated = state.engine.answer(request);
    let model = if requested_model.is_empty() {
        state.engine.model().to_owned()
    } else {
        requested_model
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let id = format!(
        "sim-{created}-{:016x}",
        crate::rng::fnv1a(&[generated.text.as_bytes()])
    );
    match format {
        Format::OpenAi => Json(ChatResponse {
            id: format!("chatcmpl-{id}"),
            object: "chat.completion".to_owned(),
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatAnswer {
                    role: "assistant".to_owned(),
                    content: Some(generated.text),
                },
                finish_reason: Some("stop".to_owned()),
            }],
            usage: Some(ChatUsage {
                prompt_tokens: generated.usage.input_tokens,
                completion_tokens: generated.usage.output_tokens,
                total_tokens: generated.usage.input_tokens + generated.usage.output_tokens,
            }),
        })
        .into_response(),
        Format::Anthropic => Json(MessagesResponse {
            id: format!("msg_{id}"),
            kind: "message".to_owned(),
            role: "assistant".to_owned(),
            model,
            content: vec![ContentBlock {
                kind: "text".to_owned(),
                text: Some(generated.text),
            }],
            stop_reason: Some("end_turn".to_owned()),
            usage: MessagesUsage {
                input_tokens: generated.usage.input_tokens,
                output_tokens: generated.usage.output_tokens,
            },
        })
        .into_response(),
    }
}

fn error_response(format: Format, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match format {
        Format::OpenAi => serde_json::json!({
            "error": { "message": message, "type": kind, "code": null }
        }),
        Format::Anthropic => serde_json::json!({
            "type": "error",
            "error": { "type": kind, "message": message }
        }),
    };
    (status, Json(body)).into_response()
}
