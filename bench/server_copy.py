"""S3_TO_S3 inside one store: the server-side copy (CopyMode "server") against streaming (CopyMode "stream").

Usage (from the repository root):

    .venv/bin/python bench/server_copy.py [--rounds 3] [--mib 1024] [--out bench/results/server_copy.md]

It starts one SeaweedFS (fresh data directory) on 127.0.0.1 with one identity that reads the source bucket and
writes the destination bucket, puts one object of --mib MiB into the source (plain PutObject, no checksum), and copies
it with this tool, alternating the two modes in every round after one uncounted warm-up of each: ChunkSize 16 MiB,
MaxThread 8, MaxParallelFile 1.  Each run copies into a fresh destination bucket, checked afterwards (the object's
size, and the tool's exit code 0), then deleted.

Measured per run: wall time and the tool's CPU seconds (user+sys, os.wait4), SeaweedFS's CPU seconds, and the bytes
that passed through the client.  The byte count comes from one extra run per mode through a counting relay (a plain
TCP relay in this process, so the timed runs go straight to the server): request and response bytes, heads
included.  stdlib + boto3 only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from run_bench import (  # bench/ is sys.path[0]; run_bench puts tests/ on the path for seaweed
    ROOT,
    git_state,
    machine_busy_seconds,
    process_cpu_seconds,
    run_and_report,
    run_to_end,
    say,
    write_config,
    write_profiles,
)

from seaweed import SeaweedServer, identity

MiB = 1024 * 1024
KEYS = ("copyBenchKey", "copyBenchSecret")
CHUNK, THREADS = 16 * MiB, 8


class CountingRelay:
    """A TCP relay on 127.0.0.1 that counts the bytes both ways (what passes through the client)."""

    def __init__(self, upstream_port: int):
        self.upstream_port, self.bytes = upstream_port, 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def profiles(workdir: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(write_profiles(workdir / "aws", {"copier": (endpoint, *KEYS)}))
    return env


def run_tool(workdir: Path, env: dict, server_pid: int, mode: str, dest: str) -> dict:
    config = workdir / f"config-{mode}-{dest}.py"
    write_config(config, {"JobType": "S3_TO_S3", "SrcBucket": "source", "SrcProfileName": "copier",
                          "DesProfileName": "copier", "DesBucket": dest, "S3Prefix": "data/", "SrcDir": str(workdir),
                          "ChunkSize": CHUNK, "MaxThread": THREADS, "MaxParallelFile": 1, "CopyMode": mode,
                          "DontAskMeToClean": True, "LogDir": str(workdir / "log")})  # fmt: skip
    server_before, busy_before = process_cpu_seconds(server_pid), machine_busy_seconds()
    wall, cpu, code, out = run_to_end([sys.executable, str(workdir / "s3_upload.py"), "--config", str(config)], env,
                                      workdir)  # fmt: skip
    server = process_cpu_seconds(server_pid) - server_before
    others = machine_busy_seconds() - busy_before - cpu - server
    if code != 0:
        raise RuntimeError(f"s3_upload exited {code} ({mode}):\n{out[-2000:]}")
    return {"mode": mode, "wall": wall, "cpu": cpu, "server": server, "others": max(others, 0.0)}


def run_all(args: argparse.Namespace, workdir: Path) -> str:
    server = SeaweedServer(workdir / "seaweed", [identity("copier", *KEYS)], ["source"])
    say("starting SeaweedFS")
    server.start()
    try:
        s3 = server.client(*KEYS)
        size = args.mib * MiB
        say(f"putting a {args.mib} MiB source object")
        with open(workdir / "object.bin", "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(MiB))
        s3.upload_file(str(workdir / "object.bin"), "source", "data/object.bin")
        (workdir / "object.bin").unlink()
        (workdir / "s3_upload.py").write_bytes((ROOT / "s3_upload.py").read_bytes())
        env = profiles(workdir, server.endpoint_url)
        runs: list[dict] = []
        for n, mode in enumerate(["stream", "server"] * (args.rounds + 1)):
            dest = f"dest-{n}"
            s3.create_bucket(Bucket=dest)
            run = run_tool(workdir, env, server.proc.pid, mode, dest)
            assert s3.head_object(Bucket=dest, Key="data/object.bin")["ContentLength"] == size
            s3.delete_object(Bucket=dest, Key="data/object.bin")
            s3.delete_bucket(Bucket=dest)
            run["warm-up"] = n < 2
            say(f"{mode}: {run['wall']:.2f} s wall, {run['cpu']:.2f} CPU s" + (" (warm-up)" if n < 2 else ""))
            runs.append(run)
        through = {}
        for mode in ("stream", "server"):
            relay = CountingRelay(server.port)
            dest = f"dest-counted-{mode}"
            s3.create_bucket(Bucket=dest)
            run_tool(workdir, profiles(workdir, f"http://127.0.0.1:{relay.port}"), server.proc.pid, mode, dest)
            through[mode] = relay.bytes
            relay.close()
            s3.delete_object(Bucket=dest, Key="data/object.bin")
            s3.delete_bucket(Bucket=dest)
        return render(args, runs, through, size)
    finally:
        server.stop()


def render(args: argparse.Namespace, runs: list[dict], through: dict[str, int], size: int) -> str:
    counted = [r for r in runs if not r["warm-up"]]
    med = {m: {k: statistics.median(r[k] for r in counted if r["mode"] == m) for k in ("wall", "cpu", "server",
                                                                                         "others")}
           for m in ("stream", "server")}  # fmt: skip
    rows = [
        "| CopyMode | wall s (median) | wall s, each round | tool CPU s | SeaweedFS CPU s | others' CPU s "
        "| through the client |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for m in ("stream", "server"):
        each = ", ".join(f"{r['wall']:.2f}" for r in counted if r["mode"] == m)
        share = f"{through[m] / MiB:.1f} MiB ({100 * through[m] / size:.2f} %)"
        rows.append(f"| {m} | {med[m]['wall']:.2f} | {each} | {med[m]['cpu']:.2f} | {med[m]['server']:.2f} | "
                    f"{med[m]['others']:.2f} | {share} |")  # fmt: skip
    ratio = med["server"]["wall"] / med["stream"]["wall"]
    return "\n".join([
        "# S3_TO_S3 inside one store: server-side copy against streaming",
        "",
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {os.cpu_count()} CPUs, load at end {os.getloadavg()[0]:.2f}",
        f"- s3_upload.py: {git_state(ROOT / 's3_upload.py')}",
        f"- one object of {size // MiB} MiB, ChunkSize {CHUNK // MiB} MiB, MaxThread {THREADS}; {args.rounds} round(s) "
        "after one warm-up of each mode; bytes through the client from one more run per mode through a counting "
        "relay",
        f"- command: `{' '.join([os.path.relpath(sys.executable, ROOT), *sys.argv])}`",
        "",
        *rows,
        "",
        f"Server-side / streamed wall time: **{ratio:.2f}x**. The server-side copy moves "
        f"{through['server'] / MiB:.2f} MiB through the client for {size // MiB} MiB copied.",
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode (default 3)")
    parser.add_argument("--mib", type=int, default=1024, help="size of the object in MiB (default 1024)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server_copy.md",
                        help="markdown report (default bench/results/server_copy.md)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), "s3_upload-server-copy-", run_all)


if __name__ == "__main__":
    sys.exit(main())
