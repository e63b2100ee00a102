//! A real registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) started on a free 127.0.0.1 port with its own
//! config file and storage in a temporary directory (never the packaged
//! config, which listens on every interface), stopped when dropped. Its
//! access log is kept, so a test can count the requests a client made.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the registry authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anyone may pull and push.
    Open,
    /// HTTP Basic against an htpasswd file holding one user.
    Basic { user: String, password: String },
    /// Bearer tokens (RS256 JWTs, the distribution token spec) from a
    /// token server the fixture runs, which grants what is asked to one
    /// user and nothing to anyone else.
    Token { user: String, password: String },
}

pub struct LocalRegistry {
    /// `127.0.0.1:PORT`, as an image reference's domain.
    pub address: String,
    /// With TLS: the CA (PEM) that signed the registry's certificate.
    pub ca: Option<PathBuf>,
    /// With token auth: how many tokens its token server has granted.
    granted: Option<Arc<AtomicUsize>>,
    dir: PathBuf,
    child: Child,
}

impl LocalRegistry {
    /// Starts a plain-HTTP registry under `dir` (which must exist); panics
    /// with the registry's log if it does not answer within 20 s.
    pub fn start(dir: &Path, auth: Auth) -> LocalRegistry {
        LocalRegistry::start_with(dir, auth, None)
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1
    /// signed by a CA made for it (openssl), at `self.ca`; with
    /// `client_certs`, it also wants a client certificate that CA signed
    /// (`client.cert` and `client.key` beside it).
    pub fn start_tls(dir: &Path, auth: Auth, client_certs: bool) -> LocalRegistry {
        LocalRegistry::start_with(dir, auth, Some(client_certs))
    }

    fn start_with(dir: &Path, auth: Auth, tls: Option<bool>) -> LocalRegistry {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut granted = None;
        let auth_section = match &auth {
            Auth::Open => String::new(),
            Auth::Token { user, password } => {
                let (realm, count) = start_token_server(dir, user, password);
                granted = Some(count);
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                     issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    dir.join("token.crt").display()
                )
            }
            Auth::Basic { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect(
                        "htpasswd (apache2-utils) is installed by scripts/install-test-deps.sh",
                    );
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.join("htpasswd");
                std::fs::write(&file, &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        let (tls_section, ca) = match tls {
            Some(client_certs) => {
                let ca = make_certificates(dir);
                let mut section = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    dir.join("server.crt").display(),
                    dir.join("server.key").display()
                );
                if client_certs {
                    section.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
                }
                (section, Some(ca))
            }
            None => (String::new(), None),
        };
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {address}\n{tls_section}{auth_section}",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed by scripts/install-test-deps.sh");
        let registry = LocalRegistry {
            address,
            ca,
            granted,
            dir: dir.to_owned(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.answers() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Whether `GET /v2/` gets an HTTP answer (200 or 401).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(&self.address) else {
            return false;
        };
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.address);
        let mut answer = String::new();
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.")
    }

    /// PUTs a manifest or index document as a client would (no auth),
    /// returning the status line.
    pub fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let head = format!(
            "PUT /v2/{repository}/manifests/{tag} HTTP/1.0\r\nHost: {}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    /// How many tokens the token server has granted (token auth only).
    pub fn tokens_granted(&self) -> usize {
        self.granted
            .as_ref()
            .map_or(0, |n| n.load(Ordering::SeqCst))
    }

    /// The registry's log so far (its access log among it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many requests of `method` whose path contains `part` the
    /// registry has answered.
    pub fn requests(&self, method: &str, part: &str) -> usize {
        let needle = format!("\"{method} ");
        self.log()
            .lines()
            .filter(|line| {
                line.find(&needle).is_some_and(|at| {
                    line[at + needle.len()..]
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .contains(part)
                })
            })
            .count()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl ARGS` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed by scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and, signed by it, a server certificate for 127.0.0.1 and a
/// client certificate, in `dir` (`ca.crt`, `server.crt`, `server.key`,
/// `client.cert`, `client.key`); returns the CA's path.
fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| openssl(dir, args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=kiln test client",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.cert",
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
    dir.join("ca.crt")
}

const TOKEN_SERVICE: &str = "kiln-test-registry";
const TOKEN_ISSUER: &str = "kiln-test-issuer";

/// A token server on a free port, signing with a key and certificate made
/// in `dir` (`token.key`, `token.crt`, which the registry trusts); returns
/// its realm URL and the count of tokens it grants.
fn start_token_server(dir: &Path, user: &str, password: &str) -> (String, Arc<AtomicUsize>) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test token signer",
        ],
    );
    let key_pem = std::fs::read(dir.join("token.key")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).unwrap();
    // x5c is the certificate's DER in standard base64: the PEM's body.
    let cert = std::fs::read_to_string(dir.join("token.crt")).unwrap();
    let der: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let granted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&granted);
    let expected = format!("{user}:{password}");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = answer_token_request(stream, &key, &der, &expected, &count);
        }
    });
    (realm, granted)
}

fn answer_token_request(
    mut stream: TcpStream,
    key: &jsonwebtoken::EncodingKey,
    der: &str,
    expected: &str,
    granted: &AtomicUsize,
) -> std::io::Result<()> {
    use base64::Engine as _;
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut credentials = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                let value = value.trim();
                credentials = value
                    .strip_prefix("Basic ")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
            }
        }
    }
    let target = first.split(' ').nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let reply = |status: &str, body: String| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if credentials.as_deref() != Some(expected) {
        return stream.write_all(
            reply(
                "401 Unauthorized",
                r#"{"details":"bad credentials"}"#.into(),
            )
            .as_bytes(),
        );
    }
    // repository:NAME:ACTIONS, NAME holding slashes (and maybe colons).
    let access: Vec<serde_json::Value> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let n = granted.fetch_add(1, Ordering::SeqCst) + 1;
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": expected.split(':').next(), "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("kiln-{n}"),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5c = Some(vec![der.to_owned()]);
    let token = jsonwebtoken::encode(&header, &claims, key).map_err(std::io::Error::other)?;
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    stream.write_all(reply("200 OK", body).as_bytes())
}

/// A port nothing listens on now (the registry takes it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
