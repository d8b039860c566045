"""S3_TO_S3 between two SeaweedFS servers with different credentials (two accounts / partitions): ranged GETs from the
source profile, UploadPart to the destination profile; every object downloaded from both sides and compared."""

from __future__ import annotations

import hashlib
import os

import botocore.config
import pytest
from test_resume import start_upload

import s3_upload
from conftest import (
    SRC_KEYS,
    MiB,
    in_process_logging,
    leave_unfinished,
    list_keys,
    load_report,
    object_md5,
    run_tool,
    unfinished_uploads,
)
from faultproxy import FaultProxy

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


def source_reads(proxy) -> list[str]:
    """The Range of every GET that reached the source."""
    return [r.headers.get("range", "") for r in proxy.history if r.operation == "GetObject"]


def test_resume_of_its_own_upload_trusts_parts_by_size(src, dst, bucket, source_objects, s3_config, aws_profiles,
                                                       dst_server, src_server):  # fmt: skip
    """The upload's marker ties it to this source version: parts on S3 count by size, nothing is read twice."""
    leave_unfinished(s3_config, aws_profiles, dst_server, fail_part=3, SrcFileIndex="big.bin")
    with FaultProxy("127.0.0.1", src_server.port).start() as proxy:
        aws_profiles.add("counted", proxy.endpoint_url, *SRC_KEYS)
        run = run_tool(s3_config(SrcFileIndex="big.bin", SrcProfileName="counted"))
        reads = source_reads(proxy)
    assert run.code == 0, run
    assert "has 2 of 3 parts on S3 (made for this version of the source)" in run.stderr
    assert run.bytes_sent == OBJECTS["data/big.bin"] - 2 * CHUNK
    assert reads == [f"bytes={2 * CHUNK}-{OBJECTS['data/big.bin'] - 1}"]  # only the missing part was downloaded
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []


def test_resume_of_an_upload_without_marker_reads_its_parts_again(src, dst, bucket, source_objects, s3_config):
    """An upload made by another tool is tied to no version: its parts are downloaded from the source again and
    reused only when their MD5 matches (nothing is uploaded twice)."""
    data = src.get_object(Bucket=source_objects, Key="data/big.bin")["Body"].read()
    start_upload(dst, bucket, "data/big.bin", data, CHUNK, parts=(1, 2))
    run = run_tool(s3_config(SrcFileIndex="big.bin"))
    assert run.code == 0, run
    assert "has 2 of 3 parts on S3 (made without s3_upload's marker" in run.stderr
    assert run.bytes_sent == len(data) - 2 * CHUNK
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []

    # ifVerifyMD5 re-reads the whole source after completion and compares the ETag.
    dst.delete_object(Bucket=bucket, Key="data/big.bin")
    start_upload(dst, bucket, "data/big.bin", data, CHUNK, parts=(1,))
    run = run_tool(s3_config(SrcFileIndex="big.bin", ifVerifyMD5=True))
    assert run.code == 0, run
    assert "re-read ETag" in run.stderr
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []


def test_verify_md5_catches_a_bad_resumed_part_and_redoes_the_file(src, dst, bucket, source_objects, s3_config,
                                                                   aws_profiles, dst_server, src_server):  # fmt: skip
    """A part of the right size but wrong bytes inside the tool's own upload (damaged on the server: nothing this
    side can see it without downloading) is trusted by size; ifVerifyMD5 re-reads the source, finds the ETag
    differs, deletes the object and uploads it again."""
    # A source without a full-object checksum (that one would let S3 itself refuse the bad part: test_server_copy).
    plain = src_server.client(*SRC_KEYS, config=botocore.config.Config(request_checksum_calculation="when_required"))
    plain.put_object(Bucket=source_objects, Key="data/big.bin", Body=os.urandom(OBJECTS["data/big.bin"]))
    head = src.head_object(Bucket=source_objects, Key="data/big.bin")
    listed = s3_upload.SourceFile("data/big.bin", head["ContentLength"], 0.0, etag=head["ETag"].strip('"'))
    marker = s3_upload.marker_body(s3_upload.S3Source.identity(None, listed),
                                   s3_upload.plan_chunks(listed.size, CHUNK))  # fmt: skip
    upload_id = start_upload(dst, bucket, "data/big.bin", b"\x00" * CHUNK, CHUNK, parts=(1,))
    for number in s3_upload.MARKER_PARTS:
        dst.upload_part(Bucket=bucket, Key="data/big.bin", UploadId=upload_id, PartNumber=number, Body=marker)
    run = run_tool(s3_config(SrcFileIndex="big.bin", ifVerifyMD5=True))
    assert run.code == 0, run
    assert "deleting it and uploading again" in run.stderr
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []


