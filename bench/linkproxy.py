"""An emulated long, lossy link for the bench (stdlib only): a TCP relay between the clients and a local S3 server
that delays, rate-caps and now and then resets their connections, like a cross-border path (AWS global <-> China).

    proxy = LinkProxy(("127.0.0.1", server_port), rtt=0.150, conn_rate=2 * MiB, shared_rate=32 * MiB,
                      reset_rate=0.005, seed=1).start()      # its own process; clients use proxy.endpoint_url
    proxy.clear(seed=2)     # counters and history to zero, a new seed for the reset draws
    proxy.stats()           # {"bytes_up": ..., "requests": ..., "resets": ..., "ops": {...}, ...}
    proxy.history()         # every request since clear(): its connection, S3 operation, size and timings
    proxy.kill_all()        # RST every open connection (the bench's crash case: a killed client's buffers are lost)
    proxy.stop()

On the command line: ``python bench/linkproxy.py serve --upstream 127.0.0.1:PORT`` (prints its port, then takes JSON
commands on stdin: {"cmd": "stats"}, {"cmd": "clear", "seed": N}, {"cmd": "set", "knobs": {...}}, {"cmd": "history"},
{"cmd": "kill_all"}; it stops when its stdin closes), and ``python bench/linkproxy.py check``: measures the proxy
against a local sink server (one connection's rate, the shared cap, what a small request costs with and without it,
a reset) and prints a table.

The relay copies bytes: HTTP keep-alive, ``Expect: 100-continue`` (its interim response costs one more round trip,
as on a real path), chunked bodies and anything else pass unchanged.  It follows request and response heads only to
count requests and statuses, to know how many requests are in flight, and to place resets inside request bodies.

Emulated, per connection and direction:

- propagation: bytes reach the far side ``rtt / 2`` after they leave the bottleneck, so a request and its response
  cost one round trip more than on loopback, a new connection one round trip more again (the TCP handshake: its
  first bytes leave ``rtt`` after it was accepted; there is no TLS, so no TLS handshake);
- ``conn_rate``: every connection carries at most this many bytes per second in each direction (on a long path
  with loss, one TCP flow's rate is capped by the loss: the Mathis limit); data leaves in slices of at most 32 KiB
  at that pace, the relay reads no faster, so the sender's socket buffers fill and its writes block;
- ``shared_rate``: all connections together at most this much per direction (the path's capacity), shared
  first-come first-served per slice, so busy connections share it about equally;
- ``reset_rate``: the share of requests with a body (``reset_unit="request"``, the default) whose connection is cut
  with a TCP RST, both sides, at a uniformly random byte of that body; with ``reset_unit="connection"`` the share of
  connections, cut in their first request with a body.  Per request is the default because every client here
  keeps its connections alive for many requests: per connection, a tool that opens 16 connections would meet 0.5 %
  resets 0.08 times a run.  The draws are reproducible: the k-th request with a body since ``clear(seed)`` draws
  from random.Random(f"{seed}|{k}"), whatever the client, so runs with the same seed reset the same request
  numbers at the same byte of their bodies (when the bodies are of the same size).
- ``socket_buffer``: the proxy's sockets get this fixed receive buffer (default 128 KiB, set before the handshake so
  the TCP window follows it), so the proxy itself holds little more than a slice ahead of the pace.

Not emulated: slow start and congestion windows (a new connection gets its full rate at once: real TCP needs a
few round trips, about 1 s at 150 ms, to open its window, which favours clients that open many connections here);
a window limit on bytes in flight (a sender with small socket buffers would be slower on a real path), and the
sender's own socket buffer: on loopback (64 KiB segments) Linux grows it to its maximum (tcp_wmem, 4 MiB here), so a
client's write of a part returns up to ~4 MiB before those bytes have passed the link (on a real 150 ms path at
2 MiB/s it would hold about 1 MiB), and a client killed mid-part would leave that much to drain: see kill_all;
packet loss, retransmissions, jitter and rate variation (the cap is a steady rate); queueing delay; resets in
responses, stalls and FINs mid-message (tests/faultproxy.py does those); DNS.  Plain http only (no TLS).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Callable, Optional

MiB = 1024 * 1024
SLICE = 32 * 1024  # bytes leave the bottleneck in slices of at most this size
QUEUE_SLICES = 64  # slices waiting for their delivery time, per direction (bounds memory: 2 MiB)
BURST = 0.02  # seconds of sending a connection (or the shared path) may catch up after a late timer or idling
MAX_HEAD = 64 * 1024  # a longer head stops the parsing of that connection (bytes still flow)
DEFAULTS = {
    "rtt": 0.150,  # seconds, both directions together
    "conn_rate": 2 * MiB,  # bytes/s per connection and direction (0: unlimited)
    "shared_rate": 32 * MiB,  # bytes/s for all connections together, per direction (0: unlimited)
    "reset_rate": 0.005,  # share of requests with a body (or of connections) reset mid-body
    "reset_unit": "request",  # "request" or "connection"
    "handshake": True,  # a new connection's first bytes leave one rtt after it was accepted
    "socket_buffer": 128 * 1024,  # SO_RCVBUF of the proxy's sockets (0: the kernel's autotuning; see the docstring)
    "seed": 0,
}
COUNTERS = (
    "connections",  # accepted
    "max_connections",  # open at the same time
    "requests",  # request heads seen
    "body_requests",  # requests with a Content-Length body
    "resets",  # connections cut with an RST mid-body
    "unparsed",  # connections whose stream could not be followed (chunked request, head too long): no resets there
    "bytes_up",  # delivered to the server
    "bytes_down",  # delivered to the clients
    "max_in_flight",  # requests sent and not yet answered (final status), at the same time
    "upstream_errors",  # the server refused or broke a connection
)

__all__ = ["DEFAULTS", "LinkProxy", "MiB", "operation"]


def operation(method: str, target: str) -> str:
    """The S3 operation of a request, best effort (path-style addressing)."""
    path, _, query = target.partition("?")
    q = {k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "ListBuckets"
    if method == "PUT":
        if not key:
            return "CreateBucket"
        return "UploadPart" if "partNumber" in q else "PutObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in q else "DeleteObjects" if "delete" in q else "POST"
    if method == "GET":
        if key:
            return "ListParts" if "uploadId" in q else "GetObject"
        return "ListMultipartUploads" if "uploads" in q else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject" if key else "DeleteBucket"
    return method


def _head_fields(head: bytes) -> tuple[list[str], dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return lines[0].split(" ", 2), headers


def _body_length(headers: dict[str, str]) -> Optional[int]:
    """The body length a head announces; None if it cannot be followed (chunked, or up to the close)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    try:
        return int(headers.get("content-length", "0").split(",")[0])
    except ValueError:
        return None


