"""--audit: every destination object of a job proven equal to its source without downloading it, and nothing written.
LOCAL_TO_S3 reads each file once and recomputes what S3 keeps (a full-object CRC32, else the ETag in the object's own
part layout, else its MD5); S3_TO_S3 compares what both sides keep and reads the source only when that cannot decide."""

from __future__ import annotations

import os
import re

import botocore.config
import pytest
from test_usability import server_state

import s3_upload
from conftest import DST_KEYS, SRC_KEYS, MiB, run_tool, write_file
from faultproxy import FaultProxy

CHUNK = 5 * MiB
AUDIT = ["--audit", "--progress", "none"]


def plain_client(server, keys):
    """A client that sends no checksum of its own, as the original tool's boto3 did: S3 keeps only the ETag."""
    return server.client(*keys, config=botocore.config.Config(request_checksum_calculation="when_required"))


def put_multipart(client, bucket: str, key: str, body: bytes, sizes: list[int]) -> str:
    """An object completed from parts of these sizes, without checksums (the original tool's upload); its ETag."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts, offset = [], 0
    for number, size in enumerate(sizes, start=1):
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                                  Body=body[offset : offset + size])["ETag"]  # fmt: skip
        parts.append({"PartNumber": number, "ETag": etag})
        offset += size
    assert offset == len(body)
    done = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return done["ETag"].strip('"')


def summary(run) -> str:
    match = re.search(r"^audit: \d+ proven equal.*$", run.stdout, re.M)
    assert match, run
    return match.group(0)


def object_lines(run) -> list[str]:
    """The lines naming an object that is not proven: 'DIFFERS  key: why', 'MISSING  ...', 'UNPROVEN ...'."""
    return [line for line in run.stdout.splitlines() if re.match(r"(DIFFERS|MISSING|UNPROVEN) ", line)]


def not_reads(proxy) -> list[str]:
    """Every request that reached the store and is no read."""
    return [f"{r.method} {r.target}" for r in proxy.history if r.method not in ("GET", "HEAD")]


def downloads(proxy) -> list[str]:
    return [r.path for r in proxy.history if r.operation == "GetObject"]


@pytest.fixture
def uploaded(make_config, src_dir):
    """A job uploaded by the tool: a multipart file (3 parts of ChunkSize), a small one, an empty one, a nested one."""
    write_file(src_dir / "big.bin", 2 * CHUNK + 4321)
    write_file(src_dir / "small.txt", 1000)
    write_file(src_dir / "empty.dat", 0)
    write_file(src_dir / "nested" / "deep.bin", CHUNK + 7)
    config = make_config()
    run = run_tool(config)
    assert run.code == 0, run
    return config


def test_a_job_uploaded_by_the_tool_is_proven_and_nothing_is_written(dst, bucket, uploaded, make_config,
                                                                     aws_profiles, dst_server):  # fmt: skip
    dst.put_object(Bucket=bucket, Key="up/only-here.txt", Body=b"the source does not have me")
    before = server_state(dst, bucket)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched"), extra=AUDIT)
        writes, gets = not_reads(proxy), downloads(proxy)
    assert run.code == 0, run
    assert object_lines(run) == []
    assert summary(run).startswith("audit: 4 proven equal"), run
    assert ", 0 differ, 0 missing, 0 unproven" in summary(run)
    assert "1 object(s) at the destination that the source does not have (not errors)" in summary(run)
    assert "exit code 0: every destination object is proven equal to its source" in run.stdout
    assert writes == [] and gets == []  # nothing written, nothing downloaded
    assert server_state(dst, bucket) == before


def test_an_object_replaced_by_other_bytes_of_the_same_size_is_named(dst, bucket, uploaded, make_config, dst_server):
    # Other bytes in one request, and other bytes in the very part layout the tool used.
    dst.put_object(Bucket=bucket, Key="up/small.txt", Body=os.urandom(1000))
    put_multipart(plain_client(dst_server, DST_KEYS), bucket, "up/big.bin", os.urandom(2 * CHUNK + 4321),
                  [CHUNK, CHUNK, 4321])  # fmt: skip
    before = server_state(dst, bucket)
    run = run_tool(make_config(), extra=["--audit", "--progress", "bar"])  # lines printed while the bar is drawn
    assert run.code == 1, run
    lines = object_lines(run)
    assert len(lines) == 2, run
    assert all(line.startswith("DIFFERS  up/") for line in lines), run
    assert any(line.startswith("DIFFERS  up/small.txt: its ") for line in lines), run
    assert any(line.startswith("DIFFERS  up/big.bin: its ETag is ") for line in lines), run
    assert summary(run).startswith("audit: 2 proven equal") and ", 2 differ, 0 missing, 0 unproven" in summary(run)
    assert "exit code 1: some objects differ" in run.stdout
    assert server_state(dst, bucket) == before


def test_a_missing_object_and_one_of_another_size_are_named(dst, bucket, uploaded, make_config):
    dst.delete_object(Bucket=bucket, Key="up/nested/deep.bin")
    dst.put_object(Bucket=bucket, Key="up/small.txt", Body=b"shorter")
    run = run_tool(make_config(), extra=AUDIT)
    assert run.code == 1, run
    assert sorted(object_lines(run)) == [
        "DIFFERS  up/small.txt: its size is 7 bytes, the source's 1000",
        "MISSING  up/nested/deep.bin: not at the destination (5.0 MiB)",
    ], run
    assert ", 1 differ, 1 missing, 0 unproven" in summary(run)

    # SrcFileIndex: that file only; a read-only profile is enough.
    run = run_tool(make_config(SrcFileIndex="nested/deep.bin", DesProfileName="reader"), extra=AUDIT)
    assert run.code == 1, run
    assert object_lines(run) == ["MISSING  up/nested/deep.bin: not at the destination (5.0 MiB)"], run
    run = run_tool(make_config(SrcFileIndex="big.bin", DesProfileName="reader"), extra=AUDIT)
    assert run.code == 0, run
    assert summary(run).startswith("audit: 1 proven equal (1 by full-object CRC32), 0 differ"), run


def test_objects_the_original_tool_uploaded_are_proven_by_their_etags(dst_server, bucket, make_config, src_dir):
    """No checksum kept: a multipart object is proven by its ETag rebuilt in its own part layout (5 MiB parts, and
    parts of several sizes, neither of them this job's ChunkSize), a single-part one by its MD5."""
    plain = plain_client(dst_server, DST_KEYS)
    uniform = (src_dir / "uniform.bin", [CHUNK, CHUNK, 1234])
    mixed = (src_dir / "mixed.bin", [7 * MiB, CHUNK, 99])
    for path, sizes in (uniform, mixed):
        write_file(path, sum(sizes))
        etag = put_multipart(plain, bucket, f"up/{path.name}", path.read_bytes(), sizes)
        assert etag.endswith(f"-{len(sizes)}")
        assert "ChecksumCRC32" not in plain.head_object(Bucket=bucket, Key=f"up/{path.name}", ChecksumMode="ENABLED")
    write_file(src_dir / "one.txt", 3000)
    plain.put_object(Bucket=bucket, Key="up/one.txt", Body=(src_dir / "one.txt").read_bytes())
    run = run_tool(make_config(ChunkSize=8 * MiB), extra=AUDIT)
    assert run.code == 0, run
    line = summary(run)
    assert line.startswith("audit: 3 proven equal"), run
    assert "2 by ETag in the object's own part layout" in line, run
    assert "1 by MD5 (single-part ETag)" in line, run

    # The same objects holding other bytes of the same size, in the same layouts: each one named.
    for path, sizes in (uniform, mixed):
        put_multipart(plain, bucket, f"up/{path.name}", os.urandom(sum(sizes)), sizes)
    run = run_tool(make_config(ChunkSize=8 * MiB), extra=AUDIT)
    assert run.code == 1, run
    assert sorted(line.split(":")[0] for line in object_lines(run)) == [
        "DIFFERS  up/mixed.bin",
        "DIFFERS  up/uniform.bin",
    ], run


def test_a_full_object_checksum_proves_the_object(dst, bucket, make_config, src_dir):
    """An object that keeps a CRC32 of its whole bytes (FULL_OBJECT) is proven by it: the file's CRC32."""
    write_file(src_dir / "crc.bin", 1500)
    dst.put_object(Bucket=bucket, Key="up/crc.bin", Body=(src_dir / "crc.bin").read_bytes(), ChecksumAlgorithm="CRC32")
    head = dst.head_object(Bucket=bucket, Key="up/crc.bin", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32"), head
    run = run_tool(make_config(), extra=AUDIT)
    assert run.code == 0, run
    assert "1 by full-object CRC32" in summary(run), run
    dst.put_object(Bucket=bucket, Key="up/crc.bin", Body=os.urandom(1500), ChecksumAlgorithm="CRC32")
    run = run_tool(make_config(), extra=AUDIT)
    assert run.code == 1, run
    assert object_lines(run)[0].startswith("DIFFERS  up/crc.bin: its CRC32 is "), run


def test_ignored_small_files_are_not_audited(dst, bucket, make_config, src_dir):
    write_file(src_dir / "tiny.txt", 10)
    run = run_tool(make_config(IgnoreSmallFile=True), extra=AUDIT)
    assert run.code == 0, run
    assert "1 not audited (smaller than ChunkSize, IgnoreSmallFile)" in summary(run)


def test_audit_refuses_flags_that_write(capsys):
    for flag in ("--clean", "--sqs-send=http://127.0.0.1:1/q", "--dry-run", "--report=r.json"):
        with pytest.raises(SystemExit) as exited:
            s3_upload.parse_args(["--audit", flag])
        assert exited.value.code == 2
        assert f"--audit writes nothing: it cannot be combined with {flag.split('=')[0]}" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# S3_TO_S3
# ----------------------------------------------------------------------------------------------------------------------


def test_s3_to_s3_is_proven_from_what_both_sides_keep(src_server, src_bucket, dst_server, bucket, s3_job,
                                                      aws_profiles):  # fmt: skip
    """Objects copied in their own layouts are proven by what both stores keep: the source is not downloaded.  An
    object of other bytes of the same size, in the same layout, differs; one in another layout (here: one request)
    is proven, or named, by reading the source once."""
    src, dst = plain_client(src_server, SRC_KEYS), plain_client(dst_server, DST_KEYS)
    put_multipart(src, src_bucket, "data/big.bin", os.urandom(2 * CHUNK + 77), [CHUNK, CHUNK, 77])
    put_multipart(src, src_bucket, "data/other.bin", os.urandom(CHUNK + 5), [CHUNK, 5])
    src.put_object(Bucket=src_bucket, Key="data/small.txt", Body=os.urandom(700))
    assert run_tool(s3_job()).code == 0

    with FaultProxy("127.0.0.1", src_server.port).start() as proxy:
        aws_profiles.add("counted", proxy.endpoint_url, *SRC_KEYS)
        run = run_tool(s3_job(SrcProfileName="counted"), extra=AUDIT)
        gets = downloads(proxy)
    assert run.code == 0, run
    assert summary(run).startswith("audit: 3 proven equal"), run
    assert "3 by equal ETags kept by both sides" in summary(run)
    assert gets == []  # nothing downloaded

    # other.bin: other bytes of the same size in the same layout; small.txt: other bytes; big.bin: the same bytes in
    # one request (another layout: the ETags cannot decide).
    put_multipart(dst, bucket, "data/other.bin", os.urandom(CHUNK + 5), [CHUNK, 5])
    dst.put_object(Bucket=bucket, Key="data/small.txt", Body=os.urandom(700))
    dst.put_object(
        Bucket=bucket, Key="data/big.bin", Body=src.get_object(Bucket=src_bucket, Key="data/big.bin")["Body"].read()
    )
    with FaultProxy("127.0.0.1", src_server.port).start() as proxy:
        aws_profiles.add("counted", proxy.endpoint_url, *SRC_KEYS)
        run = run_tool(s3_job(SrcProfileName="counted"), extra=AUDIT)
        gets = downloads(proxy)
    assert run.code == 1, run
    assert sorted(line.split(":")[0] for line in object_lines(run)) == [
        "DIFFERS  data/other.bin",
        "DIFFERS  data/small.txt",
    ], run
    assert summary(run).startswith("audit: 1 proven equal (1 by MD5 (single-part ETag))"), run
    assert set(gets) == {f"/{src_bucket}/data/big.bin"}  # only the object the stored values could not decide
