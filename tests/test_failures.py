"""Failures that must not lose data or hide: a file that cannot be read, a destination that refuses writes, memory
that must stay bounded.  Real SeaweedFS; bytes checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import s3_upload
from conftest import (
    DST_KEYS,
    READER_KEYS,
    SCRIPT,
    MiB,
    assert_tree_uploaded,
    list_keys,
    md5_file,
    object_md5,
    run_tool,
    unfinished_uploads,
    write_file,
)
from faultproxy import FaultProxy


def test_unreadable_file_fails_alone_and_is_counted(dst, bucket, src_dir, make_config, monkeypatch, capsys):
    """Tests run as root, who can read any file, so the refusal is made in the source: everything else is real."""
    write_file(src_dir / "good" / "a.bin", 6 * MiB)
    write_file(src_dir / "good" / "b.txt", 300)
    write_file(src_dir / "locked.bin", 7 * MiB)
    real_read = s3_upload.LocalSource.read

    def read(self, f, offset, length):
        if f.path.endswith("locked.bin"):
            raise PermissionError(13, "Permission denied", f.path)
        return real_read(self, f, offset, length)

    monkeypatch.setattr(s3_upload.LocalSource, "read", read)
    code = s3_upload.main(["--config", str(make_config(MaxRetry=5, RetryDelay=10))])
    out, err = capsys.readouterr()
    assert code == s3_upload.EXIT_FAILED
    assert "2 uploaded, 0 skipped, 1 failed" in out
    assert "failed: up/locked.bin: PermissionError" in out and "fix its permissions" in out
    assert "1 source file(s) are not in the destination" in out
    assert "retry" not in err  # a local permission error does not heal by waiting
    assert object_md5(dst, bucket, "up/good/a.bin") == md5_file(src_dir / "good/a.bin")
    assert set(list_keys(dst, bucket)) == {"up/good/a.bin", "up/good/b.txt"}
    # Nothing is lost: the failed file's upload stays resumable, and a rerun (now readable) completes the job.
    monkeypatch.setattr(s3_upload.LocalSource, "read", real_read)
    assert s3_upload.main(["--config", str(make_config())]) == 0
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 3
    assert unfinished_uploads(dst, bucket) == []


def test_write_denied_fails_at_once_without_retries(dst, bucket, src_dir, make_config):
    write_file(src_dir / "a.bin", 6 * MiB)
    write_file(src_dir / "b.txt", 10)
    run = run_tool(make_config(DesProfileName="reader", MaxRetry=5, RetryDelay=10))
    assert run.code == s3_upload.EXIT_FAILED, run
    assert "0 uploaded, 0 skipped, 2 failed" in run.stdout
    assert "AccessDenied" in run.stdout and "was denied" in run.stdout
    assert "retry" not in run.stderr
    assert "Traceback" not in run.output
    assert list_keys(dst, bucket) == {}
    assert READER_KEYS[1] not in run.output and DST_KEYS[1] not in run.output


def test_a_refused_head_fails_its_file_and_the_other_files_go_on(dst, bucket, src_dir, make_config, no_get_object):
    """An object of the same size written before the file was last modified needs a HeadObject (is the mtime
    recorded with it the file's?); a profile without s3:GetObject is refused it.  That file fails, named with the
    permission to grant, and its object is left as it is; the next file is uploaded; exit 1.  (A refused HeadObject
    used to stop the run there: "rerun to resume", the other files never sent.)"""
    done, new = src_dir / "done.bin", src_dir / "new.txt"
    write_file(done, 5 * MiB + 5)
    write_file(new, 300)
    dst.put_object(Bucket=bucket, Key="up/done.bin", Body=done.read_bytes())
    written = dst.head_object(Bucket=bucket, Key="up/done.bin")["LastModified"].timestamp()
    os.utime(done, (written + 60, written + 60))  # modified after its object was written
    run = run_tool(make_config(DesProfileName=no_get_object, MaxParallelFile=1))  # done.bin first, then new.txt
    assert run.code == s3_upload.EXIT_FAILED, run
    assert "Traceback" not in run.output and "rerun to resume" not in run.output
    assert "summary: 1 uploaded, 0 skipped, 1 failed" in run.stdout, run.stdout
    [failed] = [line for line in run.stdout.splitlines() if line.startswith("  failed: up/done.bin: ")]
    assert "HeadObject" in failed and "grant the destination's profile s3:GetObject" in failed, failed
    assert object_md5(dst, bucket, "up/new.txt") == md5_file(new)
    assert object_md5(dst, bucket, "up/done.bin") == md5_file(done)  # left as it is
    assert unfinished_uploads(dst, bucket) == []


def test_memory_stays_bounded_by_threads_times_chunk(dst, bucket, src_dir, make_config):
    """A 256 MiB file with 5 MiB parts and 2 threads: peak RSS stays far below the file size."""
    size = 256 * MiB
    write_file(src_dir / "big.bin", size, seed=1)
    config = make_config(MaxThread=2, MaxParallelFile=1)
    measure = (
        "import json, resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True).returncode\n"
        "print(json.dumps([code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, str(SCRIPT), "--config", str(config)],
        capture_output=True, text=True, cwd=config.parent, check=True,
    ).stdout  # fmt: skip
    code, peak_kib = json.loads(out)
    assert code == 0
    peak = peak_kib * 1024
    # Python + boto3 (~60 MiB) + a few part buffers per thread; a whole-file read would be > 256 MiB.
    assert peak < 2 * 3 * 5 * MiB + 100 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")


def test_a_destination_failing_its_first_listings_stops_the_run_with_one_line_and_exit_1(
    dst, bucket, dst_server, src_dir, make_config, aws_profiles
):
    """A 500 that outlasts the retries is no mistake of the user's (not exit 2, no advice to fix a setting): the run
    stops before sending anything, in one line that says to rerun."""
    write_file(src_dir / "a.bin", 6 * MiB)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=500, error_code="InternalError",
                  match=lambda r: r.operation in ("ListObjectsV2", "ListMultipartUploads"))  # fmt: skip
        aws_profiles.add("down", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="down", MaxRetry=1))
        operations = {r.operation for r in proxy.history}
    assert run.code == s3_upload.EXIT_FAILED, run
    assert "Traceback" not in run.output
    assert re.fullmatch(r".* ERROR s3_upload: error: InternalError \(HTTP 500\).*; the run stopped, rerun to resume",
                        run.stderr.splitlines()[-1]), run  # fmt: skip
    assert "retry 1/1" in run.stderr  # retried, as any 500
    assert operations == {"ListObjectsV2", "ListMultipartUploads"}  # nothing was sent
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []
