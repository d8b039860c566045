"""Fast unit tests of the pure parts of s3_upload.py: no server, no network, no sleeping beyond a few 10 ms."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading

import botocore.exceptions
import botocore.parsers
import pytest
import urllib3.exceptions

import s3_upload
from s3_upload import ExistingPart, Settings, SourceFile, UnfinishedUpload

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


# ----------------------------------------------------------------------------------------------------------------------
# plan_chunks / ChunkPlan
# ----------------------------------------------------------------------------------------------------------------------


def assert_parts_cover(plan: s3_upload.ChunkPlan) -> None:
    """Parts are numbered 1..N, contiguous from offset 0, all of part_size but the last, and sum to the size."""
    parts = list(plan.parts())
    assert [n for n, _, _ in parts] == list(range(1, plan.part_count + 1))
    offset = 0
    for number, start, length in parts:
        assert (start, length) == plan.part_range(number)
        assert start == offset
        if number < plan.part_count:
            assert length == plan.part_size
        else:
            assert 0 <= length <= plan.part_size
            assert length > 0 or plan.size == 0
        offset += length
    assert offset == plan.size


@pytest.mark.parametrize(
    ("size", "chunk", "count", "last"),
    [
        (0, 5 * MiB, 1, 0),
        (1, 5 * MiB, 1, 1),
        (5 * MiB - 1, 5 * MiB, 1, 5 * MiB - 1),  # below the chunk
        (5 * MiB, 5 * MiB, 1, 5 * MiB),  # equal to the chunk
        (5 * MiB + 1, 5 * MiB, 2, 1),  # one byte above
        (10 * MiB, 5 * MiB, 2, 5 * MiB),  # exact multiple: the last part is full
        (15 * MiB, 5 * MiB, 3, 5 * MiB),
        (12 * MiB + 777, 5 * MiB, 3, 2 * MiB + 777),  # the last part short
        (150 * MiB + 3, 50 * MiB, 4, 3),
    ],
)
def test_plan_chunks_counts_and_last_part(size, chunk, count, last):
    plan = s3_upload.plan_chunks(size, chunk)
    assert plan.part_size == chunk
    assert plan.part_count == count
    assert plan.part_range(count) == ((count - 1) * chunk, last)
    assert_parts_cover(plan)


def test_plan_chunks_600_gib_at_50_mib_grows_to_a_whole_mib_within_10000_parts():
    size, chunk = 600 * GiB, 50 * MiB
    assert -(-size // chunk) > s3_upload.MAX_DATA_PARTS  # 12,288 parts at ChunkSize: too many
    plan = s3_upload.plan_chunks(size, chunk)
    assert plan.part_size % MiB == 0
    assert plan.part_size >= chunk
    assert plan.part_count <= s3_upload.MAX_DATA_PARTS
    assert plan.part_size == 62 * MiB  # ceil(600 GiB / 9,999) = 61.45 MiB -> 62 MiB
    assert plan.part_count == 9910
    assert_parts_cover(plan)


def test_plan_chunks_exactly_9999_chunks_stays_at_chunk_size_and_10000_grows():
    """Parts 9,999 and 10,000 are the resume marker: data fits in 9,998 parts."""
    chunk = 50 * MiB
    plan = s3_upload.plan_chunks(s3_upload.MAX_DATA_PARTS * chunk, chunk)
    assert plan.part_size == chunk
    assert plan.part_count == s3_upload.MAX_DATA_PARTS == s3_upload.MAX_PARTS - 2 == min(s3_upload.MARKER_PARTS) - 1
    assert plan.part_range(s3_upload.MAX_DATA_PARTS)[1] == chunk
    grown = s3_upload.plan_chunks(s3_upload.MAX_PARTS * chunk, chunk)
    assert grown.part_size == 51 * MiB and grown.part_count < s3_upload.MARKER_PART


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (10_000 * 50 * MiB + 1, 50 * MiB),  # one byte over 10,000 chunks
        (10_000 * (5 * MiB + 1) + 1, 5 * MiB + 1),  # a ChunkSize that is not a whole MiB
        (5 * TiB, 5 * MiB),  # S3's largest object at the smallest ChunkSize
        (123_456_789_012, 8 * MiB),
    ],
)
def test_plan_chunks_grown_part_size_is_whole_mib_at_least_chunk_and_fits(size, chunk):
    plan = s3_upload.plan_chunks(size, chunk)
    assert plan.part_size % MiB == 0
    assert chunk <= plan.part_size <= s3_upload.MAX_PART_SIZE
    assert plan.part_count <= s3_upload.MAX_DATA_PARTS
    # the smallest whole MiB that fits: one MiB less would need more than 9,999 parts
    assert -(-size // (plan.part_size - MiB)) > s3_upload.MAX_DATA_PARTS or plan.part_size - MiB < chunk
    assert_parts_cover(plan)


# ----------------------------------------------------------------------------------------------------------------------
# multipart_etag
# ----------------------------------------------------------------------------------------------------------------------


def test_multipart_etag_is_md5_of_concatenated_part_digests_dash_n():
    parts = [b"a", b"b"]
    digests = [hashlib.md5(p).digest() for p in parts]
    by_hand = hashlib.md5(digests[0] + digests[1]).hexdigest() + "-2"
    assert by_hand == "96e024ba2074fe77e8e965ba43a704be-2"
    assert s3_upload.multipart_etag(digests) == by_hand
    assert s3_upload.multipart_etag(iter(digests)) == by_hand  # any iterable, e.g. a generator


def test_multipart_etag_of_one_part_is_not_the_plain_md5():
    digest = hashlib.md5(b"only").digest()
    etag = s3_upload.multipart_etag([digest])
    assert etag == hashlib.md5(digest).hexdigest() + "-1"
    assert etag != digest.hex()


# ----------------------------------------------------------------------------------------------------------------------
# join_key / folder_prefix
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "relative", "key"),
    [
        ("multipart/", "a.txt", "multipart/a.txt"),
        ("multipart", "a.txt", "multipart/a.txt"),
        ("", "a.txt", "a.txt"),
        ("", "a/b/c.txt", "a/b/c.txt"),
        ("up/", "a/b/c.txt", "up/a/b/c.txt"),
        ("up", "a\\b.txt", "up/a\\b.txt"),  # a backslash is part of a key, not a separator
        ("up/", "/a.txt", "up/a.txt"),  # no double slash
        ("up", "", "up"),
    ],
)
def test_join_key(prefix, relative, key):
    assert s3_upload.join_key(prefix, relative) == key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("a.txt", "a.txt"),
        (os.path.join("d", "e", "f.bin"), "d/e/f.bin"),
        ("报告 ü.txt", "报告 ü.txt"),  # valid UTF-8 stays as it is
        (os.fsdecode(b"caf\xe9.txt"), "caf\u201bE9.txt"),  # a byte that is not UTF-8: spelt out
        (os.fsdecode(b"\xff\xfe/x\x80"), "\u201bFF\u201bFE/x\u201b80"),
        # Not UTF-8 and holding a quote mark: that one is written as its bytes, so every ‛XX decodes back.
        (os.fsdecode(b"\xe9" + "\u201bE9.txt".encode()), "\u201bE9\u201bE2\u201b80\u201b9BE9.txt"),
    ],
)
def test_key_of_local_name_and_back(name, key):
    assert s3_upload.key_of_local_name(name) == key
    assert s3_upload.local_name_of_key(key) == name
    key.encode("utf-8")  # always a valid key


def test_printable_shows_undecodable_bytes_as_escapes():
    assert s3_upload.printable(os.fsdecode(b"caf\xe9.txt")) == "caf\\xe9.txt"
    assert s3_upload.printable("报告.txt") == "报告.txt"


@pytest.mark.parametrize(
    ("prefix", "written"),
    [("", ""), ("up", "up/"), ("up/", "up/"), ("backup//", "backup/"), ("/lead", "lead/"), ("a//b/./c", "a/b/c/")],
)
def test_key_prefix_writes_one_spelling(prefix, written):
    assert s3_upload.key_prefix(Settings(des_bucket="b", src_dir=".", s3_prefix=prefix)) == written


@pytest.mark.parametrize(
    ("path", "root", "result"),
    [("/r/a", "/r", True), ("/r", "/r", True), ("/r/..data", "/r", True), ("/x", "/r", False), ("/r2/a", "/r", False)],
)
def test_inside(path, root, result):
    assert s3_upload.inside(path, root) is result


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [("", ""), ("up", "up/"), ("up/", "up/"), ("a/b", "a/b/"), ("a/b/", "a/b/")],
)
def test_folder_prefix(prefix, folder):
    assert s3_upload.folder_prefix(prefix) == folder


# ----------------------------------------------------------------------------------------------------------------------
# pick_existing_part
# ----------------------------------------------------------------------------------------------------------------------

MD5_OLD = hashlib.md5(b"old bytes").hexdigest()
MD5_NEW = hashlib.md5(b"new bytes").hexdigest()
L = 5 * MiB


@pytest.mark.parametrize("ours", [MD5_OLD, MD5_NEW])
def test_pick_existing_part_duplicate_numbers_the_entry_with_our_md5_wins(ours):
    # SeaweedFS lists a re-sent part number twice.
    entries = [ExistingPart(1, L, MD5_OLD), ExistingPart(1, L, MD5_NEW)]
    picked = s3_upload.pick_existing_part(entries, L, ours)
    assert picked is not None and picked.etag == ours


def test_pick_existing_part_no_entry_with_our_md5():
    entries = [ExistingPart(1, L, MD5_OLD), ExistingPart(1, L, MD5_NEW)]
    assert s3_upload.pick_existing_part(entries, L, hashlib.md5(b"other").hexdigest()) is None


@pytest.mark.parametrize("md5", [MD5_OLD, None])
def test_pick_existing_part_wrong_size_never_counts(md5):
    assert s3_upload.pick_existing_part([ExistingPart(1, L - 1, MD5_OLD)], L, md5) is None
    assert s3_upload.pick_existing_part([ExistingPart(1, L + 1, MD5_OLD)], L, md5) is None
    assert s3_upload.pick_existing_part([], L, md5) is None


def test_pick_existing_part_md5_none_accepts_the_right_size():
    right = ExistingPart(1, L, MD5_NEW)
    assert s3_upload.pick_existing_part([ExistingPart(1, L + 1, MD5_OLD), right], L, None) is right
    assert s3_upload.pick_existing_part([right, ExistingPart(1, L - 1, MD5_OLD)], L, None) is right


def test_pick_existing_part_md5_none_two_of_the_right_size_the_newest_listed_wins():
    older, newer = ExistingPart(1, L, MD5_OLD), ExistingPart(1, L, MD5_NEW)
    assert s3_upload.pick_existing_part([older, newer], L, None) is newer


# ----------------------------------------------------------------------------------------------------------------------
# judge_upload (the resume marker)
# ----------------------------------------------------------------------------------------------------------------------

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
PLAN_12 = s3_upload.plan_chunks(12 * MiB, 5 * MiB)  # parts 5, 5, 2 MiB
IDENTITY = "s3 etag 0123456789abcdef0123456789abcdef size 12582912"


def marker(identity: str = IDENTITY, plan=PLAN_12) -> ExistingPart:
    body = s3_upload.marker_body(identity, plan)
    return ExistingPart(s3_upload.MARKER_PART, len(body), hashlib.md5(body).hexdigest())


def legacy_marker(identity: str = IDENTITY, plan=PLAN_12) -> ExistingPart:
    body = s3_upload.legacy_marker_body(identity, plan)
    return ExistingPart(s3_upload.MARKER_PART, len(body), hashlib.md5(body).hexdigest())


def twin(part: ExistingPart) -> ExistingPart:
    """The marker's copy in part 9,999."""
    return dataclasses.replace(part, number=s3_upload.MARKER_TWIN_PART)


