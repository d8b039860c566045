"""S3_TO_S3 that moves no bytes when S3 can copy, and proves every copy equal to its source (issue 12).

SeaweedFS 4.48 does UploadPartCopy and CopyObject pinned by CopySourceIfMatch, HeadObject per part (PartsCount), and
checks a full-object CRC32 given to CompleteMultipartUpload or PutObject (BadDigest otherwise).  A counting proxy
shows what passed through the client; every test downloads the copies and compares MD5s with the source, and checks
that nothing unfinished is left."""

from __future__ import annotations

import base64
import os
import re
import zlib

import botocore.config
import pytest

import s3_upload
from conftest import (
    DST_KEYS,
    LIMITED_BUCKET,
    LIMITED_KEYS,
    MiB,
    leave_unfinished,
    list_keys,
    load_report,
    md5,
    new_bucket,
    object_md5,
    remove_bucket,
    run_tool,
    unfinished_uploads,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture
def plain(dst_server):
    """A client that adds no checksum of its own (so a source object carries only what a test gives it)."""
    config = botocore.config.Config(request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required")  # fmt: skip
    return dst_server.client(*DST_KEYS, config=config)


@pytest.fixture
def same_store(plain, bucket, dst_server, aws_profiles, make_config):
    """A source bucket on the destination's server, both reached through one counting proxy with one identity."""
    source = new_bucket(plain)
    proxy = FaultProxy("127.0.0.1", dst_server.port).start()
    aws_profiles.add("copier", proxy.endpoint_url, *DST_KEYS)

    def make(**overrides):
        values = dict(JobType="S3_TO_S3", SrcBucket=source, SrcProfileName="copier", DesProfileName="copier",
                      S3Prefix="data/")  # fmt: skip
        values.update(overrides)
        return make_config(**values)

    yield source, proxy, make
    proxy.stop()
    remove_bucket(plain, source)


def through_client(proxy) -> int:
    return proxy.stats["bytes_up"] + proxy.stats["bytes_down"]


def report_files(path) -> dict[str, dict]:
    return {f["key"]: f for f in load_report(path)["files"]}


def put_multipart(client, bucket: str, key: str, data: bytes, part_size: int) -> str:
    """A multipart object with its own part size and no checksum; returns its ETag."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, offset in enumerate(range(0, len(data), part_size), 1):
        answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                                    Body=data[offset : offset + part_size])  # fmt: skip
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    done = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return done["ETag"].strip('"')


# ---------------------------------------------------------------------------------------------------------------------
# 1. Server-side copy when one identity reaches both buckets
# ---------------------------------------------------------------------------------------------------------------------


def test_server_side_copy_moves_no_bytes_through_the_client(plain, dst, bucket, same_store, tmp_path):
    source, proxy, make = same_store
    objects = {"data/big.bin": os.urandom(12 * MiB + 5), "data/small.txt": os.urandom(300), "data/empty": b""}
    for key, body in objects.items():
        plain.put_object(Bucket=source, Key=key, Body=body, ContentType="application/x-test", Metadata={"a": "1"})
    report = tmp_path / "r.json"
    run = run_tool(make(MaxThread=2), extra=["--report", str(report)])
    assert run.code == 0, run
    assert "copy: server-side" in run.stderr
    assert through_client(proxy) < 512 * 1024, proxy.stats  # requests and answers only: no object bytes
    assert run.bytes_sent == 0
    assert re.search(rf"copied by S3 itself \(server-side\): .* \({12 * MiB + 305} bytes\)", run.stdout), run.stdout
    ops = {r.operation for r in proxy.history}
    assert "UploadPartCopy" in ops and "CopyObject" in ops and "UploadPart" in ops  # the marker is a plain part
    assert not any(r.operation == "GetObject" for r in proxy.history)
    for key, body in objects.items():
        assert object_md5(dst, bucket, key) == md5(body), key
        head = dst.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == "application/x-test" and head["Metadata"] == {"a": "1"}, key
    files = report_files(report)
    assert files["data/big.bin"]["bytes_copied"] == 12 * MiB + 5 and files["data/big.bin"]["bytes_sent"] == 0
    # A single-part source copied by CopyObject keeps its MD5 ETag: equal to the source's.  A big one copied in
    # ChunkSize parts has a multipart ETag: S3's own copy pinned to the listed version is what vouches for it.
    assert {k: f["proof"] for k, f in files.items()} == {"data/big.bin": "S3's own copy of the listed version",
                                                         "data/small.txt": "ETag equal to the source",
                                                         "data/empty": "ETag equal to the source"}  # fmt: skip
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(make())
    assert again.code == 0 and again.bytes_sent == 0 and "copied by S3" not in again.stdout, again


def test_server_side_copy_resumes_and_copies_only_the_missing_parts(plain, dst, bucket, same_store, aws_profiles,
                                                                    dst_server):  # fmt: skip
    source, proxy, make = same_store
    body = os.urandom(3 * CHUNK)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=body)
    leave_unfinished(make, aws_profiles, dst_server, fail_part=3)
    seen = len(proxy.history)
    run = run_tool(make())
    assert run.code == 0, run
    assert "has 2 of 3 parts on S3 (made for this version of the source)" in run.stderr
    copies = [r.part_number for r in proxy.history[seen:] if r.operation == "UploadPartCopy"]
    assert copies == [3]
    assert object_md5(dst, bucket, "data/big.bin") == md5(body)
    assert unfinished_uploads(dst, bucket) == []


def test_source_replaced_mid_server_copy_is_never_completed(plain, dst, bucket, same_store):
    source, proxy, make = same_store
    plain.put_object(Bucket=source, Key="data/big.bin", Body=os.urandom(3 * CHUNK))
    v2 = os.urandom(3 * CHUNK)
    replaced = []

    def replace_before_part_2(request) -> bool:
        if request.operation == "UploadPartCopy" and request.part_number == 2 and not replaced:
            plain.put_object(Bucket=source, Key="data/big.bin", Body=v2)
            replaced.append(True)
        return False

    proxy.set(match=replace_before_part_2)
    run = run_tool(make(MaxThread=1, MaxParallelFile=1))
    assert replaced and run.code == 1, run
    assert "changed during the copy" in run.stdout
    assert "data/big.bin" not in list_keys(dst, bucket) and unfinished_uploads(dst, bucket) == []
    proxy.clear_faults()
    again = run_tool(make())
    assert again.code == 0 and object_md5(dst, bucket, "data/big.bin") == md5(v2), again


def test_auto_streams_when_the_destination_cannot_read_the_source(plain, same_store, dst_server, aws_profiles,
                                                                  make_config):  # fmt: skip
    source, proxy, _ = same_store
    body = os.urandom(CHUNK + 7)
    plain.put_object(Bucket=source, Key="data/a.bin", Body=body)
    plain.create_bucket(Bucket=LIMITED_BUCKET)
    try:
        aws_profiles.add("limited", proxy.endpoint_url, *LIMITED_KEYS)
        config = make_config(JobType="S3_TO_S3", SrcBucket=source, SrcProfileName="copier", DesProfileName="limited",
                             DesBucket=LIMITED_BUCKET, S3Prefix="data/")  # fmt: skip
        run = run_tool(config)
        assert run.code == 0, run
        assert "copy: streamed through this machine (the destination's profile cannot read the source" in run.stderr
        assert run.bytes_sent == len(body)
        assert object_md5(plain, LIMITED_BUCKET, "data/a.bin") == md5(body)
        refused = run_tool(make_config(JobType="S3_TO_S3", SrcBucket=source, SrcProfileName="copier",
                                       DesProfileName="limited", DesBucket=LIMITED_BUCKET, S3Prefix="data/",
                                       CopyMode="server"))  # fmt: skip
        assert refused.code == 2 and "CopyMode = 'server' but the destination's profile cannot read" in refused.stderr
    finally:
        remove_bucket(plain, LIMITED_BUCKET)


def test_auto_streams_across_endpoints_and_server_refuses(src, src_bucket, dst, bucket, make_config, src_profile):
    body = os.urandom(300)
    src.put_object(Bucket=src_bucket, Key="data/x.txt", Body=body)
    values = dict(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile, S3Prefix="data/")
    run = run_tool(make_config(**values))
    assert run.code == 0 and "copy: streamed through this machine (the source and the destination are different "
    assert "endpoints" in run.stderr and run.bytes_sent == 300, run
    assert object_md5(dst, bucket, "data/x.txt") == md5(body)
    refused = run_tool(make_config(**values, CopyMode="server"))
    assert refused.code == 2 and "CopyMode = 'server'" in refused.stderr, refused
    streamed = run_tool(make_config(**values, CopyMode="stream"))
    assert streamed.code == 0 and "CopyMode = 'stream'" in streamed.stderr


def test_copy_mode_is_shown_by_dry_run_and_checked(same_store, make_config):
    source, _, make = same_store
    dry = run_tool(make(), extra=["--dry-run"])
    assert dry.code == 0 and "copy     server-side" in dry.stdout, dry
    bad = run_tool(make(CopyMode="sideways"))
    assert bad.code == 2 and "CopyMode 'sideways' is unknown" in bad.stderr


# ---------------------------------------------------------------------------------------------------------------------
# 2. Proof without a second read
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "server"])
def test_full_object_crc32_of_the_source_is_checked_by_s3(mode, plain, dst, bucket, same_store, tmp_path):
    source, proxy, make = same_store
    big, small = os.urandom(2 * CHUNK + 3), os.urandom(1000)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=big, ChecksumAlgorithm="CRC32")
    plain.put_object(Bucket=source, Key="data/small.bin", Body=small, ChecksumAlgorithm="CRC32")
    report = tmp_path / "r.json"
    run = run_tool(make(CopyMode=mode), extra=["--report", str(report)])
    assert run.code == 0, run
    assert {f["proof"] for f in report_files(report).values()} == {"full-object CRC32"}
    assert "proven by full-object CRC32" in run.stderr and "2 by full-object CRC32" in run.stdout
    for key, body in (("data/big.bin", big), ("data/small.bin", small)):
        assert object_md5(dst, bucket, key) == md5(body)
    head = dst.head_object(Bucket=bucket, Key="data/big.bin", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == crc32_b64(big)  # the copy carries the source's full-object CRC32
    assert unfinished_uploads(dst, bucket) == []


def wrong_crc32(request, status, headers, body):
    """Answer HeadObject as if the source's full-object CRC32 were another: what a copy of other bytes would meet."""
    if request.operation == "HeadObject" and "x-amz-checksum-crc32" in headers:
        value = base64.b64decode(headers["x-amz-checksum-crc32"])
        headers["x-amz-checksum-crc32"] = base64.b64encode(bytes([value[0] ^ 1]) + value[1:]).decode()
    return None


def test_a_copy_s3_refuses_against_the_source_checksum_is_a_failed_file(plain, dst, bucket, same_store):
    source, proxy, make = same_store
    plain.put_object(Bucket=source, Key="data/big.bin", Body=os.urandom(2 * CHUNK), ChecksumAlgorithm="CRC32")
    proxy.set(rewrite_response=wrong_crc32, match=lambda r: r.operation == "HeadObject")
    run = run_tool(make(CopyMode="stream", MaxRetry=0))
    assert run.code == 1, run
    assert "S3 refused to complete it" in run.stdout and "full-object CRC32" in run.stdout
    assert "MISSION ACCOMPLISHED" not in run.stdout
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []  # aborted: the rerun starts over


def test_a_bad_part_left_by_an_earlier_run_is_refused_by_the_source_checksum(plain, dst, bucket, same_store):
    """A part of the right size but wrong bytes in the tool's own upload (as a damaged store would keep it) is trusted
    by size, but S3 checks the whole object against the source's CRC32 at completion: refused, aborted, and the
    rerun starts the file again.  Nothing wrong is ever completed."""
    source, proxy, make = same_store
    body = os.urandom(2 * CHUNK + 3)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=body, ChecksumAlgorithm="CRC32")
    head = plain.head_object(Bucket=source, Key="data/big.bin", ChecksumMode="ENABLED")
    listed = s3_upload.SourceFile("data/big.bin", len(body), 0.0, etag=head["ETag"].strip('"'))
    checksum = ("CRC32", head["ChecksumCRC32"])
    marker = s3_upload.marker_body(s3_upload.S3Source.identity(None, listed), s3_upload.plan_chunks(len(body), CHUNK),
                                   checksum)  # fmt: skip
    upload = dst.create_multipart_upload(Bucket=bucket, Key="data/big.bin", ChecksumAlgorithm="CRC32",
                                         ChecksumType="FULL_OBJECT")["UploadId"]  # fmt: skip
    for number, part in ((1, b"\x00" * CHUNK), *((n, marker) for n in s3_upload.MARKER_PARTS)):
        dst.upload_part(Bucket=bucket, Key="data/big.bin", UploadId=upload, PartNumber=number, Body=part,
                        ChecksumAlgorithm="CRC32")  # fmt: skip
    run = run_tool(make(CopyMode="stream"))
    assert run.code == 1, run
    assert "has 1 of 3 parts on S3 (made for this version of the source)" in run.stderr
    assert "S3 refused to complete it" in run.stdout
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []
    again = run_tool(make(CopyMode="stream"))
    assert again.code == 0 and object_md5(dst, bucket, "data/big.bin") == md5(body), again


def test_multipart_source_copied_with_its_own_layout_has_its_etag(plain, dst, bucket, same_store, tmp_path):
    source, proxy, make = same_store
    body = os.urandom(15 * MiB)  # parts 6, 6, 3 MiB
    source_etag = put_multipart(plain, source, "data/mp.bin", body, 6 * MiB)
    report = tmp_path / "r.json"
    run = run_tool(make(CopyMode="stream", ChunkSize=8 * MiB), extra=["--report", str(report)])
    assert run.code == 0, run
    files = report_files(report)
    assert files["data/mp.bin"]["proof"] == "ETag equal to the source"
    assert files["data/mp.bin"]["etag"] == source_etag and files["data/mp.bin"]["parts"] == 3
    assert object_md5(dst, bucket, "data/mp.bin") == md5(body)

    # Source parts larger than ChunkSize would take more memory than the settings allow: ChunkSize parts, and say so.
    dst.delete_object(Bucket=bucket, Key="data/mp.bin")
    run = run_tool(make(CopyMode="stream", ChunkSize=5 * MiB), extra=["--report", str(report)])
    assert run.code == 0, run
    assert "the source's 3 parts of 6.0 MiB are larger than ChunkSize" in run.stderr
    assert report_files(report)["data/mp.bin"]["proof"] == "part MD5s"
    assert object_md5(dst, bucket, "data/mp.bin") == md5(body)
    assert unfinished_uploads(dst, bucket) == []


def test_server_side_copy_of_a_multipart_source_keeps_its_layout(plain, dst, bucket, same_store, tmp_path):
    """Copied by S3 with the source's own parts: an equal ETag proves the copy; SeaweedFS gives copied parts ETags of
    its own, so there the pinned copy itself is the proof (never a failure for an ETag the store chose)."""
    source, proxy, make = same_store
    body = os.urandom(15 * MiB)
    source_etag = put_multipart(plain, source, "data/mp.bin", body, 6 * MiB)
    report = tmp_path / "r.json"
    run = run_tool(make(CopyMode="server", ChunkSize=5 * MiB), extra=["--report", str(report)])
    assert run.code == 0, run
    copied = report_files(report)["data/mp.bin"]
    assert copied["parts"] == 3 and copied["bytes_copied"] == len(body)  # the source's 3 parts, not 3 of 5 MiB
    if copied["etag"] == source_etag:
        assert copied["proof"] == "ETag equal to the source"
    else:
        assert copied["proof"] == "S3's own copy of the listed version"
    assert object_md5(dst, bucket, "data/mp.bin") == md5(body)
    assert unfinished_uploads(dst, bucket) == []


def test_a_layout_copy_whose_etag_differs_is_deleted_and_failed(plain, dst, bucket, same_store):
    """The first part's size is misreported (as if the source's parts were not of one size): the copy's ETag cannot
    be the source's, so the object is deleted and the file fails; never a success."""
    source, proxy, make = same_store
    put_multipart(plain, source, "data/mp.bin", os.urandom(12 * MiB), 6 * MiB)

    def parts_of_7_and_5(request, status, headers, body):
        """HeadObject(PartNumber) answers as if the parts were 7 and 5 MiB (a consistent, false layout)."""
        sizes = {"1": 7 * MiB, "2": 5 * MiB}
        if request.query.get("partNumber") in sizes:
            headers["content-length"] = str(sizes[request.query["partNumber"]])
        return None

    proxy.set(rewrite_response=parts_of_7_and_5, match=lambda r: r.operation == "HeadObject")
    run = run_tool(make(CopyMode="stream", ChunkSize=8 * MiB))
    assert run.code == 1, run
    assert "is not the source's" in run.stdout
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []


def test_source_replaced_between_runs_restarts_and_is_proven(plain, dst, bucket, same_store, aws_profiles,
                                                             dst_server, tmp_path):  # fmt: skip
    source, proxy, make = same_store
    plain.put_object(Bucket=source, Key="data/big.bin", Body=os.urandom(3 * CHUNK), ChecksumAlgorithm="CRC32")
    leave_unfinished(make, aws_profiles, dst_server, CopyMode="stream")
    v2 = os.urandom(3 * CHUNK)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=v2, ChecksumAlgorithm="CRC32")
    report = tmp_path / "r.json"
    run = run_tool(make(CopyMode="stream"), extra=["--report", str(report)])
    assert run.code == 0, run
    assert "made for another version of the source" in run.stderr
    assert report_files(report)["data/big.bin"]["proof"] == "full-object CRC32"
    assert object_md5(dst, bucket, "data/big.bin") == md5(v2)
    assert unfinished_uploads(dst, bucket) == []


