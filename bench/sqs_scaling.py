"""Fleet-mode scaling: throughput of s3_upload.py's SQS workers with 1, 2 and 4 local worker processes.

Usage (from the repository root):

    .venv/bin/python bench/sqs_scaling.py [--rounds 2] [--files 24] [--file-mib 32] [--out bench/results/sqs_scaling.md]

It starts one SeaweedFS (fresh data directory) and one moto server for SQS (`moto_server`, its own process, so it
does not share this process's GIL) on 127.0.0.1, writes AWS profiles into a temporary directory and generates one job:
24 files of 32 MiB (768 MiB), LOCAL_TO_S3, ChunkSize 8 MiB, MaxThread 4, MaxParallelFile 1 per worker.  For each
worker count, alternating the order between rounds (1 2 4, 4 2 1, ...) after one uncounted warm-up run, every run
gets a fresh bucket and a fresh queue, then:

  1. the sender queues one message per file (`s3_upload.py --config CFG --sqs-send URL`, not timed);
  2. N workers start together (`--sqs-worker URL`, SQSIdleSeconds 2, SQSVisibilityTimeout 60, each with its own
     LogDir), forked with posix_spawn and reaped with os.wait4 for their CPU time (user+sys);
  3. wall time = from the start of the workers until list_objects_v2 shows every key with its size (polled every
     0.1 s); the workers' idle exit afterwards is not counted, and nothing else is subtracted;
  4. checks: all keys with the right sizes and nothing else, the queue empty (visible, in flight and delayed), no
     unfinished multipart uploads, every worker's exit code 0, and the files the workers report done add up to the
     number queued (more would be duplicate deliveries).

The report (median wall time, aggregate MiB/s, speed-up against 1 worker, the workers' CPU, plus SeaweedFS's CPU and
what every other process on the machine used meanwhile) goes to stdout and to --out.  SeaweedFS, moto and the
temporary directory are removed at the end, also on an error or Ctrl-C.

On one 2-core machine the server, the queue and all the workers share the same two cores (SeaweedFS alone needs ~1.6
cores per GiB/s here): this shows the fleet mechanics (messages spread over workers, no duplicates, no leftovers) and
the per-machine ceiling, not what N workers on N separate machines would do.  stdlib + boto3 only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from run_bench import (  # bench/ is sys.path[0]; run_bench puts tests/ on the path for seaweed
    ROOT,
    git_state,
    machine_busy_seconds,
    make_file,
    process_cpu_seconds,
    run_and_report,
    say,
    scratch_bucket,
    version_of,
    write_config,
)

from seaweed import SeaweedServer, find_weed, identity, stop_process

MiB = 1024 * 1024
REGION = "us-east-1"
KEYS = ("fleetAccessKey", "fleetSecretKey")
PREFIX = "fleet/"
CHUNK = 8 * MiB
THREADS = 4
WORKER_COUNTS = (1, 2, 4)
IDLE_SECONDS = 2
VISIBILITY = 60
POLL = 0.1  # seconds between listings while the workers run
RUN_TIMEOUT = 900  # seconds a run may take before its workers are killed
DONE_LINE = re.compile(r"worker: (\d+) file\(s\) done, (\d+) failed")


@dataclasses.dataclass
class Run:
    workers: int
    label: str = ""
    wall: float = 0.0  # worker start -> last object complete
    exit_wall: float = 0.0  # worker start -> last worker exited
    worker_cpu: float = 0.0
    seaweed_cpu: float = 0.0
    moto_cpu: float = 0.0
    others_share: float = 0.0  # share of all cores other processes used meanwhile
    done: list[int] = dataclasses.field(default_factory=list)  # files each worker reports done
    codes: list[int] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)  # warnings and errors from the workers' output
    errors: list[str] = dataclasses.field(default_factory=list)  # failed checks


# ---------------------------------------------------------------------------------------------------------------------
# Servers: SeaweedFS for S3, moto for SQS
# ---------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """`moto_server -H 127.0.0.1 -p PORT` in its own process (SQS only is used)."""

    def __init__(self, log: Path):
        self.log, self.proc, self.url = log, None, ""

    def start(self, timeout: float = 30) -> MotoServer:
        exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if not exe:
            raise RuntimeError("moto_server not found: pip install 'moto[server]'")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        self._wait_ready(time.monotonic() + timeout)
        return self

    def _wait_ready(self, deadline: float) -> None:
        probe = self.client(Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({self.proc.returncode}), see {self.log}")
            try:
                probe.list_queues()
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.1)
        raise RuntimeError("moto_server not ready")

    def client(self, config: Config | None = None):
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION)
        return session.client("sqs", endpoint_url=self.url, config=config)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)


class Fleet:
    """The servers, the AWS profiles, a copy of the tool and the job's data, all under one temporary directory."""

    def __init__(self, workdir: Path, files: int, file_size: int):
        self.workdir, self.files, self.file_size = workdir, files, file_size
        self.seaweed = SeaweedServer(workdir / "seaweed", [identity("fleet", *KEYS)])
        self.moto = MotoServer(workdir / "moto.log")
        self.data = workdir / "data"
        self.runs = workdir / "runs"
        self.script = workdir / "s3_upload.py"  # a copy: edits to the tree during the run do not leak in

    def start(self) -> Fleet:
        self.seaweed.start()
        self.moto.start()
        self.s3 = self.seaweed.client(*KEYS)
        self.sqs = self.moto.client()
        self.env = self._write_profiles()
        shutil.copy2(ROOT / "s3_upload.py", self.script)
        self.runs.mkdir()
        for i in range(self.files):
            make_file(self.data / f"f{i:03d}.bin", self.file_size)
        return self

    def stop(self) -> None:
        self.moto.stop()
        self.seaweed.stop()

    @property
    def expected(self) -> dict[str, int]:
        return {f"{PREFIX}f{i:03d}.bin": self.file_size for i in range(self.files)}

    def _write_profiles(self) -> dict[str, str]:
        """Profile "dst" (S3 on SeaweedFS) and "queue" (SQS; its endpoint comes from SQSEndpointURL)."""
        aws = self.workdir / "aws"
        aws.mkdir()
        (aws / "credentials").write_text(
            f"[dst]\naws_access_key_id = {KEYS[0]}\naws_secret_access_key = {KEYS[1]}\n\n"
            "[queue]\naws_access_key_id = fleetQueueKey\naws_secret_access_key = fleetQueueSecret\n"
        )
        (aws / "config").write_text(
            f"[profile dst]\nregion = {REGION}\nendpoint_url = {self.seaweed.endpoint_url}\n\n"
            f"[profile queue]\nregion = {REGION}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no outside credentials or CAs
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"), AWS_CONFIG_FILE=str(aws / "config"),
                   AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
        return env

    def write_config(self, path: Path, bucket: str, log_dir: Path) -> Path:
        write_config(path, {
            "JobType": "LOCAL_TO_S3", "SrcDir": str(self.data), "SrcFileIndex": "*", "S3Prefix": PREFIX,
            "DesProfileName": "dst", "DesBucket": bucket, "ChunkSize": CHUNK, "MaxThread": THREADS,
            "MaxParallelFile": 1, "MaxRetry": 3, "DontAskMeToClean": True, "LoggingLevel": "INFO",
            "LogDir": str(log_dir), "SQSProfileName": "queue", "SQSEndpointURL": self.moto.url,
            "SQSIdleSeconds": IDLE_SECONDS, "SQSVisibilityTimeout": VISIBILITY,
        })  # fmt: skip
        return path

    def command(self, config: Path, role: str, queue_url: str) -> list[str]:
        return [sys.executable, str(self.script), "--config", str(config), role, queue_url]


# ---------------------------------------------------------------------------------------------------------------------
# One run: fresh bucket and queue, send, N workers, checks
# ---------------------------------------------------------------------------------------------------------------------


def spawn(argv: list[str], env: dict[str, str], out: Path) -> int:
    """Start argv with stdout+stderr to out; the caller reaps it with os.wait4 (for its rusage)."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions)


def reap(pending: dict[int, int], codes: dict[int, int], cpu: list[float]) -> None:
    """Collect the workers (worker number by pid) that have exited: exit code and user+sys seconds."""
    for pid, number in list(pending.items()):
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            codes[number] = os.waitstatus_to_exitcode(status)
            cpu.append(ru.ru_utime + ru.ru_stime)
            del pending[pid]


def kill_all(pending: dict[int, int], grace: float = 10) -> None:
    """SIGTERM (the tool stops like Ctrl-C; S3 keeps what is done), SIGKILL after grace seconds, reap."""
    for pid in pending:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        pending = {pid: n for pid, n in pending.items() if not os.waitpid(pid, os.WNOHANG)[0]}
        time.sleep(0.05)
    for pid in pending:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def destination_sizes(s3, bucket: str) -> dict[str, int]:
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        sizes.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return sizes


def send(fleet: Fleet, run_dir: Path, bucket: str, queue_url: str) -> str:
    """The sender, run to its end; '' or what went wrong."""
    config = fleet.write_config(run_dir / "sender.py", bucket, run_dir / "sender-log")
    with open(run_dir / "sender.out", "wb") as out:
        proc = subprocess.run(fleet.command(config, "--sqs-send", queue_url), env=fleet.env, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False)  # fmt: skip
    if proc.returncode:
        return f"sender exit code {proc.returncode}: {tail(run_dir / 'sender.out')}"
    queued = queue_counts(fleet.sqs, queue_url)["ApproximateNumberOfMessages"]
    return "" if queued == fleet.files else f"sender queued {queued} messages, expected {fleet.files}"


def run_workers(fleet: Fleet, run: Run, run_dir: Path, bucket: str, queue_url: str) -> None:
    """Start N workers, time them until the last object is complete, reap them all."""
    argvs = []
    for n in range(run.workers):
        config = fleet.write_config(run_dir / f"worker{n}.py", bucket, run_dir / f"worker{n}-log")
        argvs.append(fleet.command(config, "--sqs-worker", queue_url))
    pending: dict[int, int] = {}
    codes: dict[int, int] = {}
    cpu: list[float] = []
    before = usage_snapshot(fleet)
    start = time.monotonic()
    try:
        for n, argv in enumerate(argvs):
            pending[spawn(argv, fleet.env, run_dir / f"worker{n}.out")] = n
        run.wall = wait_complete(fleet, bucket, start, pending, codes, cpu)
        while pending and time.monotonic() - start < RUN_TIMEOUT:
            time.sleep(0.05)
            reap(pending, codes, cpu)
        if pending:
            run.errors.append(f"{len(pending)} worker(s) still running after {RUN_TIMEOUT} s: killed")
    finally:
        kill_all(pending)
        pending.clear()
    run.exit_wall = time.monotonic() - start
    run.codes = [codes.get(n, -1) for n in range(run.workers)]
    run.worker_cpu = sum(cpu)
    account_cpu(fleet, run, before)


def wait_complete(fleet: Fleet, bucket: str, start: float, pending, codes, cpu) -> float:
    """Seconds from start until every key is listed with its size; 0 if the workers all exited (or time ran out)
    before that."""
    expected = fleet.expected
    while time.monotonic() - start < RUN_TIMEOUT:
        sizes = destination_sizes(fleet.s3, bucket)
        now = time.monotonic()
        if all(sizes.get(k) == size for k, size in expected.items()):
            return now - start
        reap(pending, codes, cpu)
        if not pending:
            return 0.0
        time.sleep(max(0.0, POLL - (time.monotonic() - now)))
    return 0.0


def usage_snapshot(fleet: Fleet) -> tuple[float, float, float, float]:
    """CPU seconds so far: SeaweedFS, moto, this process, the whole machine."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return (process_cpu_seconds(fleet.seaweed.proc.pid), process_cpu_seconds(fleet.moto.proc.pid),
            me.ru_utime + me.ru_stime, machine_busy_seconds())  # fmt: skip


