"""What counts as "already at the destination": the original skipped any object of the same size.  A same-size change
is caught where the listings can tell (S3_TO_S3: comparable ETags; LOCAL_TO_S3: a file modified after its object was
written), each skip says how it was decided, and nothing is sent again for nothing (clock skew, KMS, layouts)."""

from __future__ import annotations

import os
import time

import pytest

from conftest import (
    MiB,
    list_keys,
    md5_file,
    new_bucket,
    object_md5,
    remove_bucket,
    run_tool,
    unfinished_uploads,
    write_file,
)

CHUNK = 5 * MiB


# ----------------------------------------------------------------------------------------------------------------------
# S3_TO_S3: ETags
# ----------------------------------------------------------------------------------------------------------------------


def put_multipart(client, bucket: str, key: str, body: bytes, part_size: int) -> None:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, offset in enumerate(range(0, len(body), part_size), start=1):
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                                  Body=body[offset : offset + part_size])["ETag"]  # fmt: skip
        parts.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


@pytest.mark.parametrize("multipart", [False, True], ids=["single-part", "multipart"])
def test_a_source_object_replaced_by_other_bytes_of_the_same_size_is_copied_again(src, src_bucket, dst, bucket,
                                                                                  s3_job, multipart):  # fmt: skip
    """Both listings carry ETags: equal sizes with comparable ETags that differ mean other bytes.  The object is
    copied again (the original, and this tool until now, skipped it and said MISSION ACCOMPLISHED)."""
    size = 2 * CHUNK + 321 if multipart else 1000

    def put(body: bytes) -> None:
        if multipart:
            put_multipart(src, src_bucket, "data/obj.bin", body, CHUNK)
        else:
            src.put_object(Bucket=src_bucket, Key="data/obj.bin", Body=body)

    put(os.urandom(size))
    assert run_tool(s3_job()).code == 0
    v2 = os.urandom(size)
    put(v2)
    run = run_tool(s3_job())
    assert run.code == 0, run
    assert object_md5(dst, bucket, "data/obj.bin") == object_md5(src, src_bucket, "data/obj.bin")
    assert run.bytes_sent == size
    again = run_tool(s3_job())
    assert again.code == 0 and again.bytes_sent == 0, again
    assert "skipped: 1 already at the destination (same size and ETag)" in again.stdout
    assert unfinished_uploads(dst, bucket) == []


def test_etags_that_cannot_be_compared_skip_by_size_and_say_so(src, src_bucket, dst, bucket, s3_job):
    """A destination object written in another part layout (here: by another tool, in one request) has an ETag that
    says nothing about the source's: skipped by size, as the original did, and the skip says why."""
    body = os.urandom(2 * CHUNK + 5)
    put_multipart(src, src_bucket, "data/obj.bin", body, CHUNK)
    dst.put_object(Bucket=bucket, Key="data/obj.bin", Body=os.urandom(len(body)))  # same size, one request
    run = run_tool(s3_job())
    assert run.code == 0, run
    assert run.bytes_sent == 0
    assert "skipped: 1 already at the destination (same size; the ETags cannot be compared" in run.stdout
    dry = run_tool(s3_job(), extra=["--dry-run"])
    assert "ETags cannot be compared" in dry.stdout, dry


def test_a_copy_in_other_part_sizes_is_skipped_by_size_and_says_so(src, src_bucket, dst, bucket, s3_job):
    """A copy made by another tool in other part sizes but as many parts (here 6 + 2 MiB against the source's 5 + 3)
    has an ETag of the same form that says nothing about the bytes: a HeadObject of its part 1 shows the other
    layout, and it is skipped by size, not copied again on every run."""
    body = os.urandom(8 * MiB)
    put_multipart(src, src_bucket, "data/obj.bin", body, CHUNK)
    put_multipart(dst, bucket, "data/obj.bin", body, 6 * MiB)
    run = run_tool(s3_job())
    assert run.code == 0, run
    assert run.bytes_sent == 0
    assert "skipped: 1 already at the destination (same size; the ETags cannot be compared: the objects are in " \
           "different part sizes)" in run.stdout  # fmt: skip


