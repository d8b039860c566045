"""A full-object checksum that S3 checks and keeps (issue 20, item 1): LOCAL_TO_S3 computes each part's CRC32 in the
same pass as its MD5, joins them into the whole file's, creates the upload with CRC32 / FULL_OBJECT, sends each part's
CRC32 and gives the whole file's to CompleteMultipartUpload (a small file: to PutObject).  S3 refuses the completion
if the bytes do not match, and keeps the value: HeadObject(ChecksumMode="ENABLED") returns it, and later downloads
by boto3 or the AWS CLI check it.  SeaweedFS 4.48 does all of this (ChecksumType FULL_OBJECT included)."""

from __future__ import annotations

import base64
import os
import re
import zlib

from test_resume import start_upload

import s3_upload
from conftest import (
    DST_KEYS,
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

CHUNK = 5 * MiB


def crc32_of(path) -> str:
    return base64.b64encode(zlib.crc32(path.read_bytes()).to_bytes(4, "big")).decode()


def test_a_local_file_gets_a_full_object_crc32_that_s3_checks_and_keeps(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 3 * CHUNK + 12345)  # 4 parts
    write_file(src_dir / "small.txt", 1000)
    run = run_tool(make_config())
    assert run.code == 0, run
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
    for name in ("big.bin", "small.txt"):
        head = dst.head_object(Bucket=bucket, Key=f"up/{name}", ChecksumMode="ENABLED")
        assert head.get("ChecksumCRC32") == crc32_of(src_dir / name), head
    assert dst.head_object(Bucket=bucket, Key="up/big.bin", ChecksumMode="ENABLED")["ChecksumType"] == "FULL_OBJECT"
    assert "proven equal to the source: 2 by full-object CRC32" in run.stdout, run.stdout


def test_an_upload_of_an_earlier_s3_upload_without_a_checksum_resumes_proven_by_part_md5s(dst, bucket, src_dir,
                                                                                         make_config):  # fmt: skip
    """An upload made by s3_upload before local files got a checksum (created without an algorithm, its marker saying
    'checksum none') is resumed, not restarted: completed without a full-object checksum, proven by part MD5s."""
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK + 100)
    data = path.read_bytes()
    st = os.stat(path)
    f = s3_upload.SourceFile("up/big.bin", st.st_size, st.st_mtime, path=str(path))
    identity = s3_upload.LocalSource.identity(None, f)
    marker = s3_upload.marker_body(identity, s3_upload.plan_chunks(len(data), CHUNK), None)
    upload_id = start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=())
    for number in sorted(s3_upload.MARKER_PARTS):
        dst.upload_part(Bucket=bucket, Key="up/big.bin", UploadId=upload_id, PartNumber=number, Body=marker)
    for number in (1, 2):
        dst.upload_part(Bucket=bucket, Key="up/big.bin", UploadId=upload_id, PartNumber=number,
                        Body=data[(number - 1) * CHUNK : number * CHUNK])  # fmt: skip
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "has 2 of 4 parts on S3 (made for this version of the source)" in run.stderr, run.stderr
    assert "made by an earlier s3_upload without a full-object checksum" in run.stderr
    assert run.bytes_sent == len(data) - 2 * CHUNK
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert "1 by part MD5s" in run.stdout
    assert unfinished_uploads(dst, bucket) == []


def test_a_store_that_refuses_full_object_checksums_is_said_once(dst, bucket, src_dir, make_config, aws_profiles,
                                                                 dst_server):  # fmt: skip
    """A store that answers 501 NotImplemented to any request carrying a checksum: one warning, and every file goes up
    proven by its part MD5s (the upload made with a checksum before the refusal is not left behind)."""
    write_file(src_dir / "big.bin", CHUNK + 9)
    for i in range(3):
        write_file(src_dir / f"s{i}.txt", 1000 + i)
    with FaultProxy("127.0.0.1", dst_server.port, seed=5).start() as proxy:
        proxy.set(outage=True, error_status=501, error_code="NotImplemented",
                  error_message="A header you provided implies functionality that is not implemented: "
                                "x-amz-checksum-crc32",
                  match=lambda r: r.method in ("PUT", "POST") and any(h.startswith(("x-amz-checksum",
                                                                                 "x-amz-sdk-checksum"))
                                                                     for h in r.headers))  # fmt: skip
        aws_profiles.add("plain", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="plain", MaxParallelFile=1))
        assert not proxy.exceptions
    assert run.code == 0, run.stdout + run.stderr
    assert run.stderr.count("refuses full-object checksums") == 1, run.stderr
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 4
    assert "4 by part MD5s" in run.stdout, run.stdout
    assert unfinished_uploads(dst, bucket) == []


def test_crc32_join_is_the_crc32_of_the_whole():
    data = os.urandom(3 * 1024 * 1024 + 12345)
    for size in (1, 1000, 1024 * 1024):
        chunks = [data[i : i + size] for i in range(0, len(data), size)][:40]
        whole = zlib.crc32(b"".join(chunks))
        assert s3_upload.crc32_join((zlib.crc32(c), len(c)) for c in chunks) == whole
    assert s3_upload.crc32_join([]) == zlib.crc32(b"") == 0


def test_a_store_that_keeps_another_checksum_than_the_files_fails_it_and_the_next_run_uploads_it(
        dst, bucket, src_dir, make_config, aws_profiles, dst_server):  # fmt: skip
    """The store answers the completion (and a HeadObject) with a CRC32 that is not the file's: it did not check the
    one it was given, so the object is not proven; it is deleted, the file fails (exit 1, named), never a success.
    The next run, through a store that keeps the right value, uploads it."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 5)
    wrong = "AAAAAA=="

    def keep_another(request, status, headers, body):
        if "x-amz-checksum-crc32" in headers:
            headers["x-amz-checksum-crc32"] = wrong
        return re.sub(rb"<ChecksumCRC32>[^<]*</ChecksumCRC32>", f"<ChecksumCRC32>{wrong}</ChecksumCRC32>".encode(),
                      body) if body else None  # fmt: skip

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(rewrite_response=keep_another, match=lambda r: r.operation in ("CompleteMultipartUpload",
                                                                                 "HeadObject"))  # fmt: skip
        aws_profiles.add("wrong", proxy.endpoint_url, *DST_KEYS)
        config = make_config(DesProfileName="wrong")
        run = run_tool(config)
        assert not proxy.exceptions
    assert run.code == 1, run
    assert f"the copy's CRC32 {wrong} is not the source's {crc32_of(path)}" in run.output, run.output
    assert "the object was deleted, the next run uploads it again" in run.output
    assert "up/big.bin" not in list_keys(dst, bucket)
    again = run_tool(make_config())
    assert again.code == 0, again
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
