//! Who kiln is to a registry: the credentials Docker's `config.json` holds
//! for it (read with `docker_credential`, so `credsStore`, `credHelpers`
//! and identity tokens work as they do for docker), and the challenges a
//! registry answers 401 with (`WWW-Authenticate: Basic ...` or `Bearer
//! realm=...,service=...,scope=...`).

use std::collections::BTreeMap;

/// What a user proved to a registry before (`kiln login`, `docker login`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    UsernamePassword(String, String),
    /// An OAuth refresh token, traded at the token realm.
    IdentityToken(String),
}

/// The key `config.json` files a registry's credentials under: Docker Hub's
/// historical URL, else the host (with port).
pub fn config_key(domain: &str) -> String {
    if domain == "docker.io" {
        "https://index.docker.io/v1/".to_owned()
    } else {
        domain.to_owned()
    }
}

/// The credential stored for `domain`, if any. A helper that fails says
/// why; a missing file or entry is no credential (anonymous).
pub fn stored_credential(domain: &str) -> Result<Option<Credential>, String> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    match docker_credential::get_credential(&config_key(domain)) {
        Ok(D::UsernamePassword(user, password)) => {
            Ok(Some(Credential::UsernamePassword(user, password)))
        }
        Ok(D::IdentityToken(token)) => Ok(Some(Credential::IdentityToken(token))),
        Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError) => Ok(None),
        Err(e) => Err(format!(
            "the credentials for {domain} in the Docker config cannot be read: {e}"
        )),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        /// `insufficient_scope` and the like: the token held is not enough.
        error: Option<String>,
    },
}

impl Challenge {
    /// `Basic realm="x"` or `Bearer realm="...",service="...",scope="..."`;
    /// `None` for a scheme kiln does not speak or a Bearer without realm.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parameters(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
                error: params.get("error").cloned(),
            }),
            _ => None,
        }
    }
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn parameters(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            return out;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="reg, one",scope="repository:a/b:pull,push",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg, one".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
        assert_eq!(
            Challenge::parse("Bearer realm=http://127.0.0.1:1/t, service=x"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("x".into()),
                scope: None,
                error: None,
            })
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn docker_hub_credentials_are_filed_under_its_old_url() {
        assert_eq!(config_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