def account_cpu(fleet: Fleet, run: Run, before: tuple[float, float, float, float]) -> None:
    seaweed, moto, me, busy = (a - b for a, b in zip(usage_snapshot(fleet), before))
    run.seaweed_cpu, run.moto_cpu = seaweed, moto
    others = max(0.0, busy - seaweed - moto - me - run.worker_cpu)
    run.others_share = others / (run.exit_wall * len(os.sched_getaffinity(0)))


def queue_counts(sqs, queue_url: str) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]  # fmt: skip
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return {name: int(attributes.get(name, 0)) for name in names}


def check(fleet: Fleet, run: Run, run_dir: Path, bucket: str, queue_url: str) -> None:
    """Destination, queue, unfinished uploads, exit codes, and what each worker says it did."""
    sizes, expected = destination_sizes(fleet.s3, bucket), fleet.expected
    if sizes != expected:
        missing, extra = len(expected.keys() - sizes.keys()), len(sizes.keys() - expected.keys())
        wrong = sum(1 for k in expected.keys() & sizes.keys() if sizes[k] != expected[k])
        run.errors.append(f"destination: {missing} missing, {extra} unexpected, {wrong} of wrong size")
    if not run.wall:
        run.errors.append("the objects never all appeared while the workers ran")
    left = {name: count for name, count in queue_counts(fleet.sqs, queue_url).items() if count}
    if left:
        run.errors.append(f"queue not empty: {left}")
    uploads = fleet.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if uploads:
        run.errors.append(f"{len(uploads)} unfinished multipart upload(s): {sorted({u['Key'] for u in uploads})}")
    if any(run.codes):
        run.errors.append(f"worker exit codes {run.codes}")
    for n in range(run.workers):
        read_worker_output(run, n, run_dir / f"worker{n}.out")
    if sum(run.done) != fleet.files:
        run.errors.append(f"workers report {sum(run.done)} file(s) done for {fleet.files} queued (duplicates?)")


