//! `berthctl events`: the event stream, as `ctr events` prints it.

use berth_client::events::event_json;
use berth_core::events::Envelope;
use serde_json::{Value, json};

use super::{Ctx, print};
use crate::CmdResult;
use crate::output::{Format, rfc3339};

/// One event as a line: `<time> <namespace> <topic> <event as JSON>` for people (the event is
/// its type URL in brackets when berthctl cannot decode it), one JSON object per line for
/// scripts.
pub fn render(format: Format, e: &Envelope) -> String {
    let time = rfc3339(Some(e.timestamp)).unwrap_or_default();
    let decoded = event_json(&e.event);
    match format {
        Format::Table => {
            let event =
                decoded.map_or_else(|| format!("[{}]", e.event.type_url), |v| v.to_string());
            format!("{time} {} {} {event}\n", e.namespace, e.topic)
        }
        Format::Json => {
            let line = json!({
                "timestamp": time,
                "namespace": e.namespace.as_str(),
                "topic": e.topic,
                "type": e.event.type_url,
                "event": decoded.unwrap_or(Value::Null),
            });
            format!("{line}\n")
        }
    }
}

/// Streams every event matching any of `filters` (of every namespace, as `ctr events`) until
/// the daemon goes away or the output is closed.
pub async fn run(ctx: &Ctx, filters: Vec<String>) -> CmdResult {
    let client = ctx.connect().await?;
    let mut stream = client.events().subscribe(&filters).await?;
    while let Some(envelope) = stream.next().await? {
        print(&render(ctx.format, &envelope))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use berth_core::{AnyValue, Namespace};

    use super::*;

    #[test]
    fn lines() {
        let e = Envelope {
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            namespace: Namespace::new("default").unwrap(),
            topic: "/x/y".into(),
            event: AnyValue::new("unknown.Type", vec![]),
        };
        assert_eq!(
            render(Format::Table, &e),
            "2023-11-14T22:13:20.000000000Z default /x/y [unknown.Type]\n"
        );
        let line: Value = serde_json::from_str(&render(Format::Json, &e)).unwrap();
        assert_eq!(line["topic"], "/x/y");
        assert_eq!(line["type"], "unknown.Type");
        assert_eq!(line["event"], Value::Null);
    }
}
