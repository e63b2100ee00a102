//! A real registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) started on a free 127.0.0.1 port with its own
//! config file and storage in a temporary directory (never the packaged
//! config, which listens on every interface), stopped when dropped. Its
//! access log is kept, so a test can count the requests a client made.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anyone may pull and push.
    Open,
    /// HTTP Basic against an htpasswd file holding one user.
    Basic { user: String, password: String },
}

pub struct LocalRegistry {
    /// `127.0.0.1:PORT`, as an image reference's domain.
    pub address: String,
    /// With TLS: the CA (PEM) that signed the registry's certificate.
    pub ca: Option<PathBuf>,
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
        let auth_section = match &auth {
            Auth::Open => String::new(),
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

/// A CA and, signed by it, a server certificate for 127.0.0.1 and a
/// client certificate, in `dir` (`ca.crt`, `server.crt`, `server.key`,
/// `client.cert`, `client.key`); returns the CA's path.
fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
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
    };
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

/// A port nothing listens on now (the registry takes it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
