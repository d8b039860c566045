"""One budget of requests in flight for the whole run (MaxParallelFile x MaxThread): a big file alone uses all of it,
a file that starts later gets its fair share back, and the budget is never exceeded."""

from __future__ import annotations

import subprocess
import threading

import s3_upload
from conftest import DST_KEYS, MiB, md5_file, object_md5, tool_command, unfinished_uploads, wait_until, write_file
from faultproxy import FaultProxy, Gate

CHUNK = 5 * MiB


def test_one_big_file_alone_uses_the_whole_budget(dst, bucket, src_dir, make_config, aws_profiles, dst_server):
    """MaxParallelFile 3 x MaxThread 2: one file of 10 parts has 6 parts in flight at once (it used to have 2, and
    the other 4 requests of the budget stood idle), and never more."""
    path = src_dir / "big.bin"
    write_file(path, 10 * CHUNK)
    gate = Gate(lambda r: r.operation == "UploadPart" and (r.part_number or 0) not in s3_upload.MARKER_PARTS)
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("gated", proxy.endpoint_url, *DST_KEYS)
        config = make_config(DesProfileName="gated", MaxParallelFile=3, MaxThread=2)
        proc = subprocess.Popen(tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            wait_until(lambda: len(gate.held) >= 6 or proc.poll() is not None, "six parts held at the gate")
            held = {r.part_number for r in gate.held}
        finally:
            gate.open()
            out, err = proc.communicate(timeout=120)
    assert len(held) == 6, held  # the whole budget, and no more
    assert proc.returncode == 0, out + err
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_file_that_starts_later_gets_its_fair_share_back():
    """A budget of 4: file A alone has 4 requests in flight; file B starts; as A's requests end, B's are taken first
    (the file with the fewest in flight) until each has 2."""
    budget = s3_upload.PartBudget(4, threading.Event())
    lock = threading.Lock()
    running = {"A": 0, "B": 0}
    release = {"A": threading.Semaphore(0), "B": threading.Semaphore(0)}

    def request(name: str):
        def run():
            with lock:
                running[name] += 1
            release[name].acquire()
            with lock:
                running[name] -= 1
            return name

        return run

    results: dict[str, list] = {}

    def file(name: str, count: int) -> None:
        results[name] = budget.map([request(name) for _ in range(count)], threading.Event())

    a = threading.Thread(target=file, args=("A", 10))
    a.start()
    wait_until(lambda: running["A"] == 4, "A alone with the whole budget")
    b = threading.Thread(target=file, args=("B", 10))
    b.start()
    for _ in range(2):  # two of A's requests end: both freed slots go to B, which has none in flight
        release["A"].release()
    wait_until(lambda: running["B"] == 2, "B's fair share")
    assert running == {"A": 2, "B": 2}
    for _ in range(20):
        release["A"].release()
        release["B"].release()
    a.join(10)
    b.join(10)
    assert results == {"A": ["A"] * 10, "B": ["B"] * 10}
