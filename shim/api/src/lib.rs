//! The shim protocol: what berthd and one `berth-shim` say to each other over the shim's unix
//! socket (`<task dir>/shim.sock`).
//!
//! Each frame is a 4-byte big-endian length followed by one protobuf [`ShimMessage`]. The daemon
//! sends [`Request`]s, each with an id; the shim answers each with a [`Response`] carrying the
//! same id (in any order: a `Wait` is answered only when the process exits) and pushes
//! [`Event`]s (exits, OOMs) to every connected daemon. The crate is small on purpose: the shim
//! links it, and the shim's memory is counted per container.
//!
//! Field numbers are this protocol's own, except [`Metrics`], which mirrors containerd's
//! `io.containerd.cgroups.v1.Metrics` so the daemon can hand its bytes to clients unchanged.

// Prost-derived fields are documented by their message's doc comment; messages live for one
// request, so boxing the big variants would buy nothing but allocations.
#![allow(missing_docs, clippy::large_enum_variant)]

use prost::Message;

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 4 << 20;

/// The type URL under which [`Metrics`] bytes are handed to containerd clients.
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// One frame's content.
#[derive(Clone, PartialEq, Message)]
pub struct ShimMessage {
    #[prost(oneof = "shim_message::Kind", tags = "1, 2, 3")]
    pub kind: Option<shim_message::Kind>,
}

/// The kinds of [`ShimMessage`].
pub mod shim_message {
    /// What a frame holds.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Request(super::Request),
        #[prost(message, tag = "2")]
        Response(super::Response),
        #[prost(message, tag = "3")]
        Event(super::Event),
    }
}

/// A request from the daemon.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(
        oneof = "request::Body",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18"
    )]
    pub body: Option<request::Body>,
}

/// The kinds of [`Request`].
pub mod request {
    /// What is asked.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "2")]
        Create(super::CreateRequest),
        #[prost(message, tag = "3")]
        Start(super::ProcessRef),
        #[prost(message, tag = "4")]
        Kill(super::KillRequest),
        #[prost(message, tag = "5")]
        Exec(super::ExecRequest),
        #[prost(message, tag = "6")]
        ResizePty(super::ResizePtyRequest),
        #[prost(message, tag = "7")]
        CloseIo(super::ProcessRef),
        #[prost(message, tag = "8")]
        Pause(super::Empty),
        #[prost(message, tag = "9")]
        Resume(super::Empty),
        #[prost(message, tag = "10")]
        Pids(super::Empty),
        #[prost(message, tag = "11")]
        State(super::ProcessRef),
        #[prost(message, tag = "12")]
        Wait(super::ProcessRef),
        #[prost(message, tag = "13")]
        Delete(super::ProcessRef),
        #[prost(message, tag = "14")]
        Stats(super::Empty),
        #[prost(message, tag = "15")]
        Update(super::UpdateRequest),
        #[prost(message, tag = "16")]
        Shutdown(super::ShutdownRequest),
        #[prost(message, tag = "17")]
        Connect(super::Empty),
        /// Hands over the exits the daemon has not taken yet (see [`super::ExitsResponse`]).
        #[prost(message, tag = "18")]
        TakeExits(super::Empty),
    }
}

/// The answer to a [`Request`].
#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Set when the request failed.
    #[prost(message, optional, tag = "2")]
    pub error: Option<ShimError>,
    #[prost(oneof = "response::Body", tags = "3, 4, 5, 6, 7, 8, 9")]
    pub body: Option<response::Body>,
}

/// The kinds of [`Response`].
pub mod response {
    /// What is answered.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "3")]
        Pid(super::PidResponse),
        #[prost(message, tag = "4")]
        State(super::StateResponse),
        #[prost(message, tag = "5")]
        Exit(super::ExitResponse),
        #[prost(message, tag = "6")]
        Pids(super::PidsResponse),
        #[prost(message, tag = "7")]
        Metrics(super::Metrics),
        #[prost(message, tag = "8")]
        Connect(super::ConnectResponse),
        #[prost(message, tag = "9")]
        Exits(super::ExitsResponse),
    }
}

