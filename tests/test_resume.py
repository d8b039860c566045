"""Resume and CLEAN against a real SeaweedFS: S3 is the only state, so every test prepares it on the server (or kills
the tool mid-upload), reruns the tool, and checks the bytes, what was re-sent, and that nothing is left unfinished."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import signal
import subprocess
import time

import botocore.exceptions
import pytest

import s3_upload
from conftest import (
    DST_KEYS,
    MiB,
    assert_tree_uploaded,
    leave_unfinished,
    list_keys,
    md5_file,
    object_md5,
    parts_on_server,
    run_tool,
    tool_command,
    unfinished_uploads,
    wait_until,
    write_file,
)
from faultproxy import FaultProxy, Gate

CHUNK = 5 * MiB


def start_upload(client, bucket: str, key: str, data: bytes, part_size: int, parts=(1,)) -> str:
    """An unfinished multipart upload as an interrupted earlier run (here or on another machine) leaves it."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    for number in parts:
        body = data[(number - 1) * part_size : number * part_size]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
    return upload_id


def test_resume_sends_only_missing_parts_and_answers_enter(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 3 * CHUNK + 100)  # 4 parts
    data = (src_dir / "big.bin").read_bytes()
    start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1, 3))
    run = run_tool(make_config(DontAskMeToClean=False), stdin="\n")
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT in run.stdout
    assert "has 2 of 4 parts on S3" in run.stderr
    assert run.bytes_sent == len(data) - 2 * CHUNK
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []


def test_stdin_closed_or_other_answer_resumes(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 2 * CHUNK + 1)
    data = (src_dir / "big.bin").read_bytes()
    config = make_config(DontAskMeToClean=False)
    start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(2,))
    run = run_tool(config, stdin=None)  # end of input: resume, no hang, no crash
    assert run.code == 0, run
    assert "Traceback" not in run.output
    assert run.bytes_sent == len(data) - CHUNK
    dst.delete_object(Bucket=bucket, Key="up/big.bin")
    start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1,))
    run = run_tool(config, stdin="n\n")  # only CLEAN cleans
    assert run.code == 0, run
    assert run.bytes_sent == len(data) - CHUNK
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert unfinished_uploads(dst, bucket) == []


def test_clean_aborts_every_upload_under_the_prefix_and_restarts(dst, bucket, src_dir, make_config):
    """As the original: CLEAN aborts every unfinished upload under S3Prefix, this job's or not, and the next run has
    nothing left to ask about."""
    write_file(src_dir / "big.bin", 2 * CHUNK + 10)
    data = (src_dir / "big.bin").read_bytes()
    start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1,))
    start_upload(dst, bucket, "up/not-in-this-job.bin", data, CHUNK, parts=(1,))
    outside = start_upload(dst, bucket, "elsewhere/x.bin", data, CHUNK, parts=(1,))
    config = make_config(DontAskMeToClean=False)
    preview = run_tool_with(config, "--dry-run", "--clean")
    assert preview.code == 0, preview
    assert "clean    up/big.bin" in preview.stdout and "clean    up/not-in-this-job.bin" in preview.stdout
    assert "elsewhere/x.bin" not in preview.stdout
    run = run_tool(config, stdin="CLEAN\n")
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT in run.stdout
    assert "up/big.bin" in run.stderr and "up/not-in-this-job.bin" in run.stderr  # listed before the question
    assert "CLEAN: aborting unfinished upload of up/not-in-this-job.bin" in run.stderr
    assert run.bytes_sent == len(data)  # restarted from zero
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [outside]  # outside the prefix: not ours
    again = run_tool(config, stdin="")
    assert again.code == 0 and s3_upload.CLEAN_PROMPT not in again.stdout, again
    dst.abort_multipart_upload(Bucket=bucket, Key="elsewhere/x.bin", UploadId=outside)