class MessageTracker:
    """Follows HTTP/1.1 message boundaries in one direction of a relayed stream.  ``on_head(head)`` returns the body
    length (None: stop following this stream) and where in the body to cut it (None: nowhere); ``feed`` returns the
    index in its data at which the stream must be cut, or None."""

    def __init__(
        self,
        on_head: Callable[[bytes], tuple[Optional[int], Optional[int]]],
        on_body: Optional[Callable[[bool, bool], None]] = None,
    ):
        self.on_head = on_head
        self.on_body = on_body  # called with (first bytes of this body, last bytes of it) as body bytes pass
        self.state = "head"  # "head", "body" or "off"
        self.buf = bytearray()
        self.left = 0  # body bytes still to come
        self.cut: Optional[int] = None  # body bytes before the cut
        self.body_first = False  # the next body bytes are the first of their body

    def feed(self, data: bytes) -> Optional[int]:
        pos, n = 0, len(data)
        while pos < n and self.state != "off":
            if self.state == "head":
                before = len(self.buf)
                self.buf += data[pos:]
                end = self.buf.find(b"\r\n\r\n", max(0, before - 3))
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self.state = "off"
                    return None
                head_len = end + 4
                head = bytes(self.buf[:head_len])
                self.buf.clear()
                pos += head_len - before
                if head.startswith(b"\r\n"):  # tolerated empty lines between messages
                    head = head.lstrip(b"\r\n")
                    if not head:
                        continue
                length, self.cut = self.on_head(head)
                if length is None:
                    self.state = "off"
                    return None
                self.left, self.body_first = length, True
                self.state = "body" if length else "head"
                continue
            take = min(self.left, n - pos)
            if self.cut is not None and self.cut < take:
                return pos + self.cut
            if self.cut is not None:
                self.cut -= take
            if self.on_body is not None:
                self.on_body(self.body_first, self.left == take)
            self.body_first = False
            self.left -= take
            pos += take
            if not self.left:
                self.state, self.cut = "head", None
        return None


