//! The caller's own terminal, for attaching to a container's tty: its
//! window size, and raw mode while attached (restored when the guard is
//! dropped, so on every return and unwinding path).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::isatty;

use crate::error::RuntimeError;
use crate::spec::WindowSize;

nix::ioctl_read_bad!(get_window_size, libc::TIOCGWINSZ, libc::winsize);

/// True when `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    isatty(fd).unwrap_or(false)
}

/// The size of the terminal on `fd`; `None` if it is not one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given.
    unsafe { get_window_size(fd.as_raw_fd(), &mut size) }.ok()?;
    Some(WindowSize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// A terminal in raw mode (`cfmakeraw`: no echo, no line editing, no
/// signals from Ctrl-C, no output processing); its previous settings come
/// back when this is dropped.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode; `Ok(None)` if `fd` is not a
    /// terminal.
    pub fn enable(fd: BorrowedFd<'_>) -> Result<Option<RawMode>, RuntimeError> {
        if !is_terminal(fd) {
            return Ok(None);
        }
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| RuntimeError::io("dup", "the terminal", e))?;
        let saved = tcgetattr(&fd).map_err(|e| RuntimeError::sys("tcgetattr", e))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&fd, SetArg::TCSANOW, &raw).map_err(|e| RuntimeError::sys("tcsetattr", e))?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}