def run_tool_with(config, *args: str):
    from conftest import Run

    proc = subprocess.run(tool_command(config) + list(args), cwd=config.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return Run(proc)


def test_dont_ask_me_to_clean_resumes_without_prompt(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 2 * CHUNK)
    data = (src_dir / "big.bin").read_bytes()
    start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1,))
    run = run_tool(make_config(DontAskMeToClean=True), stdin="CLEAN\n")
    assert run.code == 0, run
    assert s3_upload.CLEAN_PROMPT not in run.stdout
    assert run.bytes_sent == CHUNK
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")


def test_kill_9_mid_upload_then_rerun_resumes(dst, bucket, src_dir, make_config, aws_profiles, dst_server):
    size = 30 * CHUNK + 12345
    write_file(src_dir / "huge.bin", size)
    config = make_config(MaxThread=2, MaxParallelFile=1)
    # The parts after the 6th wait at a proxy until the kill: it lands mid-upload however fast the run goes.
    gate = Gate(lambda r: r.operation == "UploadPart" and 6 < (r.part_number or 0) < min(s3_upload.MARKER_PARTS))
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("gated", proxy.endpoint_url, *DST_KEYS)
        gated = make_config(DesProfileName="gated", MaxThread=2, MaxParallelFile=1)
        proc = subprocess.Popen(
            tool_command(gated), cwd=gated.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: len(data_parts(dst, bucket, "up/huge.bin")) >= 6, "six data parts on the server")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            parts_before_kill = len(data_parts(dst, bucket, "up/huge.bin"))
            gate.open()
        assert not proxy.exceptions and not gate.timed_out
    assert proc.returncode == -signal.SIGKILL, "the upload finished before it could be killed"
    assert parts_before_kill == 6
    assert "up/huge.bin" not in list_keys(dst, bucket)

    run = run_tool(config)
    assert run.code == 0, run
    assert "resume up/huge.bin" in run.stderr
    assert run.bytes_sent <= size - parts_before_kill * CHUNK
    assert object_md5(dst, bucket, "up/huge.bin") == md5_file(src_dir / "huge.bin")
    assert unfinished_uploads(dst, bucket) == []


def data_parts(client, bucket: str, key: str) -> list[int]:
    return [n for n in parts_on_server(client, bucket, key) if n not in s3_upload.MARKER_PARTS]


def test_chunk_size_changed_between_runs_restarts_the_file(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 3 * CHUNK)
    data = (src_dir / "big.bin").read_bytes()
    old = start_upload(dst, bucket, "up/big.bin", data, 6 * MiB, parts=(1,))  # an earlier run used 6 MiB
    run = run_tool(make_config(ChunkSize=CHUNK))
    assert run.code == 0, run
    reason = f"its part 1 is {6 * MiB} bytes, the current plan needs {CHUNK} (ChunkSize or file size changed)"
    assert f"restart up/big.bin: unfinished upload {s3_upload.short_id(old)} cannot be resumed, {reason}" in run.stderr
    assert run.bytes_sent == len(data)
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")
    etag = dst.head_object(Bucket=bucket, Key="up/big.bin")["ETag"].strip('"')
    digests = [hashlib.md5(data[i : i + CHUNK]).digest() for i in range(0, len(data), CHUNK)]
    assert etag == s3_upload.multipart_etag(digests)  # 3 parts of the new ChunkSize
    assert unfinished_uploads(dst, bucket) == []  # the old upload was aborted, not left behind
    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchUpload"):
        dst.list_parts(Bucket=bucket, Key="up/big.bin", UploadId=old)


