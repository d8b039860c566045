"""A fault-injection HTTP/1.1 proxy for tests (stdlib only): put it between the tool (or a boto3 client) and an
S3 server on 127.0.0.1, then turn faults on and off while requests flow.

    with FaultProxy("127.0.0.1", dst_server.port, seed=1).start() as proxy:
        s3 = dst_server.client(*DST_KEYS, endpoint_url=proxy.endpoint_url)
        proxy.error_rate = 0.2                              # 20 % of requests get 503 SlowDown
        proxy.set(reset_rate=1.0, match=lambda r: r.operation == "UploadPart")
        ...
        assert proxy.stats["resets"] >= 1

For the tool, point a profile's endpoint_url at ``proxy.endpoint_url`` (e.g. ``aws_profiles.add(...)``).

It is also a forward proxy for plain http (``HTTP_PROXY=proxy.endpoint_url``): a request in absolute form, e.g.
``GET http://bkt.oss-test.local:PORT/key HTTP/1.1``, goes to the same fixed upstream in origin form (``GET /key``) with
its Host header unchanged, so a client reaches virtual-hosted names that do not resolve here.  With
``virtual_host_domain="oss-test.local"``, ``Request.bucket`` / ``key`` read a Host ``<bucket>.oss-test.local[:port]``
as the bucket (virtual-hosted style); ``Request.absolute_form`` tells how the request came.

Knobs (attributes; also keyword arguments of the constructor; set them at any time, or several at once with
``set(**knobs)``; ``clear_faults()`` turns all off; each request reads a snapshot of them when its head arrives;
all default off):

- ``error_rate``: share of requests the proxy answers itself, without forwarding, with an S3 XML error
  ``error_status`` / ``error_code`` (default 503 SlowDown; e.g. 500 InternalError). botocore parses the code.
- ``reset_rate``: share of requests whose connection is cut with a TCP RST (SO_LINGER 0) after a random number of
  bytes of the request (head + body, relayed to the server) or of the response (head + body, relayed to the client).
- ``stall_rate``: share of requests where the proxy stops forwarding at such a random point: the connections stay
  open, no more bytes pass, until the client gives up (its read timeout), ``stop()``, or ``stall_seconds`` have
  passed (then the client connection is reset). A stall in the request direction does not read from the client,
  so its send buffer fills and blocks, as on a dead network path.  What the client then reports depends on how much
  of the body was left, against the socket buffers (several MiB on loopback, sized by the kernel as it goes): if the
  rest fits, the client has sent it all and waits for an answer until its read timeout (botocore:
  ReadTimeoutError); if not, its send blocks until its send timeout, which urllib3 sets to the *connect* timeout, and
  botocore reports that as ConnectionClosedError ("Connection was closed before we received a valid response").
  Both are the client's own timeout: the proxy closes nothing during a stall unless ``stall_seconds`` is set.
- ``fault_where``: where resets and stalls happen: ``"any"`` (default: request or response at random when the
  request has a body, else response), ``"request"`` or ``"response"``. A reset in the response of a PutObject or
  UploadPart means the server stored the data but the client never learnt it.
- ``bandwidth``: bytes/second cap (None: unlimited), per direction, shared by all connections.
- ``outage``: when True every request gets ``error_status`` / ``error_code`` (a server down for a while).
- ``match``: ``Callable[[Request], bool]`` or None; limits every fault above (outage included) and
  ``rewrite_response`` to the requests it accepts. ``Request.operation`` names the S3 operation.
- ``drop_request_headers``: names of request headers the proxy removes before forwarding, e.g.
  ``("If-Match", "If-None-Match")`` for a store that ignores them.  They are signed, so only a server that does not
  check signatures (moto) takes such a request.  Not limited by ``match``.
- ``rewrite_response``: ``Callable[[Request, int, dict, bytes], bytes | None]`` or None, called with the request,
  the status, the response headers (lower-case names; mutate the dict to change them) and the whole body
  (de-chunked); returns the new body (None: unchanged). The proxy then sends it with a fresh Content-Length.

Order of checks per matching request: outage, error, reset, stall (at most one fault per request).

``Gate(which)`` is a ``match`` that faults nothing but holds the requests ``which`` accepts (before a byte of them is
forwarded) until ``gate.open()``: a test keeps a run from getting past a point until the test has acted (killed the
tool, started another worker...), instead of betting that the run is still going when it acts.

Randomness: every decision comes from ``random.Random`` seeded with the proxy's ``seed`` plus the request's
identity (method, path, query without uploadId, Range headers) and how many times that identity was seen before, so
a run with the same seed faults the same requests even when threads interleave differently.

Counters: ``stats`` (requests, errors, resets, stalls, rewrites, connections, bytes_up, bytes_down; bytes are what
reached the server / the client, heads included), ``history`` (every Request, with ``fault`` and ``status`` filled
in), and ``exceptions`` (unexpected errors inside the proxy or in ``match`` / ``rewrite_response``: keep it empty).

Limits: plain http only (no TLS, no CONNECT); path-style addressing for ``Request.bucket`` / ``key`` unless the Host
is under ``virtual_host_domain``; repeated response header names are joined with ", " when ``rewrite_response``
re-serialises a response. The proxy answers ``Expect: 100-continue`` itself (and strips the header upstream; botocore
does not sign it); when it answers such a request with an error it closes the connection, as the client will not send
the body.

Whenever a connection ends mid-message (a fault, a stall given up, ``stop()``) the client gets an RST, never a FIN:
http.client takes an EOF inside the response headers as their end, so a FIN right after "HTTP/1.1 200 OK" would make
botocore report a successful PutObject / UploadPart without an ETag.
"""

