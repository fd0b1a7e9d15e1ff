#!/usr/bin/env python3
"""The benchmark suite: Berth against containerd 1.6 + runc and crun, in one run.

Started by bench/suite.sh (which installs and builds first). Everything it starts lives under
one temporary directory and one unique containerd namespace: a private berthd, a private
containerd (own root, state, sockets; never the system's), a loopback docker-registry, and the
containers, mounts and cgroups they make. All of it is stopped and removed on exit, also on a
failure or Ctrl-C.

Measures (MEASURES selects them, in this order):
  run       `run --rm IMAGE /bin/true`: berthctl, ctr→berthd, ctr→containerd (runc, crun)
  runtime   the OCI runtime alone: berth-runc / runc / crun `run` of one busybox bundle
  memory    RSS and PSS per shim (MEM_N containers running sleep), daemons' RSS idle and with
            MEM_MANY containers running
  many      MANY containers running sleep: start one by one, start 8 at a time, stop and remove
  pull      pull + unpack of a big image from the loopback registry into a clean store; fetch
            only and unpack only where the tools allow
  snapshot  snapshot prepare + mounts on top of the busybox image's chain

Berth and the anchors are timed alternately within each round (the order rotates every round),
after WARMUP rounds. A measure a tool cannot do is reported as n/a with the reason; a command
that fails makes its series n/a with the error, never a number.
"""

import argparse
import glob
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "bench.local/busybox:latest"
SLEEP = ["sleep", "100000"]
DEVNULL = subprocess.DEVNULL
# containerd 1.6's shims put their sockets here whatever state directory the daemon has.
CONTAINERD_SHIM_SOCKETS = "/run/containerd/s"


