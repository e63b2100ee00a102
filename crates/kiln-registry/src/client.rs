//! One registry as kiln talks to it: the scheme it is reached by, who kiln
//! is to it (anonymous, Basic, or Bearer tokens per scope, reused until
//! they expire), and every request sent through one path that answers
//! challenges and retries what is worth retrying (408, 429 with
//! `Retry-After`, 5xx, dropped connections) with backoff.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::blocking::{Body, Response};
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use crate::auth::{stored_credential, Challenge, Credential};
use crate::error::RegistryError;

/// How many times a request is sent before its error is final.
const ATTEMPTS: u32 = 4;
/// The first backoff; it doubles on each retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` honoured (a registry asking for more is
/// answered with its error).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long a response (or each read of its body) may keep kiln waiting.
const STALLED: Duration = Duration::from_secs(60);
/// How long the first contact may take, per scheme tried.
const PING: Duration = Duration::from_secs(10);

/// The largest error body read, for its code and message.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Settings shared by every registry a client talks to.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) that may be reached over plain HTTP (as
    /// Docker's `insecure-registries`); loopback addresses and `localhost`
    /// always may.
    pub insecure: Vec<String>,
    /// Credentials to use instead of the Docker config's (`kiln login`
    /// checks the ones it is given before it stores them).
    pub credential: Option<Credential>,
    /// When set, the only credentials there are, by registry domain
    /// (`docker.io`, `127.0.0.1:5000`): the Docker config and its helpers
    /// are not read. A daemon sets it to what its client sent, so one
    /// user's stored credentials are never lent to another's request.
    pub credentials_by_registry: Option<std::collections::BTreeMap<String, Credential>>,
    /// Docker's per-registry TLS directory (default `/etc/docker/certs.d`):
    /// `HOST[:PORT]/*.crt` are CAs trusted beside the system's, and a
    /// `NAME.cert` with its `NAME.key` is the client certificate.
    pub certs_dir: Option<PathBuf>,
    /// When set, the only registries (hosts, with or without port) kiln
    /// may contact: any other is refused before a name is even looked up
    /// (for machines and test runs that must reach nothing else).
    pub allowed: Option<Vec<String>>,
}

/// Where Docker keeps registries' certificates.
pub const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

/// A registry, reached and authenticated.
pub struct Registry {
    /// The host as references name it (`docker.io`, `127.0.0.1:5000`).
    domain: String,
    base: Url,
    http: reqwest::blocking::Client,
    credential: Option<Credential>,
    auth: Mutex<AuthState>,
    /// Hosts that may be spoken to over plain HTTP besides loopback.
    insecure: Vec<String>,
}

#[derive(Default)]
struct AuthState {
    /// The registry asked for Basic: every request carries the credential.
    basic: bool,
    /// Bearer tokens by scope.
    tokens: HashMap<String, Token>,
}

struct Token {
    value: String,
    until: Instant,
}

enum Authorization {
    Bearer(String),
    Basic(String, String),
}

/// A request to send, again if it must be: its body is made anew for
/// every attempt.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: Url,
    /// `repository:NAME:pull` or `...:pull,push`, several separated by
    /// spaces: what a token must allow.
    pub scope: String,
    pub headers: HeaderMap,
    pub body: Option<&'a dyn Fn() -> Result<Body, RegistryError>>,
    /// For a request whose body is large: how long it may take in all.
    pub timeout: Option<Duration>,
    /// What the request is about, for errors (`manifest alpine:3.19`).
    pub what: String,
}