def test_judge_upload_with_its_own_marker_is_proven():
    parts = [ExistingPart(1, 5 * MiB, MD5_OLD), twin(marker()), marker()]
    assert s3_upload.judge_upload(PLAN_12, parts, IDENTITY) == s3_upload.ResumeCheck(
        proven=True, markers=s3_upload.MARKER_PARTS
    )
    # Stopped between its two marker parts (nothing else in it): still this version's.
    for one in (marker(), twin(marker())):
        assert s3_upload.judge_upload(PLAN_12, [one], IDENTITY).proven


def test_judge_upload_of_s3_upload_1_1_resumes_with_its_marker_in_part_10000():
    """Uploads left by s3_upload 1.1 and earlier (the marker in part 10,000 alone) still resume; their part 9,999,
    if any, is data."""
    parts = [ExistingPart(1, 5 * MiB, MD5_OLD), legacy_marker()]
    assert s3_upload.judge_upload(PLAN_12, parts, IDENTITY) == s3_upload.ResumeCheck(
        proven=True, markers=(s3_upload.MARKER_PART,)
    )
    other = s3_upload.judge_upload(PLAN_12, [legacy_marker(identity="s3 etag other size 1")], IDENTITY)
    assert other.restart and other.markers == (s3_upload.MARKER_PART,)
    data_9999 = ExistingPart(s3_upload.MARKER_TWIN_PART, 100, MD5_NEW)
    assert s3_upload.marker_numbers([data_9999, legacy_marker()]) == (s3_upload.MARKER_PART,)


def test_judge_upload_empty_is_resumed_unproven():
    """Nothing in it yet (another run's upload created a moment ago, its marker on the way): resumed, never aborted."""
    assert s3_upload.judge_upload(PLAN_12, [], IDENTITY) == s3_upload.ResumeCheck()


@pytest.mark.parametrize(
    "other",
    [
        marker(identity=IDENTITY.replace("0123", "9999")),  # another source version (ETag)
        marker(plan=s3_upload.plan_chunks(12 * MiB, 6 * MiB)),  # another ChunkSize
        marker(plan=s3_upload.plan_chunks(13 * MiB, 5 * MiB)),  # another size
    ],
)
def test_judge_upload_marker_of_another_version_or_layout_restarts(other):
    check = s3_upload.judge_upload(PLAN_12, [ExistingPart(1, 5 * MiB, MD5_OLD), twin(other), other], IDENTITY)
    assert check.restart and "another version of the source or another ChunkSize" in check.restart
    assert not check.proven


def test_marker_body_names_version_and_layout():
    body = s3_upload.marker_body(IDENTITY, PLAN_12).decode()
    assert IDENTITY in body and "part_size 5242880" in body and "size 12582912" in body


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [ExistingPart(1, 5 * MiB, MD5_OLD)],
        [ExistingPart(1, 5 * MiB, MD5_OLD), ExistingPart(2, 5 * MiB, MD5_OLD)],
        [ExistingPart(1, 5 * MiB, MD5_OLD), ExistingPart(2, 5 * MiB, MD5_OLD), ExistingPart(3, 2 * MiB, MD5_OLD)],
        # a duplicate with a wrong size is left to pick_existing_part, as long as one entry fits
        [ExistingPart(1, 4 * MiB, MD5_OLD), ExistingPart(1, 5 * MiB, MD5_NEW)],
    ],
)
def test_judge_upload_without_marker_resumes_unproven(parts):
    """Made by another tool (or killed before its marker): resumed, but every part must prove its bytes by MD5."""
    assert s3_upload.judge_upload(PLAN_12, parts, IDENTITY) == s3_upload.ResumeCheck(proven=False)


@pytest.mark.parametrize(
    "parts",
    [
        [ExistingPart(1, 4 * MiB, MD5_OLD)],  # a part of another size
        [ExistingPart(1, 6 * MiB, MD5_OLD), ExistingPart(2, 6 * MiB, MD5_OLD)],  # cut at ChunkSize 6 MiB
        [ExistingPart(1, 5 * MiB, MD5_OLD), ExistingPart(3, 5 * MiB, MD5_OLD)],  # the last part is 2 MiB now
    ],
)
def test_judge_upload_without_marker_part_of_wrong_size_names_chunksize(parts):
    check = s3_upload.judge_upload(PLAN_12, parts, IDENTITY)
    assert "ChunkSize" in check.restart


def test_judge_upload_without_marker_part_beyond_the_plan():
    parts = [ExistingPart(n, length, MD5_OLD) for n, _, length in PLAN_12.parts()] + [ExistingPart(4, 1, MD5_OLD)]
    check = s3_upload.judge_upload(PLAN_12, parts, IDENTITY)
    assert "part 4" in check.restart and "3 parts" in check.restart
    assert "ChunkSize" in check.restart


@pytest.mark.parametrize(
    ("size", "old_chunk", "new_chunk", "listed"),
    [
        # old run 5 MiB: parts 5,5,1 (only part 2 = bytes 5..10 MiB finished); new run 6 MiB: parts 6,5 (bytes 6..11)
        (11 * MiB, 5 * MiB, 6 * MiB, ExistingPart(2, 5 * MiB, MD5_OLD)),
        # old run 6 MiB: parts 6,5 (only its last part 2 = bytes 6..11 MiB finished); new run 5 MiB: parts 5,5,1
        (11 * MiB, 6 * MiB, 5 * MiB, ExistingPart(2, 5 * MiB, MD5_OLD)),
    ],
    ids=["5MiB-then-6MiB", "6MiB-then-5MiB"],
)
def test_judge_upload_lone_part_cut_at_another_chunksize(size, old_chunk, new_chunk, listed):
    """Sizes alone cannot tell which ChunkSize cut a part: with the marker the layout is known and a change
    restarts; without it the part is not proven, so it is checked by MD5 against the bytes it should hold."""
    old = s3_upload.plan_chunks(size, old_chunk)
    new = s3_upload.plan_chunks(size, new_chunk)
    assert old.part_range(listed.number) != new.part_range(listed.number)  # other bytes...
    assert old.part_range(listed.number)[1] == new.part_range(listed.number)[1] == listed.size  # ...same length
    with_marker = s3_upload.judge_upload(new, [listed, marker(plan=old)], IDENTITY)
    assert "ChunkSize" in with_marker.restart
    assert not s3_upload.judge_upload(new, [listed], IDENTITY).proven


# ----------------------------------------------------------------------------------------------------------------------
# plan_files
# ----------------------------------------------------------------------------------------------------------------------

CHUNK = 5 * MiB


def settings(**kw) -> Settings:
    return Settings(des_bucket="bucket", src_dir="/tmp", chunk_size=CHUNK, **kw)


def there(size: int) -> s3_upload.Listed:
    """An object of the destination listing with this size (and the same empty ETag as the sources here)."""
    return s3_upload.Listed("", size, "", T)


@pytest.mark.parametrize(
    ("size", "dest_size", "ignore_small", "action"),
    [
        (0, None, False, "put"),  # zero bytes: one PutObject
        (1, None, False, "put"),
        (CHUNK - 1, None, False, "put"),
        (CHUNK, None, False, "multipart"),
        (3 * CHUNK + 7, None, False, "multipart"),
        (100, 100, False, "skip"),  # same key, same size at the destination
        (0, 0, False, "skip"),
        (3 * CHUNK, 3 * CHUNK, False, "skip"),
        (100, 99, False, "put"),  # the size differs: upload again
        (3 * CHUNK, 3 * CHUNK - 1, False, "multipart"),
        (100, None, True, "skip"),  # IgnoreSmallFile
        (0, None, True, "skip"),
        (CHUNK - 1, 7, True, "skip"),
        (CHUNK, None, True, "multipart"),
    ],
)
def test_plan_files_action(size, dest_size, ignore_small, action):
    f = SourceFile("up/f", size, T)
    destination = {} if dest_size is None else {"up/f": there(dest_size)}
    destination["up/other"] = there(size)  # another key of the same size does not count
    [task] = s3_upload.plan_files(settings(ignore_small_file=ignore_small), [f], destination, [])
    assert task.src is f
    assert task.action == action
    if action == "multipart":
        assert task.plan == s3_upload.plan_chunks(size, CHUNK)
    else:
        assert task.plan.part_count == 1 and task.plan.part_range(1) == (0, size)  # the whole file at once
    if action == "skip":
        assert ("IgnoreSmallFile" in task.reason) == (dest_size != size)
        assert ("same size" in task.reason) == (dest_size == size)


def test_plan_files_same_key_other_size_is_not_skipped_by_a_same_size_key_elsewhere():
    f = SourceFile("up/a", 100, T)
    [task] = s3_upload.plan_files(settings(), [f], {"up/b": there(100), "a": there(100)}, [])
    assert task.action == "put"