def log(msg):
    print(f"suite: {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value else default


class Config:
    """Knobs from the environment; QUICK=1 lowers the defaults for a smoke run."""

    def __init__(self):
        quick = os.environ.get("QUICK", "0") == "1"
        self.quick = quick
        self.built = os.environ.get("BUILD", "1") == "1"
        self.runs = env_int("RUNS", 3 if quick else 20)
        self.warmup = env_int("WARMUP", 1 if quick else 3)
        self.runs_long = env_int("RUNS_LONG", 1 if quick else 3)
        self.runs_pull = env_int("RUNS_PULL", 1 if quick else 5)
        self.mem_n = env_int("MEM_N", 10)
        self.mem_many = env_int("MEM_MANY", 20 if quick else 100)
        self.many = env_int("MANY", 10 if quick else 50)
        self.parallel = env_int("PARALLEL", 8)
        self.size_mb = env_int("SIZE_MB", 20 if quick else 100)
        self.layers = env_int("LAYERS", 5)
        self.hugetlb_dance = os.environ.get("HUGETLB_DANCE", "1") == "1"
        self.measures = os.environ.get(
            "MEASURES", "run runtime memory many pull snapshot"
        ).split()
        self.tmp = os.environ.get("BENCH_TMP") or os.environ.get("TMPDIR") or "/tmp"

    def as_dict(self):
        return {k: v for k, v in vars(self).items() if k != "tmp"}


# --- running commands ------------------------------------------------------------------------


class CmdFailed(Exception):
    """A command exited non-zero or timed out; carries the tail of its stderr."""

    def __init__(self, cmd, detail):
        self.cmd = cmd
        self.detail = detail.strip().replace("\n", " ")[-300:]
        super().__init__(f"`{' '.join(map(str, cmd))}`: {self.detail}")


def run(cmd, timeout=120, stdout=DEVNULL):
    """Runs cmd (stdin closed); returns its stdout as text when captured. Raises CmdFailed."""
    try:
        r = subprocess.run(
            [str(c) for c in cmd],
            stdin=DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise CmdFailed(cmd, f"timed out after {timeout}s") from None
    if r.returncode != 0:
        raise CmdFailed(cmd, f"exit {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode(errors="replace") if r.stdout is not None else ""


def out(cmd, timeout=120):
    return run(cmd, timeout, stdout=subprocess.PIPE)


def timed(cmd, timeout=120):
    """Wall time of one command, in seconds."""
    t0 = time.perf_counter()
    run(cmd, timeout)
    return time.perf_counter() - t0


def try_run(cmd, timeout=20):
    try:
        run(cmd, timeout)
        return True
    except (CmdFailed, OSError):
        return False


_ids = 0


def new_id(prefix):
    global _ids
    _ids += 1
    return f"{prefix}{_ids}"


def wait_until(what, check, proc=None, timeout=20):
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout}s")
        time.sleep(0.02)


# --- cleanup ---------------------------------------------------------------------------------

_cleanups = []


def on_exit(what, fn):
    """Registers fn to run at exit (last registered runs first)."""
    _cleanups.append((what, fn))


def run_cleanups():
    while _cleanups:
        what, fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # keep cleaning up the rest
            log(f"cleanup of {what} failed: {e}")


def stop_process(proc, grace=5):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(int(pid), sig)
    except (ProcessLookupError, ValueError):
        pass


def cgroup_roots():
    roots = []
    for line in open("/proc/self/mountinfo"):
        parts = line.split()
        fstype = parts[parts.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            roots.append(parts[4])
    return roots


def remove_cgroups(top):
    """Kills what is left in cgroup `top` (e.g. /<namespace>) in every hierarchy and removes it."""
    rel = top.strip("/")
    if not rel:
        return
    for root in cgroup_roots():
        base = os.path.join(root, rel)
        if not os.path.isdir(base):
            continue
        for _ in range(100):
            dirs = [d for d, _, _ in os.walk(base)]
            for d in dirs:
                try:
                    for pid in open(os.path.join(d, "cgroup.procs")).read().split():
                        kill_pid(pid)
                except OSError:
                    pass
            for d in sorted(dirs, key=lambda p: -p.count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if not os.path.exists(base):
                break
            time.sleep(0.02)
        else:
            log(f"could not remove cgroup {base}")


def unmount_under(path):
    points = []
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4]
        if point.startswith(path.rstrip("/") + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stderr=DEVNULL)


def rss_kb(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def settle_disk(timeout=60):
    """Flushes dirty pages (the test images just built, the previous measure's files) before a
    measure starts, so that neither side's fsyncs wait on writeback the suite itself caused."""
    run(["sync"], timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        pending_kb = sum(int(info[k].split()[0]) for k in ("Dirty", "Writeback"))
        if pending_kb < 4096:
            return
        time.sleep(0.2)
    log("disk still busy after the settle timeout; measuring anyway")


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


# --- daemons ---------------------------------------------------------------------------------


class Daemon:
    """What berthd and containerd share: a directory, a socket, a namespace, ctr."""

    def __init__(self, name, work, namespace):
        self.name = name
        self.dir = os.path.join(work, name)
        self.ns = namespace
        self.fifo = os.path.join(self.dir, "fifo")
        os.makedirs(self.fifo, exist_ok=True)
        self.proc = None
        self.ids = set()  # containers ever created, for cleanup

    def ctr(self, *args):
        return ["ctr", "--address", self.sock, "--namespace", self.ns, *args]

    def run_opts(self):
        return ["--fifo-dir", self.fifo]

    def wait_ready(self):
        wait_until(
            f"{self.name} at {self.sock}",
            lambda: os.path.exists(self.sock) and try_run(self.ctr("version"), 5),
            self.proc,
        )

    def spawn(self, cmd):
        logf = open(os.path.join(self.dir, "daemon.log"), "ab")
        self.proc = subprocess.Popen(
            [str(c) for c in cmd], stdin=DEVNULL, stdout=logf, stderr=logf, start_new_session=True
        )
        on_exit(self.name, self.stop)
        self.wait_ready()

    def import_image(self, archive):
        run(self.ctr("images", "import", archive), timeout=120)

    def start_container(self, cid, *extra):
        self.ids.add(cid)
        run(self.ctr("run", "-d", *self.run_opts(), *extra, IMAGE, cid, *SLEEP), timeout=60)

    def remove_container(self, cid):
        run(self.ctr("tasks", "rm", "-f", cid), timeout=60)
        run(self.ctr("containers", "rm", cid), timeout=60)

    def remove_all(self):
        """Best effort, through the daemon: every task and container of the namespace."""
        try:
            ids = out(self.ctr("containers", "ls", "-q"), 20).split()
        except (CmdFailed, OSError):
            return
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda c: (try_run(self.ctr("tasks", "rm", "-f", c), 20),
                                     try_run(self.ctr("containers", "rm", c), 20)), ids))

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.remove_all()
        stop_process(self.proc)
        self.kill_leftovers()
        remove_cgroups(f"/{self.ns}")
        unmount_under(self.dir)
        self.proc = None


class Berthd(Daemon):
    def __init__(self, work, namespace, bindir, name="berthd"):
        super().__init__(name, work, namespace)
        self.bin = bindir
        self.sock = os.path.join(self.dir, "berthd.sock")
        self.state = os.path.join(self.dir, "state")

    def start(self):
        self.spawn([os.path.join(self.bin, "berthd"), "--root", os.path.join(self.dir, "root"),
                    "--state", self.state, "--address", self.sock, "--log-level", "warn"])
        return self

    def berthctl(self, *args):
        return [os.path.join(self.bin, "berthctl"), "--address", self.sock, "--namespace",
                self.ns, *args]

    def shim_pids(self):
        pids = []
        for f in glob.glob(os.path.join(self.state, "tasks", self.ns, "*", "shim.pid")):
            try:
                pid = int(open(f).read().strip())
            except (OSError, ValueError):
                continue
            if os.path.exists(f"/proc/{pid}"):
                pids.append(pid)
        return pids

    def stray_shims(self):
        """Shims of this berthd's state found by their command line (one that never answered
        its first request has not written shim.pid yet)."""
        state = self.state.encode() + b"/"
        return pids_where(lambda args: args[0].endswith(b"berth-shim")
                          and any(a.startswith(state) for a in args))

    def kill_leftovers(self):
        # Shims outlive berthd by design: kill those left (and their containers), unmount.
        for pid in sorted(set(self.shim_pids()) | set(self.stray_shims())):
            try:
                children = open(f"/proc/{pid}/task/{pid}/children").read().split()
            except OSError:
                children = []
            for child in children:
                kill_pid(child)
            kill_pid(pid)


class Containerd(Daemon):
    def __init__(self, work, namespace, name="containerd"):
        super().__init__(name, work, namespace)
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.runc_root = os.path.join(self.dir, "runc-root")
        os.makedirs(self.runc_root, exist_ok=True)

    def start(self):
        d = self.dir
        config = os.path.join(d, "config.toml")
        # Only what running containers and pulls need: no CRI, no snapshotters that probe for
        # tools, no debug or metrics listeners that could clash with a system containerd.
        with open(config, "w") as f:
            f.write(f'''version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
''')
        self.spawn(["containerd", "--config", config, "--log-level", "warn"])
        return self

    def run_opts(self, runtime="runc"):
        opts = ["--fifo-dir", self.fifo, "--runc-root", self.runc_root]
        if runtime != "runc":
            opts += ["--runc-binary", runtime]
        return opts

    def shim_pids(self):
        sock = self.sock.encode()
        return pids_where(lambda args: b"containerd-shim" in args[0] and sock in args)

    def kill_leftovers(self):
        for pid in self.shim_pids():
            kill_pid(pid)
        # A killed shim cannot remove its socket: containerd 1.6 names it
        # sha256("<grpc address>/<namespace>/<id>") under /run/containerd/s.
        for cid in self.ids:
            key = f"{self.sock}/{self.ns}/{cid}".encode()
            path = os.path.join(CONTAINERD_SHIM_SOCKETS, hashlib.sha256(key).hexdigest())
            if os.path.exists(path):
                try:
                    os.remove(path)
                except OSError:
                    pass


class Registry:
    """A docker-registry on a free loopback port, storage under the work directory."""

    def __init__(self, work):
        self.dir = os.path.join(work, "registry")
        os.makedirs(os.path.join(self.dir, "storage"), exist_ok=True)
        self.proc = None

    def start(self):
        for _ in range(5):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            config = os.path.join(self.dir, "config.yml")
            with open(config, "w") as f:
                f.write(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: "{self.dir}/storage"
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: berth-bench-{port}
""")
            logf = open(os.path.join(self.dir, "log"), "ab")
            self.proc = subprocess.Popen(["docker-registry", "serve", config], stdin=DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
            on_exit("registry", lambda p=self.proc: stop_process(p))
            self.host = f"127.0.0.1:{port}"
            try:
                wait_until("registry", self.answers, self.proc)
                return self
            except RuntimeError as e:
                log(f"registry on port {port}: {e}; trying another port")
                stop_process(self.proc)
        raise RuntimeError("could not start docker-registry (see its log)")

    def answers(self):
        try:
            urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2).read()
            return True
        except OSError:
            return False


class HugetlbV1:
    """crun 1.8 refuses a hybrid host while a controller sits on cgroup2: for as long as this is
    held, hugetlb is mounted as a v1 hierarchy (which takes it off cgroup2); release() unmounts
    it once our cgroups in it are gone, which hands it back."""

    UNIFIED = "/sys/fs/cgroup/unified/cgroup.controllers"

    def __init__(self, namespace):
        self.ns = namespace
        self.mount = None

    @classmethod
    def controllers(cls):
        try:
            return open(cls.UNIFIED).read().split()
        except OSError:
            return []

    def acquire(self, allowed):
        """Returns None when crun can run, else why not."""
        if not self.controllers():
            return None
        if not allowed:
            return "hybrid cgroups with controllers on cgroup2 and HUGETLB_DANCE=0"
        if self.controllers() != ["hugetlb"]:
            return f"cgroup2 holds controllers {self.controllers()}, not only hugetlb"
        path = "/sys/fs/cgroup/hugetlb"
        os.makedirs(path, exist_ok=True)
        run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", path])
        self.mount = path
        on_exit("hugetlb v1 hierarchy", self.release)
        log("hugetlb moved to a v1 hierarchy for crun (until the crun measures end)")
        return None

    def release(self):
        if self.mount is None:
            return
        path, self.mount = self.mount, None
        remove_cgroups(f"/{self.ns}")
        # The hierarchy dies, handing hugetlb back to cgroup2, only if it is unmounted while it
        # has no child cgroup; unmounted with one, it lingers unseen and keeps the controller.
        # Tests running beside the suite may create cgroups in it meanwhile (and leave empty
        # parents behind): remove empty ones, unmount the moment it is empty, check, and if it
        # is still alive mount it again and retry.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            subdirs = [d for d, _, _ in os.walk(path)][1:]
            for d in sorted(subdirs, key=lambda p: -p.count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if any(os.path.isdir(os.path.join(path, e)) for e in os.listdir(path)):
                time.sleep(0.05)
                continue
            subprocess.run(["umount", path], stderr=DEVNULL)
            for _ in range(10):
                if "hugetlb" in self.controllers():
                    break
                time.sleep(0.1)
            if "hugetlb" in self.controllers():
                try:
                    os.rmdir(path)
                except OSError:
                    pass
                log("hugetlb handed back to cgroup2")
                return
            run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", path])
        log(f"WARNING: hugetlb did not return to cgroup2: it stays mounted at {path} "
            "(unmount it once it has no child cgroup)")


# --- results ---------------------------------------------------------------------------------


class Measure:
    """One measure's series: label -> list of values, or label -> why it is n/a."""

    def __init__(self, key, unit):
        self.key = key
        self.unit = unit
        self.series = {}
        self.na = {}

    def add(self, label, value):
        self.series.setdefault(label, []).append(value)

    def fail(self, label, reason):
        self.na[label] = reason
        self.series.pop(label, None)

    def median(self, label):
        v = self.series.get(label)
        return statistics.median(v) if v else None

    def as_dict(self):
        return {"unit": self.unit, "series": self.series, "na": self.na}


def interleave(m, kinds, warmup, runs):
    """kinds: [(label, fn(i) -> seconds)]. Rotates the order every round; a failing kind is n/a."""
    live = list(kinds)
    for i in range(warmup + runs):
        k = i % len(live) if live else 0
        for label, fn in live[k:] + live[:k]:
            if label in m.na:
                continue
            try:
                value = fn(i)
            except CmdFailed as e:
                log(f"{m.key}: {label} failed: {e}")
                m.fail(label, f"failed: {e.detail[:200]}")
                continue
            if i >= warmup:
                m.add(label, value)
        live = [kv for kv in live if kv[0] not in m.na]
        if not live:
            break


# --- the measures ----------------------------------------------------------------------------


class Suite:
    def __init__(self, cfg, bindir):
        self.cfg = cfg
        self.bin = bindir
        self.work = tempfile.mkdtemp(prefix="berth-suite.", dir=cfg.tmp)
        on_exit("work directory", self.remove_work)
        self.ns = f"berthbench{os.getpid()}"
        self.measures = {}
        self.loads = [("start", loadavg())]
        self.crun_na = None
        self.hugetlb = HugetlbV1(self.ns)
        self.berthctl_caps = self.probe_berthctl()

    def remove_work(self):
        unmount_under(self.work)
        subprocess.run(["rm", "-rf", "--one-file-system", self.work])

    def probe_berthctl(self):
        """Which of the `run` family berthctl has (issue 6 is landing it)."""
        b = os.path.join(self.bin, "berthctl")
        caps = {"run": False, "detach": False, "rm": False}
        try:
            r = subprocess.run([b, "run", "--help"], capture_output=True, timeout=10)
        except OSError:
            return caps
        if r.returncode == 0:
            caps["run"] = True
            text = r.stdout.decode(errors="replace")
            caps["detach"] = "--detach" in text or " -d" in text
            caps["rm"] = try_run([b, "rm", "--help"], 10)
        return caps

    def measure(self, key, unit):
        m = Measure(key, unit)
        self.measures[key] = m
        return m

    # -- setup --

    def setup(self):
        log(f"work directory {self.work}, namespace {self.ns}")
        self.berthd = Berthd(self.work, self.ns, self.bin).start()
        self.ctrd = Containerd(self.work, self.ns).start()
        archive = os.path.join(self.work, "busybox.tar")
        run([os.path.join(REPO, "scripts/make-busybox-image.sh"), archive, IMAGE])
        for d in (self.berthd, self.ctrd):
            d.import_image(archive)

    # -- 1. run --rm /bin/true --

    def m_run(self):
        cfg, b, c = self.cfg, self.berthd, self.ctrd
        m = self.measure("run", "s")
        kinds = []
        if self.berthctl_caps["run"]:
            kinds.append(("berthctl run --rm",
                          lambda i: timed(b.berthctl("run", "--rm", IMAGE, "/bin/true"), 60)))
        else:
            m.fail("berthctl run --rm", "berthctl has no `run` yet")

        def ctr_run(daemon, opts, prefix):
            def go(i):
                cid = new_id(prefix)
                daemon.ids.add(cid)
                return timed(daemon.ctr("run", "--rm", *opts, IMAGE, cid, "/bin/true"), 60)
            return go

        kinds.append(("ctr→berthd", ctr_run(b, b.run_opts(), "rb")))
        kinds.append(("ctr→containerd+runc", ctr_run(c, c.run_opts("runc"), "rr")))
        if self.crun_na is None:
            kinds.append(("ctr→containerd+crun", ctr_run(c, c.run_opts("crun"), "rc")))
        else:
            m.fail("ctr→containerd+crun", self.crun_na)
        interleave(m, kinds, cfg.warmup, cfg.runs)

    # -- 2. the OCI runtime alone --

    def m_runtime(self):
        cfg = self.cfg
        m = self.measure("runtime", "s")
        bundle = os.path.join(self.work, "bundle")
        os.makedirs(os.path.join(bundle, "rootfs", "bin"))
        subprocess.run(["cp", "/bin/busybox", os.path.join(bundle, "rootfs/bin/busybox")],
                       check=True)
        for a in ("sh", "true"):
            os.symlink("busybox", os.path.join(bundle, "rootfs/bin", a))
        run(["runc", "spec", "--bundle", bundle])
        path = os.path.join(bundle, "config.json")
        spec = json.load(open(path))
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        json.dump(spec, open(path, "w"), indent=1)
        runtimes = [("berth-runc", os.path.join(self.bin, "berth-runc")), ("runc", "runc")]
        if self.crun_na is None:
            runtimes.append(("crun", "crun"))
        else:
            m.fail("crun", self.crun_na)

        def go(name, binary):
            root = os.path.join(self.work, "rt-" + name)
            os.makedirs(root, exist_ok=True)
            on_exit(f"{name} containers", lambda: [
                subprocess.run([binary, "--root", root, "delete", "--force", cid],
                               stdout=DEVNULL, stderr=DEVNULL)
                for cid in os.listdir(root)] if os.path.isdir(root) else None)

            def once(i):
                return timed([binary, "--root", root, "run", "--bundle", bundle,
                              f"{self.ns}-{new_id('b')}"], 60)
            return (name, once)

        interleave(m, [go(n, b) for n, b in runtimes], cfg.warmup, cfg.runs)

    # -- 3. memory --

    def m_memory(self):
        cfg = self.cfg
        m = self.measure("memory", "KiB")
        time.sleep(1)
        for label, d in (("berthd", self.berthd), ("containerd", self.ctrd)):
            m.add(f"{label} RSS idle", d.rss_kb())
        for label, d, shim in (("berthd", self.berthd, "berth-shim"),
                               ("containerd", self.ctrd, "containerd-shim-runc-v2")):
            try:
                ids = [new_id("m") for _ in range(cfg.mem_many)]
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(d.start_container, ids[:cfg.mem_n]))
                time.sleep(1.5)
                pids = d.shim_pids()
                if len(pids) != cfg.mem_n:
                    raise CmdFailed(["count shims"],
                                    f"expected {cfg.mem_n} {shim}s, found {len(pids)}")
                for pid in pids:
                    m.add(f"{shim} RSS", rss_kb(pid))
                    m.add(f"{shim} RSS anon", rss_kb(pid, "RssAnon"))
                    m.add(f"{shim} PSS", pss_kb(pid))
                m.add(f"{label} RSS, {cfg.mem_n} running", d.rss_kb())
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(d.start_container, ids[cfg.mem_n:]))
                time.sleep(1.5)
                m.add(f"{label} RSS, {cfg.mem_many} running", d.rss_kb())
                for pid in d.shim_pids():
                    m.add(f"{shim} RSS, {cfg.mem_many} running", rss_kb(pid))
            except CmdFailed as e:
                log(f"memory: {label} failed: {e}")
                for key in (f"{shim} RSS", f"{shim} RSS anon", f"{shim} PSS",
                            f"{shim} RSS, {cfg.mem_many} running",
                            f"{label} RSS, {cfg.mem_n} running",
                            f"{label} RSS, {cfg.mem_many} running"):
                    m.fail(key, f"failed: {e.detail[:200]}")
            finally:
                d.remove_all()

    # -- 4. many containers --

    def m_many(self):
        cfg = self.cfg
        m = self.measure("many", "s")
        b, c = self.berthd, self.ctrd
        kinds = [("ctr→berthd", b, lambda cid: b.start_container(cid), b.remove_container),
                 ("ctr→containerd+runc", c, lambda cid: c.start_container(cid),
                  c.remove_container)]
        if self.berthctl_caps["detach"] and self.berthctl_caps["rm"]:
            def bstart(cid):
                b.ids.add(cid)
                run(b.berthctl("run", "-d", "--name", cid, IMAGE, *SLEEP), 60)
            kinds.append(("berthctl", b, bstart,
                          lambda cid: run(b.berthctl("rm", "-f", cid), 60)))
        else:
            for what in ("start one by one", f"start {cfg.parallel} at a time", "stop+rm"):
                m.fail(f"berthctl {what}", "berthctl has no `run -d` / `rm` yet")

        def one_kind(label, start, remove, parallel):
            ids = [new_id("n") for _ in range(cfg.many)]
            t0 = time.perf_counter()
            if parallel:
                with ThreadPoolExecutor(cfg.parallel) as pool:
                    list(pool.map(start, ids))
            else:
                for cid in ids:
                    start(cid)
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            for cid in ids:
                remove(cid)
            t_rm = time.perf_counter() - t0
            how = f"start {cfg.parallel} at a time" if parallel else "start one by one"
            m.add(f"{label} {how}", t_start)
            m.add(f"{label} stop+rm", t_rm)

        failed = set()
        for r in range(cfg.runs_long):
            k = r % len(kinds)
            for label, d, start, remove in kinds[k:] + kinds[:k]:
                if label in failed:
                    continue
                for parallel in (False, True):
                    try:
                        one_kind(label, start, remove, parallel)
                    except CmdFailed as e:
                        log(f"many: {label} failed: {e}")
                        failed.add(label)
                        for what in ("start one by one", f"start {cfg.parallel} at a time",
                                     "stop+rm"):
                            m.fail(f"{label} {what}", f"failed: {e.detail[:200]}")
                        d.remove_all()
                        break

    # -- 5. pull --

    def m_pull(self):
        cfg = self.cfg
        m = self.measure("pull", "s")
        registry = Registry(self.work).start()
        layout = os.path.join(self.work, "layout")
        summary = json.loads(out([os.path.join(self.bin, "examples", "make_big_image"), layout,
                                  cfg.layers, cfg.size_mb << 20], 600))
        self.image_info = summary
        ref = f"{registry.host}/bench/big:latest"
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:latest",
             f"docker://{ref}"], 600)
        subprocess.run(["rm", "-rf", layout])
        n = 0

        def fresh(kind):
            nonlocal n
            n += 1
            d = (Berthd(self.work, self.ns, self.bin, f"pull-{n}") if kind == "berthd"
                 else Containerd(self.work, self.ns, f"pull-{n}"))
            d.start()
            run(["sync"])
            return d

        def dispose(d):
            d.stop()
            subprocess.run(["rm", "-rf", "--one-file-system", d.dir])

        def full(kind, cmd):
            def go(i):
                d = fresh(kind)
                try:
                    return timed(cmd(d), 600)
                finally:
                    dispose(d)
            return go

        def split(kind, unpack_cmd, label):
            # Fetch only (ctr's client-side fetch into the daemon's content store), then the
            # pull again: every blob is present, so what is left is resolve + unpack.
            def go(i):
                d = fresh(kind)
                try:
                    t_fetch = timed(d.ctr("content", "fetch", "--plain-http", ref), 600)
                    blobs = out(d.ctr("content", "ls", "-q"), 30).split()
                    if len(blobs) < cfg.layers + 2:
                        raise CmdFailed(["content ls"], f"only {len(blobs)} blobs kept after fetch")
                    t_unpack = timed(unpack_cmd(d), 600)
                finally:
                    dispose(d)
                m.add(f"fetch only: ctr content fetch→{kind}", t_fetch)
                return t_unpack
            return (label, go)

        kinds = [
            ("berthctl pull", full("berthd", lambda d: d.berthctl("pull", "-q", ref))),
            ("ctr pull→berthd", full("berthd", lambda d: d.ctr("images", "pull", "--plain-http",
                                                               ref))),
            ("ctr pull→containerd", full("containerd", lambda d: d.ctr(
                "images", "pull", "--plain-http", ref))),
            split("berthd", lambda d: d.berthctl("pull", "-q", ref),
                  "unpack only: berthctl pull after fetch"),
            split("containerd", lambda d: d.ctr("images", "pull", "--plain-http", ref),
                  "unpack only: ctr pull→containerd after fetch"),
        ]
        interleave(m, kinds, 0, cfg.runs_pull)
        for kind, label in (("berthd", "unpack only: berthctl pull after fetch"),
                            ("containerd", "unpack only: ctr pull→containerd after fetch")):
            if label in m.na:
                m.fail(f"fetch only: ctr content fetch→{kind}", m.na[label])

    # -- 6. snapshots --

    def m_snapshot(self):
        cfg = self.cfg
        m = self.measure("snapshot", "s")
        b, c = self.berthd, self.ctrd

        def parent(d):
            # The busybox image has one layer: its chain is the one committed snapshot.
            rows = out(d.ctr("snapshots", "ls"), 30).splitlines()[1:]
            committed = [r.split()[0] for r in rows if r.split()[-1:] == ["Committed"]]
            if len(committed) != 1:
                raise CmdFailed(["snapshots ls"], f"expected one committed snapshot: {rows}")
            return committed[0]

        def with_ctr(d):
            p = parent(d)
            target = os.path.join(self.work, "mnt")

            def go(i):
                key = new_id("snap")
                t0 = time.perf_counter()
                run(d.ctr("snapshots", "prepare", key, p))
                run(d.ctr("snapshots", "mounts", target, key))
                dt = time.perf_counter() - t0
                run(d.ctr("snapshots", "rm", key))
                return dt
            return go

        def with_berthctl(d):
            p = parent(d)
            target = os.path.join(self.work, "mnt")

            def go(i):
                key = new_id("snap")
                t0 = time.perf_counter()
                run(d.berthctl("snapshot", "prepare", key, p))
                run(d.berthctl("snapshot", "mounts", target, key))
                dt = time.perf_counter() - t0
                run(d.berthctl("snapshot", "rm", key))
                return dt
            return go

        kinds = []
        for label, make in (("berthctl→berthd", lambda: with_berthctl(b)),
                            ("ctr→berthd", lambda: with_ctr(b)),
                            ("ctr→containerd", lambda: with_ctr(c))):
            try:
                kinds.append((label, make()))
            except CmdFailed as e:
                m.fail(label, f"failed: {e.detail[:200]}")
        interleave(m, kinds, cfg.warmup, cfg.runs)

    # -- driver --

    def run_all(self):
        self.setup()
        order = [k for k in ("run", "runtime", "memory", "many", "pull", "snapshot")
                 if k in self.cfg.measures]
        needs_crun = [k for k in order if k in ("run", "runtime")]
        if needs_crun:
            self.crun_na = self.hugetlb.acquire(self.cfg.hugetlb_dance)
        for key in order:
            settle_disk()
            self.loads.append((key, loadavg()))
            log(f"measure {key} (load {self.loads[-1][1]:.2f})")
            t0 = time.monotonic()
            getattr(self, "m_" + key)()
            log(f"measure {key} done in {time.monotonic() - t0:.0f}s")
            if needs_crun and key == needs_crun[-1]:
                self.hugetlb.release()
        self.loads.append(("end", loadavg()))


