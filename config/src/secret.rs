use std::collections::HashMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Suffix of the variable that names a file holding a secret: `DATABASE_URL_FILE` for
/// `DATABASE_URL`, as Docker and Kubernetes secrets mount them.
pub const FILE_VARIABLE_SUFFIX: &str = "_FILE";

/// Where a secret lives: `{ env = "OPENAI_API_KEY" }` or `{ file = "/run/secrets/openai" }`.
/// An `env` reference also reads the file named by `<VAR>_FILE` when `<VAR>` is unset.
/// Only the reference is in the configuration (and in `config check`); the value is read at
/// start-up and never printed. An inline key is refused without being echoed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl SecretRef {
    /// Reads the secret from `env` (the process environment, passed in), from the file its
    /// `<VAR>_FILE` names, or from its `file`.
    pub fn resolve(&self, env: &HashMap<String, String>) -> Result<String, String> {
        match (&self.env, &self.file) {
            (Some(variable), None) => env_or_file(env, variable)?.ok_or_else(|| {
                format!(
                    "environment variable {variable} (or {variable}{FILE_VARIABLE_SUFFIX}) is not set"
                )
            }),
            (None, Some(path)) => read_secret_file(path),
            _ => Err("set exactly one of `env` or `file`".to_owned()),
        }
    }

    /// Like [`SecretRef::resolve`], for optional secrets: an `env` reference whose variable
    /// and `<VAR>_FILE` are both unset or empty is `None`; a file that cannot be read is still
    /// an error.
    pub fn resolve_if_set(&self, env: &HashMap<String, String>) -> Result<Option<String>, String> {
        match (&self.env, &self.file) {
            (Some(variable), None) => env_or_file(env, variable),
            _ => self.resolve(env).map(Some),
        }
    }
}

/// Returns the value of `variable`, or the content of the file `<variable>_FILE` names, or
/// `None` when neither is set (empty counts as unset). Both set is an error: which one was
/// meant cannot be told.
pub fn env_or_file(
    env: &HashMap<String, String>,
    variable: &str,
) -> Result<Option<String>, String> {
    let file_variable = format!("{variable}{FILE_VARIABLE_SUFFIX}");
    let value_opt = env.get(variable).filter(|value| !value.is_empty());
    let path_opt = env.get(&file_variable).filter(|path| !path.is_empty());
    match (value_opt, path_opt) {
        (Some(_), Some(_)) => Err(format!(
            "both {variable} and {file_variable} are set; keep one"
        )),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(path)) => read_secret_file(path)
            .map(Some)
            .map_err(|error| format!("{file_variable}: {error}")),
        (None, None) => Ok(None),
    }
}

/// Reads a secret file, without the surrounding whitespace (the trailing newline editors and
/// `echo` add). An empty file is an error: a secret mounted before it was written.
fn read_secret_file(path: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("failed to read {path}: {error}"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(secret.to_owned())
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;

        impl<'de> Visitor<'de> for RefVisitor {
            type Value = SecretRef;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a reference such as { env = \"OPENAI_API_KEY\" }")
            }

            // Deliberately does not echo the value: it is probably a key.
            fn visit_str<E: de::Error>(self, _value: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "inline secrets are not accepted, use { env = \"VAR\" } or { file = \"PATH\" }",
                ))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut secret_ref = SecretRef::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "env" => secret_ref.env = Some(map.next_value()?),
                        "file" => secret_ref.file = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["env", "file"]));
                        }
                    }
                }
                Ok(secret_ref)
            }
        }

        deserializer.deserialize_any(RefVisitor)
    }
}

/// A connection URL that may carry a password. `Debug`, `Display` and `Serialize` show it with
/// the password replaced by `***`; only [`SecretUrl::expose`] returns the real value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// Returns the URL with its password, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns the scheme (`postgres`, `sqlite`, `amqp`...), or an empty string if none.
    pub fn scheme(&self) -> &str {
        self.0
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .unwrap_or("")
    }

    /// Returns the URL with any password replaced by `***`: the one in the user info
    /// (`user:password@`) and the value of every query parameter that names a secret
    /// (`?password=`, `&sslpassword=`, `?token=`..., see [`is_secret_parameter`]).
    pub fn redacted(&self) -> String {
        let (before_fragment, fragment_opt) = match self.0.split_once('#') {
            Some((before, fragment)) => (before, Some(fragment)),
            None => (self.0.as_str(), None),
        };
        let (base, query_opt) = match before_fragment.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (before_fragment, None),
        };
        let mut shown = redact_user_info(base);
        if let Some(query) = query_opt {
            shown.push('?');
            shown.push_str(&redact_query(query));
        }
        if let Some(fragment) = fragment_opt {
            shown.push('#');
            shown.push_str(fragment);
        }
        shown
    }
}

/// Returns `scheme://user:***@host/path` for `scheme://user:password@host/path`, else `base`.
fn redact_user_info(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return base.to_owned();
    };
    let Some((user, _password)) = user_info.split_once(':') else {
        return base.to_owned();
    };
    format!("{scheme}://{user}:***@{host}{path}")
}