def test_source_modified_since_its_own_upload_began_restarts_the_file(dst, bucket, src_dir, make_config, aws_profiles,
                                                                      dst_server):  # fmt: skip
    """The upload's marker names the file's size and mtime: a file modified since restarts without hashing."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 5)
    leave_unfinished(make_config, aws_profiles, dst_server)
    write_file(path, 2 * CHUNK + 5)  # same size, new content, new mtime
    later = time.time() + 5
    os.utime(path, (later, later))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "restart up/big.bin" in run.stderr and "another version of the source" in run.stderr
    assert run.bytes_sent == path.stat().st_size
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_upload_without_marker_has_every_part_checked_by_md5(dst, bucket, src_dir, make_config):
    """An upload made by another tool (or the original) is tied to no version: the rewritten file's parts differ by
    MD5 and are sent again, whatever the times say."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 5)
    start_upload(dst, bucket, "up/big.bin", path.read_bytes(), CHUNK, parts=(1, 2))
    write_file(path, 2 * CHUNK + 5)
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "made without s3_upload's marker" in run.stderr
    assert run.bytes_sent == path.stat().st_size
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_changed_part_with_old_mtime_is_caught_by_md5_and_resent(dst, bucket, src_dir, make_config):
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK)
    stale = bytearray(path.read_bytes())
    stale[10] ^= 0xFF  # the part on S3 holds other bytes than the local file now
    start_upload(dst, bucket, "up/big.bin", bytes(stale), CHUNK, parts=(1, 2))
    past = time.time() - 3600  # an mtime that does not tell (e.g. restored from a backup)
    os.utime(path, (past, past))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "has 2 of 3 parts" in run.stderr
    assert run.bytes_sent == 2 * CHUNK  # part 1 differs by MD5 and is sent again; part 2 is reused
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_part_rewritten_with_size_and_mtime_restored_is_caught_by_md5_in_an_upload_with_our_marker(
        dst, bucket, src_dir, make_config, aws_profiles, dst_server):  # fmt: skip
    """The marker ties the upload to the file's size and mtime, which a rewrite can restore (a tool that keeps times,
    a restore from backup): a local file's parts on S3 are still checked against its bytes by MD5 before they are
    reused, however proven the upload looks."""
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK)
    leave_unfinished(make_config, aws_profiles, dst_server)  # our marker and part 1 on S3
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # part 1 on S3 now holds other bytes than the file
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "has 1 of 3 parts on S3 (made for this version of the source)" in run.stderr
    assert run.bytes_sent == 3 * CHUNK  # part 1 differs by MD5 and is sent again
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_part_listed_twice_the_matching_entry_is_used(dst, bucket, src_dir, make_config):
    """SeaweedFS lists a re-sent part number twice; the entry whose ETag matches our MD5 is the one completed."""
    path = src_dir / "big.bin"
    write_file(path, 2 * CHUNK + 3)
    data = path.read_bytes()
    upload_id = start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1,))
    wrong = b"x" * CHUNK
    dst.upload_part(Bucket=bucket, Key="up/big.bin", UploadId=upload_id, PartNumber=1, Body=wrong)
    listed = dst.list_parts(Bucket=bucket, Key="up/big.bin", UploadId=upload_id)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 1]  # the store quirk this test is about
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "has 1 of 3 parts on S3" in run.stderr
    assert run.bytes_sent == len(data) - CHUNK  # part 1 was reused (the matching entry), not sent again
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_more_than_1000_parts_are_listed(dst_server, dst, bucket, aws_pages):
    """AWS answers ListParts 1,000 parts a page: an upload with 1,100 parts is listed whole, in two pages (SeaweedFS
    alone would answer in one page, so the proxy pages as AWS does; tiny parts: never completed)."""
    aws_pages.page_size = 1000
    upload_id = dst.create_multipart_upload(Bucket=bucket, Key="many-parts")["UploadId"]

    def put(n: int) -> None:
        dst.upload_part(Bucket=bucket, Key="many-parts", UploadId=upload_id, PartNumber=n, Body=b"%d" % n)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(1, 1101)))
    paged = dst_server.client(*DST_KEYS, endpoint_url=aws_pages.proxy.endpoint_url)
    retry = s3_upload.RetryPolicy(0, 0, s3_upload.threading.Event())
    parts = s3_upload.list_upload_parts(paged, bucket, "many-parts", upload_id, retry)
    assert [p.number for p in parts] == list(range(1, 1101))
    assert all(p.size == len(b"%d" % p.number) for p in parts)
    assert [q.get("part-number-marker") for _, q in aws_pages.pages] == ["0", "1000"]  # two pages, the second asked
    dst.abort_multipart_upload(Bucket=bucket, Key="many-parts", UploadId=upload_id)


