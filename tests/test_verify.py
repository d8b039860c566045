"""ifVerifyMD5: the source is read again after the upload and its ETag compared with S3's.  A difference is S3's fault
only while the source is still the version that was sent: good data is never deleted because the source moved."""

from __future__ import annotations

import mmap

import pytest

from conftest import (
    DST_KEYS,
    MiB,
    list_keys,
    md5_file,
    object_md5,
    run_tool,
    unfinished_uploads,
    write_file,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB


@pytest.mark.parametrize(("size", "operation"), [(2 * CHUNK + 5, "CompleteMultipartUpload"), (1000, "PutObject")])
def test_a_file_changed_after_its_upload_keeps_its_object(dst, bucket, src_dir, make_config, aws_profiles, dst_server,
                                                          size, operation):  # fmt: skip
    """The file is rewritten while its last request is on the way (after the check that it is unchanged): the object
    holds the version that was listed and sent.  The re-read sees other bytes, but the file moved, not S3: the file
    fails (rerun to send the new version) and the object stays, never deleted."""
    path = src_dir / "f.bin"
    write_file(path, size)
    sent = md5_file(path)
    changed = []

    def rewrite_the_file(request) -> bool:
        if request.operation == operation and not changed:
            write_file(path, size)  # other bytes, the same size
            changed.append(True)
        return False  # no fault: only the moment

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=rewrite_the_file)
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched", ifVerifyMD5=True))
        deletes = [r for r in proxy.history if r.operation == "DeleteObject"]
    assert changed
    assert run.code == 1, run
    assert deletes == [] and "deleting it" not in run.output
    assert object_md5(dst, bucket, "up/f.bin") == sent  # the version listed and sent, kept
    assert "changed after it was uploaded" in run.stdout, run
    assert unfinished_uploads(dst, bucket) == []
    again = run_tool(make_config())  # modified after the object was written: sent again
    assert again.code == 0, again
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)


def test_a_write_through_a_shared_memory_map_is_caught_by_verify(dst, bucket, src_dir, make_config, aws_profiles,
                                                                 dst_server):  # fmt: skip
    """A program that keeps a file mapped writes into a page it dirtied before: the kernel updates no mtime or ctime
    for that write (only the first write to a clean page does), so the checks by size, mtime, ctime and inode cannot
    see it.  Here it lands in part 1 after part 1 was sent.  ifVerifyMD5 reads the file again, finds other bytes
    while the file looks unchanged, and sends it again: the object ends as the file is.  (Had the kernel written
    the page back in between, the write would show in the mtime, and the file would fail unfinished instead.)"""
    path = src_dir / "mapped.bin"
    write_file(path, 3 * CHUNK)
    written = []
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mapped:
        mapped[0:1] = b"\x00"  # dirty the first page before the listing: its mtime moves now, not later

        def write_into_part_1(request) -> bool:
            if request.operation == "UploadPart" and request.part_number == 2 and not written:
                mapped[1:4097] = bytes(4096)  # part 1 is on its way already
                written.append(True)
            return False

        with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
            proxy.set(match=write_into_part_1)
            aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
            run = run_tool(make_config(DesProfileName="watched", MaxThread=1, ifVerifyMD5=True))
        mapped.flush()
    assert written
    if run.code == 0:
        assert "deleting it and uploading again" in run.stderr, run
        assert object_md5(dst, bucket, "up/mapped.bin") == md5_file(path)
    else:  # the write showed in the file's times after all: never completed
        assert "changed during the transfer" in run.stdout, run
        assert list_keys(dst, bucket) == {}
    assert unfinished_uploads(dst, bucket) == []