def test_plan_files_newest_unfinished_upload_is_chosen_and_other_keys_ignored():
    big = SourceFile("up/big", 3 * CHUNK, T)
    lone = SourceFile("up/lone", 2 * CHUNK, T)
    small = SourceFile("up/small", 10, T)
    uploads = [
        UnfinishedUpload("up/big", "old", T - 300),
        UnfinishedUpload("up/big", "newest", T - 100),
        UnfinishedUpload("up/big", "middle", T - 200),
        UnfinishedUpload("up/elsewhere", "not-ours", T),
        UnfinishedUpload("up/small", "small-one", T),
    ]
    tasks = s3_upload.plan_files(settings(), [big, lone, small], {}, uploads)
    assert [t.src.key for t in tasks] == ["up/big", "up/lone", "up/small"]  # in source order
    assert tasks[0].action == "multipart" and tasks[0].upload is not None
    assert tasks[0].upload.upload_id == "newest"
    assert tasks[1].action == "multipart" and tasks[1].upload is None
    assert tasks[2].action == "put" and tasks[2].upload is None
    # What no task resumes is named for cleaning once the file is done with it; another key's upload is not.
    assert [u.upload_id for u in tasks[0].stale] == ["old", "middle"]
    assert tasks[1].stale == ()
    assert [u.upload_id for u in tasks[2].stale] == ["small-one"]


def test_plan_files_skips_carry_their_stale_uploads():
    done, ignored = SourceFile("up/done", 10, T), SourceFile("up/tiny", 20, T)
    uploads = [UnfinishedUpload("up/done", "d", T), UnfinishedUpload("up/tiny", "t", T)]
    tasks = s3_upload.plan_files(settings(ignore_small_file=True), [done, ignored], {"up/done": there(10)}, uploads)
    assert [(t.action, t.complete, [u.upload_id for u in t.stale]) for t in tasks] == [
        ("skip", True, ["d"]),
        ("skip", False, ["t"]),
    ]


# ----------------------------------------------------------------------------------------------------------------------
# is_retryable / describe_error
# ----------------------------------------------------------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "msg", op: str = "UploadPart"):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("RequestTimeout", 400, True),
        ("BadDigest", 400, True),
        ("ServiceUnavailable", 503, True),
        ("SomethingNew", 502, True),  # any 5xx
        ("TooManyRequests", 429, True),
        ("AccessDenied", 403, False),
        ("NoSuchBucket", 404, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("NoSuchUpload", 404, False),
        ("PreconditionFailed", 412, False),
        ("AccessDenied", 500, False),  # a fatal code stays fatal whatever the status
        ("SomethingElse", 400, False),
    ],
)
def test_is_retryable_client_errors(code, status, retryable):
    assert s3_upload.is_retryable(client_error(code, status)) is retryable


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://s3"), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"), True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://s3"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (urllib3.exceptions.ProtocolError("Connection aborted."), True),
        (s3_upload.ShortRead("got 3 of 5 bytes"), True),
        (PermissionError(13, "Permission denied"), False),
        (FileNotFoundError(2, "No such file or directory"), False),
        (s3_upload.SourceChanged("changed"), False),
        (botocore.exceptions.NoCredentialsError(), False),
        (botocore.exceptions.ParamValidationError(report="bad"), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_retryable_other_errors(exc, retryable):
    assert s3_upload.is_retryable(exc) is retryable


def test_describe_error():
    assert s3_upload.describe_error(client_error("SlowDown", 503, "Reduce your rate")) == (
        "SlowDown (HTTP 503): Reduce your rate"
    )
    assert s3_upload.describe_error(client_error("NoSuchKey", 404, "")) == "NoSuchKey (HTTP 404)"
    assert s3_upload.describe_error(PermissionError("denied")) == "PermissionError: denied"


# ----------------------------------------------------------------------------------------------------------------------
# RetryPolicy
# ----------------------------------------------------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in turn, then returns 'done'."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class RecordingEvent(threading.Event):
    """A stop Event whose wait() records the timeout; it returns at once unless sleep=True."""

    def __init__(self, sleep: bool = False):
        super().__init__()
        self.sleep = sleep
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return super().wait(timeout) if self.sleep else self.is_set()


@pytest.fixture
def s3_log(caplog, monkeypatch):
    # main() sets propagate=False on this logger; be independent of anything run earlier in the session.
    monkeypatch.setattr(s3_upload.log, "propagate", True)
    caplog.set_level(logging.WARNING, logger="s3_upload")
    return caplog


def test_retry_policy_two_retryable_failures_then_success(s3_log):
    policy = s3_upload.RetryPolicy(5, 0.01, threading.Event())
    request = Flaky(client_error("SlowDown", 503), ConnectionResetError(104, "reset"))
    assert policy.call("UPLOAD k part 1", request) == "done"
    assert request.calls == 3
    assert policy.retries == 2
    messages = [r.getMessage() for r in s3_log.records if r.name == "s3_upload"]
    assert len(messages) == 2
    assert "UPLOAD k part 1 failed: SlowDown (HTTP 503)" in messages[0] and "retry 1/5" in messages[0]
    assert "ConnectionResetError" in messages[1] and "retry 2/5" in messages[1]


def test_retry_policy_counts_retries_across_calls():
    policy = s3_upload.RetryPolicy(3, 0.0, threading.Event())
    policy.call("a", Flaky(TimeoutError()))
    policy.call("b", Flaky(TimeoutError(), TimeoutError()))
    assert policy.retries == 3


@pytest.mark.parametrize(
    "fatal",
    [client_error("AccessDenied", 403), PermissionError(13, "denied"), s3_upload.SourceChanged("changed")],
    ids=["AccessDenied", "PermissionError", "SourceChanged"],
)
def test_retry_policy_fatal_error_is_raised_at_once(fatal):
    stop = RecordingEvent()
    policy = s3_upload.RetryPolicy(5, 0.01, stop)
    request = Flaky(fatal)
    with pytest.raises(type(fatal)) as info:
        policy.call("PUT k", request)
    assert info.value is fatal
    assert request.calls == 1
    assert policy.retries == 0
    assert stop.waits == []


@pytest.mark.parametrize("max_retry", [0, 1, 3])
def test_retry_policy_gives_up_after_max_retry_with_the_last_error(max_retry):
    errors = [client_error("InternalError", 500, f"try {i}") for i in range(max_retry + 1)]
    policy = s3_upload.RetryPolicy(max_retry, 0.01, threading.Event())
    request = Flaky(*errors, client_error("InternalError", 500, "never reached"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        policy.call("PUT k", request)
    assert info.value is errors[-1]
    assert request.calls == max_retry + 1
    assert policy.retries == max_retry


def test_retry_policy_waits_grow_linearly(s3_log):
    stop = RecordingEvent()
    policy = s3_upload.RetryPolicy(3, 5.0, stop)  # the seed's 5 s; RecordingEvent does not sleep
    request = Flaky(*[client_error("InternalError", 500) for _ in range(4)])  # not throttling: no pace
    with pytest.raises(botocore.exceptions.ClientError):
        policy.call("PUT k", request)
    assert stop.waits == [5.0, 10.0, 15.0]
    messages = [r.getMessage() for r in s3_log.records if r.name == "s3_upload"]
    assert all(r.levelno == logging.WARNING for r in s3_log.records)
    assert [m.split("; ")[-1] for m in messages] == ["retry 1/3 in 5s", "retry 2/3 in 10s", "retry 3/3 in 15s"]


def test_retry_policy_real_waits_with_a_small_delay(s3_log):
    stop = RecordingEvent(sleep=True)
    policy = s3_upload.RetryPolicy(3, 0.01, stop)
    assert policy.call("GET k", Flaky(*[client_error("InternalError", 500) for _ in range(3)])) == "done"
    assert stop.waits == pytest.approx([0.01, 0.02, 0.03])
    waits = [r.args[-1] for r in s3_log.records if r.name == "s3_upload"]  # the "in X s" argument
    assert waits == pytest.approx([0.01, 0.02, 0.03])


def test_retry_policy_retries_a_dropped_connection_at_once_the_first_time(s3_log):
    """A reset or a timeout (no answer from the server) is retried at once, then after 1, 2... x RetryDelay; an
    answer from the server (throttling, 5xx) always waits n x RetryDelay."""
    stop = RecordingEvent()
    policy = s3_upload.RetryPolicy(3, 5.0, stop)
    dropped = [TimeoutError(), urllib3.exceptions.ProtocolError("reset"), ConnectionResetError()]
    assert policy.call("GET k", Flaky(*dropped)) == "done"
    assert stop.waits == [0.0, 5.0, 10.0]


def test_the_pace_grows_once_per_pause_and_recovers_by_halves():
    """A throttling answer spaces every request RetryDelay apart; the answers of requests already on their way count
    once; each success halves the spacing, down to none."""
    pace = s3_upload.Pace(1.0, threading.Event())
    assert pace.interval == 0 and not pace.before()
    pace.throttled()
    pace.throttled()  # on its way at the same time: the same pause
    assert pace.interval == 1.0
    pace._last -= 1.0  # the pause ran out: the next refusal doubles it
    pace.throttled()
    assert pace.interval == 2.0
    for expected in (1.0, 0.5, 0.25, 0.125, 0.0):
        pace.succeeded()
        assert pace.interval == expected
    assert s3_upload.is_throttling(client_error("SlowDown", 503)) and s3_upload.is_throttling(
        client_error("AWS.SimpleQueueService.RequestThrottled", 400)
    )
    assert not s3_upload.is_throttling(client_error("InternalError", 500))


def test_a_throttling_answer_to_one_request_paces_every_request_of_the_policy():
    """A SlowDown to one request, retried, leaves the policy's one pace spacing the requests of every thread that uses
    it; a 500 (the server's trouble, not a request to slow down) leaves it alone, and so do reads of the source (not
    paced: a slow destination must not slow the disk)."""
    policy = s3_upload.RetryPolicy(3, 0.01, threading.Event())
    assert policy.call("GET source", Flaky(client_error("SlowDown", 503)), paced=False) == "done"
    assert policy.call("PUT k", Flaky(client_error("InternalError", 500))) == "done"
    assert policy.pace.interval == 0
    assert policy.call("PUT k", Flaky(client_error("SlowDown", 503))) == "done"
    assert policy.pace.interval > 0  # grown by the SlowDown, halved once by the success that followed


def test_retry_policy_stop_set_before_the_call_raises_interrupted():
    stop = threading.Event()
    stop.set()
    request = Flaky()
    with pytest.raises(s3_upload.Interrupted):
        s3_upload.RetryPolicy(5, 0.01, stop).call("PUT k", request)
    assert request.calls == 0


def test_retry_policy_stop_set_during_the_backoff_raises_interrupted():
    stop = threading.Event()
    policy = s3_upload.RetryPolicy(5, 10.0, stop)  # would wait 10 s if the stop did not end the wait

    def request():
        stop.set()  # Ctrl-C arrives while this request is failing
        raise client_error("SlowDown", 503)

    with pytest.raises(s3_upload.Interrupted):
        policy.call("PUT k", request)
    assert policy.retries == 1


# ----------------------------------------------------------------------------------------------------------------------
# settings_from_values / validate_settings
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def seed_values(tmp_path):
    """The seed's complete LOCAL_TO_S3 example, as the config module's public names."""
    megabytes = 1024 * 1024
    return {
        "JobType": "LOCAL_TO_S3",
        "SrcFileIndex": "*",
        "S3Prefix": "multipart/",
        "DesProfileName": "cn",
        "DesBucket": "my-cn-bucket",
        "SrcDir": str(tmp_path),
        "SrcBucket": "no",
        "SrcProfileName": "no",
        "Megabytes": megabytes,
        "ChunkSize": 50 * megabytes,
        "MaxRetry": 30,
        "MaxThread": 3,
        "MaxParallelFile": 3,
        "IgnoreSmallFile": False,
        "StorageClass": "STANDARD",
        "ifVerifyMD5": False,
        "DontAskMeToClean": False,
        "LoggingLevel": "INFO",
    }


def test_settings_from_the_seed_example(seed_values, tmp_path):
    s = s3_upload.settings_from_values(seed_values)
    assert s == Settings(
        job_type="LOCAL_TO_S3",
        src_file_index="*",
        s3_prefix="multipart/",
        des_profile="cn",
        des_bucket="my-cn-bucket",
        src_dir=str(tmp_path),
        src_bucket="no",
        src_profile="no",
        chunk_size=50 * MiB,
        max_retry=30,
        max_thread=3,
        max_parallel_file=3,
        ignore_small_file=False,
        storage_class="STANDARD",
        verify_md5=False,
        dont_ask_me_to_clean=False,
        logging_level="INFO",
        retry_delay=5.0,  # not in the seed: the defaults
        log_dir="log",
    )


def test_settings_extra_and_private_names_are_ignored(seed_values):
    values = dict(seed_values, Megabytes="not an int", Helper=object(), os=None)
    assert s3_upload.settings_from_values(values).chunk_size == 50 * MiB


@pytest.mark.parametrize(("typo", "option"), [("chunksize", "ChunkSize"), ("ChunkSzie", "ChunkSize"),
                                              ("MaxThreads", "MaxThread")])  # fmt: skip
def test_settings_misspelt_option_is_an_error_not_a_silent_default(seed_values, typo, option):
    values = {name: value for name, value in seed_values.items() if name != option}
    with pytest.raises(s3_upload.UserError, match=f"did you mean '{option}'"):
        s3_upload.settings_from_values(dict(values, **{typo: 1}))


def test_settings_advanced_options_and_flags(seed_values):
    values = dict(
        seed_values, RetryDelay=0.5, LogDir="logs", IgnoreSmallFile=True, ifVerifyMD5=True, DontAskMeToClean=True
    )
    s = s3_upload.settings_from_values(values)
    assert (s.retry_delay, s.log_dir) == (0.5, "logs")
    assert s.ignore_small_file and s.verify_md5 and s.dont_ask_me_to_clean


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ChunkSize", 5 * MiB),
        ("ChunkSize", 5 * GiB),
        ("MaxRetry", 0),
        ("LoggingLevel", "debug"),
        ("StorageClass", "DEEP_ARCHIVE"),
        ("RetryDelay", 0),
        ("MaxThread", 1),
        ("MaxParallelFile", 1),
        ("MaxThread", 1000),
        ("MaxParallelFile", 1000),
        ("ConnectTimeout", 0.001),
        ("ReadTimeout", 1),
        ("ReadTimeout", 7 * 24 * 3600),
        ("MaxBandwidth", 0),
        ("SQSIdleSeconds", 0.1),
        ("SQSVisibilityTimeout", 1),
        ("SQSVisibilityTimeout", 43200),
    ],
)
def test_settings_boundary_values_are_accepted(seed_values, name, value):
    """One file, one part and 5 MiB parts in flight unless the case says otherwise: 5 GiB in all at most, which fits
    this machine's memory (MaxParallelFile x MaxThread x ChunkSize must)."""
    values = {**seed_values, "MaxThread": 1, "MaxParallelFile": 1, "ChunkSize": 5 * MiB, name: value}
    settings = s3_upload.settings_from_values(values)
    assert getattr(settings, s3_upload.CONFIG_OPTIONS[name][0]) == value  # kept as given, not replaced by a default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JobType", "LOCAL2S3"),
        ("ChunkSize", 5 * MiB - 1),
        ("ChunkSize", 5 * GiB + 1),
        ("ChunkSize", True),  # bool is an int in Python, but not a size
        ("ChunkSize", 50.0 * MiB),
        ("ChunkSize", "50"),
        ("MaxRetry", -1),
        ("MaxThread", 0),
        ("MaxParallelFile", 0),
        ("MaxThread", 1.5),
        ("IgnoreSmallFile", "False"),
        ("ifVerifyMD5", 1),
        ("StorageClass", "COLD"),
        ("LoggingLevel", "LOUD"),
        ("DesBucket", ""),
        ("SrcFileIndex", ""),
        ("S3Prefix", None),
        ("RetryDelay", -1),
        ("RetryDelay", float("nan")),
        ("ReadTimeout", 7 * 24 * 3600 + 1),
        ("MaxThread", 1001),
        ("SrcDir", ""),
        ("SrcDir", "/nonexistent/s3_upload-test-dir"),
    ],
)
def test_settings_bad_values_name_the_option(seed_values, name, value):
    with pytest.raises(s3_upload.UserError) as info:
        s3_upload.settings_from_values(dict(seed_values, **{name: value}))
    assert name in str(info.value)


