//! Strict JSON request bodies. poem-openapi's `Json<T>` reads a number or a boolean where its
//! schema says `string` (`{"texts": [42]}` became the text `"42"`) and `null` for any optional
//! field; [`StrictJson`] first checks the body against the schema `T` documents, so a body the
//! document does not allow is refused with `422` naming the field. Objects are closed: the
//! served document says `additionalProperties: false` for every object a request body reaches
//! ([`close_request_objects`]), and unknown fields are refused.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{LazyLock, RwLock};

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use serde_json::Value;

use crate::error::ApiError;

/// A JSON request body checked against its documented schema before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictJson<T>(pub T);

impl<T: Type> Payload for StrictJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        poem_openapi::payload::Json::<T>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON> ParsePayload for StrictJson<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        let value: Value = serde_json::from_slice(&data)
            .map_err(|error| ApiError::malformed(format!("body: invalid JSON: {error}")))?;
        check_body::<T>(&value).map_err(ApiError::invalid)?;
        // Every documented rule was checked above; poem-openapi's validators agree with it.
        let parsed = T::parse_from_json(Some(value))
            .map_err(|error| ApiError::invalid(format!("body: {}", error.into_message())))?;
        Ok(StrictJson(parsed))
    }
}

poem_openapi::impl_apirequest_for_payload!(StrictJson<T>, T: ParseFromJSON);

/// Checks a body against the schema of `T`. The message starts with the field at fault
/// (`texts[0]: expected string, found a number`), or `body` for the body as a whole.
pub(crate) fn check_body<T: Type>(value: &Value) -> Result<(), String> {
    check_each::<T>(std::slice::from_ref(value), "body")
        .pop()
        .unwrap_or(Ok(()))
}

/// Checks each value against the schema of `T`, one answer per value. The message starts with
/// the field at fault (`payload: is required`), or `name` for the value as a whole.
pub(crate) fn check_each<T: Type>(values: &[Value], name: &str) -> Vec<Result<(), String>> {
    let mut registry = Registry::new();
    T::register(&mut registry);
    let schema_ref = T::schema_ref();
    let field_prefix = format!("{name}.");
    values
        .iter()
        .map(|value| {
            let mut path = name.to_owned();
            check_value(&registry, &schema_ref, value, &mut path).map_err(|message| {
                match message.strip_prefix(&field_prefix) {
                    Some(field_message) => field_message.to_owned(),
                    None => message,
                }
            })
        })
        .collect()
}