def read_worker_output(run: Run, n: int, out: Path) -> None:
    text = out.read_text(errors="replace") if out.exists() else ""
    found = DONE_LINE.findall(text)
    run.done.append(int(found[-1][0]) if found else 0)
    if not found:
        run.errors.append(f"worker {n}: no summary line: {tail(out)}")
    elif int(found[-1][1]):
        run.errors.append(f"worker {n}: {found[-1][1]} file(s) failed")
    for line in text.splitlines():
        if " WARNING " in line or " ERROR " in line or "already complete" in line or "Traceback" in line:
            run.notes.append(f"worker {n}: {line.strip()[:200]}")


def tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def scratch_queue(sqs) -> Iterator[str]:
    """A new queue, deleted afterwards (not on Ctrl-C: the servers go away with their state, as in scratch_bucket)."""
    name = f"fleet-{time.time_ns():x}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(VISIBILITY)})["QueueUrl"]
    try:
        yield url
    except KeyboardInterrupt:
        raise
    except BaseException:
        sqs.delete_queue(QueueUrl=url)
        raise
    sqs.delete_queue(QueueUrl=url)


def run_once(fleet: Fleet, workers: int, label: str) -> Run:
    run = Run(workers, label)
    run_dir = fleet.runs / f"{label.replace(' ', '')}-{workers}w"
    run_dir.mkdir()
    with scratch_bucket(fleet.s3, f"fleet-{time.time_ns():x}") as bucket, scratch_queue(fleet.sqs) as queue_url:
        fleet.s3.put_object(Bucket=bucket, Key="warmup", Body=b"")  # a new bucket's first write grows its volumes
        error = send(fleet, run_dir, bucket, queue_url)
        if error:
            run.errors.append(error)
        else:
            run_workers(fleet, run, run_dir, bucket, queue_url)
            check(fleet, run, run_dir, bucket, queue_url)
    status = "ok" if not run.errors else "FAILED: " + "; ".join(run.errors)
    say(f"  {label}, {workers} worker(s): {run.wall:.2f} s to complete, all exited at {run.exit_wall:.2f} s, "
        f"files per worker {run.done}, worker CPU {run.worker_cpu:.1f} s: {status}")  # fmt: skip
    return run


