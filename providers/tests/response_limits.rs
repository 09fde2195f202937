//! The HTTP adapters read answers with a size limit: a body over `max_response_bytes`, with or
//! without a `Content-Length`, fails as `RESPONSE_TOO_LARGE` and is never buffered whole.

use std::net::SocketAddr;
use std::time::Duration;

use bulwark_providers::{
    AnthropicProvider, CompletionRequest, HttpProviderParams, OpenAiProvider, Provider,
    ProviderError,
};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Path;
use poem::{Body, Response, Route, Server, handler, post};

/// A chat completion whose text is `text_bytes` long, in both wire formats.
fn completion_json(text_bytes: usize) -> String {
    let text = "a".repeat(text_bytes);
    serde_json::json!({
        "id": "x", "model": "m", "type": "message", "role": "assistant",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text } }],
        "content": [{ "type": "text", "text": text }],
        "usage": {
            "input_tokens": 1, "output_tokens": 1, "prompt_tokens": 1, "completion_tokens": 1,
        },
    })
    .to_string()
}

/// `POST /{mode}/{size}/...`: answers `size` bytes of text, announced (`sized`), streamed
/// without a length (`chunked`), or as a 500 error body (`error`).
#[handler]
fn answer(Path((mode, size, _rest)): Path<(String, usize, String)>) -> Response {
    let body = completion_json(size);
    match mode.as_str() {
        "chunked" => {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                .into_bytes()
                .chunks(8 * 1024)
                .map(|chunk| Ok(chunk.to_vec()))
                .collect();
            Response::builder()
                .content_type("application/json")
                .body(Body::from_bytes_stream(futures::stream::iter(chunks)))
        }
        "error" => Response::builder()
            .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
            .body(format!(
                "{{\"error\":{{\"message\":\"{}\"}}}}",
                "e".repeat(size)
            )),
        _ => Response::builder()
            .content_type("application/json")
            .body(body),
    }
}

/// Starts the oversized-answer server on a free loopback port.
async fn start_server() -> SocketAddr {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("binds");
    let addr = *acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("socket address");
    let app = Route::new().at("/:mode/:size/*rest", post(answer));
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    addr
}

fn params(base_url: String, max_response_bytes: usize) -> HttpProviderParams {
    HttpProviderParams {
        name: "limited".to_owned(),
        base_url,
        model: "m".to_owned(),
        api_key_opt: None,
        default_max_tokens: 16,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        max_response_bytes,
        allow_plain_http: true,
    }
}

fn request() -> CompletionRequest {
    CompletionRequest {
        prompt: "hi".to_owned(),
        ..CompletionRequest::default()
    }
}

/// Proves an answer over the limit fails with `RESPONSE_TOO_LARGE` (retriable, counted by the
/// breaker) whether its size is announced or streamed, in both wire formats, while one under
/// the limit is read as usual.
#[tokio::test]
async fn oversized_answers_fail_as_response_too_large() {
    const LIMIT: usize = 16 * 1024;
    let addr = start_server().await;
    for mode in ["sized", "chunked"] {
        for format in ["openai", "anthropic"] {
            let adapter = |size: usize| -> Box<dyn Provider> {
                let params = params(format!("http://{addr}/{mode}/{size}"), LIMIT);
                match format {
                    "openai" => Box::new(OpenAiProvider::new(params).unwrap()),
                    _ => Box::new(AnthropicProvider::new(params).unwrap()),
                }
            };
            let small = adapter(1024).complete(&request()).await;
            assert_eq!(
                small.expect("an answer under the limit is read").text.len(),
                1024
            );
            let error = adapter(4 * LIMIT)
                .complete(&request())
                .await
                .expect_err("an answer over the limit is refused");
            assert_eq!(
                error,
                ProviderError::ResponseTooLarge {
                    provider: "limited".to_owned(),
                    limit_bytes: LIMIT,
                },
                "{mode} {format}"
            );
            assert_eq!(error.code(), "RESPONSE_TOO_LARGE");
            assert!(error.is_retryable() && error.counts_against_breaker());
        }
    }
}

/// Proves an oversized error body is cut at the limit rather than refused: the status still
/// decides the error, and the cut body (no longer valid JSON) is what the message quotes.
#[tokio::test]
async fn oversized_error_bodies_are_cut() {
    const LIMIT: usize = 4 * 1024;
    let addr = start_server().await;
    let provider =
        OpenAiProvider::new(params(format!("http://{addr}/error/{}", 64 * LIMIT), LIMIT)).unwrap();
    let error = provider.complete(&request()).await.unwrap_err();
    let ProviderError::Upstream { status, message } = &error else {
        panic!("a 500 is an upstream error: {error:?}");
    };
    assert_eq!(*status, 500);
    // Read whole, the body would parse and the message would be its `error.message` ("eee…").
    assert!(message.starts_with("{\"error\""), "{message}");
}

/// Proves a client built without `allow_plain_http` refuses an `http://` URL before sending
/// anything, so a key never travels in clear text.
#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let addr = start_server().await;
    let mut https_only = params(format!("http://{addr}/sized/16"), 1024 * 1024);
    https_only.allow_plain_http = false;
    let error = OpenAiProvider::new(https_only)
        .unwrap()
        .complete(&request())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "CONNECTION_FAILED", "{error}");
}
