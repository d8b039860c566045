"""Fixtures: two real SeaweedFS servers (source account, destination account), AWS profiles that point at them,
fresh buckets per test, and helpers to run the tool exactly as a user does (`python3 s3_upload.py --config ...`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import uuid

import pytest

from seaweed import SeaweedServer, identity

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "s3_upload.py"
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024

DST_KEYS = ("dstAccessKey", "dstSecretKey")
SRC_KEYS = ("srcAccessKey", "srcSecretKey")
READER_KEYS = ("readerAccessKey", "readerSecretKey")
WRITER_KEYS = ("writerAccessKey", "writerSecretKey")
LIMITED_KEYS = ("limitedAccessKey", "limitedSecretKey")
NOREAD_KEYS = ("noreadAccessKey", "noreadSecretKey")
LIMITED_BUCKET = "limited-dest"


@pytest.fixture(scope="session")
def dst_server(tmp_path_factory):
    """The destination account: an admin user, and a read-only user to provoke AccessDenied on writes."""
    server = SeaweedServer(
        tmp_path_factory.mktemp("seaweed-dst"),
        [
            identity("dst", *DST_KEYS),
            identity("reader", *READER_KEYS, actions=("Read", "List")),
            identity("writer", *WRITER_KEYS, actions=("Write",)),  # may not list: AccessDenied at the first listing
            # Lists and writes one bucket only: the destination of a copy whose source it cannot read.
            identity(
                "limited", *LIMITED_KEYS, actions=tuple(f"{a}:{LIMITED_BUCKET}" for a in ("Read", "List", "Write"))
            ),
            # Everything a run asks for, but a bucket policy (``no_get_object``) takes s3:GetObject away from it.
            identity("noread", *NOREAD_KEYS, actions=("Read", "List", "Write")),
        ],
    )
    server.start()
    yield server
    server.stop(grace=0)  # the session's data is thrown away: weed's 2-4 s shutdown would only add time


@pytest.fixture(scope="session")
def src_server(tmp_path_factory):
    """The source account for S3_TO_S3: another server with other credentials (as another account/partition)."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-src"), [identity("src", *SRC_KEYS)])
    server.start()
    yield server
    server.stop(grace=0)  # the session's data is thrown away: weed's 2-4 s shutdown would only add time


@pytest.fixture(scope="session")
def moto_url():
    """moto's in-process server on 127.0.0.1 (S3, SQS, KMS...): lenient, so never the only server a transfer is
    tested on, but the one that has SQS and KMS."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (certfile, keyfile), made by the tests."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory, tls_cert):
    """A SeaweedFS server that also speaks https (``https_endpoint_url``) with the certificate above."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-tls"), [identity("dst", *DST_KEYS)], https_cert=tls_cert)
    server.start()
    yield server
    server.stop(grace=0)  # the session's data is thrown away: weed's 2-4 s shutdown would only add time


@pytest.fixture
def dst(dst_server):
    return dst_server.client(*DST_KEYS)


@pytest.fixture
def src(src_server):
    return src_server.client(*SRC_KEYS)


def new_bucket(client) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    return name


def remove_bucket(client, name: str) -> None:
    """Empty and delete a test's bucket, so a long session does not pile up SeaweedFS collections."""
    try:
        for u in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)
    except Exception:  # best effort: a test that broke the bucket must not fail here
        pass


@pytest.fixture
def bucket(dst):
    name = new_bucket(dst)
    yield name
    remove_bucket(dst, name)


@pytest.fixture
def src_bucket(src):
    name = new_bucket(src)
    yield name
    remove_bucket(src, name)


@pytest.fixture
def aws_profiles(tmp_path, dst_server, monkeypatch):
    """~/.aws/credentials and ~/.aws/config with one profile per account, endpoint_url in each profile.

    Profiles: dst (destination admin), reader (destination, read-only), writer (destination, may not list),
    badsecret (destination, wrong secret),
    src (source server; added by the src_server-using tests through `src_profile`)."""
    aws = tmp_path / "aws"
    aws.mkdir()
    profiles = {
        "dst": (dst_server.endpoint_url, *DST_KEYS),
        "reader": (dst_server.endpoint_url, *READER_KEYS),
        "badsecret": (dst_server.endpoint_url, DST_KEYS[0], "not-the-secret"),
        "writer": (dst_server.endpoint_url, *WRITER_KEYS),
    }
    env = write_profiles(aws, profiles)
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in ("AWS_CA_BUNDLE",):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Profiles(aws, profiles)


