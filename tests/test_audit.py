"""--audit: every destination object of a job proven equal to its source without downloading it, and nothing written.
LOCAL_TO_S3 reads each file once and recomputes what S3 keeps (a full-object CRC32, else the ETag in the object's own
part layout, else its MD5); S3_TO_S3 compares what both sides keep and reads the source only when that cannot decide."""

from __future__ import annotations

import os
import re
import zlib
from typing import Callable, NamedTuple

import boto3
import botocore.config
import botocore.exceptions
import pytest
from test_usability import server_state

import s3_upload
from conftest import (
    DST_KEYS,
    MOTO_KEYS,
    SRC_KEYS,
    MiB,
    in_process_logging,
    list_keys,
    new_bucket,
    remove_bucket,
    run_tool,
    write_file,
)
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


# ----------------------------------------------------------------------------------------------------------------------
# What nothing proves: stored_proof's reasons
# ----------------------------------------------------------------------------------------------------------------------

MD5_HEX = "0123456789abcdef0123456789abcdef"


def no_part_heads(number: int) -> dict:
    """A store without HeadObject per part."""
    raise botocore.exceptions.ClientError({"Error": {"Code": "NotImplemented"}}, "HeadObject")


@pytest.mark.parametrize(
    "head, head_part, why",
    [
        ({"ETag": f'"{MD5_HEX}"', "ServerSideEncryption": "aws:kms"}, no_part_heads,
         "its ETag is not an MD5 (KMS or SSE-C) and it keeps no CRC32 of the whole object"),
        ({"ETag": f'"{MD5_HEX}-2"', "ServerSideEncryption": "aws:kms:dsse", "ChecksumCRC32": "AAAAAA==-2",
          "ChecksumType": "COMPOSITE"}, no_part_heads,  # a CRC32 of the parts' CRC32s: not the whole object's
         "its ETag is not an MD5 (KMS or SSE-C) and it keeps no CRC32 of the whole object"),
        ({"ETag": f'"{MD5_HEX}"', "SSECustomerAlgorithm": "AES256"}, no_part_heads,
         "its ETag is not an MD5 (KMS or SSE-C) and it keeps no CRC32 of the whole object"),
        ({"ETag": '"Not-An-ETag-Of-S3"'}, no_part_heads,
         "its ETag not-an-etag-of-s3 is neither an MD5 nor a multipart ETag, and it keeps no CRC32 of the whole "
         "object"),
        ({"ETag": f'"{MD5_HEX}-3"'}, no_part_heads,
         "its 3 part sizes are unknown (HeadObject with PartNumber did not tell them)"),
        # A store that ignores PartNumber answers with the whole object, without PartsCount.
        ({"ETag": f'"{MD5_HEX}-3"'}, lambda n: {"ContentLength": 3 * CHUNK},
         "its 3 part sizes are unknown (HeadObject with PartNumber did not tell them)"),
        # Part sizes that do not add up to the object's.
        ({"ETag": f'"{MD5_HEX}-3"'}, lambda n: {"ContentLength": CHUNK - 1, "PartsCount": 3},
         "its 3 part sizes are unknown (HeadObject with PartNumber did not tell them)"),
    ],
    ids=["kms", "kms-composite-crc32", "sse-c", "other-etag", "no-part-heads", "partnumber-ignored", "parts-short"],
)  # fmt: skip
def test_stored_proof_says_why_nothing_proves_the_object(head, head_part, why):
    assert s3_upload.stored_proof(head, 3 * CHUNK, head_part) == why


def test_a_kms_object_that_keeps_a_full_object_crc32_is_proven_by_it():
    head = {"ETag": f'"{MD5_HEX}"', "ServerSideEncryption": "aws:kms", "ChecksumCRC32": "q83vEg==",
            "ChecksumType": "FULL_OBJECT"}  # fmt: skip
    assert s3_upload.stored_proof(head, 10, no_part_heads) == s3_upload.StoredProof("CRC32", "q83vEg==")


