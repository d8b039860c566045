"""Scheduling cost of s3_upload.py's main thread against the number of files: list, plan and run, without network.

Usage (from the repository root):

    .venv/bin/python bench/scheduling.py [--counts 1000,10000,100000] [--quick] [--rounds 3]
                                         [--out bench/results/scheduling.md]

A job of a million small files must list, plan and schedule in time and memory linear in the file count: the main
thread lists SrcDir (walk_source), decides every file's action (plan_files) and feeds the file pool
(Engine.run).  Engine.run submits at most 2 x MaxParallelFile files at a time: the window of files submitted at once
keeps scheduling cost per file flat (with every file submitted up front, the work queue would hold a million futures
and each wait for the first finished one would walk all of them, a cost per file that grows with the job).

For each file count N (default 1,000, 10,000 and 100,000; --quick: 1,000 and 10,000):

  1. N files of 0 to 64 bytes are written into a fresh temporary directory (256 files per directory, 64 directories
     per top directory: d000/d00/f0000000.txt ...), removed again once N is measured;
  2. for each of two variants, --rounds times (the variants alternating in order), a fresh child process (this
     script with --child, so that memory figures belong to one N, variant and round) imports s3_upload from the
     repository root and runs the tool's pipeline as run_job chains it: Settings(des_bucket="bench", src_dir=DIR,
     s3_prefix="up/", ChunkSize 5 MiB, the tool's default MaxParallelFile and MaxThread),
     walk_source(LocalSource(settings)), plan_files(settings, files, destination, [], source), then Progress.begin and
     Engine(...).run(tasks) with a stub client:
       put   nothing at the destination: every file is a real Engine._put_small (read, MD5, put_object); the stub's
             put_object answers at once with the ETag S3 would give (the MD5 of the body), so the tool's ETag check
             runs too, and every result must be "uploaded";
       skip  every key is at the destination with its size (the destination dict is built from the listing, outside
             the timed phases): every file is a skip decided in the main thread, the pure scheduling cost; every
             result must be "skipped";
  3. the child measures each phase (list, plan, run): the main thread's CPU seconds (time.thread_time around the
     phase, in the main thread), wall seconds, and the process's CPU (getrusage RUSAGE_SELF), so the workers' CPU is
     process minus main thread; at the end the peak RSS (ru_maxrss) and, against the RSS just before listing, the
     RSS per file.  It prints them as one JSON line, which the parent collects.

The report (markdown, to stdout and to --out if given) has one table per variant: N, wall seconds per phase, the main
thread's CPU microseconds per file per phase and in total, the workers' CPU, peak RSS and RSS per file, all from the
round with the median total (the totals of every round are shown too: on a shared machine one run can be off by
half); then a verdict per variant comparing the main thread's µs/file at the largest N with the smallest (a ratio
near 1, or below: linear total; a ratio growing with N: superlinear), with the log-log slope of the total CPU
(1.0 = linear).

Not measured: the network, S3 listings (destination and unfinished uploads come from memory), the final comparison
listing, and log output (logging is not set up here, so the tool's per-file log.info calls cost only their level
check).  On a shared 2-core machine wall times move with other work (see the load average); CPU seconds much less.
stdlib only (the child imports s3_upload, and with it boto3).  The temporary directory is removed at the end, also
on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
DEFAULT_COUNTS = (1_000, 10_000, 100_000)
QUICK_COUNTS = (1_000, 10_000)
FILES_PER_DIR = 256
DIRS_PER_DIR = 64
MAX_FILE_SIZE = 64  # bytes; file i has i % 65 bytes
CHUNK = 5 * MiB
VARIANTS = ("put", "skip")
PHASES = ("list", "plan", "run")
EXPECTED_STATUS = {"put": "uploaded", "skip": "skipped"}
FLAT = 1.5  # largest-N us/file over smallest-N us/file above this: the cost per file grows with the job


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def make_tree(root: Path, count: int) -> int:
    """count files of 0..64 bytes under root, 256 per directory in two levels; returns their total size."""
    total = 0
    folder = root
    for i in range(count):
        if i % FILES_PER_DIR == 0:
            folder = root / f"d{i // (FILES_PER_DIR * DIRS_PER_DIR):03d}" / f"d{i // FILES_PER_DIR % DIRS_PER_DIR:02d}"
            folder.mkdir(parents=True)
        size = i % (MAX_FILE_SIZE + 1)
        (folder / f"f{i:07d}.txt").write_bytes(f"{i:064d}".encode()[:size])
        total += size
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Child: one N, one variant, in a process of its own
# ---------------------------------------------------------------------------------------------------------------------


class StubS3:
    """put_object answers at once with the ETag S3 would give (the MD5 of the body); nothing leaves the process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.puts = self.bytes = 0

    def put_object(self, **kw) -> dict:
        body = kw["Body"]
        etag = hashlib.md5(body).hexdigest()
        with self._lock:
            self.puts += 1
            self.bytes += len(body)
        return {"ETag": f'"{etag}"'}


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def phase(figures: dict[str, dict[str, float]], name: str) -> Iterator[None]:
    """The main thread's CPU, wall and process CPU seconds spent inside the block (call from the main thread)."""
    thread, wall, cpu = time.thread_time(), time.perf_counter(), process_cpu()
    yield
    figures[name] = {
        "main_cpu": time.thread_time() - thread,
        "wall": time.perf_counter() - wall,
        "process_cpu": process_cpu() - cpu,
    }