class Profiles:
    def __init__(self, directory: pathlib.Path, profiles: dict):
        self.directory, self.profiles = directory, profiles
        self.ca_bundles: dict[str, str] = {}  # profile -> ca_bundle (https endpoints with a test-made certificate)

    def add(self, name: str, endpoint: str, access_key: str, secret_key: str, ca_bundle: str = "") -> None:
        self.profiles[name] = (endpoint, access_key, secret_key)
        if ca_bundle:
            self.ca_bundles[name] = ca_bundle
        write_profiles(self.directory, self.profiles, self.ca_bundles)


@pytest.fixture
def no_get_object(dst, bucket, aws_profiles, dst_server):
    """A profile "noread" that may do all a run does on the test bucket but s3:GetObject (so HeadObject too), as an
    IAM policy without that action gives: its identity may Read, List and Write (SeaweedFS's Read covers
    ListMultipartUploads, which a run needs), and the bucket's policy denies it s3:GetObject.  A HEAD it makes is
    answered 403, also for a key that does not exist."""
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::000000000000:user/noread"}, "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]}  # fmt: skip
    dst.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    aws_profiles.add("noread", dst_server.endpoint_url, *NOREAD_KEYS)
    return "noread"


@pytest.fixture
def src_profile(aws_profiles, src_server):
    aws_profiles.add("src", src_server.endpoint_url, *SRC_KEYS)
    return "src"


