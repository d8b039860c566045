"""A success is always true: no wrong, mixed or missing object behind exit 0 (issue 9).

Each test first reproduced its defect against a real server (SeaweedFS; moto where a store must keep keys AWS keeps
apart, and for SQS), then pinned the fix.  Every test checks the bytes at the destination and what is left
unfinished."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from test_resume import start_upload

import s3_upload
from conftest import (
    DST_KEYS,
    MOTO_KEYS,
    SRC_KEYS,
    MiB,
    assert_tree_uploaded,
    damage_part,
    in_process_logging,
    leave_unfinished,
    list_keys,
    load_report,
    md5,
    md5_file,
    modified_earlier,
    object_md5,
    run_tool,
    tool_command,
    unfinished_uploads,
    without_permission_override,
    write_config,
    write_file,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB


@pytest.fixture
def s3_job(make_config, src_profile, src_bucket):
    """An S3_TO_S3 config: SrcBucket on the source server, S3Prefix "data/"."""

    def make(**overrides):
        values = dict(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile, S3Prefix="data/")
        values.update(overrides)
        return make_config(**values)

    return make


# ---------------------------------------------------------------------------------------------------------------------
# 1. S3_TO_S3 never completes an object whose parts come from two source versions
# ---------------------------------------------------------------------------------------------------------------------


def test_s3_resume_never_mixes_versions_whatever_the_clocks_say(src, src_bucket, dst, bucket, s3_job):
    """An earlier run left part 1 of version 1.  The source was replaced by version 2 of the same size, but the
    destination's clock says the upload began after that (clocks of two stores differ, or the same second): the
    old part must not be completed with version 2's other parts."""
    v1 = os.urandom(2 * CHUNK + 2 * MiB)
    src.put_object(Bucket=src_bucket, Key="data/big.bin", Body=v1)
    v2 = os.urandom(len(v1))
    src.put_object(Bucket=src_bucket, Key="data/big.bin", Body=v2)
    start_upload(dst, bucket, "data/big.bin", v1, CHUNK, parts=(1,))  # initiated after v2's LastModified
    run = run_tool(s3_job())
    assert run.code == 0, run
    assert object_md5(dst, bucket, "data/big.bin") == md5(v2)
    assert unfinished_uploads(dst, bucket) == []


def test_s3_upload_made_for_another_source_version_restarts(src, src_bucket, dst, bucket, s3_job, aws_profiles,
                                                            dst_server):  # fmt: skip
    """The tool's own upload (part 1 of version 1 on S3, then the run failed) is tied to version 1: after the
    source is replaced, the rerun restarts the file instead of reusing the old part."""
    v1 = os.urandom(2 * CHUNK + 2 * MiB)
    src.put_object(Bucket=src_bucket, Key="data/big.bin", Body=v1)
    leave_unfinished(s3_job, aws_profiles, dst_server)
    assert s3_upload_parts(dst, bucket, "data/big.bin") == [1, *s3_upload.MARKER_PARTS]
    v2 = os.urandom(len(v1))
    src.put_object(Bucket=src_bucket, Key="data/big.bin", Body=v2)
    run = run_tool(s3_job())
    assert run.code == 0, run
    assert "restart data/big.bin" in run.stderr
    assert run.bytes_sent == len(v2)
    assert object_md5(dst, bucket, "data/big.bin") == md5(v2)
    assert unfinished_uploads(dst, bucket) == []


def s3_upload_parts(client, bucket: str, key: str) -> list[int]:
    uploads = [u for u in unfinished_uploads(client, bucket) if u["Key"] == key]
    assert len(uploads) == 1, uploads
    parts = client.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", [])
    return sorted(p["PartNumber"] for p in parts)