# --- the table -------------------------------------------------------------------------------

# (measure, row title, Berth series, anchor series, target: (anchor, factor) | ("abs", KiB) | None)
def rows(cfg):
    par = f"start {cfg.parallel} at a time"
    return [
        ("run", "run --rm /bin/true: berthctl", "berthctl run --rm",
         ["ctr→containerd+runc", "ctr→containerd+crun"], ("ctr→containerd+runc", 0.25)),
        ("run", "run --rm /bin/true: ctr→berthd", "ctr→berthd",
         ["ctr→containerd+runc", "ctr→containerd+crun"], ("ctr→containerd+runc", 0.5)),
        ("runtime", "OCI runtime `run` of a bundle", "berth-runc", ["runc", "crun"],
         ("crun", 1.0)),
        ("memory", f"shim RSS ({cfg.mem_n} running)", "berth-shim RSS",
         ["containerd-shim-runc-v2 RSS"], ("abs", 2048)),
        ("memory", f"shim PSS ({cfg.mem_n} running)", "berth-shim PSS",
         ["containerd-shim-runc-v2 PSS"], None),
        ("memory", f"shim RSS anon ({cfg.mem_n} running)", "berth-shim RSS anon",
         ["containerd-shim-runc-v2 RSS anon"], None),
        ("memory", f"shim RSS ({cfg.mem_many} running)", f"berth-shim RSS, {cfg.mem_many} running",
         [f"containerd-shim-runc-v2 RSS, {cfg.mem_many} running"], ("abs", 2048)),
        ("memory", "daemon RSS idle", "berthd RSS idle", ["containerd RSS idle"], None),
        ("memory", f"daemon RSS ({cfg.mem_many} running)", f"berthd RSS, {cfg.mem_many} running",
         [f"containerd RSS, {cfg.mem_many} running"], None),
        ("many", f"{cfg.many} × run -d sleep, one by one: ctr", "ctr→berthd start one by one",
         ["ctr→containerd+runc start one by one"],
         ("ctr→containerd+runc start one by one", 0.3)),
        ("many", f"{cfg.many} × run -d sleep, {cfg.parallel} at a time: ctr", f"ctr→berthd {par}",
         [f"ctr→containerd+runc {par}"], (f"ctr→containerd+runc {par}", 0.3)),
        ("many", f"{cfg.many} × stop+rm: ctr", "ctr→berthd stop+rm",
         ["ctr→containerd+runc stop+rm"], None),
        ("many", f"{cfg.many} × run -d sleep, one by one: berthctl", "berthctl start one by one",
         ["ctr→containerd+runc start one by one"],
         ("ctr→containerd+runc start one by one", 0.3)),
        ("many", f"{cfg.many} × run -d sleep, {cfg.parallel} at a time: berthctl",
         f"berthctl {par}", [f"ctr→containerd+runc {par}"], (f"ctr→containerd+runc {par}", 0.3)),
        ("many", f"{cfg.many} × stop+rm: berthctl", "berthctl stop+rm",
         ["ctr→containerd+runc stop+rm"], None),
        ("pull", "pull + unpack: berthctl", "berthctl pull", ["ctr pull→containerd"],
         ("ctr pull→containerd", 0.5)),
        ("pull", "pull + unpack: ctr→berthd", "ctr pull→berthd", ["ctr pull→containerd"], None),
        ("pull", "fetch only (ctr content fetch)", "fetch only: ctr content fetch→berthd",
         ["fetch only: ctr content fetch→containerd"], None),
        ("pull", "unpack only (pull after fetch)", "unpack only: berthctl pull after fetch",
         ["unpack only: ctr pull→containerd after fetch"], None),
        ("snapshot", "snapshot prepare + mounts: berthctl", "berthctl→berthd",
         ["ctr→containerd"], None),
        ("snapshot", "snapshot prepare + mounts: ctr", "ctr→berthd", ["ctr→containerd"], None),
    ]


