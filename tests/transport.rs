//! Browser and transport hardening of the whole service on port 0: CSP by kind of page,
//! `Cache-Control: no-store`, CORS for configured origins only, and the TLS listener with HSTS.

mod common;

use std::time::Duration;

use base64::Engine;
use bulwark::service::Service;
use bulwark_config::{ProviderConfig, ProviderKind, TlsConfig};
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use common::{TestService, test_config};
use reqwest::header::{self, HeaderMap};
use serde_json::json;
use sha2::{Digest, Sha256};

const ALLOWED_ORIGIN: &str = "https://app.example.com";
const REFUSED_ORIGIN: &str = "https://evil.example";

/// Returns the CSP source of SHA-256 over `content`, as a browser computes it for an inline
/// element.
fn csp_hash(content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Returns the text of every inline `<tag>` element of a page, as a browser reads it: from
/// the end of the opening tag to the first closing tag, whatever the text holds before it.
fn inline_elements(html: &str, tag: &str) -> Vec<String> {
    let lowercase = html.to_ascii_lowercase();
    let (open, close) = (format!("<{tag}"), format!("</{tag}"));
    let mut contents = Vec::new();
    let mut from = 0;
    while let Some(start) = lowercase[from..].find(&open).map(|at| from + at) {
        let tag_end = start + lowercase[start..].find('>').expect("tag closes");
        let body_end = tag_end + lowercase[tag_end..].find(&close).expect("element closes");
        if !lowercase[start..tag_end].contains("src=") {
            contents.push(html[tag_end + 1..body_end].to_owned());
        }
        from = body_end + close.len();
    }
    contents
}

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> &str {
    headers
        .get(name)
        .map(|value| value.to_str().expect("ascii header"))
        .unwrap_or("")
}

/// Returns the directive `name` of a CSP (`script-src 'sha256-…' …`), or "".
fn directive<'a>(csp: &'a str, name: &str) -> &'a str {
    csp.split(';')
        .map(str::trim)
        .find(|directive| directive.split_whitespace().next() == Some(name))
        .unwrap_or("")
}