from __future__ import annotations

import html
import http
import random
import select
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

__all__ = ["FaultProxy", "Gate", "Request"]

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
FAULTS_OFF: dict[str, Any] = {
    "error_rate": 0.0,
    "error_status": 503,
    "error_code": "SlowDown",
    "error_message": "",  # the error's <Message> ("": a stock one for the code)
    "reset_rate": 0.0,
    "stall_rate": 0.0,
    "stall_seconds": None,
    "fault_where": "any",
    "bandwidth": None,
    "outage": False,
    "match": None,
    "rewrite_response": None,
    "drop_request_headers": (),
}
MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
}


@dataclass(eq=False)
class Request:
    """One request as the proxy saw it. ``fault``: None, "error", "outage", "reset-request", "reset-response",
    "stall-request", "stall-response" or "rewrite"; ``status``: what the client got (None if it got no status)."""

    method: str
    target: str  # path?query, as sent upstream (origin form)
    headers: dict[str, str]  # lower-case names
    fault: Optional[str] = None
    status: Optional[int] = None
    absolute_form: bool = False  # the client sent it as to a forward proxy (http://host/path?query)
    virtual_host_domain: str = ""  # the proxy's: a Host under it names the bucket

    @property
    def path(self) -> str:
        """The URL-decoded path, e.g. /bucket/some key (virtual-hosted: /some key)."""
        return urllib.parse.unquote(self.target.partition("?")[0])

    @property
    def host(self) -> str:
        """The Host header without its port, lower case."""
        return urllib.parse.urlsplit("//" + self.headers.get("host", "")).hostname or ""

    @property
    def virtual_hosted(self) -> bool:
        """Is the bucket in the Host header (``<bucket>.<virtual_host_domain>``) rather than in the path?"""
        domain = self.virtual_host_domain.lower()
        return bool(domain) and self.host.endswith("." + domain)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (first value of each); ``?uploads`` gives {"uploads": ""}."""
        pairs = urllib.parse.parse_qsl(self.target.partition("?")[2], keep_blank_values=True)
        return {k: v for k, v in reversed(pairs)}

    @property
    def bucket(self) -> str:
        if self.virtual_hosted:
            return self.host[: -len(self.virtual_host_domain) - 1]
        return self.path.lstrip("/").partition("/")[0]

    @property
    def key(self) -> str:
        if self.virtual_hosted:
            return self.path[1:]
        return self.path.lstrip("/").partition("/")[2]

    @property
    def part_number(self) -> Optional[int]:
        """UploadPart / UploadPartCopy: the part number (None for other requests)."""
        number = self.query.get("partNumber")
        return int(number) if number and number.isdigit() else None

    @property
    def operation(self) -> str:
        """The S3 operation, best effort (path-style): UploadPart, PutObject, GetObject, CompleteMultipartUpload..."""
        m, q, h, key = self.method, self.query, self.headers, self.key
        if not self.bucket:
            return "ListBuckets"
        if not key:
            by_method = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
            if m == "GET":
                if "uploads" in q:
                    return "ListMultipartUploads"
                return "ListObjectsV2" if q.get("list-type") == "2" else "ListObjects"
            return "DeleteObjects" if m == "POST" and "delete" in q else by_method.get(m, "Unknown")
        if m == "PUT":
            if "partNumber" in q and "uploadId" in q:
                return "UploadPartCopy" if "x-amz-copy-source" in h else "UploadPart"
            if "tagging" in q:
                return "PutObjectTagging"
            return "CopyObject" if "x-amz-copy-source" in h else "PutObject"
        if m == "POST":
            if "uploads" in q:
                return "CreateMultipartUpload"
            return "CompleteMultipartUpload" if "uploadId" in q else "Unknown"
        if m == "GET":
            return "ListParts" if "uploadId" in q else "GetObjectTagging" if "tagging" in q else "GetObject"
        if m == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        return "HeadObject" if m == "HEAD" else "Unknown"

    def identity(self) -> str:
        """What makes two requests 'the same' for the reproducible fault draws (uploadId is random per run)."""
        q = sorted((k, v) for k, v in self.query.items() if k != "uploadId")
        ranges = [self.headers.get(h, "") for h in ("range", "x-amz-copy-source-range")]
        path = f"/{self.bucket}{self.path}" if self.virtual_hosted else self.path
        return repr((self.method, path, q, ranges))


class Gate:
    """A ``match`` (see the module docstring) that holds each request ``which`` accepts until ``open()``, or for
    ``limit`` seconds at most (then it lets it go and sets ``timed_out``, so that a failed test does not hang), and
    faults none.  ``held``: the requests held so far.  While a request is held its body waits in the socket buffers:
    a client that sends more than they hold gives up after its send timeout (botocore: the connect timeout) and sends
    it again, held again.  Open it in a ``finally``: ``FaultProxy.stop()`` does not wake a held request."""

    def __init__(self, which: Callable[[Request], bool], limit: float = 60):
        self.which, self.limit = which, limit
        self.held: list[Request] = []
        self.timed_out = False
        self._open = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> bool:
        if not self._open.is_set() and self.which(request):
            with self._lock:
                self.held.append(request)
            if not self._open.wait(self.limit):
                self.timed_out = True
        return False

    def open(self) -> None:
        self._open.set()


class _Cut(Exception):
    """Raised by _Out when the planned reset/stall point is reached."""


class _Closed(Exception):
    """The peer closed (or broke) a connection while the proxy needed more bytes."""


@dataclass
class _Plan:
    kind: Optional[str] = None  # None, "error", "outage", "reset", "stall"
    where: str = "response"  # "request" / "response" for reset and stall
    fraction: float = 0.0  # where in the message (head + body) the cut falls, 0 <= fraction < 1
    knobs: dict = field(default_factory=dict)


class _Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, bytearray()

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(CHUNK)
        except OSError:
            data = b""
        self.buf += data
        return bool(data)

    def readline(self) -> bytes:
        """One line with its CRLF; b"" at EOF before any byte; _Closed on EOF mid-line."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise _Closed("line too long")
            if not self._fill():
                if self.buf:
                    raise _Closed("EOF mid-line")
                return b""

    def read_some(self, n: int) -> bytes:
        """1..n bytes; b"" at EOF."""
        if not self.buf and not self._fill():
            return b""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_exact(self, n: int) -> Iterator[bytes]:
        while n > 0:
            data = self.read_some(min(n, CHUNK))
            if not data:
                raise _Closed("EOF mid-body")
            n -= len(data)
            yield data