impl Registry {
    /// Connects to the registry `domain` names (`docker.io` is served by
    /// `registry-1.docker.io`): HTTPS, or plain HTTP where that is allowed
    /// and HTTPS is not spoken there.
    pub fn connect(domain: &str, options: &ClientOptions) -> Result<Registry, RegistryError> {
        let host = if domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            domain
        };
        let connection = |message: String| RegistryError::Connection {
            registry: domain.to_owned(),
            message,
        };
        if let Some(allowed) = &options.allowed {
            if !allowed
                .iter()
                .any(|a| a == host || a == domain || a == host_name(host))
            {
                return Err(RegistryError::NotAllowed {
                    registry: domain.to_owned(),
                    allowed: allowed.join(","),
                });
            }
        }
        let certs_dir = options
            .certs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DOCKER_CERTS_DIR));
        let tls = tls_files(&certs_dir.join(host)).map_err(connection)?;
        let mut builder = reqwest::blocking::Client::builder().tls_certs_merge(tls.roots);
        if let Some(identity) = tls.identity {
            builder = builder.identity(identity);
        }
        let http = builder
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // For a body, each read: a stalled download fails (and is
            // retried); a long one is not cut. Uploads set their own.
            .timeout(STALLED)
            .build()
            .map_err(|e| connection(format!("cannot make an HTTP client: {e}")))?;
        let credential = match (&options.credential, &options.credentials_by_registry) {
            (Some(credential), _) => Some(credential.clone()),
            (None, Some(given)) => given.get(domain).cloned(),
            (None, None) => stored_credential(domain).map_err(|message| RegistryError::Auth {
                registry: domain.to_owned(),
                what: "credentials".into(),
                message,
            })?,
        };
        let url = |scheme: &str| {
            Url::parse(&format!("{scheme}://{host}/"))
                .map_err(|e| connection(format!("not a registry address: {e}")))
        };
        let mut registry = Registry {
            domain: domain.to_owned(),
            base: url("https")?,
            http,
            credential,
            auth: Mutex::new(AuthState::default()),
            insecure: options.insecure.clone(),
        };
        // The ping says whether HTTPS is spoken (whether it lets kiln in,
        // 200 or 401, does not matter yet).
        if let Err(https_error) = registry.ping()? {
            if !may_use_http(host, &options.insecure) {
                return Err(connection(format!(
                    "cannot reach {host} over HTTPS: {https_error}"
                )));
            }
            registry.base = url("http")?;
            registry.ping()?.map_err(|e| {
                connection(format!(
                    "cannot reach {host} over HTTPS ({https_error}) nor HTTP ({e})"
                ))
            })?;
        }
        Ok(registry)
    }

    /// Whether the registry takes the credentials kiln has (or, with none,
    /// lets anyone in): `GET /v2/`, authenticated as any request is.
    pub fn check_login(&self) -> Result<(), RegistryError> {
        let what = "login";
        let response = self.send(&Request {
            method: Method::GET,
            url: self.url("v2/")?,
            scope: String::new(),
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
            what: what.to_owned(),
        })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(what, response))
        }
    }

    /// `GET /v2/`, the API's version check, answered by every registry.
    /// `Err` with why when what answers is no registry (an HTTPS server
    /// answers plain HTTP with a 400, for one).
    fn ping(&self) -> Result<Result<(), String>, RegistryError> {
        let answer = self.http.get(self.url("v2/")?).timeout(PING).send();
        Ok(match answer {
            Ok(response)
                if response.status().is_success()
                    || response.status() == StatusCode::UNAUTHORIZED =>
            {
                Ok(())
            }
            Ok(response) => Err(format!(
                "GET /v2/ answered {}, not as a registry does",
                response.status().as_u16()
            )),
            Err(e) => Err(chain(&e)),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `path` (like `v2/app/manifests/1.0`) on this registry.
    pub(crate) fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.base.join(path).map_err(|e| RegistryError::Connection {
            registry: self.domain.clone(),
            message: format!("bad path {path:?}: {e}"),
        })
    }

    /// A location the registry answered with (absolute or relative to it).
    pub(crate) fn location(&self, response: &Response, what: &str) -> Result<Url, RegistryError> {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Lied {
                registry: self.domain.clone(),
                what: what.to_owned(),
                message: "the registry gave no Location for the upload".into(),
            })?;
        self.base.join(location).map_err(|e| RegistryError::Lied {
            registry: self.domain.clone(),
            what: what.to_owned(),
            message: format!("bad Location {location:?}: {e}"),
        })
    }

    /// Sends `request`, answering one round of challenges and retrying
    /// what is worth retrying; a response of any final status is returned
    /// (the caller decides which it expects), but a 401 that survives
    /// authentication is an error.
    pub(crate) fn send(&self, request: &Request<'_>) -> Result<Response, RegistryError> {
        let mut backoff = FIRST_BACKOFF;
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = self
                .http
                .request(request.method.clone(), request.url.clone())
                .headers(request.headers.clone());
            builder = match self.authorization(&request.scope) {
                Some(Authorization::Bearer(token)) => builder.bearer_auth(token),
                Some(Authorization::Basic(user, password)) => {
                    builder.basic_auth(user, Some(password))
                }
                None => builder,
            };
            if let Some(body) = request.body {
                builder = builder.body(body()?);
            }
            if let Some(timeout) = request.timeout {
                builder = builder.timeout(timeout);
            }
            let response = match builder.send() {
                Ok(response) => response,
                Err(_) if attempt < ATTEMPTS => {
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    continue;
                }
                Err(e) => {
                    return Err(RegistryError::Connection {
                        registry: self.domain.clone(),
                        message: format!("{}: {}", request.what, chain(&e)),
                    })
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                let Some(challenge) = challenge.filter(|_| !authenticated) else {
                    return Err(self.unauthorized(request, response));
                };
                self.authenticate(&challenge, &request.scope, &request.what)?;
                authenticated = true;
                continue;
            }
            let retry = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            if retry && attempt < ATTEMPTS {
                let wait = retry_after(&response).unwrap_or(backoff);
                if wait <= MAX_RETRY_AFTER {
                    drop(response);
                    std::thread::sleep(wait);
                    backoff *= 2;
                    continue;
                }
            }
            return Ok(response);
        }
    }

    /// `response` as the error it is (its distribution error code and
    /// message when the body has them).
    pub(crate) fn status_error(&self, what: &str, response: Response) -> RegistryError {
        let status = response.status().as_u16();
        let (code, message) = error_body(response);
        if status == 403 {
            return RegistryError::Auth {
                registry: self.domain.clone(),
                what: what.to_owned(),
                message: format!(
                    "access denied{}",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            };
        }
        RegistryError::Status {
            registry: self.domain.clone(),
            what: what.to_owned(),
            status,
            code,
            message,
        }
    }

    fn unauthorized(&self, request: &Request<'_>, response: Response) -> RegistryError {
        let (_, message) = error_body(response);
        let message = match (&self.credential, message) {
            (None, _) => format!(
                "authentication required (no credentials for {}: kiln login {})",
                self.domain, self.domain
            ),
            (Some(_), Some(message)) => format!("the credentials were refused: {message}"),
            (Some(_), None) => "the credentials were refused".to_owned(),
        };
        RegistryError::Auth {
            registry: self.domain.clone(),
            what: request.what.clone(),
            message,
        }
    }

    /// What a request of `scope` is authorized with, if kiln has anything.
    fn authorization(&self, scope: &str) -> Option<Authorization> {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = auth.tokens.get(scope).filter(|t| t.until > Instant::now()) {
            return Some(Authorization::Bearer(token.value.clone()));
        }
        match &self.credential {
            Some(Credential::UsernamePassword(user, password)) if auth.basic => {
                Some(Authorization::Basic(user.clone(), password.clone()))
            }
            _ => None,
        }
    }

    /// Answers `challenge` for `scope`: Basic is remembered, a Bearer
    /// token is fetched from its realm and kept for the scope.
    fn authenticate(
        &self,
        challenge: &Challenge,
        scope: &str,
        what: &str,
    ) -> Result<(), RegistryError> {
        let auth_error = |message: String| RegistryError::Auth {
            registry: self.domain.clone(),
            what: what.to_owned(),
            message,
        };
        match challenge {
            Challenge::Basic => {
                if !matches!(self.credential, Some(Credential::UsernamePassword(..))) {
                    return Err(auth_error(format!(
                        "authentication required (no credentials for {}: kiln login {})",
                        self.domain, self.domain
                    )));
                }
                self.auth.lock().unwrap_or_else(|e| e.into_inner()).basic = true;
                Ok(())
            }
            Challenge::Bearer { realm, service, .. } => {
                let token = self.fetch_token(realm, service.as_deref(), scope, what)?;
                self.auth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .tokens
                    .insert(scope.to_owned(), token);
                Ok(())
            }
        }
    }

    /// A token from `realm` for `scope`: a GET with the user's Basic
    /// credentials (or none), or for an identity token the OAuth2
    /// refresh-token POST.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Result<Token, RegistryError> {
        let auth_error = |message: String| RegistryError::Auth {
            registry: self.domain.clone(),
            what: what.to_owned(),
            message,
        };
        let mut url = Url::parse(realm)
            .map_err(|e| auth_error(format!("the token realm {realm:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(auth_error(format!("the token realm {realm:?} is not HTTP")));
        }
        if !realm_allowed(&url, &self.insecure) {
            return Err(auth_error(format!(
                "the token realm {realm} is plain HTTP on a host that is neither loopback nor an insecure registry"
            )));
        }
        let mut form: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            form.push(("service", service));
        }
        // Several scopes (a mount reads another repository) are several
        // `scope` parameters.
        form.extend(
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(|s| ("scope", s)),
        );
        let request = match &self.credential {
            Some(Credential::IdentityToken(refresh)) => {
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "kiln"),
                ]);
                // Url's query serializer is the form encoding.
                let mut encoded = Url::parse("http://form/").expect("a constant URL");
                encoded.query_pairs_mut().extend_pairs(&form);
                let body = encoded.query().unwrap_or_default().to_owned();
                self.http
                    .post(url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
            }
            credential => {
                url.query_pairs_mut().extend_pairs(&form);
                let mut request = self.http.get(url);
                if let Some(Credential::UsernamePassword(user, password)) = credential {
                    request = request.basic_auth(user, Some(password));
                }
                request
            }
        };
        let response = request.send().map_err(|e| {
            auth_error(format!(
                "the token server {realm} cannot be reached: {}",
                chain(&e)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let (_, message) = error_body(response);
            return Err(auth_error(format!(
                "the token server refused ({}){}",
                status.as_u16(),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let mut bytes = Vec::new();
        response
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut bytes)
            .map_err(|e| auth_error(format!("the token server's answer was cut: {e}")))?;
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| auth_error(format!("the token server's answer is not JSON: {e}")))?;
        let value = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_error("the token server gave no token".into()))?;
        // The spec's default lifetime is 60 s; a little is kept back so a
        // token is not used as it expires.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(10) - 5);
        Ok(Token {
            value,
            until: Instant::now() + lifetime,
        })
    }
}

/// What `HOST[:PORT]`'s certs.d directory holds.
struct TlsFiles {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

/// Reads `dir` as Docker does: every `*.crt` is a CA, a `NAME.cert` and
/// `NAME.key` pair is the client's certificate; no directory, nothing.
fn tls_files(dir: &Path) -> Result<TlsFiles, String> {
    let mut files = TlsFiles {
        roots: Vec::new(),
        identity: None,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let certs = reqwest::Certificate::from_pem_bundle(&read(&path)?)
                    .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
                files.roots.extend(certs);
            }
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.exists() {
                    return Err(format!(
                        "{}: no {} beside it",
                        path.display(),
                        key.display()
                    ));
                }
                let mut pem = read(&path)?;
                pem.push(b'\n');
                pem.extend(read(&key)?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("{}: not a certificate and key: {e}", path.display()))?;
                files.identity = Some(identity);
            }
            _ => {}
        }
    }
    Ok(files)
}

/// Whether `host` may be spoken to over plain HTTP: loopback and
/// `localhost` (as Docker treats them), and registries named insecure.
fn may_use_http(host: &str, insecure: &[String]) -> bool {
    let name = host_name(host);
    name == "localhost"
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || insecure.iter().any(|i| i == host || i == name)
}

/// Whether a token realm may be asked: HTTPS, or plain HTTP where plain
/// HTTP is allowed at all (credentials cross the network in the clear).
fn realm_allowed(realm: &Url, insecure: &[String]) -> bool {
    let host = realm.host_str().unwrap_or_default();
    let host = match realm.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    realm.scheme() == "https" || realm.scheme() == "http" && may_use_http(&host, insecure)
}

/// `host[:port]` without its port (and an IPv6 address without brackets).
fn host_name(host: &str) -> &str {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}

/// `Retry-After` in seconds (the HTTP-date form is rare on registries).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    value
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// The first distribution error of a body (`{"errors":[{"code","message"}]}`).
fn error_body(response: Response) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let mut bytes = Vec::new();
    if response
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return (None, None);
    }
    match serde_json::from_slice::<Body>(&bytes) {
        Ok(body) => body.errors.into_iter().next().map_or((None, None), |e| {
            (e.code, e.message.filter(|m| !m.is_empty()))
        }),
        Err(_) => (None, None),
    }
}

/// An error with its causes, as one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_named_registries_may_use_http() {
        assert!(may_use_http("127.0.0.1:5000", &[]));
        assert!(may_use_http("127.8.9.1", &[]));
        assert!(may_use_http("localhost:5000", &[]));
        assert!(may_use_http("[::1]:5000", &[]));
        assert!(!may_use_http("registry.example:5000", &[]));
        assert!(!may_use_http("10.0.0.1:5000", &[]));
        assert!(may_use_http("reg.lan:5000", &["reg.lan:5000".into()]));
    }

    #[test]
    fn credentials_go_to_a_plain_http_realm_only_where_http_is_allowed() {
        let allowed = |url: &str| realm_allowed(&Url::parse(url).unwrap(), &["reg.lan".into()]);
        assert!(allowed("https://auth.example/token"));
        assert!(allowed("http://127.0.0.1:5001/token"));
        assert!(allowed("http://reg.lan/token"));
        assert!(!allowed("http://auth.example/token"));
        assert!(!allowed("http://auth.example:5000/token"));
        assert!(!allowed("ftp://auth.example/token"));
    }
}
