"""The fault-injection proxy itself, against a real SeaweedFS (and a tiny stdlib server for chunked bodies)."""

from __future__ import annotations

import http.client
import http.server
import io
import re
import threading
import time

import pytest
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ReadTimeoutError,
)

from conftest import DST_KEYS, MiB, md5, random_bytes, wait_until
from faultproxy import FaultProxy, Request


@pytest.fixture
def proxy(dst_server):
    with FaultProxy("127.0.0.1", dst_server.port, seed=7) as p:
        yield p
        assert p.exceptions == []


def via(dst_server, proxy: FaultProxy, **config):
    """A boto3 client that talks to the destination server through the proxy, without botocore retries."""
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config)
    return dst_server.client(*DST_KEYS, endpoint_url=proxy.endpoint_url, config=config)


def error_code(exc: pytest.ExceptionInfo) -> tuple[str, int]:
    resp = exc.value.response
    return resp["Error"]["Code"], resp["ResponseMetadata"]["HTTPStatusCode"]


def test_passthrough_put_get_multipart(dst_server, dst, bucket, proxy):
    s3 = via(dst_server, proxy)
    s3.put_object(Bucket=bucket, Key="small", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"hello"
    assert s3.head_object(Bucket=bucket, Key="small")["ContentLength"] == 5
    s3.put_object(Bucket=bucket, Key="file-like", Body=io.BytesIO(b"x" * 1000))  # Expect: 100-continue
    assert dst.get_object(Bucket=bucket, Key="file-like")["Body"].read() == b"x" * 1000

    part1, part2 = random_bytes(5 * MiB, 1), random_bytes(123, 2)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=io.BytesIO(part2))["ETag"]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]] == [1, 2]
    parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    assert md5(s3.get_object(Bucket=bucket, Key="mp")["Body"].read()) == md5(part1 + part2)
    assert "mp" in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]

    ops = [r.operation for r in proxy.history]
    assert ops[:4] == ["PutObject", "GetObject", "HeadObject", "PutObject"]
    assert {"CreateMultipartUpload", "UploadPart", "ListParts", "CompleteMultipartUpload", "ListObjectsV2"} <= set(ops)
    assert all(r.fault is None and r.status == 200 for r in proxy.history)
    s = proxy.stats
    assert s["requests"] == len(ops) and s["errors"] == s["resets"] == s["stalls"] == 0
    assert s["bytes_up"] > 5 * MiB and s["bytes_down"] > 5 * MiB
    assert s["connections"] == 1  # keep-alive: one connection for everything


def test_error_rate_answers_slowdown_and_keeps_the_connection(dst_server, bucket, proxy):
    s3 = via(dst_server, proxy)
    proxy.error_rate = 1.0
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)
    assert error_code(exc) == ("SlowDown", 503)
    with pytest.raises(ClientError) as exc:  # Expect: 100-continue, answered without reading the body
        s3.put_object(Bucket=bucket, Key="k", Body=io.BytesIO(b"x" * 1000))
    assert error_code(exc) == ("SlowDown", 503)
    proxy.set(error_status=500, error_code="InternalError")
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket)
    assert error_code(exc) == ("InternalError", 500)
    assert proxy.stats["errors"] == 3 and proxy.stats["bytes_up"] == 0  # nothing reached the server

    proxy.clear_faults()
    s3.put_object(Bucket=bucket, Key="k", Body=b"fine")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"fine"
    assert [r.fault for r in proxy.history] == ["error"] * 3 + [None, None]


def test_outage_until_switched_off(dst_server, bucket, proxy):
    s3 = via(dst_server, proxy)
    proxy.outage = True
    for _ in range(3):
        with pytest.raises(ClientError) as exc:
            s3.list_objects_v2(Bucket=bucket)
        assert error_code(exc) == ("SlowDown", 503)
    with pytest.raises(ClientError) as exc:  # HEAD: no body, so botocore only has the status
        s3.head_bucket(Bucket=bucket)
    assert error_code(exc)[1] == 503
    proxy.outage = False
    s3.list_objects_v2(Bucket=bucket)
    assert [r.fault for r in proxy.history] == ["outage"] * 4 + [None]