/// Checks `value` against `schema_ref`; `path` names the value (`body.texts[0]`) and the
/// error message starts with it.
fn check_value(
    registry: &Registry,
    schema_ref: &MetaSchemaRef,
    value: &Value,
    path: &mut String,
) -> Result<(), String> {
    let schema = match schema_ref {
        MetaSchemaRef::Inline(schema) => schema.as_ref(),
        MetaSchemaRef::Reference(name) => registry
            .schemas
            .get(name)
            .ok_or_else(|| format!("{path}: undocumented schema `{name}`"))?,
    };
    for part in &schema.all_of {
        check_value(registry, part, value, path)?;
    }
    if !schema.any_of.is_empty() || !schema.one_of.is_empty() {
        let alternatives = schema.any_of.iter().chain(&schema.one_of);
        let num_matching = alternatives
            .filter(|part| check_value(registry, part, value, &mut path.clone()).is_ok())
            .count();
        let matches = if schema.one_of.is_empty() {
            num_matching >= 1
        } else {
            num_matching == 1
        };
        if !matches {
            return Err(format!(
                "{path}: matches none of the documented alternatives"
            ));
        }
    }
    if schema.ty.is_empty() {
        return Ok(());
    }
    if value.is_null() {
        return if schema.nullable {
            Ok(())
        } else {
            Err(format!("{path}: expected {}, found null", schema.ty))
        };
    }
    if !schema.enum_items.is_empty() && !schema.enum_items.contains(value) {
        let allowed: Vec<String> = schema.enum_items.iter().map(Value::to_string).collect();
        return Err(format!("{path}: must be one of {}", allowed.join(", ")));
    }
    match (schema.ty, value) {
        ("string", Value::String(text)) => check_string(schema, text, path),
        ("integer", Value::Number(number)) if number.is_i64() || number.is_u64() => {
            check_number(schema, number, path)
        }
        ("number", Value::Number(number)) => check_number(schema, number, path),
        ("boolean", Value::Bool(_)) => Ok(()),
        ("array", Value::Array(items)) => check_array(registry, schema, items, path),
        ("object", Value::Object(fields)) => check_object(registry, schema, fields, path),
        (expected, found) => Err(format!(
            "{path}: expected {expected}, found {}",
            json_type_name(found)
        )),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compiled `pattern`s of the documented schemas, by pattern: the set is fixed at build time.
static PATTERNS: LazyLock<RwLock<HashMap<String, regex::Regex>>> = LazyLock::new(Default::default);

/// Returns whether `text` matches `pattern`; a pattern that does not compile matches nothing.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    let cached_opt = PATTERNS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(pattern)
        .map(|regex| regex.is_match(text));
    if let Some(matched) = cached_opt {
        return matched;
    }
    let Ok(regex) = regex::Regex::new(pattern) else {
        return false;
    };
    let matched = regex.is_match(text);
    PATTERNS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(pattern.to_owned(), regex);
    matched
}

fn check_string(schema: &MetaSchema, text: &str, path: &str) -> Result<(), String> {
    let num_chars = text.chars().count();
    if let Some(min_length) = schema.min_length
        && num_chars < min_length
    {
        return Err(format!("{path}: at least {min_length} characters required"));
    }
    if let Some(max_length) = schema.max_length
        && num_chars > max_length
    {
        return Err(format!(
            "{path}: {num_chars} characters, at most {max_length} allowed"
        ));
    }
    if let Some(pattern) = &schema.pattern
        && !matches_pattern(pattern, text)
    {
        let meaning = if pattern == r"\S" { " (blank)" } else { "" };
        return Err(format!(
            "{path}: does not match the pattern `{pattern}`{meaning}"
        ));
    }
    Ok(())
}

/// Checks the bounds the schema states, and the range of the integer format it names.
fn check_number(
    schema: &MetaSchema,
    number: &serde_json::Number,
    path: &str,
) -> Result<(), String> {
    let format_range = match schema.format {
        Some("int8") => Some((i8::MIN as f64, i8::MAX as f64)),
        Some("int16") => Some((i16::MIN as f64, i16::MAX as f64)),
        Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
        Some("uint8") => Some((0.0, u8::MAX as f64)),
        Some("uint16") => Some((0.0, u16::MAX as f64)),
        Some("uint32") => Some((0.0, u32::MAX as f64)),
        Some("uint64") => Some((0.0, u64::MAX as f64)),
        Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
        _ => None,
    };
    let as_float = number.as_f64().unwrap_or(f64::NAN);
    let out_of_format = match schema.format {
        Some("int64") => !number.is_i64(),
        Some("uint64") => !number.is_u64(),
        _ => format_range.is_some_and(|(min, max)| !(min..=max).contains(&as_float)),
    };
    if out_of_format {
        return Err(format!(
            "{path}: {number} is out of range for {}",
            schema.format.unwrap_or(schema.ty)
        ));
    }
    if let Some(minimum) = schema.minimum {
        let below = if schema.exclusive_minimum == Some(true) {
            as_float <= minimum
        } else {
            as_float < minimum
        };
        if below {
            return Err(format!("{path}: must be at least {minimum}, got {number}"));
        }
    }
    if let Some(maximum) = schema.maximum {
        let above = if schema.exclusive_maximum == Some(true) {
            as_float >= maximum
        } else {
            as_float > maximum
        };
        if above {
            return Err(format!("{path}: must be at most {maximum}, got {number}"));
        }
    }
    Ok(())
}

fn check_array(
    registry: &Registry,
    schema: &MetaSchema,
    items: &[Value],
    path: &mut String,
) -> Result<(), String> {
    if let Some(min_items) = schema.min_items
        && items.len() < min_items
    {
        return Err(format!("{path}: at least {min_items} items required"));
    }
    if let Some(max_items) = schema.max_items
        && items.len() > max_items
    {
        return Err(format!(
            "{path}: {} items, at most {max_items} allowed",
            items.len()
        ));
    }
    if schema.unique_items == Some(true) {
        let mut seen = HashSet::new();
        if !items.iter().all(|item| seen.insert(item.to_string())) {
            return Err(format!("{path}: items must be unique"));
        }
    }
    if let Some(item_schema) = &schema.items {
        let parent_len = path.len();
        for (index, item) in items.iter().enumerate() {
            let _ = write!(path, "[{index}]");
            check_value(registry, item_schema, item, path)?;
            path.truncate(parent_len);
        }
    }
    Ok(())
}

fn check_object(
    registry: &Registry,
    schema: &MetaSchema,
    fields: &serde_json::Map<String, Value>,
    path: &mut String,
) -> Result<(), String> {
    for name in &schema.required {
        if !fields.contains_key(*name) {
            return Err(format!("{path}.{name}: is required"));
        }
    }
    let closed = !schema.properties.is_empty() && schema.additional_properties.is_none();
    let parent_len = path.len();
    for (name, field_value) in fields {
        let property_opt = schema
            .properties
            .iter()
            .find(|(property, _)| property == name)
            .map(|(_, property_schema)| property_schema)
            .or(schema.additional_properties.as_deref());
        let Some(property_schema) = property_opt else {
            if closed {
                return Err(format!("{path}.{name}: unknown field"));
            }
            continue;
        };
        let _ = write!(path, ".{name}");
        check_value(registry, property_schema, field_value, path)?;
        path.truncate(parent_len);
    }
    Ok(())
}

/// Adds `additionalProperties: false` to every object schema with properties that a request
/// body of `document` (an OpenAPI 3 document as JSON) reaches, as [`StrictJson`] refuses
/// unknown fields.
pub fn close_request_objects(document: &mut Value) {
    let mut pending: Vec<Value> = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for operation in paths
            .values()
            .filter_map(Value::as_object)
            .flat_map(|item| item.values())
        {
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                pending.extend(content.values().map(|media| media["schema"].clone()));
            }
        }
    }
    let mut closed_names: HashSet<String> = HashSet::new();
    while let Some(schema) = pending.pop() {
        collect_refs(&schema, &mut |name| {
            if closed_names.insert(name.to_owned()) {
                pending.push(document["components"]["schemas"][name].clone());
            }
        });
    }
    let Some(schemas) = document["components"]["schemas"].as_object_mut() else {
        return;
    };
    for name in &closed_names {
        if let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut)
            && schema.contains_key("properties")
            && !schema.contains_key("additionalProperties")
        {
            schema.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
    }
}