class AwsKeyEncoding:
    """A ``rewrite_response`` (and ``match``) for FaultProxy: ListMultipartUploads answered as AWS answers it for a
    key with a character XML 1.0 cannot carry (a control character).  SeaweedFS writes such a key with U+FFFD in
    this listing and ignores encoding-type=url here although it echoes it (its ListObjectsV2 does encode); moto
    cannot even create such an upload (HTTP 500).  The proxy knows the real keys: asked encoding-type=url, it gives
    each upload's real key URL-encoded as AWS does (a space as '+', '/' as it is); asked without, it leaves the
    server's altered key, as a client that does not ask gets it."""

    def __init__(self, keys: list[str]):
        self.real = {re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "\ufffd", key): key for key in keys}
        self.encoded = 0  # pages answered encoded

    def match(self, request) -> bool:
        return request.operation == "ListMultipartUploads"

    def __call__(self, request, status: int, headers: dict, body: bytes) -> bytes | None:
        import urllib.parse
        import xml.etree.ElementTree as ET

        if status != 200 or request.query.get("encoding-type") != "url":
            return None
        root = ET.fromstring(body)
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        if ns:
            ET.register_namespace("", ns[1:-1])
        for element in root.iter():
            if element.tag in (ns + "Key", ns + "NextKeyMarker", ns + "KeyMarker", ns + "Prefix") and element.text:
                element.text = urllib.parse.quote_plus(self.real.get(element.text, element.text), safe="/")
        self.encoded += 1
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def test_an_upload_under_a_key_with_a_control_character_is_resumed_and_cleaned(dst, bucket, src_dir, make_config,
                                                                                aws_profiles, dst_server):  # fmt: skip
    """A file named with a control character (\\x01) left an unfinished upload.  Its key comes back from
    ListMultipartUploads altered unless the listing is asked URL-encoded: the upload was never resumed (a new one
    began, the old one stayed) nor aborted by CLEAN, whose warning came back on every run.  Asked URL-encoded and
    decoded once, the upload is resumed, and CLEAN aborts the next one; the object ends byte-identical."""
    name = "ctl\x01name.bin"
    key, path = "up/" + name, src_dir / name
    write_file(path, 3 * CHUNK + 5)
    leave_unfinished(make_config, aws_profiles, dst_server)  # its marker and part 1 on S3
    encoding = AwsKeyEncoding([key])
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=encoding.match, rewrite_response=encoding)
        aws_profiles.add("aws", proxy.endpoint_url, *DST_KEYS)
        resumed = run_tool(make_config(DesProfileName="aws"))
        assert resumed.code == 0, resumed
        assert f"resume {key}: upload" in resumed.stderr and "has 1 of 4 parts" in resumed.stderr, resumed
        assert resumed.bytes_sent == 2 * CHUNK + 5  # parts 2 to 4 only
        assert object_md5(dst, bucket, key) == md5_file(path)
        assert unfinished_uploads(dst, bucket) == []
        # CLEAN aborts an upload of that key (the object deleted, another upload left): none is left behind.
        dst.delete_object(Bucket=bucket, Key=key)
        leave_unfinished(make_config, aws_profiles, dst_server)
        cleaned = run_tool_with(make_config(DesProfileName="aws", DontAskMeToClean=False), "--clean")
        assert cleaned.code == 0, cleaned
        assert f"CLEAN: aborting unfinished upload of {key}" in cleaned.stderr, cleaned
        assert cleaned.bytes_sent == 3 * CHUNK + 5  # restarted from zero
        assert unfinished_uploads(dst, bucket) == []
        again = run_tool(make_config(DesProfileName="aws", DontAskMeToClean=False), stdin="")
        assert again.code == 0 and "unfinished multipart upload" not in again.output, again
        assert not proxy.exceptions, proxy.exceptions
    assert encoding.encoded >= 3
    assert object_md5(dst, bucket, key) == md5_file(path)


