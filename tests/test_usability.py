"""The usability features, end to end: progress (log lines, and a real terminal bar), --dry-run, --yes/--clean,
--report, command-line overrides, endpoint URLs and addressing style, object attributes (Content-Type, copied
headers and metadata), server-side encryption and ACLs, MaxBandwidth, and the installed `s3-upload` command.

Against the real SeaweedFS servers of conftest and, where the feature is about S3 semantics, also against moto (an
in-process S3 emulator with KMS).  Server support seen (SeaweedFS 4.x vs moto 5.x):
  - Content-Type, Content-Encoding, Cache-Control, Content-Disposition, Content-Language, user metadata: both keep
    them, on PutObject and on CreateMultipartUpload.
  - SSE AES256: both report ServerSideEncryption AES256 on HeadObject.
  - SSE aws:kms: moto only (SeaweedFS without a KMS answers InternalError), so that test runs on moto.
  - Canned ACLs: both accept them; moto applies them (public-read adds an AllUsers READ grant), SeaweedFS ignores
    them (the owner's FULL_CONTROL grant only).
No test asserts a speed: MaxBandwidth is checked for correctness only (benchmarks measure speed)."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import hashlib
import io
import logging
import os
import pathlib
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import time

import boto3
import botocore.config
import pytest
from test_resume import start_upload

import s3_upload
from conftest import (
    DST_KEYS,
    SCRIPT,
    SRC_KEYS,
    MiB,
    Run,
    assert_tree_uploaded,
    is_probe,
    list_keys,
    load_report,
    md5,
    md5_file,
    modified_earlier,
    new_bucket,
    object_md5,
    remove_bucket,
    run_tool,
    tool_command,
    unfinished_uploads,
    wait_until,
    write_file,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB
MOTO_KEYS = ("testing", "testing")


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: moto, AWS profiles without endpoint_url, and "targets" (a destination on SeaweedFS or on moto)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(moto_url):
    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id=MOTO_KEYS[0],
        aws_secret_access_key=MOTO_KEYS[1],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def unreachable_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def own_profiles(aws_profiles, src_profile, tmp_path, monkeypatch):
    """conftest's profiles (each with endpoint_url) plus profiles WITHOUT endpoint_url, as for AWS itself:
    dst-noep / src-noep (the SeaweedFS accounts' keys), moto (any keys), and nowhere (the destination's keys with an
    endpoint_url where nothing listens, to prove that DesEndpointURL wins over the profile's)."""
    profiles = dict(aws_profiles.profiles)
    profiles.update(
        {
            "dst-noep": ("", *DST_KEYS),
            "src-noep": ("", *SRC_KEYS),
            "moto": ("", *MOTO_KEYS),
            "nowhere": (unreachable_url(), *DST_KEYS),
        }
    )
    directory = tmp_path / "aws-own"
    directory.mkdir()
    creds, config = [], []
    for name, (endpoint, key, secret) in profiles.items():
        creds.append(f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
        config.append(f"[profile {name}]\nregion = us-east-1\n" + (f"endpoint_url = {endpoint}\n" if endpoint else ""))
    (directory / "credentials").write_text("\n".join(creds))
    (directory / "config").write_text("\n".join(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(directory / "config"))
    return profiles


@dataclasses.dataclass
class Target:
    """A destination: its client and bucket for the checks, and the config values that send the tool there."""

    name: str
    client: object
    bucket: str
    config: dict
    port: int  # the server's port on 127.0.0.1 (for a FaultProxy in front of it)


@pytest.fixture(params=["seaweed", "moto"])
def target(request, dst, bucket, own_profiles, dst_server) -> Target:
    if request.param == "seaweed":
        # The "dst" profile, whose endpoint_url is the server.
        return Target("seaweed", dst, bucket, {}, dst_server.port)
    moto, url = request.getfixturevalue("moto"), request.getfixturevalue("moto_url")
    name = new_bucket(moto)
    return Target("moto", moto, name, dict(DesProfileName="moto", DesBucket=name, DesEndpointURL=url,
                                           AddressingStyle="path"), int(url.rsplit(":", 1)[1]))  # fmt: skip


def run_with(config: pathlib.Path, *args: str, stdin: str | None = None, command=None, cwd=None) -> Run:
    """run_tool with command-line flags after --config."""
    proc = subprocess.run(
        [*(command or tool_command(config)), *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd or config.parent,
    )
    return Run(proc)


def assert_usage_error(run: Run, *words: str) -> None:
    assert run.code == 2, run
    assert "Traceback" not in run.output, run
    for word in words:
        assert word in run.stderr, (word, run)


def multipart_etag_of(path: pathlib.Path, part_size: int) -> str:
    data = path.read_bytes()
    return s3_upload.multipart_etag(
        hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)
    )


def etag(client, bucket: str, key: str) -> str:
    return client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


# ---------------------------------------------------------------------------------------------------------------------
# 1. Progress
# ---------------------------------------------------------------------------------------------------------------------


def progress_tasks() -> list[s3_upload.FileTask]:
    SF, FT, CP = s3_upload.SourceFile, s3_upload.FileTask, s3_upload.ChunkPlan
    return [
        FT(SF("up/big.bin", 10 * MiB, 0.0), "multipart", CP(10 * MiB, CHUNK)),
        FT(SF("up/small.txt", 1000, 0.0), "put", CP(1000, 1000)),
        FT(SF("up/old.bin", 123, 0.0), "skip", CP(123, 123), "already at the destination with the same size"),
    ]


def test_log_progress_counts_bytes_files_in_flight_and_logs_lines(caplog, monkeypatch):
    monkeypatch.setattr(s3_upload.log, "propagate", True)  # main() turns it off; caplog listens at the root
    caplog.set_level(logging.INFO, logger="s3_upload")
    progress = s3_upload.LogProgress(interval=0.05)
    progress.begin(progress_tasks())
    try:
        assert (progress.total_files, progress.total_bytes) == (2, 10 * MiB + 1000)  # skipped files are not work
        progress.file_started("up/big.bin", 2)
        progress.part_done("up/big.bin", CHUNK, how="found")
        line = progress.line()
        # A resumed part counts as done, but nothing was sent: no rate, no ETA.
        assert "5.0 MiB of 10.0 MiB (50%; 5.0 MiB of it found on S3)" in line, line
        assert "0 B/s sent, ETA ?" in line and "files 0/2" in line, line
        assert "in flight: up/big.bin 1/2" in line, line
        assert (progress.done_bytes, progress.sent_bytes) == (CHUNK, 0)

        progress.part_done("up/big.bin", CHUNK)
        progress.file_started("up/small.txt", 1)
        line = progress.line()
        assert "10.0 MiB of 10.0 MiB (100%; 5.0 MiB of it found on S3)" in line, line
        assert "0 B/s" not in line and "ETA ?" not in line, line  # now bytes were sent: a rate
        assert "in flight: up/big.bin 2/2, up/small.txt 0/1" in line, line
        assert (progress.done_bytes, progress.sent_bytes) == (2 * CHUNK, CHUNK)

        progress.file_finished("up/big.bin")

        def progress_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: ")]

        wait_until(lambda: any("files 1/2" in m for m in progress_lines()), "a progress line after the first file")
        lines = progress_lines()
        assert any("files 1/2, in flight: up/small.txt 0/1" in m for m in lines), lines
        assert all(r.levelno == logging.INFO for r in caplog.records if r.getMessage().startswith("progress: "))

        progress.part_done("up/small.txt", 1000)
        progress.file_finished("up/small.txt")
        line = progress.line()
        assert "(100%;" in line and "files 2/2" in line and "in flight" not in line, line
    finally:
        progress.close()
    progress._thread.join(2)
    assert not progress._thread.is_alive()


def test_log_progress_without_work_logs_no_line(caplog, monkeypatch):
    monkeypatch.setattr(s3_upload.log, "propagate", True)  # main() turns it off; caplog listens at the root
    caplog.set_level(logging.INFO, logger="s3_upload")
    progress = s3_upload.LogProgress(interval=0.05)
    progress.begin(progress_tasks()[2:])  # only a skipped file
    time.sleep(0.3)
    progress.close()
    assert progress.total_files == 0
    assert "files 0/0" in progress.line() and "(100%)" in progress.line()
    assert not [r for r in caplog.records if "progress:" in r.getMessage()]


def test_progress_log_lines_during_a_run(dst, bucket, src_dir, make_config, monkeypatch, capsys, request):
    """In-process main() with --progress log, LogProgress at a 0.05 s interval instead of 5 s.  MaxBandwidth only
    makes the run last long enough for a few lines (part 2 cannot start before 0.25 s); nothing is timed."""
    monkeypatch.setattr(s3_upload, "LogProgress", functools.partial(s3_upload.LogProgress, interval=0.05))
    for logger in (s3_upload.log, s3_upload.report):  # main() changes these; put them back afterwards
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        request.addfinalizer(functools.partial(logger.setLevel, logger.level))
    write_file(src_dir / "big.bin", 2 * CHUNK)
    config = make_config(MaxBandwidth=20 * MiB)
    assert s3_upload.main(["--config", str(config), "--progress", "log"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " INFO progress: " in line]
    assert lines, err
    assert all(re.search(r"progress: [\d.]+ \w+ of 10\.0 MiB \(\d+%\), .*/s sent, ETA \S+, files [01]/1", line)
               for line in lines), lines  # fmt: skip
    assert "%|" not in err  # no bar
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_progress_picks_the_renderer(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert type(s3_upload.make_progress("auto")) is s3_upload.LogProgress  # not a terminal: log lines
    assert type(s3_upload.make_progress("log")) is s3_upload.LogProgress
    assert type(s3_upload.make_progress("none")) is s3_upload.Progress  # counts only, draws nothing
    assert type(s3_upload.make_progress("bar")) is s3_upload.BarProgress
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert type(s3_upload.make_progress("auto")) is s3_upload.BarProgress


def run_on_terminal(command: list[str], cwd: pathlib.Path, timeout: float = 120) -> tuple[int, str]:
    """Run with a pseudo-terminal (120 columns) as stdout and stderr; returns the exit code and all output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            pytest.fail("the tool on a terminal did not finish in time")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_is_drawn_on_a_terminal(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", CHUNK + 3 * MiB)  # two parts
    config = make_config()
    code, out = run_on_terminal([*tool_command(config), "--progress", "auto"], config.parent)
    assert code == 0, out
    assert "files 1/1" in out and "%|" in out, out  # tqdm's bar, with our files postfix
    assert "summary: 1 uploaded" in out, out
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")


# ---------------------------------------------------------------------------------------------------------------------
# 2. --dry-run
# ---------------------------------------------------------------------------------------------------------------------


def server_state(client, bucket: str) -> tuple:
    """Objects (key, size, ETag) and unfinished uploads with their parts: all that a run could change."""
    objects = {
        o["Key"]: (o["Size"], o["ETag"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }
    uploads = {}
    for u in unfinished_uploads(client, bucket):
        parts = client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])
        uploads[(u["Key"], u["UploadId"])] = sorted((p["PartNumber"], p["Size"], p["ETag"]) for p in parts)
    return objects, uploads


@pytest.fixture
def dry_run_setup(dst, bucket, src_dir):
    """A destination with one file done, one upload to resume, one to restart, one of another job, and new files."""
    write_file(src_dir / "done.txt", 100)
    modified_earlier(src_dir / "done.txt")
    write_file(src_dir / "resume.bin", 2 * CHUNK + MiB)  # 3 parts
    write_file(src_dir / "restart.bin", 2 * CHUNK + MiB)
    write_file(src_dir / "new.bin", CHUNK + MiB)  # 2 parts
    write_file(src_dir / "new.txt", 10)
    dst.put_object(Bucket=bucket, Key="up/done.txt", Body=(src_dir / "done.txt").read_bytes())
    start_upload(dst, bucket, "up/resume.bin", (src_dir / "resume.bin").read_bytes(), CHUNK, parts=(1,))
    start_upload(dst, bucket, "up/restart.bin", (src_dir / "restart.bin").read_bytes(), 6 * MiB, parts=(1,))
    start_upload(dst, bucket, "up/other-job.bin", b"", CHUNK, parts=())
    return server_state(dst, bucket)


def test_dry_run_shows_each_decision_and_writes_nothing(dst, bucket, dry_run_setup, make_config):
    config = make_config(DontAskMeToClean=False)
    run = run_with(config, "--dry-run")  # stdin closed: a dry run does not ask
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT not in run.stdout
    lines = run.stdout.splitlines()
    assert (
        "skip     up/done.txt (already at the destination (same size, not modified since the object was written))"
        in lines
    ), run
    assert "upload   up/new.bin (6.0 MiB, 2 parts of 5.0 MiB)" in lines, run
    assert "upload   up/new.txt (10 B, one request)" in lines, run
    assert "resume   up/resume.bin (1 of 3 parts already on S3)" in lines, run
    assert any(
        line.startswith("restart  up/restart.bin (its part 1 is 6291456 bytes, the current plan needs 5242880")
        for line in lines
    ), run
    assert lines[-1] == "dry run: 1 to skip, 2 to upload, 1 to restart, 1 to resume; nothing was written", run
    assert "other-job" not in run.stdout and "summary:" not in run.stdout
    assert server_state(dst, bucket) == dry_run_setup

    run = run_with(config, "--dry-run", "--clean")
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    cleaned = sorted(line.split(" (")[0] for line in lines if line.startswith("clean "))
    # CLEAN aborts every unfinished upload under the prefix, this job's or not (README, "Resume and CLEAN").
    assert cleaned == ["clean    up/other-job.bin", "clean    up/restart.bin", "clean    up/resume.bin"], run
    marked = [line for line in lines if line.endswith("not from this job's source)")]
    assert [line.split(" (")[0] for line in marked] == ["clean    up/other-job.bin"], run  # not in SrcDir
    assert "upload   up/resume.bin (11.0 MiB, 3 parts of 5.0 MiB)" in lines, run  # after CLEAN: from scratch
    assert lines[-1] == "dry run: 1 to skip, 4 to upload; nothing was written", run
    assert server_state(dst, bucket) == dry_run_setup


def test_dry_run_shows_live_uploads_of_other_layouts_left_alone(dst, bucket, dry_run_setup, src_dir, make_config):
    """Uploads that cannot be resumed but had a part added lately (another run may be at work on them: AbandonedAfter
    has not passed) are left alone, as the run would: the newest is named in the file's line, each older one in a
    `leave` line; the file is uploaded afresh."""
    data = (src_dir / "restart.bin").read_bytes()
    start_upload(dst, bucket, "up/restart.bin", data, 7 * MiB, parts=(1,))  # a second one, in another layout too
    before = server_state(dst, bucket)
    run = run_with(make_config(AbandonedAfter=3600), "--dry-run")
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    [upload] = [line for line in lines if line.startswith("upload   up/restart.bin (")]
    assert upload.startswith("upload   up/restart.bin (11.0 MiB, 3 parts of 5.0 MiB; upload "), upload
    assert "is 7340032 bytes" in upload and "left alone" in upload and "a part added" in upload, upload
    [leave] = [line for line in lines if line.startswith("leave    up/restart.bin (")]
    assert "a part was added" in leave and "another run may be at work on it" in leave, leave
    assert server_state(dst, bucket) == before


def test_an_upload_left_under_a_complete_object_is_shown_by_dry_run_and_aborted_and_a_refused_abort_only_warns(
    dst, bucket, dst_server, src_dir, make_config, aws_profiles
):
    """An interrupted upload of a key whose object was completed since (by another run or machine) can never be
    resumed: --dry-run says it will be cleaned, a run aborts it, and an abort the store refuses leaves the object
    (which is right) and says what is left and why."""
    write_file(src_dir / "done.bin", CHUNK + MiB)
    modified_earlier(src_dir / "done.bin")
    data = (src_dir / "done.bin").read_bytes()
    upload_id = start_upload(dst, bucket, "up/done.bin", data, CHUNK, parts=(1,))
    dst.put_object(Bucket=bucket, Key="up/done.bin", Body=data)  # completed after that upload began

    run = run_with(make_config(), "--dry-run")
    assert run.code == 0, run
    assert f"clean    up/done.bin (abort unfinished upload {s3_upload.short_id(upload_id)}, which this file no " \
           f"longer needs)" in run.stdout.splitlines(), run  # fmt: skip
    assert run.stdout.splitlines()[-1] == "dry run: 1 to skip; nothing was written", run

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=403, error_code="AccessDenied",
                  match=lambda r: r.operation == "AbortMultipartUpload")  # fmt: skip
        aws_profiles.add("noabort", proxy.endpoint_url, *DST_KEYS)
        refused = run_tool(make_config(DesProfileName="noabort"))
    assert refused.code == 0, refused  # the object is at the destination: the job is done
    assert re.search(r"WARNING up/done.bin: could not abort upload " + re.escape(s3_upload.short_id(upload_id)) +
                     r": AccessDenied \(HTTP 403\).*; AbortMultipartUpload was denied: grant the profile that "
                     r"permission on this bucket$", refused.stderr, flags=re.M), refused  # fmt: skip
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [upload_id]

    run = run_tool(make_config())
    assert run.code == 0, run
    assert unfinished_uploads(dst, bucket) == []
    assert list_keys(dst, bucket) == {"up/done.bin": len(data)}
    assert object_md5(dst, bucket, "up/done.bin") == md5_file(src_dir / "done.bin")


# ---------------------------------------------------------------------------------------------------------------------
# 3. --yes and --clean answer the CLEAN prompt
# ---------------------------------------------------------------------------------------------------------------------


def test_yes_resumes_and_clean_restarts_without_asking(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 2 * CHUNK + 1)  # 3 parts
    data = (src_dir / "big.bin").read_bytes()
    config = make_config(DontAskMeToClean=False)

    start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1,))
    run = run_with(config, "--yes")  # stdin closed, but nothing is asked
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT not in run.stdout
    assert "resuming (--yes)" in run.stderr and "has 1 of 3 parts on S3" in run.stderr, run
    assert run.bytes_sent == len(data) - CHUNK
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []

    dst.delete_object(Bucket=bucket, Key="up/big.bin")
    old = start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1,))
    run = run_with(config, "--clean")
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT not in run.stdout
    assert "CLEAN (--clean)" in run.stderr and "CLEAN: aborting unfinished upload of up/big.bin" in run.stderr, run
    assert run.bytes_sent == len(data)  # restarted from zero
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert old not in {u["UploadId"] for u in unfinished_uploads(dst, bucket)}
    assert unfinished_uploads(dst, bucket) == []

    run = run_with(config, "--yes", "--clean")
    assert_usage_error(run, "not allowed with")


def test_clean_marks_the_uploads_whose_key_this_jobs_source_does_not_have(src, src_bucket, dst, bucket, make_config,
                                                                        src_profile):  # fmt: skip
    """S3_TO_S3 with S3Prefix "data" lists (and CLEAN aborts) the unfinished uploads under "database/" too, as the
    original did.  Each one whose key the source does not have is marked, in the prompt, in --dry-run, in the
    --clean/--yes line and in the CLEAN lines, so a person sees what CLEAN takes before typing it."""
    own = os.urandom(CHUNK + MiB)
    src.put_object(Bucket=src_bucket, Key="data/own.bin", Body=own)
    own_id = start_upload(dst, bucket, "data/own.bin", own, CHUNK, parts=(1,))
    other_id = start_upload(dst, bucket, "database/x", os.urandom(CHUNK), CHUNK, parts=(1,))
    config = make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile, S3Prefix="data",
                         DontAskMeToClean=False, CopyMode="stream")  # fmt: skip
    before = server_state(dst, bucket)
    note = "not from this job's source"

    run = run_with(config, "--dry-run", "--clean")
    assert run.code == 0, run
    assert f"clean    database/x (abort unfinished upload {s3_upload.short_id(other_id)}; {note})" in \
        run.stdout.splitlines(), run  # fmt: skip
    assert f"clean    data/own.bin (abort unfinished upload {s3_upload.short_id(own_id)})" in run.stdout.splitlines()
    assert "CLEAN (--clean), 1 of them " + note in run.stderr, run
    assert server_state(dst, bucket) == before

    run = run_with(config, stdin="\n")  # the prompt, answered with Enter: resume
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT in run.stdout
    shown = [line.split(" WARNING ", 1)[-1] for line in run.stderr.splitlines()]
    assert f"2 unfinished multipart upload(s) under s3://{bucket}/data (CLEAN aborts them all, 1 of them {note}):" \
        in shown, run  # fmt: skip
    assert f"  database/x (upload {s3_upload.short_id(other_id)}): {note}" in shown, run
    assert f"  data/own.bin (upload {s3_upload.short_id(own_id)})" in shown, run
    assert object_md5(dst, bucket, "data/own.bin") == md5(own)  # resumed and complete
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [other_id]  # Enter resumes: nothing aborted

    run = run_with(config, "--clean")
    assert run.code == 0, run
    assert any(line.endswith(f"CLEAN: aborting unfinished upload of database/x ({s3_upload.short_id(other_id)}; "
                             f"{note})") for line in run.stderr.splitlines()), run  # fmt: skip
    assert unfinished_uploads(dst, bucket) == []
    assert list_keys(dst, bucket) == {"data/own.bin": len(own)}
    assert object_md5(dst, bucket, "data/own.bin") == md5(own)


# ---------------------------------------------------------------------------------------------------------------------
# 4. --report
# ---------------------------------------------------------------------------------------------------------------------


def test_report_lists_every_file_with_status_parts_and_etag(dst, bucket, src_dir, tmp_path, make_config):
    write_file(src_dir / "big.bin", 2 * CHUNK + MiB)  # 3 parts, part 1 left by an "earlier run"
    write_file(src_dir / "small.txt", 1000)
    write_file(src_dir / "done.txt", 50)
    modified_earlier(src_dir / "done.txt")
    dst.put_object(Bucket=bucket, Key="up/done.txt", Body=(src_dir / "done.txt").read_bytes())
    start_upload(dst, bucket, "up/big.bin", (src_dir / "big.bin").read_bytes(), CHUNK, parts=(1,))

    # A profile that may list but not write: every upload fails, the report says so.
    failed_path = tmp_path / "failed.json"
    run = run_with(make_config(DesProfileName="reader"), "--report", str(failed_path))
    assert run.code == 1, run
    failed = load_report(failed_path)
    assert failed["exit_code"] == 1
    files = {f["key"]: f for f in failed["files"]}
    assert {k: f["status"] for k, f in files.items()} == {
        "up/big.bin": "failed",
        "up/done.txt": "skipped",
        "up/small.txt": "failed",
    }
    assert "AccessDenied" in files["up/small.txt"]["detail"] and files["up/small.txt"]["etag"] == ""
    assert sorted(failed["missing"]) == ["up/big.bin", "up/small.txt"]

    path = tmp_path / "report.json"
    run = run_with(make_config(), "--report", str(path))
    assert run.code == 0, run
    doc = load_report(path)
    assert doc["exit_code"] == 0 and doc["job_type"] == "LOCAL_TO_S3" and doc["missing"] == []
    assert doc["destination"] == f"s3://{bucket}/up/" and doc["bytes_sent"] == run.bytes_sent
    files = {f["key"]: f for f in doc["files"]}
    assert list(files) == ["up/big.bin", "up/done.txt", "up/small.txt"]  # sorted by key
    big, small, done = files["up/big.bin"], files["up/small.txt"], files["up/done.txt"]
    assert (big["status"], big["size"], big["parts"], big["parts_reused"]) == ("uploaded", 2 * CHUNK + MiB, 3, 1)
    assert big["bytes_sent"] == CHUNK + MiB  # the resumed part was not sent again
    assert big["etag"] == etag(dst, bucket, "up/big.bin") == multipart_etag_of(src_dir / "big.bin", CHUNK)
    assert (small["status"], small["size"], small["parts"], small["parts_reused"]) == ("uploaded", 1000, 1, 0)
    assert small["etag"] == etag(dst, bucket, "up/small.txt") == md5_file(src_dir / "small.txt")
    assert (done["status"], done["parts"], done["etag"]) == ("skipped", 0, "")
    for f in files.values():
        assert f["retries"] == 0 and isinstance(f["seconds"], (int, float)) and f["seconds"] >= 0
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 3


def test_report_destination_is_where_the_objects_went(src, src_bucket, dst, bucket, src_dir, tmp_path, make_config,
                                                      src_profile):  # fmt: skip
    """LOCAL_TO_S3 writes S3Prefix "//lead//x/" as "lead/x/"; S3_TO_S3 keeps the source's keys, so "data" is the
    destination prefix as typed (it takes data/..., data.txt and database/...)."""
    write_file(src_dir / "a.txt", 10)
    path = tmp_path / "local.json"
    run = run_with(make_config(S3Prefix="//lead//x/"), "--report", str(path))
    assert run.code == 0, run
    assert load_report(path)["destination"] == f"s3://{bucket}/lead/x/"
    assert list(list_keys(dst, bucket)) == ["lead/x/a.txt"]
    assert object_md5(dst, bucket, "lead/x/a.txt") == md5_file(src_dir / "a.txt")

    other = new_bucket(dst)
    try:
        src.put_object(Bucket=src_bucket, Key="data.txt", Body=b"data")
        src.put_object(Bucket=src_bucket, Key="data/b.txt", Body=b"bbb")
        path = tmp_path / "copy.json"
        run = run_with(make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile,
                                   S3Prefix="data", DesBucket=other), "--report", str(path))  # fmt: skip
        assert run.code == 0, run
        assert load_report(path)["destination"] == f"s3://{other}/data"
        assert list_keys(dst, other) == {"data.txt": 4, "data/b.txt": 3}
        for key in ("data.txt", "data/b.txt"):
            assert object_md5(dst, other, key) == object_md5(src, src_bucket, key)
    finally:
        remove_bucket(dst, other)


# ---------------------------------------------------------------------------------------------------------------------
# 5. Command-line overrides
# ---------------------------------------------------------------------------------------------------------------------


def test_flags_override_config_values_and_say_so(dst, bucket, src_dir, tmp_path, make_config):
    write_file(src_dir / "not-this-dir.txt", 10)  # the config's SrcDir: the flag sends another directory
    other = tmp_path / "other"
    write_file(other / "big.bin", 13 * MiB)
    write_file(other / "note.txt", 10)
    report_path = tmp_path / "r.json"
    run = run_with(
        make_config(MaxThread=4, MaxParallelFile=2),
        "--chunk-size", "6MiB", "--threads", "2", "--parallel-files", "1", "--prefix", "other/",
        "--src-dir", str(other), "--job-type", "LOCAL_TO_S3", "--report", str(report_path), "--progress", "log",
    )  # fmt: skip
    assert run.code == 0, run
    assert list_keys(dst, bucket) == {"other/big.bin": 13 * MiB, "other/note.txt": 10}
    assert assert_tree_uploaded(dst, bucket, "other/", other) == 2
    big_etag = etag(dst, bucket, "other/big.bin")
    assert big_etag.endswith("-3") and big_etag == multipart_etag_of(other / "big.bin", 6 * MiB)
    parts = {f["key"]: f["parts"] for f in load_report(report_path)["files"]}
    assert parts == {"other/big.bin": 3, "other/note.txt": 1}

    assert " settings: " not in run.stderr  # for the log file, not the screen
    settings_line = next(line for line in run.log_text.splitlines() if " settings: " in line)
    for shown in ("ChunkSize=6291456", "MaxThread=2", "MaxParallelFile=1", "S3Prefix='other/'",
                  f"SrcDir={str(other)!r}", "JobType='LOCAL_TO_S3'"):  # fmt: skip
        assert shown in settings_line, (shown, settings_line)
    assert "WARNING ChunkSize = 6291456 from the command line (the config says 5242880)" in run.stderr, run
    assert "WARNING MaxThread = 2 from the command line (the config says 4)" in run.stderr, run
    assert "WARNING S3Prefix = 'other/' from the command line (the config says 'up/')" in run.stderr, run
    assert "JobType = " not in run.stderr  # the same value as the config: nothing to warn about
    assert "%|" not in run.output  # not a terminal: no bar


def test_bad_flag_values_are_usage_errors(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 6 * MiB)
    config = make_config()
    run = run_with(config, "--chunk-size", "12XB")
    assert_usage_error(run, "--chunk-size", "'12XB' is not a size")
    run = run_with(config, "--chunk-size", "1MiB")  # parses, but the value is out of range
    assert_usage_error(run, "ChunkSize 1048576 is out of range")
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []


# ---------------------------------------------------------------------------------------------------------------------
# 6. Endpoints and addressing style
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["seaweed", "moto"])
def test_profile_without_endpoint_and_des_endpoint_url(server, request, dst_server, src_dir, make_config, own_profiles):
    """A profile as for AWS itself (keys and region, no endpoint_url): DesEndpointURL and path-style addressing."""
    if server == "seaweed":
        client, name = request.getfixturevalue("dst"), request.getfixturevalue("bucket")
        url, profile = dst_server.endpoint_url, "dst-noep"
    else:
        client, url, profile = request.getfixturevalue("moto"), request.getfixturevalue("moto_url"), "moto"
        name = new_bucket(client)
    write_file(src_dir / "big.bin", CHUNK + MiB)
    write_file(src_dir / "small.txt", 500)
    run = run_tool(make_config(DesProfileName=profile, DesBucket=name, DesEndpointURL=url, AddressingStyle="path"))
    assert run.code == 0, run
    assert run.bytes_sent == CHUNK + MiB + 500
    assert assert_tree_uploaded(client, name, "up/", src_dir) == 2
    assert unfinished_uploads(client, name) == []


def test_des_endpoint_url_wins_over_the_profiles_and_is_checked(
    dst, bucket, dst_server, src_dir, make_config, own_profiles
):
    write_file(src_dir / "small.txt", 700)
    # The "nowhere" profile's own endpoint_url is unreachable...
    run = run_tool(make_config(DesProfileName="nowhere"))
    assert_usage_error(run, "cannot connect")
    # ... and the flag (or DesEndpointURL) sends the same profile's keys to the real server.
    run = run_with(make_config(DesProfileName="nowhere"), "--des-endpoint-url", dst_server.endpoint_url)
    assert run.code == 0, run
    assert f"DesEndpointURL={dst_server.endpoint_url!r}" in run.log_text
    assert object_md5(dst, bucket, "up/small.txt") == md5_file(src_dir / "small.txt")
    run = run_tool(make_config(DesEndpointURL="ftp://x"))
    assert_usage_error(run, "DesEndpointURL 'ftp://x' must start with http:// or https://")
    run = run_tool(make_config(AddressingStyle="sideways"))
    assert_usage_error(run, "AddressingStyle 'sideways' is unknown")


def test_s3_to_s3_with_src_endpoint_url(src, src_bucket, src_server, dst, bucket, make_config, own_profiles):
    objects = {"data/big.bin": CHUNK + 2 * MiB, "data/small.txt": 321}
    for key, size in objects.items():
        src.put_object(Bucket=src_bucket, Key=key, Body=os.urandom(size))
    run = run_tool(
        make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName="src-noep", S3Prefix="data/",
                    SrcEndpointURL=src_server.endpoint_url, AddressingStyle="path")
    )  # fmt: skip
    assert run.code == 0, run
    assert list_keys(dst, bucket) == objects
    for key in objects:
        assert object_md5(dst, bucket, key) == object_md5(src, src_bucket, key), key
    assert run.bytes_sent == sum(objects.values())


# ---------------------------------------------------------------------------------------------------------------------
# 7. Object attributes
# ---------------------------------------------------------------------------------------------------------------------


def test_content_type_guessed_from_the_file_name(target, src_dir, make_config):
    write_file(src_dir / "a.txt", 20)
    write_file(src_dir / "b.json", 30)
    write_file(src_dir / "c.html", 40)
    write_file(src_dir / "big.txt", CHUNK + 10)  # multipart: the type is set on CreateMultipartUpload
    write_file(src_dir / "no-extension", 50)
    run = run_tool(make_config(**target.config))
    assert run.code == 0, run
    expected = {"a.txt": "text/plain", "b.json": "application/json", "c.html": "text/html", "big.txt": "text/plain"}
    for name, content_type in expected.items():
        head = target.client.head_object(Bucket=target.bucket, Key=f"up/{name}")
        assert head["ContentType"] == content_type, (target.name, name, head["ContentType"])
    # Unknown: no Content-Type is sent and the server's default applies.
    assert not target.client.head_object(Bucket=target.bucket, Key="up/no-extension")["ContentType"].startswith("text/")
    assert assert_tree_uploaded(target.client, target.bucket, "up/", src_dir) == 5


ATTRIBUTES = {
    "attr/small.csv": (
        500,
        dict(ContentType="text/csv", ContentEncoding="gzip", CacheControl="max-age=60",
             ContentDisposition='attachment; filename="small.csv"', ContentLanguage="en",
             Metadata={"origin": "unit-test", "owner": "ops"}),
    ),
    "attr/big.bin": (
        CHUNK + MiB,
        dict(ContentType="application/x-custom", ContentEncoding="identity", CacheControl="no-cache",
             ContentDisposition="inline", ContentLanguage="de", Metadata={"checksum": "abc123"}),
    ),
}  # fmt: skip


@pytest.mark.parametrize("server", ["seaweed", "moto"])
def test_s3_to_s3_copies_object_attributes(server, request, make_config, own_profiles):
    if server == "seaweed":
        source, source_bucket = request.getfixturevalue("src"), request.getfixturevalue("src_bucket")
        dest, dest_bucket = request.getfixturevalue("dst"), request.getfixturevalue("bucket")
        values = dict(SrcProfileName=request.getfixturevalue("src_profile"))
    else:  # moto bucket to moto bucket
        url = request.getfixturevalue("moto_url")
        source = dest = request.getfixturevalue("moto")
        source_bucket, dest_bucket = new_bucket(source), new_bucket(dest)
        values = dict(SrcProfileName="moto", SrcEndpointURL=url, DesProfileName="moto", DesEndpointURL=url,
                      DesBucket=dest_bucket, AddressingStyle="path")  # fmt: skip
    for key, (size, attributes) in ATTRIBUTES.items():
        source.put_object(Bucket=source_bucket, Key=key, Body=os.urandom(size), **attributes)
    source.put_object(Bucket=source_bucket, Key="attr/plain.dat", Body=b"no attributes")
    run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket=source_bucket, S3Prefix="attr/", **values))
    assert run.code == 0, run
    for key, (_size, attributes) in ATTRIBUTES.items():
        head = dest.head_object(Bucket=dest_bucket, Key=key)
        for name, value in attributes.items():
            assert head.get(name) == value, (server, key, name, head.get(name))
        assert object_md5(dest, dest_bucket, key) == object_md5(source, source_bucket, key)
    plain = dest.head_object(Bucket=dest_bucket, Key="attr/plain.dat")
    assert plain.get("Metadata") == {} and not plain.get("ContentEncoding") and not plain.get("CacheControl")


# ---------------------------------------------------------------------------------------------------------------------
# 8. Server-side encryption and ACL
# ---------------------------------------------------------------------------------------------------------------------


def test_sse_aes256_and_bucket_owner_full_control(target, src_dir, make_config):
    """Both reach the requests that create objects (seen on the wire through a proxy: PutObject and
    CreateMultipartUpload carry x-amz-acl and x-amz-server-side-encryption), and the stored objects are encrypted.
    bucket-owner-full-control leaves no trace in the ACL when the uploader owns the bucket (the owner has
    FULL_CONTROL either way), so the header is what shows it was sent; test_acl_is_applied_on_moto shows an ACL
    applied."""
    write_file(src_dir / "big.bin", CHUNK + MiB)
    write_file(src_dir / "small.txt", 1234)
    with FaultProxy("127.0.0.1", target.port).start() as proxy:
        config = {**target.config, "DesEndpointURL": proxy.endpoint_url}
        run = run_tool(make_config(ServerSideEncryption="AES256", ACL="bucket-owner-full-control", **config))
        creates = [r for r in proxy.history
                   if r.operation in ("PutObject", "CreateMultipartUpload") and not is_probe(r)]  # fmt: skip
        assert not proxy.exceptions, proxy.exceptions
    assert run.code == 0, run
    assert sorted((r.operation, r.key) for r in creates) == [("CreateMultipartUpload", "up/big.bin"),
                                                             ("PutObject", "up/small.txt")]  # fmt: skip
    for r in creates:
        assert r.headers.get("x-amz-acl") == "bucket-owner-full-control", (target.name, r.operation, r.headers)
        assert r.headers.get("x-amz-server-side-encryption") == "AES256", (target.name, r.operation, r.headers)
    assert assert_tree_uploaded(target.client, target.bucket, "up/", src_dir) == 2
    for key in ("up/big.bin", "up/small.txt"):
        head = target.client.head_object(Bucket=target.bucket, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", (target.name, key)  # both servers report it
    assert unfinished_uploads(target.client, target.bucket) == []


def test_acl_is_applied_on_moto(moto, src_dir, make_config, own_profiles, moto_url):
    """bucket-owner-full-control cannot be told from the default when the uploader owns the bucket; public-read
    can (an AllUsers READ grant), which proves that ACL reaches PutObject and CreateMultipartUpload.  SeaweedFS
    accepts canned ACLs but does not apply them, so this runs on moto only."""
    name = new_bucket(moto)
    write_file(src_dir / "big.bin", CHUNK + MiB)
    write_file(src_dir / "small.txt", 10)
    run = run_tool(
        make_config(
            DesProfileName="moto", DesBucket=name, DesEndpointURL=moto_url, AddressingStyle="path", ACL="public-read"
        )
    )
    assert run.code == 0, run
    for key in ("up/big.bin", "up/small.txt"):
        grants = moto.get_object_acl(Bucket=name, Key=key)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("/global/AllUsers") and g["Permission"] == "READ"
                   for g in grants), (key, grants)  # fmt: skip
    assert assert_tree_uploaded(moto, name, "up/", src_dir) == 2


def test_sse_kms_with_key_on_moto(moto, moto_url, src_dir, make_config, own_profiles):
    """SeaweedFS without a KMS answers InternalError to aws:kms, so this runs on moto only."""
    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=MOTO_KEYS[0],
                       aws_secret_access_key=MOTO_KEYS[1])  # fmt: skip
    key_id = kms.create_key(Description="s3_upload test")["KeyMetadata"]["KeyId"]
    name = new_bucket(moto)
    write_file(src_dir / "big.bin", CHUNK + MiB)
    write_file(src_dir / "small.txt", 99)
    run = run_tool(make_config(DesProfileName="moto", DesBucket=name, DesEndpointURL=moto_url, AddressingStyle="path",
                               ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id))  # fmt: skip
    assert run.code == 0, run
    assert assert_tree_uploaded(moto, name, "up/", src_dir) == 2
    for key in ("up/big.bin", "up/small.txt"):
        head = moto.head_object(Bucket=name, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms" and key_id in head.get("SSEKMSKeyId", ""), head


def test_sse_kms_key_without_kms_is_a_usage_error(make_config):
    run = run_tool(make_config(ServerSideEncryption="AES256", SSEKMSKeyId="some-key"))
    assert_usage_error(run, "SSEKMSKeyId is set but ServerSideEncryption is not 'aws:kms'")
    run = run_tool(make_config(SSEKMSKeyId="some-key"))
    assert_usage_error(run, "SSEKMSKeyId")


# ---------------------------------------------------------------------------------------------------------------------
# 9. MaxBandwidth (correctness only: no timing)
# ---------------------------------------------------------------------------------------------------------------------


def test_max_bandwidth_uploads_correct_bytes(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 12 * MiB)
    write_file(src_dir / "small.txt", 100)
    run = run_tool(make_config(MaxBandwidth=50 * MiB))
    assert run.code == 0, run
    assert "MaxBandwidth=52428800" in run.log_text
    assert run.bytes_sent == 12 * MiB + 100
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2


def test_max_bandwidth_flag_and_sizes_parse(make_config):
    config = make_config(MaxBandwidth=50 * MiB)
    args = s3_upload.parse_args(["--config", str(config), "--max-bandwidth", "20MiB"])
    assert args.set_MaxBandwidth == 20 * MiB
    settings, changed = s3_upload.resolve_settings(args)
    assert settings.max_bandwidth == 20 * MiB
    assert changed == ["MaxBandwidth = 20971520 from the command line (the config says 52428800)"]
    for text, size in (("20MiB", 20 * MiB), ("20MB", 20 * MiB), ("20m", 20 * MiB), ("20MiB/s", 20 * MiB),
                       ("512KiB", 512 * 1024), ("1.5GiB", 1536 * MiB), ("5242880", 5 * MiB), ("0", 0)):  # fmt: skip
        assert s3_upload.parse_size(text) == size, text
    for bad in ("12XB", "", "MiB", "1.2.3MiB"):
        with pytest.raises(argparse.ArgumentTypeError):
            s3_upload.parse_size(bad)


def test_negative_max_bandwidth_is_a_usage_error(make_config):
    assert_usage_error(run_tool(make_config(MaxBandwidth=-1)), "MaxBandwidth must be 0 (unlimited)")


# ---------------------------------------------------------------------------------------------------------------------
# 10. Packaging: the installed s3-upload command
# ---------------------------------------------------------------------------------------------------------------------


def installed_command() -> pathlib.Path:
    command = pathlib.Path(sys.executable).parent / "s3-upload"
    if not command.exists():
        pytest.skip(f"s3-upload is not installed next to {sys.executable} (CI runs `pip install --no-deps .`)")
    return command


def normalised_help(text: str) -> str:
    first, _, rest = text.partition("\n")
    return re.sub(r"^usage: \S+", "usage: PROG", first) + "\n" + rest


def test_installed_command_has_the_same_help_and_runs_a_job(dst, bucket, src_dir, tmp_path, make_config):
    command = installed_command()
    installed = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    script = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert installed.returncode == script.returncode == 0, (installed, script)
    assert normalised_help(installed.stdout) == normalised_help(script.stdout)
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.split()[-1] == s3_upload.__version__, "the installed s3-upload is not this version"

    write_file(src_dir / "big.bin", CHUNK + MiB)
    write_file(src_dir / "small.txt", 42)
    work = tmp_path / "elsewhere"
    work.mkdir()
    config = make_config()
    run = run_with(config, command=[str(command), "--config", str(config)], cwd=work)
    assert run.code == 0, run
    assert run.bytes_sent == CHUNK + MiB + 42
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