def test_a_kms_object_without_a_crc32_is_unproven_on_a_store(moto_s3, moto_bucket, make_config, src_dir):
    """On moto (SeaweedFS has no KMS): an object encrypted with KMS that keeps no CRC32 of its bytes cannot be proven
    (its ETag is no MD5 on AWS), from a local file or from a source object; one that keeps a CRC32 is proven by it."""
    plain = boto3.client("s3", endpoint_url=moto_s3.meta.endpoint_url, region_name="us-east-1",
                         aws_access_key_id=MOTO_KEYS[0], aws_secret_access_key=MOTO_KEYS[1],
                         config=botocore.config.Config(s3={"addressing_style": "path"},
                                                       request_checksum_calculation="when_required"))  # fmt: skip
    write_file(src_dir / "kms.bin", 1000)
    write_file(src_dir / "kms-crc.bin", 1000)
    plain.put_object(Bucket=moto_bucket, Key="up/kms.bin", Body=(src_dir / "kms.bin").read_bytes(),
                     ServerSideEncryption="aws:kms")  # fmt: skip
    moto_s3.put_object(Bucket=moto_bucket, Key="up/kms-crc.bin", Body=(src_dir / "kms-crc.bin").read_bytes(),
                       ServerSideEncryption="aws:kms", ChecksumAlgorithm="CRC32")  # fmt: skip
    assert "ChecksumCRC32" not in plain.head_object(Bucket=moto_bucket, Key="up/kms.bin", ChecksumMode="ENABLED")
    before = server_state(moto_s3, moto_bucket)
    run = run_tool(make_config(DesProfileName="moto", DesBucket=moto_bucket, AddressingStyle="path"), extra=AUDIT)
    assert run.code == 1, run
    assert object_lines(run) == [
        "UNPROVEN up/kms.bin: its ETag is not an MD5 (KMS or SSE-C) and it keeps no CRC32 of the whole object"
    ], run
    assert summary(run).startswith("audit: 1 proven equal (1 by full-object CRC32), 0 differ, 0 missing, 1 unproven")
    assert "exit code 1: some objects differ, are missing or could not be proven, or the source could not be listed " \
           "in full (named above)" in run.stdout  # fmt: skip
    assert server_state(moto_s3, moto_bucket) == before

    # S3_TO_S3: the source's ETag is an MD5, the copy's is not: what both keep cannot decide, nor can the copy's ETag.
    source = new_bucket(moto_s3)
    try:
        body = os.urandom(1000)
        plain.put_object(Bucket=source, Key="data/obj.bin", Body=body)
        plain.put_object(Bucket=moto_bucket, Key="data/obj.bin", Body=body, ServerSideEncryption="aws:kms")
        before = server_state(moto_s3, moto_bucket)
        run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket=source, SrcProfileName="moto", S3Prefix="data/",
                                   DesProfileName="moto", DesBucket=moto_bucket, AddressingStyle="path"),
                       extra=AUDIT)  # fmt: skip
        assert run.code == 1, run
        assert object_lines(run) == [
            "UNPROVEN data/obj.bin: its ETag is not an MD5 (KMS or SSE-C) and it keeps no CRC32 of the whole object"
        ], run
        assert ", 0 differ, 0 missing, 1 unproven" in summary(run)
    finally:
        remove_bucket(moto_s3, source)
    assert server_state(moto_s3, moto_bucket) == before


def test_an_etag_of_another_form_and_unknown_part_sizes_leave_an_object_unproven(dst_server, bucket, make_config,
                                                                                 src_dir, aws_profiles):  # fmt: skip
    """A store whose ETag is neither an MD5 nor a multipart ETag (here: rewritten on the way), and one that does not
    answer HeadObject with PartNumber: without a CRC32 of the whole object, nothing proves those objects."""
    plain = plain_client(dst_server, DST_KEYS)
    write_file(src_dir / "odd.txt", 1000)
    plain.put_object(Bucket=bucket, Key="up/odd.txt", Body=(src_dir / "odd.txt").read_bytes())
    write_file(src_dir / "parts.bin", CHUNK + 5)
    put_multipart(plain, bucket, "up/parts.bin", (src_dir / "parts.bin").read_bytes(), [CHUNK, 5])
    before = server_state(plain, bucket)

    def rewrite(request, status, headers, body):
        if "partNumber" in request.query:  # as from a store that ignores PartNumber: no count of parts
            headers.pop("x-amz-mp-parts-count", None)
        elif request.key == "up/odd.txt" and "etag" in headers:
            headers["etag"] = '"odd-etag-of-another-store"'
        return None

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=lambda r: r.method == "HEAD", rewrite_response=rewrite)
        aws_profiles.add("odd", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="odd"), extra=AUDIT)
        writes = not_reads(proxy)
        assert not proxy.exceptions, proxy.exceptions
    assert run.code == 1, run
    assert sorted(object_lines(run)) == [
        "UNPROVEN up/odd.txt: its ETag odd-etag-of-another-store is neither an MD5 nor a multipart ETag, and it keeps "
        "no CRC32 of the whole object",
        "UNPROVEN up/parts.bin: its 2 part sizes are unknown (HeadObject with PartNumber did not tell them)",
    ], run
    assert summary(run).startswith("audit: 0 proven equal, 0 differ, 0 missing, 2 unproven"), run
    assert writes == []
    assert server_state(plain, bucket) == before


