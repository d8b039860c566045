"""Fault injection on the real wire: the tool talks to SeaweedFS through tests/faultproxy.py, which resets
connections, answers 503/500 itself, stalls, caps bandwidth or loses answers.  Every scenario ends with the bytes
checked, nothing unfinished on the server, and the retries visible in the log."""

from __future__ import annotations

import random
import signal
import subprocess
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
    run_tool,
    tool_command,
    unfinished_uploads,
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


def test_stalled_connection_times_out_and_is_retried(dst, bucket, src_dir, flaky, dst_proxy):
    job_files(src_dir, big=2, small=3)
    dst_proxy.set(stall_rate=1.0, match=first_only("UploadPart"))  # a sure stall, then a healthy network
    run = run_tool(flaky(ReadTimeout=1, ConnectTimeout=1), timeout=120)
    assert_job_done(run, dst, bucket, src_dir)
    assert dst_proxy.stats["stalls"] >= 1
    assert "ReadTimeoutError" in run.stderr or "timeout" in run.stderr.lower()


def test_outage_longer_than_retries_fails_cleanly_then_resumes(dst, bucket, src_dir, flaky, dst_proxy):
    write_file(src_dir / "big.bin", 4 * CHUNK)
    first = {"done": 0}

    def after_two_parts(request) -> bool:
        # The server goes away after two parts were stored.
        if request.operation != "UploadPart" or request.part_number == s3_upload.MARKER_PART:
            return False
        first["done"] += 1
        return first["done"] > 2

    dst_proxy.set(outage=True, error_status=503, error_code="ServiceUnavailable", match=after_two_parts)
    config = flaky(MaxRetry=2, MaxThread=1)
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


def test_etag_mismatch_after_complete_is_reported(dst, bucket, src_dir, flaky, dst_proxy):
    write_file(src_dir / "big.bin", 2 * CHUNK)

    def wrong_etag(request, status, headers, body):
        return body.replace(b"<ETag>&#34;", b"<ETag>&#34;0").replace(b'<ETag>"', b'<ETag>"0')

    dst_proxy.set(rewrite_response=wrong_etag, match=lambda r: r.operation == "CompleteMultipartUpload")
    run = run_tool(flaky())
    assert run.code == 1, run
    assert "ETag mismatch after complete" in run.stdout


def first_only(operation: str):
    seen = {"n": 0}

    def match(request) -> bool:
        if request.operation != operation:
            return False
        seen["n"] += 1
        return seen["n"] == 1

    return match


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
    """SIGKILL one multi-file job 8 times at random moments; the last run completes.  Resume must really resume:
    everything that reached the server, over all runs, stays below 1.5 x the data."""
    write_file(src_dir / "large.bin", 30 * CHUNK + 5)
    write_file(src_dir / "medium.bin", 4 * CHUNK)
    for i in range(30):
        write_file(src_dir / "many" / f"f{i:02d}.dat", 64 * 1024 + i)
    data_size = sum(p.stat().st_size for p in src_dir.rglob("*") if p.is_file())
    dst_proxy.set(bandwidth=40 * MiB)  # a full run takes ~5 s, so all 8 kills land mid-transfer
    config = flaky(MaxThread=2, MaxParallelFile=1)
    rng = random.Random(1234)
    killed = 0
    for _ in range(8):
        proc = subprocess.Popen(
            tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
    assert killed >= 6
    run = run_tool(config)
    assert_job_done(run, dst, bucket, src_dir)
    ratio = dst_proxy.stats["bytes_up"] / data_size
    sent = dst_proxy.stats["bytes_up"]
    print(f"kill loop: {killed} kills; {sent} bytes reached the server for {data_size}: {ratio:.2f}x")
    assert ratio < 1.5


def start_and_wait_for_an_upload(config, client, bucket: str) -> subprocess.Popen:
    """Start the tool in the background and return once its multipart upload exists on the server."""
    proc = subprocess.Popen(
        tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not unfinished_uploads(client, bucket):
        time.sleep(0.05)
    return proc


def test_ctrl_c_stops_quickly_and_the_rerun_resumes(dst, bucket, src_dir, flaky, dst_proxy):
    write_file(src_dir / "big.bin", 12 * CHUNK)
    dst_proxy.set(bandwidth=2 * MiB)  # the whole upload would take 30 s: stopping must not wait for it
    config = flaky(MaxThread=2)
    proc = start_and_wait_for_an_upload(config, dst, bucket)
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    # Not a timing test: a generous bound, far below the 30 s the upload would need, on a shared machine.
    assert time.monotonic() - sent < 15
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in out + err
    assert len(unfinished_uploads(dst, bucket)) == 1
    assert "up/big.bin" not in list_keys(dst, bucket)  # in-flight work abandoned, not finished

    dst_proxy.clear_faults()
    rerun = run_tool(config)
    assert rerun.code == 0, rerun
    assert "resume up/big.bin" in rerun.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []


def test_source_modified_during_upload_is_never_completed(dst, bucket, src_dir, flaky, dst_proxy):
    path = src_dir / "big.bin"
    write_file(path, 8 * CHUNK)
    dst_proxy.set(bandwidth=10 * MiB)  # about 4 s
    config = flaky(MaxThread=2)
    proc = start_and_wait_for_an_upload(config, dst, bucket)
    time.sleep(0.5)
    with open(path, "r+b") as fh:  # rewritten in place: same size, other bytes
        fh.write(random.randbytes(CHUNK))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "changed during the transfer" in out
    assert "up/big.bin" not in list_keys(dst, bucket)  # never completed with mixed content
    assert unfinished_uploads(dst, bucket) == []  # and its parts were not left behind

    dst_proxy.clear_faults()
    rerun = run_tool(config)  # the next run uploads the file as it is now
    assert rerun.code == 0, rerun
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
