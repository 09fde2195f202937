//! The transport and browser keys of the `[http]` section: the CORS allow-list and the
//! optional TLS listener (`[http.tls]`), and their validation.

use serde::{Deserialize, Serialize};

/// Default of [`TlsConfig::hsts_max_age_secs`]: one year, what HSTS preload lists expect.
pub const DEFAULT_HSTS_MAX_AGE_SECS: u64 = 365 * 24 * 60 * 60;

/// `[http.tls]`: serve HTTPS with these PEM files instead of plain HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: String,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// `max-age` of the `Strict-Transport-Security` header sent on every response; 0 tells
    /// browsers to forget an earlier one.
    #[serde(default = "default_hsts_max_age_secs")]
    pub hsts_max_age_secs: u64,
}

fn default_hsts_max_age_secs() -> u64 {
    DEFAULT_HSTS_MAX_AGE_SECS
}

/// Checks the CORS origins and the TLS files' names; returns the offending key and why.
/// Pure: whether the files can be read is found out when the listener starts.
pub fn validate_http_transport(
    cors_allowed_origins: &[String],
    tls_opt: Option<&TlsConfig>,
) -> Result<(), (String, String)> {
    for origin in cors_allowed_origins {
        if let Err(reason) = check_origin(origin) {
            return Err((
                "http.cors_allowed_origins".to_owned(),
                format!("`{origin}` {reason}"),
            ));
        }
    }
    if let Some(tls) = tls_opt {
        for (key, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if path.trim().is_empty() {
                return Err((format!("http.tls.{key}"), "must name a PEM file".to_owned()));
            }
        }
    }
    Ok(())
}

/// Accepts an origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" || origin == "null" {
        return Err("is not allowed: list each origin that may call the API");
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err("is not an origin such as https://app.example.com");
    };
    if scheme != "https" && scheme != "http" {
        return Err("must start with https:// (or http:// for a local page)");
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be scheme://host[:port], with no path, query or trailing slash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves origins are accepted only in the form browsers send, and that the key at fault
    /// is named.
    #[test]
    fn cors_origins_must_be_exact_origins() {
        let valid = [
            "https://app.example.com".to_owned(),
            "http://localhost:3000".to_owned(),
        ];
        assert!(validate_http_transport(&valid, None).is_ok());
        for invalid in [
            "*",
            "null",
            "https://app.example.com/",
            "https://app.example.com/path",
            "app.example.com",
            "ftp://app.example.com",
            "https://",
        ] {
            let (key, message) = validate_http_transport(&[invalid.to_owned()], None).unwrap_err();
            assert_eq!(key, "http.cors_allowed_origins", "{invalid}");
            assert!(message.contains(invalid), "{message}");
        }
    }

    /// Proves an empty TLS file name is refused naming its key, and the HSTS age defaults to
    /// a year when the section leaves it out.
    #[test]
    fn tls_section_names_its_files() {
        let tls: TlsConfig =
            toml::from_str("cert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n").unwrap();
        assert_eq!(tls.hsts_max_age_secs, DEFAULT_HSTS_MAX_AGE_SECS);
        assert!(validate_http_transport(&[], Some(&tls)).is_ok());
        let no_key = TlsConfig {
            key_file: " ".to_owned(),
            ..tls
        };
        assert_eq!(
            validate_http_transport(&[], Some(&no_key)).unwrap_err().0,
            "http.tls.key_file"
        );
        let missing = toml::from_str::<TlsConfig>("cert_file = \"cert.pem\"\n").unwrap_err();
        assert!(missing.to_string().contains("key_file"), "{missing}");
    }
}
