"""What one small PutObject costs a Python client here: the floor under scenario 2 (many small files).

Usage (from the repository root):

    .venv/bin/python bench/request_floor.py [--files 1000] [--rounds 3] [--out bench/results/request_floor.md]

It starts one SeaweedFS on 127.0.0.1, writes --files files of 64 KiB, and uploads them, each run into a fresh bucket
and as a separate process, alternating in every round:

  botocore, 1 thread   put_object with Content-MD5, one after another (this tool's client settings: checksums only
                       where required, no payload signature)
  botocore, 16 threads the same put_object calls from 16 threads sharing one client (16 connections)
  s3_upload            this tool: LOCAL_TO_S3, MaxParallelFile 16, MaxThread 1 (one PutObject per file)
  start-up only        the same Python process importing boto3, making the client and listing the empty bucket

CPU per file = (the run's CPU seconds - the start-up run's) / files, user+sys from os.wait4.  The first two are the
least work a botocore client can do per file; the gap between them is what 16 threads cost in contention for the GIL.
stdlib + boto3 only; never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from run_bench import (  # bench/ is sys.path[0]
    ROOT,
    git_state,
    run_and_report,
    run_to_end,
    say,
    write_config,
    write_profiles,
)

from seaweed import SeaweedServer, identity

KiB = 1024
KEYS = ("floorBenchKey", "floorBenchSecret")
FILE_SIZE = 64 * KiB
THREADS = 16

# One client process: argv = endpoint, bucket, directory ("" for start-up only), threads.
BOTOCORE_SCRIPT = """\
import base64, concurrent.futures, hashlib, os, sys
import boto3
from botocore.config import Config

endpoint, bucket, directory, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = Config(request_checksum_calculation="when_required", s3={"payload_signing_enabled": False},
                max_pool_connections=threads)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)
s3.list_objects_v2(Bucket=bucket)
paths = sorted(os.path.join(directory, name) for name in os.listdir(directory)) if directory else []

def put(path):
    with open(path, "rb") as fh:
        data = fh.read()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key="floor/" + os.path.basename(path), Body=data, ContentMD5=md5)

if threads == 1:
    for path in paths:
        put(path)
else:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, paths))
"""


def measure(argv: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one process run to its end."""
    wall, cpu, code, out = run_to_end(argv, env, cwd)
    if code != 0:
        raise RuntimeError(f"{argv[:3]} failed:\n{out[-2000:]}")
    return wall, cpu


def run_all(args: argparse.Namespace, workdir: Path) -> str:
    server = SeaweedServer(workdir / "seaweed", [identity("floor", *KEYS)])
    say("starting SeaweedFS")
    server.start()
    try:
        s3 = server.client(*KEYS)
        tree = workdir / "files"
        tree.mkdir()
        for n in range(args.files):
            (tree / f"f{n:05d}.bin").write_bytes(os.urandom(FILE_SIZE))
        (workdir / "s3_upload.py").write_bytes((ROOT / "s3_upload.py").read_bytes())
        (workdir / "client.py").write_text(BOTOCORE_SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(write_profiles(workdir / "aws", {"floor": (server.endpoint_url, *KEYS)}), AWS_PROFILE="floor")

        def client(directory: str, threads: int):
            return lambda bucket: [sys.executable, str(workdir / "client.py"), server.endpoint_url, bucket,
                                   directory, str(threads)]  # fmt: skip

        def tool(bucket: str) -> list[str]:
            config = workdir / f"config-{bucket}.py"
            settings = {"JobType": "LOCAL_TO_S3", "SrcDir": str(tree), "DesBucket": bucket, "DesProfileName": "floor",
                        "S3Prefix": "floor/", "MaxParallelFile": THREADS, "MaxThread": 1, "DontAskMeToClean": True,
                        "LogDir": str(workdir / "log")}  # fmt: skip
            write_config(config, settings)
            return [sys.executable, str(workdir / "s3_upload.py"), "--config", str(config), "--progress", "none"]

        clients = {
            "start-up only": client("", 1),
            "botocore, 1 thread": client(str(tree), 1),
            f"botocore, {THREADS} threads": client(str(tree), THREADS),
            "s3_upload": tool,
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for round_no in range(args.rounds + 1):  # round 0 warms up (page cache, pyc) and is not counted
            for name, argv in clients.items():
                bucket = f"floor-{round_no}-{len(runs[name])}-{abs(hash(name)) % 10000}"
                s3.create_bucket(Bucket=bucket)
                wall, cpu = measure(argv(bucket), env, workdir)
                keys = sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket))  # fmt: skip
                if name != "start-up only" and keys != args.files:
                    raise RuntimeError(f"{name}: {keys} objects, not {args.files}")
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    for o in page.get("Contents", []):
                        s3.delete_object(Bucket=bucket, Key=o["Key"])
                s3.delete_bucket(Bucket=bucket)
                say(f"{name}: {wall:.2f} s wall, {cpu:.2f} CPU s" + (" (warm-up)" if round_no == 0 else ""))
                if round_no:
                    runs[name].append((wall, cpu))
        return render(args, runs)
    finally:
        server.stop()


def render(args: argparse.Namespace, runs: dict[str, list[tuple[float, float]]]) -> str:
    startup = statistics.median(cpu for _, cpu in runs["start-up only"])
    rows = ["| client | wall s (median) | files/s | CPU s (median) | CPU ms per file, start-up taken off |",
            "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, measured in runs.items():
        wall, cpu = statistics.median(w for w, _ in measured), statistics.median(c for _, c in measured)
        if name == "start-up only":
            rows.append(f"| {name} | {wall:.2f} | - | {cpu:.2f} | - |")
        else:
            per_file = 1000 * (cpu - startup) / args.files
            rows.append(f"| {name} | {wall:.2f} | {args.files / wall:.0f} | {cpu:.2f} | {per_file:.2f} |")
    return "\n".join([
        "# The floor under many small files: one PutObject from Python",
        "",
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {os.cpu_count()} CPUs, load at end {os.getloadavg()[0]:.2f}",
        f"- s3_upload.py: {git_state(ROOT / 's3_upload.py')}",
        f"- {args.files} files of {FILE_SIZE // KiB} KiB, {args.rounds} round(s) after a warm-up round",
        f"- command: `{' '.join([os.path.relpath(sys.executable, ROOT), *sys.argv])}`",
        "",
        *rows,
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="files of 64 KiB (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "request_floor.md",
                        help="markdown report (default bench/results/request_floor.md)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), "s3_upload-request-floor-", run_all)


if __name__ == "__main__":
    sys.exit(main())
