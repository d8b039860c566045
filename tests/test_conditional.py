"""Writes that never clobber someone else's object (issue 20, item 4): the object is made with If-None-Match: * when
the plan saw no object at the key, and with If-Match: <the ETag it saw> when it replaces one.  An object another
client writes between the plan and the write is never overwritten: that file is a conflict (named, exit 1, nothing
deleted, its upload left to resume).

Facts of the servers (seen here): SeaweedFS 4.48 answers PutObject and CompleteMultipartUpload with If-None-Match: *
on an existing key, and with an If-Match that is not the object's ETag, by 412 PreconditionFailed; it also refuses
If-None-Match on a key that is a "directory" of other keys (`name` beside `name/a.bin`) though no object is there
(the tool then writes without it: test_fidelity's S3Prefix test).  moto 5 answers the same three cases with 412 too.
moto and AWS answer a PutObject whose If-Match names a key that does not exist with 404 NoSuchKey, SeaweedFS with 412.
A store that does not take the headers is emulated by the fault proxy (501 NotImplemented naming the header); one
that ignores them by the proxy dropping them on the way to moto (which does not check signatures).  The run's first
conditional write asks the store which it is (probe_conditional_writes: a PutObject of nothing, with an If-Match no
object has, at a key of its own), and so does --check."""

from __future__ import annotations

import re

import boto3
import pytest
from test_concurrent import start

import s3_upload
from conftest import (
    DST_KEYS,
    MOTO_KEYS,
    MiB,
    assert_tree_uploaded,
    is_probe,
    list_keys,
    md5_file,
    object_md5,
    run_tool,
    run_while_held,
    unfinished_uploads,
    write_file,
)
from faultproxy import FaultProxy, Gate

CHUNK = 5 * MiB


@pytest.fixture
def held(dst_server, aws_profiles, make_config):
    """make_config for a destination behind a proxy that holds the requests ``which`` accepts until opened."""
    proxies = []

    def make(which, **overrides):
        gate = Gate(which)
        proxy = FaultProxy("127.0.0.1", dst_server.port, match=gate).start()
        proxies.append((proxy, gate))
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        return gate, make_config(DesProfileName="held", **overrides)

    yield make
    for proxy, gate in proxies:
        gate.open()
        proxy.stop()
        assert not proxy.exceptions, proxy.exceptions


@pytest.mark.parametrize("size", [CHUNK + 7, 1000], ids=["multipart", "single-request"])
def test_an_object_written_by_another_client_during_the_run_is_not_overwritten(dst, bucket, src_dir, held, size):
    """The plan saw no object at the key; while the run's last request (CompleteMultipartUpload, or the PutObject of
    a small file) waits at a proxy, another client writes the key.  The run does not overwrite it: conflict, exit 1,
    the other object intact, the upload left to resume.  The next run sees that object and replaces it (If-Match)."""
    path = src_dir / "f.bin"
    write_file(path, size)
    last = "CompleteMultipartUpload" if size > CHUNK else "PutObject"
    gate, config = held(lambda r: r.operation == last and r.path.endswith("/up/f.bin"))
    run = start(config)
    out, err = run_while_held(run, gate, f"the run's {last} at the proxy", lambda: dst.put_object(
        Bucket=bucket, Key="up/f.bin", Body=b"someone else's object"))  # fmt: skip
    assert run.returncode == 1, err
    assert "conflict: s3://" in err and "not overwritten, nothing deleted" in err, err
    assert dst.get_object(Bucket=bucket, Key="up/f.bin")["Body"].read() == b"someone else's object"
    assert len(unfinished_uploads(dst, bucket)) == (1 if size > CHUNK else 0)  # left to resume
    again = run_tool(config)  # the proxy is open now: the object the plan sees is replaced
    assert again.code == 0, again
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_the_same_bytes_written_in_one_put_by_another_client_during_the_run_are_this_file(dst, bucket, src_dir, held):
    """Another client writes this very file's bytes at the key in one PutObject (ETag: their MD5) while the run's
    CompleteMultipartUpload waits: the 412 is not a conflict, since the file's bytes, read again a piece at a time, make
    that MD5; the run's upload is aborted, exit 0."""
    path = src_dir / "f.bin"
    write_file(path, 3 * CHUNK + 7)
    gate, config = held(lambda r: r.operation == "CompleteMultipartUpload")
    run = start(config)
    out, err = run_while_held(run, gate, "the run's CompleteMultipartUpload at the proxy", lambda: dst.put_object(
        Bucket=bucket, Key="up/f.bin", Body=path.read_bytes()))  # fmt: skip
    assert run.returncode == 0, err
    assert "written meanwhile with this file's bytes" in err and "conflict" not in err, err
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_an_object_replaced_by_another_client_during_the_run_is_not_overwritten(dst, bucket, src_dir, held):
    """The plan saw an older object at the key (another size: to be replaced); another client replaces it while the
    run completes: the run's If-Match (the ETag it saw) fails, and the newer object stays."""
    path = src_dir / "f.bin"
    write_file(path, CHUNK + 7)
    dst.put_object(Bucket=bucket, Key="up/f.bin", Body=b"the old object")
    gate, config = held(lambda r: r.operation == "CompleteMultipartUpload")
    run = start(config)
    out, err = run_while_held(run, gate, "the run's CompleteMultipartUpload at the proxy", lambda: dst.put_object(
        Bucket=bucket, Key="up/f.bin", Body=b"a newer object by someone else"))  # fmt: skip
    assert run.returncode == 1, err
    assert "conflict: s3://" in err, err
    assert dst.get_object(Bucket=bucket, Key="up/f.bin")["Body"].read() == b"a newer object by someone else"