def test_a_copy_encrypted_with_kms_is_skipped_by_size_and_says_so(moto_s3, moto_bucket, make_config):
    """An object encrypted with KMS has an ETag that is not the MD5 of its bytes (on AWS: it differs from the source's
    even for the same bytes; moto keeps MD5s, so here the bytes differ): a HeadObject shows the encryption, and the
    object is skipped by size, not copied again on every run."""
    source = new_bucket(moto_s3)
    try:
        moto_s3.put_object(Bucket=source, Key="data/obj.bin", Body=os.urandom(1000))
        moto_s3.put_object(Bucket=moto_bucket, Key="data/obj.bin", Body=os.urandom(1000),
                           ServerSideEncryption="aws:kms")  # fmt: skip
        run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket=source, SrcProfileName="moto", S3Prefix="data/",
                                   DesProfileName="moto", DesBucket=moto_bucket, AddressingStyle="path",
                                   CopyMode="stream"))  # fmt: skip
        assert run.code == 0, run
        assert run.bytes_sent == 0
        assert "skipped: 1 already at the destination (same size; the ETags cannot be compared: an object encrypted " \
               "with KMS or SSE-C has an ETag that is not its MD5)" in run.stdout  # fmt: skip
    finally:
        remove_bucket(moto_s3, source)


# ----------------------------------------------------------------------------------------------------------------------
# LOCAL_TO_S3: times, and the mtime recorded with the object
# ----------------------------------------------------------------------------------------------------------------------


def last_modified(client, bucket: str, key: str) -> float:
    return client.head_object(Bucket=bucket, Key=key)["LastModified"].timestamp()


def test_a_local_file_rewritten_after_its_upload_with_the_same_size_is_uploaded_again(dst, bucket, src_dir,
                                                                                     make_config):  # fmt: skip
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 9)
    small = src_dir / "small.txt"
    write_file(small, 1000)
    assert run_tool(make_config()).code == 0
    written = last_modified(dst, bucket, "up/big.bin")
    for p, size in ((path, 2 * CHUNK + 9), (small, 1000)):
        write_file(p, size)  # other bytes, the same size
        os.utime(p, (written + 60, written + 60))  # modified after the object was written
    run = run_tool(make_config())
    assert run.code == 0, run
    assert run.bytes_sent == 2 * CHUNK + 9 + 1000
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert object_md5(dst, bucket, "up/small.txt") == md5_file(small)
    again = run_tool(make_config())
    assert again.code == 0 and again.bytes_sent == 0, again
    assert "skipped: 2 already at the destination (same size, and the mtime recorded with the object)" in again.stdout


def test_a_clock_ahead_of_s3_does_not_send_a_file_again_on_every_run(dst, bucket, src_dir, make_config):
    """This machine's clock runs an hour ahead of S3's: a file written just before its upload has an mtime newer
    than its object's LastModified.  The mtime recorded with the object (metadata "mtime", as rclone records it)
    proves it unchanged: one HeadObject, nothing sent."""
    path = src_dir / "fresh.bin"
    write_file(path, 2 * CHUNK + 1)
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    assert run_tool(make_config()).code == 0
    head = dst.head_object(Bucket=bucket, Key="up/fresh.bin")
    assert abs(float(head["Metadata"]["mtime"]) - ahead) < 1e-5
    run = run_tool(make_config())
    assert run.code == 0 and run.bytes_sent == 0, run
    assert "skipped: 1 already at the destination (same size, and the mtime recorded with the object)" in run.stdout


