//! Terminals: a pty made inside the container whose master goes to the caller over a unix
//! socket (runc's `--console-socket` protocol), the slave becoming the process's stdio.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use berth_core::Result;
use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::Mode;

use crate::rootfs::sys_err;

/// Opens a pty in the current mount namespace (the container's /dev/ptmx) and returns the master
/// and the slave.
pub fn open_pty() -> Result<(PtyMaster, OwnedFd, String)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| sys_err("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| sys_err("grantpt", e))?;
    unlockpt(&master).map_err(|e| sys_err("unlockpt", e))?;
    let name = ptsname_r(&master).map_err(|e| sys_err("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys_err(format!("open {name}"), e))?;
    Ok((master, slave, name))
}

/// Sends `fd` over the connected unix socket `socket`, with `name` as the message body.
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &str) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| sys_err("send the pty master over the console socket", e))?;
    Ok(())
}

/// Makes the pty slave the controlling terminal and stdio of a new session.
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().map_err(|e| sys_err("setsid", e))?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal) and the fd is a valid tty.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(rc).map_err(|e| sys_err("ioctl(TIOCSCTTY)", e))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; both descriptors are valid.
        let rc = unsafe { libc::dup2(slave.as_raw_fd(), target) };
        nix::errno::Errno::result(rc).map_err(|e| sys_err(format!("dup2 pty to {target}"), e))?;
    }
    Ok(())
}

/// Sets the window size of a terminal.
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    nix::errno::Errno::result(rc).map_err(|e| sys_err("ioctl(TIOCSWINSZ)", e))?;
    Ok(())
}