@pytest.mark.parametrize("refused", ["if-match", "if-none-match"], ids=["by-the-probe", "at-the-first-write"])
def test_a_store_without_conditional_writes_is_said_once_and_written_to(dst, bucket, src_dir, make_config,
                                                                        aws_profiles, dst_server, refused):  # fmt: skip
    """A store that answers 501 NotImplemented to a write carrying the header: one warning, then every file is
    written without the headers; all arrive.  Refusing If-Match, it is found by the probe; refusing If-None-Match
    only, by the first write, which is sent again without it."""
    for i in range(3):
        write_file(src_dir / f"s{i}.txt", 1000 + i)
    write_file(src_dir / "big.bin", CHUNK + 9)
    with FaultProxy("127.0.0.1", dst_server.port, seed=3).start() as proxy:
        proxy.set(outage=True, error_status=501, error_code="NotImplemented",
                  error_message=f"A header you provided implies functionality that is not implemented: {refused}",
                  match=lambda r: refused in r.headers)  # fmt: skip
        aws_profiles.add("plain", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="plain", MaxParallelFile=1))
        assert not proxy.exceptions
    assert run.code == 0, run
    assert run.stderr.count("does not take conditional writes") == 1, run.stderr
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 4
    assert unfinished_uploads(dst, bucket) == []


def test_a_key_that_is_also_a_directory_of_other_keys_is_written(dst, bucket, src_dir, make_config):
    """SeaweedFS refuses If-None-Match (412) on a key under which other keys lie (`up/f.bin` beside `up/f.bin/x`),
    though no object is there: the run finds no object at the key, so nothing can be overwritten, and writes it
    without the condition; both objects are intact.  (SeaweedFS 4.48 also fails, 500 InternalError, to complete a
    multipart upload of two parts or more at such a key, with or without the condition: a big file there fails and
    its upload is left to resume; the multipart case of this rule is the next test's.)"""
    path = src_dir / "f.bin"
    write_file(path, 1000)
    dst.put_object(Bucket=bucket, Key="up/f.bin/x", Body=b"another object under the same name")
    run = run_tool(make_config())
    assert run.code == 0, run
    assert "the store refused If-None-Match though no object is there; written without it" in run.stderr, run.stderr
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert dst.get_object(Bucket=bucket, Key="up/f.bin/x")["Body"].read() == b"another object under the same name"


