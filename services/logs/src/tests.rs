#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_core::AnyValue;
use berth_core::ErrorKind;

use super::*;

/// Containers kept in a map: the logs only ever get and delete.
#[derive(Default)]
struct Containers(Mutex<HashMap<String, Container>>);

impl ContainerStore for Containers {
    fn get(&self, _ctx: &RequestContext, id: &str) -> Result<Container> {
        self.0
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("container {id:?}")))
    }
    fn list(&self, _ctx: &RequestContext, _filters: &Filters) -> Result<Vec<Container>> {
        Ok(self.0.lock().unwrap().values().cloned().collect())
    }
    fn create(&self, _ctx: &RequestContext, c: Container) -> Result<Container> {
        self.0.lock().unwrap().insert(c.id.clone(), c.clone());
        Ok(c)
    }
    fn update(&self, _: &RequestContext, c: Container, _: &[String]) -> Result<Container> {
        Ok(c)
    }
    fn delete(&self, _ctx: &RequestContext, id: &str) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("container {id:?}")))
    }
}

/// A task that runs until the test says otherwise.
struct Switch(AtomicBool);

impl Liveness for Switch {
    fn running<'a>(&'a self, _: &'a RequestContext, _: &'a str) -> BoxFuture<'a, bool> {
        let on = self.0.load(Ordering::SeqCst);
        Box::pin(async move { on })
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    logs: Arc<JsonFileLogs>,
    containers: Arc<Containers>,
    live: Arc<Switch>,
    ctx: RequestContext,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let containers = Arc::new(Containers::default());
    let live = Arc::new(Switch(AtomicBool::new(false)));
    let logs = Arc::new(
        JsonFileLogs::new(tmp.path().to_path_buf(), containers.clone(), live.clone())
            .with_poll_interval(Duration::from_millis(10)),
    );
    let ctx = RequestContext::new(Namespace::new("ns1").unwrap());
    for (id, logged) in [("web", true), ("quiet", false)] {
        let mut c = Container::new(id, "io.containerd.runc.v2", AnyValue::default());
        if logged {
            c.labels.insert(LOG_LABEL.into(), LOG_JSON_FILE.into());
        }
        containers.create(&ctx, c).unwrap();
    }
    let dir = tmp.path().join("ns1").join("web");
    std::fs::create_dir_all(&dir).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        logs,
        containers,
        live,
        ctx,
    }
}

