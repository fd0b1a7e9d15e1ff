//! `berthctl logs`: what a container wrote, as its shim logged it (`docker logs`).

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::logs::{LogEntry, LogStream, ReadLogs};
use serde_json::json;

use super::Ctx;
use crate::CmdResult;
use crate::output::{Format, rfc3339};

/// `berthctl logs [-f] [--since T] [--until T] [--tail N] [-t] CONTAINER`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The container.
    pub container: String,
    /// Keep printing new output until the container stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only output written at or after this time: RFC 3339 (2026-11-23T10:00:00Z), Unix
    /// seconds, or a duration before now (10m, 1h30m).
    #[arg(long, value_parser = time_arg)]
    pub since: Option<SystemTime>,
    /// Only output written before this time (same forms as --since).
    #[arg(long, value_parser = time_arg)]
    pub until: Option<SystemTime>,
    /// Only the last N lines ("all" for every line). No `-n`: that is the namespace.
    #[arg(long, default_value = "all", value_parser = tail_arg)]
    pub tail: Tail,
    /// Prefix each line with the time it was written.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

/// How many of the last lines to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Every line.
    All,
    /// The last N.
    Last(u64),
}

fn tail_arg(s: &str) -> Result<Tail, String> {
    if s == "all" {
        return Ok(Tail::All);
    }
    s.parse()
        .map(Tail::Last)
        .map_err(|_| format!("invalid --tail {s:?}: a number of lines or \"all\""))
}

/// A point in time: RFC 3339, Unix seconds (with an optional fraction), or a duration ago.
fn time_arg(s: &str) -> Result<SystemTime, String> {
    time_at(s, SystemTime::now())
}

fn time_at(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(SystemTime::from(t.with_timezone(&chrono::Utc)));
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    match crate::parse::duration(s) {
        Ok(ago) => now
            .checked_sub(ago)
            .filter(|t| *t >= UNIX_EPOCH)
            .ok_or_else(|| format!("{s:?} ago is before 1970")),
        Err(_) => Err(format!(
            "invalid time {s:?}: RFC 3339 (2026-11-23T10:00:00Z), Unix seconds, or a \
             duration before now (10m, 1h30m)"
        )),
    }
}

/// One entry as printed: the bytes on the stream they came from (with the time first under
/// -t), or a JSON object per line.
fn render(format: Format, timestamps: bool, e: &LogEntry) -> Vec<u8> {
    let time = rfc3339(Some(e.time)).unwrap_or_default();
    match format {
        Format::Table => {
            let mut out = Vec::with_capacity(e.data.len() + 32);
            if timestamps {
                out.extend_from_slice(time.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&e.data);
            out
        }
        Format::Json => {
            let line = json!({
                "time": time,
                "stream": e.stream.as_str(),
                "log": String::from_utf8_lossy(&e.data),
            });
            format!("{line}\n").into_bytes()
        }
    }
}

/// Prints the log; with --follow, until the container's task stops.
pub async fn run(ctx: &Ctx, args: LogsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let opts = ReadLogs {
        follow: args.follow,
        since: args.since,
        until: args.until,
        tail: match args.tail {
            Tail::All => None,
            Tail::Last(n) => Some(n),
        },
    };
    let mut reader = client.logs().read(&args.container, &opts).await?;
    while let Some(entry) = reader.next().await? {
        let bytes = render(ctx.format, args.timestamps, &entry);
        // Like docker logs, stderr lines go to stderr unless a script asked for JSON.
        let written = match (ctx.format, entry.stream) {
            (Format::Table, LogStream::Stderr) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&bytes).and_then(|()| err.flush())
            }
            _ => {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes).and_then(|()| out.flush())
            }
        };
        if let Err(e) = written {
            // A closed pipe (`| head`) ends the read quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(berth_core::Error::io("write the log", e).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            time_at("10m", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_000_000 - 600)
        );
        assert_eq!(
            time_at("1700000000", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            time_at("1970-01-01T00:00:10.5Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_millis(10_500)
        );
        assert_eq!(
            time_at("1970-01-01T01:00:00+01:00", now).unwrap(),
            UNIX_EPOCH
        );
        assert!(time_at("yesterday", now).unwrap_err().contains("RFC 3339"));
        assert!(time_at("100000h", now).is_err());
    }

    #[test]
    fn command_line() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "berthctl", "-n", "ns1", "logs", "-f", "-t", "--tail", "2", "--since", "5m", "web",
        ])
        .unwrap();
        assert_eq!(cli.namespace, "ns1");
        let crate::cli::Command::Logs(args) = cli.command else {
            panic!("not logs: {:?}", cli.command);
        };
        assert_eq!(args.container, "web");
        assert!(args.follow && args.timestamps && args.since.is_some() && args.until.is_none());
        assert_eq!(args.tail, Tail::Last(2));
    }

    #[test]
    fn tails() {
        assert_eq!(tail_arg("all").unwrap(), Tail::All);
        assert_eq!(tail_arg("5").unwrap(), Tail::Last(5));
        assert!(tail_arg("-1").is_err());
    }

    #[test]
    fn rendering() {
        let e = LogEntry {
            time: UNIX_EPOCH + Duration::from_secs(1),
            stream: LogStream::Stderr,
            data: b"oops\n".to_vec(),
        };
        assert_eq!(render(Format::Table, false, &e), b"oops\n");
        let stamped = String::from_utf8(render(Format::Table, true, &e)).unwrap();
        assert!(
            stamped.starts_with("1970-01-01T00:00:01") && stamped.ends_with(" oops\n"),
            "{stamped}"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&render(Format::Json, false, &e)).unwrap();
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["log"], "oops\n");
    }
}
