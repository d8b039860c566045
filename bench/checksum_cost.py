"""What the full-object CRC32 of LOCAL_TO_S3 costs the client in CPU: this s3_upload.py against one without it.

Usage (from the repository root):

    .venv/bin/python bench/checksum_cost.py [--rounds 3] [--size-mib 1024] [--baseline-rev 58e38f2]
                                            [--out bench/results/checksum_cost.md]

Issue 20, item 1: each part's CRC32 is computed in the same pass as its MD5, sent with the part and joined into the
whole file's CRC32, which S3 checks at completion; the extra CPU must stay within TARGET CPU s/GiB.  This bench
starts one SeaweedFS on 127.0.0.1 (fresh data directory), generates one file of --size-mib MiB and uploads it with
two builds of the tool: the working tree's s3_upload.py ("current") and the one at --baseline-rev ("baseline",
default 58e38f2, the commit before the CRC32 came in; taken with `git show REV:s3_upload.py`), both run as a user
runs them, from copies made at the start.  Settings: LOCAL_TO_S3, ChunkSize 16 MiB, MaxThread 8, MaxParallelFile 1,
the rest at the tools' defaults (ChecksumMode "MD5": botocore adds no checksum of its own).  One uncounted warm-up of
each build, then --rounds rounds of current, baseline (A B A B ...); every run writes into a fresh bucket, which is
checked and deleted: the object's size and its multipart ETag's part count; for the current build also the object's
ChecksumCRC32 (HeadObject with ChecksumMode ENABLED) against the file's zlib CRC32.

Measured per run (bench/run_bench.py's Launcher and run_measured): wall time, the client's CPU seconds (user+sys of
its whole process tree, os.wait4), SeaweedFS's CPU seconds, and the CPU seconds every other process on the machine
used meanwhile (/proc/stat).  The figure that counts is the per-round difference of client CPU s/GiB, current minus
baseline, and its median.  stdlib + boto3 only; never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import importlib.metadata
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

from run_bench import (  # bench/ is sys.path[0]; run_bench puts tests/ on the path for seaweed
    ROOT,
    Launcher,
    Run,
    git_state,
    make_file,
    md_table,
    others_share,
    run_and_report,
    run_measured,
    say,
    scratch_bucket,
    version_of,
    write_config,
    write_profiles,
)

from seaweed import SeaweedServer, find_weed, identity

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK, THREADS = 16 * MiB, 8
TARGET = 0.4  # CPU s/GiB the CRC32 may add (issue 20, item 1)
KEYS = ("crcBenchKey", "crcBenchSecret")
PREFIX = "bench/"
BUILDS = ("current", "baseline")  # the order within every round


def file_crc32(path: Path) -> str:
    """The file's CRC32 as S3 writes it: base64 of the 4 bytes, big-endian."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def git_revision(rev: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"checksum_cost: error: no git revision {rev!r}: {out.stderr.strip()}")
    return out.stdout.strip()


def prepare_builds(workdir: Path, baseline_rev: str) -> dict[str, tuple[Path, str]]:
    """{build: (its copy of s3_upload.py, what it is)}; each in a directory of its own."""
    builds = {}
    for build in BUILDS:
        (workdir / build).mkdir()
    current = workdir / "current" / "s3_upload.py"
    shutil.copy2(ROOT / "s3_upload.py", current)
    builds["current"] = (current, git_state(ROOT / "s3_upload.py"))
    baseline = workdir / "baseline" / "s3_upload.py"
    rev = git_revision(baseline_rev)
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:s3_upload.py"], capture_output=True, check=True)
    baseline.write_bytes(text.stdout)
    builds["baseline"] = (baseline, f"commit {rev}")
    for build, (script, where) in builds.items():
        version = version_of([sys.executable, str(script), "--version"])
        digest = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
        builds[build] = (script, f"{version}, {where}, sha256 {digest}")
    return builds


def upload(launcher: Launcher, server: SeaweedServer, s3, env: dict, script: Path, data: Path, log: Path) -> tuple:
    """One measured upload of data into a fresh bucket; (Run, the object's ChecksumCRC32 or '')."""
    workdir = script.parent
    with scratch_bucket(s3, f"crc-{time.time_ns():x}") as bucket:
        s3.put_object(Bucket=bucket, Key="warmup", Body=b"")  # a new bucket's first write grows its volumes
        config = workdir / f"config_{time.time_ns():x}.py"
        write_config(config, {
            "JobType": "LOCAL_TO_S3", "SrcFileIndex": data.name, "S3Prefix": PREFIX, "DesProfileName": "dst",
            "DesBucket": bucket, "SrcDir": str(data.parent), "SrcBucket": "unused", "SrcProfileName": "unused",
            "ChunkSize": CHUNK, "MaxRetry": 3, "MaxThread": THREADS, "MaxParallelFile": 1, "IgnoreSmallFile": False,
            "StorageClass": "STANDARD", "ifVerifyMD5": False, "DontAskMeToClean": True, "LoggingLevel": "INFO",
            "LogDir": str(workdir / "tool-logs"),
        })  # fmt: skip
        argv = [sys.executable, str(script), "--config", str(config)]
        run = run_measured(launcher, argv, env, log, [server.proc.pid], workdir)
        if not run.ok:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{script} failed: {run.error}\n{tail}")
        head = s3.head_object(Bucket=bucket, Key=PREFIX + data.name, ChecksumMode="ENABLED")
        size, parts = data.stat().st_size, math.ceil(data.stat().st_size / CHUNK)
        if head["ContentLength"] != size:
            raise RuntimeError(f"{script}: the object has {head['ContentLength']} bytes, the file {size}")
        if parts > 1 and not head["ETag"].strip('"').endswith(f"-{parts}"):
            raise RuntimeError(f"{script}: ETag {head['ETag']} is not a {parts}-part multipart ETag")
        return run, head.get("ChecksumCRC32", "")


