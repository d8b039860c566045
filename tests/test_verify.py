"""ifVerifyMD5: the source is read again after the upload and its ETag compared with S3's.  A difference is S3's fault
only while the source is still the version that was sent: good data is never deleted because the source moved."""

from __future__ import annotations

import mmap

import pytest

import s3_upload
from conftest import (
    DST_KEYS,
    MiB,
    in_process_logging,
    is_probe,
    list_keys,
    md5_file,
    object_md5,
    run_tool,
    unfinished_uploads,
    write_file,
)
from faultproxy import FaultProxy

CHUNK = 5 * MiB


@pytest.mark.parametrize("verify", [True, False], ids=["ifVerifyMD5", "no-verify"])
@pytest.mark.parametrize(("size", "operation"), [(2 * CHUNK + 5, "CompleteMultipartUpload"), (1000, "PutObject")])
def test_a_file_changed_while_its_object_is_completed_is_sent_again(dst, bucket, src_dir, make_config, aws_profiles,
                                                                   dst_server, size, operation, verify):  # fmt: skip
    """The file is rewritten (same size) while its last request is on the way, after the check that it is unchanged:
    S3 completes the object with the version listed, and stamps it later than the change, so a later run would take
    it for this file by its size and time.  The tool looks at the file again once the object is made, and sends the
    new version at once; nothing is ever deleted."""
    path = src_dir / "f.bin"
    write_file(path, size)
    changed = []

    def rewrite_the_file(request) -> bool:
        if request.operation == operation and not changed and not is_probe(request):
            write_file(path, size)  # other bytes, the same size
            changed.append(True)
        return False  # no fault: only the moment

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=rewrite_the_file)
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched", ifVerifyMD5=verify))
        deletes = [r for r in proxy.history if r.operation == "DeleteObject"]
    assert changed
    assert run.code == 0, run
    assert "changed while its object was being completed: sending the new version" in run.stderr
    assert deletes == [] and "deleting it" not in run.output
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


@pytest.mark.parametrize(("size", "operation"), [(2 * CHUNK + 5, "CompleteMultipartUpload"), (1000, "PutObject")])
def test_a_file_that_grows_while_its_object_is_completed_fails_and_the_next_run_sends_it(dst, bucket, src_dir,
                                                                                         make_config, aws_profiles,
                                                                                         dst_server, size,
                                                                                         operation):  # fmt: skip
    """The file grows while its last request is on the way: the object made holds the version listed, which is no
    longer the file; it cannot be sent again in this run (another size, another plan), so the file fails, named
    (exit 1), the object is left (nothing deleted), and the next run replaces it with the new version."""
    path = src_dir / "f.bin"
    write_file(path, size)
    changed = []

    def grow_the_file(request) -> bool:
        if request.operation == operation and not changed and not is_probe(request):
            with open(path, "ab") as fh:
                fh.write(b"more")
            changed.append(True)
        return False

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=grow_the_file)
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched"))
        deletes = [r for r in proxy.history if r.operation == "DeleteObject"]
    assert changed
    assert run.code == 1, run
    assert "changed while its object was being completed; the object holds the version listed" in run.output, run
    assert deletes == [] and list_keys(dst, bucket) == {"up/f.bin": size}
    again = run_tool(make_config())
    assert again.code == 0, again
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_a_file_changed_while_verify_reads_it_keeps_its_object(dst, bucket, src_dir, make_config, monkeypatch,
                                                              capsys, request):  # fmt: skip
    """ifVerifyMD5 reads the file again and finds other bytes, but the file moved, not S3: the file fails (rerun to
    send the new version) and the object, which holds the version listed and sent, stays.  The next run sends the
    new version: modified after the object was written, with another mtime than the one recorded with it."""
    path = src_dir / "f.bin"
    write_file(path, 2 * CHUNK + 5)
    sent = md5_file(path)
    real_verify = s3_upload.verify_by_reread

    def rewrite_then_verify(self, f, shape, result):
        write_file(path, 2 * CHUNK + 5)  # other bytes, the same size, just as verify begins
        return real_verify(self, f, shape, result)

    monkeypatch.setattr(s3_upload, "verify_by_reread", rewrite_then_verify)
    in_process_logging(monkeypatch, request)
    code = s3_upload.main(["--config", str(make_config(ifVerifyMD5=True))])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "changed after it was uploaded" in out and "deleting it" not in err
    assert object_md5(dst, bucket, "up/f.bin") == sent  # the version listed and sent, kept
    assert unfinished_uploads(dst, bucket) == []
    monkeypatch.setattr(s3_upload, "verify_by_reread", real_verify)
    again = run_tool(make_config())
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
            run = run_tool(make_config(DesProfileName="watched", MaxThread=1, MaxParallelFile=1, ifVerifyMD5=True))
        mapped.flush()
    assert written
    if run.code == 0:
        assert "deleting it and uploading again" in run.stderr, run
        assert object_md5(dst, bucket, "up/mapped.bin") == md5_file(path)
    else:  # the write showed in the file's times after all: never completed
        assert "changed during the transfer" in run.stdout, run
        assert list_keys(dst, bucket) == {}
    assert unfinished_uploads(dst, bucket) == []