def test_source_replaced_mid_copy_aborts_the_upload(src, src_bucket, dst, bucket, s3_job, aws_profiles, src_server):
    """The ranged GET of part 2 finds the source replaced (PreconditionFailed): the file fails and its upload, which
    holds part 1 of the old version, is aborted, not left behind."""
    v1 = os.urandom(3 * CHUNK)
    src.put_object(Bucket=src_bucket, Key="data/big.bin", Body=v1)
    v2 = os.urandom(len(v1))
    replaced = []

    def replace_before_part_2(request) -> bool:
        if request.operation == "GetObject" and request.headers.get("range", "").startswith(f"bytes={CHUNK}-"):
            if not replaced:
                src.put_object(Bucket=src_bucket, Key="data/big.bin", Body=v2)
                replaced.append(True)
        return False

    with FaultProxy("127.0.0.1", src_server.port).start() as proxy:
        proxy.set(match=replace_before_part_2)
        aws_profiles.add("srcproxy", proxy.endpoint_url, *SRC_KEYS)
        run = run_tool(s3_job(SrcProfileName="srcproxy", MaxThread=1, MaxParallelFile=1))
    assert replaced
    assert run.code == 1, run
    assert "changed" in run.stdout
    assert "data/big.bin" not in list_keys(dst, bucket)
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(s3_job())
    assert again.code == 0, again
    assert object_md5(dst, bucket, "data/big.bin") == md5(v2)


# ---------------------------------------------------------------------------------------------------------------------
# 2. A local file rewritten in place mid-upload, same size, mtime restored
# ---------------------------------------------------------------------------------------------------------------------


def test_local_file_rewritten_in_place_with_mtime_restored_is_never_completed(dst, bucket, src_dir, make_config,
                                                                              aws_profiles, dst_server):  # fmt: skip
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK)
    before = path.stat()
    rewritten = []

    def rewrite_during_part_2(request) -> bool:
        if request.operation == "UploadPart" and request.query.get("partNumber") == "2" and not rewritten:
            with open(path, "r+b") as fh:  # what cp -p, rsync -t or tar -x do: new bytes, then the old mtime
                fh.write(os.urandom(CHUNK))  # part 1, already sent
                fh.seek(2 * CHUNK)
                fh.write(os.urandom(CHUNK))  # part 3, not read yet
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            rewritten.append(True)
        return False

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=rewrite_during_part_2)
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched", MaxThread=1, MaxParallelFile=1))
    assert rewritten and path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    assert run.code == 1, run
    assert "changed during the transfer" in run.stdout
    assert "up/big.bin" not in list_keys(dst, bucket)
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(make_config())
    assert again.code == 0, again
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Entries that cannot be stat'ed or opened are listing errors, never skipped in silence
# ---------------------------------------------------------------------------------------------------------------------


def test_files_in_a_directory_that_cannot_be_entered_are_listing_errors(dst, bucket, src_dir, make_config):
    write_file(src_dir / "ok.txt", 100)
    write_file(src_dir / "locked" / "inner.bin", 200)
    (src_dir / "locked").chmod(0o644)  # can be listed (r) but not entered (no x)
    try:
        config = make_config()
        proc = subprocess.run(tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, preexec_fn=without_permission_override)  # fmt: skip
    finally:
        (src_dir / "locked").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "inner.bin" in proc.stdout and "Permission denied" in proc.stdout  # named in the summary
    assert "Traceback" not in proc.stderr
    assert list_keys(dst, bucket) == {"up/ok.txt": 100}
    assert object_md5(dst, bucket, "up/ok.txt") == md5_file(src_dir / "ok.txt")


def test_a_directory_that_cannot_be_listed_is_a_listing_error(dst, bucket, src_dir, make_config):
    """A directory that can be entered but not read: its files cannot even be named.  The directory is a listing
    error (named in the summary, exit 1), the other files go on, and the rerun, once it can be read, sends it."""
    write_file(src_dir / "ok.txt", 100)
    write_file(src_dir / "sealed" / "inner.bin", 200)
    config = make_config()
    (src_dir / "sealed").chmod(0o311)  # x but no r
    try:
        proc = subprocess.run(tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, preexec_fn=without_permission_override)  # fmt: skip
    finally:
        (src_dir / "sealed").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"failed to list: {src_dir / 'sealed'}: cannot be listed: Permission denied" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr and "MISSION ACCOMPLISHED" not in proc.stdout
    assert list_keys(dst, bucket) == {"up/ok.txt": 100}
    assert object_md5(dst, bucket, "up/ok.txt") == md5_file(src_dir / "ok.txt")
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(config)
    assert again.code == 0, again
    assert again.bytes_sent == 200
    assert object_md5(dst, bucket, "up/sealed/inner.bin") == md5_file(src_dir / "sealed" / "inner.bin")


