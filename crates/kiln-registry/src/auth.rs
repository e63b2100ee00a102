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

/// The registry domain a `config.json` key (or an Engine API auth
/// config's `serveraddress`) names: [`config_key`] read back, so
/// `https://index.docker.io/v1/` is `docker.io` and `http://HOST:PORT/v2/`
/// is `HOST:PORT`.
pub fn domain_of_config_key(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        _ => host,
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

/// Docker's config directory: `$DOCKER_CONFIG`, else `~/.docker`.
fn config_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(dir.into()),
        None => std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".docker")),
    }
}

/// Where a login for `domain` is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    /// In `config.json` itself (`auths`).
    ConfigFile(std::path::PathBuf),
    /// By a credential helper (`credsStore` or `credHelpers`).
    Helper(String),
}

/// Stores a login as `docker login` does: through the credential helper
/// the config names for `domain`, else as `auths.KEY.auth` in
/// `config.json` (other settings kept; the file readable by its owner only).
pub fn store_credential(domain: &str, user: &str, password: &str) -> Result<Kept, String> {
    let (path, mut config) = read_config()?;
    let key = config_key(domain);
    if let Some(helper) = helper_for(&config, &key) {
        let request = serde_json::json!({"ServerURL": key, "Username": user, "Secret": password});
        run_helper(&helper, "store", &request.to_string())?;
        return Ok(Kept::Helper(helper));
    }
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    config["auths"][&key] = serde_json::json!({ "auth": auth });
    write_config(&path, &config)?;
    Ok(Kept::ConfigFile(path))
}

/// Forgets the login for `domain`; `false` if there was none.
pub fn erase_credential(domain: &str) -> Result<bool, String> {
    let (path, mut config) = read_config()?;
    let key = config_key(domain);
    if let Some(helper) = helper_for(&config, &key) {
        run_helper(&helper, "erase", &key)?;
        return Ok(true);
    }
    let removed = config["auths"]
        .as_object_mut()
        .is_some_and(|auths| auths.remove(&key).is_some());
    if removed {
        write_config(&path, &config)?;
    }
    Ok(removed)
}

fn read_config() -> Result<(std::path::PathBuf, serde_json::Value), String> {
    let dir = config_dir().ok_or("neither DOCKER_CONFIG nor HOME is set")?;
    let path = dir.join("config.json");
    let config = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a Docker config: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !config.is_object() {
        return Err(format!(
            "{}: not a Docker config (not an object)",
            path.display()
        ));
    }
    Ok((path, config))
}

fn write_config(path: &std::path::Path, config: &serde_json::Value) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut bytes = serde_json::to_vec_pretty(config).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(fail)?;
    // Passwords inside: the owner's only, before a byte is written.
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    file.commit().map_err(fail)
}

/// The helper `credHelpers` names for `key`, else `credsStore`.
fn helper_for(config: &serde_json::Value, key: &str) -> Option<String> {
    config["credHelpers"][key]
        .as_str()
        .or_else(|| config["credsStore"].as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// `docker-credential-HELPER ACTION` with `input` on its stdin: the
/// helper protocol is a program to run, by design.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout);
        return Err(format!("{program} {action} failed: {}", said.trim()));
    }
    Ok(())
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
    fn config_keys_read_back_as_domains() {
        for domain in ["docker.io", "127.0.0.1:5000", "registry.example"] {
            assert_eq!(domain_of_config_key(&config_key(domain)), domain);
        }
        assert_eq!(
            domain_of_config_key("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(domain_of_config_key("registry-1.docker.io"), "docker.io");
        assert_eq!(domain_of_config_key("Quay.IO"), "quay.io");
    }

    #[test]
    fn docker_hub_credentials_are_filed_under_its_old_url() {
        assert_eq!(config_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