def _rst(writer: Optional[asyncio.StreamWriter]) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class _Pacer:
    """A link's next free moment: each slice reserves the time it takes at ``rate``."""

    def __init__(self, free_at: float = 0.0):
        self.free_at = free_at


class _Connection:
    def __init__(self, link: Link, number: int, client_writer: asyncio.StreamWriter):
        self.link, self.number = link, number
        self.client_writer = client_writer
        self.upstream_writer: Optional[asyncio.StreamWriter] = None
        self.waiting: collections.deque[dict] = collections.deque()  # requests waiting for their final response
        self.sending: Optional[list] = None  # the history row of the request whose body is passing
        self.reset_pending = False  # reset_unit "connection": cut the first request with a body
        self.dead = False
        self.tasks: list[asyncio.Task] = []

    def kill(self) -> None:
        """RST both sides, stop every task of this connection."""
        if self.dead:
            return
        self.dead = True
        _rst(self.client_writer)
        _rst(self.upstream_writer)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    # -- following the messages --------------------------------------------------------------------------------------

    def on_request(self, head: bytes) -> tuple[Optional[int], Optional[int]]:
        link = self.link
        (method, target, *_), headers = _head_fields(head)
        link.count("requests")
        op = operation(method, target)
        link.ops[op] += 1
        length = _body_length(headers)
        expect = headers.get("expect", "").lower() == "100-continue"
        row = [self.number, op, length or 0, link.now(), None, None, None, None, expect, None]
        entry = {"method": method, "row": row}
        link.history.append(entry["row"])
        self.waiting.append(entry)
        self.sending = entry["row"]
        link.in_flight_changed(+1)
        if length is None:
            link.count("unparsed")
            return None, None
        cut = None
        if length > 0:
            k = link.counters["body_requests"]
            link.count("body_requests")
            rng = random.Random(f"{link.knobs['seed']}|{k}")
            draw, where = rng.random(), rng.randrange(length)
            if link.knobs["reset_unit"] == "request" and draw < link.knobs["reset_rate"]:
                cut = where
            elif self.reset_pending:
                cut, self.reset_pending = where, False
        return length, cut

    def on_request_body(self, first: bool, last: bool) -> None:
        """Body bytes of the latest request passed the link: note when its first and its last did."""
        if self.sending is not None:
            if first:
                self.sending[6] = self.link.now()
            if last:
                self.sending[7] = self.link.now()

    def on_response(self, head: bytes) -> tuple[Optional[int], Optional[int]]:
        (_, status, *_), headers = _head_fields(head)
        code = int(status) if status.isdigit() else 0
        self.link.statuses[str(code)] += 1
        if 100 <= code < 200:  # interim (100 Continue): the request still waits for its answer
            if code == 100 and self.waiting and self.waiting[0]["row"][9] is None:
                self.waiting[0]["row"][9] = self.link.now()
            return 0, None
        entry = self.waiting.popleft() if self.waiting else {"method": "", "row": [0, "", 0, 0, 0, 0]}
        entry["row"][4:6] = [self.link.now(), code]
        method = entry["method"]
        self.link.in_flight_changed(-1)
        if method == "HEAD" or code in (204, 304):
            return 0, None
        return _body_length(headers), None


