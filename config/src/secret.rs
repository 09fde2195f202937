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

    /// Returns the URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            return self.0.clone();
        };
        let Some((user, _password)) = userinfo.split_once(':') else {
            return self.0.clone();
        };
        format!("{scheme}://{user}:***@{host}{tail}")
    }
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

    /// Proves URLs without a password are shown unchanged.
    #[test]
    fn urls_without_password_are_unchanged() {
        for plain in [
            "sqlite://data/bulwark.db",
            "postgres://localhost/test",
            "amqp://guest@h/%2f",
        ] {
            assert_eq!(SecretUrl::new(plain).redacted(), plain);
        }
    }
}