# ----------------------------------------------------------------------------------------------------------------------
# Changes while the audit runs: the audit runs in this process, and the test changes an object or its source right
# before the audit's own step for it (no race with the clock)
# ----------------------------------------------------------------------------------------------------------------------


class InProcessRun(NamedTuple):
    code: int
    stdout: str


def audit_in_process(config, monkeypatch, request, capsys) -> InProcessRun:
    in_process_logging(monkeypatch, request)
    capsys.readouterr()
    code = s3_upload.main(["--config", str(config), *AUDIT])
    return InProcessRun(code, capsys.readouterr().out)


def before_step(monkeypatch, step: str, act: Callable[[s3_upload.SourceFile], None]) -> None:
    """act(f) runs right before the Auditor's ``step`` (verdict, by_reading, from_both_sides) for each object."""
    real = getattr(s3_upload.Auditor, step)

    def step_after_act(self, f, *args):
        act(f)
        return real(self, f, *args)

    monkeypatch.setattr(s3_upload.Auditor, step, step_after_act)


def test_an_object_deleted_or_resized_since_it_was_listed_is_named(dst, bucket, dst_server, make_config, src_dir,
                                                                   aws_profiles, monkeypatch, request,
                                                                   capsys):  # fmt: skip
    for name, size in (("gone.bin", 1000), ("shrunk.txt", 1000), ("kept.txt", 500)):
        write_file(src_dir / name, size)
    assert run_tool(make_config()).code == 0

    def change(f: s3_upload.SourceFile) -> None:
        if f.key == "up/gone.bin":
            dst.delete_object(Bucket=bucket, Key=f.key)
        elif f.key == "up/shrunk.txt":
            dst.put_object(Bucket=bucket, Key=f.key, Body=b"shorter")

    before_step(monkeypatch, "verdict", change)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = audit_in_process(make_config(DesProfileName="watched"), monkeypatch, request, capsys)
        writes, gets = not_reads(proxy), downloads(proxy)
    assert run.code == 1, run.stdout
    assert sorted(object_lines(run)) == [
        "DIFFERS  up/shrunk.txt: its size is now 7 bytes, the source's 1000",
        "MISSING  up/gone.bin: deleted since it was listed",
    ], run.stdout
    assert summary(run).startswith("audit: 1 proven equal (1 by full-object CRC32), 1 differ, 1 missing, 0 unproven")
    assert "exit code 1: some objects differ, are missing or could not be proven, or the source could not be listed " \
           "in full (named above)" in run.stdout  # fmt: skip
    assert writes == [] and gets == []
    assert list_keys(dst, bucket) == {"up/kept.txt": 500, "up/shrunk.txt": 7}  # the test's own changes only