def test_dangling_link_and_a_file_gone_before_stat_are_listing_errors(src_dir, monkeypatch):
    write_file(src_dir / "ok.txt", 10)
    (src_dir / "dangling").symlink_to(src_dir / "nowhere")
    write_file(src_dir / "vanished.bin", 10)
    real_stat = os.stat

    def stat_after_it_was_deleted(path, *args, **kwargs):  # listed by the directory, gone before its stat
        if str(path).endswith("vanished.bin"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(s3_upload.os, "stat", stat_after_it_was_deleted)
    settings = s3_upload.Settings(des_bucket="b", src_dir=str(src_dir), s3_prefix="up")
    source = s3_upload.LocalSource(settings)
    files = list(s3_upload.walk_source(source))
    assert [f.key for f in files] == ["up/ok.txt"]
    errors = "\n".join(source.listing_errors)
    assert "dangling" in errors and "vanished.bin" in errors, errors


# ---------------------------------------------------------------------------------------------------------------------
# 4. Two local names never share one key
# ---------------------------------------------------------------------------------------------------------------------


def test_backslash_is_part_of_a_name_not_a_separator(moto_s3, moto_bucket, src_dir, make_config):
    """On Linux `a\\b.txt` is one file name; `a/b.txt` is a file in a folder.  AWS (and moto) keep the two keys
    apart (SeaweedFS would store both as a/b.txt, so this runs on moto)."""
    if os.sep == "\\":
        pytest.skip("a backslash separates folders on Windows")
    write_file(src_dir / "a\\b.txt", 1000)
    write_file(src_dir / "a" / "b.txt", 2000)
    run = run_tool(make_config(DesProfileName="moto", DesBucket=moto_bucket, AddressingStyle="path"))
    assert run.code == 0, run
    assert list_keys(moto_s3, moto_bucket) == {"up/a\\b.txt": 1000, "up/a/b.txt": 2000}
    assert object_md5(moto_s3, moto_bucket, "up/a\\b.txt") == md5_file(src_dir / "a\\b.txt")
    assert object_md5(moto_s3, moto_bucket, "up/a/b.txt") == md5_file(src_dir / "a" / "b.txt")


def test_names_that_would_share_a_key_are_an_error_naming_both(dst, bucket, src_dir, make_config):
    """A name that is not UTF-8 gets a key with its bytes spelt out (‛E9 for the byte 0xE9); a file already named
    that way would share the key: both are named as errors, neither is uploaded, the rest goes on."""
    raw = os.fsencode(str(src_dir)) + b"/caf\xe9.txt"
    with open(raw, "wb") as fh:
        fh.write(b"latin-1 name")
    write_file(src_dir / "caf\u201bE9.txt", 50)
    write_file(src_dir / "other.txt", 60)
    run = run_tool(make_config())
    assert run.code == 1, run
    assert "same key" in run.stdout and "caf\u201bE9.txt" in run.stdout and "caf\\xe9.txt" in run.stdout
    assert list_keys(dst, bucket) == {"up/other.txt": 60}
    assert object_md5(dst, bucket, "up/other.txt") == md5_file(src_dir / "other.txt")
    assert "Traceback" not in run.output


@pytest.mark.parametrize("size", [2 * CHUNK + 5, 1000], ids=["multipart", "one-put"])
def test_a_damaged_part_a_store_kept_is_never_a_success(moto_s3, moto_bucket, src_dir, make_config, monkeypatch,
                                                        capsys, request, size):  # fmt: skip
    """A store that does not check Content-MD5 (moto; AWS and SeaweedFS refuse the part) keeps a part damaged on the
    way: the ETag check fails the file, and the object it made is deleted, so that no later run takes it for
    complete (same key and size) and reports a success over wrong bytes; the rerun sends the file again."""
    path = src_dir / "big.bin"
    write_file(path, size)
    config = make_config(DesProfileName="moto", DesBucket=moto_bucket, AddressingStyle="path")
    damaged = damage_part(monkeypatch, 2 if size > CHUNK else None)  # part 2, or the one PutObject
    in_process_logging(monkeypatch, request)
    code = s3_upload.main(["--config", str(config)])
    out, _err = capsys.readouterr()
    assert damaged == [2 if size > CHUNK else 0]
    assert code == 1, out
    assert "failed: up/big.bin: ETag mismatch after" in out
    assert "up/big.bin" not in list_keys(moto_s3, moto_bucket)  # not left for a rerun to skip
    assert unfinished_uploads(moto_s3, moto_bucket) == []
    rerun = run_tool(config)
    assert rerun.code == 0, rerun
    assert rerun.bytes_sent == size
    assert object_md5(moto_s3, moto_bucket, "up/big.bin") == md5_file(path)


# ---------------------------------------------------------------------------------------------------------------------
# 5. An unfinished upload is aborted once its file no longer needs it
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["now-one-put", "now-ignored", "already-complete"])
def test_an_upload_the_file_no_longer_needs_is_aborted(case, dst, bucket, src_dir, make_config):
    """An earlier run's upload (nothing added to it for AbandonedAfter: here 0 s) that the file no longer needs: the
    file now goes up in one request, is ignored, or is complete already."""
    path = src_dir / "mid.bin"
    write_file(path, CHUNK + MiB)
    modified_earlier(path)
    start_upload(dst, bucket, "up/mid.bin", path.read_bytes(), CHUNK, parts=(1,))  # an earlier run, ChunkSize 5 MiB
    if case == "already-complete":
        dst.put_object(Bucket=bucket, Key="up/mid.bin", Body=path.read_bytes())  # completed since, by another machine
        run = run_tool(make_config())
    elif case == "now-one-put":
        run = run_tool(make_config(ChunkSize=8 * MiB))  # the file is now smaller than one chunk
    else:
        run = run_tool(make_config(ChunkSize=8 * MiB, IgnoreSmallFile=True))
    assert run.code == 0, run
    assert unfinished_uploads(dst, bucket) == []
    if case == "now-ignored":
        assert list_keys(dst, bucket) == {}
    else:
        assert object_md5(dst, bucket, "up/mid.bin") == md5_file(path)