def write_profiles(directory: pathlib.Path, profiles: dict, ca_bundles: dict | None = None) -> dict[str, str]:
    creds, config = [], []
    for name, (endpoint, key, secret) in profiles.items():
        creds.append(f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
        section = f"[profile {name}]\nregion = us-east-1\nendpoint_url = {endpoint}\n"
        if ca_bundles and name in ca_bundles:
            section += f"ca_bundle = {ca_bundles[name]}\n"
        config.append(section)
    (directory / "credentials").write_text("\n".join(creds))
    (directory / "config").write_text("\n".join(config))
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(directory / "credentials"),
        "AWS_CONFIG_FILE": str(directory / "config"),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Writing configs and running the tool
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def src_dir(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    return d


def write_config(path: pathlib.Path, values: dict) -> pathlib.Path:
    lines = ["Megabytes = 1024 * 1024"]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_config(tmp_path, src_dir, bucket, aws_profiles):
    """Write a LOCAL_TO_S3 config into tmp_path; keyword arguments override any option."""

    def make(**overrides) -> pathlib.Path:
        values = {
            "JobType": "LOCAL_TO_S3",
            "SrcFileIndex": "*",
            "S3Prefix": "up/",
            "DesProfileName": "dst",
            "DesBucket": bucket,
            "SrcDir": str(src_dir),
            "SrcBucket": "no",
            "SrcProfileName": "no",
            "ChunkSize": 5 * MiB,
            "MaxRetry": 2,
            "MaxThread": 4,
            "MaxParallelFile": 2,
            "IgnoreSmallFile": False,
            "StorageClass": "STANDARD",
            "ifVerifyMD5": False,
            "DontAskMeToClean": True,
            "LoggingLevel": "INFO",
            "RetryDelay": 0.05,
            "LogDir": str(tmp_path / "log"),
            # The uploads these tests leave or make by hand stand for runs long dead: abandoned at once.  The tests of
            # concurrent runs set the default (an hour) back.
            "AbandonedAfter": 0,
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not DROP}
        return write_config(tmp_path / f"config_{uuid.uuid4().hex[:6]}.py", values)

    return make


DROP = object()  # make_config(Name=DROP) leaves the option out


class Run:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        self.output = proc.stdout + proc.stderr

    @property
    def log_text(self) -> str:
        """The run's log file (its path is the first line on stdout): the full settings are there."""
        match = re.match(r"Logging to file: (.+)", self.stdout)
        assert match, self.stdout
        return pathlib.Path(match.group(1)).read_text(encoding="utf-8")

    @property
    def bytes_sent(self) -> int:
        return int(re.search(r"\((\d+) bytes\) sent", self.output).group(1))

    def __repr__(self) -> str:
        return f"Run(code={self.code})\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def tool_command(config: pathlib.Path) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(config)]


def run_tool(config: pathlib.Path, stdin: str | None = None, cwd=None, timeout: float = 300, extra=()) -> Run:
    """Run the tool as a user does; stdin None means closed (end of input); ``extra``: flags after --config."""
    proc = subprocess.run(
        [*tool_command(config), *extra],
        input=stdin if stdin is not None else None,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or config.parent,
    )
    return Run(proc)


# ---------------------------------------------------------------------------------------------------------------------
# Checking the bytes
# ---------------------------------------------------------------------------------------------------------------------


def write_file(path: pathlib.Path, size: int, seed: int | None = None) -> str:
    """A file of `size` pseudo-random bytes; returns its MD5 hex."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size) if seed is None else random_bytes(size, seed)
    path.write_bytes(data)
    return md5(data)


def modified_earlier(path: pathlib.Path, seconds: float = 3600) -> None:
    """Set the file's mtime back, as for a file that was there long before its object was written (S3 keeps
    LastModified to the second: a file written in the same second as its object would look modified after it)."""
    import time

    then = time.time() - seconds
    os.utime(path, (then, then))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def random_bytes(size: int, seed: int) -> bytes:
    """Reproducible bytes (randbytes overflows past 256 MiB at once, so in blocks)."""
    import random

    rng, block = random.Random(seed), 16 * MiB
    return b"".join(rng.randbytes(min(block, size - i)) for i in range(0, size, block))


def md5_file(path: pathlib.Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def object_md5(client, bucket: str, key: str) -> str:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    h = hashlib.md5()
    for block in iter(lambda: body.read(4 * MiB), b""):
        h.update(block)
    return h.hexdigest()


def assert_tree_uploaded(client, bucket: str, prefix: str, root: pathlib.Path) -> int:
    """Every file under root is at prefix + its relative path, byte-identical; returns how many were checked."""
    checked = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(root).as_posix()
        assert object_md5(client, bucket, key) == md5_file(path), key
        checked += 1
    return checked


def list_keys(client, bucket: str, prefix: str = "") -> dict[str, int]:
    keys = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return keys


def load_report(path) -> dict:
    """A --report file (JSON Lines: a header, a line per file, per missing object and per listing error, a summary)
    as one dict: the header's fields, the summary's, "files" (the file lines, in key order), "missing" (keys) and
    "listing_errors"."""
    import json

    lines = [json.loads(line) for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines() if line]
    document = dict(lines[0], **lines[-1]["summary"])
    entries = lines[1:-1]
    document["files"] = sorted((e for e in entries if e.get("status") not in (None, "missing")), key=lambda e: e["key"])
    document["missing"] = [e["key"] for e in entries if e.get("status") == "missing"]
    document["listing_errors"] = [e["listing_error"] for e in entries if "listing_error" in e]
    return document


def run_while_held(proc: subprocess.Popen, gate, what: str, act) -> tuple[str, str]:
    """While ``gate`` (a faultproxy.Gate) holds a request of the tool process ``proc``, ``act()`` (another client or
    run does its part); then the request goes on, and ``proc``'s (stdout, stderr) when it ends.  Whatever fails, the
    gate is opened and the process killed."""
    try:
        wait_until(lambda: gate.held, what)
        act()
        gate.open()
        return proc.communicate(timeout=120)
    finally:
        gate.open()
        proc.kill()


def is_probe(request) -> bool:
    """A proxied request is the run's PutObject that asks whether the store checks conditional writes (at a key of
    its own beside the first key written: s3_upload.probe_conditional_writes), not one of the job's writes."""
    return ".s3_upload-probe-" in request.key


def unfinished_uploads(client, bucket: str) -> list[dict]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


# ---------------------------------------------------------------------------------------------------------------------
# moto's S3 (keys with '..' and backslashes kept apart, as AWS does) and waiting on server state
# ---------------------------------------------------------------------------------------------------------------------

MOTO_KEYS = ("testing", "testing")


@pytest.fixture(scope="session")
def moto_s3(moto_url):
    import boto3
    import botocore.config

    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=MOTO_KEYS[0],
                        aws_secret_access_key=MOTO_KEYS[1],
                        config=botocore.config.Config(s3={"addressing_style": "path"}))  # fmt: skip