def test_a_completion_refused_by_if_none_match_with_no_object_there_is_written_without_it(dst, bucket, src_dir,
                                                                                          make_config, aws_profiles,
                                                                                          dst_server):  # fmt: skip
    """The store answers the CompleteMultipartUpload with If-None-Match 412 (emulated at the proxy) though no object
    is at the key: nothing to overwrite, so it is completed without the condition; the object is the file."""
    path = src_dir / "f.bin"
    write_file(path, CHUNK + 7)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=412, error_code="PreconditionFailed", match=lambda r: (
            r.operation == "CompleteMultipartUpload" and "if-none-match" in r.headers))  # fmt: skip
        aws_profiles.add("refusing", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="refusing"))
        assert not proxy.exceptions
    assert run.code == 0, run
    assert "the store refused If-None-Match though no object is there; written without it" in run.stderr, run.stderr
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_two_runs_that_write_the_same_bytes_both_succeed(dst, bucket, src_dir, held, make_config):
    """Two runs of one job, each with its own upload (neither saw the other's yet): the first to complete makes the
    object; the second's If-None-Match fails, and the object there is this file's bytes (its ETag is the one the
    parts make): a success, not a conflict."""
    path = src_dir / "f.bin"
    write_file(path, CHUNK + 7)
    gate, config = held(lambda r: r.operation == "CompleteMultipartUpload", AbandonedAfter=3600)
    first = start(config)
    seconds = []  # the second run joins the first run's upload or makes its own
    out, err = run_while_held(first, gate, "the first run's CompleteMultipartUpload at the proxy",
                              lambda: seconds.append(run_tool(make_config(AbandonedAfter=3600))))  # fmt: skip
    [second] = seconds
    assert second.code == 0, second
    assert first.returncode == 0, err
    assert "conflict" not in err + second.stderr
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


def test_write_condition_follows_what_the_plan_saw():
    assert s3_upload.write_condition(None) == ("IfNoneMatch", "*")
    seen = s3_upload.Listed("k", 5, "abc-2", 0.0)
    assert s3_upload.write_condition(seen) == ("IfMatch", '"abc-2"')


@pytest.mark.parametrize(("size", "operation"), [(CHUNK + 7, "CompleteMultipartUpload"), (1000, "PutObject")],
                         ids=["complete", "put"])  # fmt: skip