class Link:
    """The proxy: knobs, counters, the shared pacers, and the connections' coroutines (one event loop)."""

    def __init__(self, upstream: tuple[str, int], **knobs):
        self.upstream = upstream
        self.knobs = dict(DEFAULTS)
        self.set(**knobs)
        self.shared = {"up": _Pacer(), "down": _Pacer()}
        self.connections: set[_Connection] = set()
        self.clear()

    def set(self, **knobs) -> None:
        unknown = set(knobs) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}")
        if knobs.get("reset_unit", "request") not in ("request", "connection"):
            raise ValueError("reset_unit must be 'request' or 'connection'")
        self.knobs.update(knobs)

    def clear(self, seed: Optional[int] = None) -> None:
        if seed is not None:
            self.knobs["seed"] = seed
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.ops: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.cleared_at = time.monotonic()
        self.in_flight, self.in_flight_area, self.in_flight_since = 0, 0.0, self.cleared_at
        self.conn_numbers = 0
        self.history: list[list] = []

    def now(self) -> float:
        """Seconds since clear()."""
        return round(time.monotonic() - self.cleared_at, 4)

    def kill_all(self) -> int:
        """RST every open connection (e.g. when its client was killed: its buffered bytes are lost with it)."""
        connections = list(self.connections)
        for conn in connections:
            conn.kill()
        return len(connections)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def in_flight_changed(self, delta: int) -> None:
        now = time.monotonic()
        self.in_flight_area += self.in_flight * (now - self.in_flight_since)
        self.in_flight = max(0, self.in_flight + delta)
        self.in_flight_since = now
        self.counters["max_in_flight"] = max(self.counters["max_in_flight"], self.in_flight)

    def stats(self) -> dict:
        now = time.monotonic()
        seconds = now - self.cleared_at
        area = self.in_flight_area + self.in_flight * (now - self.in_flight_since)
        return {
            **self.counters,
            "open_connections": len(self.connections),
            "seconds": seconds,
            "mean_in_flight": area / seconds if seconds > 0 else 0.0,
            "ops": dict(self.ops),
            "statuses": dict(self.statuses),
            "knobs": dict(self.knobs),
        }

    # -- connections ---------------------------------------------------------------------------------------------

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        conn = _Connection(self, self.conn_numbers, client_writer)
        self.conn_numbers += 1
        self.count("connections")
        self.connections.add(conn)
        self.counters["max_connections"] = max(self.counters["max_connections"], len(self.connections))
        if self.knobs["reset_unit"] == "connection":
            rng = random.Random(f"{self.knobs['seed']}|connection|{conn.number}")
            conn.reset_pending = rng.random() < self.knobs["reset_rate"]
        try:
            _nodelay(client_writer)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                _small_buffer(sock, self.knobs["socket_buffer"])
                try:
                    await loop.sock_connect(sock, self.upstream)
                except OSError:
                    sock.close()
                    raise
                up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=SLICE)
            except OSError:
                self.count("upstream_errors")
                _rst(client_writer)
                return
            conn.upstream_writer = up_writer
            _nodelay(up_writer)
            handshake = self.knobs["rtt"] if self.knobs["handshake"] else 0.0
            up = self.pipe(
                conn,
                client_reader,
                up_writer,
                "up",
                MessageTracker(conn.on_request, conn.on_request_body),
                accepted + handshake,
            )
            down = self.pipe(conn, up_reader, client_writer, "down", MessageTracker(conn.on_response), accepted)
            conn.tasks = [asyncio.ensure_future(up), asyncio.ensure_future(down)]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        except asyncio.CancelledError:  # the proxy is stopping: end quietly
            conn.kill()
        finally:
            self.connections.discard(conn)
            if conn.waiting:  # requests that will never be answered
                self.in_flight_changed(-len(conn.waiting))
            for writer in (client_writer, conn.upstream_writer):
                if writer is not None and not conn.dead:
                    writer.close()

    async def pipe(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        tracker: MessageTracker,
        free_at: float,
    ) -> None:
        """Read one direction at the link's pace; a second task delivers each slice one-way delay later."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SLICES)
        deliver = asyncio.ensure_future(self.deliver(conn, queue, writer, direction))
        conn.tasks.append(deliver)
        own, shared = _Pacer(free_at), self.shared[direction]
        try:
            while True:
                try:
                    data = await reader.read(SLICE)
                except OSError:  # reset by the peer: pass it on
                    conn.kill()
                    return
                if not data:
                    await queue.put(None)  # EOF: a FIN, after the data before it
                    break
                cut = tracker.feed(data)
                if cut is not None:
                    data = data[:cut]
                knobs = self.knobs
                rate, shared_rate, one_way = knobs["conn_rate"], knobs["shared_rate"], knobs["rtt"] / 2
                n = len(data)
                if own.free_at > loop.time():
                    await asyncio.sleep(own.free_at - loop.time())
                # Each cap is a schedule: a slice that woke up late keeps its place in it (no rate is lost to timer
                # lateness), and an idle connection (or path) banks at most BURST seconds of sending.  A wait for
                # the shared path does not push the connection's own schedule back.
                own_start = max(own.free_at, loop.time() - BURST)
                own.free_at = own_start + (n / rate if rate else 0.0)
                leave = own_start
                if shared_rate:
                    shared_start = max(shared.free_at, loop.time() - BURST)
                    shared.free_at = shared_start + n / shared_rate
                    leave = max(leave, shared_start)
                    if shared_start > loop.time():
                        await asyncio.sleep(shared_start - loop.time())
                # The last byte is through the bottleneck at `arrive`, never earlier than now (banked time speeds up
                # a rate, not the latency), and at the far end one-way later.
                arrive = max(leave + (n / rate if rate else 0.0), loop.time())
                if n:
                    await queue.put((arrive + one_way, data))
                if cut is not None:
                    self.count("resets")
                    await queue.put("reset")  # the bytes before the cut reach the server, then the RST
                    _rst(conn.client_writer)  # the client learns at once
                    break
            await deliver
        except asyncio.CancelledError:
            deliver.cancel()
            raise

    async def deliver(self, conn: _Connection, queue: asyncio.Queue, writer: asyncio.StreamWriter, direction: str):
        loop = asyncio.get_running_loop()
        counter = "bytes_up" if direction == "up" else "bytes_down"
        while True:
            item = await queue.get()
            if item is None:
                if writer.can_write_eof() and not writer.is_closing():
                    try:
                        writer.write_eof()
                    except OSError:
                        pass
                return
            if item == "reset":
                conn.kill()
                return
            at, data = item
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError):
                if direction == "up":
                    self.count("upstream_errors")
                conn.kill()
                return
            self.counters[counter] += len(data)


def _small_buffer(sock: socket.socket, size: int) -> None:
    """A fixed receive buffer (before connect / listen, so the TCP window is sized from it): bounds what a sender
    can push ahead of the link's pace."""
    if size:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------------------------