@pytest.fixture
def moto_bucket(moto_s3, aws_profiles, moto_url):
    """A fresh bucket on moto, and a "moto" profile that reaches it."""
    aws_profiles.add("moto", moto_url, *MOTO_KEYS)
    name = new_bucket(moto_s3)
    yield name
    remove_bucket(moto_s3, name)


def wait_until(condition, what: str, timeout: float = 60, interval: float = 0.02):
    """Poll until condition() returns something true, and return it; fail the test (not hang) after timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def parts_on_server(client, bucket: str, key: str) -> list[int]:
    """Part numbers of the first unfinished upload of key ([] if none)."""
    uploads = [u for u in unfinished_uploads(client, bucket) if u["Key"] == key]
    if not uploads:
        return []
    parts = client.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", [])
    return sorted(p["PartNumber"] for p in parts)


def without_permission_override():
    """preexec_fn: the child (and the tool it execs) loses the root powers that ignore file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a directory of mode 0644 cannot be entered, as for any user.
    For a non-root user this changes nothing: file modes already apply."""
    if os.geteuid() != 0:
        return
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the bounding set, so exec drops it
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def damage_part(monkeypatch, number: int | None) -> list[int]:
    """For an in-process run (s3_upload.main): the first UploadPart of part ``number`` (None: the first PutObject)
    sends one byte other than the tool read and hashed, as if damaged on the way, so that its Content-MD5 no longer
    matches.  Returns the parts damaged so far (0 for a PutObject)."""
    import s3_upload

    real_client, damaged = s3_upload.Endpoints.client, []
    operation = "put_object" if number is None else "upload_part"

    def client(self, profile, option, endpoint_url=""):
        s3 = real_client(self, profile, option, endpoint_url)
        if not hasattr(s3, "damages"):
            send = getattr(s3, operation)

            def damaging(**kwargs):
                if not damaged and kwargs.get("PartNumber") == number and ".s3_upload-probe-" not in kwargs["Key"]:
                    body = bytearray(kwargs["Body"])
                    body[len(body) // 2] ^= 0xFF
                    kwargs["Body"] = bytes(body)
                    damaged.append(number or 0)
                return send(**kwargs)

            setattr(s3, operation, damaging)
            s3.damages = True
        return s3

    monkeypatch.setattr(s3_upload.Endpoints, "client", client)
    return damaged


def in_process_logging(monkeypatch, request) -> None:
    """main() sets the tool's loggers up (propagate, level): put them back after the test."""
    import functools

    import s3_upload

    for logger in (s3_upload.log, s3_upload.report):
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        request.addfinalizer(functools.partial(logger.setLevel, logger.level))