def test_settings_part_buffers_must_fit_this_machines_memory(seed_values, monkeypatch):
    """MaxParallelFile x MaxThread parts in flight, a ChunkSize buffer each: at most the machine's memory (where the
    system says how much)."""
    monkeypatch.setattr(s3_upload, "physical_memory", lambda: GiB)
    fits = {**seed_values, "ChunkSize": 64 * MiB, "MaxThread": 4, "MaxParallelFile": 4}  # 1 GiB exactly
    assert s3_upload.settings_from_values(fits).max_thread == 4
    said = r"^MaxParallelFile 4 x MaxThread 5 x ChunkSize 67108864 = 1\.2 GiB of part buffers, more than this "
    with pytest.raises(s3_upload.UserError, match=said + r"machine's memory \(1\.0 GiB\); lower one of them$"):
        s3_upload.settings_from_values(dict(fits, MaxThread=5))
    monkeypatch.setattr(s3_upload, "physical_memory", lambda: 0)  # the system does not say: not checked
    assert s3_upload.settings_from_values(dict(fits, MaxThread=5)).max_thread == 5


def test_settings_src_dir_that_is_a_file(seed_values, tmp_path):
    a_file = tmp_path / "one.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(s3_upload.UserError, match="SrcDir .* is a file"):
        s3_upload.settings_from_values(dict(seed_values, SrcDir=str(a_file)))


def test_settings_s3_to_s3_onto_itself_is_refused(seed_values):
    values = dict(seed_values, JobType="S3_TO_S3", SrcBucket="my-cn-bucket", SrcProfileName="cn")
    with pytest.raises(s3_upload.UserError, match="SrcBucket and DesBucket"):
        s3_upload.settings_from_values(values)
    # another profile (another account) with the same bucket name is fine
    assert s3_upload.settings_from_values(dict(values, SrcProfileName="global")).job_type == "S3_TO_S3"


# ----------------------------------------------------------------------------------------------------------------------
# human_bytes
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (50 * MiB, "50.0 MiB"),
        (12 * MiB + 777, "12.0 MiB"),
        (5 * GiB, "5.0 GiB"),
        (3 * TiB, "3.0 TiB"),
        (2048 * TiB, "2048.0 TiB"),  # TiB is the largest unit
        (12.6, "13 B"),  # a rate in bytes per second
    ],
)
def test_human_bytes(n, text):
    assert s3_upload.human_bytes(n) == text


# ----------------------------------------------------------------------------------------------------------------------
# Fakes: an S3 (or SQS) client whose answers a test gives, and which records what was asked
# ----------------------------------------------------------------------------------------------------------------------