def test_unfinished_uploads_listing_is_paginated(dst, bucket):
    """SeaweedFS's own paging (by UploadIdMarker, without NextKeyMarker)."""
    ids = {dst.create_multipart_upload(Bucket=bucket, Key=f"p/k{i}")["UploadId"] for i in range(3)}
    ids.add(dst.create_multipart_upload(Bucket=bucket, Key="p/k1")["UploadId"])  # two uploads for one key
    retry = s3_upload.RetryPolicy(0, 0, s3_upload.threading.Event())
    listed = s3_upload.list_unfinished_uploads(dst, bucket, "p/", retry, page_size=1)
    assert {u.upload_id for u in listed} == ids
    for u in listed:
        dst.abort_multipart_upload(Bucket=bucket, Key=u.key, UploadId=u.upload_id)


def test_unfinished_uploads_listing_follows_key_marker_pages(dst_server, dst, bucket, aws_pages):
    """AWS's paging: NextKeyMarker and NextUploadIdMarker, one upload a page here; two uploads of one key fall on two
    pages and both are listed, once each."""
    ids = {dst.create_multipart_upload(Bucket=bucket, Key=f"p/k{i}")["UploadId"] for i in range(3)}
    ids.add(dst.create_multipart_upload(Bucket=bucket, Key="p/k1")["UploadId"])
    dst.create_multipart_upload(Bucket=bucket, Key="q/outside")
    paged = dst_server.client(*DST_KEYS, endpoint_url=aws_pages.proxy.endpoint_url)
    retry = s3_upload.RetryPolicy(0, 0, s3_upload.threading.Event())
    listed = s3_upload.list_unfinished_uploads(paged, bucket, "p/", retry)
    assert sorted(u.upload_id for u in listed) == sorted(ids)
    markers = [(q.get("key-marker", ""), bool(q.get("upload-id-marker"))) for _, q in aws_pages.pages]
    assert len(markers) == 4 and markers[0] == ("", False)
    assert [key for key, _ in markers[1:]] == ["p/k0", "p/k1", "p/k1"] and all(has_id for _, has_id in markers[1:])


def test_resume_of_an_upload_whose_parts_come_in_several_pages(dst, bucket, src_dir, make_config, aws_profiles,
                                                               dst_server, aws_pages):  # fmt: skip
    """The tool's own upload holds parts 1-3 and its marker (parts 9,999 and 10,000); listed one part a page, the
    marker comes last: a tool that stopped after the first page would see one part and no marker, and send two parts
    again."""
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK + 100)  # 4 parts
    leave_unfinished(make_config, aws_profiles, dst_server, fail_part=4)
    run = run_tool(make_config(DesProfileName="paged"))
    assert run.code == 0, run
    assert [q.get("part-number-marker") for op, q in aws_pages.pages if op == "ListParts"] == [
        "0",
        "1",
        "2",
        "3",
        "9999",
    ]
    assert "has 3 of 4 parts on S3 (made for this version of the source)" in run.stderr
    assert run.bytes_sent == 100  # only part 4
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_uploads_listed_over_several_pages_are_all_resumed_and_cleaned(dst, bucket, src_dir, make_config, aws_pages):
    """Unfinished uploads listed one a page (NextKeyMarker / NextUploadIdMarker): every file of the job resumes its
    own upload, and CLEAN then aborts every upload under the prefix, on whatever page it is listed."""
    sizes = {name: CHUNK + 10 * (i + 1) for i, name in enumerate(("a.bin", "b.bin", "c.bin"))}
    for name, size in sizes.items():
        write_file(src_dir / name, size)
        start_upload(dst, bucket, f"up/{name}", (src_dir / name).read_bytes(), CHUNK, parts=(1,))
    others = [start_upload(dst, bucket, key, b"", CHUNK, parts=()) for key in ("up/not-this-job", "up/zz-other")]
    outside = start_upload(dst, bucket, "elsewhere/x.bin", b"", CHUNK, parts=())
    config = make_config(DesProfileName="paged", DontAskMeToClean=False)

    run = run_tool_with(config, "--yes")
    assert run.code == 0, run
    assert run.stderr.count("has 1 of 2 parts on S3") == 3, run
    assert run.bytes_sent == 10 + 20 + 30  # the last part of each file, nothing else
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 3
    assert sorted(u["UploadId"] for u in unfinished_uploads(dst, bucket)) == sorted([*others, outside])
    key_markers = [q.get("key-marker") for op, q in aws_pages.pages if op == "ListMultipartUploads"]
    assert key_markers == [None, "up/a.bin", "up/b.bin", "up/c.bin", "up/not-this-job"]  # five pages

    run = run_tool_with(config, "--clean")
    assert run.code == 0, run
    for key in ("up/not-this-job", "up/zz-other"):
        assert f"CLEAN: aborting unfinished upload of {key}" in run.stderr, run
    assert run.bytes_sent == 0
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [outside]
    dst.abort_multipart_upload(Bucket=bucket, Key="elsewhere/x.bin", UploadId=outside)