/// Returns the query with the value of every secret parameter replaced by `***`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _value)) if is_secret_parameter(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns true for a query parameter whose value is a credential: `password`, `pass`,
/// `passwd`, `pwd`, `sslpassword`, `secret`, `token`, `access_token`, `api_key`, `apikey`,
/// `key`, `auth`, `authorization`, `credentials`... Matching is by substring and ignores case
/// and `-`/`_`, so a parameter that only looks like one is hidden too: hiding too much costs
/// a log reader a detail, showing too little leaks a password.
fn is_secret_parameter(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    const SECRET_PARTS: [&str; 8] = [
        "pass",
        "pwd",
        "secret",
        "token",
        "apikey",
        "credential",
        "authorization",
        "signature",
    ];
    normalized == "key"
        || normalized == "auth"
        || SECRET_PARTS.iter().any(|part| normalized.contains(part))
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the password never shows in Debug, Display or serialized output.
    #[test]
    fn password_is_redacted_everywhere() {
        let url = SecretUrl::new("postgres://app:hunter2@db.internal:5432/jobs?sslmode=require");
        let expected = "postgres://app:***@db.internal:5432/jobs?sslmode=require";
        assert_eq!(url.to_string(), expected);
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(
            !toml::to_string(
                &[("url", &url)]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
            )
            .unwrap()
            .contains("hunter2")
        );
        assert_eq!(
            url.expose(),
            "postgres://app:hunter2@db.internal:5432/jobs?sslmode=require"
        );
        assert_eq!(url.scheme(), "postgres");
    }

    /// Proves passwords and tokens in the query string are hidden wherever the URL is shown,
    /// whatever their case or position, while other parameters, the path and the fragment
    /// stay readable.
    #[test]
    fn query_secrets_are_redacted() {
        let cases = [
            (
                "postgres://db.internal/jobs?user=app&password=hunter2&sslmode=require",
                "postgres://db.internal/jobs?user=app&password=***&sslmode=require",
            ),
            (
                "postgres://app@db/jobs?sslmode=verify-full&sslpassword=hunter2",
                "postgres://app@db/jobs?sslmode=verify-full&sslpassword=***",
            ),
            (
                "postgres://app:hunter2@db/jobs?PASS=hunter2#frag",
                "postgres://app:***@db/jobs?PASS=***#frag",
            ),
            (
                "amqp://broker/%2f?auth_token=hunter2&heartbeat=10",
                "amqp://broker/%2f?auth_token=***&heartbeat=10",
            ),
            (
                "sqlite://data/bulwark.db?key=hunter2&mode=rwc",
                "sqlite://data/bulwark.db?key=***&mode=rwc",
            ),
            (
                "postgres://db?api-key=hunter2&Access_Token=hunter2&pwd=hunter2",
                "postgres://db?api-key=***&Access_Token=***&pwd=***",
            ),
        ];
        for (raw, expected) in cases {
            let url = SecretUrl::new(raw);
            assert_eq!(url.redacted(), expected);
            assert!(!url.to_string().contains("hunter2"), "{url}");
            assert!(!format!("{url:?}").contains("hunter2"), "{url:?}");
            let serialized = toml::to_string(
                &[("url", &url)]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
            .unwrap();
            assert!(!serialized.contains("hunter2"), "{serialized}");
            assert_eq!(url.expose(), raw, "the real URL is kept for connecting");
        }
        for shown in [
            "sslmode",
            "application_name",
            "heartbeat",
            "keepalives",
            "mode",
        ] {
            assert!(!is_secret_parameter(shown), "{shown}");
        }
    }

    /// Proves an `env` reference falls back to the file `<VAR>_FILE` names, as Docker and
    /// Kubernetes secrets are mounted; that both set is refused; and that an unset pair is
    /// `None` for an optional secret.
    #[test]
    fn env_references_read_the_file_variable() {
        let path = std::env::temp_dir().join(format!("bulwark-secret-{}", std::process::id()));
        std::fs::write(&path, "bwk_from_a_file\n").unwrap();
        let secret_ref = SecretRef {
            env: Some("BULWARK_BOOTSTRAP_ADMIN_KEY".to_owned()),
            file: None,
        };
        let from_file = HashMap::from([(
            "BULWARK_BOOTSTRAP_ADMIN_KEY_FILE".to_owned(),
            path.display().to_string(),
        )]);
        assert_eq!(secret_ref.resolve(&from_file).unwrap(), "bwk_from_a_file");
        let mut both = from_file.clone();
        both.insert(
            "BULWARK_BOOTSTRAP_ADMIN_KEY".to_owned(),
            "bwk_inline".to_owned(),
        );
        let error = secret_ref.resolve(&both).unwrap_err();
        assert!(
            error.contains("both BULWARK_BOOTSTRAP_ADMIN_KEY and"),
            "{error}"
        );
        assert!(!error.contains("bwk_"), "{error}");
        assert_eq!(secret_ref.resolve_if_set(&HashMap::new()).unwrap(), None);
        std::fs::remove_file(&path).unwrap();
    }

    /// Proves URLs without a password are shown unchanged.
    #[test]
    fn urls_without_password_are_unchanged() {
        for plain in [
            "sqlite://data/bulwark.db",
            "postgres://localhost/test",
            "amqp://guest@h/%2f",
            "postgres://db/jobs?sslmode=require&application_name=bulwark",
            "postgres://db/jobs?",
        ] {
            assert_eq!(SecretUrl::new(plain).redacted(), plain);
        }
    }
}