class FakeClient:
    """Each operation answers from ``answers[name]``: a dict (returned), an exception (raised), or a callable of the
    request's arguments (its result returned; an exception it returns is raised).  ``calls``: (name, kwargs)."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name: str):
        if name not in self.answers:
            raise AttributeError(name)

        def operation(**kwargs):
            self.calls.append((name, kwargs))
            answer = self.answers[name]
            if callable(answer) and not isinstance(answer, BaseException):
                answer = answer(**kwargs)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return operation

    def asked(self, name: str) -> list[dict]:
        return [kwargs for op, kwargs in self.calls if op == name]


def no_retry() -> s3_upload.RetryPolicy:
    return s3_upload.RetryPolicy(0, 0.0, threading.Event())


# ----------------------------------------------------------------------------------------------------------------------
# What a failure tells the user
# ----------------------------------------------------------------------------------------------------------------------


def test_a_file_deleted_after_listing_fails_saying_it_disappeared(tmp_path):
    source = s3_upload.LocalSource(Settings(des_bucket="b", src_dir=str(tmp_path), s3_prefix="up/"))
    (tmp_path / "gone.bin").write_bytes(b"x" * 100)
    [f] = list(s3_upload.walk_source(source))
    (tmp_path / "gone.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        source.read(f, 0, 100)
    detail = s3_upload.failure_detail(info.value, 30)
    assert detail.endswith("; the file disappeared after it was listed")
    assert not s3_upload.is_retryable(info.value)  # waiting will not bring it back
    with pytest.raises(s3_upload.SourceChanged, match="gone.bin was deleted during the transfer; not completed"):
        source.current(f)  # the check before completing says the same


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_credentials_refused_mid_run_name_the_credentials_file_not_a_retry(code):
    detail = s3_upload.failure_detail(client_error(code, 403, op="UploadPart"), 30)
    assert "the profile's credentials were refused: check its access key and secret in ~/.aws/credentials" in detail
    assert "retries" not in detail


def test_a_listing_without_credentials_is_a_user_error_naming_the_credentials_file():
    with pytest.raises(
        s3_upload.UserError,
        match="no credentials for destination s3://b; set aws_access_key_id/.* in ~/.aws/credentials",
    ):
        s3_upload.check_access(botocore.exceptions.NoCredentialsError(), "destination s3://b")


def test_a_listing_error_check_access_cannot_explain_is_left_to_the_caller():
    """A 500 or a reset at the first listing is no user error: check_access returns and the caller re-raises it (the
    run then stops with exit 1, "rerun to resume"), rather than telling the user to fix a setting."""
    for exc in (client_error("InternalError", 500, op="ListObjectsV2"), ConnectionResetError(104, "reset")):
        assert s3_upload.check_access(exc, "destination s3://b") is None
        assert s3_upload.check_oss_access(exc, "source oss://b") is None


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (client_error("NoSuchBucket", 404, op="ListObjectsV2"),
         "the bucket does not exist; check ali_SrcBucket, and that ali_endpoint is its region's endpoint"),
        (client_error("AccessDenied", 403, op="ListObjectsV2"),
         "AccessDenied; give the RAM user of ali_access_key_id oss:ListObjects and oss:GetObject on ali_SrcBucket"),
        (client_error("PermanentRedirect", 301, op="ListObjectsV2"),
         "PermanentRedirect; give the RAM user .* check that ali_endpoint is the bucket's region"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://img.oss-cn-beijing.aliyuncs.com"),
         "cannot connect; check ali_endpoint and the network"),
        (client_error("InvalidAccessKeyId", 403, op="ListObjectsV2"),
         r"the OSS credentials were refused \(InvalidAccessKeyId\); check ali_access_key_id and ali_access_key_secret"),
    ],
    ids=["NoSuchBucket", "AccessDenied", "PermanentRedirect", "cannot-connect", "credentials"],
)  # fmt: skip
def test_an_oss_source_refused_at_its_listing_names_the_ali_option_to_fix(exc, says):
    with pytest.raises(s3_upload.UserError, match=f"^source oss://img: {says}"):
        s3_upload.check_oss_access(exc, "source oss://img")


# ----------------------------------------------------------------------------------------------------------------------
# LocalSource: listing, reading, and a fleet worker's key -> file
# ----------------------------------------------------------------------------------------------------------------------


def local_source(root, prefix: str = "up/", index: str = "*") -> s3_upload.LocalSource:
    return s3_upload.LocalSource(Settings(des_bucket="b", src_dir=str(root), s3_prefix=prefix, src_file_index=index))


def test_a_fifo_in_srcdir_is_skipped_with_a_warning_not_read_nor_a_listing_error(tmp_path, s3_log):
    (tmp_path / "a.txt").write_bytes(b"a")
    os.mkfifo(tmp_path / "pipe")  # reading it would block the run forever
    source = local_source(tmp_path)
    assert [f.key for f in s3_upload.walk_source(source)] == ["up/a.txt"]
    assert list(source.listing_errors) == []
    assert any("skip" in r.getMessage() and "pipe: not a regular file" in r.getMessage() for r in s3_log.records)


def test_src_file_index_below_a_file_is_one_line_naming_the_reason(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"a")
    with pytest.raises(s3_upload.UserError, match=r"SrcFileIndex 'a.txt/inner': .* cannot be read \(Not a directory\)"):
        list(s3_upload.walk_source(local_source(tmp_path, index="a.txt/inner")))


def test_a_part_is_read_at_its_offset_where_os_has_no_pread(tmp_path, monkeypatch):
    """Windows has no os.pread: the part is read by seek and read, the same bytes."""
    data = os.urandom(3000)
    (tmp_path / "f.bin").write_bytes(data)
    source = local_source(tmp_path)
    [f] = list(s3_upload.walk_source(source))
    monkeypatch.delattr(os, "pread")
    assert source.read(f, 1000, 1500) == data[1000:2500]
    with pytest.raises(s3_upload.SourceChanged, match="shorter than when listed"):
        source.read(f, 2000, 1500)


def test_windows_separators_become_slashes_in_keys_and_back(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(os, "sep", "\\")
        assert s3_upload.key_of_local_name("d\\e\\f.bin") == "d/e/f.bin"
        assert s3_upload.local_name_of_key("d/e/f.bin") == "d\\e\\f.bin"


@pytest.mark.parametrize(
    ("index", "key", "why"),
    [
        ("*", "other/a.txt", "key 'other/a.txt' is not under this job's S3Prefix 'up/'"),
        ("x/a.txt", "up/b.txt", "key 'up/b.txt' is not this job's SrcFileIndex 'x/a.txt'"),
        ("*", "up/x", r".*/x \(key 'up/x'\) is not a regular file"),
        ("*", "up/x/./a.txt", r".*/x/a.txt has the key 'up/x/a.txt' in this job, not 'up/x/./a.txt'"),
        ("*", "up/x//a.txt", r".*/x/a.txt has the key 'up/x/a.txt' in this job, not 'up/x//a.txt'"),
    ],
    ids=["outside-prefix", "not-the-index", "a-directory", "dot-segment", "double-slash"],
)
def test_a_worker_refuses_a_key_this_job_would_not_list(tmp_path, index, key, why):
    """A fleet worker takes only the key of a message, and only a key the job's own listing would give: another
    spelling of a file's key would upload it a second time under that spelling."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_bytes(b"a")
    (tmp_path / "b.txt").write_bytes(b"b")
    source = local_source(tmp_path, index=index)
    assert source.resolve("up/x/a.txt").path == str(tmp_path / "x" / "a.txt")  # the key the listing gives
    with pytest.raises(s3_upload.FileFailed, match=f"^{why}$"):
        source.resolve(key)


def test_a_worker_finds_each_file_by_the_key_the_listing_gives_it(tmp_path):
    """Names whose keys read alike: the literal name "caf‛E9.txt" and b"caf\\xe9.txt" (in other directories, so that
    their keys differ) are each found from their key; both in one directory share a key: the listing refuses both,
    and so does the worker.  A link to a file outside SrcDir is listed and resolved; a file under a link to a
    directory is neither; a key no listing gives (a NUL, a lone surrogate) is refused, not an error of the worker."""
    raw = os.fsencode(str(tmp_path))
    for directory in (b"a", b"b", b"both"):
        os.mkdir(raw + b"/" + directory)
    for name in ("a/caf\u201bE9.txt".encode(), b"b/caf\xe9.txt", "both/caf\u201bE9.txt".encode(), b"both/caf\xe9.txt"):
        with open(raw + b"/" + name, "wb") as fh:
            fh.write(name)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "target.txt").write_bytes(b"t")
    (outside / "dir" / "inner.txt").write_bytes(b"i")
    (tmp_path / "link.txt").symlink_to(outside / "target.txt")
    (tmp_path / "linked").symlink_to(outside / "dir", target_is_directory=True)
    source = local_source(tmp_path)
    listed = {f.key: f.path for f in s3_upload.walk_source(source)}
    assert set(listed) == {"up/a/caf\u201bE9.txt", "up/b/caf\u201bE9.txt", "up/link.txt"}
    for key, path in listed.items():
        assert source.resolve(key).path == path
    with pytest.raises(s3_upload.FileFailed, match=r"would have the same key 'up/both/caf\u201bE9.txt'"):
        source.resolve("up/both/caf\u201bE9.txt")
    with pytest.raises(s3_upload.FileFailed, match=r"under a link to a directory, which the listing does not follow"):
        source.resolve("up/linked/inner.txt")
    for key in ("up/a\x00.txt", "up/caf\udce9.txt"):
        with pytest.raises(s3_upload.FileFailed, match="is no key this job lists"):
            source.resolve(key)


# ----------------------------------------------------------------------------------------------------------------------
# S3Source: reads pinned to the listed version, a worker's key -> object, the source's part layout
# ----------------------------------------------------------------------------------------------------------------------

SRC_ETAG = "0123456789abcdef0123456789abcdef"


def s3_source(client, index: str = "*") -> s3_upload.S3Source:
    settings = Settings(job_type="S3_TO_S3", src_bucket="src", des_bucket="dst", s3_prefix="data/",
                        src_file_index=index)  # fmt: skip
    return s3_upload.S3Source(settings, client, no_retry())


def head_answer(size: int, etag: str = SRC_ETAG, **extra) -> dict:
    import datetime

    return {"ContentLength": size, "ETag": f'"{etag}"',
            "LastModified": datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc), **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("error", "raised", "says"),
    [
        (client_error("PreconditionFailed", 412, op="GetObject"), s3_upload.SourceChanged,
         f"s3://src/data/a.bin changed during the transfer \\(it is no longer version {SRC_ETAG}\\)"),
        (client_error("NoSuchKey", 404, op="GetObject"), s3_upload.SourceChanged,
         "s3://src/data/a.bin was deleted during the transfer; not completed"),
        (client_error("InternalError", 500, op="GetObject"), botocore.exceptions.ClientError, "InternalError"),
    ],
    ids=["replaced", "deleted", "server-error"],
)  # fmt: skip
def test_a_pinned_read_refused_says_the_source_changed_or_is_retried(error, raised, says):
    source = s3_source(FakeClient(get_object=error))
    f = SourceFile("data/a.bin", 100, 0.0, etag=SRC_ETAG, version=SRC_ETAG)
    with pytest.raises(raised, match=says) as info:
        source.read(f, 0, 100)
    assert s3_upload.is_retryable(info.value) is (raised is not s3_upload.SourceChanged)
    [asked] = source.client.asked("get_object")
    assert asked["IfMatch"] == f'"{SRC_ETAG}"' and asked["Range"] == "bytes=0-99"


def test_a_source_object_deleted_before_its_head_is_not_completed():
    source = s3_source(FakeClient(head_object=client_error("404", 404, "Not Found", op="HeadObject")))
    with pytest.raises(s3_upload.SourceChanged, match="s3://src/data/a.bin was deleted during the transfer"):
        source.facts(SourceFile("data/a.bin", 100, 0.0, etag=SRC_ETAG, version=SRC_ETAG))


def test_src_file_index_missing_is_a_user_error_and_a_refused_head_is_left_for_check_access():
    missing = s3_source(FakeClient(head_object=client_error("404", 404, op="HeadObject")), index="a.bin")
    with pytest.raises(s3_upload.UserError, match=r"SrcFileIndex 'a.bin': s3://src/data/a.bin does not exist"):
        list(s3_upload.walk_source(missing))
    denied = client_error("AccessDenied", 403, op="HeadObject")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        list(s3_upload.walk_source(s3_source(FakeClient(head_object=denied), index="a.bin")))
    assert info.value is denied  # list_job's check_access makes it one line, exit 2