# ----------------------------------------------------------------------------------------------------------------------
# The resume marker and other tools
# ----------------------------------------------------------------------------------------------------------------------


def complete_from_list_parts(client, bucket: str, key: str, upload_id: str) -> dict:
    """What the original v1.x's completeUpload and the `aws s3api list-parts` + `complete-multipart-upload` recipe do:
    complete an upload with every part ListParts shows."""
    parts = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    listed = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
    return client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": listed})  # fmt: skip


@pytest.mark.parametrize("stopped_at", [1, 3], ids=["after-the-marker", "after-two-parts"])
def test_another_tool_completing_our_upload_from_its_parts_fails_loudly(dst, bucket, src_dir, make_config, stopped_at,
                                                                        aws_profiles, dst_server):  # fmt: skip
    """A run is stopped with its marker (and maybe some parts) on S3.  Another tool (the original: a part number it
    finds listed counts as sent) sends the parts it finds missing and completes the upload from ListParts: S3 refuses
    (the marker's part 9,999 is under 5 MiB and not the last), so no object with the marker's bytes appended appears.
    Our rerun then completes the file exactly, every part it finds checked by MD5."""
    path = src_dir / "big.bin"
    write_file(path, 4 * CHUNK)  # 4 parts, the last as large as the others (a small last part is refused anyway)
    data = path.read_bytes()
    leave_unfinished(make_config, aws_profiles, dst_server, fail_part=stopped_at)
    [upload] = unfinished_uploads(dst, bucket)
    upload_id = upload["UploadId"]
    present = {p["PartNumber"] for p in dst.list_parts(Bucket=bucket, Key="up/big.bin", UploadId=upload_id)["Parts"]}
    assert s3_upload.MARKER_PART in present
    for number in range(1, 5):
        if number not in present:
            dst.upload_part(Bucket=bucket, Key="up/big.bin", UploadId=upload_id, PartNumber=number,
                            Body=data[(number - 1) * CHUNK : number * CHUNK])  # fmt: skip
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        complete_from_list_parts(dst, bucket, "up/big.bin", upload_id)
    # AWS answers EntityTooSmall; SeaweedFS names the small part before the last InvalidPartOrder.
    assert refused.value.response["Error"]["Code"] in ("EntityTooSmall", "InvalidPartOrder")
    assert list_keys(dst, bucket) == {}

    run = run_tool(make_config())
    assert run.code == 0, run
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_an_upload_of_s3_upload_1_1_resumes_from_its_parts(dst, bucket, src_dir, make_config):
    """s3_upload 1.1 wrote its marker in part 10,000 alone: such an upload is resumed (its parts proven by MD5, as
    every local part is), only the missing part is sent, and the marker is never completed."""
    path = src_dir / "big.bin"
    write_file(path, 3 * CHUNK + 100)  # 4 parts
    data = path.read_bytes()
    st = os.stat(path)
    identity = s3_upload.LocalSource.identity(None, s3_upload.SourceFile("up/big.bin", st.st_size, st.st_mtime))
    marker = s3_upload.legacy_marker_body(identity, s3_upload.plan_chunks(len(data), CHUNK))
    upload_id = start_upload(dst, bucket, "up/big.bin", data, CHUNK, parts=(1, 2, 3))
    dst.upload_part(Bucket=bucket, Key="up/big.bin", UploadId=upload_id, PartNumber=s3_upload.MARKER_PART,
                    Body=marker)  # fmt: skip
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "has 3 of 4 parts on S3 (made for this version of the source)" in run.stderr
    assert run.bytes_sent == 100  # only the last part
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