def test_source_replaced_since_its_upload_began_restarts(src, dst, bucket, source_objects, s3_config, aws_profiles,
                                                         dst_server):  # fmt: skip
    leave_unfinished(s3_config, aws_profiles, dst_server, SrcFileIndex="big.bin")
    src.put_object(Bucket=source_objects, Key="data/big.bin", Body=os.urandom(OBJECTS["data/big.bin"]))
    run = run_tool(s3_config(SrcFileIndex="big.bin"))
    assert run.code == 0, run
    assert "made for another version of the source" in run.stderr
    assert run.bytes_sent == OBJECTS["data/big.bin"]
    assert_copied(src, source_objects, dst, bucket, ["data/big.bin"])
    assert unfinished_uploads(dst, bucket) == []


def test_a_source_whose_parts_are_not_of_one_size_is_copied_in_its_own_layout(src, dst, bucket, src_bucket,
                                                                              s3_config, tmp_path):  # fmt: skip
    """33 parts of 6 MiB, but part 10 is 7 MiB and part 20 is 5 MiB: the first, second and last parts (and the
    total) look like one size.  Every part's size is asked, the copy keeps that very layout, and its ETag equals the
    source's (it used to be cut in 6 MiB parts, fail its ETag proof and be deleted on every run)."""
    sizes = [6 * MiB] * 33
    sizes[9], sizes[19] = 7 * MiB, 5 * MiB
    body = os.urandom(sum(sizes))
    upload = src.create_multipart_upload(Bucket=src_bucket, Key="data/odd.bin")["UploadId"]
    parts, offset = [], 0
    for number, size in enumerate(sizes, start=1):
        etag = src.upload_part(Bucket=src_bucket, Key="data/odd.bin", UploadId=upload, PartNumber=number,
                               Body=body[offset : offset + size])["ETag"]  # fmt: skip
        parts.append({"PartNumber": number, "ETag": etag})
        offset += size
    source_etag = src.complete_multipart_upload(Bucket=src_bucket, Key="data/odd.bin", UploadId=upload,
                                                MultipartUpload={"Parts": parts})["ETag"]  # fmt: skip
    report = tmp_path / "report.json"
    run = run_tool(s3_config(SrcFileIndex="odd.bin", ChunkSize=8 * MiB, MaxThread=8), extra=["--report", str(report)])
    assert run.code == 0, run
    assert object_md5(dst, bucket, "data/odd.bin") == hashlib.md5(body).hexdigest()
    assert dst.head_object(Bucket=bucket, Key="data/odd.bin")["ETag"] == source_etag
    [copied] = load_report(report)["files"]
    assert copied["proof"] == "ETag equal to the source"
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(s3_config(SrcFileIndex="odd.bin", ChunkSize=8 * MiB))
    assert again.code == 0 and again.bytes_sent == 0, again


def test_directories_listed_over_many_pages_are_copied_whole(src, src_bucket, dst, bucket, s3_job, monkeypatch,
                                                             capsys, request):  # fmt: skip
    """Pages of two keys (S3 gives at most 1,000): every page of a source directory is walked, its subdirectories
    included, and every page of the destination is listed for the plan and the final comparison; a second run finds
    everything there and sends nothing."""
    keys = [f"data/k{i:02d}.bin" for i in range(7)] + [f"data/sub/s{i}.bin" for i in range(5)] + ["data/sub/t/x.bin"]
    for i, key in enumerate(keys):
        src.put_object(Bucket=src_bucket, Key=key, Body=os.urandom(100 + i))
    monkeypatch.setattr(s3_upload, "LIST_PAGE_SIZE", 2)
    in_process_logging(monkeypatch, request)
    config = s3_job(S3Prefix="data")
    assert s3_upload.main(["--config", str(config)]) == 0, capsys.readouterr()
    out, _ = capsys.readouterr()
    assert list_keys(dst, bucket) == {key: 100 + i for i, key in enumerate(keys)}
    for key in keys:
        assert object_md5(dst, bucket, key) == object_md5(src, src_bucket, key), key
    assert f"All source files are in destination s3://{bucket}/data" in out, out
    assert s3_upload.main(["--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    assert "summary: 0 uploaded, 13 skipped" in out, out
    assert unfinished_uploads(dst, bucket) == []
