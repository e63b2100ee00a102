//! The Engine API's registry credentials: `X-Registry-Config` (a build's,
//! every registry's auth config by server) and `X-Registry-Auth` (a pull's
//! or push's one), base64 JSON as the docker clients send them. They are
//! the only credentials a request's pulls and pushes use: the daemon never
//! lends what its own user has stored to a client.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine as _;
use kiln_registry::{domain_of_config_key, Credential};
use serde::Deserialize;

use crate::error::ApiError;

/// One auth config (docker's `registry.AuthConfig`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    /// `base64(username:password)`, as `config.json` keeps it.
    auth: String,
    serveraddress: String,
    identitytoken: String,
}

impl AuthConfig {
    fn credential(self, header: &str) -> Result<Option<Credential>, ApiError> {
        if !self.identitytoken.is_empty() {
            return Ok(Some(Credential::IdentityToken(self.identitytoken)));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Ok(Some(Credential::UsernamePassword(
                self.username,
                self.password,
            )));
        }
        if self.auth.is_empty() {
            return Ok(None);
        }
        let pair = decode(&self.auth)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!("{header}: an auth that is not base64"))
            })?;
        let (user, password) = pair.split_once(':').ok_or_else(|| {
            ApiError::bad_request(format!("{header}: an auth that is not user:password"))
        })?;
        Ok(Some(Credential::UsernamePassword(
            user.to_owned(),
            password.to_owned(),
        )))
    }
}

/// `X-Registry-Config`: credentials by registry domain (none sent: none).
pub(crate) fn registry_config(
    headers: &HeaderMap,
) -> Result<BTreeMap<String, Credential>, ApiError> {
    const HEADER: &str = "X-Registry-Config";
    let Some(configs) = header_json::<BTreeMap<String, AuthConfig>>(headers, HEADER)? else {
        return Ok(BTreeMap::new());
    };
    let mut credentials = BTreeMap::new();
    for (server, config) in configs {
        if let Some(credential) = config.credential(HEADER)? {
            credentials.insert(domain_of_config_key(&server), credential);
        }
    }
    Ok(credentials)
}

/// `X-Registry-Auth` for a pull or push of an image on `domain`: its
/// credential by that domain (none sent, or an empty one: anonymous).
pub(crate) fn registry_auth(
    headers: &HeaderMap,
    domain: &str,
) -> Result<BTreeMap<String, Credential>, ApiError> {
    const HEADER: &str = "X-Registry-Auth";
    let mut credentials = BTreeMap::new();
    if let Some(config) = header_json::<AuthConfig>(headers, HEADER)? {
        // The CLI names the server; an SDK may not: then it is the
        // image's registry the client meant.
        let server = if config.serveraddress.is_empty() {
            domain.to_owned()
        } else {
            domain_of_config_key(&config.serveraddress)
        };
        if let Some(credential) = config.credential(HEADER)? {
            credentials.insert(server, credential);
        }
    }
    Ok(credentials)
}

/// A header's base64 JSON, parsed; absent or empty: none.
fn header_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("{name}: not ASCII")))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bytes = decode(text).map_err(|_| ApiError::bad_request(format!("{name}: not base64")))?;
    // `{}` and `null` are what clients send for "no credentials".
    if bytes.iter().all(u8::is_ascii_whitespace) || bytes == b"null" {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("{name}: not an auth config: {e}")))
}

/// Base64 as clients write it: docker's URL-safe alphabet, or the
/// standard one (some SDKs), padded or not.
fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&URL_SAFE, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&STANDARD, config).decode(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, json: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(json);
        headers.insert(name, HeaderValue::from_str(&encoded).unwrap());
        headers
    }

    #[test]
    fn a_build_s_registry_config_is_read_by_domain() {
        let config = registry_config(&headers(
            "X-Registry-Config",
            r#"{"https://index.docker.io/v1/": {"username": "u", "password": "p"},
                "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"},
                "quay.io": {"identitytoken": "t"},
                "empty.example": {}}"#,
        ))
        .unwrap();
        assert_eq!(
            config.get("docker.io"),
            Some(&Credential::UsernamePassword("u".into(), "p".into()))
        );
        assert_eq!(
            config.get("127.0.0.1:5000"),
            Some(&Credential::UsernamePassword(
                "alice".into(),
                "s3cret".into()
            ))
        );
        assert_eq!(
            config.get("quay.io"),
            Some(&Credential::IdentityToken("t".into()))
        );
        assert!(!config.contains_key("empty.example"));
    }

    #[test]
    fn a_pull_s_auth_names_its_server_or_the_image_s() {
        let named = registry_auth(
            &headers(
                "X-Registry-Auth",
                r#"{"username": "u", "password": "p", "serveraddress": "http://127.0.0.1:5000/v2/"}"#,
            ),
            "other.example",
        )
        .unwrap();
        assert!(named.contains_key("127.0.0.1:5000"));
        let unnamed = registry_auth(
            &headers("X-Registry-Auth", r#"{"username": "u", "password": "p"}"#),
            "127.0.0.1:5000",
        )
        .unwrap();
        assert!(unnamed.contains_key("127.0.0.1:5000"));
        assert!(registry_auth(&headers("X-Registry-Auth", "{}"), "x")
            .unwrap()
            .is_empty());
        assert!(registry_auth(&HeaderMap::new(), "x").unwrap().is_empty());
    }

    #[test]
    fn bad_headers_are_bad_requests() {
        let mut garbage = HeaderMap::new();
        garbage.insert("X-Registry-Auth", HeaderValue::from_static("!!!"));
        let error = registry_auth(&garbage, "x").unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        let error = registry_config(&headers("X-Registry-Config", "[1]")).unwrap_err();
        assert!(
            error.message.contains("X-Registry-Config"),
            "{}",
            error.message
        );
    }
}
