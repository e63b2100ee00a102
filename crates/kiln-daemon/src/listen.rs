//! Where the daemon listens: a unix socket made with no window in which
//! anyone but root (and group `kiln`) could connect, never replacing
//! what is not a stale socket, removed when the daemon stops; or a TCP
//! address, served only with TLS and client certificates (`tls.rs`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::tls::TlsFiles;
use crate::DaemonError;

/// Docker's port for the Engine API over TLS, when `tcp://HOST` has none.
const TLS_PORT: u16 = 2376;

/// `--host`: `unix:///PATH`, or `tcp://HOST[:PORT]` with TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    Tcp { address: SocketAddr, tls: TlsFiles },
}

impl Host {
    /// `tls` is Docker's `--tlsverify` with its files: required for TCP,
    /// of no use on a unix socket (whose mode says who may connect).
    pub fn parse(text: &str, tls: Option<TlsFiles>) -> Result<Host, DaemonError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Host::Unix(PathBuf::from(path)));
            }
        }
        if let Some(address) = text.strip_prefix("tcp://") {
            let Some(tls) = tls else {
                return Err(DaemonError::TcpWithoutTls(text.to_owned()));
            };
            let address = address.trim_end_matches('/');
            let with_port = if address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok()
            }) {
                address.to_owned()
            } else {
                format!("{address}:{TLS_PORT}")
            };
            let address = with_port
                .to_socket_addrs()
                .ok()
                .and_then(|mut all| all.next())
                .ok_or_else(|| DaemonError::BadHost(text.to_owned()))?;
            return Ok(Host::Tcp { address, tls });
        }
        Err(DaemonError::BadHost(text.to_owned()))
    }
}

/// Where the daemon listens, bound.
pub(crate) enum Listening {
    Unix(Bound),
    Tcp {
        listener: std::net::TcpListener,
        tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    },
}

/// Binds `host`: the TLS files read and checked before any client can
/// connect.
pub(crate) fn listen(host: &Host) -> Result<Listening, DaemonError> {
    match host {
        Host::Unix(path) => Ok(Listening::Unix(bind(path)?)),
        Host::Tcp { address, tls } => {
            let tls = tls.server_config()?;
            let listener = std::net::TcpListener::bind(address)
                .and_then(|listener| {
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .map_err(|e| DaemonError::Io {
                    what: format!("listen on tcp://{address}"),
                    source: e,
                })?;
            Ok(Listening::Tcp { listener, tls })
        }
    }
}

/// A bound socket, removed when dropped.
pub(crate) struct Bound {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Bound {
    pub(crate) fn tokio_listener(&self) -> Result<tokio::net::UnixListener, DaemonError> {
        let io = |e| DaemonError::Io {
            what: format!("listen on {}", self.path.display()),
            source: e,
        };
        let listener = self
            .listener
            .as_ref()
            .ok_or_else(|| io(std::io::Error::other("already taken")))?
            .try_clone()
            .map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        tokio::net::UnixListener::from_std(listener).map_err(io)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.listener.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the unix socket `path` (see the module's notes).
fn bind(path: &Path) -> Result<Bound, DaemonError> {
    let io = |what: &str, e| DaemonError::Io {
        what: format!("{what} {}", path.display()),
        source: e,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(DaemonError::InUse(path.to_owned()));
            }
            // A daemon that died left it.
            std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
        }
        Ok(_) => return Err(DaemonError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("stat", e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create the directory of", e))?;
    }
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let sys = |what: &str, e: nix::errno::Errno| io(what, e.into());
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| sys("make a socket for", e))?;
    let address = UnixAddr::new(path).map_err(|e| sys("address", e))?;
    // Made 0600 (the umask of this still single-threaded process), then
    // given to group kiln and opened to it, and only then listening: no
    // client connects before the socket has its mode, and none but root
    // and group kiln ever can.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound_now = socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address);
    nix::sys::stat::umask(old);
    bound_now.map_err(|e| sys("bind", e))?;
    let mut bound = Bound {
        path: path.to_owned(),
        listener: None,
    };
    if let Ok(Some(group)) = nix::unistd::Group::from_name("kiln") {
        nix::unistd::chown(path, None, Some(group.gid)).map_err(|e| sys("give group kiln", e))?;
    }
    set_mode(path, 0o660).map_err(|e| io("chmod", e))?;
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| sys("listen on", e))?;
    bound.listener = Some(UnixListener::from(fd));
    Ok(bound)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