def test_full_object_checksum_rule():
    f = s3_upload.full_object_checksum
    assert f({"ChecksumCRC32": "AAAAAA=="}) == ("CRC32", "AAAAAA==")  # a store that omits ChecksumType
    assert f({"ChecksumCRC32": "AAAAAA==-3"}) is None  # composite, of 3 parts
    assert f({"ChecksumCRC32C": "x", "ChecksumType": "COMPOSITE"}) is None
    assert f({"ChecksumCRC64NVME": "y", "ChecksumType": "FULL_OBJECT", "ChecksumCRC32": "z"}) == ("CRC64NVME", "y")
    assert f({}) is None


def test_marker_names_the_checksum_the_upload_was_made_with():
    plan = s3_upload.plan_chunks(12 * MiB, CHUNK)
    assert s3_upload.marker_body("id", plan) != s3_upload.marker_body("id", plan, ("CRC32", "v"))
    assert b"checksum CRC32" in s3_upload.marker_body("id", plan, ("CRC32", "v"))


def test_verify_accepts_what_the_completion_accepts_for_a_server_side_copy(plain, dst, bucket, same_store):
    """ifVerifyMD5 with parts copied by S3 itself on a store whose copied parts carry ETags of its own (SeaweedFS):
    the object's ETag cannot equal the re-read's, and the copy is proven by S3's pinned copy as at completion.  It
    is kept (it used to be deleted and copied again three times, then failed), and the bytes are the source's."""
    source, proxy, make = same_store
    body = os.urandom(2 * CHUNK + 77)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=body)
    plain.put_object(Bucket=source, Key="data/small.txt", Body=b"small")
    run = run_tool(make(ifVerifyMD5=True))
    assert run.code == 0, run
    assert not any(r.operation == "DeleteObject" for r in proxy.history)
    assert "deleting it" not in run.stderr
    assert object_md5(dst, bucket, "data/big.bin") == md5(body)
    assert object_md5(dst, bucket, "data/small.txt") == md5(b"small")
    assert unfinished_uploads(dst, bucket) == []