@pytest.mark.parametrize("part_size", [6 * MiB, CHUNK], ids=["another-chunksize", "this-layout-no-marker"])
def test_an_upload_another_run_adds_parts_to_is_never_aborted(part_size, dst, bucket, src_dir, make_config):
    """Concurrent writers: an upload of the key that a part was added to a moment ago may be another run's work in
    progress.  With AbandonedAfter at its default (an hour), the run leaves it alone and says so in its closing block,
    whatever the upload holds: another ChunkSize (it cannot be joined), or this layout without the tool's marker
    (another tool's, still adding parts: joined only once abandoned); once nothing was added to it for
    AbandonedAfter, a run aborts it."""
    path = src_dir / "mid.bin"
    write_file(path, 2 * CHUNK + MiB)
    other = start_upload(dst, bucket, "up/mid.bin", path.read_bytes(), part_size, parts=(1,))  # another run or tool
    run = run_tool(make_config(AbandonedAfter=3600))
    assert run.code == 0, run
    assert object_md5(dst, bucket, "up/mid.bin") == md5_file(path)
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [other]
    assert "left alone: 1 unfinished upload(s)" in run.stdout, run
    later = run_tool(make_config(AbandonedAfter=0))  # as a run an hour later sees it
    assert later.code == 0 and later.bytes_sent == 0, later
    assert unfinished_uploads(dst, bucket) == []


