"""Fleet mode: moto's server provides SQS on 127.0.0.1, SeaweedFS provides S3.  A sender queues one message per
file; worker processes transfer them with the normal engine.  Every test checks the bytes, that nothing unfinished
is left on S3 and what is left in the queues."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid

import boto3
import pytest
from test_config_errors import assert_user_error
from test_resume import start_upload

import s3_upload
from conftest import (
    DST_KEYS,
    MiB,
    Run,
    assert_tree_uploaded,
    list_keys,
    md5_file,
    modified_earlier,
    object_md5,
    parts_on_server,
    run_while_held,
    tool_command,
    unfinished_uploads,
    wait_until,
    write_file,
)
from faultproxy import FaultProxy, Gate

CHUNK = 5 * MiB


@pytest.fixture
def sqs(moto_url):
    return boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="k",
                        aws_secret_access_key="s")  # fmt: skip


def make_queues(sqs, max_receive_count: int) -> tuple[str, str]:
    """A work queue with a dead-letter queue after max_receive_count receives, as the README shows."""
    name = f"q-{uuid.uuid4().hex[:10]}"
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    queue = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    return queue, dlq


@pytest.fixture
def queues(sqs):
    return make_queues(sqs, 2)  # poison goes to the dead-letter queue after two tries


def visible_count(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def queue_count(sqs, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


@pytest.fixture
def fleet_config(make_config, moto_url, tmp_path):
    def make(worker: str = "sender", **overrides):
        values = dict(SQSEndpointURL=moto_url, SQSIdleSeconds=3, SQSVisibilityTimeout=4, MaxThread=2,
                      MaxParallelFile=1, LogDir=str(tmp_path / f"log-{worker}"))  # fmt: skip
        values.update(overrides)
        return make_config(**values)

    return make


def run(config, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(tool_command(config) + list(args), cwd=config.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def start_worker(config, queue: str) -> subprocess.Popen:
    return subprocess.Popen(tool_command(config) + ["--sqs-worker", queue], cwd=config.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def worker_log(tmp_path, worker: str) -> str:
    return "".join(p.read_text() for p in sorted((tmp_path / f"log-{worker}").glob("*.log")))


def test_sender_and_three_workers_survive_a_killed_worker(dst, bucket, src_dir, tmp_path, sqs, fleet_config,
                                                          aws_profiles, dst_server):  # fmt: skip
    """Two workers share the queue; the one on big.bin is killed mid-file; a third, started as a fleet replaces a
    lost instance, or the other one, takes its message once it reappears and resumes the upload from its parts."""
    queue, dlq = make_queues(sqs, 5)  # the killed worker's file is received at least twice
    write_file(src_dir / "big.bin", 12 * CHUNK + 11)
    for i in range(2):
        write_file(src_dir / "mid" / f"m{i}.bin", 2 * CHUNK + i)
    for i in range(6):
        write_file(src_dir / "small" / f"s{i}.txt", 1000 * i + 1)
    write_file(src_dir / "empty.dat", 0)
    # big.bin's parts after the second wait at the proxy until the kill: it lands mid-file, however fast the run.
    gate = Gate(lambda r: r.key == "up/big.bin" and r.operation == "UploadPart"
                and 2 < (r.part_number or 0) < min(s3_upload.MARKER_PARTS))  # fmt: skip
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("gated", proxy.endpoint_url, *DST_KEYS)
        sent = run(fleet_config(DesProfileName="gated"), "--sqs-send", queue)
        assert sent.returncode == 0, sent.stderr
        assert "queued 10 file(s)" in sent.stdout
        assert queue_count(sqs, queue) == 10

        def worker(name: str) -> subprocess.Popen:
            # Idle exit later than the visibility timeout: the killed worker's message reappears within it.
            return start_worker(fleet_config(name, DesProfileName="gated", SQSIdleSeconds=8), queue)

        workers = {n: worker(n) for n in ("w1", "w2")}

        def on_big_bin() -> str | None:
            if len(data_parts(dst, bucket, "up/big.bin")) < 2:
                return None
            return next((n for n in workers if "big.bin" in worker_log(tmp_path, n)), None)

        try:
            victim = wait_until(on_big_bin, "a worker with two parts of big.bin on the server")
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
        finally:
            gate.open()
        # Started after the kill, the third worker is polling when the message reappears (at most the visibility
        # timeout after the last heartbeat), however long the other one has been idle by then.
        workers["w3"] = worker("w3")
        codes = {n: p.wait(timeout=120) for n, p in workers.items()}
        assert not proxy.exceptions and not gate.timed_out
    assert codes[victim] == -signal.SIGKILL
    assert all(code == 0 for n, code in codes.items() if n != victim), codes
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 10
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0
    # The killed worker's file was resumed from its parts on S3, not restarted from zero.
    survivors = "".join(worker_log(tmp_path, n) for n in workers if n != victim)
    assert "resume up/big.bin: upload" in survivors


def test_duplicate_messages_and_a_message_for_a_finished_object(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                                fleet_config):  # fmt: skip
    queue, dlq = queues
    write_file(src_dir / "a.bin", 3 * CHUNK + 5)
    write_file(src_dir / "b.txt", 777)
    sender = fleet_config()
    preview = run(sender, "--sqs-send", queue, "--dry-run")
    assert preview.returncode == 0 and "nothing was sent" in preview.stdout
    messages = [line for line in preview.stdout.splitlines() if line.startswith("{")]
    assert len(messages) == 2 and queue_count(sqs, queue) == 0
    assert json.loads(messages[0])["key"] in ("up/a.bin", "up/b.txt")
    # At-least-once delivery: every file queued twice, and two workers at once.
    for _ in range(2):
        assert run(sender, "--sqs-send", queue).returncode == 0
    assert queue_count(sqs, queue) == 4
    workers = [start_worker(fleet_config(n), queue) for n in ("w1", "w2")]
    assert [p.wait(timeout=120) for p in workers] == [0, 0]
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0
    # A late duplicate for an object already complete is deleted without work.
    for body in messages:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    late = run(fleet_config("w3"), "--sqs-worker", queue)
    assert late.returncode == 0, late.stderr
    assert late.stderr.count("is already complete; deleting the message") == 2
    assert "0 failed" in late.stdout
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_poison_message_goes_to_the_dead_letter_queue(dst, bucket, src_dir, tmp_path, sqs, queues, fleet_config):
    queue, dlq = queues
    write_file(src_dir / "good.bin", 2 * CHUNK)
    write_file(src_dir / "gone.txt", 100)
    write_file(src_dir / "fine.txt", 200)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    (src_dir / "gone.txt").unlink()  # cannot be read any more when a worker gets to it
    sqs.send_message(QueueUrl=queue, MessageBody="not json at all")
    worker = run(fleet_config("w1", SQSVisibilityTimeout=1, SQSIdleSeconds=4), "--sqs-worker", queue)
    assert worker.returncode == 1, worker.stderr  # some messages failed
    assert "left in the queue for another try" in worker.stderr
    assert set(list_keys(dst, bucket)) == {"up/good.bin", "up/fine.txt"}  # other files unaffected
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
    assert queue_count(sqs, queue) == 0
    assert queue_count(sqs, dlq) == 2  # after maxReceiveCount tries, for a human to look at
    assert unfinished_uploads(dst, bucket) == []


def data_parts(client, bucket: str, key: str) -> list[int]:
    return [n for n in parts_on_server(client, bucket, key) if n not in s3_upload.MARKER_PARTS]


def test_sqs_profile_name_gives_the_queue_its_own_profile(dst, bucket, src_dir, sqs, queues, fleet_config,
                                                          aws_profiles, moto_url):  # fmt: skip
    """A third profile holds the queue: SQS is reached with its endpoint and keys, S3 with the destination's (whose
    endpoint, SeaweedFS, has no SQS).  Without SQSProfileName and SQSEndpointURL the sender asks AWS's SQS (which
    this machine cannot reach, or which refuses the test's keys): one line, exit 2, nothing queued."""
    queue, dlq = queues
    aws_profiles.add("queue", moto_url, "queueAccessKey", "queueSecretKey")
    write_file(src_dir / "a.bin", CHUNK + 5)
    write_file(src_dir / "b.txt", 50)
    without = run(fleet_config(SQSEndpointURL=""), "--sqs-send", queue)
    assert_user_error(Run(without), f"queue {queue}")
    assert queue_count(sqs, queue) == 0
    sent = run(fleet_config(SQSEndpointURL="", SQSProfileName="queue"), "--sqs-send", queue)
    assert sent.returncode == 0 and "queued 2 file(s)" in sent.stdout, sent.stderr
    worker = run(fleet_config("w1", SQSEndpointURL="", SQSProfileName="queue", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_the_queue_never_inherits_the_s3_profiles_endpoint_url(aws_profiles, moto_url):
    """The README tells users of S3-compatible stores to set endpoint_url in the destination's profile; their SQS is
    not there.  Without SQSEndpointURL and SQSProfileName the queue is AWS's SQS of the profile's region; a profile
    named for SQS keeps its own endpoint_url; SQSEndpointURL wins over both."""
    settings = s3_upload.Settings(des_bucket="b", src_dir=".", des_profile="dst")  # endpoint_url: SeaweedFS

    def endpoint(**changes) -> str:
        return s3_upload.Endpoints(dataclasses.replace(settings, **changes)).sqs_client().meta.endpoint_url

    assert endpoint() == "https://sqs.us-east-1.amazonaws.com"
    aws_profiles.add("queue", moto_url, "queueAccessKey", "queueSecretKey")
    assert endpoint(sqs_profile="queue") == moto_url
    assert endpoint(sqs_profile="dst", sqs_endpoint_url=moto_url) == moto_url
    assert endpoint(sqs_endpoint_url="http://127.0.0.1:9324") == "http://127.0.0.1:9324"


@pytest.mark.parametrize("role", ["--sqs-send", "--sqs-worker"])
def test_a_queue_endpoint_that_answers_as_s3_is_one_line(dst, bucket, src_dir, fleet_config, dst_server, role):
    """SQSEndpointURL set to the S3 store's own port (what inheriting the profile's endpoint_url did): the store
    answers in S3's XML, which is no queue: one line naming the queue and the options to fix, before any work."""
    write_file(src_dir / "a.txt", 10)
    queue = f"{dst_server.endpoint_url}/123456789012/files"
    proc = run(fleet_config(SQSEndpointURL=dst_server.endpoint_url), role, queue)
    line = assert_user_error(Run(proc), f"queue {queue}", "not SQS", "SQSEndpointURL", "SQSProfileName")
    assert "<?xml" not in proc.stdout + proc.stderr and "rerun" not in line, line
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []


def test_two_workers_racing_on_one_file(dst, bucket, src_dir, tmp_path, sqs, queues, fleet_config, aws_profiles,
                                        dst_server):  # fmt: skip
    """The file is queued twice (a duplicate); a slow worker takes one message, and once it is mid-file a second
    worker takes the other, joins the first one's upload (made for this very version: its marker says so) and
    completes it.  The first worker then finds its upload gone, the object complete with this file's ETag, counts the
    file done and deletes its message: one object, byte-identical, nothing unfinished, no message left, both exit 0."""
    queue, dlq = queues
    write_file(src_dir / "big.bin", 8 * CHUNK)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    [queued] = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0)["Messages"]  # left visible
    sqs.send_message(QueueUrl=queue, MessageBody=queued["Body"])  # the duplicate
    # The slow worker: its parts after the first wait at a proxy until the second worker is done, so that the order
    # above is the one that happens, however the two processes are scheduled.
    gate = Gate(lambda r: r.operation == "UploadPart" and 1 < (r.part_number or 0) < min(s3_upload.MARKER_PARTS))
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        slow = start_worker(fleet_config("w1", DesProfileName="held", SQSIdleSeconds=1), queue)
        try:
            wait_until(lambda: data_parts(dst, bucket, "up/big.bin"), "the first worker's first data part")
            fast = run(fleet_config("w2", SQSIdleSeconds=1), "--sqs-worker", queue)
            gate.open()
            slow_code = slow.wait(timeout=120)
        finally:
            gate.open()
            slow.kill()
        assert not proxy.exceptions and not gate.timed_out
    assert (slow_code, fast.returncode) == (0, 0), fast.stderr
    joined = re.search(r"resume up/big\.bin: upload \S+ has (\d+) of 8 parts", worker_log(tmp_path, "w2"))
    assert joined and int(joined.group(1)) < 8, worker_log(tmp_path, "w2")  # it joined mid-file
    assert "another run completed its upload while its parts were being sent" in worker_log(tmp_path, "w1")
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 1
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_worker_aborts_uploads_older_than_the_complete_object(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                              fleet_config):  # fmt: skip
    """A message for an object already complete: the worker deletes it without work, and aborts the unfinished
    uploads of that key nothing adds to any more (a duplicate's leftovers; AbandonedAfter 0 s here).  (One that a part
    was added to sooner may be another worker's work in progress: test_integrity's
    test_an_upload_another_run_adds_parts_to_is_never_aborted.)"""
    queue, dlq = queues
    path = src_dir / "big.bin"
    write_file(path, CHUNK + 5)
    modified_earlier(path)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    older = start_upload(dst, bucket, "up/big.bin", path.read_bytes(), CHUNK, parts=(1,))
    dst.put_object(Bucket=bucket, Key="up/big.bin", Body=path.read_bytes())  # completed by another worker
    worker = run(fleet_config("w1", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert f"aborting upload {s3_upload.short_id(older)}, which nothing adds to any more" in worker.stderr
    assert "is already complete; deleting the message" in worker.stderr
    assert unfinished_uploads(dst, bucket) == []
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def initiated(client, bucket: str, upload_id: str):
    return next(u["Initiated"] for u in unfinished_uploads(client, bucket) if u["UploadId"] == upload_id)


def wait_for_the_server_clock(client, bucket: str, after) -> None:
    """Until an object written now gets a LastModified later than ``after`` (the server's clock, in its units)."""

    def moved() -> bool:
        client.put_object(Bucket=bucket, Key="clock", Body=b"")
        return client.head_object(Bucket=bucket, Key="clock")["LastModified"] > after

    wait_until(moved, f"the server's clock to pass {after}", timeout=10, interval=0.1)


def test_sigterm_stops_a_worker_and_the_next_worker_resumes(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                            fleet_config, aws_profiles, dst_server):  # fmt: skip
    """SIGTERM (a fleet scaling in) stops a worker like Ctrl-C: exit 130, the message is not deleted and comes back
    after its visibility timeout, and the next worker resumes the upload from its parts on S3."""
    queue, dlq = queues
    path = src_dir / "big.bin"
    write_file(path, 6 * CHUNK)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    # The parts after the first wait at a proxy until the worker has stopped: the SIGTERM lands mid-file.
    gate = Gate(lambda r: r.operation == "UploadPart" and 1 < (r.part_number or 0) < min(s3_upload.MARKER_PARTS))
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        config = fleet_config("w1", DesProfileName="held", SQSVisibilityTimeout=1)
        worker = subprocess.Popen(tool_command(config) + ["--sqs-worker", queue], cwd=config.parent,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        try:
            wait_until(lambda: data_parts(dst, bucket, "up/big.bin"), "a data part on the server")
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=60)
        finally:
            worker.kill()
            gate.open()
        assert not proxy.exceptions and not gate.timed_out
    assert worker.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in out + err
    assert "up/big.bin" not in list_keys(dst, bucket)
    kept = len(data_parts(dst, bucket, "up/big.bin"))
    assert queue_count(sqs, queue) == 1  # not deleted: hidden until its visibility timeout ends
    # Back in the queue once its visibility timeout (1 s) is over: the next worker finds it at once.
    wait_until(lambda: visible_count(sqs, queue) == 1, "the message to be visible again", timeout=30)
    nxt = run(fleet_config("w2", SQSIdleSeconds=3), "--sqs-worker", queue)
    assert nxt.returncode == 0, nxt.stderr
    resumed = re.search(r"resume up/big\.bin: upload \S+ has (\d+) of 6 parts", worker_log(tmp_path, "w2"))
    assert resumed and int(resumed.group(1)) >= kept, worker_log(tmp_path, "w2")
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 1
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_failed_heartbeat_is_logged_and_the_file_still_completes(dst, bucket, src_dir, sqs, queues, fleet_config,
                                                                   moto_url, aws_profiles, dst_server):  # fmt: skip
    """Every ChangeMessageVisibility is refused (500); the file's COMPLETE is held until one was: the worker logs
    the missed beat, goes on, completes the file and deletes its message (a missed beat only risks a duplicate)."""
    queue, dlq = queues
    write_file(src_dir / "big.bin", CHUNK + 7)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    beat_refused = threading.Event()

    def heartbeat(request) -> bool:
        if request.headers.get("x-amz-target") == "AmazonSQS.ChangeMessageVisibility":
            beat_refused.set()
            return True
        return False

    def complete_after_a_refused_beat(request) -> bool:
        if request.operation == "CompleteMultipartUpload":
            beat_refused.wait(60)
        return False

    with FaultProxy("127.0.0.1", int(moto_url.rsplit(":", 1)[1])).start() as sqs_proxy, \
            FaultProxy("127.0.0.1", dst_server.port).start() as s3_proxy:  # fmt: skip
        sqs_proxy.set(outage=True, error_status=500, error_code="InternalError", match=heartbeat)
        s3_proxy.set(match=complete_after_a_refused_beat)
        aws_profiles.add("held", s3_proxy.endpoint_url, *DST_KEYS)
        worker = run(fleet_config("w1", DesProfileName="held", SQSEndpointURL=sqs_proxy.endpoint_url,
                                  SQSVisibilityTimeout=1, SQSIdleSeconds=1), "--sqs-worker", queue)  # fmt: skip
        assert not sqs_proxy.exceptions and not s3_proxy.exceptions
    assert beat_refused.is_set()
    assert worker.returncode == 0, worker.stderr
    assert "SQS heartbeat failed:" in worker.stderr and "HTTP 500" in worker.stderr, worker.stderr
    assert "1 file(s) done, 0 failed" in worker.stdout
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 1
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_sender_resends_the_messages_of_a_partly_refused_batch(src_dir, sqs, queues, fleet_config, monkeypatch,
                                                               capsys, request):  # fmt: skip
    """SendMessageBatch answers with two entries of the first batch in Failed (those were not queued): the sender
    sends those two again, and the queue ends with exactly one message per file.  In-process, so that the refusal
    is a real one (the refused entries never reach SQS)."""
    queue, dlq = queues
    for i in range(12):  # a batch of 10 and a batch of 2
        write_file(src_dir / f"f{i:02d}.txt", 10 + i)
    real_sqs_client = s3_upload.Endpoints.sqs_client
    refused: list[str] = []

    def sqs_client(self):
        client = real_sqs_client(self)
        send_batch = client.send_message_batch

        def partly_refused(QueueUrl, Entries):
            if refused:
                return send_batch(QueueUrl=QueueUrl, Entries=Entries)
            refused.extend(e["Id"] for e in Entries[3:5])
            answer = send_batch(QueueUrl=QueueUrl, Entries=[e for e in Entries if e["Id"] not in refused])
            answer["Failed"] = [{"Id": i, "SenderFault": False, "Code": "InternalError"} for i in refused]
            return answer

        client.send_message_batch = partly_refused
        return client

    monkeypatch.setattr(s3_upload.Endpoints, "sqs_client", sqs_client)
    for logger in (s3_upload.log, s3_upload.report):  # main() changes these; put them back afterwards
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        request.addfinalizer(functools.partial(logger.setLevel, logger.level))
    assert s3_upload.main(["--config", str(fleet_config()), "--sqs-send", queue]) == 0
    out, err = capsys.readouterr()
    assert len(refused) == 2
    assert "SQS refused 2 message(s) of a batch; sending them again" in err
    assert "queued 12 file(s)" in out
    keys = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not got:
            break
        keys += [json.loads(m["Body"])["key"] for m in got]
    assert sorted(keys) == [f"up/f{i:02d}.txt" for i in range(12)]  # each file once: none lost, none twice


def test_the_sender_sends_its_batches_in_parallel(src_dir, sqs, queues, fleet_config, monkeypatch, capsys, request):
    """40 files: four batches of 10, each SendMessageBatch held until all four are on their way at once (a sender
    that waits for each answer before the next batch never gets there: SQS far away would limit the whole fleet).
    Every file queued exactly once.  In-process, to watch the calls."""
    queue, dlq = queues
    for i in range(40):
        write_file(src_dir / f"f{i:02d}.txt", 10 + i)
    real_sqs_client = s3_upload.Endpoints.sqs_client
    together = threading.Condition()
    in_flight = [0, 0]  # now, most at once

    def sqs_client(self):
        client = real_sqs_client(self)
        send_batch = client.send_message_batch

        def held_until_four(QueueUrl, Entries):
            with together:
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
                together.notify_all()
                together.wait_for(lambda: in_flight[1] >= 4, timeout=10)
                in_flight[0] -= 1
            return send_batch(QueueUrl=QueueUrl, Entries=Entries)

        client.send_message_batch = held_until_four
        return client

    monkeypatch.setattr(s3_upload.Endpoints, "sqs_client", sqs_client)
    for logger in (s3_upload.log, s3_upload.report):  # main() changes these; put them back afterwards
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        request.addfinalizer(functools.partial(logger.setLevel, logger.level))
    assert s3_upload.main(["--config", str(fleet_config()), "--sqs-send", queue]) == 0
    out, _ = capsys.readouterr()
    assert in_flight[1] == 4, in_flight
    assert "queued 40 file(s)" in out
    assert sorted(json.loads(b)["key"] for b in take_all(sqs, queue)) == [f"up/f{i:02d}.txt" for i in range(40)]


# ---------------------------------------------------------------------------------------------------------------------
# Sender and worker agree on every file: names with quote marks or bytes that are not UTF-8, links
# ---------------------------------------------------------------------------------------------------------------------


def queued_keys(sqs, queue: str) -> list[str]:
    """The keys of the messages in the queue, read without taking them (visible again at once)."""
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return sorted(json.loads(m["Body"])["key"] for m in got)


def hand_made_message(bucket: str, key: str, size: int = 0) -> str:
    """A message for this job as the sender writes one, for a key the sender would not queue."""
    return json.dumps({"v": 1, "job_type": "LOCAL_TO_S3", "src_bucket": "", "src_key_or_path": "",
                       "des_bucket": bucket, "key": key, "size": size, "mtime": 0.0, "src_etag": ""})  # fmt: skip


def test_sender_and_worker_agree_on_names_with_quote_marks_and_bytes_that_are_not_utf8(
    dst, bucket, src_dir, sqs, queues, fleet_config
):
    """A valid UTF-8 name keeps its name as key, even one holding the text "‛E9"; a byte that is not UTF-8 is written
    ‛XX.  So "a/caf‛E9.txt" and b"b/caf\\xe9.txt" have keys that read alike, and the worker must find each from its
    key: the literal name for the first, the decoded one for the second (it refused the first, decoding its "‛E9"
    into a file that does not exist).  A name that is not UTF-8 and also holds a quote mark has that quote mark
    written as its own bytes, so that its key, too, leads back to it."""
    queue, dlq = queues
    raw_root = os.fsencode(str(src_dir))
    bodies = {"up/a/caf\u201bE9.txt": b"a valid UTF-8 name that holds the text of a quoted byte",
              "up/b/caf\u201bE9.txt": b"a latin-1 name",
              "up/c/\u201bE9\u201bE2\u201b80\u201b9BE9.txt": b"a latin-1 byte and a quote mark"}  # fmt: skip
    names = {"up/a/caf\u201bE9.txt": "a/caf\u201bE9.txt".encode(), "up/b/caf\u201bE9.txt": b"b/caf\xe9.txt",
             "up/c/\u201bE9\u201bE2\u201b80\u201b9BE9.txt": b"c/\xe9" + "\u201bE9.txt".encode()}  # fmt: skip
    for key, name in names.items():
        os.makedirs(os.path.dirname(raw_root + b"/" + name), exist_ok=True)
        with open(raw_root + b"/" + name, "wb") as fh:
            fh.write(bodies[key])
    sent = run(fleet_config(), "--sqs-send", queue)
    assert sent.returncode == 0 and "queued 3 file(s)" in sent.stdout, sent.stderr
    assert queued_keys(sqs, queue) == sorted(names)  # the keys a normal run gives (test_integrity checks those)
    worker = run(fleet_config("w1", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert "3 file(s) done, 0 failed" in worker.stdout
    assert list_keys(dst, bucket) == {key: len(body) for key, body in bodies.items()}
    for key, body in bodies.items():
        assert object_md5(dst, bucket, key) == hashlib.md5(body).hexdigest(), key
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_link_to_a_file_outside_srcdir_is_sent_by_a_worker_as_by_a_run(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                                          fleet_config, make_config):  # fmt: skip
    """A run (os.walk) lists a link to a file and uploads its target, wherever it is: the sender queues it, and the
    worker must send it too (it refused it: the target is outside SrcDir once links are resolved)."""
    queue, dlq = queues
    outside = tmp_path / "outside"
    write_file(outside / "target.bin", CHUNK + 11)
    (src_dir / "link.bin").symlink_to(outside / "target.bin")
    write_file(src_dir / "plain.txt", 40)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    assert queued_keys(sqs, queue) == ["up/link.bin", "up/plain.txt"]
    worker = run(fleet_config("w1", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert list_keys(dst, bucket) == {"up/link.bin": CHUNK + 11, "up/plain.txt": 40}
    assert object_md5(dst, bucket, "up/link.bin") == md5_file(outside / "target.bin")
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0
    # A normal run lists the same two files, finds both complete and sends nothing.
    again = subprocess.run(tool_command(make_config()), cwd=src_dir.parent, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0 and "0 uploaded, 2 skipped" in again.stdout, again.stdout + again.stderr


def test_a_worker_refuses_a_file_under_a_link_to_a_directory(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                             fleet_config):  # fmt: skip
    """A run never enters a link to a directory (it could loop or leave SrcDir), so neither may a worker: a message
    for SrcDir/linked/secret.txt, where linked -> a directory outside SrcDir, writes nothing and stays for the
    dead-letter queue.  (Guards LocalSource.resolve: a lexical inside-SrcDir check alone would send the secret.)"""
    queue, dlq = queues
    outside = tmp_path / "outside"
    write_file(outside / "secret.txt", 77)
    (src_dir / "linked").symlink_to(outside, target_is_directory=True)
    sqs.send_message(QueueUrl=queue, MessageBody=hand_made_message(bucket, "up/linked/secret.txt", 77))
    worker = run(fleet_config("w1", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert "0 file(s) done, 1 failed" in worker.stdout
    assert "a link to a directory" in worker.stderr and "left in the queue for another try" in worker.stderr
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) + queue_count(sqs, dlq) == 1  # not deleted


def test_a_worker_uploads_over_an_object_of_the_key_with_another_size(dst, bucket, src_dir, sqs, queues,
                                                                      fleet_config):  # fmt: skip
    """An object of the key that is not the file (other bytes, another size: an old version, a truncated copy) is
    not complete: the worker uploads the file over it.  (Guards destination_complete's size check: without it the
    worker takes any object of the key for complete, deletes the message and leaves the old object.)"""
    queue, dlq = queues
    path = src_dir / "a.bin"
    write_file(path, CHUNK + 3)
    # The file is older than the object: the size alone tells them apart (with a file modified after the object,
    # its mtime would send it anyway, and the size check went untested whenever both fell in the same second).
    older = time.time() - 3600
    os.utime(path, (older, older))
    dst.put_object(Bucket=bucket, Key="up/a.bin", Body=b"a newer, shorter object")
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    assert queued_keys(sqs, queue) == ["up/a.bin"]
    worker = run(fleet_config("w1", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    assert "already complete" not in worker.stderr
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_file_that_fails_keeps_its_message_and_the_next_worker_sends_it(dst, bucket, src_dir, sqs, queues,
                                                                          fleet_config, aws_profiles,
                                                                          dst_server):  # fmt: skip
    """The destination refuses the file's PutObject (AccessDenied, final): the worker fails it and leaves its message
    (not deleted: it comes back after its visibility timeout); the next worker, with the permission back, sends it.
    (Guards work_on_message: a worker that deleted the message of a failed file would lose the file for good.)"""
    queue, dlq = make_queues(sqs, 5)
    write_file(src_dir / "a.txt", 321)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=403, error_code="AccessDenied",
                  match=lambda r: r.operation == "PutObject")  # fmt: skip
        aws_profiles.add("refusing", proxy.endpoint_url, *DST_KEYS)
        # Idle for less than the visibility timeout: the worker meets the message once, and exits.
        first = run(fleet_config("w1", DesProfileName="refusing", SQSIdleSeconds=1), "--sqs-worker", queue)
        refused = sum(1 for r in proxy.history if r.operation == "PutObject")
    assert first.returncode == 1, first.stdout + first.stderr
    assert refused >= 1 and list_keys(dst, bucket) == {}
    assert queue_count(sqs, queue) == 1 and queue_count(sqs, dlq) == 0  # the message is still there
    wait_until(lambda: visible_count(sqs, queue) == 1, "the message visible again (4 s)", timeout=30)
    second = run(fleet_config("w2", SQSIdleSeconds=2), "--sqs-worker", queue)
    assert second.returncode == 0, second.stderr
    assert "1 file(s) done, 0 failed" in second.stdout
    assert object_md5(dst, bucket, "up/a.txt") == md5_file(src_dir / "a.txt")
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_worker_refused_its_head_fails_that_message_and_names_the_permission(
    dst, bucket, src_dir, sqs, queues, fleet_config, no_get_object
):
    """A worker asks HeadObject whether the object is already complete; a profile without s3:GetObject is refused
    it: the message fails (left for another try) with the permission to grant, and the worker goes on."""
    queue, dlq = queues
    write_file(src_dir / "a.txt", 10)
    write_file(src_dir / "b.txt", 20)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    worker = run(fleet_config("w1", DesProfileName=no_get_object, SQSIdleSeconds=1), "--sqs-worker", queue)
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert "0 file(s) done" in worker.stdout
    refusals = [line for line in worker.stderr.splitlines() if "left in the queue for another try" in line]
    assert len(refusals) == 2 and all("grant the destination's profile s3:GetObject" in line for line in refusals), \
        worker.stderr  # fmt: skip
    assert "Traceback" not in worker.stderr
    assert list_keys(dst, bucket) == {}


# ---------------------------------------------------------------------------------------------------------------------
# One big file, many workers: a file of more than SQSPartsPerMessage parts is queued as ranges of one upload
# ---------------------------------------------------------------------------------------------------------------------

RANGES = [[1, 2], [3, 4], [5, 6], [7, 7]]  # a file of 7 parts at SQSPartsPerMessage 2


def queued_messages(sqs, queue: str) -> list[dict]:
    """Every message in the queue, left visible (read with a visibility timeout of 0)."""
    seen: dict[str, dict] = {}
    for _ in range(20):
        for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", []):
            seen[m["MessageId"]] = json.loads(m["Body"])
    return list(seen.values())


def take_all(sqs, queue: str) -> list[str]:
    """Remove every message from the queue; their bodies."""
    bodies = []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=30).get(
        "Messages", []
    ):
        for m in messages:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    return bodies


def test_a_big_file_is_queued_as_ranges_of_one_upload_that_two_workers_complete(dst, bucket, src_dir, tmp_path, sqs,
                                                                                 fleet_config):  # fmt: skip
    """SQSPartsPerMessage 2: the sender makes the upload (its marker, no data part) and queues four ranges of it; the
    small file goes whole.  Run again (a sender killed and started anew), it joins the same upload and queues them
    all again.  Two workers share the eight range messages and the two file messages, duplicates included: one
    object, byte-identical, nothing unfinished, the queues empty."""
    queue, dlq = make_queues(sqs, 1000)  # the test reads the queue many times (each read is a receive)
    write_file(src_dir / "big.bin", 6 * CHUNK + 123)
    write_file(src_dir / "small.txt", 1000)
    config = fleet_config(SQSPartsPerMessage=2)
    first = run(config, "--sqs-send", queue)
    assert first.returncode == 0, first.stderr
    assert "queued 2 file(s) (30.0 MiB) as 5 message(s)" in first.stdout
    ranges = [m for m in queued_messages(sqs, queue) if m["v"] == 2]
    assert sorted(m["parts"] for m in ranges) == RANGES
    [upload_id] = {m["upload_id"] for m in ranges}
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [upload_id]
    assert parts_on_server(dst, bucket, "up/big.bin") == sorted(s3_upload.MARKER_PARTS)  # the marker, no data yet
    again = run(config, "--sqs-send", queue)
    assert again.returncode == 0, again.stderr
    assert {m["upload_id"] for m in queued_messages(sqs, queue) if m["v"] == 2} == {upload_id}  # joined
    assert queue_count(sqs, queue) == 10
    workers = [start_worker(fleet_config(f"w{n}", SQSIdleSeconds=2, SQSPartsPerMessage=2), queue) for n in (1, 2)]
    try:
        codes = [w.wait(timeout=120) for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert codes == [0, 0], worker_log(tmp_path, "w1") + worker_log(tmp_path, "w2")
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
    head = dst.head_object(Bucket=bucket, Key="up/big.bin")
    assert head["ETag"].strip('"').endswith("-7")
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0
    logs = worker_log(tmp_path, "w1") + worker_log(tmp_path, "w2")
    assert "still to come from other workers" in logs and "Traceback" not in logs


def test_a_worker_killed_mid_range_leaves_it_to_the_next(dst, bucket, src_dir, tmp_path, sqs, queues, fleet_config,
                                                         aws_profiles, dst_server):  # fmt: skip
    """The first worker is killed (SIGKILL) while part 4 of range 3-4 is on its way; its message comes back after
    its visibility timeout and the next worker sends that range, reusing part 3 (read back and checked by MD5), and
    the other ranges, and makes the object."""
    queue, dlq = make_queues(sqs, 5)
    write_file(src_dir / "big.bin", 6 * CHUNK + 123)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    gate = Gate(lambda r: r.operation == "UploadPart" and r.part_number == 4)
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        killed = start_worker(fleet_config("w1", DesProfileName="held", SQSPartsPerMessage=2), queue)
        try:
            wait_until(lambda: gate.held, "part 4 at the proxy")
            wait_until(lambda: 3 in parts_on_server(dst, bucket, "up/big.bin"), "part 3 on the server")
            killed.kill()
            killed.wait(timeout=30)
        finally:
            killed.kill()
            gate.open()
        assert not proxy.exceptions
    assert "up/big.bin" not in list_keys(dst, bucket)
    # Every message visible: the killed worker's comes back once its visibility timeout (4 s) is over.
    wait_until(lambda: visible_count(sqs, queue) == queue_count(sqs, queue), "the killed worker's message back",
               timeout=30)  # fmt: skip
    nxt = run(fleet_config("w2", SQSIdleSeconds=2, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert nxt.returncode == 0, nxt.stderr
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 1
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_two_workers_racing_to_complete_one_upload_both_succeed(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                                fleet_config, aws_profiles, dst_server):  # fmt: skip
    """Every range but the last is sent first; then the last range is queued twice, and two workers each find every
    part there and complete the upload at the same moment (their two CompleteMultipartUpload requests are held at a
    proxy until both arrive).  One makes the object; the other finds its upload gone and the object's ETag the one its
    parts make: both exit 0, one object, nothing left."""
    queue, dlq = queues
    write_file(src_dir / "big.bin", 6 * CHUNK + 123)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    bodies = take_all(sqs, queue)
    last = [b for b in bodies if json.loads(b)["parts"] == [7, 7]]
    for body in bodies:
        if body not in last:
            sqs.send_message(QueueUrl=queue, MessageBody=body)
    first = run(fleet_config("w0", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert first.returncode == 0, first.stderr
    assert "up/big.bin" not in list_keys(dst, bucket)  # part 7 is missing
    sqs.send_message(QueueUrl=queue, MessageBody=last[0])
    sqs.send_message(QueueUrl=queue, MessageBody=last[0])
    gate = Gate(lambda r: r.operation == "CompleteMultipartUpload")
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        workers = [start_worker(fleet_config(f"w{n}", DesProfileName="held", SQSIdleSeconds=2,
                                             SQSPartsPerMessage=2), queue) for n in (1, 2)]  # fmt: skip
        try:
            wait_until(lambda: len(gate.held) == 2, "both workers' COMPLETE at the proxy")
            gate.open()
            codes = [w.wait(timeout=60) for w in workers]
        finally:
            gate.open()
            for w in workers:
                w.kill()
        assert not proxy.exceptions and not gate.timed_out
    logs = worker_log(tmp_path, "w1") + worker_log(tmp_path, "w2")
    assert codes == [0, 0], logs
    assert "finish up/big.bin" in logs and "Traceback" not in logs
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 1
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_range_queued_for_an_older_version_of_the_file_is_refused(dst, bucket, src_dir, tmp_path, sqs, queues,
                                                                    fleet_config):  # fmt: skip
    """The file is rewritten (same size) after the sender queued its ranges: the upload's marker names the old
    version, so every range fails (nothing sent, no object), and the messages stay.  The sender run again aborts that
    upload (abandoned: AbandonedAfter 0 s here) and queues the new version, which the workers send."""
    queue, dlq = queues
    path = src_dir / "big.bin"
    write_file(path, 6 * CHUNK + 123)
    modified_earlier(path)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    [old_upload] = [u["UploadId"] for u in unfinished_uploads(dst, bucket)]
    write_file(path, 6 * CHUNK + 123, seed=7)
    stale = run(fleet_config("w1", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert stale.returncode == 1, stale.stderr
    assert "was not made for this version of the file" in stale.stderr
    assert "up/big.bin" not in list_keys(dst, bucket)
    assert parts_on_server(dst, bucket, "up/big.bin") == sorted(s3_upload.MARKER_PARTS)  # no data part was sent
    sqs.purge_queue(QueueUrl=queue)  # the stale messages, hidden for their visibility timeout after the failure
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    assert old_upload not in [u["UploadId"] for u in unfinished_uploads(dst, bucket)]
    nxt = run(fleet_config("w2", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert nxt.returncode == 0, nxt.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


# ---------------------------------------------------------------------------------------------------------------------
# The sender's and the worker's rarer paths: a dry run of ranges, an upload another tool made, a file that cannot be
# queued, a range whose upload is gone or whose file shrank, a duplicate completed while its worker worked, and what
# destination_complete asks before it deletes a message
# ---------------------------------------------------------------------------------------------------------------------

BIG = 2 * CHUNK + 123  # 3 parts: at SQSPartsPerMessage 2, queued as the ranges 1-2 and 3-3


def run_worker_held(config, queue: str) -> subprocess.Popen:
    """A worker whose output the test reads once it has exited (communicate)."""
    return subprocess.Popen(tool_command(config) + ["--sqs-worker", queue], cwd=config.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_a_dry_run_prints_the_ranges_of_a_big_file_and_makes_no_upload(dst, bucket, src_dir, sqs, queues,
                                                                       fleet_config):  # fmt: skip
    """--sqs-send --dry-run with a file of more than SQSPartsPerMessage parts: its range messages are printed, with
    no upload ID (none is made), beside the small file's message; nothing is written to S3 or sent to the queue."""
    queue, dlq = queues
    write_file(src_dir / "big.bin", BIG)
    write_file(src_dir / "small.txt", 100)
    preview = run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert "dry run: 2 file(s) as 3 message(s) would be queued, 0 skipped; nothing was sent" in preview.stdout
    messages = [json.loads(line) for line in preview.stdout.splitlines() if line.startswith("{")]
    ranges = sorted((m for m in messages if m["v"] == 2), key=lambda m: m["parts"])
    assert [(m["key"], m["parts"], m["part_count"], m["upload_id"]) for m in ranges] == [
        ("up/big.bin", [1, 2], 3, "(made when queued)"),
        ("up/big.bin", [3, 3], 3, "(made when queued)"),
    ]
    assert [m["key"] for m in messages if m["v"] == 1] == ["up/small.txt"]
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_big_file_with_another_tools_upload_is_queued_whole(dst, bucket, src_dir, sqs, queues, fleet_config):
    """A big file whose unfinished upload was made by another tool (no marker): the sender cannot prove its parts
    for ranges, so it queues the file whole, in one message, and sends nothing into that upload; one worker resumes
    it, checking the part already there by MD5, and completes it: byte-identical, nothing unfinished."""
    queue, dlq = make_queues(sqs, 1000)  # the test reads the queue (each read is a receive)
    path = src_dir / "big.bin"
    write_file(path, BIG)
    other = start_upload(dst, bucket, "up/big.bin", path.read_bytes(), CHUNK, parts=(1,))
    sent = run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue)
    assert sent.returncode == 0, sent.stderr
    assert "up/big.bin: its unfinished upload was made by another tool; queued whole" in sent.stderr
    assert re.search(r"queued 1 file\(s\) \([^)]*\) to \S+; 0 skipped", sent.stdout), sent.stdout  # no " as N"
    [message] = queued_messages(sqs, queue)
    assert (message["v"], message["key"]) == (1, "up/big.bin")
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [other]
    assert parts_on_server(dst, bucket, "up/big.bin") == [1]  # the sender sent no marker into it
    worker = run(fleet_config("w1", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert f"resume up/big.bin: upload {s3_upload.short_id(other)} has 1 of 3 parts" in worker.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_file_whose_upload_cannot_be_made_is_not_queued_and_the_others_are(dst, bucket, src_dir, sqs, queues,
                                                                              fleet_config, aws_profiles,
                                                                              dst_server):  # fmt: skip
    """The destination refuses CreateMultipartUpload for one of two big files (AccessDenied): that file is named and
    not queued, the other big file's ranges and the small file are, and the sender exits 1.  The workers send what
    was queued; the refused file has no object and no upload; the sender run again (the refusal gone) queues it."""
    queue, dlq = make_queues(sqs, 1000)  # the test reads the queue (each read is a receive)
    write_file(src_dir / "big1.bin", BIG)
    write_file(src_dir / "big2.bin", BIG + 1)
    write_file(src_dir / "small.txt", 100)
    for path in src_dir.iterdir():
        modified_earlier(path)  # the objects written later are this version: the sender run again skips them
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=403, error_code="AccessDenied",
                  match=lambda r: r.operation == "CreateMultipartUpload" and r.key == "up/big2.bin")  # fmt: skip
        aws_profiles.add("refusing", proxy.endpoint_url, *DST_KEYS)
        sent = run(fleet_config(DesProfileName="refusing", SQSPartsPerMessage=2), "--sqs-send", queue)
        assert not proxy.exceptions
    assert sent.returncode == 1, sent.stdout + sent.stderr
    assert "1 file(s) not queued (see the log): up/big2.bin" in sent.stdout
    assert "queued 2 file(s)" in sent.stdout and "as 3 message(s)" in sent.stdout
    assert "FAILED up/big2.bin: its upload could not be made" in sent.stderr and "Traceback" not in sent.stderr
    assert sorted((m["key"], m.get("parts")) for m in queued_messages(sqs, queue)) == [
        ("up/big1.bin", [1, 2]), ("up/big1.bin", [3, 3]), ("up/small.txt", None)]  # fmt: skip
    assert [u["Key"] for u in unfinished_uploads(dst, bucket)] == ["up/big1.bin"]
    worker = run(fleet_config("w1", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert set(list_keys(dst, bucket)) == {"up/big1.bin", "up/small.txt"}
    for name in ("big1.bin", "small.txt"):
        assert object_md5(dst, bucket, f"up/{name}") == md5_file(src_dir / name)
    assert unfinished_uploads(dst, bucket) == []
    again = run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue)
    assert again.returncode == 0, again.stderr
    assert "queued 1 file(s)" in again.stdout and "; 2 skipped" in again.stdout
    worker = run(fleet_config("w2", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert worker.returncode == 0, worker.stderr
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 3
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_file_that_fails_while_another_worker_completes_it_is_done(dst, bucket, src_dir, sqs, queues,
                                                                      fleet_config, aws_profiles,
                                                                      dst_server):  # fmt: skip
    """A duplicate delivery: while this worker's PutObject is held, another worker writes the object; then the held
    PutObject fails for good (InternalError, every retry).  The file failed here, but the object is complete and is
    this file: the worker counts it done and deletes the message."""
    queue, dlq = queues
    path = src_dir / "a.txt"
    write_file(path, 321)
    modified_earlier(path)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    gate = Gate(lambda r: r.operation == "PutObject" and r.key == "up/a.txt")

    def held_then_refused(request) -> bool:
        gate(request)
        return request.operation == "PutObject" and request.key == "up/a.txt"

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=500, error_code="InternalError", match=held_then_refused)
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        worker = run_worker_held(fleet_config("w1", DesProfileName="held", SQSIdleSeconds=1), queue)
        out, err = run_while_held(worker, gate, "the worker's PutObject at the proxy", lambda: dst.put_object(
            Bucket=bucket, Key="up/a.txt", Body=path.read_bytes()))  # the other worker's object  # fmt: skip
        assert not proxy.exceptions and not gate.timed_out
    assert worker.returncode == 0, out + err
    assert f"s3://{bucket}/up/a.txt was completed by another worker; deleting the message" in err
    assert "1 file(s) done, 0 failed" in out
    assert object_md5(dst, bucket, "up/a.txt") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_range_whose_upload_is_gone_is_refused_and_its_message_stays(dst, bucket, src_dir, sqs, queues,
                                                                        fleet_config):  # fmt: skip
    """The sender's upload is aborted (by a person, a lifecycle rule) before the workers get to its ranges: each range
    fails naming the upload, nothing is sent and no upload made (a worker never makes one for a range), and the
    messages stay.  The sender run again makes a new upload, and the workers complete it."""
    queue, dlq = queues
    path = src_dir / "big.bin"
    write_file(path, BIG)
    modified_earlier(path)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    [upload] = unfinished_uploads(dst, bucket)
    dst.abort_multipart_upload(Bucket=bucket, Key="up/big.bin", UploadId=upload["UploadId"])
    worker = run(fleet_config("w1", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert worker.returncode == 1, worker.stdout + worker.stderr
    gone = f"its upload {s3_upload.short_id(upload['UploadId'])} is gone (aborted, or completed as another object)"
    refusals = [line for line in worker.stderr.splitlines() if gone in line]
    assert len(refusals) == 2 and all("left in the queue for another try" in line for line in refusals), worker.stderr
    assert "0 file(s) done, 2 failed" in worker.stdout and "Traceback" not in worker.stderr
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 2 and queue_count(sqs, dlq) == 0  # not deleted
    sqs.purge_queue(QueueUrl=queue)  # hidden for their visibility timeout; they would only fail again
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    nxt = run(fleet_config("w2", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert nxt.returncode == 0, nxt.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_range_of_a_file_that_shrank_below_one_part_is_refused(dst, bucket, src_dir, sqs, queues, fleet_config):
    """The file is rewritten smaller than ChunkSize after its ranges were queued: it is no longer sent in parts, so
    each range fails (nothing sent, the sender's upload left as it was: its marker only), and the messages stay.  The
    sender run again queues the file whole; the worker puts it and aborts the old upload."""
    queue, dlq = make_queues(sqs, 1000)  # the test reads the queue (each read is a receive)
    path = src_dir / "big.bin"
    write_file(path, BIG)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    [upload] = unfinished_uploads(dst, bucket)
    write_file(path, 1000)
    worker = run(fleet_config("w1", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert worker.returncode == 1, worker.stdout + worker.stderr
    refusals = [line for line in worker.stderr.splitlines() if "the file is no longer sent in parts" in line]
    assert len(refusals) == 2 and all("left in the queue for another try" in line for line in refusals), worker.stderr
    assert "0 file(s) done, 2 failed" in worker.stdout and "Traceback" not in worker.stderr
    assert list_keys(dst, bucket) == {}
    assert [u["UploadId"] for u in unfinished_uploads(dst, bucket)] == [upload["UploadId"]]
    assert parts_on_server(dst, bucket, "up/big.bin") == sorted(s3_upload.MARKER_PARTS)
    assert queue_count(sqs, queue) == 2 and queue_count(sqs, dlq) == 0
    sqs.purge_queue(QueueUrl=queue)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    assert [m["v"] for m in queued_messages(sqs, queue)] == [1]
    nxt = run(fleet_config("w2", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
    assert nxt.returncode == 0, nxt.stderr
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_range_whose_upload_was_completed_meanwhile_is_done(dst, bucket, src_dir, sqs, queues, fleet_config,
                                                              aws_profiles, dst_server):  # fmt: skip
    """A worker takes a range and, before it lists the key's uploads, another worker sends both ranges and completes
    the object (the first worker's listing is held at a proxy meanwhile).  The first finds the upload gone, but the
    object complete and this file: it deletes its message, exit 0."""
    queue, dlq = queues
    path = src_dir / "big.bin"
    write_file(path, BIG)
    modified_earlier(path)
    assert run(fleet_config(SQSPartsPerMessage=2), "--sqs-send", queue).returncode == 0
    bodies = take_all(sqs, queue)
    assert len(bodies) == 2
    sqs.send_message(QueueUrl=queue, MessageBody=bodies[0])
    gate = Gate(lambda r: r.operation == "ListMultipartUploads" and r.query.get("prefix") == "up/big.bin")
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        slow = run_worker_held(fleet_config("w1", DesProfileName="held", SQSIdleSeconds=1, SQSPartsPerMessage=2),
                               queue)  # fmt: skip

        def fast_worker_completes_it() -> None:
            for body in bodies:
                sqs.send_message(QueueUrl=queue, MessageBody=body)
            fast = run(fleet_config("w2", SQSIdleSeconds=1, SQSPartsPerMessage=2), "--sqs-worker", queue)
            assert fast.returncode == 0, fast.stderr
            assert "up/big.bin" in list_keys(dst, bucket)

        out, err = run_while_held(slow, gate, "the first worker's ListMultipartUploads at the proxy",
                                  fast_worker_completes_it)  # fmt: skip
        assert not proxy.exceptions and not gate.timed_out
    assert slow.returncode == 0, out + err
    assert f"s3://{bucket}/up/big.bin was completed meanwhile; deleting the message" in err
    assert "1 file(s) done, 0 failed" in out
    assert object_md5(dst, bucket, "up/big.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_duplicate_for_a_file_modified_after_its_object_asks_head_object(dst, bucket, src_dir, sqs, queues,
                                                                           fleet_config):  # fmt: skip
    """The file's mtime is later than its object's LastModified (a clock ahead of S3's): only the mtime recorded
    with the object can tell.  A late duplicate for the object this tool wrote is deleted without work (HeadObject:
    the recorded mtime is the file's); one for an object of the same size that another client wrote over it (nothing
    recorded) is sent again, over that object."""
    queue, dlq = queues
    path = src_dir / "a.bin"
    write_file(path, CHUNK + 5)
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    [body] = take_all(sqs, queue)
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    first = run(fleet_config("w1", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert first.returncode == 0, first.stderr
    written = dst.head_object(Bucket=bucket, Key="up/a.bin")
    sqs.send_message(QueueUrl=queue, MessageBody=body)  # the late duplicate
    late = run(fleet_config("w2", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert late.returncode == 0, late.stderr
    assert "up/a.bin is already complete; deleting the message" in late.stderr
    assert "1 file(s) done, 0 failed" in late.stdout
    again = dst.head_object(Bucket=bucket, Key="up/a.bin")
    assert (again["ETag"], again["LastModified"]) == (written["ETag"], written["LastModified"])  # not sent again
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    # Another client's object of the same size, with no mtime recorded: not this file.
    dst.put_object(Bucket=bucket, Key="up/a.bin", Body=os.urandom(CHUNK + 5))
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    resent = run(fleet_config("w3", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert resent.returncode == 0, resent.stderr
    assert "already complete" not in resent.stderr and "1 file(s) done, 0 failed" in resent.stdout
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_duplicate_for_a_complete_object_aborts_only_its_keys_abandoned_uploads(dst, bucket, src_dir, sqs, queues,
                                                                                  fleet_config):  # fmt: skip
    """A message for an object already complete, with unfinished uploads of its key and of a longer key beside it
    (up/a.bin.old, listed under the same prefix).  With AbandonedAfter an hour, the key's upload may be another
    worker's work in progress: both are left as they are.  With AbandonedAfter 0 the key's upload is a duplicate's
    leftover and is aborted; the other key's upload is never touched by this key's message."""
    queue, dlq = queues
    path = src_dir / "a.bin"
    write_file(path, CHUNK + 5)
    modified_earlier(path)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    [body] = take_all(sqs, queue)
    data = path.read_bytes()
    dst.put_object(Bucket=bucket, Key="up/a.bin", Body=data)  # completed by another worker
    live = start_upload(dst, bucket, "up/a.bin", data, CHUNK, parts=(1,))
    beside = start_upload(dst, bucket, "up/a.bin.old", data, CHUNK, parts=(1,))
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    patient = run(fleet_config("w1", SQSIdleSeconds=1, AbandonedAfter=3600), "--sqs-worker", queue)
    assert patient.returncode == 0, patient.stderr
    assert "up/a.bin is already complete; deleting the message" in patient.stderr
    assert "aborting upload" not in patient.stderr
    assert sorted((u["Key"], u["UploadId"]) for u in unfinished_uploads(dst, bucket)) == [
        ("up/a.bin", live), ("up/a.bin.old", beside)]  # fmt: skip
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    eager = run(fleet_config("w2", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert eager.returncode == 0, eager.stderr
    assert f"up/a.bin: aborting upload {s3_upload.short_id(live)}, which nothing adds to any more" in eager.stderr
    assert s3_upload.short_id(beside) not in eager.stderr
    assert [(u["Key"], u["UploadId"]) for u in unfinished_uploads(dst, bucket)] == [("up/a.bin.old", beside)]
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    assert list_keys(dst, bucket) == {"up/a.bin": CHUNK + 5}
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_duplicate_under_skip_check_checksum_is_proven_by_the_engine(dst, bucket, src_dir, sqs, queues,
                                                                       fleet_config):  # fmt: skip
    """SkipCheck checksum: size and time never make an object complete; the worker hands the message to the engine,
    which proves the object equal to the file and skips it (nothing sent), and the message is deleted.  An object of
    the same size with other bytes is sent again."""
    queue, dlq = queues
    path = src_dir / "a.bin"
    write_file(path, CHUNK + 5)
    modified_earlier(path)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    [body] = take_all(sqs, queue)
    dst.put_object(Bucket=bucket, Key="up/a.bin", Body=path.read_bytes())
    written = dst.head_object(Bucket=bucket, Key="up/a.bin")
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    proven = run(fleet_config("w1", SQSIdleSeconds=1, SkipCheck="checksum"), "--sqs-worker", queue)
    assert proven.returncode == 0, proven.stderr
    assert "already complete" not in proven.stderr and "1 file(s) done, 0 failed" in proven.stdout
    again = dst.head_object(Bucket=bucket, Key="up/a.bin")
    assert (again["ETag"], again["LastModified"]) == (written["ETag"], written["LastModified"])  # not sent again
    dst.put_object(Bucket=bucket, Key="up/a.bin", Body=os.urandom(CHUNK + 5))  # same size, other bytes
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    resent = run(fleet_config("w2", SQSIdleSeconds=1, SkipCheck="checksum"), "--sqs-worker", queue)
    assert resent.returncode == 0, resent.stderr
    assert "the object differs" in resent.stderr and "1 file(s) done, 0 failed" in resent.stdout
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_an_upload_that_vanishes_while_a_duplicate_reads_it_is_passed_over(dst, bucket, src_dir, sqs, queues,
                                                                           fleet_config, aws_profiles,
                                                                           dst_server):  # fmt: skip
    """A message for an object already complete; the worker lists a leftover upload of the key, and before it reads
    that upload's parts another worker aborts it (the worker's ListParts is held at a proxy meanwhile): NoSuchUpload
    is no error here, the object is complete, and the message is deleted."""
    queue, dlq = queues
    path = src_dir / "a.bin"
    write_file(path, CHUNK + 5)
    modified_earlier(path)
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    data = path.read_bytes()
    dst.put_object(Bucket=bucket, Key="up/a.bin", Body=data)
    leftover = start_upload(dst, bucket, "up/a.bin", data, CHUNK, parts=(1,))
    gate = Gate(lambda r: r.operation == "ListParts" and r.query.get("uploadId") == leftover)
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        worker = run_worker_held(fleet_config("w1", DesProfileName="held", SQSIdleSeconds=1), queue)
        # Another worker aborts the leftover upload meanwhile.
        out, err = run_while_held(worker, gate, "the worker's ListParts at the proxy", lambda: (
            dst.abort_multipart_upload(Bucket=bucket, Key="up/a.bin", UploadId=leftover)))  # fmt: skip
        assert not proxy.exceptions and not gate.timed_out
    assert worker.returncode == 0, out + err
    assert "up/a.bin is already complete; deleting the message" in err and "1 file(s) done, 0 failed" in out
    assert "aborting upload" not in err and "Traceback" not in err
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0


def test_a_file_changed_while_another_worker_completed_its_old_version_keeps_its_message(
    dst, bucket, src_dir, sqs, queues, fleet_config, aws_profiles, dst_server
):
    """A duplicate delivery: while this worker's part 2 is held at a proxy, another worker completes the object from
    the file as it was, and the file is rewritten.  The held part goes on, the worker finds the file changed and fails
    it (its upload aborted).  The object is the old version, not the file as it is now: the message must stay, and
    the next worker sends the new version.  (Guards work_on_message: it asked whether the object was complete for the
    file as it was when the message arrived, took the old object for done, and deleted the message: exit 0 and
    "1 file(s) done" with the new version never sent.)"""
    queue, dlq = make_queues(sqs, 5)
    path = src_dir / "a.bin"
    write_file(path, CHUNK + 5)
    modified_earlier(path)
    old = path.read_bytes()
    old_mtime = path.stat().st_mtime
    assert run(fleet_config(), "--sqs-send", queue).returncode == 0
    gate = Gate(lambda r: r.operation == "UploadPart" and r.part_number == 2)
    with FaultProxy("127.0.0.1", dst_server.port, match=gate).start() as proxy:
        aws_profiles.add("held", proxy.endpoint_url, *DST_KEYS)
        worker = run_worker_held(fleet_config("w1", DesProfileName="held", SQSIdleSeconds=1), queue)
        try:
            wait_until(lambda: gate.held, "the worker's part 2 at the proxy")
            # The other worker, from the file as it was (recording its mtime, as the tool does).
            dst.put_object(Bucket=bucket, Key="up/a.bin", Body=old,
                           Metadata={s3_upload.MTIME_METADATA: f"{old_mtime:.6f}"})  # fmt: skip
            written = dst.head_object(Bucket=bucket, Key="up/a.bin")["LastModified"].timestamp()
            write_file(path, CHUNK + 5)  # the new version: same size, other bytes, modified after the object
            os.utime(path, (written + 10, written + 10))
            gate.open()
            out, err = worker.communicate(timeout=120)
        finally:
            gate.open()
            worker.kill()
        assert not proxy.exceptions and not gate.timed_out
    assert worker.returncode == 1, out + err
    assert "completed by another worker" not in err and "0 file(s) done, 1 failed" in out, out + err
    assert "left in the queue for another try" in err and "Traceback" not in err
    assert object_md5(dst, bucket, "up/a.bin") == hashlib.md5(old).hexdigest()  # the old version, for now
    assert unfinished_uploads(dst, bucket) == []  # the failed upload aborted
    assert queue_count(sqs, queue) == 1  # the message stays
    wait_until(lambda: visible_count(sqs, queue) == 1, "the message visible again (4 s)", timeout=30)
    nxt = run(fleet_config("w2", SQSIdleSeconds=1), "--sqs-worker", queue)
    assert nxt.returncode == 0, nxt.stderr
    assert object_md5(dst, bucket, "up/a.bin") == md5_file(path)
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0