/// A failure: the errdefs kind name (as berth_core::ErrorKind::as_str) and the message.
#[derive(Clone, PartialEq, Message)]
pub struct ShimError {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// No arguments.
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

/// A process of the task: "" is the container's init, anything else an exec id.
#[derive(Clone, PartialEq, Message)]
pub struct ProcessRef {
    #[prost(string, tag = "1")]
    pub exec_id: String,
}

/// A mount for the rootfs (containerd's Mount without a target).
#[derive(Clone, PartialEq, Message)]
pub struct Mount {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub source: String,
    #[prost(string, repeated, tag = "3")]
    pub options: Vec<String>,
}

/// Where a process's stdio goes.
#[derive(Clone, PartialEq, Message)]
pub struct Stdio {
    /// FIFO (or file) to read stdin from; "" for none.
    #[prost(string, tag = "1")]
    pub stdin: String,
    /// FIFO (or file) to write stdout to; "" for none.
    #[prost(string, tag = "2")]
    pub stdout: String,
    /// FIFO (or file) to write stderr to; "" for none (always none with a terminal).
    #[prost(string, tag = "3")]
    pub stderr: String,
    /// Allocate a pty.
    #[prost(bool, tag = "4")]
    pub terminal: bool,
    /// A JSON-lines log the shim keeps of stdout and stderr ("" for none).
    #[prost(string, tag = "5")]
    pub log_path: String,
    /// Rotate the log at this size in bytes (0: never).
    #[prost(uint64, tag = "6")]
    pub log_max_size: u64,
}

/// Create the container's init from the bundle the shim runs in.
#[derive(Clone, PartialEq, Message)]
pub struct CreateRequest {
    /// Mounted, in order, on `<bundle>/rootfs`; empty when the spec's root is ready.
    #[prost(message, repeated, tag = "1")]
    pub rootfs: Vec<Mount>,
    #[prost(message, optional, tag = "2")]
    pub stdio: Option<Stdio>,
    /// An external OCI runtime binary (runc, crun); "" for the built-in runtime.
    #[prost(string, tag = "3")]
    pub runtime_binary: String,
    /// Top-level directories of the rootfs (`proc`, `dev`…) that the spec mounts over, made
    /// as soon as `rootfs` is mounted, while the runtime prepares; empty when the container's
    /// root, not the shim, must own them (a user namespace).
    #[prost(string, repeated, tag = "4")]
    pub mount_points: Vec<String>,
}

/// Signal a process (or, with `all`, every process of the container).
#[derive(Clone, PartialEq, Message)]
pub struct KillRequest {
    #[prost(string, tag = "1")]
    pub exec_id: String,
    #[prost(uint32, tag = "2")]
    pub signal: u32,
    #[prost(bool, tag = "3")]
    pub all: bool,
}

/// Add a process to the running container.
#[derive(Clone, PartialEq, Message)]
pub struct ExecRequest {
    #[prost(string, tag = "1")]
    pub exec_id: String,
    /// The OCI runtime-spec Process, JSON.
    #[prost(bytes = "vec", tag = "2")]
    pub spec: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub stdio: Option<Stdio>,
}

/// Resize a process's pty.
#[derive(Clone, PartialEq, Message)]
pub struct ResizePtyRequest {
    #[prost(string, tag = "1")]
    pub exec_id: String,
    #[prost(uint32, tag = "2")]
    pub width: u32,
    #[prost(uint32, tag = "3")]
    pub height: u32,
}

/// New resources, OCI LinuxResources JSON.
#[derive(Clone, PartialEq, Message)]
pub struct UpdateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub resources: Vec<u8>,
}

/// Ask the shim to exit (refused while processes run unless `now`).
#[derive(Clone, PartialEq, Message)]
pub struct ShutdownRequest {
    #[prost(bool, tag = "1")]
    pub now: bool,
}

