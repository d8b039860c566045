"""What a person sees is true (issue 13): the console's first lines, the progress bar's numbers after a resume, the
summary's time, the closing block, and the --check preflight, against a real SeaweedFS."""

from __future__ import annotations

import collections
import os
import pathlib
import re
import subprocess
import time

import pytest
from test_usability import run_on_terminal

import s3_upload
from conftest import (
    DST_KEYS,
    SRC_KEYS,
    MiB,
    leave_unfinished,
    list_keys,
    md5_file,
    modified_earlier,
    object_md5,
    run_tool,
    tool_command,
    unfinished_uploads,
    without_permission_override,
    write_file,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB


class StoppedClock:
    """The time module as s3_upload sees it, with monotonic() standing still: a rate shown to 0.1 KiB/s over 10 s
    would otherwise change if the test lost the CPU for a millisecond."""

    def __init__(self):
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_progress_rate_counts_only_bytes_sent(monkeypatch):
    """Parts found on S3 are done, not transferred: the rate is what was sent."""
    clock = StoppedClock()
    monkeypatch.setattr(s3_upload, "time", clock)
    progress = s3_upload.Progress()
    task = s3_upload.FileTask(s3_upload.SourceFile("up/big", 20 * MiB, 0.0), "multipart",
                              s3_upload.plan_chunks(20 * MiB, CHUNK))  # fmt: skip
    progress.begin([task])
    progress._samples = collections.deque([(clock.now - 10.0, 0)])  # as if the transfer began 10 s ago
    progress.file_started("up/big", 4)
    progress.part_done("up/big", 2 * CHUNK, how="found")
    progress.part_done("up/big", CHUNK)
    snap = progress.snapshot()
    assert (snap.done, snap.found) == (3 * CHUNK, 2 * CHUNK)
    assert 0.45 * MiB < snap.rate < 0.55 * MiB, snap.rate  # 5 MiB in 10 s, not 15 MiB
    line = progress.line()
    assert "15.0 MiB of 20.0 MiB (75%; 10.0 MiB of it found on S3)" in line, line
    assert "512.0 KiB/s sent" in line and "ETA 10s" in line, line


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3725, "1h02m")])
def test_human_duration(seconds, text):
    assert s3_upload.human_duration(seconds) == text


def test_bar_after_a_resume_shows_the_rate_sent_in_binary_units(dst, bucket, src_dir, make_config, aws_profiles,
                                                                dst_server):  # fmt: skip
    write_file(src_dir / "big.bin", 6 * CHUNK)
    leave_unfinished(make_config, aws_profiles, dst_server, fail_part=4)  # parts 1-3 (15 MiB) on S3
    cap = 4 * MiB
    config = make_config(MaxBandwidth=cap, MaxThread=1, MaxParallelFile=1)
    code, out = run_on_terminal([*tool_command(config), "--progress", "bar"], config.parent)
    assert code == 0, out
    renders = re.findall(r"(\d+\.\d) MiB of 30\.0 MiB \(\d+%; 15\.0 MiB of it found on S3\) (\d+\.\d) MiB/s ETA", out)
    assert renders, out
    rate = float(renders[-1][1]) * MiB
    # 15 MiB sent at 4 MiB/s; a part may start early by one part at most.  Counting the 15 MiB found on S3 as
    # transferred (what the bar used to do) would show about twice the cap.
    assert rate < 1.5 * cap, renders[-1]
    assert " MB" not in out and "MB/s" not in out  # binary units, labelled as such
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")