def test_a_store_that_keeps_no_checksum_of_the_copy_is_not_said_to_prove_it_by_one(plain, dst, bucket, same_store,
                                                                                  tmp_path):  # fmt: skip
    """The source keeps a full-object CRC32, handed to the destination with the copy; a store that keeps none of the
    object (it answers the PutObject, the CompleteMultipartUpload and a HeadObject without one: here the proxy takes
    it out of the destination's answers) checked none: each file is proven by its part MD5s, and said so."""
    source, proxy, make = same_store
    big, small = os.urandom(2 * CHUNK + 3), os.urandom(1000)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=big, ChecksumAlgorithm="CRC32")
    plain.put_object(Bucket=source, Key="data/small.bin", Body=small, ChecksumAlgorithm="CRC32")

    def keeps_none(request, status, headers, body):
        for name in [n for n in headers if n.startswith("x-amz-checksum")]:
            del headers[name]
        return re.sub(rb"<Checksum(CRC32|Type)>[^<]*</Checksum(CRC32|Type)>", b"", body)

    proxy.set(rewrite_response=keeps_none, match=lambda r: r.bucket == bucket and r.operation in (
        "PutObject", "CompleteMultipartUpload", "HeadObject"))  # fmt: skip
    report = tmp_path / "r.json"
    run = run_tool(make(CopyMode="stream"), extra=["--report", str(report)])
    assert run.code == 0, run
    assert {key: f["proof"] for key, f in report_files(report).items()} == {
        "data/big.bin": "part MD5s", "data/small.bin": "part MD5s"}  # fmt: skip
    for key in ("data/big.bin", "data/small.bin"):
        assert f"{key}: the store keeps no CRC32 of the object: proven by part MD5s" in run.stderr
    assert "full-object CRC32" not in run.stdout
    for key, body in (("data/big.bin", big), ("data/small.bin", small)):
        assert object_md5(dst, bucket, key) == md5(body)
    assert unfinished_uploads(dst, bucket) == []


