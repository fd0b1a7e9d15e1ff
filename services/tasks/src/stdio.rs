//! The task's stdio as berthd itself touches it: only while a task is being created.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;

/// Opens a reader on the stdin FIFO at `path`, if it is one, for the time the shim takes to
/// open its own. A client blocked opening the writer (as `ctr` is, spinning on its FIFO's
/// close when its own stdin is already at its end) goes on at once rather than after the
/// shim's start. The reader only holds the pipe open, so nothing written is lost or read
/// here. Anything but a FIFO, or a failure, is left to the shim, which reports it.
///
/// The shim's own reader may then open after the client's writer has come and gone, and the
/// kernel reports no hang-up to a reader that never saw a writer; the shim's stdin ends
/// anyway, because the shim keeps a writer of its own until CloseIO and its closing is what
/// the reader sees.
pub(crate) fn hold_fifo_reader(path: &str) -> Option<File> {
    if path.is_empty() {
        return None;
    }
    // O_PATH first, so that opening a device or anything else named here has no side effect.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .ok()?;
    if !handle.metadata().ok()?.file_type().is_fifo() {
        return None;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
    }

    #[test]
    fn a_blocked_writer_goes_on_and_what_it_writes_waits_for_the_shims_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        mkfifo(&fifo);
        // The client: opening the writer blocks until some reader opens.
        let (opened, writer_open) = mpsc::channel();
        let client = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut w = OpenOptions::new().write(true).open(&fifo).unwrap();
                opened.send(()).unwrap();
                w.write_all(b"typed early").unwrap();
            })
        };
        assert!(
            writer_open
                .recv_timeout(Duration::from_millis(100))
                .is_err()
        );

        let held = hold_fifo_reader(fifo.to_str().unwrap()).expect("a reader on the FIFO");
        writer_open.recv_timeout(Duration::from_secs(5)).unwrap();
        client.join().unwrap();

        // The shim's reader, opened while berthd still holds its own, gets every byte.
        let mut shim = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        drop(held);
        let mut got = Vec::new();
        shim.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"typed early");
    }

    #[test]
    fn only_a_fifo_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(hold_fifo_reader("").is_none());
        assert!(hold_fifo_reader(file.to_str().unwrap()).is_none());
        assert!(hold_fifo_reader(dir.path().join("missing").to_str().unwrap()).is_none());
        // A device is never opened for real (opening one can have effects of its own).
        assert!(hold_fifo_reader("/dev/null").is_none());
        assert!(hold_fifo_reader(dir.path().to_str().unwrap()).is_none());
    }
}
