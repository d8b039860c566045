"""The tool against the boto3/botocore versions it allows, on a real SeaweedFS.  CI runs the whole suite twice: on
the oldest supported Python with the lowest allowed SDK (.ci/constraints-oldest.txt) and on the newest Python with
the newest SDK, so a test here that needs an old botocore runs in the first of those runs."""

from __future__ import annotations

import base64
import hashlib

import botocore
import botocore.exceptions
import pytest

import s3_upload
from conftest import MiB

# From this version on botocore itself forgets, at each new request, a final answer that a server gave to an
# earlier `Expect: 100-continue` request on the same connection (the stall below cannot happen there).
BOTOCORE_KEEPS_NO_EARLY_ANSWER = (1, 43, 77)
BOTOCORE_VERSION = tuple(int(n) for n in botocore.__version__.split(".")[:3])
READ_TIMEOUT = 5.0  # seconds: how long a stalled request waits here (the tool's default is 120)


def content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def tool_endpoints() -> s3_upload.Endpoints:
    """The tool's own client factory, for the "dst" profile (SeaweedFS), one part at a time."""
    settings = s3_upload.Settings(des_bucket="unused", src_dir=".", des_profile="dst", max_thread=1,
                                  max_parallel_file=1, read_timeout=READ_TIMEOUT)  # fmt: skip
    return s3_upload.Endpoints(settings)


def record_expect_headers(client) -> list[tuple[str, str, object]]:
    """(method, URL, Expect header or None) of every request the client sends from now on, as it goes on the wire."""
    sent: list[tuple[str, str, object]] = []

    def record(request, **_kwargs) -> None:
        sent.append((request.method, request.url, request.headers.get("Expect")))

    client.meta.events.register("before-send.s3", record)
    return sent


def put_empty_then_small(client, bucket: str) -> None:
    """A zero-byte PutObject, then a PutObject with a body on the same (pooled) connection.  With retries off, a
    stalled second request raises ReadTimeoutError after READ_TIMEOUT."""
    client.put_object(Bucket=bucket, Key="empty", Body=b"", ContentMD5=content_md5(b""))
    client.put_object(Bucket=bucket, Key="small", Body=b"12345", ContentMD5=content_md5(b"12345"))


def test_no_request_waits_for_100_continue(aws_profiles, bucket, dst):
    """Every botocore: the tool's clients send no `Expect: 100-continue`, with a body or without one (a round trip
    saved per request; SeaweedFS answers an empty one at once, without 100 Continue)."""
    client = tool_endpoints().client("dst", "DesProfileName")
    sent = record_expect_headers(client)
    put_empty_then_small(client, bucket)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    client.upload_part(Bucket=bucket, Key="parts", UploadId=upload_id, PartNumber=1, Body=b"",
                       ContentMD5=content_md5(b""))  # fmt: skip
    client.upload_part(Bucket=bucket, Key="parts", UploadId=upload_id, PartNumber=2, Body=b"x" * MiB,
                       ContentMD5=content_md5(b"x" * MiB))  # fmt: skip
    # PutObject empty, PutObject, CreateMultipartUpload, UploadPart empty, UploadPart
    assert [expect for _method, _url, expect in sent] == [None] * 5, sent
    assert dst.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert dst.get_object(Bucket=bucket, Key="small")["Body"].read() == b"12345"


@pytest.mark.skipif(
    BOTOCORE_VERSION >= BOTOCORE_KEEPS_NO_EARLY_ANSWER,
    reason=f"botocore {botocore.__version__} cannot stall here (fixed in 1.43.77); CI's lowest-SDK run has this test",
)
def test_a_zero_byte_put_does_not_stall_the_next_request_on_its_connection(aws_profiles, bucket):
    """botocore before 1.43.77: after a final answer to an `Expect: 100-continue` request (SeaweedFS gives one at
    once to a zero-byte PutObject), the next 100-continue request on that connection reads its response with the
    old answer's status line, misparses it and waits for the read timeout (the tool's default: 120 s)."""
    endpoints = tool_endpoints()
    # Control, to prove this botocore has the fault: a client of the same config without the tool's handler.
    bare = s3_upload.make_session("dst").client("s3", config=endpoints.client_config)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        put_empty_then_small(bare, bucket)
    # The tool's client: the request after the empty one is answered, every time.
    client = endpoints.client("dst", "DesProfileName")
    for _ in range(3):
        put_empty_then_small(client, bucket)
