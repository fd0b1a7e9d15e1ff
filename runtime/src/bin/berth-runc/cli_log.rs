//! Logging in runc's formats, because callers parse it: containerd's runc shim passes
//! `--log FILE --log-format json` and reads `{"level","msg","time"}` lines back to explain a
//! failure.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_core::{Error, Result};
use berth_runtime::state::now_rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    json: bool,
}

impl Sink {
    fn line(&self, level: &str, msg: &str) {
        let time = now_rfc3339();
        let text = if self.json {
            serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
        } else {
            format!("time={time:?} level={level} msg={msg:?}")
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

/// Keeps the log open; reports the command's final error.
pub struct Guard(Arc<Sink>);

impl Guard {
    /// Logs the error that ends the command.
    pub fn error(&self, msg: &str) {
        self.0.line("error", msg);
    }
}

struct LogLayer {
    sink: Arc<Sink>,
}

#[derive(Default)]
struct Message {
    msg: String,
    fields: String,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_owned();
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Message::default();
        event.record(&mut m);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        self.sink.line(level, &format!("{}{}", m.msg, m.fields));
    }
}

/// Sends tracing events and the final error to `path` (stderr when None) in runc's format.
pub fn init(path: Option<&Path>, json: bool, debug: bool) -> Result<Guard> {
    let out: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(format!("open log {}", p.display()), e))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let sink = Arc::new(Sink {
        out: Mutex::new(out),
        json,
    });
    let max = if debug { Level::DEBUG } else { Level::WARN };
    let subscriber = tracing_subscriber::registry()
        .with(LogLayer { sink: sink.clone() })
        .with(tracing_subscriber::filter::LevelFilter::from_level(max));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| Error::internal(format!("install the logger: {e}")))?;
    Ok(Guard(sink))
}