# ---------------------------------------------------------------------------------------------------------------------
# 6. S3Prefix values with a leading or doubled slash: the comparison looks where the objects were written
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "written"), [("backup//", "backup/"), ("/lead", "lead/"), ("a//b/", "a/b/")])
def test_odd_slashes_in_s3prefix_upload_once_and_then_match(prefix, written, dst, bucket, src_dir, make_config):
    write_file(src_dir / "x.txt", 300)
    write_file(src_dir / "sub" / "y.txt", 400)
    config = make_config(S3Prefix=prefix)
    run = run_tool(config)
    assert run.code == 0, run
    assert "All source files are in destination" in run.stdout
    assert list_keys(dst, bucket) == {written + "x.txt": 300, written + "sub/y.txt": 400}
    assert assert_tree_uploaded(dst, bucket, written, src_dir) == 2
    again = run_tool(config)
    assert again.code == 0 and again.bytes_sent == 0, again


# ---------------------------------------------------------------------------------------------------------------------
# 7, 8. Fleet mode: a message is a hint, never an authority
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def sqs(moto_url):
    import boto3

    return boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=MOTO_KEYS[0],
                        aws_secret_access_key=MOTO_KEYS[1])  # fmt: skip


def fleet_queue(sqs) -> tuple[str, str]:
    from test_sqs_fleet import make_queues

    return make_queues(sqs, 1)  # a refused message goes to the dead-letter queue after one try


def work_through(config, queue: str) -> subprocess.CompletedProcess:
    return subprocess.run(tool_command(config) + ["--sqs-worker", queue, "--idle-exit", "2"], cwd=config.parent,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)  # fmt: skip


def message(**fields) -> str:
    body = {"v": 1, "job_type": "LOCAL_TO_S3", "src_bucket": "", "src_key_or_path": "", "des_bucket": "",
            "key": "", "size": 0, "mtime": 0.0, "src_etag": ""}  # fmt: skip
    body.update(fields)
    return json.dumps(body)


def test_local_worker_refuses_a_message_for_a_file_outside_srcdir(moto_s3, moto_bucket, sqs, moto_url, src_dir,
                                                                  make_config, aws_profiles):  # fmt: skip
    write_file(src_dir / "fine.txt", 100)
    secret = pathlib.Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    queue, dlq = fleet_queue(sqs)
    config = make_config(DesProfileName="moto", DesBucket=moto_bucket, AddressingStyle="path", SQSEndpointURL=moto_url,
                         SQSProfileName="moto", SQSVisibilityTimeout=1)  # fmt: skip
    relative_key = "up/" + os.path.relpath(secret, src_dir).replace(os.sep, "/")  # up/../aws/credentials
    for key, path in ((relative_key, str(secret)), ("up/fine.txt", str(secret)), ("up/elsewhere.txt", str(secret))):
        sqs.send_message(QueueUrl=queue, MessageBody=message(src_key_or_path=path, des_bucket=moto_bucket, key=key,
                                                             size=secret.stat().st_size))  # fmt: skip
    worker = work_through(config, queue)
    assert worker.returncode == 1, worker.stderr
    keys = list_keys(moto_s3, moto_bucket)
    assert relative_key not in keys and "up/elsewhere.txt" not in keys
    # The only file written is fine.txt, from SrcDir, whatever path the message gave.
    assert set(keys) <= {"up/fine.txt"}
    if keys:
        assert object_md5(moto_s3, moto_bucket, "up/fine.txt") == md5_file(src_dir / "fine.txt")
    assert secret.read_bytes() not in [moto_s3.get_object(Bucket=moto_bucket, Key=k)["Body"].read() for k in keys]
    assert "Traceback" not in worker.stderr