/// A process id.
#[derive(Clone, PartialEq, Message)]
pub struct PidResponse {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
}

/// Process status, numbered as containerd.v1.types.Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    Unknown = 0,
    Created = 1,
    Running = 2,
    Stopped = 3,
    Paused = 4,
    Pausing = 5,
}

/// A process's state.
#[derive(Clone, PartialEq, Message)]
pub struct StateResponse {
    #[prost(string, tag = "1")]
    pub exec_id: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(enumeration = "Status", tag = "3")]
    pub status: i32,
    #[prost(uint32, tag = "4")]
    pub exit_status: u32,
    /// Unix time in nanoseconds; 0 while running.
    #[prost(int64, tag = "5")]
    pub exited_at_ns: i64,
    #[prost(message, optional, tag = "6")]
    pub stdio: Option<Stdio>,
}

/// How a process ended. The answer to Delete also hands over, as TakeExits would, the exits
/// no daemon has taken yet: the daemon publishes them before the delete without a second
/// round trip.
#[derive(Clone, PartialEq, Message)]
pub struct ExitResponse {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub exit_status: u32,
    #[prost(int64, tag = "3")]
    pub exited_at_ns: i64,
    #[prost(message, repeated, tag = "4")]
    pub exits: Vec<ExitEvent>,
}

/// The container's processes.
#[derive(Clone, PartialEq, Message)]
pub struct PidsResponse {
    #[prost(message, repeated, tag = "1")]
    pub processes: Vec<ProcessInfo>,
}

/// One process of the container, with the exec id when the shim started it.
#[derive(Clone, PartialEq, Message)]
pub struct ProcessInfo {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// Who is at the other end.
#[derive(Clone, PartialEq, Message)]
pub struct ConnectResponse {
    #[prost(uint32, tag = "1")]
    pub shim_pid: u32,
    #[prost(uint32, tag = "2")]
    pub task_pid: u32,
    #[prost(string, tag = "3")]
    pub version: String,
}

/// The exits no daemon has taken yet, now taken: the shim keeps every exit until a daemon
/// takes it, and hands each out once, so a daemon that publishes what it takes publishes each
/// exit once, whether it happened while it was connected or down.
#[derive(Clone, PartialEq, Message)]
pub struct ExitsResponse {
    #[prost(message, repeated, tag = "1")]
    pub exits: Vec<ExitEvent>,
}

/// Something that happened in the shim.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(oneof = "event::Kind", tags = "1, 2")]
    pub kind: Option<event::Kind>,
}

/// The kinds of [`Event`].
pub mod event {
    /// What happened.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Exit(super::ExitEvent),
        #[prost(message, tag = "2")]
        Oom(super::Empty),
    }
}

/// A process of the task exited.
#[derive(Clone, PartialEq, Message)]
pub struct ExitEvent {
    #[prost(string, tag = "1")]
    pub exec_id: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(uint32, tag = "3")]
    pub exit_status: u32,
    #[prost(int64, tag = "4")]
    pub exited_at_ns: i64,
}

/// Cgroup statistics, field for field containerd's io.containerd.cgroups.v1.Metrics.
#[derive(Clone, PartialEq, Message)]
pub struct Metrics {
    #[prost(message, repeated, tag = "1")]
    pub hugetlb: Vec<HugetlbStat>,
    #[prost(message, optional, tag = "2")]
    pub pids: Option<PidsStat>,
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<CpuStat>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<MemoryStat>,
    #[prost(message, optional, tag = "5")]
    pub blkio: Option<BlkIoStat>,
    #[prost(message, optional, tag = "9")]
    pub memory_oom_control: Option<MemoryOomControl>,
}

