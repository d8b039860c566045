"""S3_TO_S3 between two SeaweedFS servers with different credentials (two accounts / partitions): ranged GETs from the
source profile, UploadPart to the destination profile; every object downloaded from both sides and compared."""

from __future__ import annotations

import os
import time

import pytest
from test_resume import start_upload

from conftest import MiB, list_keys, object_md5, run_tool, unfinished_uploads

CHUNK = 5 * MiB

OBJECTS = {
    "data/big.bin": 12 * MiB + 321,
    "data/exact.bin": 10 * MiB,
    "data/nested/deep/报告 ü.txt": 4321,
    "data/empty.dat": 0,
    "data/small.txt": 99,
}


@pytest.fixture
def source_objects(src, src_bucket):
    for key, size in OBJECTS.items():
        src.put_object(Bucket=src_bucket, Key=key, Body=os.urandom(size))
    src.put_object(Bucket=src_bucket, Key="elsewhere/not-copied.txt", Body=b"outside the prefix")
    return src_bucket


@pytest.fixture
def s3_config(make_config, src_profile, source_objects):
    def make(**overrides):
        values = dict(JobType="S3_TO_S3", SrcBucket=source_objects, SrcProfileName=src_profile, S3Prefix="data/")
        values.update(overrides)
        return make_config(**values)

    return make


def assert_copied(src, src_bucket, dst, bucket, keys) -> None:
    for key in keys:
        assert object_md5(dst, bucket, key) == object_md5(src, src_bucket, key), key


def test_copies_prefix_between_accounts(src, dst, bucket, source_objects, s3_config):
    run = run_tool(s3_config())
    assert run.code == 0, run
    assert list_keys(dst, bucket) == OBJECTS  # same keys, same sizes; nothing outside the prefix
    assert_copied(src, source_objects, dst, bucket, OBJECTS)
    assert run.bytes_sent == sum(OBJECTS.values())
    assert "All source files are in destination" in run.stdout
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(s3_config())
    assert again.code == 0 and again.bytes_sent == 0, again


def test_single_key(src, dst, bucket, source_objects, s3_config):
    run = run_tool(s3_config(SrcFileIndex="big.bin"))
    assert run.code == 0, run
    assert list(list_keys(dst, bucket)) == ["data/big.bin"]
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])


def test_resume_trusts_existing_parts_by_size_and_verify_md5_rereads_them(src, dst, bucket, source_objects, s3_config):
    data = src.get_object(Bucket=source_objects, Key="data/big.bin")["Body"].read()
    start_upload(dst, bucket, "data/big.bin", data, CHUNK, parts=(1, 2))
    run = run_tool(s3_config(SrcFileIndex="big.bin"))
    assert run.code == 0, run
    assert "has 2 of 3 parts" in run.stderr
    assert run.bytes_sent == len(data) - 2 * CHUNK  # resumed parts are not downloaded again
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])

    # ifVerifyMD5 re-reads the whole source, parts from the earlier run included, and compares the ETag.
    dst.delete_object(Bucket=bucket, Key="data/big.bin")
    start_upload(dst, bucket, "data/big.bin", data, CHUNK, parts=(1,))
    run = run_tool(s3_config(SrcFileIndex="big.bin", ifVerifyMD5=True))
    assert run.code == 0, run
    assert "re-read ETag" in run.stderr
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []


def test_verify_md5_catches_a_bad_resumed_part_and_redoes_the_file(src, dst, bucket, source_objects, s3_config):
    """A part left by an earlier run with the right size but wrong bytes cannot be seen without downloading it:
    ifVerifyMD5 re-reads the source, finds the ETag differs, deletes the object and uploads it again."""
    data = src.get_object(Bucket=source_objects, Key="data/big.bin")["Body"].read()
    bad = bytearray(data)
    bad[7] ^= 0x01
    start_upload(dst, bucket, "data/big.bin", bytes(bad), CHUNK, parts=(1,))
    run = run_tool(s3_config(SrcFileIndex="big.bin", ifVerifyMD5=True))
    assert run.code == 0, run
    assert "deleting it and uploading again" in run.stderr
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []


def test_source_replaced_since_upload_began_restarts(src, dst, bucket, source_objects, s3_config):
    data = src.get_object(Bucket=source_objects, Key="data/big.bin")["Body"].read()
    start_upload(dst, bucket, "data/big.bin", data, CHUNK, parts=(1,))
    time.sleep(1.1)  # S3 times are whole seconds
    src.put_object(Bucket=source_objects, Key="data/big.bin", Body=os.urandom(len(data)))
    run = run_tool(s3_config(SrcFileIndex="big.bin"))
    assert run.code == 0, run
    assert "modified after the upload began" in run.stderr
    assert run.bytes_sent == len(data)
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []
