"""LOCAL_TO_S3 against a real SeaweedFS: every test downloads what was uploaded and compares MD5s."""

from __future__ import annotations

import hashlib

import s3_upload
from conftest import (
    MiB,
    assert_tree_uploaded,
    list_keys,
    md5_file,
    object_md5,
    run_tool,
    unfinished_uploads,
    write_file,
)


def test_directory_tree_nested_unicode_zero_byte_small_and_exact_multiples(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 12 * MiB + 777)  # 3 parts, the last one short
    write_file(src_dir / "exact" / "two-chunks.bin", 10 * MiB)  # an exact multiple of ChunkSize
    write_file(src_dir / "exact" / "one-chunk.bin", 5 * MiB)  # exactly ChunkSize: one part
    write_file(src_dir / "a" / "b" / "c" / "深层 文件 ü.txt", 1234)
    write_file(src_dir / "small.txt", 5 * MiB - 1)  # one byte under a chunk: one PutObject
    write_file(src_dir / "empty.dat", 0)
    run = run_tool(make_config())
    assert run.code == 0, run
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 6
    assert list_keys(dst, bucket)["up/empty.dat"] == 0
    assert "All source files are in destination" in run.stdout
    assert "6 uploaded, 0 skipped, 0 failed" in run.stdout
    assert run.bytes_sent == sum(p.stat().st_size for p in src_dir.rglob("*") if p.is_file())
    assert unfinished_uploads(dst, bucket) == []
    # The multipart object's ETag is S3's: MD5 of the part MD5s, "-3".
    data = (src_dir / "big.bin").read_bytes()
    parts = [hashlib.md5(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)]
    etag = dst.head_object(Bucket=bucket, Key="up/big.bin")["ETag"].strip('"')
    assert etag == s3_upload.multipart_etag(parts) == hashlib.md5(b"".join(parts)).hexdigest() + "-3"
    # A log file was written next to the run.
    logs = list((src_dir.parent / "log").glob("s3_upload-*.log"))
    assert logs and "finish up/big.bin" in logs[0].read_text()


def test_rerun_of_a_finished_job_transfers_nothing(dst, bucket, src_dir, make_config):
    write_file(src_dir / "one.bin", 6 * MiB)
    write_file(src_dir / "two.txt", 100)
    config = make_config()
    assert run_tool(config).code == 0
    again = run_tool(config)
    assert again.code == 0, again
    assert again.bytes_sent == 0
    assert "0 uploaded, 2 skipped, 0 failed" in again.stdout
    skips = [line for line in again.stdout.splitlines() if line.startswith("  skipped: ")]
    assert sum(int(line.split()[1]) for line in skips) == 2, skips  # counted by how each was decided, not per file
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2


def test_single_file_by_name_and_prefix_without_slash(dst, bucket, src_dir, make_config):
    write_file(src_dir / "wanted.bin", 7 * MiB)
    write_file(src_dir / "other.bin", 100)
    write_file(src_dir / "sub" / "inner.txt", 50)
    run = run_tool(make_config(SrcFileIndex="wanted.bin", S3Prefix="backup"))
    assert run.code == 0, run
    assert list_keys(dst, bucket) == {"backup/wanted.bin": 7 * MiB}
    assert object_md5(dst, bucket, "backup/wanted.bin") == md5_file(src_dir / "wanted.bin")
    # A relative path inside SrcDir names one file in a subdirectory.
    run = run_tool(make_config(SrcFileIndex="sub/inner.txt", S3Prefix=""))
    assert run.code == 0, run
    assert object_md5(dst, bucket, "sub/inner.txt") == md5_file(src_dir / "sub/inner.txt")


def test_ignore_small_file_skips_files_under_one_chunk(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 6 * MiB)
    write_file(src_dir / "tiny.txt", 10)
    write_file(src_dir / "empty.dat", 0)
    run = run_tool(make_config(IgnoreSmallFile=True))
    assert run.code == 0, run
    assert list_keys(dst, bucket) == {"up/big.bin": 6 * MiB}
    assert "IgnoreSmallFile" in run.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(src_dir / "big.bin")


def test_storage_class_and_verify_md5_applied(dst, bucket, src_dir, make_config):
    write_file(src_dir / "big.bin", 11 * MiB)
    write_file(src_dir / "small.txt", 2000)
    run = run_tool(make_config(StorageClass="STANDARD_IA", ifVerifyMD5=True))
    assert run.code == 0, run
    assert run.stderr.count("re-read ETag") == 2
    for key in ("up/big.bin", "up/small.txt"):
        assert dst.head_object(Bucket=bucket, Key=key).get("StorageClass") == "STANDARD_IA"
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2


def test_many_small_files_more_than_one_listing_page(dst, bucket, src_dir, make_config):
    """1,100 files: the destination listing needs two pages (1,000 keys each) on the rerun."""
    for i in range(1100):
        (src_dir / f"d{i % 7}" / f"f{i:04d}.txt").parent.mkdir(exist_ok=True)
        (src_dir / f"d{i % 7}" / f"f{i:04d}.txt").write_bytes(b"%d" % i * (i % 50))
    config = make_config(MaxParallelFile=16)
    run = run_tool(config)
    assert run.code == 0, run
    assert len(list_keys(dst, bucket)) == 1100
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 1100
    again = run_tool(config)
    assert again.code == 0 and "0 uploaded, 1100 skipped" in again.stdout, again


def test_links_to_directories_are_reported_not_followed_and_index_stays_inside(dst, bucket, src_dir, make_config,
                                                                                tmp_path):  # fmt: skip
    outside = tmp_path / "outside"
    write_file(outside / "secret.txt", 10)
    write_file(src_dir / "real.txt", 20)
    (src_dir / "linked").symlink_to(outside, target_is_directory=True)
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "a link to a directory is not followed" in run.stderr  # never a silent skip
    assert list_keys(dst, bucket) == {"up/real.txt": 20}
    assert object_md5(dst, bucket, "up/real.txt") == md5_file(src_dir / "real.txt")
    escape = run_tool(make_config(SrcFileIndex="../outside/secret.txt"))
    assert escape.code == 2 and "points outside SrcDir" in escape.stderr, escape