def child(count: int, data_dir: str, variant: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import s3_upload  # the tool of this tree, not an installed copy

    settings = s3_upload.Settings(des_bucket="bench", src_dir=data_dir, s3_prefix="up/", chunk_size=CHUNK)
    stop = threading.Event()
    retry = s3_upload.RetryPolicy(settings.max_retry, settings.retry_delay, stop)
    client = StubS3()
    source = s3_upload.LocalSource(settings)
    figures: dict[str, dict[str, float]] = {}
    rss_before = current_rss()

    with phase(figures, "list"):
        files = list(s3_upload.walk_source(source))
    destination = {f.key: s3_upload.Listed(f.key, f.size, "", f.mtime + 1) for f in files} if variant == "skip" else {}
    with phase(figures, "plan"):
        tasks = s3_upload.plan_files(settings, files, destination, [], source)
    with phase(figures, "run"):
        progress = s3_upload.Progress()
        progress.begin(tasks)
        try:
            results = s3_upload.Engine(settings, source, client, retry, stop, progress).run(tasks)
        finally:
            progress.close()

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    size = sum(f.size for f in files)
    errors = [f"listing error: {e}" for e in list(source.listing_errors)[:3]]
    if len(files) != count:
        errors.append(f"listed {len(files)} files, expected {count}")
    wrong = [r for r in results if r.status != EXPECTED_STATUS[variant]]
    if len(results) != len(files) or wrong:
        errors.append(f"{len(results)} results, {len(wrong)} not {EXPECTED_STATUS[variant]}"
                      + (f" (first: {wrong[0].key} {wrong[0].status} {wrong[0].detail})" if wrong else ""))  # fmt: skip
    puts, put_bytes = (len(files), size) if variant == "put" else (0, 0)
    if (client.puts, client.bytes) != (puts, put_bytes):
        errors.append(f"stub got {client.puts} puts of {client.bytes} bytes, expected {puts} of {put_bytes}")
    return {
        "count": count,
        "variant": variant,
        "phases": figures,
        "rss_before": rss_before,
        "peak_rss": peak_rss,
        "bytes": size,
        "settings": {"max_parallel_file": settings.max_parallel_file, "max_thread": settings.max_thread},
        "tool": s3_upload.__file__,
        "errors": errors,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Parent: data, children, report
# ---------------------------------------------------------------------------------------------------------------------


def run_child(count: int, data_dir: Path, variant: str) -> dict:
    """This script with --child, to its end; its JSON line (its stderr passes through)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(count), str(data_dir), "--variant", variant]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"count": count, "variant": variant, "errors": [f"child exit code {proc.returncode}"]}
    return json.loads(lines[-1])


def measure(counts: list[int], rounds: int, workdir: Path) -> list[dict]:
    """Every child's record: for each N, rounds x each variant (put skip, skip put, ...)."""
    records = []
    for count in counts:
        data = workdir / f"files-{count}"
        started = time.perf_counter()
        make_tree(data, count)
        say(f"N={count:,}: files written in {time.perf_counter() - started:.1f} s")
        for variant in (v for r in range(rounds) for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1])):
            record = run_child(count, data, variant)
            records.append(record)
            if record["errors"]:
                say(f"N={count:,} {variant}: FAILED: {'; '.join(record['errors'])}")
            else:
                main = sum(p["main_cpu"] for p in record["phases"].values())
                say(f"N={count:,} {variant}: main thread {main:.2f} s CPU ({1e6 * main / count:.1f} us/file), "
                    f"peak RSS {record['peak_rss'] / MiB:.0f} MiB")  # fmt: skip
        shutil.rmtree(data)
    return records


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main_cpu(record: dict, phases: tuple[str, ...] = PHASES) -> float:
    return sum(record["phases"][p]["main_cpu"] for p in phases)