def schedule(rounds: int) -> list[tuple[str, int]]:
    """An uncounted warm-up, then the worker counts in alternating order: 1 2 4, 4 2 1, 1 2 4, ..."""
    order = [("warm-up", max(WORKER_COUNTS))]
    for r in range(rounds):
        counts = WORKER_COUNTS if r % 2 == 0 else tuple(reversed(WORKER_COUNTS))
        order += [(f"round {r + 1}", n) for n in counts]
    return order


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def summary_table(runs: list[Run], total_mib: float) -> list[str]:
    header = ["workers", "rounds", "wall s (each round)", "median wall s", "MiB/s", "speed-up vs 1 worker",
              "worker CPU s", "SeaweedFS CPU s", "others' CPU %"]  # fmt: skip
    lines = [md_row(header), md_row(["---:"] * len(header))]
    base = None
    for workers in WORKER_COUNTS:
        good = [r for r in runs if r.workers == workers and not r.errors]
        if not good:
            lines.append(md_row([str(workers), "0 ok"] + ["FAILED"] + [""] * (len(header) - 3)))
            continue
        wall = statistics.median(r.wall for r in good)
        base = base or (wall if workers == 1 else None)
        lines.append(md_row([
            str(workers), str(len(good)), ", ".join(f"{r.wall:.2f}" for r in good), f"{wall:.2f}",
            f"{total_mib / wall:.0f}", f"{base / wall:.2f}x" if base else "n/a",
            f"{statistics.median(r.worker_cpu for r in good):.1f}",
            f"{statistics.median(r.seaweed_cpu for r in good):.1f}",
            f"{100 * statistics.median(r.others_share for r in good):.0f}",
        ]))  # fmt: skip
    return lines