def test_a_rewrite_within_a_second_of_the_recorded_mtime_is_uploaded_again(dst, bucket, src_dir, make_config):
    """The mtime recorded with the object is compared to the microsecond it is written with: a file rewritten with
    the same size whose mtime moved by half a second (here still within the same whole second, and after the
    object's LastModified: a clock ahead of S3's) is sent again, not taken for the file uploaded."""
    path = src_dir / "fresh.bin"
    write_file(path, 1000)
    ahead = int(time.time()) + 3600 + 0.25
    os.utime(path, (ahead, ahead))
    assert run_tool(make_config()).code == 0
    write_file(path, 1000)
    os.utime(path, (ahead + 0.5, ahead + 0.5))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert run.bytes_sent == 1000
    assert object_md5(dst, bucket, "up/fresh.bin") == md5_file(path)


def test_a_file_replaced_by_a_smaller_one_with_an_old_mtime_is_uploaded_again(dst, bucket, src_dir, make_config):
    """Another size is another file, whatever the times say: a file replaced by a smaller one whose mtime is older
    than the object (restored from a backup with its times) is sent again."""
    path = src_dir / "data.bin"
    write_file(path, 2000)
    assert run_tool(make_config()).code == 0
    written = last_modified(dst, bucket, "up/data.bin")
    write_file(path, 1000)
    os.utime(path, (written - 3600, written - 3600))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert run.bytes_sent == 1000
    assert object_md5(dst, bucket, "up/data.bin") == md5_file(path)


def test_an_object_of_another_tool_older_than_the_file_is_replaced(dst, bucket, src_dir, make_config):
    """An object of the same size written by another tool (no recorded mtime) before the file was last modified:
    uploaded again, as `aws s3 sync` does.  One that is newer than the file is skipped by size and time."""
    dst.put_object(Bucket=bucket, Key="up/older.bin", Body=os.urandom(1000))
    dst.put_object(Bucket=bucket, Key="up/newer.bin", Body=os.urandom(1000))
    written = last_modified(dst, bucket, "up/older.bin")
    write_file(src_dir / "older.bin", 1000)
    os.utime(src_dir / "older.bin", (written + 60, written + 60))
    write_file(src_dir / "newer.bin", 1000)
    os.utime(src_dir / "newer.bin", (written - 60, written - 60))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert run.bytes_sent == 1000
    assert object_md5(dst, bucket, "up/older.bin") == md5_file(src_dir / "older.bin")
    assert "skipped: 1 already at the destination (same size, not modified since the object was written)" in run.stdout
    assert sorted(list_keys(dst, bucket)) == ["up/newer.bin", "up/older.bin"]


# ----------------------------------------------------------------------------------------------------------------------
# SkipCheck "checksum": skips decided by proof (as --audit proves)
# ----------------------------------------------------------------------------------------------------------------------


def test_skip_check_checksum_skips_only_what_is_proven_equal(dst, bucket, src_dir, make_config):
    """Two files uploaded; then one object is replaced by other bytes of the same size, newer than the file (the
    listing cannot tell: SkipCheck "size" skips it, exit 0, the blind spot the original had).  With SkipCheck
    "checksum" (here the flag) the replaced object is proven different and sent again, and the other one is skipped,
    proven equal by the full-object CRC32 S3 keeps, nothing of it sent."""
    write_file(src_dir / "big.bin", CHUNK + 11)
    write_file(src_dir / "small.txt", 1000)
    for path in src_dir.iterdir():
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    config = make_config()
    assert run_tool(config).code == 0
    dst.put_object(Bucket=bucket, Key="up/small.txt", Body=b"x" * 1000)  # same size, newer, other bytes
    by_size = run_tool(config)
    assert by_size.code == 0 and by_size.bytes_sent == 0, by_size
    assert object_md5(dst, bucket, "up/small.txt") != md5_file(src_dir / "small.txt")
    by_proof = run_tool(config, extra=("--skip-check", "checksum"))
    assert by_proof.code == 0, by_proof
    assert object_md5(dst, bucket, "up/small.txt") == md5_file(src_dir / "small.txt")
    assert by_proof.bytes_sent == 1000  # big.bin proven equal: not sent
    assert "the object differs" in by_proof.stderr, by_proof.stderr
    assert "proven equal by full-object CRC32" in by_proof.stdout, by_proof.stdout
    assert unfinished_uploads(dst, bucket) == []
