"""Concurrent writers (issue "Grow beyond one machine", item 1): two runs of one job at the same time, on two machines,
decided from S3 alone.  None aborts another's live upload; a run whose object ends complete and byte-identical exits
0, whoever completed it; no object is ever mixed; nothing unfinished stays once the runs end (or the next run, once
the upload is abandoned, removes it).  The runs here use the default AbandonedAfter (an hour)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import s3_upload
from conftest import (
    DST_KEYS,
    MiB,
    list_keys,
    md5,
    md5_file,
    object_md5,
    run_tool,
    tool_command,
    unfinished_uploads,
    wait_until,
    write_file,
)
from faultproxy import FaultProxy, Gate

CHUNK = 5 * MiB


def start(config) -> subprocess.Popen:
    return subprocess.Popen(tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def test_two_runs_started_at_once_both_succeed(dst, bucket, src_dir, make_config):
    """Started together, each makes its own upload (neither sees the other's): both complete, the second completion
    replaces the object with the same bytes, both exit 0, nothing unfinished is left."""
    path = src_dir / "big.bin"
    write_file(path, 6 * CHUNK + 7)
    config = make_config(AbandonedAfter=3600, MaxThread=2, MaxParallelFile=1)
    a, b = start(config), start(config)
    (code_a, out_a), (code_b, out_b) = finish(a), finish(b)
    assert (code_a, code_b) == (0, 0), out_a + out_b
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_run_that_joins_another_runs_upload_and_completes_it_first(dst, bucket, src_dir, make_config, aws_profiles,
                                                                     dst_server):  # fmt: skip
    """Run A has its marker and first part on S3, its other parts held at a proxy.  Run B, started meanwhile, joins A's
    upload (made for this very version: the marker says so), sends the missing parts and completes it.  A's held parts
    then find the upload gone: the object is there with this file's ETag, so A exits 0 too (it used to exit 1 with
    NoSuchUpload).  One object, byte-identical, nothing unfinished."""
    path = src_dir / "big.bin"
    write_file(path, 6 * CHUNK + 7)
    gate = Gate(lambda r: r.operation == "UploadPart" and 1 < (r.part_number or 0) < min(s3_upload.MARKER_PARTS))
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        a = start(make_config(DesProfileName="held", AbandonedAfter=3600, MaxThread=1, MaxParallelFile=1))
        try:
            wait_until(lambda: gate.held, "run A's second part held")
            b = run_tool(make_config(AbandonedAfter=3600))
        finally:
            gate.open()
        code_a, out_a = finish(a)
        assert not proxy.exceptions and not gate.timed_out
    assert b.code == 0, b
    assert "resume up/big.bin: upload" in b.stderr and "made for this version of the source" in b.stderr, b
    assert code_a == 0, out_a
    assert "another run completed its upload" in out_a, out_a
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_run_whose_marker_is_late_is_left_alone_by_another_run(dst, bucket, src_dir, make_config, aws_profiles,
                                                                 dst_server):  # fmt: skip
    """Run A created its upload, but its marker is held (a slow, retried request).  Run B finds that upload with nothing
    in it: it may be a run's new upload, so B leaves it alone (it used to be resumed and, with a late marker of
    another layout, aborted under A) and makes its own.  Both exit 0, the object is right; A's upload is gone once A
    completes it."""
    path = src_dir / "big.bin"
    write_file(path, 4 * CHUNK + 7)
    gate = Gate(lambda r: r.operation == "UploadPart" and (r.part_number or 0) in s3_upload.MARKER_PARTS)
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        a = start(make_config(DesProfileName="held", AbandonedAfter=3600, MaxParallelFile=1))
        try:
            wait_until(lambda: gate.held, "run A's marker held")
            b = run_tool(make_config(AbandonedAfter=3600))
        finally:
            gate.open()
        code_a, out_a = finish(a)
        assert not proxy.exceptions and not gate.timed_out
    assert b.code == 0, b
    assert "leaving unfinished upload" in b.stderr and "nothing is in it" in b.stderr, b
    assert code_a == 0, out_a
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_lost_create_answer_never_aborts_another_runs_upload(dst, bucket, src_dir, make_config, aws_profiles,
                                                               dst_server):  # fmt: skip
    """Run A is at work on the key (its parts held at a proxy).  Run B's first CreateMultipartUpload is made but its
    answer lost, so B asks again: the upload a lost answer made cannot be told from another run's new one, so no
    upload of the key is aborted for it (B used to abort every upload of the key from the last 5 minutes, A's live
    one included).  Both exit 0; the empty upload B's lost answer left is removed by a later run once abandoned."""
    path = src_dir / "big.bin"
    write_file(path, 4 * CHUNK + 7)
    gate = Gate(lambda r: r.operation == "UploadPart" and 1 < (r.part_number or 0) < min(s3_upload.MARKER_PARTS))
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as held, \
            FaultProxy("127.0.0.1", dst_server.port).start() as lossy:  # fmt: skip
        aws_profiles.add("held", held.endpoint_url, *DST_KEYS)
        aws_profiles.add("lossy", lossy.endpoint_url, *DST_KEYS)
        a = start(make_config(DesProfileName="held", AbandonedAfter=3600, MaxThread=1, MaxParallelFile=1))
        try:
            wait_until(lambda: gate.held, "run A at work on the key")
            creates = []

            def first_create(request) -> bool:
                if request.operation == "CreateMultipartUpload":
                    creates.append(request)
                    return len(creates) == 1
                return False

            lossy.set(reset_rate=1.0, fault_where="response", match=first_create)
            # B cannot join A's upload (another ChunkSize), so it creates its own: the first answer is lost.
            b = run_tool(make_config(DesProfileName="lossy", AbandonedAfter=3600, ChunkSize=6 * MiB))
        finally:
            gate.open()
        code_a, out_a = finish(a)
    assert len(creates) == 2 and lossy.stats["resets"] == 1
    assert b.code == 0, b
    assert code_a == 0, out_a
    assert "another run completed" not in out_a  # A completed its own upload: nobody aborted it
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    left = unfinished_uploads(dst, bucket)
    assert len(left) <= 1  # the upload B's lost answer made, empty, if the store kept it
    time.sleep(1)
    later = run_tool(make_config(AbandonedAfter=0))  # as a run an hour later sees it
    assert later.code == 0 and later.bytes_sent == 0, later
    assert unfinished_uploads(dst, bucket) == []


