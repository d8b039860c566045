"""The original's users keep their habits (issue 10): S3Prefix as a string for S3_TO_S3, the closing line and the log
file line, checked against real SeaweedFS servers.  CLEAN is in test_resume.py, ALIOSS_TO_S3 in test_alioss.py."""

from __future__ import annotations

import os
import pathlib
import re

from conftest import MiB, list_keys, md5_file, object_md5, run_tool, unfinished_uploads, write_file

OBJECTS = {
    "name/a.bin": 6 * MiB + 7,  # multipart at 5 MiB
    "name.txt": 10,
    "name2/deep/b.txt": 20,
    "name": 3,  # the prefix itself is a key too
    "other/c.txt": 30,  # not under "name"
    "nam.txt": 40,  # shorter than the prefix
}


def test_s3prefix_is_a_string_in_s3_to_s3(src, src_bucket, dst, bucket, make_config, src_profile):
    """`S3Prefix = "name"` copies name/..., name.txt and name2/... as the original (and `aws s3 ls`) would."""
    for key, size in OBJECTS.items():
        src.put_object(Bucket=src_bucket, Key=key, Body=os.urandom(size))
    config = make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile, S3Prefix="name")
    run = run_tool(config)
    assert run.code == 0, run
    wanted = {k: v for k, v in OBJECTS.items() if k.startswith("name")}
    assert list_keys(dst, bucket) == wanted
    for key in wanted:
        assert object_md5(dst, bucket, key) == object_md5(src, src_bucket, key), key
    assert f"All source files are in destination s3://{bucket}/name" in run.stdout
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(config)
    assert again.code == 0 and again.bytes_sent == 0, again

    # The final comparison uses the same string: a destination object missing under it is reported.
    dst.delete_object(Bucket=bucket, Key="name2/deep/b.txt")
    dst.put_object(Bucket=bucket, Key="name2/deep/b.txt", Body=b"x")  # wrong size: copied again
    third = run_tool(config)
    assert third.code == 0 and third.bytes_sent == 20, third


def test_s3prefix_stays_a_folder_for_local_to_s3(dst, bucket, src_dir, make_config):
    write_file(src_dir / "a.txt", 5)
    run = run_tool(make_config(S3Prefix="name"))
    assert run.code == 0, run
    assert list_keys(dst, bucket) == {"name/a.txt": 5}
    assert object_md5(dst, bucket, "name/a.txt") == md5_file(src_dir / "a.txt")


def test_closing_line_and_log_file_line(dst, bucket, src_dir, make_config, tmp_path):
    write_file(src_dir / "a.txt", 5)
    config = make_config(S3Prefix="multipart")
    run = run_tool(config)
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    logging_to = re.fullmatch(r"Logging to file: (.+)", lines[0])
    assert logging_to, lines[0]
    log_file = pathlib.Path(logging_to.group(1))
    assert log_file.is_absolute() and log_file.parent == tmp_path / "log" and log_file.is_file()
    assert re.fullmatch(rf"MISSION ACCOMPLISHED - Time: \d+H:\d+M:\d+S - FROM: {re.escape(str(src_dir))} TO "
                        rf"{bucket}/multipart", lines[-1]), lines[-1]  # fmt: skip
    assert any(line.startswith("summary: ") for line in lines)  # the summary stays
    assert "MISSION ACCOMPLISHED" in log_file.read_text()
    assert object_md5(dst, bucket, "multipart/a.txt") == md5_file(src_dir / "a.txt")


def test_no_closing_line_over_a_failure(dst, bucket, src_dir, make_config):
    write_file(src_dir / "a.txt", 5)
    (src_dir / "dangling").symlink_to(src_dir / "nowhere")  # a listing error: exit 1
    run = run_tool(make_config())
    assert run.code == 1, run
    assert "MISSION ACCOMPLISHED" not in run.output
