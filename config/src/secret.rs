use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