def test_s3_worker_takes_only_the_key_from_a_message(src, src_bucket, dst, bucket, sqs, moto_url, s3_job):
    body = os.urandom(1024)
    src.put_object(Bucket=src_bucket, Key="data/a.txt", Body=body)
    src.put_object(Bucket=src_bucket, Key="private/secret.txt", Body=b"not part of the job")
    dst.put_object(Bucket=bucket, Key="data/a.txt", Body=body)  # complete already
    src.put_object(Bucket=src_bucket, Key="data/b.txt", Body=b"b" * 2000)
    queue, dlq = fleet_queue(sqs)
    common = dict(job_type="S3_TO_S3", src_bucket=src_bucket, des_bucket=bucket)
    sqs.send_message(QueueUrl=queue, MessageBody=message(**common, src_key_or_path="data/a.txt", key="data/a.txt",
                                                         size=4))  # a lie about the size  # fmt: skip
    sqs.send_message(QueueUrl=queue, MessageBody=message(**common, src_key_or_path="private/secret.txt",
                                                         key="private/secret.txt", size=19))  # fmt: skip
    sqs.send_message(QueueUrl=queue, MessageBody=message(**common, src_key_or_path="data/b.txt", key="data/b.txt",
                                                         size=7, src_etag="0" * 32))  # fmt: skip
    worker = work_through(s3_job(SQSEndpointURL=moto_url, SQSVisibilityTimeout=1), queue)
    assert worker.returncode == 1, worker.stderr  # the message outside S3Prefix was refused
    assert list_keys(dst, bucket) == {"data/a.txt": 1024, "data/b.txt": 2000}
    assert object_md5(dst, bucket, "data/a.txt") == md5(body)
    assert object_md5(dst, bucket, "data/b.txt") == md5(b"b" * 2000)
    assert unfinished_uploads(dst, bucket) == []


# ---------------------------------------------------------------------------------------------------------------------
# 9-12. Robustness: report path, names that are not UTF-8, stdin closed, user errors, one log per run
# ---------------------------------------------------------------------------------------------------------------------


def test_report_into_a_missing_directory_is_refused_before_any_transfer(dst, bucket, src_dir, make_config, tmp_path):
    write_file(src_dir / "a.txt", 10)
    config = make_config()
    proc = subprocess.run(tool_command(config) + ["--report", str(tmp_path / "no-such-dir" / "r.json")],
                          cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "no-such-dir" in proc.stderr and "Traceback" not in proc.stderr
    assert list_keys(dst, bucket) == {}


def test_report_into_a_directory_this_user_cannot_write_is_refused_before_any_transfer(src_dir, tmp_path):
    write_file(src_dir / "a.txt", 10)
    values = {
        "JobType": "LOCAL_TO_S3",
        "DesBucket": "some-bucket",
        "SrcDir": str(src_dir),
        "LogDir": str(tmp_path / "log"),
    }
    config = write_config(tmp_path / "config.py", values)
    sealed = tmp_path / "sealed"
    sealed.mkdir(mode=0o555)
    try:
        proc = subprocess.run(tool_command(config) + ["--report", str(sealed / "r.json")], cwd=tmp_path,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                              preexec_fn=without_permission_override)  # fmt: skip
    finally:
        sealed.chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"s3_upload: error: --report {sealed / 'r.json'}: this user cannot write in "
                                        f"{sealed}; choose another path"]  # fmt: skip
    assert not (tmp_path / "log").exists()  # stopped before the run began: no request, no log