@pytest.mark.parametrize("when", ["mid-file", "completing"])
def test_a_run_whose_upload_is_aborted_by_someone_else_fails_and_the_next_run_uploads_it(
        when, dst, bucket, src_dir, make_config, aws_profiles, dst_server):  # fmt: skip
    """Someone aborts run A's upload while A's second part (or its CompleteMultipartUpload) is held at a proxy, and
    no object is made: A finds its upload gone (NoSuchUpload) and nothing at the key, so the file fails, said so
    (exit 1, never a success); the next run uploads it."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 7)
    data_part = min(s3_upload.MARKER_PARTS)
    gate = Gate((lambda r: r.operation == "CompleteMultipartUpload") if when == "completing" else
                (lambda r: r.operation == "UploadPart" and 1 < (r.part_number or 0) < data_part))  # fmt: skip
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        config = make_config(DesProfileName="held", AbandonedAfter=3600, MaxThread=1, MaxParallelFile=1)
        a = start(config)
        try:
            wait_until(lambda: gate.held, f"run A held {when}")
            [upload] = unfinished_uploads(dst, bucket)
            dst.abort_multipart_upload(Bucket=bucket, Key="up/big.bin", UploadId=upload["UploadId"])
        finally:
            gate.open()
        code_a, out_a = finish(a)
        assert not proxy.exceptions and not gate.timed_out
        assert code_a == 1, out_a
        assert "its upload is gone (NoSuchUpload: aborted by another run or a person) and no object was made" in out_a
        assert list_keys(dst, bucket) == {}
        again = run_tool(config)
    assert again.code == 0, again
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


@pytest.mark.parametrize("when", ["mid-file", "completing", "completing-on-a-store-without-conditional-writes"])
def test_a_run_whose_upload_is_gone_and_whose_key_holds_other_bytes_fails_and_deletes_nothing(
        when, dst, bucket, src_dir, make_config, aws_profiles, dst_server):  # fmt: skip
    """Run A's upload is aborted by someone else, and another object of the same size put at the key, while A's second
    part (or its CompleteMultipartUpload) is held at a proxy.  A then finds its upload gone (NoSuchUpload): the object
    at the key is not this file's (its ETag is not the one of the file's parts), so A fails and deletes nothing: it
    is someone's good data."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 7)
    other = os.urandom(2 * CHUNK + 7)
    data_part = min(s3_upload.MARKER_PARTS)
    completing = when.startswith("completing")
    gate = Gate((lambda r: r.operation == "CompleteMultipartUpload") if completing else
                (lambda r: r.operation == "UploadPart" and 1 < (r.part_number or 0) < data_part))  # fmt: skip
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        if when == "completing-on-a-store-without-conditional-writes":  # so the completion finds the upload gone

            def refuse_conditions(request) -> bool:
                gate(request)
                return "if-none-match" in request.headers or "if-match" in request.headers

            proxy.set(outage=True, error_status=501, error_code="NotImplemented", match=refuse_conditions,
                      error_message="A header you provided implies functionality that is not implemented: "
                                    "If-None-Match")  # fmt: skip
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        a = start(make_config(DesProfileName="held", AbandonedAfter=3600, MaxThread=1, MaxParallelFile=1))
        try:
            wait_until(lambda: gate.held, f"run A held {when}")
            [upload] = unfinished_uploads(dst, bucket)
            dst.abort_multipart_upload(Bucket=bucket, Key="up/big.bin", UploadId=upload["UploadId"])
            dst.put_object(Bucket=bucket, Key="up/big.bin", Body=other)
        finally:
            gate.open()
        code_a, out_a = finish(a)
        assert not proxy.exceptions and not gate.timed_out
    assert code_a == 1, out_a
    # Completing, the store answers the run's If-None-Match (412) before it finds the upload gone: a conflict.
    assert any(why in out_a for why in ("cannot be shown to be this file", "is not this file's", "conflict: s3://"))
    assert "nothing was deleted" in out_a or "not overwritten, nothing deleted" in out_a, out_a
    assert object_md5(dst, bucket, "up/big.bin") == md5(other)
    assert unfinished_uploads(dst, bucket) == []