def test_a_worker_takes_only_objects_of_this_job_from_the_source():
    exists = FakeClient(head_object=head_answer(7))
    assert s3_source(exists, index="a.bin").resolve("data/a.bin").size == 7
    with pytest.raises(s3_upload.FileFailed, match="^key 'data/b.bin' is not this job's SrcFileIndex 'a.bin'$"):
        s3_source(exists, index="a.bin").resolve("data/b.bin")
    gone = FakeClient(head_object=client_error("404", 404, op="HeadObject"))
    with pytest.raises(s3_upload.FileFailed, match="^s3://src/data/b.bin is not in the source$"):
        s3_source(gone).resolve("data/b.bin")
    denied = client_error("AccessDenied", 403, op="HeadObject")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3_source(FakeClient(head_object=denied)).resolve("data/b.bin")
    assert info.value is denied  # the worker logs it with its fix, and leaves the message for another try


def source_with_parts(sizes: dict[int, int], parts_count: int | None, size: int):
    """A source object of ``size`` bytes whose HeadObject(PartNumber=n) answers sizes[n] (and PartsCount)."""

    def head(**kwargs):
        number = kwargs.get("PartNumber")
        if number is None:
            return head_answer(size, f"{SRC_ETAG}-{len(sizes)}")
        extra = {"PartsCount": parts_count} if parts_count is not None else {}
        return head_answer(sizes[number], **extra)

    client = FakeClient(head_object=head)
    f = SourceFile("data/big.bin", size, 0.0, etag=f"{SRC_ETAG}-{len(sizes)}", version="v")
    return s3_source(client), client, f


def test_a_source_of_many_parts_has_every_part_size_asked():
    """A layout guessed from a few parts can be wrong (issue 17, item 8): every part's size is asked, once."""
    part, count = 5 * MiB, 40
    size = part * (count - 1) + 123
    sizes = {n: part for n in range(1, count)} | {count: 123}
    source, client, f = source_with_parts(sizes, count, size)
    facts = source.facts(f)
    assert (facts.part_size, facts.parts, facts.part_ends) == (part, count, ())
    assert sorted(kw.get("PartNumber") or 0 for kw in client.asked("head_object")) == list(range(count + 1))
    sizes[20], sizes[21] = part + MiB, part - MiB  # the same total, one part longer and the next one shorter
    source, client, f = source_with_parts(sizes, count, size)
    facts = source.facts(f)
    assert facts.part_size == part + MiB and facts.part_ends[19:21] == (20 * part + MiB, 21 * part)


def test_a_source_in_parts_of_several_sizes_has_its_own_layout():
    """The last but one part is short: the layout is kept as the source has it, where each part ends."""
    source, _, f = source_with_parts({1: 5 * MiB, 2: 5 * MiB, 3: 4 * MiB, 4: 2 * MiB}, 4, 16 * MiB)
    facts = source.facts(f)
    assert (facts.part_size, facts.parts, facts.part_ends) == (5 * MiB, 4, (5 * MiB, 10 * MiB, 14 * MiB, 16 * MiB))


@pytest.mark.parametrize(
    ("sizes", "parts_count"),
    [
        ({1: 5 * MiB, 2: 5 * MiB, 3: 5 * MiB, 4: 1 * MiB}, None),  # a store that answers PartNumber without PartsCount
        ({1: 5 * MiB, 2: 5 * MiB, 3: 5 * MiB, 4: 1 * MiB}, 3),  # PartsCount other than the ETag's
    ],
    ids=["no-parts-count", "other-parts-count"],
)
def test_a_source_layout_that_is_not_known_is_not_copied(sizes, parts_count):
    """Copied with its own layout, the copy's ETag must equal the source's; a layout not known would give another
    ETag, so such a source is cut at ChunkSize and proven by part MD5s instead."""
    source, _, f = source_with_parts(sizes, parts_count, 16 * MiB)
    facts = source.facts(f)
    assert (facts.part_size, facts.parts) == (0, 0)


def test_a_source_layout_with_a_part_s3_would_refuse_is_copied_at_chunk_size():
    """A store that took a part under 5 MiB before the last (S3 would refuse to complete such a copy): its layout is
    known, but the copy is cut at ChunkSize and proven by part MD5s."""
    source, _, f = source_with_parts({1: 5 * MiB, 2: 5 * MiB, 3: 4 * MiB, 4: 2 * MiB}, 4, 16 * MiB)
    facts = source.facts(f)
    assert facts.part_ends == (5 * MiB, 10 * MiB, 14 * MiB, 16 * MiB)
    task = s3_upload.FileTask(f, "multipart", s3_upload.plan_chunks(f.size, 5 * MiB))
    shape = s3_upload.shape_of(task, facts, Settings(des_bucket="b", chunk_size=5 * MiB), copies=False)
    assert not shape.same_layout and shape.plan == task.plan and shape.proof == "part MD5s"


def test_a_store_without_head_object_per_part_copies_at_chunk_size():
    def head(**kwargs):
        if "PartNumber" in kwargs:
            raise client_error("InvalidArgument", 400, "partNumber is not supported", op="HeadObject")
        return head_answer(12 * MiB, f"{SRC_ETAG}-3")

    f = SourceFile("data/big.bin", 12 * MiB, 0.0, etag=f"{SRC_ETAG}-3", version="v")
    facts = s3_source(FakeClient(head_object=head)).facts(f)
    assert (facts.part_size, facts.parts) == (0, 0)


# ----------------------------------------------------------------------------------------------------------------------
# Listings of the destination, abort
# ----------------------------------------------------------------------------------------------------------------------


def upload_page(key: str, upload_id: str, next_key: str) -> dict:
    import datetime

    initiated = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    return {"Uploads": [{"Key": key, "UploadId": upload_id, "Initiated": initiated}], "IsTruncated": True,
            "NextKeyMarker": next_key, "NextUploadIdMarker": ""}  # fmt: skip


def test_an_uploads_listing_whose_markers_do_not_advance_ends_instead_of_looping():
    pages = iter([upload_page("up/a", "u1", "up/a"), upload_page("up/a", "u1", "up/a")])

    def list_multipart_uploads(**kwargs):
        return next(pages, AssertionError("asked for the same page a third time"))

    client = FakeClient(list_multipart_uploads=list_multipart_uploads)
    uploads = s3_upload.list_unfinished_uploads(client, "b", "up/", no_retry())
    assert [(u.key, u.upload_id) for u in uploads] == [("up/a", "u1"), ("up/a", "u1")]
    assert [kw.get("KeyMarker") for kw in client.asked("list_multipart_uploads")] == [None, "up/a"]


def uploads_page(keys: list[str], next_key: str = "", encoding: str = "url") -> dict:
    import datetime

    initiated = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    page = {"Uploads": [{"Key": k, "UploadId": f"u{n}", "Initiated": initiated} for n, k in enumerate(keys)],
            "IsTruncated": bool(next_key), "NextKeyMarker": next_key,
            "NextUploadIdMarker": "u9" if next_key else ""}  # fmt: skip
    return dict(page, EncodingType=encoding) if encoding else page


def test_unfinished_uploads_are_listed_url_encoded_and_decoded_once():
    """As AWS encodes keys (a space as '+', '+' as %2B, a control character as %01, '/' as it is), decoded once: the
    next page's KeyMarker is the decoded key (botocore encodes it again in the URL)."""
    encoded = {None: uploads_page(["up/a+b.txt", "up/c%2B%2B.txt"], next_key="up/c%2B%2B.txt"),
               "up/c++.txt": uploads_page(["up/ctl%01.bin", "up/100%25%2541.txt"])}  # fmt: skip
    plain = {None: uploads_page(["up/a b.txt", "up/c++.txt"], next_key="up/c++.txt", encoding=""),
             "up/c++.txt": botocore.parsers.ResponseParserError("not well-formed (invalid token)")}  # fmt: skip

    def list_multipart_uploads(**kwargs):
        return (encoded if kwargs.get("EncodingType") == "url" else plain)[kwargs.get("KeyMarker")]

    client = FakeClient(list_multipart_uploads=list_multipart_uploads)
    uploads = s3_upload.list_unfinished_uploads(client, "b", "up/", no_retry())
    assert [u.key for u in uploads] == ["up/a b.txt", "up/c++.txt", "up/ctl\x01.bin", "up/100%%41.txt"]
    asked = [kw for kw in client.asked("list_multipart_uploads") if kw.get("EncodingType")]
    assert [kw.get("KeyMarker") for kw in asked] == [None, "up/c++.txt"]  # each page once, asked encoded


def test_uploads_of_a_store_that_says_it_encoded_keys_but_did_not_are_taken_as_they_are():
    """SeaweedFS echoes EncodingType=url in this listing but sends the keys as they are.  A key no URL-encoder
    writes (a space, U+FFFD, a letter that is not ASCII) shows it at once; a page that could be either and holds
    '+' or '%' is asked again without encoding: the same keys mean they were not encoded."""
    raw = ["up/a b+c.txt", "up/\u00e9t\u00e9.txt", "up/x\ufffd.bin"]
    client = FakeClient(list_multipart_uploads=uploads_page(raw))
    assert [u.key for u in s3_upload.list_unfinished_uploads(client, "b", "up/", no_retry())] == raw
    assert len(client.asked("list_multipart_uploads")) == 1
    plain = ["up/c++.txt", "up/My%20File.pdf"]

    def as_it_is(**kwargs):
        return uploads_page(plain, encoding="url" if kwargs.get("EncodingType") else "")

    client = FakeClient(list_multipart_uploads=as_it_is)
    assert [u.key for u in s3_upload.list_unfinished_uploads(client, "b", "up/", no_retry())] == plain
    assert [kw.get("EncodingType") for kw in client.asked("list_multipart_uploads")] == ["url", None]
    # A store that encodes answers the plain request otherwise (here: not at all, as an XML parser refuses a control
    # character): its keys are decoded.
    answers = iter([uploads_page(["up/c%2B%2B.txt", "up/a%01"]), botocore.parsers.ResponseParserError("bad XML")])
    client = FakeClient(list_multipart_uploads=lambda **kwargs: next(answers))
    decoded = [u.key for u in s3_upload.list_unfinished_uploads(client, "b", "up/", no_retry())]
    assert decoded == ["up/c++.txt", "up/a\x01"]
    # Without EncodingType in the answer, nothing was encoded.
    client = FakeClient(list_multipart_uploads=uploads_page(["up/c%2B%2B.txt"], encoding=""))
    assert [u.key for u in s3_upload.list_unfinished_uploads(client, "b", "up/", no_retry())] == ["up/c%2B%2B.txt"]


