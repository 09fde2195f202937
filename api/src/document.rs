//! The OpenAPI document as served: poem-openapi's, with the objects of request bodies closed
//! (see [`crate::strict_json`]), and the methods each documented path answers, which a `405`
//! lists in its `Allow` header.

use poem::http::HeaderValue;
use serde_json::Value;

use crate::strict_json::close_request_objects;

/// The served document and the methods of each of its paths.
#[derive(Debug, Clone)]
pub struct ApiDocument {
    json: String,
    paths: Vec<DocumentedPath>,
}

/// A path template (`/v1/jobs/{id}`) and its `Allow` value.
#[derive(Debug, Clone)]
struct DocumentedPath {
    /// The template's segments; `None` stands for a parameter.
    segments: Vec<Option<String>>,
    allow: HeaderValue,
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

impl ApiDocument {
    /// Returns the served form of `generated`, the document poem-openapi generated.
    pub fn new(generated: &str) -> ApiDocument {
        let mut document: Value =
            serde_json::from_str(generated).expect("poem-openapi generates a JSON document");
        close_request_objects(&mut document);
        let paths = document["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(template, item)| {
                let mut methods: Vec<String> = METHODS
                    .iter()
                    .filter(|method| item.get(**method).is_some())
                    .map(|method| method.to_uppercase())
                    .collect();
                // poem answers HEAD wherever GET is routed.
                if item.get("get").is_some() && item.get("head").is_none() {
                    methods.push("HEAD".to_owned());
                }
                DocumentedPath {
                    segments: template
                        .split('/')
                        .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                        .collect(),
                    allow: HeaderValue::from_str(&methods.join(", "))
                        .expect("method names are header-safe"),
                }
            })
            .collect();
        let json = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
        ApiDocument { json, paths }
    }

    /// Returns the document as JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Returns the `Allow` value of the documented path `path` matches, preferring a template
    /// with more literal segments (`/v1/dead-letters/requeue` over `/v1/dead-letters/{id}`).
    pub fn allow_for(&self, path: &str) -> Option<HeaderValue> {
        let segments: Vec<&str> = path.split('/').collect();
        self.paths
            .iter()
            .filter(|documented| {
                documented.segments.len() == segments.len()
                    && documented
                        .segments
                        .iter()
                        .zip(&segments)
                        .all(|(expected, actual)| {
                            expected.as_deref().is_none_or(|literal| literal == *actual)
                        })
            })
            .max_by_key(|documented| documented.segments.iter().flatten().count())
            .map(|documented| documented.allow.clone())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Proves `Allow` lists a path's documented methods (HEAD with GET), literal segments win
    /// over parameters, and an undocumented path has none.
    #[test]
    fn allow_lists_the_documented_methods_of_a_path() {
        let generated = json!({
            "paths": {
                "/v1/jobs": {"get": {}, "post": {}},
                "/v1/jobs/{id}": {"get": {}},
                "/v1/dead-letters/{id}": {"get": {}},
                "/v1/dead-letters/requeue": {"post": {}}
            }
        })
        .to_string();
        let document = ApiDocument::new(&generated);
        let allow = |path: &str| {
            document
                .allow_for(path)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        assert_eq!(allow("/v1/jobs").as_deref(), Some("GET, POST, HEAD"));
        assert_eq!(allow("/v1/jobs/abc").as_deref(), Some("GET, HEAD"));
        assert_eq!(allow("/v1/dead-letters/requeue").as_deref(), Some("POST"));
        assert_eq!(allow("/v1/dead-letters/x").as_deref(), Some("GET, HEAD"));
        assert_eq!(allow("/v1/nothing"), None);
        assert_eq!(allow("/v1/jobs/abc/more"), None);
    }
}