@pytest.mark.parametrize("where, stored", [("request", False), ("response", True)])
def test_reset_cuts_a_put_with_a_connection_error(dst_server, dst, bucket, proxy, where, stored):
    s3 = via(dst_server, proxy)
    proxy.set(reset_rate=1.0, fault_where=where)
    with pytest.raises((ConnectionClosedError, BotoCoreError)):
        s3.put_object(Bucket=bucket, Key="k", Body=random_bytes(MiB, 3))
    assert proxy.stats["resets"] == 1 and proxy.history[0].fault == f"reset-{where}"
    if where == "request":
        assert 0 < proxy.stats["bytes_up"] < MiB
    # Cut in the request: the server never got it all. Cut in the response: stored, but the client does not know.
    keys = [o["Key"] for o in dst.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == (["k"] if stored else [])


def test_reset_during_a_get_response(dst_server, dst, bucket, proxy):
    data = random_bytes(4 * MiB, 4)
    dst.put_object(Bucket=bucket, Key="big", Body=data)
    s3 = via(dst_server, proxy)
    proxy.reset_rate = 1.0  # a GET has no body: the cut falls in the response
    with pytest.raises(BotoCoreError):  # ResponseStreamingError (or ConnectionClosedError if cut in the head)
        s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert proxy.history[0].fault == "reset-response"
    assert 0 < proxy.stats["bytes_down"] < 4 * MiB
    proxy.reset_rate = 0
    assert md5(s3.get_object(Bucket=bucket, Key="big", Range="bytes=0-99")["Body"].read()) == md5(data[:100])


def test_stall_until_the_client_times_out(dst_server, bucket, proxy):
    """The connection stays open and silent: only the client's read timeout ends the call (a connection the proxy
    closed would be a ConnectionClosedError, not a ReadTimeoutError)."""
    s3 = via(dst_server, proxy, read_timeout=1)
    proxy.stall_rate = 1.0
    with pytest.raises(ReadTimeoutError):
        s3.list_objects_v2(Bucket=bucket)
    # The stall starts once the server has answered: on a busy machine that can be after the client gave up.
    wait_until(lambda: proxy.stats["stalls"], "the stall")
    assert proxy.stats["stalls"] == 1 and proxy.history[0].fault == "stall-response"  # a GET has no body to stall


@pytest.mark.parametrize("where", ["request", "response"])
def test_stall_seconds_then_reset(dst_server, bucket, proxy, where):
    """After stall_seconds the proxy resets the client: the call fails with a connection error, long before the
    client's own read timeout (30 s) would have ended it with a ReadTimeoutError."""
    s3 = via(dst_server, proxy, read_timeout=30)
    proxy.set(stall_rate=1.0, stall_seconds=0.5, fault_where=where)
    with pytest.raises(BotoCoreError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 100_000)
    assert not isinstance(exc.value, ReadTimeoutError), exc.value
    assert proxy.stats["stalls"] == 1 and proxy.history[0].fault == f"stall-{where}"


@pytest.mark.parametrize("where", ["request", "response"])
def test_stop_does_not_hang_on_a_stalled_connection(dst_server, bucket, where):
    # A response cut short by a FIN right after its status line would pass for a whole one (http.client takes EOF
    # as the end of the headers): stop() must end a stalled response with an RST so the call fails.
    proxy = FaultProxy("127.0.0.1", dst_server.port, stall_rate=1.0, fault_where=where).start()
    s3 = via(dst_server, proxy, read_timeout=30)
    errors = []

    def call():
        try:
            s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 10_000_000)
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_until(lambda: proxy.stats["stalls"], "the stall", timeout=30)
    proxy.stop()
    assert not proxy._connections  # every connection thread ended (each removes itself), none is left stuck
    thread.join(5)  # generous: only catches a client that hangs
    assert not thread.is_alive() and len(errors) == 1