# The proxy process and its handle
# ---------------------------------------------------------------------------------------------------------------------


def serve(upstream: tuple[str, int], port: int, knobs: dict) -> None:
    """Run the proxy until stdin closes; commands (JSON lines) on stdin, answers on stdout."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        link = Link(upstream, **knobs)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _small_buffer(listener, link.knobs["socket_buffer"])  # accepted sockets inherit it
        listener.bind(("127.0.0.1", port))
        server = await asyncio.start_server(link.handle, sock=listener, limit=SLICE, backlog=1024)
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        done = asyncio.Event()

        def command(line: str) -> dict:
            try:
                cmd = json.loads(line)
                if cmd["cmd"] == "stats":
                    return link.stats()
                if cmd["cmd"] == "clear":
                    link.clear(cmd.get("seed"))
                    return {"ok": True}
                if cmd["cmd"] == "set":
                    link.set(**cmd["knobs"])
                    return {"ok": True}
                if cmd["cmd"] == "history":
                    return {"history": link.history}
                if cmd["cmd"] == "kill_all":
                    return {"killed": link.kill_all()}
                return {"error": f"unknown command {cmd['cmd']!r}"}
            except Exception as e:  # a bad command must not stop the proxy
                return {"error": f"{type(e).__name__}: {e}"}

        def stdin_loop() -> None:
            for line in sys.stdin:
                if line.strip():
                    answer = asyncio.run_coroutine_threadsafe(_call(command, line), loop).result()
                    print(json.dumps(answer), flush=True)
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=stdin_loop, daemon=True).start()
        async with server:
            await done.wait()
            server.close()
            for conn in list(link.connections):
                conn.kill()
            await asyncio.sleep(0.2)  # let the killed connections' handlers end

    asyncio.run(main())


async def _call(function: Callable[[str], dict], line: str) -> dict:
    return function(line)


class LinkProxy:
    """The proxy in its own process (its CPU is its own, and no GIL is shared with the bench).  Use from one thread."""

    def __init__(self, upstream: tuple[str, int], **knobs):
        unknown = set(knobs) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}")
        self.upstream, self.knobs = upstream, knobs
        self.proc: Optional[subprocess.Popen] = None
        self.port, self.endpoint_url = 0, ""

    def start(self) -> LinkProxy:
        argv = [sys.executable, "-I", __file__, "serve", "--upstream", f"{self.upstream[0]}:{self.upstream[1]}"]
        argv += ["--knobs", json.dumps(self.knobs)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("linkproxy did not start")
        self.port = json.loads(line)["port"]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def _command(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer

    def stats(self) -> dict:
        return self._command(cmd="stats")

    def clear(self, seed: Optional[int] = None) -> None:
        self._command(cmd="clear", seed=seed)

    def set(self, **knobs) -> None:
        self._command(cmd="set", knobs=knobs)

    def history(self) -> list[list]:
        """Every request since clear(): [connection number, S3 operation, body bytes, then seconds since clear() when
        its head passed, when its final answer passed (None: never), its status (None: never), when the first and the
        last bytes of its body passed (None: no body, or not yet), whether it asked for 100-continue, and when a 100
        Continue for it passed (None: none)].  "Passed": left the client's end of the link (requests), or the
        server's end (answers); a client that waits for the 100 Continue sends its body after that time."""
        return self._command(cmd="history")["history"]

    def kill_all(self) -> int:
        """RST every open connection; how many there were."""
        return self._command(cmd="kill_all")["killed"]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the proxy exits when its stdin closes
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------------------
# check: does the proxy do what it says?
# ---------------------------------------------------------------------------------------------------------------------