def test_a_write_whose_answer_was_lost_is_retried_and_stays_a_success(dst, bucket, src_dir, make_config, aws_profiles,
                                                                       dst_server, size, operation):  # fmt: skip
    """The first CompleteMultipartUpload (or PutObject) makes the object but its answer is lost (the connection reset
    on the way back); the retry carries If-None-Match: * and finds the object there: it is this file's (its ETag is
    the one our bytes make), so the file is a success, nothing is left unfinished."""
    path = src_dir / "f.bin"
    write_file(path, size)
    seen: list[int] = []

    def first_only(request) -> bool:
        if request.operation != operation or request.part_number or is_probe(request):
            return False
        seen.append(1)
        return len(seen) == 1

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(reset_rate=1.0, fault_where="response", match=first_only)
        aws_profiles.add("lossy", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="lossy", RetryDelay=0.05))
        assert not proxy.exceptions
    assert len(seen) >= 2, seen  # the write was retried
    assert run.code == 0, run
    assert "conflict" not in run.stderr
    assert object_md5(dst, bucket, "up/f.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []


DROP_CONDITIONS = ("If-Match", "If-None-Match")  # a store that ignores them: the proxy takes them off the requests


@pytest.fixture
def moto_port(moto_url) -> int:
    return int(moto_url.rsplit(":", 1)[1])


def test_the_probe_tells_a_store_that_checks_refuses_or_ignores_conditional_writes(dst, bucket, dst_server, moto_s3,
                                                                                    moto_bucket,
                                                                                    moto_port):  # fmt: skip
    """The probe writes nothing where the store checks the header (SeaweedFS 412, moto 404), and leaves nothing where
    it ignores it (the empty object it made is deleted); a refusal is named."""
    assert s3_upload.probe_conditional_writes(dst, bucket, "up/f.bin") == ("checked", "")
    assert s3_upload.probe_conditional_writes(moto_s3, moto_bucket, "up/f.bin") == ("checked", "")
    with FaultProxy("127.0.0.1", moto_port, drop_request_headers=DROP_CONDITIONS).start() as proxy:
        ignoring = boto3.client("s3", endpoint_url=proxy.endpoint_url, region_name="us-east-1",
                                aws_access_key_id=MOTO_KEYS[0], aws_secret_access_key=MOTO_KEYS[1])  # fmt: skip
        verdict, why = s3_upload.probe_conditional_writes(ignoring, moto_bucket, "up/f.bin")
        assert not proxy.exceptions
    assert verdict == "ignored" and "was taken" in why and "is left" not in why, why
    with FaultProxy("127.0.0.1", dst_server.port, outage=True, error_status=501, error_code="NotImplemented",
                    error_message="A header you provided implies functionality that is not implemented: If-Match",
                    match=lambda r: "if-match" in r.headers).start() as proxy:  # fmt: skip
        refusing = dst_server.client(*DST_KEYS, endpoint_url=proxy.endpoint_url)
        verdict, why = s3_upload.probe_conditional_writes(refusing, bucket, "up/f.bin")
    assert verdict == "refused" and "NotImplemented" in why, why
    assert list_keys(dst, bucket) == {} and list_keys(moto_s3, moto_bucket) == {}


def test_a_store_that_ignores_conditional_writes_is_said_once_and_written_to(moto_s3, moto_bucket, moto_port, src_dir,
                                                                             make_config, aws_profiles):  # fmt: skip
    """A store that takes If-None-Match / If-Match without checking them: the run's probe finds it out before the
    first write, says it once, and writes every file without them; all arrive and the probe leaves nothing."""
    for i in range(3):
        write_file(src_dir / f"s{i}.txt", 1000 + i)
    write_file(src_dir / "big.bin", CHUNK + 9)
    with FaultProxy("127.0.0.1", moto_port, drop_request_headers=DROP_CONDITIONS).start() as proxy:
        aws_profiles.add("ignoring", proxy.endpoint_url, *MOTO_KEYS)
        run = run_tool(make_config(DesProfileName="ignoring", DesBucket=moto_bucket, AddressingStyle="path"))
        assert not proxy.exceptions
    assert run.code == 0, run
    assert run.stderr.count("ignores conditional writes") == 1, run.stderr
    probes = [r for r in proxy.history if is_probe(r)]
    assert [r.method for r in probes] == ["PUT", "DELETE"], probes
    later = [r for r in proxy.history[proxy.history.index(probes[-1]):] if r.operation in
             ("PutObject", "CompleteMultipartUpload")]  # fmt: skip
    assert later and not any("if-match" in r.headers or "if-none-match" in r.headers for r in later)
    assert assert_tree_uploaded(moto_s3, moto_bucket, "up/", src_dir) == 4  # and nothing else: no probe object
    assert unfinished_uploads(moto_s3, moto_bucket) == []


def test_a_store_that_checks_conditional_writes_is_probed_once(dst, bucket, src_dir, dst_server, make_config,
                                                              aws_profiles):  # fmt: skip
    """Where the store checks them, the probe is one request per run, before the first write; no warning."""
    for i in range(3):
        write_file(src_dir / f"s{i}.txt", 1000 + i)
    write_file(src_dir / "big.bin", CHUNK + 9)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched"))
        assert not proxy.exceptions
    assert run.code == 0, run
    assert "conditional writes" not in run.stderr
    probes = [r for r in proxy.history if is_probe(r)]
    assert len(probes) == 1 and probes[0].status in (404, 412), probes
    writes = [r for r in proxy.history if r.operation in ("PutObject", "CompleteMultipartUpload") and not is_probe(r)]
    assert len(writes) == 4 and all("if-none-match" in r.headers for r in writes)
    assert proxy.history.index(probes[0]) < min(proxy.history.index(r) for r in writes)
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 4


def test_check_says_whether_the_store_checks_conditional_writes(dst, bucket, src_dir, make_config, moto_s3,
                                                                moto_bucket, moto_port, aws_profiles):  # fmt: skip
    """--check probes it too: ok on SeaweedFS; a store that ignores them is a warning, not a missing permission
    (nothing to grant: exit 0), and the check leaves nothing."""
    write_file(src_dir / "a.txt", 10)
    checked = run_tool(make_config(), extra=["--check"])
    assert checked.code == 0, checked
    assert re.search(r"^  ok\s+write conditionally\s", checked.stdout, flags=re.M), checked.stdout
    with FaultProxy("127.0.0.1", moto_port, drop_request_headers=DROP_CONDITIONS).start() as proxy:
        aws_profiles.add("ignoring", proxy.endpoint_url, *MOTO_KEYS)
        ignored = run_tool(make_config(DesProfileName="ignoring", DesBucket=moto_bucket, AddressingStyle="path"),
                           extra=["--check"])  # fmt: skip
    assert ignored.code == 0, ignored
    assert re.search(r"^  WARNING\s+write conditionally\s.*the store ignores them .*may be overwritten$",
                     ignored.stdout, flags=re.M), ignored.stdout  # fmt: skip
    assert "every permission the job needs is there" in ignored.stdout
    assert list_keys(dst, bucket) == {} and list_keys(moto_s3, moto_bucket) == {}
