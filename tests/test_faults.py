"""Fault injection on the real wire: the tool talks to SeaweedFS through tests/faultproxy.py, which resets
connections, answers 503/500 itself, stalls, caps bandwidth or loses answers.  Every scenario ends with the bytes
checked, nothing unfinished on the server, and the retries visible in the log."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest

import s3_upload
from conftest import (
    DST_KEYS,
    SRC_KEYS,
    MiB,
    assert_tree_uploaded,
    list_keys,
    md5_file,
    object_md5,
    parts_on_server,
    run_tool,
    tool_command,
    unfinished_uploads,
    wait_until,
    write_file,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB


@pytest.fixture
def dst_proxy(dst_server):
    with FaultProxy("127.0.0.1", dst_server.port, seed=11).start() as proxy:
        yield proxy
        assert not proxy.exceptions, proxy.exceptions


@pytest.fixture
def flaky(make_config, aws_profiles, dst_proxy):
    """make_config for a destination reached through the fault proxy (profile 'flaky')."""
    aws_profiles.add("flaky", dst_proxy.endpoint_url, *DST_KEYS)

    def make(**overrides):
        values = {"DesProfileName": "flaky", "MaxRetry": 10, "RetryDelay": 0.05}
        values.update(overrides)
        return make_config(**values)

    return make


def job_files(src_dir, big=3, small=8) -> None:
    for i in range(big):
        write_file(src_dir / f"big{i}.bin", 2 * CHUNK + 1000 * i + 7)
    for i in range(small):
        write_file(src_dir / "small" / f"s{i}.txt", 1000 + i)
    write_file(src_dir / "empty.dat", 0)


def assert_job_done(run, dst, bucket, src_dir) -> None:
    assert run.code == 0, run
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == len([p for p in src_dir.rglob("*") if p.is_file()])
    assert unfinished_uploads(dst, bucket) == []
    assert "All source files are in destination" in run.stdout


def test_connection_resets_local_to_s3(dst, bucket, src_dir, flaky, dst_proxy):
    job_files(src_dir)
    dst_proxy.set(reset_rate=0.3)
    run = run_tool(flaky())
    assert_job_done(run, dst, bucket, src_dir)
    assert dst_proxy.stats["resets"] > 3
    assert "retry 1/10" in run.stderr


def test_connection_resets_both_sides_s3_to_s3(
    src, dst, src_server, src_bucket, bucket, aws_profiles, flaky, dst_proxy
):
    keys = {f"up/o{i}.bin": 2 * CHUNK + 3 * i for i in range(3)} | {"up/tiny.txt": 10, "up/empty.dat": 0}
    for key, size in keys.items():
        src.put_object(Bucket=src_bucket, Key=key, Body=random.randbytes(size))
    with FaultProxy("127.0.0.1", src_server.port, seed=5).start() as src_proxy:
        aws_profiles.add("flakysrc", src_proxy.endpoint_url, *SRC_KEYS)
        src_proxy.set(reset_rate=0.3, fault_where="response")  # cut ranged GETs mid-body
        dst_proxy.set(reset_rate=0.3)
        run = run_tool(flaky(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName="flakysrc"))
        assert src_proxy.stats["resets"] >= 1 and not src_proxy.exceptions
    assert run.code == 0, run
    assert dst_proxy.stats["resets"] >= 1
    assert list_keys(dst, bucket) == keys
    for key in keys:
        assert object_md5(dst, bucket, key) == object_md5(src, src_bucket, key), key
    assert unfinished_uploads(dst, bucket) == []


def test_slowdown_503_is_backoff_not_failure(dst, bucket, src_dir, flaky, dst_proxy):
    job_files(src_dir)
    dst_proxy.set(error_rate=0.2, error_status=503, error_code="SlowDown")
    run = run_tool(flaky())
    assert_job_done(run, dst, bucket, src_dir)
    assert "SlowDown (HTTP 503)" in run.stderr
    # 500 InternalError: the same backoff (a sure hit on the first part, as this second run is small).
    dst_proxy.set(error_rate=1.0, error_status=500, error_code="InternalError", match=first_only("UploadPart"))
    (src_dir / "more.bin").write_bytes(random.randbytes(2 * CHUNK))
    run = run_tool(flaky())
    assert_job_done(run, dst, bucket, src_dir)
    assert "InternalError (HTTP 500)" in run.stderr


def test_a_slowdown_slows_the_whole_process_together(dst, bucket, src_dir, flaky, dst_proxy):
    """The store answers the first 10 data parts with 503 SlowDown.  The process slows down as one (a shared pace, as
    rclone's pacer): the 8 parts in flight at the first answer are refused, and then every request of every thread
    waits its turn, at least RetryDelay (1 s) after the one before, instead of each thread retrying on its own (the 8
    retries came at once before).  Then the pace recovers and the run completes, byte-identical.  Only lower bounds on
    the time between requests are checked: a busy machine only makes them longer."""
    write_file(src_dir / "big.bin", 16 * CHUNK)
    arrivals: list[float] = []  # when each data part reached the store, in order

    def slowing_down(request) -> bool:
        if request.operation != "UploadPart" or request.part_number in s3_upload.MARKER_PARTS:
            return False
        arrivals.append(time.monotonic())
        return len(arrivals) <= 10

    dst_proxy.set(outage=True, error_status=503, error_code="SlowDown", match=slowing_down)
    run = run_tool(flaky(MaxThread=8, MaxParallelFile=1, RetryDelay=1.0, MaxRetry=20))
    assert_job_done(run, dst, bucket, src_dir)
    assert dst_proxy.stats["errors"] == 10
    # Requests 9 to 11 start after the first refusal: each in its own turn of the pace (1 s, then 2 s apart).
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[8:11])]
    assert min(gaps) > 0.5, gaps


def test_a_500_with_a_code_the_tool_does_not_know_is_retried(dst, bucket, src_dir, flaky, dst_proxy):
    """Any 5xx is the server's trouble, whatever its code: one UploadPart answered 500 with a code no list names
    (botocore's bare "500" for an empty body is the same case) is retried and the run completes.  (Guards
    is_retryable's status >= 500: with > 500 this answer would fail the file at once.)"""
    write_file(src_dir / "big.bin", 2 * CHUNK + 3)
    dst_proxy.set(outage=True, error_status=500, error_code="SomeNewServerTrouble", match=first_data_part())
    run = run_tool(flaky(MaxRetry=2))
    assert [(r.fault, r.status) for r in dst_proxy.history if r.fault] == [("outage", 500)]
    retried = r"UPLOAD up/big\.bin part \d+/3 failed: SomeNewServerTrouble \(HTTP 500\).*; retry 1/2"
    assert re.search(retried, run.stderr), run.stderr
    assert_job_done(run, dst, bucket, src_dir)


# What the tool reports when it gives up on a stall (faultproxy's stall_rate tells why a stalled request has two):
STALL_REASONS = {
    "response": ("ReadTimeoutError",),  # the request went out whole; no answer within ReadTimeout
    # The rest of the body fitted in the socket buffers (then as above), or the send blocked until urllib3's send
    # timeout (ConnectTimeout), which botocore reports as ConnectionClosedError.
    "request": ("ReadTimeoutError", "ConnectionClosedError"),
}


@pytest.mark.parametrize("where", ["request", "response"])
def test_stalled_connection_times_out_and_is_retried(dst, bucket, src_dir, flaky, dst_proxy, where):
    """The first data part stalls (no byte passes: the body stops mid-way, or the answer never comes): the tool's
    own timeout notices it, that very part is sent again and the run ends; the subprocess timeout only catches a
    hang."""
    job_files(src_dir, big=2, small=3)
    dst_proxy.set(stall_rate=1.0, fault_where=where, match=stall_once(dst_proxy))  # then a healthy network
    # The 1 s timeouts hold for every request: one request at a time, into a bucket whose first write (SeaweedFS
    # makes the bucket's volumes then) is done, so that a busy machine does not make healthy requests time out in
    # a cascade (each timed-out part is sent again while the server still works on the first copy).
    dst.put_object(Bucket=bucket, Key="first-write", Body=b"")
    run = run_tool(flaky(ReadTimeout=1, ConnectTimeout=1, MaxThread=1, MaxParallelFile=1), timeout=120)
    assert_job_done(run, dst, bucket, src_dir)
    [stalled] = [r for r in dst_proxy.history if r.fault]
    assert stalled.fault == f"stall-{where}" and stalled.status is None  # the client got no answer to it
    # The proxy never closes a stalled connection itself (no stall_seconds): only the tool could end it.
    attempts = [r for r in dst_proxy.history if r.operation == "UploadPart" and r.key == stalled.key
                and r.part_number == stalled.part_number]  # fmt: skip
    assert attempts[-1] is not stalled and attempts[-1].status == 200, attempts  # sent once more, and stored
    attempt = attempts.index(stalled) + 1  # 1 but on a busy machine, where an earlier try may have timed out
    retried = re.search(rf"UPLOAD {re.escape(stalled.key)} part {stalled.part_number}/\d+ failed: (\w+): .*; "
                        rf"retry {attempt}/10", run.stderr)  # fmt: skip
    assert retried and retried.group(1) in STALL_REASONS[where], run.stderr  # the reason is the tool's timeout


def test_outage_longer_than_retries_fails_cleanly_then_resumes(dst, bucket, src_dir, flaky, dst_proxy):
    write_file(src_dir / "big.bin", 4 * CHUNK)
    first = {"done": 0}

    def after_two_parts(request) -> bool:
        # The server goes away after two parts were stored.
        if request.operation != "UploadPart" or request.part_number in s3_upload.MARKER_PARTS:
            return False
        first["done"] += 1
        return first["done"] > 2

    dst_proxy.set(outage=True, error_status=503, error_code="ServiceUnavailable", match=after_two_parts)
    config = flaky(MaxRetry=2, MaxThread=1, MaxParallelFile=1)
    run = run_tool(config)
    assert run.code == 1, run
    assert "1 failed" in run.stdout and "up/big.bin" in run.stdout
    assert "retry 2/2" in run.stderr
    assert "up/big.bin" not in list_keys(dst, bucket)
    assert len(unfinished_uploads(dst, bucket)) == 1  # resumable
    assert DST_KEYS[1] not in run.output
    for log in (src_dir.parent / "log").glob("*.log"):
        assert DST_KEYS[1] not in log.read_text()

    dst_proxy.clear_faults()
    rerun = run_tool(config)
    assert rerun.code == 0, rerun
    assert "has 2 of 4 parts" in rerun.stderr
    assert rerun.bytes_sent == 2 * CHUNK
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []


def test_one_failing_file_does_not_stop_the_others(dst, bucket, src_dir, flaky, dst_proxy):
    job_files(src_dir, big=2, small=4)
    write_file(src_dir / "bad.bin", 2 * CHUNK)
    dst_proxy.set(outage=True, error_status=500, error_code="InternalError", match=lambda r: r.key == "up/bad.bin")
    run = run_tool(flaky(MaxRetry=1))
    assert run.code == 1, run
    assert "failed: up/bad.bin" in run.stdout
    assert "1 source file(s) are not in the destination" in run.stdout
    (src_dir / "bad.bin").unlink()
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 7  # every other file arrived intact
    assert unfinished_uploads(dst, bucket) == []  # its CreateMultipartUpload never reached the server


@pytest.mark.parametrize("delete", ["allowed", "refused"])
def test_etag_mismatch_after_complete_is_reported(dst, bucket, src_dir, flaky, dst_proxy, aws_profiles, delete):
    """The answer to COMPLETE names another ETag than the one computed from the parts sent: the file is reported as
    failed (exit 1, no closing line), never as uploaded, and the object is deleted (a wrong answer cannot be told
    from a wrong object), so that no later run takes it for complete by its size: the rerun uploads it again.  If the
    delete is refused, the summary says so and what to do; nothing unfinished is left either way."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK)
    expected = multipart_etag_of(path)

    def wrong_etag(request, status, headers, body):
        return body.replace(b"<ETag>&#34;", b"<ETag>&#34;0").replace(b'<ETag>"', b'<ETag>"0')

    dst_proxy.set(rewrite_response=wrong_etag, match=lambda r: r.operation == "CompleteMultipartUpload")
    with FaultProxy("127.0.0.1", dst_proxy.port).start() as outer:
        outer.set(outage=delete == "refused", error_status=403, error_code="AccessDenied",
                  match=lambda r: r.operation == "DeleteObject")  # fmt: skip
        aws_profiles.add("outer", outer.endpoint_url, *DST_KEYS)
        run = run_tool(flaky(DesProfileName="outer"))
        assert not outer.exceptions, outer.exceptions
    assert run.code == 1, run
    assert dst_proxy.stats["rewrites"] == 1
    mismatch = (
        f"failed: up/big.bin: ETag mismatch after complete: S3 has 0{expected}, computed from our parts {expected}"
    )
    assert "0 uploaded, 0 skipped, 1 failed" in run.stdout and "MISSION ACCOMPLISHED" not in run.stdout
    assert unfinished_uploads(dst, bucket) == []
    if delete == "refused":
        assert f"{mismatch}; deleting it failed (AccessDenied (HTTP 403)" in run.stdout, run
        assert f"delete s3://{bucket}/up/big.bin yourself, or the next run takes it for complete" in run.stdout
        assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)  # only the answer was wrong, here
        return
    assert f"{mismatch}; the object was deleted, the next run uploads it again" in run.stdout, run
    assert "up/big.bin" not in list_keys(dst, bucket)
    dst_proxy.clear_faults()
    rerun = run_tool(flaky())
    assert rerun.code == 0 and rerun.bytes_sent == 2 * CHUNK, rerun
    assert dst.head_object(Bucket=bucket, Key="up/big.bin")["ETag"].strip('"') == expected
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)


def multipart_etag_of(path, part_size: int = CHUNK) -> str:
    data = path.read_bytes()
    return s3_upload.multipart_etag(
        hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)
    )


def test_lost_complete_answer_and_a_retry_answered_no_such_upload(dst, bucket, src_dir, flaky, dst_proxy,
                                                                  aws_profiles):  # fmt: skip
    """The first COMPLETE completed the upload but its answer was lost; the retry is answered NoSuchUpload, as AWS may
    answer it (SeaweedFS accepts the retry, so a second proxy in front answers it that way).  The tool finds the
    object, checks its ETag and reports it uploaded."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 9)
    dst_proxy.set(reset_rate=1.0, fault_where="response", match=nth_only("CompleteMultipartUpload", 1))
    with FaultProxy("127.0.0.1", dst_proxy.port).start() as outer:
        outer.set(
            outage=True, error_status=404, error_code="NoSuchUpload", match=nth_only("CompleteMultipartUpload", 2)
        )
        aws_profiles.add("outer", outer.endpoint_url, *DST_KEYS)
        run = run_tool(flaky(DesProfileName="outer"))
        completes = [(r.fault, r.status) for r in outer.history if r.operation == "CompleteMultipartUpload"]
        assert not outer.exceptions, outer.exceptions
    assert dst_proxy.stats["resets"] == 1
    # The first passed (its answer then lost behind this proxy), the retry was answered NoSuchUpload.
    assert [fault for fault, _ in completes] == [None, "outage"] and completes[1][1] == 404, completes
    assert "up/big.bin: the answer to COMPLETE was lost; the object is there" in run.stderr, run
    assert_job_done(run, dst, bucket, src_dir)
    assert dst.head_object(Bucket=bucket, Key="up/big.bin")["ETag"].strip('"') == multipart_etag_of(path)


def stall_once(proxy: FaultProxy):
    """match: every try of the first data part (not the resume marker) until one of them has stalled, then nothing.
    A try the tool gave up before its stall point (on a busy machine a send or read can time out first) is not the
    stall the test is about: the part's next try gets it."""
    chosen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def match(request) -> bool:
        if request.operation != "UploadPart" or request.part_number in s3_upload.MARKER_PARTS:
            return False
        with lock:
            if not chosen:
                chosen.append((request.key, request.part_number))
        # A stall is recorded as it starts, before the tool can time out and try again.
        return (request.key, request.part_number) == chosen[0] and not any(r.fault for r in proxy.history)

    return match


def nth_only(operation: str, n: int):
    """match: only the n-th request of this operation."""
    seen = {"n": 0}

    def match(request) -> bool:
        if request.operation != operation:
            return False
        seen["n"] += 1
        return seen["n"] == n

    return match


def first_data_part():
    """match: the first UploadPart that carries data (not the resume marker)."""
    seen = {"n": 0}

    def match(request) -> bool:
        if request.operation != "UploadPart" or request.part_number in s3_upload.MARKER_PARTS:
            return False
        seen["n"] += 1
        return seen["n"] == 1

    return match


def first_only(operation: str):
    return nth_only(operation, 1)


@pytest.mark.parametrize("operation", ["CreateMultipartUpload", "CompleteMultipartUpload", "UploadPart", "PutObject"])
def test_lost_answers_are_retried_without_leftovers(dst, bucket, src_dir, flaky, dst_proxy, operation):
    """The server did the work but the answer never arrived: the retry must not duplicate or lose anything."""
    write_file(src_dir / "big.bin", 2 * CHUNK + 9)
    write_file(src_dir / "small.txt", 500)
    dst_proxy.set(reset_rate=1.0, fault_where="response", match=first_only(operation))
    run = run_tool(flaky())
    assert dst_proxy.stats["resets"] == 1
    assert_job_done(run, dst, bucket, src_dir)


def test_answer_without_etag_is_retried(dst, bucket, src_dir, flaky, dst_proxy):
    write_file(src_dir / "big.bin", 2 * CHUNK)
    match = first_only("UploadPart")

    def drop_etag(request, status, headers, body):
        headers.pop("etag", None)
        return body

    dst_proxy.set(rewrite_response=drop_etag, match=match)
    run = run_tool(flaky())
    assert_job_done(run, dst, bucket, src_dir)
    assert "has no ETag" in run.stderr


def test_kill_at_random_moments_then_rerun(dst, bucket, src_dir, flaky, dst_proxy):
    """SIGKILL one multi-file job 8 times, each time once a random number (1 to 3) of that run's data requests were
    answered, so that every kill lands mid-transfer (checked: the run was still going and the job was not done); the
    last run completes.  Resume must really resume: everything that reached the server, over all runs, stays below
    1.5 x the data."""
    write_file(src_dir / "large.bin", 30 * CHUNK + 5)
    write_file(src_dir / "medium.bin", 4 * CHUNK)
    for i in range(30):
        write_file(src_dir / "many" / f"f{i:02d}.dat", 64 * 1024 + i)
    files = [p for p in src_dir.rglob("*") if p.is_file()]
    data_size, keys = sum(p.stat().st_size for p in files), {"up/" + p.relative_to(src_dir).as_posix() for p in files}
    dst_proxy.set(bandwidth=40 * MiB)  # a part takes ~0.1 s: each kill lands within a part or two of its moment
    config = flaky(MaxThread=2, MaxParallelFile=1)
    rng = random.Random(1234)
    for kill in range(1, 9):
        moment, before = rng.randint(1, 3), len(dst_proxy.history)

        def data_answered(moment=moment, before=before) -> bool:
            return sum(1 for r in dst_proxy.history[before:] if r.operation in ("UploadPart", "PutObject")
                       and r.part_number not in s3_upload.MARKER_PARTS and r.status == 200) >= moment  # fmt: skip

        proc = subprocess.Popen(
            tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(data_answered, f"run {kill}: {moment} data request(s) answered")
        finally:
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
        assert code == -signal.SIGKILL, f"run {kill} had ended before its kill"
        assert set(list_keys(dst, bucket)) != keys, f"run {kill} was killed after the job was done"
    dst_proxy.set(bandwidth=None)
    run = run_tool(config)
    assert_job_done(run, dst, bucket, src_dir)
    ratio = dst_proxy.stats["bytes_up"] / data_size
    sent = dst_proxy.stats["bytes_up"]
    print(f"kill loop: {sent} bytes reached the server for {data_size}: {ratio:.2f}x")
    assert ratio < 1.5


def ctrl_c_as_on_a_terminal() -> None:
    # A job started in the background by a script inherits SIGINT ignored (as CI's test runs are), and Python then
    # leaves it ignored; run in a terminal's foreground, the tool gets Ctrl-C as KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait_for_data(config, client, bucket: str, key: str) -> subprocess.Popen:
    """Start the tool in the background; return once a data part of its upload of key is on the server, or fail the
    test."""
    proc = subprocess.Popen(
        tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_on_a_terminal,
    )  # fmt: skip
    try:
        wait_until(lambda: data_parts(client, bucket, key), f"a data part of {key} on the server")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc


def data_parts(client, bucket: str, key: str) -> list[int]:
    return [n for n in parts_on_server(client, bucket, key) if n not in s3_upload.MARKER_PARTS]


def test_ctrl_c_stops_quickly_and_the_rerun_resumes(dst, bucket, src_dir, flaky, dst_proxy):
    write_file(src_dir / "big.bin", 12 * CHUNK)
    bandwidth = 2 * MiB
    dst_proxy.set(bandwidth=bandwidth)  # the whole upload would take 30 s: stopping must not wait for it
    config = flaky(MaxThread=1, MaxParallelFile=1)
    proc = start_and_wait_for_data(config, dst, bucket, "up/big.bin")  # SIGINT lands mid-transfer
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    err_lines = []
    for line in proc.stderr:  # stamped as they come: the time to stop is the tool's, not coverage's save at exit
        err_lines.append((time.monotonic() - sent, line))
    out = proc.stdout.read()
    proc.wait(timeout=60)
    err = "".join(line for _, line in err_lines)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in out + err
    assert len(unfinished_uploads(dst, bucket)) == 1
    assert "up/big.bin" not in list_keys(dst, bucket)  # in-flight work abandoned, not finished
    kept = len(data_parts(dst, bucket, "up/big.bin"))
    # Not a timing test: the bound is what the parts left would need through the proxy's cap, i.e. how long a tool
    # that waited for its transfers would take; the stop itself takes well under a second, however busy the machine.
    stopped = next((at for at, line in err_lines if "interrupted:" in line), None)
    assert stopped is not None and stopped < (12 - kept) * CHUNK / bandwidth, [f"{at:.1f} s {line}"
                                                                               for at, line in err_lines]  # fmt: skip

    dst_proxy.clear_faults()
    rerun = run_tool(config)
    assert rerun.code == 0, rerun
    assert "resume up/big.bin: upload" in rerun.stderr
    assert 0 < rerun.bytes_sent <= (12 - kept) * CHUNK  # the parts sent before Ctrl-C are not sent again
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []


def test_ctrl_c_while_a_file_completes_names_the_file_completed_meanwhile(dst, bucket, src_dir, flaky, dst_proxy):
    """Ctrl-C lands while CompleteMultipartUpload is on its way: S3 completes the object all the same.  The tool waits
    for that answer (it is one request, not the transfer) and its interrupt message says the file was completed, so
    nobody believes it unfinished."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 1)
    arrived, go_on = threading.Event(), threading.Event()

    def hold_the_completion(request) -> bool:
        if request.operation == "CompleteMultipartUpload":
            arrived.set()
            go_on.wait(30)  # held here, in the proxy, until the tool has had its Ctrl-C
        return False

    dst_proxy.set(match=hold_the_completion)
    config = flaky()
    proc = subprocess.Popen(tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_on_a_terminal)  # fmt: skip
    try:
        assert arrived.wait(60), "no CompleteMultipartUpload reached the server"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)  # let the signal land first; the order does not change what must be said
        go_on.set()
        out, err = proc.communicate(timeout=60)
    finally:
        go_on.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert re.search(r"interrupted: .*completed meanwhile: up/big\.bin", err), err
    assert unfinished_uploads(dst, bucket) == []


def test_source_modified_during_upload_is_never_completed(dst, bucket, src_dir, flaky, dst_proxy):
    path = src_dir / "big.bin"
    write_file(path, 4 * CHUNK)
    rewritten, lock = [], threading.Lock()

    def rewrite_during_the_first_data_part(request) -> bool:
        # Mid-transfer for sure: a data part is on its way and, held here, none can be stored before the rewrite.
        if request.operation == "UploadPart" and request.part_number not in s3_upload.MARKER_PARTS:
            with lock:
                if not rewritten:
                    with open(path, "r+b") as fh:  # rewritten in place: same size, other bytes
                        fh.write(random.randbytes(CHUNK))
                    rewritten.append(request.part_number)
        return False

    dst_proxy.set(match=rewrite_during_the_first_data_part)
    config = flaky(MaxThread=2)
    run = run_tool(config)
    assert rewritten and run.code == 1, run
    assert "changed during the transfer" in run.stdout
    assert "up/big.bin" not in list_keys(dst, bucket)  # never completed with mixed content
    assert unfinished_uploads(dst, bucket) == []  # and its parts were not left behind

    dst_proxy.clear_faults()
    rerun = run_tool(config)  # the next run uploads the file as it is now
    assert rerun.code == 0, rerun
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_short_read_from_an_s3_source_is_retried(src, dst, src_server, src_bucket, bucket, aws_profiles, flaky):
    """A ranged GET whose body ends early, with a Content-Length that agrees (so botocore sees nothing wrong): the tool
    counts the bytes, reads that part again, and completes."""
    data = random.randbytes(2 * CHUNK + 5)
    src.put_object(Bucket=src_bucket, Key="up/big.bin", Body=data)
    with FaultProxy("127.0.0.1", src_server.port).start() as src_proxy:
        src_proxy.set(rewrite_response=lambda request, status, headers, body: body[: len(body) // 2],
                      match=first_only("GetObject"))  # fmt: skip
        aws_profiles.add("shortsrc", src_proxy.endpoint_url, *SRC_KEYS)
        run = run_tool(flaky(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName="shortsrc"))
        assert src_proxy.stats["rewrites"] == 1 and not src_proxy.exceptions
    assert run.code == 0, run
    assert re.search(r"READ up/big\.bin part \d failed: ShortRead: .*: got \d+ of \d+ bytes at \d+; retry 1/10",
                     run.stderr), run  # fmt: skip
    assert object_md5(dst, bucket, "up/big.bin") == hashlib.md5(data).hexdigest()
    assert unfinished_uploads(dst, bucket) == []


def test_local_file_cut_short_mid_upload_fails_and_its_upload_is_aborted(dst, bucket, src_dir, flaky, dst_proxy):
    """The file is truncated while part 1 is on its way: reading part 2 gets fewer bytes than listed.  The file fails
    at once (no retry: waiting will not bring the bytes back), its upload is aborted, and the rerun uploads the file
    as it is now."""
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK)

    def truncate_during_part_1(request) -> bool:
        if request.operation == "UploadPart" and request.part_number == 1 and path.stat().st_size > CHUNK + 10:
            os.truncate(path, CHUNK + 10)
        return False

    dst_proxy.set(match=truncate_during_part_1)
    run = run_tool(flaky(MaxThread=1, MaxParallelFile=1))
    assert run.code == 1, run
    assert f"failed: up/big.bin: {path} is shorter than when listed (read 10 of {CHUNK} bytes at {CHUNK})" in run.stdout
    assert "READ up/big.bin part 2 failed" not in run.stderr  # not retried
    assert "up/big.bin" not in list_keys(dst, bucket)
    assert unfinished_uploads(dst, bucket) == []

    dst_proxy.clear_faults()
    rerun = run_tool(flaky())
    assert rerun.code == 0, rerun
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_complete_refused_by_the_store_fails_the_file_and_the_rerun_completes_it_from_its_parts(
    dst, bucket, src_dir, flaky, dst_proxy
):
    """A final refusal of CompleteMultipartUpload (here InvalidPart) is not retried and not taken for the lost
    answer of an earlier attempt: the file fails with S3's reason, its parts stay, and a rerun completes it from
    them without sending a byte again."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 99)
    dst_proxy.set(outage=True, error_status=400, error_code="InvalidPart",
                  match=lambda r: r.operation == "CompleteMultipartUpload")  # fmt: skip
    run = run_tool(flaky())
    assert run.code == 1, run
    assert dst_proxy.stats["errors"] == 1  # refused once: not retried
    assert re.search(r"^  failed: up/big.bin: InvalidPart \(HTTP 400\).*; rerun the same command once the cause is "
                     r"fixed$", run.stdout, flags=re.M), run  # fmt: skip
    assert list_keys(dst, bucket) == {}
    assert parts_on_server(dst, bucket, "up/big.bin") == [1, 2, 3, *s3_upload.MARKER_PARTS]
    dst_proxy.clear_faults()
    rerun = run_tool(flaky())
    assert rerun.code == 0 and rerun.bytes_sent == 0, rerun
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