/// Huge page usage for one page size.
#[derive(Clone, PartialEq, Message)]
pub struct HugetlbStat {
    #[prost(uint64, tag = "1")]
    pub usage: u64,
    #[prost(uint64, tag = "2")]
    pub max: u64,
    #[prost(uint64, tag = "3")]
    pub failcnt: u64,
    #[prost(string, tag = "4")]
    pub pagesize: String,
}

/// Process count.
#[derive(Clone, PartialEq, Message)]
pub struct PidsStat {
    #[prost(uint64, tag = "1")]
    pub current: u64,
    #[prost(uint64, tag = "2")]
    pub limit: u64,
}

/// CPU usage and throttling.
#[derive(Clone, PartialEq, Message)]
pub struct CpuStat {
    #[prost(message, optional, tag = "1")]
    pub usage: Option<CpuUsage>,
    #[prost(message, optional, tag = "2")]
    pub throttling: Option<Throttle>,
}

/// CPU time in nanoseconds.
#[derive(Clone, PartialEq, Message)]
pub struct CpuUsage {
    #[prost(uint64, tag = "1")]
    pub total: u64,
    #[prost(uint64, tag = "2")]
    pub kernel: u64,
    #[prost(uint64, tag = "3")]
    pub user: u64,
    #[prost(uint64, repeated, tag = "4")]
    pub per_cpu: Vec<u64>,
}

/// CFS throttling.
#[derive(Clone, PartialEq, Message)]
pub struct Throttle {
    #[prost(uint64, tag = "1")]
    pub periods: u64,
    #[prost(uint64, tag = "2")]
    pub throttled_periods: u64,
    #[prost(uint64, tag = "3")]
    pub throttled_time: u64,
}

/// memory.stat and the usage counters.
#[derive(Clone, PartialEq, Message)]
pub struct MemoryStat {
    #[prost(uint64, tag = "1")]
    pub cache: u64,
    #[prost(uint64, tag = "2")]
    pub rss: u64,
    #[prost(uint64, tag = "3")]
    pub rss_huge: u64,
    #[prost(uint64, tag = "4")]
    pub mapped_file: u64,
    #[prost(uint64, tag = "5")]
    pub dirty: u64,
    #[prost(uint64, tag = "6")]
    pub writeback: u64,
    #[prost(uint64, tag = "7")]
    pub pg_pg_in: u64,
    #[prost(uint64, tag = "8")]
    pub pg_pg_out: u64,
    #[prost(uint64, tag = "9")]
    pub pg_fault: u64,
    #[prost(uint64, tag = "10")]
    pub pg_maj_fault: u64,
    #[prost(uint64, tag = "11")]
    pub inactive_anon: u64,
    #[prost(uint64, tag = "12")]
    pub active_anon: u64,
    #[prost(uint64, tag = "13")]
    pub inactive_file: u64,
    #[prost(uint64, tag = "14")]
    pub active_file: u64,
    #[prost(uint64, tag = "15")]
    pub unevictable: u64,
    #[prost(uint64, tag = "16")]
    pub hierarchical_memory_limit: u64,
    #[prost(uint64, tag = "17")]
    pub hierarchical_swap_limit: u64,
    #[prost(uint64, tag = "18")]
    pub total_cache: u64,
    #[prost(uint64, tag = "19")]
    pub total_rss: u64,
    #[prost(uint64, tag = "20")]
    pub total_rss_huge: u64,
    #[prost(uint64, tag = "21")]
    pub total_mapped_file: u64,
    #[prost(uint64, tag = "22")]
    pub total_dirty: u64,
    #[prost(uint64, tag = "23")]
    pub total_writeback: u64,
    #[prost(uint64, tag = "24")]
    pub total_pg_pg_in: u64,
    #[prost(uint64, tag = "25")]
    pub total_pg_pg_out: u64,
    #[prost(uint64, tag = "26")]
    pub total_pg_fault: u64,
    #[prost(uint64, tag = "27")]
    pub total_pg_maj_fault: u64,
    #[prost(uint64, tag = "28")]
    pub total_inactive_anon: u64,
    #[prost(uint64, tag = "29")]
    pub total_active_anon: u64,
    #[prost(uint64, tag = "30")]
    pub total_inactive_file: u64,
    #[prost(uint64, tag = "31")]
    pub total_active_file: u64,
    #[prost(uint64, tag = "32")]
    pub total_unevictable: u64,
    #[prost(message, optional, tag = "33")]
    pub usage: Option<MemoryEntry>,
    #[prost(message, optional, tag = "34")]
    pub swap: Option<MemoryEntry>,
    #[prost(message, optional, tag = "35")]
    pub kernel: Option<MemoryEntry>,
    #[prost(message, optional, tag = "36")]
    pub kernel_tcp: Option<MemoryEntry>,
}