def test_a_resumed_upload_made_without_a_checksum_is_not_said_proven_by_one(plain, dst, bucket, same_store, tmp_path):
    """The source keeps a full-object CRC32, but the upload being resumed was made without a checksum algorithm (as
    the original tool or another one leaves it): S3 checks no full-object checksum in such an upload, so the file is
    proven by its part MD5s, and said so (it used to be said proven by the CRC32)."""
    source, proxy, make = same_store
    body = os.urandom(2 * CHUNK + 3)
    plain.put_object(Bucket=source, Key="data/big.bin", Body=body, ChecksumAlgorithm="CRC32")
    upload = dst.create_multipart_upload(Bucket=bucket, Key="data/big.bin")["UploadId"]  # no algorithm, no marker
    dst.upload_part(Bucket=bucket, Key="data/big.bin", UploadId=upload, PartNumber=1, Body=body[:CHUNK])
    report = tmp_path / "r.json"
    run = run_tool(make(CopyMode="stream"), extra=["--report", str(report)])
    assert run.code == 0, run
    assert "has 1 of 3 parts on S3" in run.stderr
    assert report_files(report)["data/big.bin"]["proof"] == "part MD5s"
    assert "full-object CRC32" not in run.stdout
    assert object_md5(dst, bucket, "data/big.bin") == md5(body)
    assert unfinished_uploads(dst, bucket) == []