def _read_head(reader: _Reader) -> Optional[list[bytes]]:
    """The start line and header lines (raw, with CRLF), None at a clean EOF before a new message."""
    lines = []
    while True:
        line = reader.readline()
        if not line:
            if lines:
                raise _Closed("EOF in head")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # tolerated empty lines between messages
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line)


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _body(reader: _Reader, headers: dict[str, str], until_close: bool) -> tuple[Iterator[bytes], Optional[int]]:
    """The raw body bytes (chunk framing kept) and their length if known."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader), None
    if "content-length" in headers:
        n = int(headers["content-length"].split(",")[0])
        return reader.read_exact(n), n
    if until_close:
        return _until_close(reader), None
    return iter(()), 0


def _chunked(reader: _Reader) -> Iterator[bytes]:
    while True:
        line = reader.readline()
        if not line:
            raise _Closed("EOF in chunked body")
        yield line
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers up to the empty line
                line = reader.readline()
                if not line:
                    raise _Closed("EOF in trailers")
                yield line
                if line in (b"\r\n", b"\n"):
                    return
        yield from reader.read_exact(size + 2)  # data + CRLF


def _until_close(reader: _Reader) -> Iterator[bytes]:
    while data := reader.read_some(CHUNK):
        yield data


def _dechunk(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = raw.index(b"\n", pos)
        size = int(raw[pos:end].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 1 : end + 1 + size]
        pos = end + 1 + size + 2


def _rst(sock: Optional[socket.socket]) -> None:
    """Close with a TCP RST instead of a FIN."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _close(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def error_response(status: int, code: str, head_only: bool = False, close: bool = False, message: str = "") -> bytes:
    """An S3-style XML error response (what a real S3 sends for SlowDown / InternalError)."""
    message = html.escape(message or MESSAGES.get(code, f"Injected fault {code}."))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
    ).encode()
    try:
        reason = "Slow Down" if code == "SlowDown" else http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        "x-amz-request-id: fault\r\nServer: faultproxy\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    ).encode()
    return head if head_only else head + body