def test_a_name_that_is_not_utf8_is_uploaded_under_a_reversible_key(dst, bucket, src_dir, make_config, tmp_path, sqs,
                                                                     moto_url):  # fmt: skip
    raw = os.fsencode(str(src_dir)) + b"/r\xe9sum\xe9.txt"
    with open(raw, "wb") as fh:
        fh.write(b"bytes of a latin-1 named file")
    write_file(src_dir / "plain.txt", 70)
    config = make_config()
    report = tmp_path / "report.json"
    proc = subprocess.run(tool_command(config) + ["--report", str(report)], cwd=config.parent,
                          stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr and "Logging error" not in stderr
    key = "up/r\u201bE9sum\u201bE9.txt"
    assert object_md5(dst, bucket, key) == hashlib.md5(b"bytes of a latin-1 named file").hexdigest()
    assert s3_upload.local_name_of_key("r\u201bE9sum\u201bE9.txt") == os.fsdecode(b"r\xe9sum\xe9.txt")
    document = load_report(report)
    assert {f["key"] for f in document["files"]} == {key, "up/plain.txt"}
    log_text = b"".join(p.read_bytes() for p in (tmp_path / "log").glob("*.log")).decode("utf-8")
    assert f"finish {key}: " in log_text  # the log stays UTF-8 (decoded above) and names the file by its key
    # The fleet sender queues it like any other file.
    queue, _ = fleet_queue(sqs)
    dst.delete_object(Bucket=bucket, Key=key)
    sender = subprocess.run(tool_command(make_config(SQSEndpointURL=moto_url)) + ["--sqs-send", queue],
                            cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    assert sender.returncode == 0, sender.stderr.decode()
    assert b"queued 1 file(s)" in sender.stdout


def test_stdin_closed_with_unfinished_uploads_resumes(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 2 * CHUNK + 9)
    start_upload(dst, bucket, "up/big.bin", (src_dir / "big.bin").read_bytes(), CHUNK, parts=(1,))
    config = make_config(DontAskMeToClean=False)
    proc = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *tool_command(config)], cwd=config.parent,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_user_errors_are_one_line_and_exit_2(dst, bucket, src_dir, make_config, sqs, moto_url):
    write_file(src_dir / "a.txt", 10)

    def run(config, *args):
        return subprocess.run(tool_command(config) + list(args), cwd=config.parent, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    one_line_error(run(make_config(DesBucket="bad/name")), "DesBucket", "bad/name")
    one_line_error(run(make_config(), "--chunk-size", "1e400"), "--chunk-size")
    missing_queue = f"{moto_url}/123456789012/no-such-queue"
    one_line_error(run(make_config(SQSEndpointURL=moto_url), "--sqs-send", missing_queue), "no-such-queue")
    one_line_error(run(make_config(SQSEndpointURL=moto_url), "--sqs-worker", missing_queue), "no-such-queue")
    assert list_keys(dst, bucket) == {}


def test_a_file_whose_name_starts_with_two_dots_is_inside_srcdir(dst, bucket, src_dir, make_config):
    write_file(src_dir / "..data.bin", 123)
    run = run_tool(make_config(SrcFileIndex="..data.bin"))
    assert run.code == 0, run
    assert object_md5(dst, bucket, "up/..data.bin") == md5_file(src_dir / "..data.bin")


def test_two_runs_in_the_same_second_write_two_log_files(tmp_path, monkeypatch):
    class FrozenDatetime(s3_upload.datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 11, 30, 12, 0, 0)

    monkeypatch.setattr(s3_upload.datetime, "datetime", FrozenDatetime)
    settings = s3_upload.Settings(des_bucket="b", src_dir=str(tmp_path), log_dir=str(tmp_path / "log"))
    paths = []
    try:
        for _ in range(2):
            paths.append(s3_upload.setup_logging(settings))
            s3_upload.log.info("run %d", len(paths))
            s3_upload.close_logging()
    finally:
        s3_upload.close_logging()
    assert len(set(paths)) == 2, paths
    assert [pathlib.Path(p).read_text().count("run ") for p in paths] == [1, 1]


# ---------------------------------------------------------------------------------------------------------------------
# 13. Scale: a bounded window of files in flight; a part's final failure stops its siblings at once
# ---------------------------------------------------------------------------------------------------------------------


def test_files_are_taken_one_at_a_time_as_threads_free_up():
    """The plan never runs far ahead of the transfer: files sent in one request wait for the budget of requests
    (MaxParallelFile x MaxThread) at most one budget deep, so at most two budgets' worth are taken and not finished."""
    settings = s3_upload.Settings(des_bucket="b", src_dir=".", max_parallel_file=3)
    stop = s3_upload.threading.Event()
    engine = s3_upload.Engine(settings, None, None, s3_upload.RetryPolicy(0, 0, stop), stop)
    lock, taken, finished, most = s3_upload.threading.Lock(), [0], [0], [0]

    def run_file(task):
        with lock:
            finished[0] += 1
        return s3_upload.FileResult(task.src.key, 0, "uploaded")

    def lazily():
        for i in range(2000):
            with lock:
                taken[0] += 1
                most[0] = max(most[0], taken[0] - finished[0])
            yield s3_upload.FileTask(s3_upload.SourceFile(f"k{i}", 1, 0.0), "put", s3_upload.ChunkPlan(1, 1))

    engine.run_file = run_file
    results = engine.run(lazily())
    assert sorted(r.key for r in results) == sorted(f"k{i}" for i in range(2000))
    assert most[0] <= 2 * settings.max_parallel_file * settings.max_thread + 1, most[0]


def test_a_bug_in_a_file_thread_is_raised_not_lost():
    settings = s3_upload.Settings(des_bucket="b", src_dir=".", max_parallel_file=2)
    stop = s3_upload.threading.Event()
    engine = s3_upload.Engine(settings, None, None, s3_upload.RetryPolicy(0, 0, stop), stop)

    def broken(task):
        raise ZeroDivisionError("a bug")

    engine.run_file = broken
    task = s3_upload.FileTask(s3_upload.SourceFile("k", 1, 0.0), "put", s3_upload.ChunkPlan(1, 1))
    with pytest.raises(ZeroDivisionError):
        engine.run([task, task])


def test_a_part_that_fails_for_good_stops_its_siblings_retries(dst, bucket, src_dir, make_config, aws_profiles,
                                                               dst_server):  # fmt: skip
    """Part 2 is refused for good (AccessDenied) while part 1 keeps getting 500s with a long backoff: the file
    fails at once, part 1 is not retried MaxRetry times."""
    write_file(src_dir / "big.bin", 2 * CHUNK)
    with FaultProxy("127.0.0.1", dst_server.port).start() as flaky, \
            FaultProxy("127.0.0.1", flaky.port).start() as refusing:  # fmt: skip

        def part_1_failed() -> bool:
            return any(r.query.get("partNumber") == "1" and r.status == 500 for r in flaky.history)

        def part_2_once_part_1_failed(request) -> bool:
            # Refused only once part 1 got its 500, so that part 1 is in its backoff then, however the two threads
            # are scheduled (a refusal 3 s late would let part 1 try again).
            if request.operation != "UploadPart" or request.query.get("partNumber") != "2":
                return False
            deadline = time.monotonic() + 60
            while not part_1_failed() and time.monotonic() < deadline:
                time.sleep(0.01)
            return True

        flaky.set(outage=True, error_status=500, error_code="InternalError",
                  match=lambda r: r.operation == "UploadPart" and r.query.get("partNumber") == "1")  # fmt: skip
        refusing.set(outage=True, error_status=403, error_code="AccessDenied", match=part_2_once_part_1_failed)
        aws_profiles.add("chain", refusing.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="chain", MaxThread=2, MaxRetry=5, RetryDelay=3), timeout=300)
        part_1_tries = sum(1 for r in flaky.history if r.operation == "UploadPart" and r.query["partNumber"] == "1")
    assert run.code == 1, run
    assert "AccessDenied" in run.stdout
    assert part_1_tries <= 2, part_1_tries
    assert "retry 2/5" not in run.stderr


def test_a_part_that_fails_for_good_stops_the_parts_queued_behind_it():
    """One thread (MaxThread=1): part 2 is refused for good; part 3, queued behind it on the same thread, is never
    started, whenever the file's own thread gets to see the failure (on a busy machine it used to be sent first)."""
    settings = s3_upload.Settings(des_bucket="b", src_dir=".", max_thread=1)
    stop = s3_upload.threading.Event()
    source = s3_upload.types.SimpleNamespace(verify_existing_parts=False)
    engine = s3_upload.Engine(settings, source, None, s3_upload.RetryPolicy(0, 0, stop), stop)
    started = []

    class Mover:
        def part(self, f, upload_id, number, offset, length, shape, listed, cancel):
            started.append(number)
            if number == 2:
                raise s3_upload.botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied"}}, "UploadPart")
            return s3_upload.PartResult(number, "0" * 32, bytes(16), length)

    engine.mover = Mover()
    f = s3_upload.SourceFile("k", 3 * CHUNK, 0.0)
    shape = s3_upload.Shape(s3_upload.ChunkPlan(3 * CHUNK, CHUNK), multipart=True)
    with pytest.raises(s3_upload.botocore.exceptions.ClientError):
        engine._send_parts(f, shape, "upload-id", {}, proven=True)
    assert started == [1, 2]


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("these tests use Linux file names and permissions")