/// Calls `found` with the name of every `#/components/schemas/…` reference inside `schema`.
fn collect_refs(schema: &Value, found: &mut impl FnMut(&str)) {
    match schema {
        Value::Object(fields) => {
            if let Some(name) = fields
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|reference| reference.strip_prefix("#/components/schemas/"))
            {
                found(name);
            }
            fields.values().for_each(|child| collect_refs(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| collect_refs(child, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Object)]
    #[oai(deny_unknown_fields)]
    struct Inner {
        #[oai(validator(maximum(value = "10")))]
        count: u32,
    }

    #[derive(Debug, Object)]
    #[oai(deny_unknown_fields)]
    struct Outer {
        #[oai(validator(max_items = 2, max_length = 3, pattern = r"\S"))]
        texts: Vec<String>,
        label: Option<String>,
        inner: Option<Inner>,
        any: Option<Value>,
        #[oai(nullable)]
        note: Option<String>,
    }

    /// Proves values of the documented types pass, and that numbers, booleans and `null`
    /// where a string is documented are refused with the field named.
    #[test]
    fn coercions_are_refused_with_the_field_named() {
        assert_eq!(check_body::<Outer>(&json!({"texts": ["a"]})), Ok(()));
        assert_eq!(
            check_body::<Outer>(&json!({"texts": ["a"], "label": "x", "inner": {"count": 3},
                "any": [1, null], "note": null})),
            Ok(())
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": ["a", 42]})).unwrap_err(),
            "texts[1]: expected string, found a number"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [true]})).unwrap_err(),
            "texts[0]: expected string, found a boolean"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [], "label": null})).unwrap_err(),
            "label: expected string, found null"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [], "inner": {"count": "3"}})).unwrap_err(),
            "inner.count: expected integer, found a string"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [], "inner": {"count": 3.0}})).unwrap_err(),
            "inner.count: expected integer, found a number"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": "a"})).unwrap_err(),
            "texts: expected array, found a string"
        );
    }

    /// Proves required and unknown fields, bounds and integer formats are checked.
    #[test]
    fn shape_and_bounds_are_checked() {
        assert_eq!(
            check_body::<Outer>(&json!({})).unwrap_err(),
            "texts: is required"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [], "extra": 1})).unwrap_err(),
            "extra: unknown field"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": ["a", "b", "c"]})).unwrap_err(),
            "texts: 3 items, at most 2 allowed"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": ["abcd"]})).unwrap_err(),
            "texts[0]: 4 characters, at most 3 allowed"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": ["a", " "]})).unwrap_err(),
            r"texts[1]: does not match the pattern `\S` (blank)"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [], "inner": {"count": 11}})).unwrap_err(),
            "inner.count: must be at most 10, got 11"
        );
        assert_eq!(
            check_body::<Outer>(&json!({"texts": [], "inner": {"count": -1}})).unwrap_err(),
            "inner.count: -1 is out of range for uint32"
        );
        assert_eq!(
            check_body::<Outer>(&json!([])).unwrap_err(),
            "body: expected object, found an array"
        );
    }

    /// Proves the document closes the objects request bodies reach, and only those.
    #[test]
    fn request_objects_are_closed_in_the_document() {
        let mut document = json!({
            "paths": {"/a": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Outer"}}}},
                "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/View"}}}}}
            }}},
            "components": {"schemas": {
                "Outer": {"type": "object", "properties": {"inner": {"allOf": [{"$ref": "#/components/schemas/Inner"}]}}},
                "Inner": {"type": "object", "properties": {"count": {"type": "integer"}}},
                "View": {"type": "object", "properties": {"id": {"type": "string"}}}
            }}
        });
        close_request_objects(&mut document);
        let schemas = &document["components"]["schemas"];
        assert_eq!(schemas["Outer"]["additionalProperties"], false);
        assert_eq!(schemas["Inner"]["additionalProperties"], false);
        assert!(schemas["View"].get("additionalProperties").is_none());
    }
}