def leave_unfinished(make, aws_profiles, dst_server, fail_part: int = 2, **overrides) -> Run:
    """Run the tool once so that it stops with an unfinished upload of its own (marker and parts 1..fail_part-1 on
    S3): part fail_part is refused with 500s and MaxRetry=0, one part at a time.  ``make`` builds the config.  The
    data parts after it are refused too: the one thread may take the next part before the failure stops the file."""
    import s3_upload
    from faultproxy import FaultProxy

    def refused(r) -> bool:
        return r.operation == "UploadPart" and fail_part <= (r.part_number or 0) < s3_upload.MARKER_TWIN_PART

    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=500, error_code="InternalError", match=refused)
        aws_profiles.add("interrupted", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(
            make(**{"DesProfileName": "interrupted", "MaxThread": 1, "MaxParallelFile": 1, "MaxRetry": 0, **overrides})
        )
    assert run.code == 1, run
    return run


# ---------------------------------------------------------------------------------------------------------------------
# A store that pages its listings as AWS does
# ---------------------------------------------------------------------------------------------------------------------


class AwsPaging:
    """A ``rewrite_response`` (and ``match``) for FaultProxy that answers ListParts and ListMultipartUploads in pages
    of ``page_size``, as AWS pages them, in front of SeaweedFS, which does not (it answers ListParts in one page unless
    MaxParts is given, and pages uploads by UploadIdMarker only, taking KeyMarker as an exact key; moto ignores
    MaxUploads and the markers, and pages ListParts by list index).

    - ListParts: the server's own answer (it lists the parts after PartNumberMarker) cut to ``page_size`` parts, with
      IsTruncated and NextPartNumberMarker (the last part number of the page).
    - ListMultipartUploads: built from the server's complete listing under the request's Prefix (read with
      ``client``, directly, not through the proxy), ordered by key then UploadId, continued after KeyMarker (and
      UploadIdMarker, when given) as AWS does, with NextKeyMarker and NextUploadIdMarker.

    ``pages`` records (operation, query) of every page answered, to check what the client asked for."""

    def __init__(self, client, page_size: int):
        self.client, self.page_size = client, page_size
        self.pages: list[tuple[str, dict[str, str]]] = []
        self.proxy = None  # set by the aws_pages fixture

    def match(self, request) -> bool:
        return request.operation in ("ListParts", "ListMultipartUploads")

    def __call__(self, request, status: int, headers: dict, body: bytes) -> bytes | None:
        import xml.etree.ElementTree as ET

        if status != 200:
            return None
        root = ET.fromstring(body)
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        if ns:
            ET.register_namespace("", ns[1:-1])

        def child(name: str, text: str) -> None:
            for old in root.findall(ns + name):
                root.remove(old)
            ET.SubElement(root, ns + name).text = text

        self.pages.append((request.operation, request.query))
        if request.operation == "ListParts":
            # In part number order, as AWS lists them (SeaweedFS lists them as text: 10000 before 9999).
            parts = root.findall(ns + "Part")
            for part in parts:
                root.remove(part)
            parts.sort(key=lambda part: int(part.find(ns + "PartNumber").text))
            for part in parts[: self.page_size]:
                root.append(part)
            page = parts[: self.page_size]
            child("MaxParts", str(self.page_size))
            child("IsTruncated", "true" if len(parts) > self.page_size else "false")
            child("NextPartNumberMarker", page[-1].find(ns + "PartNumber").text if page else "0")
        else:
            query = request.query
            key_marker, id_marker = query.get("key-marker", ""), query.get("upload-id-marker", "")
            listed = [
                u
                for p in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=request.bucket, Prefix=query.get("prefix", "")
                )
                for u in p.get("Uploads", [])
            ]
            listed.sort(key=lambda u: (u["Key"], u["UploadId"]))
            if id_marker:
                rest = [u for u in listed if (u["Key"], u["UploadId"]) > (key_marker, id_marker)]
            else:
                rest = [u for u in listed if u["Key"] > key_marker]
            page = rest[: self.page_size]
            for old in root.findall(ns + "Upload"):
                root.remove(old)
            for u in page:
                upload = ET.SubElement(root, ns + "Upload")
                for name, text in (("Key", u["Key"]), ("UploadId", u["UploadId"]),
                                   ("Initiated", u["Initiated"].strftime("%Y-%m-%dT%H:%M:%S.000Z")),
                                   ("StorageClass", "STANDARD")):  # fmt: skip
                    ET.SubElement(upload, ns + name).text = text
            child("KeyMarker", key_marker)
            child("UploadIdMarker", id_marker)
            child("MaxUploads", str(self.page_size))
            truncated = len(rest) > self.page_size
            child("IsTruncated", "true" if truncated else "false")
            child("NextKeyMarker", page[-1]["Key"] if truncated else "")
            child("NextUploadIdMarker", page[-1]["UploadId"] if truncated else "")
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


@pytest.fixture
def aws_pages(dst_server, dst, aws_profiles):
    """The destination server behind a proxy that pages ListParts and ListMultipartUploads as AWS does (one entry per
    page unless ``page_size`` is changed), reached with the profile "paged" or ``proxy.endpoint_url``."""
    from faultproxy import FaultProxy

    paging = AwsPaging(dst, page_size=1)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(match=paging.match, rewrite_response=paging)
        aws_profiles.add("paged", proxy.endpoint_url, *DST_KEYS)
        paging.proxy = proxy
        yield paging
        assert not proxy.exceptions, proxy.exceptions


@pytest.fixture
def s3_job(make_config, src_profile, src_bucket):
    """make_config for an S3_TO_S3 job from the source bucket's data/, streamed through this machine."""

    def make(**overrides):
        values = dict(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName=src_profile, S3Prefix="data/",
                      CopyMode="stream")  # fmt: skip
        values.update(overrides)
        return make_config(**values)

    return make