SHORT = {"berthctl run --rm": "berthctl", "ctr→containerd+runc": "runc",
         "ctr→containerd+crun": "crun", "containerd-shim-runc-v2 RSS": "runc-v2",
         "containerd-shim-runc-v2 PSS": "runc-v2", "containerd-shim-runc-v2 RSS anon": "runc-v2",
         "containerd RSS idle": "containerd", "ctr pull→containerd": "containerd",
         "ctr→containerd": "containerd"}


def short(label):
    if label in SHORT:
        return SHORT[label]
    if "containerd-shim" in label:
        return "runc-v2"
    if "containerd" in label:
        return "containerd" + ("+runc" if "runc" in label else "")
    return label


def fmt(m, value, mb_bytes=None):
    if m.unit == "KiB":
        return f"{value / 1024:.2f} MB"
    text = f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if mb_bytes:
        text += f" ({mb_bytes / 1e6 / value:.0f} MB/s)"
    return text


def table(suite):
    cfg = suite.cfg
    lines = ["| measure | Berth median | anchor medians | Berth / anchor | target | verdict |",
             "|---|---|---|---|---|---|"]
    for key, title, berth, anchors, target in rows(cfg):
        m = suite.measures.get(key)
        if m is None:
            continue
        size = suite.image_info["compressed_bytes"] if key == "pull" and not title.startswith(
            "unpack") else None
        bm = m.median(berth)
        bcell = fmt(m, bm, size) if bm is not None else f"n/a ({m.na.get(berth, 'not measured')})"
        acells, ratios = [], []
        for a in anchors:
            am = m.median(a)
            if am is None:
                acells.append(f"{short(a)}: n/a ({m.na.get(a, 'not measured')})")
                continue
            acells.append(f"{short(a)} {fmt(m, am, size)}")
            if bm is not None:
                ratios.append(f"{bm / am:.2f}× {short(a)}")
        verdict, tcell = "—", "—"
        if target is not None:
            if target[0] == "abs":
                tcell = f"≤ {target[1] / 1024:.0f} MB"
                if bm is not None:
                    verdict = "met" if bm <= target[1] else "MISSED"
            else:
                tcell = f"≤ {target[1]}× {short(target[0])}"
                am = m.median(target[0])
                if bm is not None and am is not None:
                    verdict = "met" if bm / am <= target[1] else "MISSED"
        lines.append(f"| {title} | {bcell} | {'; '.join(acells)} | {', '.join(ratios) or '—'} "
                     f"| {tcell} | {verdict} |")
    return "\n".join(lines)