def run_all(args: argparse.Namespace, workdir: Path) -> str:
    size = args.size_mib * MiB
    builds = prepare_builds(workdir, args.baseline_rev)
    server = SeaweedServer(workdir / "seaweed", [identity("dst", *KEYS)])
    launcher = None
    say(f"starting SeaweedFS in {workdir}")
    server.start()
    try:
        launcher = Launcher()
        s3 = server.client(*KEYS)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        env.update(write_profiles(workdir / "aws", {"dst": (server.endpoint_url, *KEYS)}))
        say(f"generating {args.size_mib} MiB of random data")
        data = make_file(workdir / "data" / "big.bin", size)
        want_crc = file_crc32(data)
        load_start = os.getloadavg()[0]
        results: dict[str, list[Run]] = {b: [] for b in BUILDS}
        stored: dict[str, set[str]] = {b: set() for b in BUILDS}
        logs = workdir / "logs"
        logs.mkdir()
        for n in range(args.rounds + 1):
            for build in BUILDS:
                script = builds[build][0]
                run, crc = upload(launcher, server, s3, env, script, data, logs / f"{n}-{build}.log")
                if build == "current" and crc != want_crc:
                    raise RuntimeError(f"current build: the object's ChecksumCRC32 is {crc!r}, the file's {want_crc}")
                stored[build].add(crc or "none")
                label = "warm-up" if n == 0 else f"round {n}"
                say(f"{label}, {build}: {run.wall:.2f} s wall, {run.cpu:.2f} CPU s, SeaweedFS {run.server_cpu:.2f} s,"
                    f" others {run.others_cpu:.2f} s, ChecksumCRC32 {crc or 'none'}")  # fmt: skip
                if n:
                    results[build].append(run)
        load = (load_start, os.getloadavg()[0])
        return render(args, builds, results, stored, want_crc, size, load)
    finally:
        if launcher:
            launcher.close()
        say("stopping SeaweedFS")
        server.stop()


def render(args, builds: dict, results: dict[str, list[Run]], stored: dict, want_crc: str, size: int, load) -> str:
    gib = size / GiB
    per_gib = {b: [r.cpu / gib for r in runs] for b, runs in results.items()}
    diffs = [c - b for c, b in zip(per_gib["current"], per_gib["baseline"])]
    med_diff = statistics.median(diffs)

    def each(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    rows = []
    for build in BUILDS:
        runs = results[build]
        rows.append([
            build, f"{statistics.median(per_gib[build]):.2f}", each(per_gib[build]),
            f"{statistics.median(r.wall for r in runs):.2f}", each([r.wall for r in runs]),
            f"{statistics.median(r.server_cpu for r in runs):.2f}",
            f"{statistics.median(map(others_share, runs)):.0%} (max {max(map(others_share, runs)):.0%})",
        ])  # fmt: skip
    table = md_table(["build", "client CPU s/GiB (median)", "each round", "wall s (median)", "each round",
                      "SeaweedFS CPU s", "others' share of the cores"], rows)  # fmt: skip
    verdict = "met" if med_diff <= TARGET else "NOT met"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if "model name" in line), platform.processor() or "?")  # fmt: skip
    command = " ".join([os.path.relpath(sys.executable, ROOT), os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    return "\n".join([
        "# Full-object CRC32: the client's CPU cost",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs, {model}, Linux {platform.release()}; python {platform.python_version()}, "
        f"botocore {importlib.metadata.version('botocore')}, SeaweedFS {version_of([find_weed(), 'version'])}",
        f"- current: {builds['current'][1]}",
        f"- baseline: {builds['baseline'][1]}",
        f"- one file of {size / MiB:g} MiB, LOCAL_TO_S3, ChunkSize {CHUNK // MiB} MiB, MaxThread {THREADS}, "
        f"MaxParallelFile 1, a fresh bucket each run; {args.rounds} round(s) of current, baseline after one "
        f"uncounted warm-up of each; load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f}",
        f"- checked: size and {math.ceil(size / CHUNK)}-part ETag every run; the current build's objects carry "
        f"ChecksumCRC32 {want_crc} = the file's zlib CRC32 (every run); the baseline's carry "
        f"{', '.join(sorted(stored['baseline']))}",
        f"- command: `{command}`",
        "",
        *table,
        "",
        f"Client CPU s/GiB, current - baseline, per round: {each(diffs)}; median **{med_diff:+.2f}** "
        f"(target <= {TARGET}: {verdict}). Median wall: "
        f"{statistics.median(r.wall for r in results['current']):.2f} against "
        f"{statistics.median(r.wall for r in results['baseline']):.2f} s.",
        "",
        "Client CPU = user+sys of the tool's whole process tree (os.wait4); others' share = the CPU every other "
        "process on the machine used during a run, as a share of all cores (above ~10 %, wall times are disturbed; "
        "CPU seconds much less).",
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds of each build (default 3)")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file in MiB (default 1024)")
    parser.add_argument("--baseline-rev", default="58e38f2",
                        help="git revision of the build without the CRC32 (default 58e38f2)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "checksum_cost.md",
                        help="markdown report (default bench/results/checksum_cost.md)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.size_mib < 1:
        parser.error("--rounds and --size-mib must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), "s3_upload-checksum-cost-", run_all)


if __name__ == "__main__":
    sys.exit(main())