def test_summary_time_starts_at_the_clean_answer(dst, bucket, src_dir, make_config, aws_profiles, dst_server):
    write_file(src_dir / "big.bin", 2 * CHUNK)
    leave_unfinished(make_config, aws_profiles, dst_server)
    config = make_config(DontAskMeToClean=False)
    proc = subprocess.Popen(tool_command(config), cwd=config.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    asked = ""
    while not asked.endswith("(n/CLEAN)"):  # the clock runs from the start, which may take a while under coverage
        char = proc.stdout.read(1)
        assert char, asked
        asked += char
    time.sleep(5)  # a person reading the question
    answered = time.monotonic()
    out, err = proc.communicate("\n", timeout=120)
    after_the_answer = time.monotonic() - answered  # what the test saw: the transfer, and the process's exit
    out = asked + out
    assert proc.returncode == 0, out + err
    transfer = float(re.search(r"sent in (\d+\.\d)s", out).group(1))
    whole = re.search(r"MISSION ACCOMPLISHED - Time: (\d+)H:(\d+)M:(\d+)S", out).groups()
    assert int(whole[0]) * 3600 + int(whole[1]) * 60 + int(whole[2]) >= 5  # the run's whole time, the 5 s included
    # The transfer's time runs from the answer on: no longer than the test saw from its answer to the exit (counted
    # from the start it would be 5 s longer), however long a busy machine takes.
    assert transfer <= after_the_answer + 0.05, (after_the_answer, out)


def test_console_shows_job_plan_and_log_path_and_keeps_the_settings_for_the_log(dst, bucket, src_dir, make_config):
    write_file(src_dir / "a.bin", CHUNK + 1)
    write_file(src_dir / "b.txt", 10)
    modified_earlier(src_dir / "b.txt")
    dst.put_object(Bucket=bucket, Key="up/b.txt", Body=b"0123456789")
    run = run_tool(make_config())
    assert run.code == 0, run
    log_path = pathlib.Path(re.match(r"Logging to file: (.+)", run.stdout).group(1))
    assert f"job: LOCAL_TO_S3 {src_dir} -> s3://{bucket}/up/ (profile dst)" in run.stderr
    assert "plan: 2 file(s), 5.0 MiB: 1 to upload (5.0 MiB), 1 to skip (already at the destination)" in run.stderr
    assert "settings:" not in run.stderr
    assert "settings: JobType='LOCAL_TO_S3'" in log_path.read_text()


def test_closing_block_names_each_outcome_its_reason_fix_and_the_exit_code(dst, bucket, src_dir, make_config,
                                                                          aws_profiles, dst_server):  # fmt: skip
    write_file(src_dir / "resumed.bin", 2 * CHUNK)
    leave_unfinished(make_config, aws_profiles, dst_server)
    write_file(src_dir / "there.txt", 10)
    modified_earlier(src_dir / "there.txt")
    dst.put_object(Bucket=bucket, Key="up/there.txt", Body=(src_dir / "there.txt").read_bytes())
    write_file(src_dir / "locked.txt", 10)
    (src_dir / "locked.txt").chmod(0)
    try:
        config = make_config()
        proc = subprocess.run(tool_command(config), cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, preexec_fn=without_permission_override)  # fmt: skip
    finally:
        (src_dir / "locked.txt").chmod(0o644)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(re.match(r"summary: 1 uploaded \(1 resumed from parts already on S3\), 1 skipped, 1 failed; ", line)
               for line in lines), lines  # fmt: skip
    assert "  skipped: 1 already at the destination (same size, not modified since the object was written)" in lines
    failed = [line for line in lines if line.startswith("  failed: up/locked.txt: ")]
    assert failed and "Permission denied" in failed[0] and "fix its permissions" in failed[0], lines
    assert lines[-1] == ("exit code 1: some files failed or are missing (named above); run the same command again to "
                         "resume them")  # fmt: skip
    assert object_md5(dst, bucket, "up/resumed.bin") == md5_file(src_dir / "resumed.bin")


def check_run(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(tool_command(config) + ["--check", *args], cwd=config.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def check_lines(out: str) -> dict[str, str]:
    """'what' -> 'ok' / 'MISSING' from the check's lines."""
    found = re.findall(r"^  (ok|MISSING)\s+(.+?)\s{2,}", out, flags=re.M)
    return {what: state for state, what in found}


def test_check_names_each_missing_permission_and_leaves_nothing(dst, bucket, src_dir, make_config):
    write_file(src_dir / "a.txt", 10)
    everything = check_run(make_config())
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert set(check_lines(everything.stdout).values()) == {"ok"} and len(check_lines(everything.stdout)) == 10
    assert "every permission the job needs is there" in everything.stdout

    reader = check_run(make_config(DesProfileName="reader"))  # may read and list, not write
    assert reader.returncode == 2, reader.stdout
    states = check_lines(reader.stdout)
    assert states["list the destination"] == "ok" and states["create a multipart upload"] == "MISSING"
    assert re.search(r"MISSING\s+create a multipart upload\s+s3:PutObject on arn:aws:s3:::" + bucket + r"/up/\*: "
                     r"AccessDenied for profile reader", reader.stdout), reader.stdout  # fmt: skip

    writer = check_run(make_config(DesProfileName="writer"))  # may write, not list
    assert writer.returncode == 2, writer.stdout
    states = check_lines(writer.stdout)
    assert states["list the destination"] == "MISSING" and states["list unfinished uploads"] == "MISSING"
    assert states["create a multipart upload"] == "ok" and states["abort it"] == "ok"
    assert "s3:ListBucketMultipartUploads" in writer.stdout
    # Nothing written, nothing left: no object, no unfinished upload (the check's own upload was aborted).
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []


def test_check_tries_every_action_a_run_uses_head_object_and_delete_object_too(dst, bucket, dst_server, src_dir,
                                                                                 make_config, aws_profiles,
                                                                                 no_get_object):  # fmt: skip
    """A profile without s3:GetObject passed --check, then every run stopped at its first HeadObject.  --check now
    HEADs a key of its own that does not exist (404 when allowed; 403 when s3:GetObject is refused, as here, from
    a bucket policy) and DELETEs that key (S3 answers 204 for a key that does not exist: nothing real is deleted)."""
    write_file(src_dir / "a.txt", 10)
    run = check_run(make_config(DesProfileName=no_get_object))
    assert run.returncode == 2, run.stdout + run.stderr
    states = check_lines(run.stdout)
    assert [what for what, state in states.items() if state == "MISSING"] == ["HEAD an object"], run.stdout
    assert states["delete an object"] == "ok"
    assert re.search(r"^  MISSING\s+HEAD an object\s+s3:GetObject on arn:aws:s3:::" + bucket + r"/up/\*: refused "
                     r"\(HTTP 403\) for profile noread$", run.stdout, flags=re.M), run.stdout  # fmt: skip
    assert "check: 1 missing" in run.stdout
    # DeleteObject refused: named with its permission.
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=403, error_code="AccessDenied",
                  match=lambda r: r.operation == "DeleteObject")  # fmt: skip
        aws_profiles.add("nodelete", proxy.endpoint_url, *DST_KEYS)
        refused = check_run(make_config(DesProfileName="nodelete"))
        deletes = [r.key for r in proxy.history if r.operation == "DeleteObject"]
    assert refused.returncode == 2, refused.stdout
    assert re.search(r"^  MISSING\s+delete an object\s+s3:DeleteObject on arn:aws:s3:::" + bucket + r"/up/\*: "
                     r"AccessDenied for profile nodelete$", refused.stdout, flags=re.M), refused.stdout  # fmt: skip
    [deleted] = deletes  # only the check's own key, which does not exist
    assert re.fullmatch(r"up/s3_upload-check-[0-9a-f]{12}", deleted), deleted
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []


def test_check_of_an_s3_source(src, src_bucket, dst, bucket, make_config, src_profile):
    config = make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile, S3Prefix="data/")
    empty = check_run(config)
    assert empty.returncode == 0, empty.stdout
    assert "nothing under the prefix to try" in empty.stdout
    src.put_object(Bucket=src_bucket, Key="data/x.bin", Body=os.urandom(100))
    full = check_run(config)
    assert full.returncode == 0, full.stdout
    assert check_lines(full.stdout)["read an object"] == "ok"
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []


def test_check_with_a_refused_secret_says_check_the_credentials_not_grant_a_permission(dst, bucket, make_config):
    run = check_run(make_config(DesProfileName="badsecret"))
    assert run.returncode == 2, run.stdout + run.stderr
    states = check_lines(run.stdout)
    assert states["list the destination"] == states["create a multipart upload"] == "MISSING"
    line = next(line for line in run.stdout.splitlines() if "list the destination" in line)
    assert re.search(r": SignatureDoesNotMatch \(HTTP 403\).*; the profile's credentials were refused: check its "
                     r"access key and secret in ~/.aws/credentials \(profile badsecret\)$", line), line  # fmt: skip
    assert "not-the-secret" not in run.stdout + run.stderr
    assert unfinished_uploads(dst, bucket) == []


def test_check_of_an_unreadable_srcdir_names_the_permission_to_give(dst, bucket, src_dir, make_config):
    config = make_config()
    src_dir.chmod(0o000)
    try:
        proc = subprocess.run(tool_command(config) + ["--check"], cwd=config.parent, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=without_permission_override)  # fmt: skip
    finally:
        src_dir.chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert check_lines(proc.stdout)["read SrcDir"] == "MISSING"
    assert re.search(r"^  MISSING\s+read SrcDir\s+" + re.escape(str(src_dir)) + r": Permission denied; give this user "
                     r"read and execute permission$", proc.stdout, flags=re.M), proc.stdout  # fmt: skip
    assert set(check_lines(proc.stdout).values()) == {"ok", "MISSING"}  # the destination is still checked
    assert "check: 1 missing" in proc.stdout


def test_check_of_a_source_that_cannot_be_listed_does_not_try_to_read(src_server, src_bucket, dst, bucket,
                                                                       make_config, aws_profiles):  # fmt: skip
    aws_profiles.add("badsrc", src_server.endpoint_url, SRC_KEYS[0], "not-the-source-secret")
    run = check_run(make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName="badsrc", S3Prefix="data/"))
    assert run.returncode == 2, run.stdout + run.stderr
    states = check_lines(run.stdout)
    assert states["list the source"] == states["read an object"] == "MISSING"
    assert re.search(r"MISSING\s+read an object\s+s3:GetObject on arn:aws:s3:::" + src_bucket + r"/data/\*: not tried: "
                     r"the source cannot be listed$", run.stdout, flags=re.M), run.stdout  # fmt: skip
    assert states["list the destination"] == "ok"


