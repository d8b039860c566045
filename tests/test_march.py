"""The plan as it streams: both sides walked directory by directory (March), each directory's files matched in lock step
with the destination's listing (LockStep), ListObjectsV2 pages parsed by the lean parser.  Keys whose order differs
between stores ('a-b', 'a.b', 'a/b'), unicode, names that are not UTF-8, XML-escaped and URL-encoded keys, and keys
that differ only after 1,024 bytes; then a real run over a few thousand objects with the destination half full."""

from __future__ import annotations

import os
import pathlib

import botocore.config
import pytest

import s3_upload
from conftest import DST_KEYS, MiB, list_keys, modified_earlier, new_bucket, object_md5, remove_bucket, run_tool
from s3_upload import Settings, SourceFile

# Names whose order a careless walk gets wrong: '-' (0x2D) and '.' (0x2E) sort before '/' (0x2F), so the files 'a-b'
# and 'a.b' come before anything under the directory 'a'; unicode sorts by its UTF-8 bytes (code points); a long
# common start.
TRICKY_NAMES = ["a-b", "a.b", "a b", "ab", "a", "Z", "é.txt", "日本.txt", "x" * 200 + "a", "x" * 200 + "b",
                "q&a <1>.txt", "100%+plus.txt", "tab\there"]  # fmt: skip


def local_source(root: pathlib.Path, prefix: str = "up/") -> s3_upload.LocalSource:
    return s3_upload.LocalSource(Settings(des_bucket="b", src_dir=str(root), s3_prefix=prefix))


def test_a_local_directory_lists_its_files_in_the_order_s3_lists_their_keys(tmp_path):
    for name in TRICKY_NAMES:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a-dir").mkdir()
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9"  # not UTF-8: its key is caf‛E9
    open(raw, "wb").close()
    source = local_source(tmp_path)
    items = list(source.list_dir(source.top()))
    dirs = [i for i in items if isinstance(i, tuple)]
    files = [i for i in items if isinstance(i, SourceFile)]
    assert dirs == [(str(tmp_path / "a-dir"), "up/a-dir/")]
    keys = [f.key for f in files]
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))  # S3's order: UTF-8 bytes
    assert "up/caf\u201bE9" in keys and len(keys) == len(TRICKY_NAMES) + 1


def test_lock_step_matches_each_key_and_only_its_key():
    names = sorted(TRICKY_NAMES, key=lambda n: n.encode())
    files = [SourceFile(f"p/{n}", 1, 0.0) for n in names]
    there = [(f"p/{n}", 1, "e", 0.0) for n in names[::2]]  # every other file is at the destination
    there.insert(1, ("p/" + names[0] + "-only-there", 1, "e", 0.0))  # an object the source does not have
    matched = dict((f.key, o) for f, o in s3_upload.match_sorted(files, there))
    assert all((matched[f"p/{n}"] is not None) == (i % 2 == 0) for i, n in enumerate(names))
    assert all(o is None or o[0] == k for k, o in matched.items())


def test_lock_step_keys_that_differ_after_1024_bytes():
    long = "k" * 1500
    files = [SourceFile(long + "a", 1, 0.0), SourceFile(long + "b", 1, 0.0)]
    matched = list(s3_upload.match_sorted(files, [(long + "b", 1, "e", 0.0)]))
    assert [o is not None for _, o in matched] == [False, True]


# ----------------------------------------------------------------------------------------------------------------------
# The lean ListObjectsV2 parser against real answers
# ----------------------------------------------------------------------------------------------------------------------

PARSER_KEYS = [*(f"d/{n}" for n in TRICKY_NAMES), "d/sub/x", "d/control\x01char", "d/new\nline", "d/ü+ü"]


def raw_and_parsed(client, bucket: str, **kwargs) -> tuple[s3_upload.ListPage, dict]:
    """One ListObjectsV2 answer parsed by the lean parser (the body taken as the tool takes it) and by botocore."""
    s3_upload.take_raw_listings(client)
    retry = s3_upload.RetryPolicy(0, 0, s3_upload.threading.Event())
    page = s3_upload.list_page(client, bucket, kwargs.pop("Prefix", ""), retry, kwargs.pop("token", ""),
                               kwargs.pop("Delimiter", ""), page_size=kwargs.pop("MaxKeys", 1000))  # fmt: skip
    client.meta.events.unregister("before-parse.s3.*", s3_upload.keep_raw_listing)
    return page, kwargs


@pytest.fixture(params=["seaweed", "moto"])
def store(request, dst_server, moto_url):
    if request.param == "seaweed":
        client = dst_server.client(*DST_KEYS)
    else:
        import boto3

        client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing",
                              config=botocore.config.Config(s3={"addressing_style": "path"}))  # fmt: skip
    bucket = new_bucket(client)
    # SeaweedFS lists \x01 back as U+FFFD; moto refuses a key with a newline.
    keys = [
        k
        for k in PARSER_KEYS
        if ("\x01" not in k or request.param == "moto") and ("\n" not in k or request.param == "seaweed")
    ]
    for n, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * n)
    yield client, bucket, keys
    remove_bucket(client, bucket)