/// GETs `path` and returns its status, headers and body.
async fn get(service: &TestService, path: &str) -> (u16, HeaderMap, String) {
    let response = service
        .client
        .get(service.url(path))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// Proves the headers each kind of response gets on a node with the default config: JSON has
/// a CSP that loads nothing and `no-store`; Swagger UI's CSP allows exactly its inline scripts
/// by hash; the audit report's CSP allows no script and its stylesheet by hash only; no
/// response has HSTS (plain HTTP) or any CORS header, even to a page that sends an Origin,
/// and a preflight is refused.
#[tokio::test]
async fn security_headers_by_kind_of_response() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.providers.insert(
            "sim".to_owned(),
            ProviderConfig {
                kind: ProviderKind::Simulated,
                ..ProviderConfig::default()
            },
        );
    })
    .await;

    let response = service
        .client
        .get(service.url("/live"))
        .header(header::ORIGIN, ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(header(headers, header::CACHE_CONTROL), "no-store");
    let json_csp = header(headers, header::CONTENT_SECURITY_POLICY);
    assert_eq!(directive(json_csp, "default-src"), "default-src 'none'");
    assert_eq!(
        directive(json_csp, "frame-ancestors"),
        "frame-ancestors 'none'"
    );
    assert_eq!(header(headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(!headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, service.url("/v1/sentiment"))
        .header(header::ORIGIN, ALLOWED_ORIGIN)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert!(
        preflight.status().is_client_error(),
        "no origin is configured: the preflight is refused ({})",
        preflight.status()
    );
    assert!(
        !preflight
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    let (status, headers, docs) = get(&service, "/docs").await;
    assert_eq!(status, 200, "{docs}");
    assert!(header(&headers, header::CONTENT_TYPE).starts_with("text/html"));
    let docs_csp = header(&headers, header::CONTENT_SECURITY_POLICY);
    let script_src = directive(docs_csp, "script-src");
    let scripts = inline_elements(&docs, "script");
    assert_eq!(
        scripts.len(),
        2,
        "Swagger UI's bundle and its start-up script"
    );
    for script in &scripts {
        assert!(script_src.contains(&csp_hash(script)), "{script_src}");
    }
    assert!(!script_src.contains("unsafe"), "{script_src}");
    assert_eq!(header(&headers, header::CACHE_CONTROL), "no-store");

    let (status, audit) = service
        .post_json(
            "/v1/audits",
            &json!({ "brand": "Acme", "prompts": ["Which CRM is best?"], "providers": ["sim"] }),
        )
        .await;
    assert_eq!(status, 202, "{audit}");
    let report_path = audit["report_html_url"]
        .as_str()
        .expect("report url")
        .to_owned();
    let (headers, page) = eventually(Duration::from_secs(30), || async {
        let (status, headers, page) = get(&service, &report_path).await;
        (status == 200).then_some((headers, page))
    })
    .await;
    let page_csp = header(&headers, header::CONTENT_SECURITY_POLICY);
    assert_eq!(directive(page_csp, "default-src"), "default-src 'none'");
    assert_eq!(directive(page_csp, "script-src"), "", "no script at all");
    assert!(!page_csp.contains("unsafe"), "{page_csp}");
    let styles = inline_elements(&page, "style");
    assert_eq!(styles.len(), 1, "the report's one stylesheet");
    assert_eq!(
        directive(page_csp, "style-src"),
        format!("style-src {}", csp_hash(&styles[0]))
    );
    assert!(page.contains("<svg"), "the chart is inline SVG");
    assert_eq!(header(&headers, header::CACHE_CONTROL), "no-store");
    service.service.shutdown().await.expect("shutdown");
}

/// Proves CORS answers only the configured origin: its preflight gets `204` with the methods
/// and headers it may use, its requests get `Access-Control-Allow-Origin`; a preflight from
/// another origin gets `403` and its requests no CORS header, so the browser keeps the
/// answer from that page.
#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
        config.http.cors_allowed_origins = vec![ALLOWED_ORIGIN.to_owned()];
    })
    .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, service.url("/v1/sentiment"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type",
            )
            .send()
    };

    let allowed = preflight(ALLOWED_ORIGIN).await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        header(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        ALLOWED_ORIGIN
    );
    assert!(header(headers, header::ACCESS_CONTROL_ALLOW_METHODS).contains("POST"));
    let allowed_headers = header(headers, header::ACCESS_CONTROL_ALLOW_HEADERS);
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let refused = preflight(REFUSED_ORIGIN).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    for (origin, expected) in [(ALLOWED_ORIGIN, ALLOWED_ORIGIN), (REFUSED_ORIGIN, "")] {
        let response = service
            .client
            .get(service.url("/live"))
            .header(header::ORIGIN, origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the server still answers {origin}");
        let headers = response.headers();
        assert_eq!(
            header(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            expected
        );
        assert_eq!(header(headers, header::VARY), "Origin");
        if !expected.is_empty() {
            assert!(
                header(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS).contains("x-request-id")
            );
        }
    }
    service.service.shutdown().await.expect("shutdown");
}

/// Proves `[http.tls]` serves HTTPS with a certificate made here (self-signed), every answer
/// carries HSTS with the configured age, and the port no longer speaks plain HTTP.
#[tokio::test]
async fn tls_listener_serves_https_with_hsts() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate generated");
    let dir = std::env::temp_dir().join(format!(
        "bulwark-tls-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();

    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let mut config = test_config(&database.url);
    config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    config.http.tls = Some(TlsConfig {
        cert_file: cert_file.display().to_string(),
        key_file: key_file.display().to_string(),
        hsts_max_age_secs: 600,
    });
    let service = Service::start(&config)
        .await
        .expect("service starts with TLS");
    let port = service.addr.port();
    assert_eq!(service.base_url, format!("https://127.0.0.1:{port}"));

    let trusted = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(trusted)
        .https_only(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = https
        .get(format!("https://localhost:{port}/live"))
        .send()
        .await
        .expect("an https answer from a certificate the client trusts");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), header::STRICT_TRANSPORT_SECURITY),
        "max-age=600"
    );
    assert_eq!(
        header(response.headers(), header::CACHE_CONTROL),
        "no-store"
    );

    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/live"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP is not served: {plain:?}");

    service.shutdown().await.expect("shutdown");
    drop(database);
    let _ = std::fs::remove_dir_all(&dir);
}