def test_a_file_that_changes_while_it_is_read_is_unproven(dst, bucket, make_config, src_dir, monkeypatch, request,
                                                          capsys):  # fmt: skip
    """A file cut short (the read comes up short), one touched (its mtime moved after its bytes were read: they may
    not be the bytes hashed), and one deleted: none is proven, whatever its bytes give."""
    for name in ("short.bin", "touched.bin", "deleted.bin", "same.bin"):
        write_file(src_dir / name, 3000)
    assert run_tool(make_config()).code == 0
    before = server_state(dst, bucket)

    def change(f: s3_upload.SourceFile) -> None:
        path = src_dir / f.key.removeprefix("up/")
        if path.name == "short.bin":
            os.truncate(path, 1000)
        elif path.name == "touched.bin":
            os.utime(path, (f.mtime + 60, f.mtime + 60))
        elif path.name == "deleted.bin":
            path.unlink()

    before_step(monkeypatch, "by_reading", change)
    run = audit_in_process(make_config(), monkeypatch, request, capsys)
    assert run.code == 1, run.stdout
    assert sorted(object_lines(run)) == [
        f"UNPROVEN up/{name}: {s3_upload.SOURCE_CHANGED_IN_AUDIT}"
        for name in ("deleted.bin", "short.bin", "touched.bin")
    ], run.stdout
    assert summary(run).startswith("audit: 1 proven equal (1 by full-object CRC32), 0 differ, 0 missing, 3 unproven")
    assert server_state(dst, bucket) == before


def test_a_source_object_replaced_or_deleted_during_the_audit_is_unproven(src_server, src_bucket, dst_server, bucket,
                                                                          s3_job, aws_profiles, monkeypatch, request,
                                                                          capsys):  # fmt: skip
    """S3_TO_S3: a source object replaced or deleted before the audit compares what both sides keep, and one replaced
    before it is read (its copy is in another part layout: only its bytes can decide): none is proven."""
    src, dst = plain_client(src_server, SRC_KEYS), plain_client(dst_server, DST_KEYS)
    etags = {}
    for name in ("replaced.txt", "deleted.txt", "same.txt"):
        body = os.urandom(700)
        etags[name] = src.put_object(Bucket=src_bucket, Key=f"data/{name}", Body=body)["ETag"].strip('"')
        dst.put_object(Bucket=bucket, Key=f"data/{name}", Body=body)
    body = os.urandom(CHUNK + 5)
    etags["read.bin"] = put_multipart(src, src_bucket, "data/read.bin", body, [CHUNK, 5])
    dst.put_object(Bucket=bucket, Key="data/read.bin", Body=body)
    before = server_state(dst, bucket)

    def change(step: str):
        def act(f: s3_upload.SourceFile) -> None:
            if (step, f.key) in (("from_both_sides", "data/replaced.txt"), ("by_reading", "data/read.bin")):
                src.put_object(Bucket=src_bucket, Key=f.key, Body=os.urandom(f.size))
            elif (step, f.key) == ("from_both_sides", "data/deleted.txt"):
                src.delete_object(Bucket=src_bucket, Key=f.key)

        return act

    before_step(monkeypatch, "from_both_sides", change("from_both_sides"))
    before_step(monkeypatch, "by_reading", change("by_reading"))
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = audit_in_process(s3_job(DesProfileName="watched"), monkeypatch, request, capsys)
        writes, gets = not_reads(proxy), downloads(proxy)
    assert run.code == 1, run.stdout
    assert sorted(object_lines(run)) == [
        f"UNPROVEN data/{name}: {s3_upload.SOURCE_CHANGED_IN_AUDIT}"
        for name in ("deleted.txt", "read.bin", "replaced.txt")  # fmt: skip
    ], run.stdout
    assert summary(run).startswith("audit: 1 proven equal (1 by equal ETags kept by both sides), 0 differ, 0 missing, "
                                   "3 unproven"), run.stdout  # fmt: skip
    assert writes == [] and gets == []
    assert server_state(dst, bucket) == before


def put_full_object_crc32(client, bucket: str, key: str, body: bytes, sizes: list[int]) -> str:
    """An object completed from parts of these sizes with a CRC32 of its whole bytes (FULL_OBJECT); that CRC32."""
    crc = s3_upload.crc32_b64(zlib.crc32(body))
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32",
                                            ChecksumType="FULL_OBJECT")["UploadId"]  # fmt: skip
    parts, offset = [], 0
    for number, size in enumerate(sizes, start=1):
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                                  Body=body[offset : offset + size])["ETag"]  # fmt: skip
        parts.append({"PartNumber": number, "ETag": etag})
        offset += size
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts},
                                     ChecksumCRC32=crc, ChecksumType="FULL_OBJECT")  # fmt: skip
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == crc and head.get("ChecksumType") == "FULL_OBJECT", head
    return crc