def test_aborting_an_upload_already_gone_is_not_an_error_but_a_refusal_is():
    gone = FakeClient(abort_multipart_upload=client_error("NoSuchUpload", 404, op="AbortMultipartUpload"))
    assert s3_upload.abort_upload(gone, "b", "up/a", "u1", no_retry()) is None
    assert gone.asked("abort_multipart_upload") == [{"Bucket": "b", "Key": "up/a", "UploadId": "u1"}]
    denied = client_error("AccessDenied", 403, op="AbortMultipartUpload")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3_upload.abort_upload(FakeClient(abort_multipart_upload=denied), "b", "up/a", "u1", no_retry())
    assert info.value is denied


def test_an_upload_is_idle_since_its_newest_part_by_s3s_clock():
    """AbandonedAfter counts from the upload's newest part (from its creation when it has none), by the Date of S3's
    answer, not this machine's clock: an upload begun two hours ago that a run added a part to a minute ago is live."""
    import datetime
    import email.utils

    created = 1_800_000_000.0
    now = created + 7200  # S3's clock; this machine's is whatever it is

    def listing(*ages: float) -> dict:
        parts = [{"PartNumber": n, "Size": 5 * MiB, "ETag": '"' + "0" * 32 + '"',
                  "LastModified": datetime.datetime.fromtimestamp(now - age, datetime.timezone.utc)}
                 for n, age in enumerate(ages, 1)]  # fmt: skip
        return {"Parts": parts, "ResponseMetadata": {"HTTPHeaders": {"date": email.utils.formatdate(now, usegmt=True)}}}

    settings = Settings(des_bucket="b", abandoned_after=3600)
    states = {name: s3_upload.read_upload(FakeClient(list_parts=listing(*ages)), "b", "k", "u", created, no_retry())
              for name, ages in {"live": (7000, 60), "idle": (7000, 3700), "empty": ()}.items()}  # fmt: skip
    assert {name: (state.idle, state.abandoned(settings)) for name, state in states.items()} == {
        "live": (60, False), "idle": (3700, True), "empty": (7200, True)}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# How a file goes up: the source's layout, resuming without a marker, a change before completing
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part_size", "parts"),
    [
        (5 * MiB, s3_upload.MAX_PARTS),  # 10,000 parts: no room for the marker part
        (6 * GiB, 2),  # parts larger than S3's 5 GiB
        (1 * MiB, 3),  # parts below S3's 5 MiB (but the last)
    ],
    ids=["10000-parts", "6-GiB-parts", "1-MiB-parts"],
)
def test_a_source_layout_s3_cannot_repeat_is_cut_at_chunk_size_and_proven_by_part_md5s(part_size, parts, s3_log):
    s3_log.set_level(logging.INFO, logger="s3_upload")
    size = part_size * (parts - 1) + 1
    f = SourceFile("data/big.bin", size, 0.0, etag=f"{SRC_ETAG}-{parts}", version="v")
    settings = Settings(job_type="S3_TO_S3", src_bucket="src", des_bucket="dst", chunk_size=8 * MiB)
    task = s3_upload.FileTask(f, "multipart", s3_upload.plan_chunks(size, settings.chunk_size))
    facts = s3_upload.SourceFacts({}, None, part_size, parts)
    shape = s3_upload.shape_of(task, facts, settings, copies=False)
    assert shape.plan == task.plan and not shape.same_layout and shape.proof == s3_upload.PROOF_PARTS
    assert any("outside S3's limits with the marker part" in r.getMessage() for r in s3_log.records)


def test_an_upload_without_marker_copied_by_s3_restarts_since_its_parts_cannot_be_checked():
    plan = s3_upload.ChunkPlan(12 * MiB, 5 * MiB)
    f = SourceFile("data/a.bin", plan.size, 0.0, etag=f"{SRC_ETAG}-3", version="v")
    upload = UnfinishedUpload("data/a.bin", "u1", 0.0)
    client = FakeClient(list_parts={"Parts": [{"PartNumber": 1, "Size": 5 * MiB, "ETag": f'"{MD5_OLD}"'}]})
    source, shape = s3_source(client), s3_upload.Shape(plan, True)
    streamed, parts, _ = s3_upload.examine_upload(client, "dst", f, upload, source, no_retry(), shape, True)
    assert streamed.restart == "" and not streamed.proven and [p.number for p in parts] == [1]  # read back, checked
    copied, _, _ = s3_upload.examine_upload(client, "dst", f, upload, source, no_retry(), shape, can_read_back=False)
    assert copied.restart == "it has no marker, and S3 copies the parts again sooner than they can be checked"


def test_a_file_that_grew_during_the_transfer_is_not_completed_and_says_by_how_much(tmp_path):
    (tmp_path / "log.bin").write_bytes(b"a" * 10)
    settings = Settings(des_bucket="b", src_dir=str(tmp_path), s3_prefix="up/")
    source = local_source(tmp_path)
    [f] = list(s3_upload.walk_source(source))
    engine = s3_upload.Engine(settings, source, None, no_retry(), threading.Event())
    engine._check_unchanged(f)  # unchanged: goes on
    with open(tmp_path / "log.bin", "ab") as fh:
        fh.write(b"b" * 10)  # appended to while its parts went up: the parts read hold the first 10 bytes only
    with pytest.raises(s3_upload.SourceChanged, match=r"log.bin changed during the transfer \(size 10 -> 20\); not"):
        engine._check_unchanged(f)


# ----------------------------------------------------------------------------------------------------------------------
# Retries of a part, the CLEAN prompt
# ----------------------------------------------------------------------------------------------------------------------


def test_retry_policy_stop_during_a_parts_backoff_raises_interrupted():
    """A part's retries also wait on its file's cancel event: Ctrl-C must still end that wait."""
    stop, cancel = threading.Event(), threading.Event()
    policy = s3_upload.RetryPolicy(5, 3600.0, stop)  # an hour's wait, unless the stop ends it

    def request():
        stop.set()
        raise client_error("SlowDown", 503)

    with pytest.raises(s3_upload.Interrupted):
        policy.call("UPLOAD k part 1", request, cancel)
    assert policy.retries == 1 and not cancel.is_set()


def test_clean_prompt_lists_twenty_uploads_and_counts_the_others(s3_log):
    uploads = [UnfinishedUpload(f"up/f{n:02d}", f"id{n}", 0.0) for n in range(25)]
    settings = Settings(des_bucket="b", src_dir=".", dont_ask_me_to_clean=True)
    assert s3_upload.ask_clean(uploads, settings, "up/") is False
    lines = [r.getMessage() for r in s3_log.records]
    assert lines[0] == "25 unfinished multipart upload(s) under s3://b/up/ (CLEAN aborts them all):"
    assert lines[1:21] == [f"  up/f{n:02d} (upload id{n})" for n in range(20)]
    assert lines[21] == "  ... and 5 more (--dry-run --clean lists them all)"