def versions(bindir):
    def first_line(cmd):
        try:
            return out(cmd, 10).splitlines()[0].strip()
        except (CmdFailed, OSError, IndexError):
            return "unknown"
    return {
        "containerd": first_line(["containerd", "--version"]),
        "runc": first_line(["runc", "--version"]),
        "crun": first_line(["crun", "--version"]),
        "berth_commit": first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        "kernel": os.uname().release,
        # With BUILD=0 the binaries may predate HEAD: when they were built says which code ran.
        "berthd_built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
            os.path.getmtime(os.path.join(bindir, "berthd")))),
    }


def pids_where(wanted):
    """The processes whose command line (a list of byte strings) `wanted` accepts."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if args and wanted(args):
            pids.append(int(entry))
    return pids


def work_filesystem(path):
    """What the daemons' roots and state sit on: both sides create and remove thousands of
    files, and the file system's cost per inode moves every figure (docs/performance.md)."""
    best = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields, after = pre.split(" "), post.split(" ")
                point = fields[4].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best[0])):
                    best = (point, after[0], after[1], after[2].strip())
    except OSError:
        return "unknown"
    if best is None:
        return "unknown"
    point, fstype, source, opts = best
    notes = [o for o in opts.split(",") if o in ("discard", "nobarrier", "data=writeback")]
    if fstype == "ext4":
        # A journal shows as /proc/fs/jbd2/<device>-<journal inode>.
        dev = os.path.basename(os.path.realpath(source))
        journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
        if not any(n.startswith(dev + "-") for n in journals):
            notes.append("no journal")
    return f"{path} on {fstype} at {point}" + (f" ({', '.join(notes)})" if notes else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the release target directory")
    args = parser.parse_args()
    cfg = Config()

    def bail(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bail)
    suite = Suite(cfg, args.bin)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        suite.run_all()
    finally:
        log("stopping and removing everything the suite started")
        run_cleanups()
    results = os.path.join(REPO, "bench", "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, f"suite-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    loads = [load for _, load in suite.loads]
    report = {
        "date": started,
        "host": os.uname().nodename,
        "work_filesystem": work_filesystem(cfg.tmp),
        "versions": versions(args.bin),
        "config": cfg.as_dict(),
        "berthctl": suite.berthctl_caps,
        "load_1min": dict(suite.loads),
        "big_image": getattr(suite, "image_info", None),
        "units": "seconds for times, KiB for memory",
        "measures": {k: m.as_dict() for k, m in suite.measures.items()},
        "table": table(suite),
    }
    with open(path, "w") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    v = report["versions"]
    print(f"\nBerth {v['berth_commit']} vs {v['containerd']}, {v['runc'].split(' version ')[-1]} "
          f"(runc), {v['crun']}; {started}; load (1 min) {min(loads):.2f}–{max(loads):.2f}; "
          f"{cfg.runs} runs after {cfg.warmup} warm-up for run/runtime/snapshot, "
          f"{cfg.runs_long} for {cfg.many} containers, {cfg.runs_pull} pulls; "
          f"work directory {report['work_filesystem']}"
          + (" [QUICK]" if cfg.quick else "") + "\n")
    print(table(suite))
    print(f"\nraw runs: {path}")


if __name__ == "__main__":
    main()
