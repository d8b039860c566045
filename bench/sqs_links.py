"""Fleet mode across long links: one big file sent by 1, 2 and 4 workers, each behind its own link; and the
sender's message rate when the queue is far away, against a sequential sender.

Usage (from the repository root):

    .venv/bin/python bench/sqs_links.py [--file-mib 2048] [--rounds 1] [--sender-files 2000] [--sender-rounds 2]
        [--sender-queue stub|moto] [--only big|sender] [--out bench/results/sqs_links.md]

It starts one SeaweedFS (fresh data directory) and one `moto_server` for SQS on 127.0.0.1, writes AWS profiles into
a temporary directory, and runs two parts:

1. One big file, many workers: one file of --file-mib MiB (2 GiB), LOCAL_TO_S3, ChunkSize 8 MiB, MaxThread 4,
   SQSPartsPerMessage 16 (2 GiB: 256 parts, 16 range messages).  Every worker process has its own AWS profile whose
   endpoint_url is its own bench/linkproxy.py in front of the SeaweedFS, as workers on separate machines each have
   their own path: --rtt round trip (0.1 s), --conn-mib per connection (4 MiB/s) and --link-mib for the whole link
   (8 MiB/s), no resets; so the link, not the server or this machine's CPU, is each worker's bound.  The queue is
   reached directly (moto).  For 1, 2 and 4 workers (in alternating order between rounds), each run gets a fresh
   bucket and a fresh queue, then the sender (`--sqs-send`, straight to SeaweedFS, not timed) makes the upload and
   queues the ranges, N workers start together (`--sqs-worker`, SQSIdleSeconds 2), and wall time = from the start of
   the workers until HeadObject (polled every 0.2 s) shows the object with its size.  Checks: the object's ETag is
   the multipart ETag of the file's own bytes (MD5 of each 8 MiB part, computed here when the file is made: so the
   part count and every part's content), the queue empty (visible, in flight, delayed), no unfinished uploads,
   every worker's exit code 0, and the ranges the workers report done add up to the number queued.  Target:
   4 workers in <= 1/3 of one worker's time.

2. The sender's rate: a bench/linkproxy.py in front of the queue adds --sqs-delay (20 ms) to every request (a
   round trip; a new connection pays it once more, for its handshake).  The queue is StubQueue (below: a stand-in
   for SQS in its own process that answers at once and counts the messages and their distinct keys), because moto's
   SQS slows down with every message in it and would be what is measured (--sender-queue moto to see that; keep
   --sender-files at a few hundred there).  A tree of --sender-files files of 1 KiB, LOCAL_TO_S3 into an empty
   bucket (straight to SeaweedFS), is queued by `--sqs-send` as shipped (SENDER_BATCHES = 16 batches of 10 in
   flight) and by the same code with SENDER_BATCHES = 1 (one batch at a time: a sequential sender), alternating, a
   fresh queue each time:

       python -c "import sys; sys.path.insert(0, DIR); import s3_upload; s3_upload.SENDER_BATCHES = 1;
                  s3_upload.cli()" --config CFG --sqs-send URL

   (cli() reads sys.argv[1:], which after -c is the tool's own arguments).  Messages/s = messages / the send window,
   from the proxy's record of every request: the first SendMessageBatch leaving the client until the last answer
   back; also over the process's whole wall time.  Checks: the queue holds one message per file (StubQueue: and as
   many distinct keys), and the proxy saw one SendMessageBatch per 10 files.  Target: the shipped sender >= 5x the
   sequential one's rate.

The report (tables, the load average, the CPU that other processes on the machine used meanwhile) goes to stdout and
to --out.  Servers, proxies and the temporary directory are removed at the end, also on an error or Ctrl-C.
stdlib + boto3 only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.exceptions import ClientError
from linkproxy import LinkProxy
from run_bench import (  # bench/ is sys.path[0]; run_bench puts tests/ on the path for seaweed
    ROOT,
    machine_busy_seconds,
    process_cpu_seconds,
    run_and_report,
    say,
    scratch_bucket,
    write_config,
)
from sqs_scaling import (
    DONE_LINE,
    KEYS,
    REGION,
    MotoServer,
    kill_all,
    machine_lines,
    md_row,
    queue_counts,
    reap,
    scratch_queue,
    spawn,
    tail,
)

from seaweed import SeaweedServer, identity

MiB = 1024 * 1024
PREFIX = "fleet/"
CHUNK = 8 * MiB
THREADS = 4
PARTS_PER_MESSAGE = 16
WORKER_COUNTS = (1, 2, 4)
IDLE_SECONDS = 2
VISIBILITY = 60
POLL = 0.2  # seconds between HeadObjects while the workers run
RUN_TIMEOUT = 1500  # seconds a run may take before its workers are killed
SMALL = 1024  # bytes per file of the sender's tree
SEND_BODY = 1500  # a request body longer than this is a SendMessageBatch (GetQueueAttributes' is ~100 bytes)
SHIPPED, SEQUENTIAL = "shipped (SENDER_BATCHES 16)", "sequential (SENDER_BATCHES 1)"


@dataclasses.dataclass
class BigRun:
    workers: int
    label: str
    messages: int = 0  # ranges queued
    wall: float = 0.0  # workers' start -> the object complete
    exit_wall: float = 0.0  # workers' start -> the last worker exited
    worker_cpu: float = 0.0
    seaweed_cpu: float = 0.0
    proxy_cpu: float = 0.0
    others_share: float = 0.0
    done: list[int] = dataclasses.field(default_factory=list)  # ranges each worker reports done
    mib_up: list[float] = dataclasses.field(default_factory=list)  # MiB each worker's link carried to the server
    codes: list[int] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SendRun:
    kind: str
    label: str
    wall: float = 0.0  # the sender process, start to exit
    cpu: float = 0.0
    window: float = 0.0  # first SendMessageBatch leaving -> last answer back
    sends: int = 0  # SendMessageBatch requests
    latency_ms: float = 0.0  # median request -> answer of a SendMessageBatch, through the proxy
    connections: int = 0  # connections the sender opened to the queue
    max_in_flight: int = 0
    queue_cpu: float = 0.0
    others_share: float = 0.0
    errors: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------------
# The servers, the profiles and the data
# ---------------------------------------------------------------------------------------------------------------------


class World:
    def __init__(self, workdir: Path, args: argparse.Namespace):
        self.workdir, self.args = workdir, args
        self.seaweed = SeaweedServer(workdir / "seaweed", [identity("fleet", *KEYS)])
        self.moto = MotoServer(workdir / "moto.log")
        self.script = workdir / "s3_upload.py"  # a copy: edits to the tree during the run do not leak in
        self.runs = workdir / "runs"
        self.links: list[LinkProxy] = []  # one per worker, in front of SeaweedFS
        self.queue_link: LinkProxy | None = None  # in front of the sender's queue
        self.stub: StubQueue | None = None
        self.etag = ""

    def start(self) -> World:
        self.seaweed.start()
        self.moto.start()
        self.s3 = self.seaweed.client(*KEYS)
        self.sqs = self.moto.client()
        shutil.copy2(ROOT / "s3_upload.py", self.script)
        self.runs.mkdir()
        return self

    def start_links(self) -> None:
        a = self.args
        for _ in range(max(WORKER_COUNTS)):
            self.links.append(LinkProxy(("127.0.0.1", self.seaweed.port), rtt=a.rtt, conn_rate=int(a.conn_mib * MiB),
                                        shared_rate=int(a.link_mib * MiB), reset_rate=0.0).start())  # fmt: skip

    def start_queue_link(self, server_url: str) -> None:
        port = int(server_url.rsplit(":", 1)[1])
        self.queue_link = LinkProxy(("127.0.0.1", port), rtt=self.args.sqs_delay, conn_rate=0, shared_rate=0,
                                    reset_rate=0.0).start()  # fmt: skip

    def stop(self) -> None:
        for link in [*self.links, self.queue_link, self.stub]:
            if link is not None:
                link.stop()
        self.moto.stop()
        self.seaweed.stop()

    def write_profiles(self) -> None:
        """Profiles "dst" (SeaweedFS directly, for the sender), "w0".."w3" (each through its own link), "queue"."""
        aws = self.workdir / "aws"
        aws.mkdir(exist_ok=True)
        names = ["dst", *(f"w{n}" for n in range(len(self.links)))]
        urls = [self.seaweed.endpoint_url, *(link.endpoint_url for link in self.links)]
        creds = [f"[{n}]\naws_access_key_id = {KEYS[0]}\naws_secret_access_key = {KEYS[1]}\n" for n in names]
        config = [f"[profile {n}]\nregion = {REGION}\nendpoint_url = {u}\n" for n, u in zip(names, urls)]
        creds.append("[queue]\naws_access_key_id = fleetQueueKey\naws_secret_access_key = fleetQueueSecret\n")
        (aws / "credentials").write_text("\n".join(creds))
        (aws / "config").write_text("\n".join(config + [f"[profile queue]\nregion = {REGION}\n"]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no outside credentials or CAs
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"), AWS_CONFIG_FILE=str(aws / "config"),
                   AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
        self.env = env

    def config(self, path: Path, src_dir: Path, profile: str, bucket: str, queue_endpoint: str, log_dir: Path) -> Path:
        write_config(path, {
            "JobType": "LOCAL_TO_S3", "SrcDir": str(src_dir), "SrcFileIndex": "*", "S3Prefix": PREFIX,
            "DesProfileName": profile, "DesBucket": bucket, "ChunkSize": CHUNK, "MaxThread": THREADS,
            "MaxParallelFile": 1, "MaxRetry": 3, "DontAskMeToClean": True, "LoggingLevel": "INFO",
            "LogDir": str(log_dir), "SQSProfileName": "queue", "SQSEndpointURL": queue_endpoint,
            "SQSIdleSeconds": IDLE_SECONDS, "SQSVisibilityTimeout": VISIBILITY,
            "SQSPartsPerMessage": self.args.parts_per_message,
        })  # fmt: skip
        return path

    def command(self, config: Path, role: str, queue_url: str) -> list[str]:
        return [sys.executable, str(self.script), "--config", str(config), role, queue_url]


def make_big_file(path: Path, size: int) -> str:
    """Random bytes; the multipart ETag S3 gives them at CHUNK-sized parts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digests = []
    with open(path, "wb") as fh:
        for offset in range(0, size, CHUNK):
            block = os.urandom(min(CHUNK, size - offset))
            digests.append(hashlib.md5(block).digest())
            fh.write(block)
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def make_small_tree(root: Path, count: int) -> None:
    for i in range(count):
        path = root / f"d{i % 20:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(SMALL))


