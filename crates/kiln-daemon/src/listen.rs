//! Where the daemon listens: a unix socket made with no window in which
//! anyone but root (and group `kiln`) could connect, never replacing
//! what is not a stale socket, removed when the daemon stops.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::DaemonError;

/// `--host`: `unix:///PATH` (TCP comes with TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
}

impl Host {
    pub fn parse(text: &str) -> Result<Host, DaemonError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Host::Unix(PathBuf::from(path)));
            }
        }
        if text.starts_with("tcp://") {
            return Err(DaemonError::TcpWithoutTls(text.to_owned()));
        }
        Err(DaemonError::BadHost(text.to_owned()))
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

/// Binds `host` (see the module's notes).
pub(crate) fn bind(host: &Host) -> Result<Bound, DaemonError> {
    let Host::Unix(path) = host;
    let io = |what: &str, e| DaemonError::Io {
        what: format!("{what} {}", path.display()),
        source: e,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(DaemonError::InUse(path.clone()));
            }
            // A daemon that died left it.
            std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
        }
        Ok(_) => return Err(DaemonError::NotASocket(path.clone())),
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
    let address = UnixAddr::new(path.as_path()).map_err(|e| sys("address", e))?;
    // Made 0600 (the umask of this still single-threaded process), then
    // given to group kiln and opened to it, and only then listening: no
    // client connects before the socket has its mode, and none but root
    // and group kiln ever can.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound_now = socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address);
    nix::sys::stat::umask(old);
    bound_now.map_err(|e| sys("bind", e))?;
    let mut bound = Bound {
        path: path.clone(),
        listener: None,
    };
    if let Ok(Some(group)) = nix::unistd::Group::from_name("kiln") {
        nix::unistd::chown(path.as_path(), None, Some(group.gid))
            .map_err(|e| sys("give group kiln", e))?;
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