def _sink_server():
    """A local HTTP/1.1 server: PUT reads and drops the body, GET /N answers N bytes; in a thread."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else a response's head and body wait on a delayed ACK (40 ms)

        def do_PUT(self):  # noqa: N802 (http.server's naming)
            left = int(self.headers.get("Content-Length", "0"))
            try:
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    if not data:
                        return
                    left -= len(data)
            except OSError:  # the reset the check asks for
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):  # noqa: N802
            n = int(self.path.strip("/") or 0)
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * min(n, 1 << 20)
            while n:
                self.wfile.write(block[: min(n, len(block))])
                n -= min(n, len(block))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _cpu_seconds(pid: int) -> float:
    """user+sys of a live process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check(size: int = 8 * MiB) -> str:
    """Measure the proxy's rates and delays against a local sink; a markdown table."""
    import http.client
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    sink = _sink_server()
    port = sink.server_address[1]
    body = b"y" * size
    rows = []

    def put(proxy_port: int, expect: bool = False) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=120)
        headers = {"Content-Length": str(size), **({"Expect": "100-continue"} if expect else {})}
        start = time.monotonic()
        conn.request("PUT", "/bucket/key", body=body, headers=headers)
        conn.getresponse().read()
        conn.close()
        return time.monotonic() - start

    def get(proxy_port: int) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=120)
        start = time.monotonic()
        conn.request("GET", f"/{size}")
        conn.getresponse().read()
        conn.close()
        return time.monotonic() - start

    def small(proxy_port: int, n: int = 10) -> tuple[float, float]:
        """(first request on a new connection, median of the next n on it) in seconds."""
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        times = []
        for _ in range(n + 1):
            start = time.monotonic()
            conn.request("GET", "/100")
            conn.getresponse().read()
            times.append(time.monotonic() - start)
        conn.close()
        return times[0], statistics.median(times[1:])

    rtt, rate, shared = DEFAULTS["rtt"], DEFAULTS["conn_rate"], DEFAULTS["shared_rate"]
    with LinkProxy(("127.0.0.1", port), reset_rate=0.0).start() as proxy:
        cpu_before = _cpu_seconds(proxy.pid)
        started = time.monotonic()
        direct_first, direct_next = small(port)
        link_first, link_next = small(proxy.port)
        rows.append(["small GET, new connection", f"{direct_first * 1000:.1f} ms", f"{link_first * 1000:.1f} ms",
                     f"direct + {2 * rtt * 1000:.0f} ms (handshake + 1 RTT)"])  # fmt: skip
        rows.append(["small GET, kept-alive connection (median of 10)", f"{direct_next * 1000:.1f} ms",
                     f"{link_next * 1000:.1f} ms", f"direct + {rtt * 1000:.0f} ms (1 RTT)"])  # fmt: skip
        # A PUT on a new connection: handshake, the body at the connection's rate, half an RTT for its last byte to
        # arrive and half for the answer.
        ideal = size / rate + 2 * rtt
        for label, measure in (("PUT", put), ("PUT with Expect: 100-continue", lambda p: put(p, True)), ("GET", get)):
            seconds = measure(proxy.port)
            # http.client sends the body without waiting for the 100 Continue (botocore waits: one more RTT).
            rows.append([f"1 connection, {label} {size // MiB} MiB", "", f"{seconds:.2f} s = {size / MiB / seconds:.2f}"
                         " MiB/s", f"{ideal:.2f} s ({rate / MiB:g} MiB/s + RTTs)"])  # fmt: skip
        for n in (8, 16, 32):
            start = time.monotonic()
            with ThreadPoolExecutor(n) as pool:
                each = list(pool.map(lambda _: put(proxy.port), range(n)))
            total = time.monotonic() - start
            ideal_n = n * size / min(n * rate, shared) + 2 * rtt
            rows.append([f"{n} connections at once, PUT {size // MiB} MiB each", "",
                         f"{total:.2f} s = {n * size / MiB / total:.1f} MiB/s together "
                         f"({size / MiB / statistics.median(each):.2f} each, median)",
                         f"{ideal_n:.2f} s ({min(n * rate, shared) / MiB:g} MiB/s together)"])  # fmt: skip
        cpu = _cpu_seconds(proxy.pid) - cpu_before
        wall = time.monotonic() - started
        proxy.set(reset_rate=1.0)
        proxy.clear(seed=1)
        try:
            put(proxy.port)
            outcome = "no error (WRONG)"
        except OSError as e:
            outcome = type(e).__name__
        stats = proxy.stats()
        rows.append(["reset_rate 1.0: PUT", "", f"{outcome}; {stats['bytes_up'] / MiB:.2f} MiB reached the server",
                     "a reset mid-body"])  # fmt: skip
        mib = (size * (3 + 8 + 16 + 32)) / MiB
        rows.append(
            ["the proxy's own CPU for the above", "", f"{cpu:.1f} s in {wall:.0f} s ({mib:.0f} MiB relayed)", ""]
        )
    sink.shutdown()
    header = "| measurement | direct | through the proxy | expected |\n|---|---|---|---|\n"
    return header + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the proxy (JSON commands on stdin, stops when stdin closes)")
    run.add_argument("--upstream", required=True, help="HOST:PORT of the server (loopback)")
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--knobs", default="{}", help="JSON object of knobs, e.g. '{\"rtt\": 0.15}'")
    sub.add_parser("check", help="measure the proxy against a local sink server")
    args = parser.parse_args(argv)
    if args.command == "check":
        print(check())
        return 0
    host, _, port = args.upstream.rpartition(":")
    serve((host, int(port)), args.port, json.loads(args.knobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
