"""Fleet mode: moto's server provides SQS on 127.0.0.1, SeaweedFS provides S3.  A sender queues one message per
file; worker processes transfer them with the normal engine.  Every test checks the bytes, that nothing unfinished
is left on S3 and what is left in the queues."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import boto3
import pytest

from conftest import (
    DST_KEYS,
    MiB,
    assert_tree_uploaded,
    list_keys,
    tool_command,
    unfinished_uploads,
    write_file,
)
from faultproxy import FaultProxy

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
    queue, dlq = make_queues(sqs, 5)  # the killed worker's file is received at least twice
    write_file(src_dir / "big.bin", 12 * CHUNK + 11)
    for i in range(2):
        write_file(src_dir / "mid" / f"m{i}.bin", 2 * CHUNK + i)
    for i in range(6):
        write_file(src_dir / "small" / f"s{i}.txt", 1000 * i + 1)
    write_file(src_dir / "empty.dat", 0)
    # The destination through a bandwidth cap, so the big file takes seconds and can be caught mid-upload.
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(bandwidth=12 * MiB)
        aws_profiles.add("slow", proxy.endpoint_url, *DST_KEYS)
        sent = run(fleet_config(DesProfileName="slow"), "--sqs-send", queue)
        assert sent.returncode == 0, sent.stderr
        assert "queued 10 file(s)" in sent.stdout
        assert queue_count(sqs, queue) == 10

        names = ["w1", "w2", "w3"]
        # Idle exit later than the visibility timeout: the killed worker's message must reappear for the others.
        workers = {n: start_worker(fleet_config(n, DesProfileName="slow", SQSIdleSeconds=8), queue) for n in names}
        victim, deadline = None, time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            uploads = [u for u in unfinished_uploads(dst, bucket) if u["Key"] == "up/big.bin"]
            if uploads:
                parts = dst.list_parts(Bucket=bucket, Key="up/big.bin", UploadId=uploads[0]["UploadId"])
                if len(parts.get("Parts", [])) >= 3:
                    victim = next((n for n in names if "big.bin" in worker_log(tmp_path, n)), None)
            time.sleep(0.05)
        assert victim is not None, "no worker was caught uploading big.bin"
        workers[victim].send_signal(signal.SIGKILL)
        codes = {n: p.wait(timeout=120) for n, p in workers.items()}
    assert codes[victim] == -signal.SIGKILL
    assert all(code == 0 for n, code in codes.items() if n != victim), codes
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 10
    assert unfinished_uploads(dst, bucket) == []
    assert queue_count(sqs, queue) == 0 and queue_count(sqs, dlq) == 0
    # The killed worker's file was resumed from its parts on S3, not restarted from zero.
    survivors = "".join(worker_log(tmp_path, n) for n in names if n != victim)
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