def test_check_whose_abort_is_refused_says_its_upload_is_left_and_asks_for_the_acl_permission(
    dst, bucket, dst_server, make_config, aws_profiles
):
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=403, error_code="AccessDenied",
                  match=lambda r: r.operation == "AbortMultipartUpload")  # fmt: skip
        aws_profiles.add("noabort", proxy.endpoint_url, *DST_KEYS)
        run = check_run(make_config(DesProfileName="noabort", ACL="bucket-owner-full-control"))
    assert run.returncode == 2, run.stdout + run.stderr
    states = check_lines(run.stdout)
    assert states["create a multipart upload"] == states["upload a part"] == "ok"
    assert f"s3:PutObject on arn:aws:s3:::{bucket}/up/* and s3:PutObjectAcl" in run.stdout
    [left] = unfinished_uploads(dst, bucket)  # what the line says is left is there, and only that
    assert re.match(r"up/s3_upload-check-[0-9a-f]{12}$", left["Key"])
    said = (r"MISSING\s+abort it\s+s3:AbortMultipartUpload on arn:aws:s3:::" + bucket + r"/up/\*: AccessDenied for "
            r"profile noabort \(the check's upload of " + left["Key"] + r" is left: abort it once the permission is "
            r"granted, or answer CLEAN\)$")  # fmt: skip
    assert re.search(said, run.stdout, flags=re.M), run.stdout
    assert list_keys(dst, bucket) == {}  # no object written