def test_s3_to_s3_full_object_checksums_and_part_layouts(src_server, src_bucket, dst_server, bucket, s3_job,
                                                         aws_profiles):  # fmt: skip
    """A CRC32 of the whole object kept by both sides decides without reading, whatever the part layouts (equal:
    proven; other: differs); equal part counts in other part sizes decide nothing: the source is read once and the
    copy's ETag rebuilt in its own layout."""
    src, dst = plain_client(src_server, SRC_KEYS), plain_client(dst_server, DST_KEYS)
    body = os.urandom(CHUNK + 5)
    crc = put_full_object_crc32(src, src_bucket, "data/crc.bin", body, [CHUNK, 5])
    dst.put_object(Bucket=bucket, Key="data/crc.bin", Body=body, ChecksumAlgorithm="CRC32")  # one part: other ETag
    src.put_object(Bucket=src_bucket, Key="data/crc-other.txt", Body=os.urandom(700), ChecksumAlgorithm="CRC32")
    dst.put_object(Bucket=bucket, Key="data/crc-other.txt", Body=os.urandom(700), ChecksumAlgorithm="CRC32")
    body = os.urandom(2 * CHUNK + 1)
    put_multipart(src, src_bucket, "data/layout.bin", body, [CHUNK + 1, CHUNK])
    put_multipart(dst, bucket, "data/layout.bin", body, [CHUNK, CHUNK + 1])
    theirs = dst.head_object(Bucket=bucket, Key="data/crc-other.txt", ChecksumMode="ENABLED")["ChecksumCRC32"]
    ours = src.head_object(Bucket=src_bucket, Key="data/crc-other.txt", ChecksumMode="ENABLED")["ChecksumCRC32"]
    assert dst.head_object(Bucket=bucket, Key="data/crc.bin", ChecksumMode="ENABLED")["ChecksumCRC32"] == crc
    before = server_state(dst, bucket)

    with FaultProxy("127.0.0.1", src_server.port).start() as src_proxy, \
            FaultProxy("127.0.0.1", dst_server.port).start() as dst_proxy:  # fmt: skip
        aws_profiles.add("counted", src_proxy.endpoint_url, *SRC_KEYS)
        aws_profiles.add("watched", dst_proxy.endpoint_url, *DST_KEYS)
        run = run_tool(s3_job(SrcProfileName="counted", DesProfileName="watched"), extra=AUDIT)
        gets, writes, dst_gets = downloads(src_proxy), not_reads(dst_proxy), downloads(dst_proxy)
    assert run.code == 1, run
    assert object_lines(run) == [f"DIFFERS  data/crc-other.txt: its CRC32 is {theirs}, the source's {ours}"], run
    assert summary(run).startswith("audit: 2 proven equal (1 by ETag in the object's own part layout, 1 by full-object "
                                   "CRC32 kept by both sides), 1 differ, 0 missing, 0 unproven"), run  # fmt: skip
    assert set(gets) == {f"/{src_bucket}/data/layout.bin"}  # only the object what both keep could not decide
    assert writes == [] and dst_gets == []
    assert server_state(dst, bucket) == before


def test_a_source_that_cannot_be_listed_fails_the_audit(dst, bucket, make_config, src_dir):
    """A file the listing cannot take (a link to nothing) is named and fails the audit, though every object listed
    is proven: the audit cannot say the destination holds the whole source."""
    write_file(src_dir / "kept.txt", 500)
    assert run_tool(make_config()).code == 0
    (src_dir / "dangling.txt").symlink_to(src_dir / "nothing-here")
    before = server_state(dst, bucket)
    run = run_tool(make_config(), extra=AUDIT)
    assert run.code == 1, run
    failed = f"FAILED   to list: {src_dir / 'dangling.txt'}: a link to a file that does not exist"
    assert failed in run.stdout.splitlines(), run
    assert summary(run).startswith("audit: 1 proven equal (1 by full-object CRC32), 0 differ, 0 missing, 0 unproven")
    assert "exit code 1: some objects differ, are missing or could not be proven, or the source could not be listed " \
           "in full (named above)" in run.stdout  # fmt: skip
    assert server_state(dst, bucket) == before