def cpu_snapshot(pids: list[int]) -> tuple[list[float], float, float]:
    """CPU seconds so far of the given processes, of this one, and of the whole machine."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return [process_cpu_seconds(p) for p in pids], me.ru_utime + me.ru_stime, machine_busy_seconds()


def cpu_used(pids: list[int], before: tuple[list[float], float, float]) -> tuple[list[float], float, float]:
    procs, me, busy = cpu_snapshot(pids)
    return [a - b for a, b in zip(procs, before[0])], me - before[1], busy - before[2]


# ---------------------------------------------------------------------------------------------------------------------
# Part 1: one big file, 1, 2 and 4 workers, each behind its own link
# ---------------------------------------------------------------------------------------------------------------------


def big_run(world: World, workers: int, label: str) -> BigRun:
    run = BigRun(workers, label)
    run_dir = world.runs / f"big-{label.replace(' ', '')}-{workers}w"
    run_dir.mkdir()
    key = PREFIX + "big.bin"
    for link in world.links:
        link.clear()
    with scratch_bucket(world.s3, f"big-{time.time_ns():x}") as bucket, scratch_queue(world.sqs) as queue_url:
        world.s3.put_object(Bucket=bucket, Key="warmup", Body=b"")  # a new bucket's first write grows its volumes
        world.s3.delete_object(Bucket=bucket, Key="warmup")
        sender = world.config(run_dir / "sender.py", world.big_dir, "dst", bucket, world.moto.url, run_dir / "s-log")
        _, status, _ = os.wait4(spawn(world.command(sender, "--sqs-send", queue_url), world.env,
                                      run_dir / "sender.out"), 0)  # fmt: skip
        run.messages = queue_counts(world.sqs, queue_url)["ApproximateNumberOfMessages"]
        if os.waitstatus_to_exitcode(status) or run.messages != world.ranges:
            run.errors.append(f"sender: exit code {os.waitstatus_to_exitcode(status)}, {run.messages} message(s) "
                              f"queued for {world.ranges} ranges: {tail(run_dir / 'sender.out')}")  # fmt: skip
        else:
            run_workers(world, run, run_dir, bucket, queue_url, key)
            check_big(world, run, run_dir, bucket, queue_url, key)
    status = "ok" if not run.errors else "FAILED: " + "; ".join(run.errors)
    say(f"  big file, {label}, {workers} worker(s): {run.wall:.1f} s to complete, ranges per worker {run.done}, "
        f"MiB per link {[round(m) for m in run.mib_up]}: {status}")  # fmt: skip
    return run


def run_workers(world: World, run: BigRun, run_dir: Path, bucket: str, queue_url: str, key: str) -> None:
    argvs = []
    for n in range(run.workers):
        config = world.config(run_dir / f"w{n}.py", world.big_dir, f"w{n}", bucket, world.moto.url,
                              run_dir / f"w{n}-log")  # fmt: skip
        argvs.append(world.command(config, "--sqs-worker", queue_url))
    pids = [world.seaweed.proc.pid, *(link.pid for link in world.links)]
    pending: dict[int, int] = {}
    codes: dict[int, int] = {}
    cpu: list[float] = []
    before = cpu_snapshot(pids)
    start = time.monotonic()
    try:
        for n, argv in enumerate(argvs):
            pending[spawn(argv, world.env, run_dir / f"w{n}.out")] = n
        while time.monotonic() - start < RUN_TIMEOUT:
            now = time.monotonic()
            try:
                if world.s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == world.size:
                    run.wall = time.monotonic() - start
                    break
            except ClientError:
                pass
            reap(pending, codes, cpu)
            if not pending:
                break
            time.sleep(max(0.0, POLL - (time.monotonic() - now)))
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
    (seaweed, *links), me, busy = cpu_used(pids, before)
    run.seaweed_cpu, run.proxy_cpu = seaweed, sum(links)
    others = max(0.0, busy - seaweed - sum(links) - me - run.worker_cpu)
    run.others_share = others / (run.exit_wall * len(os.sched_getaffinity(0)))
    run.mib_up = [world.links[n].stats()["bytes_up"] / MiB for n in range(run.workers)]


def check_big(world: World, run: BigRun, run_dir: Path, bucket: str, queue_url: str, key: str) -> None:
    if not run.wall:
        run.errors.append("the object never appeared while the workers ran")
    try:
        head = world.s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != world.size or head["ETag"].strip('"') != world.etag:
            run.errors.append(f"object: {head['ContentLength']} bytes, ETag {head['ETag']}; expected {world.size} "
                              f"bytes, ETag {world.etag}")  # fmt: skip
    except ClientError as exc:
        run.errors.append(f"object: {exc}")
    keys = [o["Key"] for o in world.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    if keys != [key]:
        run.errors.append(f"bucket holds {keys}, expected only {key}")
    left = {name: count for name, count in queue_counts(world.sqs, queue_url).items() if count}
    if left:
        run.errors.append(f"queue not empty: {left}")
    uploads = world.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if uploads:
        run.errors.append(f"{len(uploads)} unfinished multipart upload(s)")
    if any(run.codes):
        run.errors.append(f"worker exit codes {run.codes}")
    for n in range(run.workers):
        out = run_dir / f"w{n}.out"
        text = out.read_text(errors="replace") if out.exists() else ""
        found = DONE_LINE.findall(text)
        run.done.append(int(found[-1][0]) if found else 0)
        if not found:
            run.errors.append(f"worker {n}: no summary line: {tail(out)}")
        for line in text.splitlines():
            if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                run.notes.append(f"{run.label}, {run.workers} worker(s), worker {n}: {line.strip()[:200]}")
    if sum(run.done) != run.messages:
        run.errors.append(f"workers report {sum(run.done)} range(s) done for {run.messages} queued")


def big_schedule(rounds: int, worker_counts: tuple[int, ...]) -> list[tuple[str, int]]:
    order = []
    for r in range(rounds):
        counts = worker_counts if r % 2 == 0 else tuple(reversed(worker_counts))
        order += [(f"round {r + 1}", n) for n in counts]
    return order


def big_part(world: World) -> list[str]:
    a = world.args
    world.big_dir = world.workdir / "big"
    world.size = a.file_mib * MiB
    say(f"making a {a.file_mib} MiB file and its multipart ETag")
    world.etag = make_big_file(world.big_dir / "big.bin", world.size)
    parts = -(-world.size // CHUNK)
    world.ranges = -(-parts // a.parts_per_message)
    load_start = os.getloadavg()[0]
    runs = [big_run(world, workers, label) for label, workers in big_schedule(a.rounds, a.workers)]
    load_end = os.getloadavg()[0]
    ideal = world.size / MiB / a.link_mib
    lines = [
        f"## One {a.file_mib} MiB file, {', '.join(map(str, a.workers))} workers, each behind its own link",
        "",
        f"- load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}",
        f"- job: one file of {a.file_mib} MiB, LOCAL_TO_S3, ChunkSize {CHUNK // MiB} MiB ({parts} parts), "
        f"SQSPartsPerMessage {a.parts_per_message} ({world.ranges} range messages), MaxThread {THREADS} per worker, "
        f"SQSIdleSeconds {IDLE_SECONDS}; {a.rounds} round(s), worker counts alternating in order",
        f"- each worker's link (bench/linkproxy.py in front of SeaweedFS, one per worker): {a.rtt * 1000:.0f} ms round "
        f"trip, {a.conn_mib:g} MiB/s per connection, {a.link_mib:g} MiB/s for the link, no resets; one worker at "
        f"the link's rate would need {ideal:.0f} s",
        "",
        "Wall s = from the start of the workers until HeadObject (polled every 0.2 s) shows the object with its size. "
        "MiB/s = file size / wall. Checked after every run: the object's ETag is the multipart ETag of the file's own "
        "parts, only that object in the bucket, the queue empty, no unfinished uploads, exit codes 0, ranges done = "
        "ranges queued. Others' CPU % = share of all cores used by processes other than the workers, SeaweedFS, the "
        "proxies and this bench.",
        "",
    ]
    header = ["workers", "wall s (each round)", "median wall s", "MiB/s", "speed-up vs 1", "time vs 1",
              "ranges per worker", "MiB per link", "worker CPU s", "proxies' CPU s", "others' CPU %"]  # fmt: skip
    lines += [md_row(header), md_row(["---:"] * len(header))]
    base = None
    for workers in a.workers:
        good = [r for r in runs if r.workers == workers and not r.errors]
        if not good:
            lines.append(md_row([str(workers), "FAILED"] + [""] * (len(header) - 2)))
            continue
        wall = statistics.median(r.wall for r in good)
        base = base or (wall if workers == 1 else None)
        last = good[-1]
        lines.append(md_row([
            str(workers), ", ".join(f"{r.wall:.1f}" for r in good), f"{wall:.1f}", f"{world.size / MiB / wall:.1f}",
            f"{base / wall:.2f}x" if base else "n/a", f"{wall / base:.2f}" if base else "n/a",
            "+".join(map(str, last.done)), "+".join(f"{m:.0f}" for m in last.mib_up),
            f"{statistics.median(r.worker_cpu for r in good):.1f}",
            f"{statistics.median(r.proxy_cpu for r in good):.1f}",
            f"{100 * statistics.median(r.others_share for r in good):.0f}",
        ]))  # fmt: skip
    four = [r.wall for r in runs if r.workers == 4 and not r.errors]
    if base and four:
        ratio = statistics.median(four) / base
        lines += ["", f"Target: 4 workers in <= 1/3 of one worker's time: {ratio:.2f} "
                  f"({'met' if ratio <= 1 / 3 else 'NOT met'})."]  # fmt: skip
    failed = [f"- {r.label}, {r.workers} worker(s): " + "; ".join(r.errors) for r in runs if r.errors]
    notes = [f"- {n}" for r in runs for n in r.notes]
    lines += ["", "Failed runs:" if failed else "Every run passed its checks.", *failed]
    lines += ["", "Warnings and errors in the workers' output:" if notes else "No warnings or errors in the workers' "
              "output.", *notes[:40], ""]  # fmt: skip
    return lines


# ---------------------------------------------------------------------------------------------------------------------
# Part 2: the sender's message rate through a queue 20 ms away
# ---------------------------------------------------------------------------------------------------------------------


class StubQueue:
    """A stand-in for SQS in its own process (ThreadingHTTPServer, keep-alive, SQS's JSON protocol): it answers
    GetQueueAttributes and SendMessageBatch at once and counts the messages per queue URL, and the distinct keys
    among them.  moto's SQS is no server to measure a sender against: its SendMessage reads every attribute of the
    queue, ApproximateNumberOfMessages included, which walks every message in it, so each message costs time in
    proportion to the queue's length (at 2,000 messages, around a second a batch on this machine)."""

    def __init__(self, log: Path):
        self.log, self.proc, self.url = log, None, ""

    def start(self) -> StubQueue:
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, "--serve-queue"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err)  # fmt: skip
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def queue_url(self, name: str) -> str:
        return f"{self.url}/123456789012/{name}"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stdin.close()  # it exits when its stdin closes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_queue() -> None:
    """The StubQueue's process: prints its port, serves until stdin closes."""
    import http.server
    import threading

    lock = threading.Lock()
    counts: dict[str, int] = collections.Counter()
    keys: dict[str, set[str]] = collections.defaultdict(set)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self):  # noqa: N802 (http.server's naming)
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            action = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
            url = request.get("QueueUrl", "")
            if action == "SendMessageBatch":
                done = []
                for entry in request["Entries"]:
                    body = entry["MessageBody"]
                    with lock:
                        counts[url] += 1
                        keys[url].add(json.loads(body).get("key", ""))
                    done.append({"Id": entry["Id"], "MessageId": os.urandom(16).hex(),
                                 "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest()})  # fmt: skip
                answer = {"Successful": done, "Failed": []}
            elif action == "GetQueueAttributes":
                with lock:
                    answer = {"Attributes": {"VisibilityTimeout": str(VISIBILITY), "ApproximateNumberOfMessages":
                                             str(counts[url]), "DistinctKeys": str(len(keys[url]))}}  # fmt: skip
            else:
                self.send_error(400, f"not served here: {action}")
                return
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()


def sender_argv(world: World, kind: str, config: Path, queue_url: str) -> list[str]:
    setting = "s3_upload.SENDER_BATCHES = 1; " if kind == SEQUENTIAL else ""
    code = f"import sys; sys.path.insert(0, {str(world.workdir)!r}); import s3_upload; {setting}s3_upload.cli()"
    return [sys.executable, "-c", code, "--config", str(config), "--sqs-send", queue_url]


def send_run(world: World, kind: str, label: str, bucket: str) -> SendRun:
    run = SendRun(kind, label)
    run_dir = world.runs / f"send-{label.replace(' ', '')}-{'seq' if kind == SEQUENTIAL else 'shipped'}"
    run_dir.mkdir()
    link = world.queue_link
    files = world.args.sender_files
    if world.stub is not None:
        queue, sqs, server_pid = (
            contextlib.nullcontext(world.stub.queue_url(f"q{time.time_ns():x}")),
            world.stub_sqs,
            world.stub.proc.pid,
        )
    else:
        queue, sqs, server_pid = scratch_queue(world.sqs), world.sqs, world.moto.proc.pid
    with queue as queue_url:
        config = world.config(run_dir / "sender.py", world.tree_dir, "dst", bucket, link.endpoint_url,
                              run_dir / "log")  # fmt: skip
        link.clear()
        pids = [server_pid, link.pid, world.seaweed.proc.pid]
        before = cpu_snapshot(pids)
        start = time.monotonic()
        pid = spawn(sender_argv(world, kind, config, queue_url), world.env, run_dir / "sender.out")
        _, status, usage = os.wait4(pid, 0)
        run.wall = time.monotonic() - start
        run.cpu = usage.ru_utime + usage.ru_stime
        (queue_cpu, proxy, seaweed), me, busy = cpu_used(pids, before)
        run.queue_cpu = queue_cpu
        others = max(0.0, busy - queue_cpu - proxy - seaweed - me - run.cpu)
        run.others_share = others / (run.wall * len(os.sched_getaffinity(0)))
        code = os.waitstatus_to_exitcode(status)
        if code:
            run.errors.append(f"sender exit code {code}: {tail(run_dir / 'sender.out')}")
        queued = queue_counts(sqs, queue_url)["ApproximateNumberOfMessages"]
        if queued != files:
            run.errors.append(f"{queued} message(s) in the queue for {files} files")
        if world.stub is not None:
            attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
            if int(attributes["DistinctKeys"]) != files:
                run.errors.append(f"{attributes['DistinctKeys']} distinct keys in the queue for {files} files")
        stats = link.stats()
        run.connections, run.max_in_flight = stats["connections"], stats["max_in_flight"]
        # [conn, op, body bytes, head passed, answer passed, status, ...] in seconds since clear(); a request's head
        # passes as it leaves the sender's end, an answer as it leaves the server's end: half a round trip to go.
        sends = [row for row in link.history() if row[2] > SEND_BODY]
        run.sends = len(sends)
        half = world.args.sqs_delay / 2
        if sends and all(row[4] is not None for row in sends):
            run.window = max(row[4] for row in sends) + half - min(row[3] for row in sends)
            run.latency_ms = 1000 * (statistics.median(row[4] - row[3] for row in sends) + half)
        else:
            run.errors.append("no SendMessageBatch seen by the proxy, or one never answered")
        if run.sends != -(-files // 10):
            run.errors.append(f"{run.sends} SendMessageBatch requests for {files} messages")
    status = "ok" if not run.errors else "FAILED: " + "; ".join(run.errors)
    rate = files / run.window if run.window else 0
    say(f"  sender, {label}, {kind}: {run.window:.2f} s sending = {rate:.0f} messages/s, process {run.wall:.2f} s, "
        f"{run.connections} connection(s), at most {run.max_in_flight} in flight: {status}")  # fmt: skip
    return run


def sender_part(world: World) -> list[str]:
    a = world.args
    world.tree_dir = world.workdir / "tree"
    make_small_tree(world.tree_dir, a.sender_files)
    if a.sender_queue == "stub":
        world.stub = StubQueue(world.workdir / "stub.log").start()
        world.stub_sqs = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION
                                               ).client("sqs", endpoint_url=world.stub.url)  # fmt: skip
        world.start_queue_link(world.stub.url)
    else:
        world.start_queue_link(world.moto.url)
    queue_server = "StubQueue, this bench's stand-in for SQS" if a.sender_queue == "stub" else "moto_server"
    load_start = os.getloadavg()[0]
    order = []
    for r in range(a.sender_rounds):
        kinds = (SEQUENTIAL, SHIPPED) if r % 2 == 0 else (SHIPPED, SEQUENTIAL)
        order += [(kind, f"round {r + 1}") for kind in kinds]
    with scratch_bucket(world.s3, f"send-{time.time_ns():x}") as bucket:
        runs = [send_run(world, kind, label, bucket) for kind, label in order]
    load_end = os.getloadavg()[0]
    lines = [
        f"## The sender's rate, every SQS request {a.sqs_delay * 1000:.0f} ms longer",
        "",
        f"- load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}",
        f"- job: {a.sender_files} files of {SMALL} bytes in 20 directories, LOCAL_TO_S3, an empty destination bucket "
        f"(SeaweedFS directly); {a.sender_files // 10} SendMessageBatch requests of 10 messages; the queue ("
        f"{queue_server}) "
        f"behind bench/linkproxy.py with a {a.sqs_delay * 1000:.0f} ms round trip, no rate cap; {a.sender_rounds} "
        "round(s), the two senders alternating, a fresh queue each time",
        "",
        "Sending s = from the first SendMessageBatch leaving the sender until the last answer came back (the proxy's "
        "record of every request); messages/s = messages / sending s. Process s = the sender's whole run (Python "
        "start, listing both sides, sending). Latency = median request to answer of a SendMessageBatch as the sender "
        "sees it (the delay plus the queue server's time). Connections = opened by the sender to the queue.",
        "",
    ]
    header = ["sender", "sending s (each round)", "messages/s (median)", "process s (median)",
              "messages/s over the process", "latency ms", "connections", "max in flight", "sender CPU s",
              "queue server CPU s", "others' CPU %"]  # fmt: skip
    lines += [md_row(header), md_row(["---"] + ["---:"] * (len(header) - 1))]
    rates = {}
    for kind in (SEQUENTIAL, SHIPPED):
        good = [r for r in runs if r.kind == kind and not r.errors]
        if not good:
            lines.append(md_row([kind, "FAILED"] + [""] * (len(header) - 2)))
            continue
        window, wall = statistics.median(r.window for r in good), statistics.median(r.wall for r in good)
        rates[kind] = a.sender_files / window
        lines.append(md_row([
            kind, ", ".join(f"{r.window:.2f}" for r in good), f"{rates[kind]:.0f}", f"{wall:.2f}",
            f"{a.sender_files / wall:.0f}", f"{statistics.median(r.latency_ms for r in good):.1f}",
            ", ".join(str(r.connections) for r in good), ", ".join(str(r.max_in_flight) for r in good),
            f"{statistics.median(r.cpu for r in good):.1f}", f"{statistics.median(r.queue_cpu for r in good):.1f}",
            f"{100 * statistics.median(r.others_share for r in good):.0f}",
        ]))  # fmt: skip
    if len(rates) == 2:
        ratio = rates[SHIPPED] / rates[SEQUENTIAL]
        lines += ["", f"Target: the shipped sender >= 5x a sequential sender's rate: {ratio:.1f}x "
                  f"({'met' if ratio >= 5 else 'NOT met'})."]  # fmt: skip
    failed = [f"- {r.label}, {r.kind}: " + "; ".join(r.errors) for r in runs if r.errors]
    lines += ["", "Failed runs:" if failed else "Every run passed its checks.", *failed, ""]
    return lines


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("big", "sender"), help="run only one part")
    parser.add_argument("--file-mib", type=int, default=2048, help="size of the big file in MiB (default 2048)")
    parser.add_argument("--parts-per-message", type=int, default=PARTS_PER_MESSAGE,
                        help=f"SQSPartsPerMessage (default {PARTS_PER_MESSAGE})")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="rounds of 1, 2 and 4 workers (default 1)")
    parser.add_argument(
        "--workers",
        type=lambda v: tuple(sorted({int(n) for n in v.split(",")})),
        default=WORKER_COUNTS,
        help="worker counts of the big file's runs (default 1,2,4)",
    )
    parser.add_argument("--rtt", type=float, default=0.1, help="each worker's link: round trip in s (default 0.1)")
    parser.add_argument("--conn-mib", type=float, default=4, help="each link: MiB/s per connection (default 4)")
    parser.add_argument("--link-mib", type=float, default=8, help="each link: MiB/s in all (default 8)")
    parser.add_argument("--sender-files", type=int, default=2000, help="files the sender queues (default 2000)")
    parser.add_argument("--sender-rounds", type=int, default=2, help="rounds of both senders (default 2)")
    parser.add_argument(
        "--sender-queue",
        choices=("stub", "moto"),
        default="stub",
        help="the queue the sender's rate is measured against (default stub: see StubQueue)",
    )
    parser.add_argument("--sqs-delay", type=float, default=0.020, help="s added to every SQS request (default 0.02)")
    parser.add_argument("--keep-logs", type=Path, help="copy every run's configs and logs into this directory")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sqs_links.md",
                        help="markdown report (default bench/results/sqs_links.md)")  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.file_mib, args.parts_per_message, args.rounds, args.sender_files, args.sender_rounds) < 1:
        parser.error("sizes, counts and rounds must be at least 1")
    if not set(args.workers) <= set(range(1, max(WORKER_COUNTS) + 1)):
        parser.error(f"--workers: counts of 1 to {max(WORKER_COUNTS)}")
    return args


def run_all(args: argparse.Namespace, workdir: Path) -> str:
    world = World(workdir, args)
    try:
        say(f"starting SeaweedFS, moto and the links in {workdir}")
        world.start()
        world.start_links()
        world.write_profiles()
        lines = ["# s3_upload fleet mode across long links", "", *machine_lines(), ""]
        if args.only in (None, "big"):
            lines += big_part(world)
        if args.only in (None, "sender"):
            lines += sender_part(world)
        return "\n".join(lines)
    finally:
        say("stopping servers")
        world.stop()
        if args.keep_logs and world.runs.exists():
            shutil.copytree(world.runs, args.keep_logs, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--serve-queue"]:
        serve_queue()
        return 0
    return run_and_report(parse_args(argv), "s3_upload-sqs-links-", run_all)


if __name__ == "__main__":
    sys.exit(main())