def _join(threads: list[Optional[threading.Thread]], until: float) -> None:
    for t in threads:
        if t is not None and t is not threading.current_thread():
            t.join(max(0.0, until - time.monotonic()))


class _Throttle:
    """A shared rate limit: each send reserves the next free slot of the link's time."""

    def __init__(self):
        self.lock, self.next = threading.Lock(), 0.0

    def delay(self, n: int, rate: float) -> float:
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now)
            self.next = start + n / rate
            return start - now


class _Out:
    """Sends one message (head + body) in one direction: counts bytes, applies the bandwidth cap, and raises _Cut
    once `cut_at` bytes have passed."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket, direction: str, cut_at: Optional[int] = None):
        self.proxy, self.sock, self.direction, self.cut_at, self.sent = proxy, sock, direction, cut_at, 0

    def send(self, data: bytes) -> None:
        if self.cut_at is not None and self.sent + len(data) > self.cut_at:
            self._send(data[: self.cut_at - self.sent])
            raise _Cut()
        self._send(data)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            rate = self.proxy.bandwidth
            n = len(view) if not rate else min(len(view), max(1024, int(rate) // 50))
            if rate:
                wait = self.proxy._throttles[self.direction].delay(n, rate)
                if wait > 0 and self.proxy._stopping.wait(wait):
                    raise _Closed("proxy stopping")
            self.sock.sendall(view[:n])
            self.sent += n
            self.proxy._count("bytes_up" if self.direction == "up" else "bytes_down", n)
            view = view[n:]


class _Connection:
    """One client connection and its own upstream connection."""

    def __init__(self, proxy: FaultProxy, client: socket.socket):
        self.proxy, self.client = proxy, client
        self.upstream: Optional[socket.socket] = None
        self.up_reader: Optional[_Reader] = None
        self.thread: Optional[threading.Thread] = None

    def wake(self, client_how: int) -> None:
        """From stop(): wakes blocked recv calls (and sends, with SHUT_RDWR). Upstream is shut both ways; the
        client only for reading first: a FIN after a partial response head would look like a whole response to
        http.client (it takes EOF as the end of the headers), so the thread itself ends it with an RST."""
        for sock, how in ((self.client, client_how), (self.upstream, socket.SHUT_RDWR)):
            if sock is not None:
                try:
                    sock.shutdown(how)
                except OSError:
                    pass

    def run(self) -> None:
        clean = False
        try:
            self._serve()
            clean = True  # at a message boundary
        except (_Closed, OSError):
            pass
        except Exception as e:  # a bug, or match / rewrite_response raised
            self.proxy.exceptions.append(e)
        finally:
            # Mid-message the client gets an RST, never a FIN: see wake().
            (_close if clean else _rst)(self.client)
            _close(self.upstream)
            self.proxy._forget(self)

    def _serve(self) -> None:
        reader = _Reader(self.client)
        while not self.proxy._stopping.is_set():
            lines = _read_head(reader)
            if lines is None:
                return
            method, target, version = (lines[0].decode("latin-1").split(" ", 2) + ["", ""])[:3]
            absolute = target.lower().startswith("http://")
            if absolute:  # as to a forward proxy: the upstream gets the origin form (the Host header says the rest)
                origin = urllib.parse.urlsplit(target)
                target = (origin.path or "/") + (f"?{origin.query}" if origin.query else "")
                lines[0] = f"{method} {target} {version}".encode("latin-1")
            req = Request(method.upper(), target, _parse_headers(lines[1:]), absolute_form=absolute,
                          virtual_host_domain=self.proxy.virtual_host_domain)  # fmt: skip
            plan = self.proxy._plan(req)
            body, length = _body(reader, req.headers, until_close=False)
            expect = req.headers.get("expect", "").lower() == "100-continue"
            client_close = "close" in req.headers.get("connection", "").lower() or version.strip() == "HTTP/1.0"
            if plan.kind in ("error", "outage"):
                req.fault, req.status = plan.kind, plan.knobs["error_status"]
                # With Expect: 100-continue the client will not send the body: answer and close. Else discard it.
                if not expect:
                    for _ in body:
                        pass
                close = expect or client_close
                head_only = req.method == "HEAD"
                self.client.sendall(error_response(req.status, plan.knobs["error_code"], head_only, close,
                                                   plan.knobs["error_message"]))  # fmt: skip
                if close:
                    self._linger_close()
                    return
                continue
            if expect:
                self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if not self._forward(req, plan, lines, body, length) or client_close:
                return

    def _linger_close(self) -> None:
        """Close after a final answer without leaving unread bytes (which would turn the close into an RST)."""
        try:
            self.client.shutdown(socket.SHUT_WR)
            self.client.settimeout(2)
            while self.client.recv(CHUNK):
                pass
        except OSError:
            pass

    def _connect_upstream(self) -> None:
        if self.upstream is not None:
            readable, _, _ = select.select([self.upstream], [], [], 0)
            if not readable:
                return
            _close(self.upstream)  # the server closed the idle connection (or sent junk)
        self.upstream = socket.create_connection(self.proxy.upstream, timeout=10)
        self.upstream.settimeout(None)
        self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.up_reader = _Reader(self.upstream)

    def _cut_at(self, plan: _Plan, where: str, head: bytes, length: Optional[int]) -> Optional[int]:
        if plan.kind not in ("reset", "stall") or plan.where != where:
            return None
        return int(plan.fraction * (len(head) + (length or 0)))

    def _fault(self, req: Request, plan: _Plan) -> None:
        """The cut point was reached: RST both connections, or stall and then close."""
        req.fault = f"{plan.kind}-{plan.where}"
        if plan.kind == "reset":
            self.proxy._count("resets")
            _rst(self.client)
            _rst(self.upstream)
            raise _Closed("reset")
        self.proxy._count("stalls")
        seconds = plan.knobs["stall_seconds"]
        deadline = None if seconds is None else time.monotonic() + seconds
        poller = select.poll()
        poller.register(self.client, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        while not self.proxy._stopping.is_set():
            if poller.poll(100):
                raise _Closed("client gave up")
            if deadline is not None and time.monotonic() >= deadline:
                _rst(self.client)
                raise _Closed("stall over")
        raise _Closed("proxy stopping")

    def _forward(self, req: Request, plan: _Plan, lines: list[bytes], body, length) -> bool:
        """Relays one request and its response; False when the connection must close."""
        hop_by_hop = (b"expect:", b"proxy-connection:", b"proxy-authorization:")  # for this proxy, not upstream
        hop_by_hop += tuple(name.lower().encode("latin-1") + b":" for name in plan.knobs["drop_request_headers"])
        head = b"".join(line for line in lines if not line.lower().startswith(hop_by_hop)) + b"\r\n"
        cut_at = self._cut_at(plan, "request", head, length)
        if cut_at is not None and length is None:  # chunked: buffer it to know where its middle is
            body = list(body)
            length = sum(map(len, body))
            cut_at = self._cut_at(plan, "request", head, length)
        try:
            self._connect_upstream()
        except OSError:
            return self._bad_gateway(req)
        up = _Out(self.proxy, self.upstream, "up", cut_at)
        try:
            up.send(head)
            for piece in body:
                up.send(piece)
        except _Cut:
            self._fault(req, plan)
        except OSError:
            return self._bad_gateway(req)
        # The response (1xx interim responses are dropped: the proxy answered Expect itself).
        while True:
            status_lines = _read_head(self.up_reader)
            if status_lines is None:
                return self._bad_gateway(req)
            parts = status_lines[0].decode("latin-1").split(" ", 2)
            status = int(parts[1])
            if status >= 200 or status == 101:
                break
        resp_headers = _parse_headers(status_lines[1:])
        no_body = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        resp_body, resp_len = (iter(()), 0) if no_body else _body(self.up_reader, resp_headers, until_close=True)
        close = (
            "close" in resp_headers.get("connection", "").lower()
            or parts[0] == "HTTP/1.0"
            or (resp_len is None and "chunked" not in resp_headers.get("transfer-encoding", "").lower())
        )
        resp_head = b"".join(status_lines) + b"\r\n"
        rewrite = plan.knobs.get("rewrite_response")
        if rewrite is not None and no_body:  # headers only (HEAD): the Content-Length stays the one given
            before = dict(resp_headers)
            rewrite(req, status, resp_headers, b"")
            if resp_headers != before:
                req.fault = "rewrite"
                self.proxy._count("rewrites")
                text = "".join(f"{k}: {v}\r\n" for k, v in resp_headers.items())
                resp_head = status_lines[0] + text.encode("latin-1") + b"\r\n"
        elif rewrite is not None:
            raw = b"".join(resp_body)
            chunked = "chunked" in resp_headers.get("transfer-encoding", "").lower()
            data = _dechunk(raw) if chunked else raw
            before = dict(resp_headers)
            new = rewrite(req, status, resp_headers, data)
            if (new is not None and new != data) or resp_headers != before:
                req.fault = "rewrite"
                self.proxy._count("rewrites")
            data = data if new is None else new
            resp_headers.pop("transfer-encoding", None)
            resp_headers["content-length"] = str(len(data))
            text = "".join(f"{k}: {v}\r\n" for k, v in resp_headers.items())
            resp_head = status_lines[0] + text.encode("latin-1") + b"\r\n"
            resp_body, resp_len = [data], len(data)
        cut_at = self._cut_at(plan, "response", resp_head, resp_len)
        if cut_at is not None and resp_len is None:
            resp_body = list(resp_body)
            cut_at = self._cut_at(plan, "response", resp_head, sum(map(len, resp_body)))
        down = _Out(self.proxy, self.client, "down", cut_at)
        try:
            down.send(resp_head)
            req.status = status
            for piece in resp_body:
                down.send(piece)
        except _Cut:
            self._fault(req, plan)
        return not close

    def _bad_gateway(self, req: Request) -> bool:
        if self.proxy._stopping.is_set():
            raise _Closed("proxy stopping")
        req.status = 502
        self.client.sendall(error_response(502, "BadGateway", req.method == "HEAD", close=True))
        return False


class FaultProxy:
    """See the module docstring. ``start()`` listens on 127.0.0.1:<free port>; ``stop()`` closes everything."""

    # The knobs (defaults in FAULTS_OFF).
    error_rate: float
    error_status: int
    error_code: str
    reset_rate: float
    stall_rate: float
    stall_seconds: Optional[float]
    fault_where: str
    bandwidth: Optional[float]
    outage: bool
    match: Optional[Callable[[Request], bool]]
    rewrite_response: Optional[Callable[[Request, int, dict, bytes], Optional[bytes]]]
    drop_request_headers: tuple[str, ...]

    def __init__(self, upstream_host: str, upstream_port: int, seed: int = 0, virtual_host_domain: str = "", **knobs):
        self.upstream = (upstream_host, upstream_port)
        self.seed = seed
        self.virtual_host_domain = virtual_host_domain
        self.port = 0
        self.endpoint_url = ""
        for name, value in FAULTS_OFF.items():
            setattr(self, name, value)
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "errors", "resets", "stalls", "rewrites", "connections", "bytes_up", "bytes_down"), 0
        )
        self.history: list[Request] = []
        self.exceptions: list[BaseException] = []
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._throttles = {"up": _Throttle(), "down": _Throttle()}
        self._stopping = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._connections: set[_Connection] = set()
        self.set(**knobs)

    # -- knobs ---------------------------------------------------------------------------------------------------

    def set(self, **knobs) -> FaultProxy:
        """Set several knobs at once (atomically for the requests that follow); unknown names raise."""
        unknown = set(knobs) - set(FAULTS_OFF)
        if unknown:
            raise TypeError(f"unknown fault knobs: {sorted(unknown)}")
        if knobs.get("fault_where", "any") not in ("any", "request", "response"):
            raise ValueError("fault_where must be 'any', 'request' or 'response'")
        with self._lock:
            for name, value in knobs.items():
                setattr(self, name, value)
        return self

    def clear_faults(self) -> FaultProxy:
        """All knobs back to off (counters and history stay)."""
        return self.set(**FAULTS_OFF)

    # -- life cycle ----------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept, name=f"faultproxy-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        """Close the listener and every connection (an RST where a message was under way), and join the threads
        (at most `timeout` seconds)."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.wake(socket.SHUT_RD)
        deadline = time.monotonic() + timeout
        _join([self._accept_thread] + [c.thread for c in connections], min(deadline, time.monotonic() + 1))
        stuck = [c for c in connections if c.thread.is_alive()]
        for conn in stuck:  # blocked sending to a client that stopped reading
            conn.wake(socket.SHUT_RDWR)
        _join([c.thread for c in stuck], deadline)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy({self.endpoint_url or 'stopped'} -> {self.upstream[0]}:{self.upstream[1]}, {self.stats})"

    # -- internals -----------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client)
            conn.thread = threading.Thread(target=conn.run, name=f"faultproxy-{self.port}-conn", daemon=True)
            with self._lock:
                if self._stopping.is_set():
                    _close(client)
                    return
                self._connections.add(conn)
                self.stats["connections"] += 1
            conn.thread.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def _plan(self, req: Request) -> _Plan:
        """Decide this request's fault from a snapshot of the knobs and its own reproducible random draws."""
        with self._lock:
            knobs = {name: getattr(self, name) for name in FAULTS_OFF}
            self.stats["requests"] += 1
            self.history.append(req)
            ident = req.identity()
            nth = self._seen.get(ident, 0)
            self._seen[ident] = nth + 1
        match = knobs["match"]
        if match is not None and not match(req):
            knobs["rewrite_response"] = None
            return _Plan(knobs=knobs)
        rng = random.Random(f"{self.seed}|{ident}|{nth}")
        u_error, u_reset, u_stall, u_where, fraction = (rng.random() for _ in range(5))
        has_body = int(req.headers.get("content-length", "0").split(",")[0] or 0) > 0 or (
            "chunked" in req.headers.get("transfer-encoding", "").lower()
        )
        where = knobs["fault_where"]
        if where == "any":
            where = "request" if has_body and u_where < 0.5 else "response"
        plan = _Plan(where=where, fraction=fraction, knobs=knobs)
        if knobs["outage"]:
            plan.kind = "outage"
        elif u_error < knobs["error_rate"]:
            plan.kind = "error"
        elif u_reset < knobs["reset_rate"]:
            plan.kind = "reset"
        elif u_stall < knobs["stall_rate"]:
            plan.kind = "stall"
        if plan.kind in ("outage", "error"):
            self._count("errors")
        return plan