/// A line as the shim writes it, at `secs` after the epoch.
fn line(stream: &str, text: &str, secs: u64) -> String {
    let t =
        chrono::DateTime::<chrono::Utc>::from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    format!(
        "{}\n",
        serde_json::json!({"log": text, "stream": stream,
            "time": t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)})
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn collect(f: &Fixture, id: &str, opts: ReadLogs) -> Vec<(LogStream, String, u64)> {
    let mut r = f.logs.read(&f.ctx, id, opts).await.unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next().await {
        let e = e.unwrap();
        let secs = e
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        out.push((e.stream, String::from_utf8(e.data).unwrap(), secs));
    }
    out
}

fn texts(v: &[(LogStream, String, u64)]) -> Vec<&str> {
    v.iter().map(|(_, t, _)| t.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_the_rotated_generation_then_the_current_one() {
    let f = fixture();
    append(
        &f.dir.join(ROTATED_LOG_FILE),
        &(line("stdout", "one\n", 1) + &line("stderr", "two\n", 2)),
    );
    append(&f.dir.join(LOG_FILE), &line("stdout", "three\n", 3));
    let all = collect(&f, "web", ReadLogs::default()).await;
    assert_eq!(texts(&all), ["one\n", "two\n", "three\n"]);
    assert_eq!(all[1].0, LogStream::Stderr);
    assert_eq!(all[2].2, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_and_time_filters() {
    let f = fixture();
    append(
        &f.dir.join(ROTATED_LOG_FILE),
        &(line("stdout", "a\n", 10) + &line("stdout", "b\n", 20)),
    );
    append(
        &f.dir.join(LOG_FILE),
        &(line("stdout", "c\n", 30) + &line("stdout", "d\n", 40)),
    );
    let tail = |n| ReadLogs {
        tail: Some(n),
        ..Default::default()
    };
    assert_eq!(
        texts(&collect(&f, "web", tail(3)).await),
        ["b\n", "c\n", "d\n"]
    );
    assert_eq!(
        texts(&collect(&f, "web", tail(0)).await),
        Vec::<&str>::new()
    );
    assert_eq!(texts(&collect(&f, "web", tail(99)).await).len(), 4);
    let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    let window = ReadLogs {
        since: at(20),
        until: at(40),
        ..Default::default()
    };
    assert_eq!(texts(&collect(&f, "web", window).await), ["b\n", "c\n"]);
    // A tail counts only what passes the filters.
    let tail_window = ReadLogs {
        until: at(40),
        tail: Some(1),
        ..Default::default()
    };
    assert_eq!(texts(&collect(&f, "web", tail_window).await), ["c\n"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_lines_are_skipped_and_an_unfinished_one_waits() {
    let f = fixture();
    let log = f.dir.join(LOG_FILE);
    append(
        &log,
        &(line("stdout", "good\n", 1) + "{not json\n" + &line("stdout", "also good\n", 2)),
    );
    let unfinished = line("stdout", "late\n", 3);
    append(&log, &unfinished[..10]);
    assert_eq!(
        texts(&collect(&f, "web", ReadLogs::default()).await),
        ["good\n", "also good\n"]
    );
}

async fn next(r: &mut Box<dyn LogReader>) -> String {
    let e = tokio::time::timeout(Duration::from_secs(10), r.next())
        .await
        .expect("an entry within 10 s")
        .expect("the stream goes on")
        .unwrap();
    String::from_utf8(e.data).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_sees_new_lines_and_rotation_and_ends_when_the_task_stops() {
    let f = fixture();
    let log = f.dir.join(LOG_FILE);
    append(&log, &line("stdout", "before\n", 1));
    f.live.0.store(true, Ordering::SeqCst);
    let mut r = f
        .logs
        .read(
            &f.ctx,
            "web",
            ReadLogs {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(next(&mut r).await, "before\n");
    // A line written in two pieces is delivered once, whole.
    let split = line("stdout", "appended\n", 2);
    append(&log, &split[..7]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&log, &split[7..]);
    assert_eq!(next(&mut r).await, "appended\n");
    // The shim's rotation: rename, then a new file.
    append(&log, &line("stdout", "last of old\n", 3));
    std::fs::rename(&log, f.dir.join(ROTATED_LOG_FILE)).unwrap();
    append(&log, &line("stderr", "first of new\n", 4));
    assert_eq!(next(&mut r).await, "last of old\n");
    assert_eq!(next(&mut r).await, "first of new\n");
    // The task stops after writing its last line: that line still arrives, then the end.
    append(&log, &line("stdout", "bye\n", 5));
    f.live.0.store(false, Ordering::SeqCst);
    assert_eq!(next(&mut r).await, "bye\n");
    let end = tokio::time::timeout(Duration::from_secs(10), r.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the follow ends once the task stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_of_a_stopped_task_is_a_plain_read() {
    let f = fixture();
    append(&f.dir.join(LOG_FILE), &line("stdout", "only\n", 1));
    let all = collect(
        &f,
        "web",
        ReadLogs {
            follow: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(texts(&all), ["only\n"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals() {
    let f = fixture();
    let err = |id: &'static str| {
        let logs = f.logs.clone();
        let ctx = f.ctx.clone();
        async move {
            match logs.read(&ctx, id, ReadLogs::default()).await {
                Ok(_) => panic!("reading {id:?} should fail"),
                Err(e) => e,
            }
        }
    };
    let e = err("nope").await;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = err("quiet").await;
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains(LOG_LABEL), "{e}");
    // An id never becomes a path outside the log directory.
    let e = f.logs.remove(&f.ctx, "../ns1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // No file yet (never started): an empty log, not an error.
    std::fs::remove_dir_all(&f.dir).unwrap();
    assert!(collect(&f, "web", ReadLogs::default()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_container_deletes_its_log() {
    let f = fixture();
    append(&f.dir.join(LOG_FILE), &line("stdout", "x\n", 1));
    let store = RemovesLogs::new(f.containers.clone(), f.logs.clone());
    store.delete(&f.ctx, "web").unwrap();
    assert!(!f.dir.exists());
    assert_eq!(
        store.get(&f.ctx, "web").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // A container that never had a log deletes fine too.
    store.delete(&f.ctx, "quiet").unwrap();
}