def test_the_lean_parser_reads_real_answers_as_botocore_does(store):
    client, bucket, keys = store
    plain = botocore_pages(client, bucket)
    lean, token = [], ""
    while True:  # pages of 5: truncated pages and continuation tokens
        page, _ = raw_and_parsed(client, bucket, MaxKeys=5, token=token)
        lean += page.objects
        if not page.truncated:
            break
        token = page.token
    assert [o[0] for o in lean] == [o["Key"] for o in plain]
    assert sorted(o[0] for o in lean) == sorted(keys)
    assert [(o[1], o[2], o[3]) for o in lean] == [(o["Size"], o["ETag"].strip('"'), o["LastModified"].timestamp())
                                                  for o in plain]  # fmt: skip
    empty, _ = raw_and_parsed(client, bucket, Prefix="nothing-here/")
    assert empty.objects == [] and empty.prefixes == [] and not empty.truncated
    folders, _ = raw_and_parsed(client, bucket, Prefix="d/", Delimiter="/")
    assert folders.prefixes == ["d/sub/"] and "d/sub/x" not in [o[0] for o in folders.objects]


def botocore_pages(client, bucket: str) -> list[dict]:
    return [o for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents",
            [])]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# A real run: a few thousand objects, the destination half full
# ----------------------------------------------------------------------------------------------------------------------


def test_a_tree_of_thousands_of_files_with_the_destination_half_full(dst, bucket, src_dir, make_config):
    """2,400 files in 24 directories (names whose order differs between stores among them), half of them already at
    the destination: only the other half is sent, each object is the file's bytes, and the final comparison finds
    every file."""
    files = {}
    for d in range(24):
        directory = src_dir / (f"d{d:02d}" if d % 3 else f"d{d:02d}-x") / ("a.b" if d % 2 else "a")
        directory.mkdir(parents=True)
        for n in range(100):
            name = f"{TRICKY_NAMES[n % len(TRICKY_NAMES)][:40]}{n:03d}"
            body = f"{d}/{n}".encode()
            (directory / name).write_bytes(body)
            files[(directory / name).relative_to(src_dir).as_posix()] = body
    for i, (relative, body) in enumerate(sorted(files.items())):
        if i % 2:
            dst.put_object(Bucket=bucket, Key="up/" + relative, Body=body)
            modified_earlier(src_dir / relative)
    run = run_tool(make_config(MaxParallelFile=8, MaxThread=4), timeout=600)
    assert run.code == 0, run
    half = sum(len(b) for i, (_, b) in enumerate(sorted(files.items())) if not i % 2)
    assert run.bytes_sent == half
    assert "All source files are in destination" in run.stdout
    assert f"{len(files) // 2} uploaded, {len(files) // 2} skipped, 0 failed" in run.stdout
    listed = list_keys(dst, bucket, "up/")
    assert sorted(listed) == sorted("up/" + k for k in files)
    for relative in list(files)[::97]:
        assert object_md5(dst, bucket, "up/" + relative) == s3_upload.hashlib.md5(files[relative]).hexdigest()


def test_a_directory_of_the_source_with_only_subdirectories_is_walked(dst, bucket, src_dir, make_config):
    (src_dir / "only" / "deeper" / "deepest").mkdir(parents=True)
    (src_dir / "only" / "deeper" / "deepest" / "f.bin").write_bytes(os.urandom(MiB))
    run = run_tool(make_config())
    assert run.code == 0, run
    assert list(list_keys(dst, bucket)) == ["up/only/deeper/deepest/f.bin"]


def test_the_lean_parser_reads_fields_in_any_order_and_decodes_each_key_once():
    """The usual order (Key, LastModified, ETag, Size) is read by one pattern; an answer with another order by the
    general one; XML entities, then the URL encoding (a '+' is a space, as S3 writes it), each resolved once."""
    in_order = (b"<Contents><Key>q%26x%2Bplus+space</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                b"<ETag>&quot;e1&quot;</ETag><ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><Size>7</Size>"
                b"</Contents>")  # fmt: skip
    other = (b"<Contents><Size>9</Size><Key>%25literal</Key><ETag>\"e2-3\"</ETag>"
             b"<LastModified>2026-01-01T00:00:01.000Z</LastModified></Contents>")  # fmt: skip
    for contents, count in ((in_order, 1), (in_order + other, 2)):
        body = (b"<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>" + contents +
                b"<NextContinuationToken>t&amp;1</NextContinuationToken></ListBucketResult>")  # fmt: skip
        page = s3_upload.parse_list_page(body)
        assert page.truncated and page.token == "t&1"
        assert page.objects[0] == ("q&x+plus space", 7, "e1", 1767225600.0)
        assert len(page.objects) == count
    assert page.objects[1] == ("%literal", 9, "e2-3", 1767225601.0)
    plain = s3_upload.parse_list_page(b"<ListBucketResult><Contents><Key>a&amp;b+c%20</Key><LastModified>"
                                      b"2026-01-01T00:00:00.000Z</LastModified><ETag>x</ETag><Size>1</Size>"
                                      b"</Contents></ListBucketResult>")  # fmt: skip
    assert plain.objects[0][0] == "a&b+c%20" and not plain.truncated  # not URL-encoded: taken as it is