def us_per_file(record: dict, phases: tuple[str, ...] = PHASES) -> float:
    return 1e6 * main_cpu(record, phases) / record["count"]


def median_runs(records: list[dict]) -> list[dict]:
    """Per N, the round with the median total main-thread CPU, with every round's total µs/file in "rounds"; a
    failed round stands for its N instead."""
    chosen = []
    for count in sorted({r["count"] for r in records}):
        runs = [r for r in records if r["count"] == count]
        failed = [r for r in runs if r["errors"]]
        if failed:
            chosen.append(failed[0])
            continue
        totals = [us_per_file(r) for r in runs]
        chosen.append(dict(sorted(runs, key=us_per_file)[len(runs) // 2], rounds=totals))
    return chosen


def table(records: list[dict]) -> list[str]:
    header = ["files", "list s", "plan s", "run s", "main µs/file: list", "plan", "run", "total", "total, each round",
              "workers' CPU s", "peak RSS MiB", "RSS/file B", "check"]  # fmt: skip
    lines = [md_row(header), md_row(["---:"] * (len(header) - 1) + ["---"])]
    for r in median_runs(records):
        if r["errors"]:
            lines.append(md_row([f"{r['count']:,}"] + [""] * (len(header) - 2) + ["FAILED: " + "; ".join(r["errors"])]))
            continue
        phases = r["phases"]
        workers = sum(p["process_cpu"] - p["main_cpu"] for p in phases.values())
        lines.append(md_row([
            f"{r['count']:,}",
            *(f"{phases[p]['wall']:.3f}" for p in PHASES),
            *(f"{us_per_file(r, (p,)):.1f}" for p in PHASES),
            f"**{us_per_file(r):.1f}**",
            ", ".join(f"{t:.1f}" for t in r["rounds"]),
            f"{max(0.0, workers):.2f}",
            f"{r['peak_rss'] / MiB:.0f}",
            f"{(r['peak_rss'] - r['rss_before']) / r['count']:.0f}",
            "ok",
        ]))  # fmt: skip
    return lines


def verdict(variant: str, records: list[dict]) -> str:
    good = [r for r in median_runs(records) if not r["errors"]]
    if len(good) < 2 or good[0]["count"] == good[-1]["count"]:
        return f"- {variant}: not enough successful file counts to compare"
    small, large = good[0], good[-1]
    ratio = us_per_file(large) / us_per_file(small)
    slope = math.log(main_cpu(large) / main_cpu(small)) / math.log(large["count"] / small["count"])
    by_phase = ", ".join(f"{p} {us_per_file(large, (p,)) / max(us_per_file(small, (p,)), 1e-9):.2f}x" for p in PHASES)
    rss = [(r["peak_rss"] - r["rss_before"]) / r["count"] for r in (small, large)]
    word = "flat, the total is linear in the file count" if ratio <= FLAT else "GROWS with the file count (superlinear)"
    return (f"- **{variant}**: main-thread µs/file at N={large['count']:,} / N={small['count']:,} = **{ratio:.2f}x** "
            f"({word}; log-log slope of the total {slope:.2f}, 1.00 = linear; per phase: {by_phase}); "
            f"RSS/file {rss[0]:.0f} -> {rss[1]:.0f} B")  # fmt: skip


def machine_lines(load: tuple[str, str]) -> list[str]:
    from run_bench import git_state  # parent only: the child imports nothing but s3_upload

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}, "
        f"Linux {platform.release()}",
        f"- python {platform.python_version()}; s3_upload.py: {git_state(ROOT / 's3_upload.py')}",
        f"- /proc/loadavg at start: `{load[0]}`, at end: `{load[1]}`",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
    ]


def render(records: list[dict], rounds: int, load: tuple[str, str]) -> str:
    settings = next((r["settings"] for r in records if not r["errors"]), {})
    lines = ["# s3_upload scheduling cost against the number of files (list, plan, run; no network)", ""]
    lines += machine_lines(load)
    lines += [
        f"- job: N files of 0 to {MAX_FILE_SIZE} bytes, {FILES_PER_DIR} per directory in two levels, in a temporary "
        f"directory under {tempfile.gettempdir()}; LOCAL_TO_S3, ChunkSize {CHUNK // MiB} MiB, MaxParallelFile "
        f"{settings.get('max_parallel_file', '?')} (so a window of {2 * settings.get('max_parallel_file', 0)} files "
        f"submitted at once), MaxThread {settings.get('max_thread', '?')} (the tool's defaults); a stub client "
        f"answers put_object at once; one fresh child process per N, variant and round; {rounds} round(s)",
        "",
        "List / plan / run s = wall seconds of LocalSource.list, plan_files and Progress.begin + Engine.run. "
        "Main µs/file = the main thread's CPU (time.thread_time) per file in each phase and in all three: flat "
        "across N means a total linear in N. Workers' CPU s = the process's CPU (getrusage) in the three phases "
        "minus the main thread's. Peak RSS = ru_maxrss of the child; RSS/file = (peak RSS - RSS before listing) / N. "
        "Every figure of a row comes from the round with the median total; 'total, each round' shows all of them.",
        "",
    ]
    for variant, title in (("put", "Uploads: every file read, MD5'd and PUT (stub)"),
                           ("skip", "Skips: every file already at the destination (pure scheduling)")):  # fmt: skip
        lines += [f"## {title}", "", *table([r for r in records if r["variant"] == variant]), ""]
    lines += ["## Verdict", ""]
    lines += [verdict(v, [r for r in records if r["variant"] == v]) for v in VARIANTS]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    counts = [int(s) for s in text.split(",") if s.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of file counts, each at least 1")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=parse_counts, default=list(DEFAULT_COUNTS),
                        help="file counts to measure, comma-separated (default 1000,10000,100000)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="file counts 1000 and 10000")
    parser.add_argument("--rounds", type=int, default=3, help="child runs per N and variant; the median is shown")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--child", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, default="put", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.counts = list(QUICK_COUNTS)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def interrupt(signum, frame):  # SIGTERM: clean up as for Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        try:
            print(json.dumps(child(int(args.child[0]), args.child[1], args.variant)))
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
            return 130
        return 0
    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="s3_upload-scheduling-"))
    try:
        load_start = Path("/proc/loadavg").read_text().strip()
        records = measure(args.counts, args.rounds, workdir)
        report = render(records, args.rounds, (load_start, Path("/proc/loadavg").read_text().strip()))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        say(f"report written to {args.out}")
    print(report)
    return 1 if any(r["errors"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