/// One memory counter.
#[derive(Clone, PartialEq, Message)]
pub struct MemoryEntry {
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    #[prost(uint64, tag = "2")]
    pub usage: u64,
    #[prost(uint64, tag = "3")]
    pub max: u64,
    #[prost(uint64, tag = "4")]
    pub failcnt: u64,
}

/// OOM state.
#[derive(Clone, PartialEq, Message)]
pub struct MemoryOomControl {
    #[prost(uint64, tag = "1")]
    pub oom_kill_disable: u64,
    #[prost(uint64, tag = "2")]
    pub under_oom: u64,
    #[prost(uint64, tag = "3")]
    pub oom_kill: u64,
}

/// Block I/O.
#[derive(Clone, PartialEq, Message)]
pub struct BlkIoStat {
    #[prost(message, repeated, tag = "1")]
    pub io_service_bytes_recursive: Vec<BlkIoEntry>,
    #[prost(message, repeated, tag = "2")]
    pub io_serviced_recursive: Vec<BlkIoEntry>,
}

/// One block I/O counter.
#[derive(Clone, PartialEq, Message)]
pub struct BlkIoEntry {
    #[prost(string, tag = "1")]
    pub op: String,
    #[prost(string, tag = "2")]
    pub device: String,
    #[prost(uint64, tag = "3")]
    pub major: u64,
    #[prost(uint64, tag = "4")]
    pub minor: u64,
    #[prost(uint64, tag = "5")]
    pub value: u64,
}

/// Encodes a message as one frame (length prefix included).
pub fn encode_frame(msg: &ShimMessage) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    // Encoding into a Vec cannot run out of space.
    let _ = msg.encode(&mut out);
    out
}

/// Splits one complete frame off the front of `buf`: Ok(None) when more bytes are needed.
pub fn decode_frame(buf: &mut bytes::BytesMut) -> Result<Option<ShimMessage>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError(format!(
            "frame of {len} bytes is over the {MAX_FRAME} limit"
        )));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = buf.split_to(4 + len);
    ShimMessage::decode(&frame[4..])
        .map(Some)
        .map_err(|e| FrameError(format!("decode shim message: {e}")))
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let a = ShimMessage {
            kind: Some(shim_message::Kind::Request(Request {
                id: 7,
                body: Some(request::Body::Kill(KillRequest {
                    exec_id: "x".into(),
                    signal: 9,
                    all: true,
                })),
            })),
        };
        let b = ShimMessage {
            kind: Some(shim_message::Kind::Event(Event {
                kind: Some(event::Kind::Exit(ExitEvent {
                    exec_id: String::new(),
                    pid: 42,
                    exit_status: 3,
                    exited_at_ns: 1,
                })),
            })),
        };
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&encode_frame(&a));
        let fb = encode_frame(&b);
        buf.extend_from_slice(&fb[..3]);
        assert_eq!(decode_frame(&mut buf).unwrap(), Some(a));
        assert_eq!(decode_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(&fb[3..]);
        assert_eq!(decode_frame(&mut buf).unwrap(), Some(b));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = bytes::BytesMut::from(&((MAX_FRAME as u32) + 1).to_be_bytes()[..]);
        assert!(decode_frame(&mut buf).is_err());
    }
}