def test_clean_notes_ask_the_source_about_each_key_once_and_a_failure_to_ask_is_no_verdict(s3_log):
    """S3Prefix "data": the source has data/own.bin, not database/x; data/locked it cannot be asked about (the
    HeadObject is refused), which says nothing either way.  The prompt shows each note and counts them."""
    import types

    asked: list[str] = []

    class Source:
        def resolve(self, key: str):
            asked.append(key)
            if key == "database/x":
                raise s3_upload.FileFailed("s3://src/database/x is not in the source")
            if key == "data/locked":
                raise client_error("AccessDenied", 403, "Access Denied", op="HeadObject")
            return SourceFile(key=key, size=1, mtime=0.0)

    uploads = [UnfinishedUpload("data/own.bin", "id1", 0.0), UnfinishedUpload("database/x", "id2", 0.0),
               UnfinishedUpload("data/locked", "id3", 0.0), UnfinishedUpload("database/x", "id4", 0.0)]  # fmt: skip
    notes = s3_upload.source_notes(types.SimpleNamespace(source=Source()), uploads)
    assert sorted(asked) == ["data/locked", "data/own.bin", "database/x"]  # once per key
    assert notes == {"data/own.bin": "", "database/x": "not from this job's source",
                     "data/locked": "could not be checked (AccessDenied (HTTP 403): Access Denied)"}  # fmt: skip
    settings = Settings(des_bucket="b", src_dir=".", dont_ask_me_to_clean=True)
    assert s3_upload.ask_clean(uploads, settings, "data", notes) is False
    assert [r.getMessage() for r in s3_log.records][:5] == [
        "4 unfinished multipart upload(s) under s3://b/data (CLEAN aborts them all, 2 of them not from this job's "
        "source, 1 of them could not be checked against the source):",
        "  data/own.bin (upload id1)",
        "  database/x (upload id2): not from this job's source",
        "  data/locked (upload id3): could not be checked (AccessDenied (HTTP 403): Access Denied)",
        "  database/x (upload id4): not from this job's source",
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Sessions and clients: the "default" profile, ALIOSS_TO_S3's endpoint, timestamps
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_aws_files(tmp_path, monkeypatch):
    """No ~/.aws profiles at all, keys in the environment only (a CI runner, a container with a role)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name in ("config", "credentials"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMTHEENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-the-environment")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


def test_profile_default_without_such_a_profile_uses_the_standard_chain(no_aws_files):
    session = s3_upload.make_session("default")
    assert session.get_credentials().access_key == "AKIAFROMTHEENVIRONMENT"
    with pytest.raises(s3_upload.UserError, match=r"DesProfileName 'cn': no such profile .* \(known: none\)"):
        s3_upload.make_session("cn")  # any other name must exist


def test_alioss_endpoint_without_scheme_is_https_said_once_and_one_client_serves_the_run(no_aws_files, s3_log):
    s3_log.set_level(logging.INFO, logger="s3_upload")
    settings = s3_upload.settings_from_values({
        "JobType": "ALIOSS_TO_S3", "DesBucket": "dst", "ali_SrcBucket": "img", "ali_access_key_id": "LTAIkey",
        "ali_access_key_secret": "ossSecret", "ali_endpoint": "oss-cn-beijing.aliyuncs.com"})  # fmt: skip
    job = s3_upload.open_job(settings, threading.Event())
    client = job.source.client
    assert client.meta.endpoint_url == "https://oss-cn-beijing.aliyuncs.com"
    assert client.meta.region_name == "cn-beijing"
    assert job.endpoints.oss_client() is client  # the same client (and connection pool), not a second one
    said = [r.getMessage() for r in s3_log.records if "has no scheme" in r.getMessage()]
    assert said == [
        "ali_endpoint 'oss-cn-beijing.aliyuncs.com' has no scheme: using https://oss-cn-beijing.aliyuncs.com"
    ]
    assert job.src_what == "source oss://img (ali_endpoint https://oss-cn-beijing.aliyuncs.com)"


@pytest.mark.parametrize("text", ["2026-11-30T5:40:26Z", "2026-11-30T17:40:26.885 Z"])
def test_a_timestamp_the_fast_parser_cannot_read_is_read_by_botocores(text):
    import botocore.utils

    assert s3_upload.parse_timestamp_fast(text) == botocore.utils.parse_timestamp(text)
    assert s3_upload.parse_timestamp_fast("2026-11-30T17:40:26.885Z") == botocore.utils.parse_timestamp(
        "2026-11-30T17:40:26.885Z"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Fleet mode: messages, the queue, the heartbeat
# ----------------------------------------------------------------------------------------------------------------------


ANOTHER_JOB = r"it belongs to another job \(JobType or buckets differ from this worker's config\)"


@pytest.mark.parametrize(
    ("change", "why"),
    [({"v": 3}, "unknown message version 3"), ({"key": ""}, "it names no key"), ({"key": 7}, "it names no key"),
     ({"v": 2, "upload_id": "u", "parts": [0, 3]}, r"its parts \[0, 3\] are not a range of part numbers .*"),
     ({"v": 2, "upload_id": "u", "parts": [5, 4]}, r"its parts \[5, 4\] are not a range .*"),
     ({"v": 2, "upload_id": "u", "parts": [1, 9999]}, r"its parts \[1, 9999\] are not a range .*"),
     ({"v": 2, "upload_id": "u", "parts": [1, True]}, r"its parts \[1, True\] are not a range .*"),
     ({"v": 2, "upload_id": "u", "parts": "1-3"}, r"its parts '1-3' are not a range .*"),
     ({"v": 2, "upload_id": "", "parts": [1, 3]}, "its upload_id is not an upload ID"),
     ({"v": 2, "upload_id": "a\nb", "parts": [1, 3]}, "its upload_id is not an upload ID"),
     ({"v": 2, "parts": [1, 3]}, "'upload_id'"),
     ({"des_bucket": "other"}, ANOTHER_JOB), ({"job_type": "S3_TO_S3"}, ANOTHER_JOB)],
    ids=["version-3", "empty-key", "key-not-a-string", "part-0", "range-backwards", "marker-part", "bool-part",
         "range-as-text", "empty-upload-id", "upload-id-with-newline", "range-without-upload-id", "another-destination",
         "another-job-type"],
)  # fmt: skip
def test_a_message_this_worker_cannot_serve_is_poison_not_a_file(change, why):
    import json

    settings = Settings(des_bucket="dst", src_dir=".")
    body = {"v": 1, "job_type": "LOCAL_TO_S3", "src_bucket": "", "des_bucket": "dst", "key": "up/a.txt"}
    assert s3_upload.parse_message(settings, json.dumps(body)).key == "up/a.txt"
    with pytest.raises(s3_upload.FileFailed, match=f"^unusable message: {why}$"):
        s3_upload.parse_message(settings, json.dumps(body | change))


def test_a_range_message_names_its_upload_and_parts():
    import json

    settings = Settings(des_bucket="dst", src_dir=".")
    body = {"v": 2, "job_type": "LOCAL_TO_S3", "src_bucket": "", "des_bucket": "dst", "key": "up/a.txt",
            "upload_id": "abc", "parts": [65, 128], "part_count": 300}  # fmt: skip
    assert s3_upload.parse_message(settings, json.dumps(body)) == ("up/a.txt", "abc", (65, 128))
    f = s3_upload.SourceFile("up/a.txt", 300 * 5 * MiB, 0.0, path="a.txt")
    ranges = [m["parts"] for m in s3_upload.range_messages(Settings(sqs_parts_per_message=128), f, "abc", 300)]
    assert ranges == [[1, 128], [129, 256], [257, 300]]


def queue_job(sqs) -> object:
    import types

    called = []

    def sqs_client():
        called.append(True)
        return sqs

    return types.SimpleNamespace(endpoints=types.SimpleNamespace(sqs_client=sqs_client), retry=no_retry(),
                                 called=called)  # fmt: skip


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (client_error("AccessDenied", 403, op="GetQueueAttributes"),
         "AccessDenied; give the SQS profile \\(SQSProfileName\\) access to it"),
        (client_error("SignatureDoesNotMatch", 403, op="GetQueueAttributes"),
         "SignatureDoesNotMatch; give the SQS profile \\(SQSProfileName\\) access to it"),
        # What SQS answers an access key it does not know: over its query protocol, and over its JSON protocol.
        (client_error("InvalidClientTokenId", 403, op="GetQueueAttributes"),
         "InvalidClientTokenId; give the SQS profile \\(SQSProfileName\\) access to it"),
        (client_error("UnrecognizedClientException", 400, op="GetQueueAttributes"),
         "UnrecognizedClientException; give the SQS profile \\(SQSProfileName\\) access to it"),
        (client_error("AWS.SimpleQueueService.NonExistentQueue", 400, op="GetQueueAttributes"),
         "does not exist; create it \\(see README\\) or fix the URL"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://sqs.example"),
         "cannot connect; check the URL and SQSEndpointURL"),
    ],
    ids=["denied", "credentials", "unknown-key-query", "unknown-key-json", "missing", "unreachable"],
)  # fmt: skip
def test_a_queue_that_cannot_be_used_is_one_line_before_any_work(error, says):
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/files"
    with pytest.raises(s3_upload.UserError, match=f"^queue {url}:? {says}"):
        s3_upload.open_queue(queue_job(FakeClient(get_queue_attributes=error)), url)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (client_error("403", 403, op="GetQueueAttributes"), "answered HTTP 403"),  # an S3 store's XML, unreadable
        (client_error("InvalidAction", 400, op="GetQueueAttributes"), "answered InvalidAction \\(HTTP 400\\)"),
        (botocore.parsers.ResponseParserError("Unable to parse response"), "answered something botocore cannot read"),
        ({"ResponseMetadata": {"HTTPStatusCode": 200}}, "answered without the queue's attributes"),
    ],
    ids=["s3-xml", "unknown-action", "unparsable", "no-attributes"],
)  # fmt: skip
def test_an_endpoint_that_does_not_answer_as_sqs_is_one_line_naming_the_options(answer, says):
    """Not the queue's endpoint (an S3 store, a web server): one line before any work, never "queued" into nowhere."""
    import types

    url = "http://127.0.0.1:8333/123456789012/files"
    sqs = FakeClient(get_queue_attributes=answer)
    sqs.meta = types.SimpleNamespace(endpoint_url="http://127.0.0.1:8333")
    with pytest.raises(s3_upload.UserError, match=f"^queue {url}: http://127.0.0.1:8333 {says}, which is not SQS's "
                                                  f"answer; set SQSEndpointURL .*, or SQSProfileName "):  # fmt: skip
        s3_upload.open_queue(queue_job(sqs), url)


def test_a_queue_url_without_scheme_is_refused_before_any_request():
    job = queue_job(FakeClient())
    with pytest.raises(s3_upload.UserError, match="queue URL 'sqs.eu-west-1.amazonaws.com/1/files' must start with"):
        s3_upload.open_queue(job, "sqs.eu-west-1.amazonaws.com/1/files")
    assert job.called == []


def test_a_heartbeat_stops_once_its_message_was_handed_on(s3_log):
    """ReceiptHandleIsInvalid: SQS gave the message to another worker (or the dead-letter queue); beating on would
    only fail again every few seconds until the file is done."""
    sqs = FakeClient(
        change_message_visibility=client_error("ReceiptHandleIsInvalid", 400, op="ChangeMessageVisibility")
    )
    with s3_upload.Heartbeat(sqs, "https://sqs/q", "receipt", 1, no_retry()) as beat:
        beat._thread.join(timeout=60)  # ends by itself: without the stop it would beat until the with block ends
        assert not beat._thread.is_alive()
    assert len(sqs.asked("change_message_visibility")) == 1
    assert "SQS heartbeat failed: ReceiptHandleIsInvalid" in s3_log.records[0].getMessage()


# ----------------------------------------------------------------------------------------------------------------------
# The console and the command line
# ----------------------------------------------------------------------------------------------------------------------


def test_a_bar_with_nothing_to_send_is_never_drawn(capsys):
    """A rerun that skips every file shows no empty bar at 0 %."""
    progress = s3_upload.BarProgress()
    f = SourceFile("up/a", 10, 0.0)
    progress.begin([s3_upload.FileTask(f, "skip", s3_upload.ChunkPlan(10, 5 * MiB), reason="already there")])
    progress.close()
    assert progress.bar is None and s3_upload._active_bar is None
    assert capsys.readouterr().err == ""


def test_report_path_that_is_a_directory_is_refused_with_a_file_name_to_use(tmp_path):
    with pytest.raises(s3_upload.UserError, match=f"^--report {tmp_path} is a directory; give a file name, e.g. "
                                                  f"{tmp_path / 'report.json'}$"):  # fmt: skip
        s3_upload.check_report_path(str(tmp_path))


def test_without_config_the_one_beside_the_script_is_used_else_the_current_directorys(tmp_path, monkeypatch):
    beside = os.path.join(os.path.dirname(os.path.abspath(s3_upload.__file__)), "s3_upload_config.py")
    assert os.path.isfile(beside)  # the sample shipped beside s3_upload.py (the original's layout)
    assert s3_upload.default_config_path() == beside
    # The installed s3-upload command: nothing beside the module in site-packages, so the current directory's.
    monkeypatch.setattr(s3_upload, "__file__", str(tmp_path / "site-packages" / "s3_upload.py"))
    monkeypatch.chdir(tmp_path)
    assert s3_upload.default_config_path() == str(tmp_path / "s3_upload_config.py")


def test_chunk_plan_of_an_explicit_layout_keeps_each_part_where_the_source_has_it():
    plan = s3_upload.ChunkPlan(20, 8, ends=(6, 14, 20))
    assert plan.part_count == 3
    assert list(plan.parts()) == [(1, 0, 6), (2, 6, 8), (3, 14, 6)]
    # The marker names the layout: another one with the same size and largest part is another layout.
    other = s3_upload.ChunkPlan(20, 8, ends=(8, 14, 20))
    assert s3_upload.marker_body("id", plan) != s3_upload.marker_body("id", other)