def runs_table(runs: list[Run]) -> list[str]:
    header = ["run", "workers", "wall s", "all exited s", "files per worker", "worker exit codes", "moto CPU s",
              "result"]  # fmt: skip
    lines = [md_row(header), md_row(["---"] * len(header))]
    for r in runs:
        result = "ok" if not r.errors else "FAILED: " + "; ".join(r.errors)
        lines.append(md_row([r.label, str(r.workers), f"{r.wall:.2f}", f"{r.exit_wall:.2f}",
                             "+".join(map(str, r.done)) or "-", ",".join(map(str, r.codes)) or "-",
                             f"{r.moto_cpu:.1f}", result]))  # fmt: skip
    return lines


def machine_lines() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))  # fmt: skip
    versions = {name: importlib.metadata.version(name) for name in ("botocore", "moto")}
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, {mem_kib // 1024 // 1024} GiB RAM, "
        f"Linux {platform.release()}",
        f"- python {platform.python_version()}, botocore {versions['botocore']}, moto {versions['moto']}, "
        f"SeaweedFS {version_of([find_weed(), 'version'])}; s3_upload.py: {git_state(ROOT / 's3_upload.py')}",
    ]


def render(fleet: Fleet, runs: list[Run], rounds: int, load: tuple[float, float]) -> str:
    total_mib = fleet.files * fleet.file_size / MiB
    counted = [r for r in runs if r.label != "warm-up"]
    notes = [n for r in runs for n in r.notes]
    lines = ["# s3_upload fleet mode (SQS): 1, 2 and 4 workers on one machine", ""]
    lines += machine_lines()
    lines += [
        f"- load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f}",
        f"- job: {fleet.files} files of {fleet.file_size // MiB} MiB ({total_mib:.0f} MiB), LOCAL_TO_S3, ChunkSize "
        f"{CHUNK // MiB} MiB, MaxThread {THREADS}, MaxParallelFile 1 per worker; SQSIdleSeconds {IDLE_SECONDS}, "
        f"SQSVisibilityTimeout {VISIBILITY}",
        f"- servers: one SeaweedFS `weed mini` (S3) and one `moto_server` (SQS) on 127.0.0.1 over http; {rounds} "
        "round(s), worker counts alternating in order, after one uncounted warm-up run with "
        f"{max(WORKER_COUNTS)} workers; each run: fresh bucket and queue, the sender (not timed), then the workers",
        "",
        "Wall s = from the start of the workers until list_objects_v2 (polled every 0.1 s) shows every object with "
        "its size. MiB/s = job size / median wall. Worker CPU s = user+sys of all workers (os.wait4), median. "
        "Others' CPU % = share of all cores used by processes other than the workers, SeaweedFS, moto and this "
        "bench (high means disturbed wall times). On this one machine the server, the queue and the workers share "
        "the same cores, so this shows the fleet mechanics and the per-machine ceiling, not N separate machines.",
        "",
        *summary_table(counted, total_mib),
        "",
        "## Runs",
        "",
        "Checked after every run: every key with its size and nothing else, the queue empty (visible, in flight, "
        "delayed), no unfinished multipart uploads, every worker's exit code 0, files reported done = files queued.",
        "",
        *runs_table(runs),
        "",
        "## Warnings and errors in the workers' output",
        "",
        *([f"- {n}" for n in notes] or ["none"]),
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per worker count (default 2)")
    parser.add_argument("--files", type=int, default=24, help="files in the job (default 24)")
    parser.add_argument("--file-mib", type=int, default=32, help="size of each file in MiB (default 32)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sqs_scaling.md",
                        help="markdown report (default bench/results/sqs_scaling.md)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.files < 1 or args.file_mib < 1:
        parser.error("--rounds, --files and --file-mib must be at least 1")
    return args


def interrupt(signum, frame):  # SIGTERM: clean up as for Ctrl-C
    raise KeyboardInterrupt


def run_all(args: argparse.Namespace, workdir: Path) -> str:
    fleet = Fleet(workdir, args.files, args.file_mib * MiB)
    try:
        say(f"starting SeaweedFS and moto, generating {args.files} x {args.file_mib} MiB in {workdir}")
        fleet.start()
        load_start = os.getloadavg()[0]
        runs = [run_once(fleet, workers, label) for label, workers in schedule(args.rounds)]
        return render(fleet, runs, args.rounds, (load_start, os.getloadavg()[0]))
    finally:
        say("stopping servers")
        fleet.stop()


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), "s3_upload-sqs-scaling-", run_all)


if __name__ == "__main__":
    sys.exit(main())