def test_bandwidth_cap(dst_server, bucket, proxy):
    s3 = via(dst_server, proxy)
    proxy.bandwidth = 2 * MiB
    t0 = time.monotonic()
    s3.put_object(Bucket=bucket, Key="k", Body=random_bytes(2 * MiB, 5))
    assert time.monotonic() - t0 >= 0.8


def test_match_limits_faults_to_upload_part(dst_server, bucket, proxy):
    s3 = via(dst_server, proxy)
    proxy.set(error_rate=1.0, match=lambda r: "partNumber" in r.query)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part")
    assert error_code(exc) == ("SlowDown", 503)
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)
    assert [(r.operation, r.fault) for r in proxy.history] == [
        ("CreateMultipartUpload", None),
        ("UploadPart", "error"),
        ("AbortMultipartUpload", None),
    ]


def test_rewrite_response_replaces_etags(dst_server, bucket, proxy):
    s3 = via(dst_server, proxy)

    def rewrite(req: Request, status: int, headers: dict, body: bytes):
        if req.operation == "UploadPart":
            headers["etag"] = '"00000000000000000000000000000000"'  # headers can be changed in place
            return None
        return re.sub(rb"<ETag>.*?</ETag>", b"<ETag>&#34;deadbeef-1&#34;</ETag>", body)

    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    proxy.set(rewrite_response=rewrite, match=lambda r: r.operation in ("UploadPart", "CompleteMultipartUpload"))
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    assert etag == '"00000000000000000000000000000000"'
    proxy.match = lambda r: r.operation == "CompleteMultipartUpload"
    real = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"][0]["ETag"]
    assert real == f'"{md5(b"part")}"'
    parts = {"Parts": [{"PartNumber": 1, "ETag": real}]}
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload=parts)
    assert done["ETag"] == '"deadbeef-1"'
    assert s3.head_object(Bucket=bucket, Key="mp")["ETag"] != '"deadbeef-1"'
    assert proxy.stats["rewrites"] == 2


def test_same_seed_same_faults(dst_server, bucket):
    def pattern(seed: int) -> list[bool]:
        with FaultProxy("127.0.0.1", dst_server.port, seed=seed, error_rate=0.5) as proxy:
            s3 = via(dst_server, proxy)
            failed = []
            for _ in range(16):
                try:
                    s3.head_bucket(Bucket=bucket)
                    failed.append(False)
                except ClientError:
                    failed.append(True)
            return failed

    first = pattern(1)
    assert pattern(1) == first and 2 <= sum(first) <= 14
    assert pattern(2) != first


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers POST with the de-chunked request body, sent back chunked in two pieces."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = len(body) // 2
        for piece in (body[:half], body[half:], b""):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_chunked_bodies_and_head_are_relayed():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with FaultProxy("127.0.0.1", server.server_address[1]) as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            conn.request("POST", "/echo", body=iter([b"abc", b"defgh"]), encode_chunked=True)
            assert conn.getresponse().read() == b"abcdefgh"
            conn.request("HEAD", "/x")
            resp = conn.getresponse()
            assert (resp.status, resp.getheader("Content-Length"), resp.read()) == (200, "12345", b"")
            conn.request("POST", "/echo", body=b"plain")
            assert conn.getresponse().read() == b"plain"

            proxy.rewrite_response = lambda req, status, headers, body: body.upper()
            conn.request("POST", "/echo", body=iter([b"abc", b"def"]), encode_chunked=True)
            resp = conn.getresponse()
            assert (resp.read(), resp.getheader("Content-Length")) == (b"ABCDEF", "6")
            assert proxy.stats["connections"] == 1

            proxy.set(rewrite_response=None, reset_rate=1.0, fault_where="request")
            conn.request("POST", "/echo", body=iter([b"x" * 1000] * 10), encode_chunked=True)
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                conn.getresponse().read()
            assert proxy.history[-1].fault == "reset-request" and proxy.exceptions == []
    finally:
        server.shutdown()
        server.server_close()
