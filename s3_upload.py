#!/usr/bin/env python3
"""s3_upload: multi-threaded, resumable, MD5-verified upload of large files to Amazon S3.

A Python port of the "AWS S3 multi-thread resumable upload tool v1.0" (James Huang, Apache-2.0).

Three jobs share one engine:
  LOCAL_TO_S3   a local directory (or one file in it) -> a destination bucket
  S3_TO_S3      a source bucket -> a destination bucket, each with its own credential profile
                (e.g. AWS global -> AWS China); bytes stream through this machine by ranged GET + UploadPart.
  ALIOSS_TO_S3  an Aliyun OSS bucket -> a destination bucket: S3_TO_S3 with OSS's S3-compatible API as the source.

The user edits ``s3_upload_config.py`` and runs ``python3 s3_upload.py``.  The script reads like the data flows:

  1. Settings   the config module, validated once, frozen
  2. Endpoints  one boto3 session per profile; one retry policy for every request
  3. List       LocalSource / S3Source behind one small interface; ListObjectsV2 read by a lean parser
  4. Match      both sides walked directory by directory, each directory's files matched in lock step (March)
  5. Plan       per file, as the listing goes: skip / put / multipart (resume or restart), the part layout
  6. Move       MaxParallelFile file threads; one budget of MaxParallelFile x MaxThread requests for every part
  7. Prove      the ETag from our own part digests, the source's checksum or ETag, S3's pinned copy; ifVerifyMD5
  8. Report     logging, the CLEAN prompt, the dry run, the final comparison, the closing block, --report
  9. Run a job  the command line, --check, and run_job, which ties the sections together
  10. Fleet     an SQS queue of files, and workers on many machines running each through the same engine

S3 is the only state: a rerun (on this machine or another) resumes from ListMultipartUploads and ListParts.
The module is importable; ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import difflib
import email.utils
import functools
import hashlib
import html
import importlib.util
import itertools
import json
import logging
import math
import mimetypes
import os
import queue
import re
import signal
import stat
import sys
import threading
import time
import traceback
import types
import urllib.parse
import zlib
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence

import boto3
import botocore.config
import botocore.exceptions
import botocore.handlers
import botocore.parsers
import botocore.utils
import urllib3.exceptions

try:  # the live progress bar; without it, progress is a log line every few seconds
    import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__version__ = "1.1.0"

# ----------------------------------------------------------------------------------------------------------------------
# S3 limits and exit codes
# ----------------------------------------------------------------------------------------------------------------------

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # every part but the last must be at least this large
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
# Parts 9,999 and 10,000 of every upload this tool creates are a small marker naming the source version and the part
# layout the upload was made for (see "Resume marker"); data uses parts 1 to 9,998 and the marker is never completed.
MARKER_PART = MAX_PARTS
MARKER_TWIN_PART = MAX_PARTS - 1  # the same bytes: a part under 5 MiB before the last makes any completion fail
MARKER_PARTS = (MARKER_TWIN_PART, MARKER_PART)
MAX_DATA_PARTS = MAX_PARTS - len(MARKER_PARTS)
MAX_FILE_ATTEMPTS = 3  # ifVerifyMD5: a file whose re-read ETag differs is deleted and redone at most this often
ORPHAN_WINDOW = 300  # seconds: how far back a retried CreateMultipartUpload may have left an orphan

EXIT_OK = 0
EXIT_FAILED = 1  # some file failed or is missing at the destination
EXIT_USAGE = 2  # bad config, credentials or access: nothing was transferred
EXIT_INTERRUPTED = 130

JOB_TYPES = ("LOCAL_TO_S3", "S3_TO_S3", "ALIOSS_TO_S3")
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
)
LOGGING_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CHECKSUM_MODES = ("MD5", "MD5_CRC32")
ADDRESSING_STYLES = ("auto", "path", "virtual")
COPY_MODES = ("auto", "stream", "server")
SKIP_CHECKS = ("size", "checksum")
SSE_MODES = ("", "AES256", "aws:kms")
CANNED_ACLS = (
    "", "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read", "bucket-owner-read",
    "bucket-owner-full-control",
)  # fmt: skip
CLEAN_PROMPT = (
    "CLEAN unfinished upload and restart(input CLEAN) or resume loading(press enter)? Please confirm: (n/CLEAN)"
)

log = logging.getLogger("s3_upload")  # progress and problems: stderr and the log file, at LoggingLevel
report = logging.getLogger("s3_upload.report")  # the final comparison and summary: stdout and the log file, always


class Tally:
    """A count of events (listing errors, failed files, missing objects) and the first ``keep`` of their descriptions:
    a run of ten million files keeps no list that grows with them."""

    def __init__(self, keep: int = 1000):
        self.count, self.keep = 0, keep
        self.kept: list[str] = []
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.kept) < self.keep:
                self.kept.append(text)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.kept))

    @property
    def untold(self) -> int:
        """How many were counted but not kept."""
        return self.count - len(self.kept)


class UserError(Exception):
    """A problem the user can fix (config, credentials, access): one line, exit code 2."""


class FileFailed(Exception):
    """This file cannot be completed in this run; other files go on."""


class SourceChanged(FileFailed):
    """The source is not the one the transfer started from."""


# ----------------------------------------------------------------------------------------------------------------------
# 1. Settings
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option of the config module, validated.  Names map one to one to the seed's config names."""

    job_type: str = "LOCAL_TO_S3"  # JobType
    src_file_index: str = "*"  # SrcFileIndex
    s3_prefix: str = ""  # S3Prefix
    des_profile: str = "default"  # DesProfileName
    des_bucket: str = ""  # DesBucket
    src_dir: str = ""  # SrcDir
    src_bucket: str = ""  # SrcBucket
    src_profile: str = "default"  # SrcProfileName
    ali_src_bucket: str = ""  # ali_SrcBucket: ALIOSS_TO_S3's source bucket on Aliyun OSS
    ali_access_key_id: str = ""  # ali_access_key_id: a RAM user's AccessKey for OSS (not an AWS profile)
    ali_access_key_secret: str = dataclasses.field(default="", repr=False)  # ali_access_key_secret: never shown
    ali_endpoint: str = ""  # ali_endpoint: e.g. "oss-cn-beijing.aliyuncs.com" (https:// unless a scheme is given)
    # The original v1.2's defaults: 25 parts of 10 MiB in flight fill a long, lossy link where 9 parts of 50 MiB
    # (v1.0) could not, lose less at a kill, and take 250 MiB, not 450.
    chunk_size: int = 10 * MiB  # ChunkSize
    max_retry: int = 30  # MaxRetry
    max_thread: int = 5  # MaxThread
    max_parallel_file: int = 5  # MaxParallelFile
    ignore_small_file: bool = False  # IgnoreSmallFile
    storage_class: str = "STANDARD"  # StorageClass
    verify_md5: bool = False  # ifVerifyMD5
    dont_ask_me_to_clean: bool = False  # DontAskMeToClean
    logging_level: str = "INFO"  # LoggingLevel
    retry_delay: float = 5.0  # RetryDelay (advanced): the n-th retry waits n x this many seconds
    log_dir: str = "log"  # LogDir (advanced): where the per-run log file goes
    connect_timeout: float = 10.0  # ConnectTimeout (advanced): seconds to open a connection
    read_timeout: float = 120.0  # ReadTimeout (advanced): seconds without a byte before a request is retried
    checksum_mode: str = "MD5"  # ChecksumMode (advanced): "MD5" or "MD5_CRC32", see Endpoints
    des_endpoint_url: str = ""  # DesEndpointURL: "" = the profile's endpoint_url, else AWS
    src_endpoint_url: str = ""  # SrcEndpointURL
    addressing_style: str = "auto"  # AddressingStyle: "auto" | "path" | "virtual" (S3-compatible stores: "path")
    server_side_encryption: str = ""  # ServerSideEncryption: "" | "AES256" (SSE-S3) | "aws:kms"
    sse_kms_key_id: str = ""  # SSEKMSKeyId: the KMS key for "aws:kms" ("" = the account's default key)
    acl: str = ""  # ACL: "" | a canned ACL such as "bucket-owner-full-control"
    max_bandwidth: int = 0  # MaxBandwidth: bytes per second for all uploads together, 0 = unlimited
    sqs_profile: str = ""  # SQSProfileName: the profile for the SQS queue ("" = DesProfileName)
    sqs_endpoint_url: str = ""  # SQSEndpointURL: "" = the SQS endpoint of the profile's region
    sqs_idle_seconds: float = 60.0  # SQSIdleSeconds: a worker exits after the queue was empty this long
    sqs_visibility_timeout: int = 300  # SQSVisibilityTimeout: seconds a taken message stays hidden (heartbeat)
    # SQSPartsPerMessage: a file of more parts is queued as several messages, each a range of this many parts of one
    # upload, so that many workers send one big file together.
    sqs_parts_per_message: int = 64
    # SkipCheck: what lets an object of the same size skip its file: "size" (the original's rule, with a same-size
    # change caught where S3's listing can tell) or "checksum" (only an object --audit would prove equal).
    skip_check: str = "size"
    copy_mode: str = "auto"  # CopyMode: S3_TO_S3 by S3's own copy ("server"), through this machine ("stream"), "auto"
    # AbandonedAfter (advanced): an unfinished upload to which no part was added for this many seconds (S3's clock) is
    # nobody's any more: a run may abort it.  One with a part added sooner may be another run's work in progress.
    abandoned_after: float = 3600.0


# config name -> (Settings field, accepted types)
CONFIG_OPTIONS: dict[str, tuple[str, tuple[type, ...]]] = {
    "JobType": ("job_type", (str,)),
    "SrcFileIndex": ("src_file_index", (str,)),
    "S3Prefix": ("s3_prefix", (str,)),
    "DesProfileName": ("des_profile", (str,)),
    "DesBucket": ("des_bucket", (str,)),
    "SrcDir": ("src_dir", (str,)),
    "SrcBucket": ("src_bucket", (str,)),
    "SrcProfileName": ("src_profile", (str,)),
    "ali_SrcBucket": ("ali_src_bucket", (str,)),
    "ali_access_key_id": ("ali_access_key_id", (str,)),
    "ali_access_key_secret": ("ali_access_key_secret", (str,)),
    "ali_endpoint": ("ali_endpoint", (str,)),
    "ChunkSize": ("chunk_size", (int,)),
    "MaxRetry": ("max_retry", (int,)),
    "MaxThread": ("max_thread", (int,)),
    "MaxParallelFile": ("max_parallel_file", (int,)),
    "IgnoreSmallFile": ("ignore_small_file", (bool,)),
    "StorageClass": ("storage_class", (str,)),
    "ifVerifyMD5": ("verify_md5", (bool,)),
    "DontAskMeToClean": ("dont_ask_me_to_clean", (bool,)),
    "LoggingLevel": ("logging_level", (str,)),
    "RetryDelay": ("retry_delay", (int, float)),
    "LogDir": ("log_dir", (str,)),
    "ConnectTimeout": ("connect_timeout", (int, float)),
    "ReadTimeout": ("read_timeout", (int, float)),
    "ChecksumMode": ("checksum_mode", (str,)),
    "DesEndpointURL": ("des_endpoint_url", (str,)),
    "SrcEndpointURL": ("src_endpoint_url", (str,)),
    "AddressingStyle": ("addressing_style", (str,)),
    "ServerSideEncryption": ("server_side_encryption", (str,)),
    "SSEKMSKeyId": ("sse_kms_key_id", (str,)),
    "ACL": ("acl", (str,)),
    "MaxBandwidth": ("max_bandwidth", (int,)),
    "SQSProfileName": ("sqs_profile", (str,)),
    "SQSEndpointURL": ("sqs_endpoint_url", (str,)),
    "SQSIdleSeconds": ("sqs_idle_seconds", (int, float)),
    "SQSVisibilityTimeout": ("sqs_visibility_timeout", (int,)),
    "SQSPartsPerMessage": ("sqs_parts_per_message", (int,)),
    "SkipCheck": ("skip_check", (str,)),
    "CopyMode": ("copy_mode", (str,)),
    "AbandonedAfter": ("abandoned_after", (int, float)),
}


SECRET_OPTIONS = frozenset({"ali_access_key_secret"})  # never printed, logged or put in an error message


PATH_OPTIONS = ("SrcDir", "SrcFileIndex", "LogDir")  # names of local paths: a NUL is in none of them


MAX_CONCURRENCY = 1000  # MaxThread and MaxParallelFile, each: every request in flight holds a ChunkSize buffer


MAX_SECONDS = 7 * 24 * 3600  # the float options are seconds: a week is more than any of them needs


CONFIG_EXAMPLES = {
    "ChunkSize": "ChunkSize = 10 * Megabytes",
    "MaxRetry": "MaxRetry = 30",
    "MaxThread": "MaxThread = 5",
    "MaxParallelFile": "MaxParallelFile = 5",
    "IgnoreSmallFile": "IgnoreSmallFile = False",
    "ifVerifyMD5": "ifVerifyMD5 = False",
    "DontAskMeToClean": "DontAskMeToClean = False",
    "RetryDelay": "RetryDelay = 5",
}


def load_config_module(path: str) -> dict[str, object]:
    """Execute the user's config file and return its public names; its own errors become UserError."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found; copy s3_upload_config.py there or pass --config PATH")
    spec = importlib.util.spec_from_file_location("s3_upload_user_config", path)
    if spec is None or spec.loader is None:
        raise UserError(f"config file {path} cannot be loaded as Python; give it a .py name")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UserError(f"config file {path} line {exc.lineno}: {exc.msg}; fix the Python syntax there") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read ({exc.strerror}); check its permissions") from None
    except Exception as exc:  # the config is user code: any error in it is a config error
        frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if _same_file(fr.filename, path)]
        where = f" line {frames[-1].lineno}" if frames else ""
        raise UserError(f"config file {path}{where}: {type(exc).__name__}: {exc}; fix that line") from None
    return {name: value for name, value in vars(module).items() if not name.startswith("_")}


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_misspelt_options(values: dict[str, object]) -> None:
    """A name close to an option is a typo: an error, never a silent fallback to a default.  When the config also
    sets that option, the hint must not be "rename it" (that would silently replace the option's value)."""
    lowered = {name.lower(): name for name in CONFIG_OPTIONS}
    for name in values:
        if name in CONFIG_OPTIONS or isinstance(values[name], types.ModuleType) or callable(values[name]):
            continue
        close = lowered.get(name.lower()) or next(iter(difflib.get_close_matches(name, CONFIG_OPTIONS, 1, 0.8)), "")
        if close in values:
            raise UserError(f"unknown option {name!r} in the config, which also sets {close!r}; delete {name!r} or "
                            f"fix its name")  # fmt: skip
        if close:
            raise UserError(f"unknown option {name!r} in the config; did you mean {close!r}? Rename it")


def settings_from_values(values: dict[str, object]) -> Settings:
    """Map config names to Settings, checking types and ranges.  Other names are the user's helpers (the seed's
    config defines ``Megabytes``) and are ignored, unless they look like a misspelt option: a typo must not
    silently fall back to a default."""
    check_misspelt_options(values)
    fields: dict[str, object] = {}
    for name, (field, accepted) in CONFIG_OPTIONS.items():
        if name not in values:
            continue
        value = values[name]
        # bool is an int in Python: a ChunkSize of True is a mistake, not 1 byte.
        if not isinstance(value, accepted) or (bool not in accepted and isinstance(value, bool)):
            wanted = " or ".join(t.__name__ for t in accepted)
            shown = "(value not shown)" if name in SECRET_OPTIONS else repr(value)
            raise UserError(
                f"{name} must be {wanted}, got {type(value).__name__} {shown}; fix it in the config "
                f"(e.g. {CONFIG_EXAMPLES.get(name, name + ' = ...')})"
            )
        fields[field] = value
    settings = Settings(**fields)  # type: ignore[arg-type]
    validate_settings(settings)
    return settings


def validate_settings(s: Settings) -> None:
    """Range checks that need no network.  Each message names the option and the fix."""
    if s.job_type not in JOB_TYPES:
        raise UserError(f"JobType {s.job_type!r} is unknown; use 'LOCAL_TO_S3', 'S3_TO_S3' or 'ALIOSS_TO_S3'")
    if not MIN_PART_SIZE <= s.chunk_size <= MAX_PART_SIZE:
        raise UserError(
            f"ChunkSize {s.chunk_size} is out of range; S3 parts must be 5 MiB to 5 GiB "
            f"(e.g. ChunkSize = 10 * Megabytes)"
        )
    for name, value in (("MaxThread", s.max_thread), ("MaxParallelFile", s.max_parallel_file)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}; set a positive number")
        if value > MAX_CONCURRENCY:
            raise UserError(f"{name} must be at most {MAX_CONCURRENCY}, got {value}; each request in flight holds "
                            f"a ChunkSize buffer: set e.g. {name} = 5")  # fmt: skip
    check_memory_budget(s)
    for name, (field, accepted) in CONFIG_OPTIONS.items():
        seconds = getattr(s, field)
        if float in accepted and not (math.isfinite(seconds) and seconds <= MAX_SECONDS):  # NaN passes every `<`
            raise UserError(f"{name} must be a finite number of seconds, at most {MAX_SECONDS} (a week), got "
                            f"{seconds!r}; e.g. {CONFIG_EXAMPLES.get(name, name + ' = 60')}")  # fmt: skip
    for name in PATH_OPTIONS:
        path = getattr(s, CONFIG_OPTIONS[name][0])
        if "\0" in path:
            raise UserError(f"{name} {path!r} holds a NUL character, which no path can; remove it")
    if s.max_retry < 0:
        raise UserError(f"MaxRetry must be 0 or more, got {s.max_retry}; set e.g. MaxRetry = 30")
    if s.retry_delay < 0:
        raise UserError(f"RetryDelay must be 0 or more seconds, got {s.retry_delay}; set e.g. RetryDelay = 5")
    if s.abandoned_after < 0:
        raise UserError(
            f"AbandonedAfter must be 0 or more seconds, got {s.abandoned_after}; e.g. AbandonedAfter = 3600"
        )
    for name, seconds in (("ConnectTimeout", s.connect_timeout), ("ReadTimeout", s.read_timeout)):
        if seconds <= 0:
            raise UserError(f"{name} must be more than 0 seconds, got {seconds}; e.g. {name} = 60")
    if s.checksum_mode not in CHECKSUM_MODES:
        raise UserError(
            f"ChecksumMode {s.checksum_mode!r} is unknown; use 'MD5' (Content-MD5 only, works with every "
            f"S3-compatible store) or 'MD5_CRC32' (also botocore's CRC32)"
        )
    for name, url in (("DesEndpointURL", s.des_endpoint_url), ("SrcEndpointURL", s.src_endpoint_url),
                      ("SQSEndpointURL", s.sqs_endpoint_url)):  # fmt: skip
        problem = endpoint_url_problem(url) if url else ""
        if problem:
            raise UserError(f'{name} {url!r} {problem}; give http(s)://HOST[:PORT], or "" for the default')
    if s.skip_check not in SKIP_CHECKS:
        raise UserError(f"SkipCheck {s.skip_check!r} is unknown; use 'size' (same size skips, as the original) or "
                        f"'checksum' (skip only what is proven equal, reading the source)")  # fmt: skip
    if s.copy_mode not in COPY_MODES:
        raise UserError(f"CopyMode {s.copy_mode!r} is unknown; use 'auto', 'stream' or 'server'")
    if s.addressing_style not in ADDRESSING_STYLES:
        raise UserError(f"AddressingStyle {s.addressing_style!r} is unknown; use 'auto', 'path' or 'virtual'")
    if s.server_side_encryption not in SSE_MODES:
        raise UserError(
            f"ServerSideEncryption {s.server_side_encryption!r} is unknown; use '' (none), 'AES256' or 'aws:kms'"
        )
    if s.sse_kms_key_id and s.server_side_encryption != "aws:kms":
        raise UserError("SSEKMSKeyId is set but ServerSideEncryption is not 'aws:kms'; set both or neither")
    if s.acl not in CANNED_ACLS:
        raise UserError(f"ACL {s.acl!r} is unknown; use '' or one of {', '.join(a for a in CANNED_ACLS if a)}")
    if s.sqs_idle_seconds <= 0:
        raise UserError(f"SQSIdleSeconds must be more than 0, got {s.sqs_idle_seconds}; e.g. SQSIdleSeconds = 60")
    if not 1 <= s.sqs_visibility_timeout <= 43200:
        raise UserError(f"SQSVisibilityTimeout must be 1 to 43200 seconds, got {s.sqs_visibility_timeout}")
    if not 1 <= s.sqs_parts_per_message <= MAX_DATA_PARTS:
        raise UserError(f"SQSPartsPerMessage must be 1 to {MAX_DATA_PARTS} parts, got {s.sqs_parts_per_message}; e.g. "
                        f"SQSPartsPerMessage = 64")  # fmt: skip
    if s.max_bandwidth < 0:
        raise UserError(f"MaxBandwidth must be 0 (unlimited) or bytes per second, got {s.max_bandwidth}")
    if s.storage_class not in STORAGE_CLASSES:
        raise UserError(f"StorageClass {s.storage_class!r} is unknown; use one of {', '.join(STORAGE_CLASSES)}")
    if s.logging_level.upper() not in LOGGING_LEVELS:
        raise UserError(f"LoggingLevel {s.logging_level!r} is unknown; use 'WARNING', 'INFO' or 'DEBUG'")
    if not s.des_bucket:
        raise UserError("DesBucket is empty; set the destination bucket name")
    check_bucket_name("DesBucket", s.des_bucket)
    if not s.src_file_index:
        raise UserError("SrcFileIndex is empty; use '*' for every file or a file name")
    if s.job_type == "LOCAL_TO_S3":
        if not s.src_dir:
            raise UserError("SrcDir is empty; set the local directory to upload")
        if not os.path.exists(s.src_dir):
            raise UserError(f"SrcDir {s.src_dir} does not exist; set SrcDir to a local directory")
        if not os.path.isdir(s.src_dir):
            raise UserError(
                f"SrcDir {s.src_dir} is a file, not a directory; set SrcDir to its directory "
                f"and SrcFileIndex to its name"
            )
    elif s.job_type == "S3_TO_S3":
        if not s.src_bucket:
            raise UserError("SrcBucket is empty; set the source bucket for S3_TO_S3")
        check_bucket_name("SrcBucket", s.src_bucket)
        if (s.src_bucket, s.src_profile) == (s.des_bucket, s.des_profile):
            raise UserError(
                "SrcBucket and DesBucket are the same bucket with the same profile; S3_TO_S3 would copy "
                "every object onto itself: set another DesBucket or DesProfileName"
            )
    else:
        validate_alioss(s)


def physical_memory() -> int:
    """This machine's memory in bytes, 0 where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - Windows, or a system without these names
        return 0


def check_memory_budget(s: Settings) -> None:
    """MaxParallelFile x MaxThread parts in flight, each a ChunkSize buffer: more than the machine has would swap or
    be killed mid-run, so it is refused before anything starts."""
    budget, memory = s.max_parallel_file * s.max_thread * s.chunk_size, physical_memory()
    if memory and budget > memory:
        raise UserError(f"MaxParallelFile {s.max_parallel_file} x MaxThread {s.max_thread} x ChunkSize {s.chunk_size} "
                        f"= {human_bytes(budget)} of part buffers, more than this machine's memory "
                        f"({human_bytes(memory)}); lower one of them")  # fmt: skip


def endpoint_url_problem(url: str) -> str:
    """What is wrong with an endpoint URL for botocore ('' when nothing is): http(s)://HOST[:PORT], a path allowed.
    Checked before a client is made: botocore refuses some of these with a bare ValueError, and others (a port over
    65535) only at the first request."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed '[' of an IPv6 address
        return "is not a URL (an IPv6 host goes in [brackets])"
    try:
        port = parts.port
    except ValueError:  # not a number, or over 65535
        port = 0
    if not parts.hostname:
        return "has no host"
    if not (botocore.utils.is_valid_endpoint_url(url) or botocore.utils.is_valid_ipv6_endpoint_url(url)):
        return f"has a host {parts.hostname!r} that is not a host name or IP address"
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if parts.username is not None or parts.query or parts.fragment:
        return "holds more than a host, port and path (a user, a ?query or a #fragment)"
    return ""


def validate_alioss(s: Settings) -> None:
    """ALIOSS_TO_S3 reads with its own four ali_ options (SrcBucket and SrcProfileName are not used).  The secret's
    value is never part of a message."""
    if not s.ali_src_bucket:
        raise UserError("ali_SrcBucket is empty; set the Aliyun OSS bucket to copy from for ALIOSS_TO_S3")
    check_bucket_name("ali_SrcBucket", s.ali_src_bucket)
    if not s.ali_endpoint:
        raise UserError("ali_endpoint is empty; set the OSS endpoint of ali_SrcBucket's region, "
                        "e.g. ali_endpoint = 'oss-cn-beijing.aliyuncs.com'")  # fmt: skip
    host = urllib.parse.urlsplit(oss_endpoint_url(s.ali_endpoint)).hostname or ""
    if host.startswith(s.ali_src_bucket + ".") and OSS_REGIONAL_HOST.fullmatch(host[len(s.ali_src_bucket) + 1 :]):
        raise UserError(f"ali_endpoint {s.ali_endpoint!r} starts with the bucket; give the region's endpoint "
                        f"without it (the bucket goes in ali_SrcBucket)")  # fmt: skip
    for name, value, what in (("ali_access_key_id", s.ali_access_key_id, "AccessKey ID"),
                              ("ali_access_key_secret", s.ali_access_key_secret, "AccessKey secret")):  # fmt: skip
        if not value:
            raise UserError(f"{name} is empty; set the {what} of a RAM user that may list and read ali_SrcBucket")
        if value != value.strip():
            raise UserError(f"{name} starts or ends with a space; remove it (copy the {what} exactly)")


def oss_endpoint_url(endpoint: str) -> str:
    """ali_endpoint as a URL: "oss-cn-beijing.aliyuncs.com" -> "https://oss-cn-beijing.aliyuncs.com".  The original
    tool's OSS SDK took a bare host as http://; https is the default here, and "http://..." can still be written."""
    try:
        parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    except ValueError:  # an unclosed '[': no host name of OSS has one
        parts = urllib.parse.urlsplit("")
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", parts.netloc) or parts.scheme not in ("http", "https") \
            or parts.path not in ("", "/") or parts.query or parts.fragment \
            or endpoint_url_problem(f"{parts.scheme}://{parts.netloc}"):  # fmt: skip
        raise UserError(f"ali_endpoint {endpoint!r} is not an OSS endpoint; give the region's host, e.g. "
                        f"'oss-cn-beijing.aliyuncs.com' (https) or 'http://oss-cn-beijing.aliyuncs.com'")  # fmt: skip
    return f"{parts.scheme}://{parts.netloc}"


# What botocore accepts as a bucket name (it refuses anything else before sending), plus access point ARNs.
BUCKET_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}|arn:[^/]+")


def check_bucket_name(option: str, name: str) -> None:
    if not BUCKET_NAME.fullmatch(name):
        hint = "; give only the bucket's name and put the folder in S3Prefix" if "/" in name else ""
        raise UserError(f"{option} {name!r} is not a bucket name (letters, digits, '.', '-' and '_'){hint}")


def key_prefix(settings: Settings) -> str:
    """Where LOCAL_TO_S3 writes, as a folder: S3Prefix with doubled slashes, '.' segments and a leading '/' taken
    out ('backup//' -> 'backup/', '/lead' -> 'lead/').  Stores differ on such keys (AWS keeps 'a//b' and '/a',
    SeaweedFS and others fold them), so the tool writes, lists and compares one spelling everywhere."""
    parts = [p for p in settings.s3_prefix.split("/") if p not in ("", ".")]
    return "/".join(parts) + "/" if parts else ""


# ----------------------------------------------------------------------------------------------------------------------
# 2. Endpoints: one client per profile, one retry policy for every request
# ----------------------------------------------------------------------------------------------------------------------


# Errors that no retry can fix: fail the file (or the run) at once.
FATAL_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchUpload",
        "InvalidBucketName",
        "InvalidStorageClass",
        "PreconditionFailed",
        "InvalidRange",
        "EntityTooSmall",
        "EntityTooLarge",
        "InvalidPart",
        "InvalidPartOrder",
        "MethodNotAllowed",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "InvalidRequest",
        "InvalidArgument",
        "NotImplemented",  # a header the store does not implement: no retry makes it
        "KMS.AccessDeniedException",
    }
)


NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})  # HEAD answers a missing key with a bare 404


CREDENTIAL_ERROR_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",  # SQS (query protocol): an access key it does not know
        "UnrecognizedClientException",  # SQS (JSON protocol): the same
    }
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


RETRYABLE_ERROR_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "BadDigest", "IncompleteBody", "OperationAborted",
})  # fmt: skip


# Errors of this machine or of the request itself: waiting will not fix them.
FINAL_LOCAL_ERRORS = (
    botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ParamValidationError, botocore.exceptions.SSLError,
)  # fmt: skip


# Connection reset, read timeout, incomplete body, endpoint unreachable.  Other OSErrors (a local file that is
# missing or unreadable) will not heal by waiting.
TRANSIENT_ERRORS = (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


def is_retryable(exc: BaseException) -> bool:
    """One classifier for every request: network faults, throttling and 5xx are retried; the rest is final."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        if code in FATAL_ERROR_CODES:
            return False
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status in (408, 429) or code in RETRYABLE_ERROR_CODES
    if isinstance(exc, (*FINAL_LOCAL_ERRORS, SourceChanged)):
        return False
    return isinstance(exc, (*TRANSIENT_ERRORS, ShortRead, BadResponse))


def fix_hint(exc: BaseException) -> str:
    """What the user can do about an error that retrying cannot fix ('' when there is nothing to add)."""
    code = error_code(exc)
    operation = getattr(exc, "operation_name", "the request")
    if code in ("AccessDenied", "AllAccessDisabled"):
        return f"; {operation} was denied: grant the profile that permission on this bucket"
    if code in CREDENTIAL_ERROR_CODES:
        return "; the profile's credentials were refused: check its access key and secret in ~/.aws/credentials"
    if isinstance(exc, PermissionError):
        return "; the file is not readable by this user: fix its permissions"
    if isinstance(exc, FileNotFoundError):
        return "; the file disappeared after it was listed"
    return ""


def failure_detail(exc: BaseException, max_retry: int) -> str:
    """Why a file failed, and what to do about it, in one line."""
    if isinstance(exc, FileFailed):
        text = str(exc)
        return text if "rerun" in text or ";" in text else text + "; rerun to upload it again"
    hint = fix_hint(exc)
    if hint:
        return describe_error(exc) + hint
    if is_retryable(exc):
        return f"{describe_error(exc)} (still failing after {max_retry} retries); rerun the same command to resume"
    return describe_error(exc) + "; rerun the same command once the cause is fixed"


def describe_error(exc: BaseException) -> str:
    """A short reason for logs; never includes credentials or signed URLs."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{err.get('Code', 'Error')} (HTTP {status}): {err.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class Endpoints:
    """One boto3 session per credential profile, one shared S3 client each (clients are thread-safe).

    Retries: botocore's own retries are switched off so that one policy, ``RetryPolicy`` (the seed's linear
    backoff, MaxRetry times, every retry logged), governs every request.  Timeouts (ConnectTimeout, ReadTimeout)
    are set so that a stalled connection fails and is retried instead of hanging the run.

    Checksums: Content-MD5 is always sent, computed here, on every PutObject and UploadPart, so the server rejects
    damaged bytes (BadDigest) and the same digests give the final ETag.  ChecksumMode "MD5" (default) stops
    botocore >= 1.36 from adding its CRC32 too (some S3-compatible stores reject those headers or the aws-chunked
    encoding they bring over https); "MD5_CRC32" keeps botocore's default and sends both.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        pool = settings.max_parallel_file * settings.max_thread + 4
        checksums = "when_supported" if settings.checksum_mode == "MD5_CRC32" else "when_required"
        # Every PutObject and UploadPart carries a signed Content-MD5, so the body is protected without botocore's
        # SHA-256 of the payload over http (a second full pass over every byte); over https botocore already
        # leaves it out when a checksum header is present.
        s3_options: dict[str, object] = {"payload_signing_enabled": False}
        if settings.addressing_style != "auto":
            s3_options["addressing_style"] = settings.addressing_style
        self.client_config = botocore.config.Config(
            s3=s3_options,
            max_pool_connections=pool,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        self._clients: dict[str, object] = {}

    def sqs_client(self):
        """The queue of the fleet mode: SQSProfileName (default: the destination's profile), SQSEndpointURL.

        The endpoint is SQSEndpointURL, else the endpoint_url of SQSProfileName's profile, else AWS's SQS endpoint of
        the profile's region: never the destination profile's endpoint_url, which is its S3 store's (README)."""
        s = self.settings
        profile = s.sqs_profile or s.des_profile
        option = "SQSProfileName" if s.sqs_profile else "DesProfileName"
        config = botocore.config.Config(connect_timeout=s.connect_timeout, read_timeout=60,
                                        retries={"total_max_attempts": 1, "mode": "standard"},
                                        max_pool_connections=SENDER_BATCHES + 4,  # the sender's batches in flight
                                        ignore_configured_endpoint_urls=not s.sqs_profile)  # fmt: skip
        return new_client(make_session(profile, option), "sqs", f"{option} {profile!r}", "SQSEndpointURL",
                          endpoint_url=s.sqs_endpoint_url or None, config=config)  # fmt: skip

    def client(self, profile: str, option: str, endpoint_url: str = ""):
        """The client for a profile; ``endpoint_url`` (DesEndpointURL/SrcEndpointURL) wins over the profile's."""
        key = f"{profile}|{endpoint_url}"
        if key not in self._clients:
            session = make_session(profile, option)
            url_option = "SrcEndpointURL" if option == "SrcProfileName" else "DesEndpointURL"
            client = new_client(session, "s3", f"{option} {profile!r}", url_option, endpoint_url=endpoint_url or None,
                                config=self.client_config)  # fmt: skip
            # Last: botocore's own before-call handler is the one that adds the Expect header.
            client.meta.events.register_last("before-call.s3", no_expect_100_continue)
            take_raw_listings(client)
            self._clients[key] = client
        return self._clients[key]

    def oss_client(self):
        """ALIOSS_TO_S3's source: Aliyun OSS through its S3-compatible API, with the config's ali_ keys (no profile).

        OSS serves only virtual-hosted requests (bucket.endpoint), and refuses aws-chunked bodies, so botocore adds
        its checksums only where an operation requires them, whatever ChecksumMode says (this client only lists and
        reads; ChecksumMode still governs the destination).  SigV4 is signed for the region named in the endpoint."""
        url = oss_endpoint_url(self.settings.ali_endpoint)
        if url not in self._clients:
            config = self.client_config.merge(botocore.config.Config(
                s3={"addressing_style": "virtual"}, request_checksum_calculation="when_required",
                response_checksum_validation="when_required"))  # fmt: skip
            client = new_client(
                with_fast_timestamps(boto3.session.Session()), "s3", "ali_endpoint", "ali_endpoint", endpoint_url=url,
                region_name=oss_signing_region(url), config=config, aws_access_key_id=self.settings.ali_access_key_id,
                aws_secret_access_key=self.settings.ali_access_key_secret)  # fmt: skip
            take_raw_listings(client)
            self._clients[url] = client
        return self._clients[url]


# OSS's hosts name their region: oss-cn-beijing.aliyuncs.com, s3.oss-cn-beijing.aliyuncs.com and their -internal
# forms are region cn-beijing (OSS's region ID, as its guide for AWS SDKs gives it).
OSS_REGIONAL_HOST = re.compile(r"(?:s3\.)?oss-([a-z]{2}-[a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com")


def oss_signing_region(endpoint_url: str) -> str:
    """The SigV4 region for an OSS endpoint: its region ID when the host names one, else us-east-1 (a custom domain,
    an acceleration endpoint; OSS's own examples of S3-style signatures use us-east-1)."""
    match = OSS_REGIONAL_HOST.fullmatch(urllib.parse.urlsplit(endpoint_url).hostname or "")
    return match.group(1) if match else "us-east-1"


def no_expect_100_continue(params: dict, **_kwargs) -> None:
    """Send no ``Expect: 100-continue``: every PutObject and UploadPart goes with its body at once.

    botocore asks each of them to wait for ``100 Continue`` first.  That costs one round trip per request (on a
    150 ms link, 200 small files in 16 threads lose two seconds to it, and every part of a big file waits once), and
    buys nothing here: the endpoint, the region and the access were all proven by the listings before any upload.
    It also avoids a fault of botocore before 1.43.77: a server may answer a zero-byte 100-continue request at once
    and keep the connection (SeaweedFS does); botocore then misreads the response to the next such request on that
    connection and waits for the read timeout.  Returns None: a before-call handler that returns something replaces
    the request's answer."""
    params.get("headers", {}).pop("Expect", None)


def new_client(session: boto3.Session, service: str, where: str, url_option: str, **kwargs):
    """session.client(...), with what botocore refuses in the profile (a region, an endpoint_url) as one line that
    names it.  ``where`` is the profile as the config names it ("DesProfileName 'x'"); ``url_option`` the option
    that overrides the profile's endpoint_url."""
    try:
        client = session.client(service, **kwargs)
    except botocore.exceptions.ConfigParseError as exc:
        raise UserError(aws_file_error(exc)) from None
    except botocore.exceptions.InvalidRegionError as exc:
        raise UserError(f"{where}: region {exc.kwargs.get('region_name')!r} is not a region name; fix region in "
                        f"~/.aws/config (or AWS_DEFAULT_REGION), e.g. region = us-east-1") from None  # fmt: skip
    except botocore.exceptions.NoRegionError:
        raise UserError(f"{where} has no region, which {service.upper()} needs (it signs for one); set region in "
                        f"~/.aws/config (or AWS_DEFAULT_REGION), e.g. region = us-east-1") from None  # fmt: skip
    except ValueError as exc:  # botocore's "Invalid endpoint: ..." for an endpoint_url it cannot use
        text = str(exc)
        value = text.removeprefix("Invalid endpoint: ")
        what = f"endpoint_url {value!r} is not a URL" if value != text else f"its endpoint_url is not a URL ({text})"
        raise UserError(f"{where}: {what}; set endpoint_url = http(s)://HOST[:PORT] in ~/.aws/config, or set "
                        f"{url_option}") from None  # fmt: skip
    problem = endpoint_url_problem(client.meta.endpoint_url)  # what botocore would only refuse at the first request
    if problem:
        raise UserError(f"{where}: endpoint_url {client.meta.endpoint_url!r} {problem}; fix endpoint_url in "
                        f"~/.aws/config, or set {url_option}")  # fmt: skip
    return client


def aws_file_error(exc: botocore.exceptions.ConfigParseError) -> str:
    """~/.aws/config or ~/.aws/credentials that configparser cannot read, in one line with the line number."""
    error = exc.kwargs.get("error")
    line = getattr(error, "lineno", None) or next((n for n, _ in getattr(error, "errors", [])), None)
    where = f" (line {line})" if line else ""
    return (
        f"{exc.kwargs.get('path', 'an AWS config file')} cannot be parsed{where}; fix its syntax: sections are "
        f"[profile NAME] in ~/.aws/config and [NAME] in ~/.aws/credentials, then name = value lines"
    )


def make_session(profile: str, option: str = "DesProfileName") -> boto3.Session:
    """A session for a named profile from ~/.aws/credentials and ~/.aws/config (region, endpoint_url, ...).

    ``default`` with no such profile falls back to the standard chain (environment variables, instance role).
    ``option`` names the config option that holds the profile, for the error message."""
    try:
        return with_fast_timestamps(boto3.Session(profile_name=profile))
    except botocore.exceptions.ConfigParseError as exc:
        raise UserError(aws_file_error(exc)) from None
    except botocore.exceptions.ProfileNotFound:
        if profile == "default":
            return with_fast_timestamps(boto3.Session())
        known = ", ".join(boto3.Session().available_profiles) or "none"
        raise UserError(
            f"{option} {profile!r}: no such profile in ~/.aws/credentials or ~/.aws/config (known: {known}); "
            f"add it there or fix {option}"
        ) from None


def parse_timestamp_fast(value):
    """S3's XML timestamps (2026-11-30T17:40:26.885Z) by datetime.fromisoformat, many times faster than botocore's
    general parser, in which listing thousands of objects spent much of its time; anything else goes to botocore's."""
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            pass
    return botocore.utils.parse_timestamp(value)


def with_fast_timestamps(session: boto3.Session) -> boto3.Session:
    """The session's clients parse timestamps with parse_timestamp_fast."""
    session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp_fast)
    return session


class Interrupted(Exception):
    """The run is stopping (Ctrl-C): abandon work quietly, S3 keeps what is done."""


# Answers that ask the whole client to slow down, not only the request: S3's SlowDown (503), SQS's and STS's throttling.
THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                              "RequestThrottled", "TooManyRequestsException", "RequestThrottledException",
                              "AWS.SimpleQueueService.RequestThrottled"})  # fmt: skip


def is_throttling(exc: BaseException) -> bool:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(exc) in THROTTLING_CODES or status in (429, 503)


class Pace:
    """One pace for every request of the process (as rclone's pacer): a throttling answer to any request (SlowDown,
    503, SQS throttling) spaces every thread's requests out, one at a time and ``interval`` apart, the interval
    doubling with each throttling answer (from RetryDelay up to a minute) and halving with each success, down to no
    spacing at all.  So a store that asks to slow down sees the whole process slow down together, instead of each of
    its threads retrying on its own, and the run speeds up again by itself."""

    def __init__(self, base: float, stop: threading.Event):
        self.base, self.stop = base, stop
        self.ceiling = max(60.0, base)
        self.interval = 0.0
        self._next = 0.0  # when the next request may start, while the interval is not 0
        self._last = float("-inf")  # when the interval last grew
        self._lock = threading.Lock()

    def before(self, cancel: threading.Event | None = None) -> bool:
        """Wait for this request's turn (at once when nothing was throttled); True if the run stops meanwhile."""
        if not self.interval:  # the usual case: no lock, no wait
            return False
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        while (left := start - time.monotonic()) > 0:
            if self.stop.wait(min(left, 0.1)) or (cancel is not None and cancel.is_set()):
                return True
        return False

    def throttled(self) -> None:
        """A throttling answer.  The answers to requests that were already on their way count once: the interval
        doubles only for one that comes after the last pause ran out."""
        with self._lock:
            now = time.monotonic()
            if now >= self._last + self.interval:
                self.interval = min(self.ceiling, max(self.base, self.interval * 2))
                self._last = now
            self._next = max(self._next, now + self.interval)

    def succeeded(self) -> None:
        if self.interval:
            with self._lock:
                self.interval = self.interval / 2 if self.interval / 2 >= self.base / 8 else 0.0


class RetryPolicy:
    """MaxRetry retries after the first attempt; the n-th retry waits n x RetryDelay seconds (seed: n x 5 s); and one
    Pace for every request of the process."""

    def __init__(self, max_retry: int, delay: float, stop: threading.Event):
        self.max_retry, self.delay, self.stop = max_retry, delay, stop
        self.pace = Pace(delay, stop)
        self._lock = threading.Lock()
        self.retries = 0
        self.retries_by_key: dict[str, int] = {}
        self._current = threading.local()  # which file this thread works for, to count its retries

    def working_on(self, key: str) -> None:
        self._current.key = key

    def call(self, what: str, request: Callable[[], object], cancel: threading.Event | None = None,
             paced: bool = True):  # fmt: skip
        """``cancel``: the work this request is for was given up (a sibling part failed for good): stop retrying at
        once, also in the middle of a wait, instead of after MaxRetry more attempts.  ``paced``: False for reads of
        the source (a disk, or another store), which the pace of the stores written to must not slow down."""
        attempt = 0
        while True:
            if self.stop.is_set() or (cancel is not None and cancel.is_set()) or (paced and self.pace.before(cancel)):
                raise Interrupted()
            try:
                answer = request()
                if paced:
                    self.pace.succeeded()
                return answer
            except Exception as exc:
                if paced and is_throttling(exc):
                    self.pace.throttled()
                if not is_retryable(exc) or attempt >= self.max_retry or (cancel is not None and cancel.is_set()):
                    raise
                attempt += 1
                key = getattr(self._current, "key", "")
                with self._lock:
                    self.retries += 1
                    self.retries_by_key[key] = self.retries_by_key.get(key, 0) + 1
                # A dropped connection (a reset on a lossy long link) is retried at once the first time: waiting helps
                # nothing and the thread's slot would stand idle.  Answers from the server (throttling, 5xx) and
                # every later retry wait n x RetryDelay, as the original did.
                dropped = not isinstance(exc, botocore.exceptions.ClientError)
                wait = (attempt - 1 if dropped else attempt) * self.delay
                log.warning(
                    "%s failed: %s; retry %d/%d in %gs", what, describe_error(exc), attempt, self.max_retry, wait
                )
                if self._wait(wait, cancel):
                    raise Interrupted() from None

    def _wait(self, seconds: float, cancel: threading.Event | None) -> bool:
        """Sleep; True as soon as the run stops or ``cancel`` is set."""
        if cancel is None:
            return self.stop.wait(seconds)
        deadline = time.monotonic() + seconds
        while not cancel.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stop.wait(min(left, 0.1)):
                return True
        return True


# ----------------------------------------------------------------------------------------------------------------------
# 3. List: the sources, and the listings of S3
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)  # one per file: millions of them (a frozen dataclass takes 3 times as long to make)
class SourceFile:
    key: str  # destination key (S3_TO_S3: also the source key)
    size: int
    mtime: float  # local mtime, or the source object's LastModified, epoch seconds
    path: str = ""  # LOCAL_TO_S3: the local path
    etag: str = ""  # S3_TO_S3: the source object's ETag, to pin ranged reads to one version
    # What identifies this version of the source: a difference between listing and completion means it changed.
    # Local: size, mtime, ctime and inode (a rewrite that restores size and mtime still moves ctime); S3: the ETag.
    version: str = ""


class BadResponse(Exception):
    """A 200 answer without what it must hold (e.g. no ETag: the connection ended inside the headers); retried."""


def require_etag(response: dict, what: str) -> str:
    etag = str(response.get("ETag", "")).strip('"')
    if not etag:
        raise BadResponse(f"{what}: the answer has no ETag")
    return etag


def etag_is_md5(response: dict) -> bool:
    """S3's ETags are MD5-based except for objects encrypted with KMS (the bucket's default or ours) or SSE-C: those
    cannot be compared with our digests (their parts are still checked by Content-MD5)."""
    sse = str(response.get("ServerSideEncryption", ""))
    return not sse.startswith("aws:kms") and not response.get("SSECustomerAlgorithm")


class ShortRead(Exception):
    """The source gave fewer bytes than asked: it changed or the connection broke; retried."""


def join_key(prefix: str, relative: str) -> str:
    """S3Prefix joined to a '/'-separated relative key as a folder ('up' + 'a.txt' -> 'up/a.txt')."""
    relative = relative.lstrip("/")
    if not prefix:
        return relative
    return prefix if not relative else prefix.rstrip("/") + "/" + relative


def folder_prefix(prefix: str) -> str:
    """S3Prefix names a folder: list under 'prefix/'."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


# A local name that is not valid UTF-8 cannot be an S3 key as it is: each byte that does not decode (Python holds it
# as a surrogate U+DC80..U+DCFF) is written as this quote mark plus two hex digits, e.g. b"caf\xe9" -> "caf‛E9", the
# way rclone spells such bytes.  A valid UTF-8 name is its key as it is, even one holding the text "‛E9": so a key
# holding ‛XX may come from two names (the literal one and the decoded one), and LocalSource.resolve tries both.  In
# a name that is not UTF-8, a quote mark of its own is written as its UTF-8 bytes (‛E2‛80‛9B), so that decoding every
# ‛XX of such a key gives back exactly that name.
BYTE_QUOTE = "\u201b"


_QUOTED_BYTE = re.compile(BYTE_QUOTE + "([89A-F][0-9A-F])")


_QUOTED_BYTES = {BYTE_QUOTE: "".join(f"{BYTE_QUOTE}{b:02X}" for b in BYTE_QUOTE.encode())}


def key_of_local_name(relative: str) -> str:
    """A path relative to SrcDir as a key: only the OS's own separator separates (on Linux 'a\\b.txt' is one name).
    Each name is mapped alone (key_of_name), so that a directory's key is the start of every key below it."""
    if os.sep != "/":
        relative = relative.replace(os.sep, "/")
    try:
        relative.encode("utf-8")
        return relative
    except UnicodeEncodeError:
        return "/".join(key_of_name(name) for name in relative.split("/"))


def key_of_name(name: str) -> str:
    """One name as (part of) a key: itself if it is UTF-8; else each byte that does not decode as ‛XX, and a literal
    ‛ as the ‛XX of its own three bytes, so that the key reads back to exactly one name (local_name_of_key)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return "".join(f"{BYTE_QUOTE}{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else _QUOTED_BYTES.get(c, c)
                       for c in name)  # fmt: skip


def local_name_of_key(relative_key: str) -> str:
    """The relative path a key came from if it came from a name that is not UTF-8 (key_of_local_name reversed): each
    ‛XX is the byte XX again.  A key without ‛XX is its own name; for one with ‛XX, the literal name is the other
    candidate (LocalSource.resolve)."""
    raw, end = bytearray(), 0
    for m in _QUOTED_BYTE.finditer(relative_key):
        raw += relative_key[end : m.start()].encode("utf-8") + bytes([int(m.group(1), 16)])
        end = m.end()
    name = (raw + relative_key[end:].encode("utf-8")).decode("utf-8", "surrogateescape")
    return name.replace("/", os.sep)


def local_name_candidates(relative_key: str, limit: int = 16) -> list[str]:
    """The relative paths a key may come from (LocalSource.resolve tries each): every name in it is either itself or,
    if it holds ‛XX, those bytes decoded (key_of_name maps each name alone).  At most ``limit`` of them."""
    options = [tuple(dict.fromkeys((name, local_name_of_key(name)))) for name in relative_key.split("/")]
    return [os.sep.join(names) for names in itertools.islice(itertools.product(*options), limit)]


def printable(text: str) -> str:
    """A path for logs and reports: bytes that are not UTF-8 shown as \\xNN instead of breaking the output."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def inside(path: str, root: str) -> bool:
    """Is path (already absolute and normalised) root itself or below it?  ('..data' is a name, not a way up.)"""
    rel = os.path.relpath(path, root)
    return rel != os.pardir and not rel.startswith(os.pardir + os.sep) and not os.path.isabs(rel)


# A local file's full-object checksum: CRC32, computed here in the same pass as each part's MD5 (zlib, ~4 GB/s), the
# parts' values joined into the whole file's (crc32_join) without a second read.  CRC32 rather than CRC64NVME: zlib
# computes it everywhere, and joining needs the algorithm's own arithmetic, which the optional awscrt does not expose.
COMPUTED_CRC32 = ("CRC32", "")  # the value is known once every part is hashed


def gf2_times(matrix: Sequence[int], vector: int) -> int:
    """A GF(2) matrix (32 columns) times a 32-bit vector: the columns of the vector's set bits, XORed."""
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


@functools.lru_cache(maxsize=8)
def crc32_shift(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that carries a CRC-32 register over ``length`` zero bytes (zlib's crc32_combine method: the
    operator for one zero bit, squared up to the length's bits).  Cached: the parts of a file but its last share one."""
    result = [1 << n for n in range(32)]  # identity
    power = [0xEDB88320] + [1 << (n - 1) for n in range(1, 32)]  # one zero bit
    for _ in range(3):  # one zero byte: eight bits
        power = [gf2_times(power, power[n]) for n in range(32)]
    while length:
        if length & 1:
            result = [gf2_times(power, result[n]) for n in range(32)]
        length >>= 1
        if length:
            power = [gf2_times(power, power[n]) for n in range(32)]
    return tuple(result)


def crc32_join(parts: Iterable[tuple[int, int]]) -> int:
    """The CRC-32 of the concatenation, from each part's (CRC-32, length): joining 10,000 parts costs milliseconds."""
    total = 0
    for crc, length in parts:
        total = gf2_times(crc32_shift(length), total) ^ crc
    return total


def crc32_b64(crc: int) -> str:
    """S3's form of a CRC-32: the base64 of its four big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


@dataclasses.dataclass(frozen=True)
class SourceFacts:
    """What the source says about one file before it is sent: the object attributes to set at the destination, and
    what can prove the copy equal to the source without reading it again."""

    attributes: dict
    checksum: tuple[str, str] | None = None  # a full-object checksum: (algorithm, base64 value), e.g. ("CRC32", ...)
    part_size: int = 0  # a multipart source's own part size (its largest part when they are not of one size)
    parts: int = 0  # and its number of parts
    part_ends: tuple[int, ...] = ()  # where each of its parts ends, when they are not of one size


# A directory of a walk: where the source lists it (a local path, or a key prefix), and the destination's key prefix of
# the files in it.
Dir = tuple[str, str]


class Source(Protocol):
    """What the engine needs of a source; it never asks which kind it has."""

    kind: str
    verify_existing_parts: bool  # parts already at the destination can be checked by reading (cheap) the source
    listing_errors: Tally

    def top(self) -> Dir | None: ...  # the first directory of the walk, None when SrcFileIndex names one file
    def only(self) -> SourceFile: ...  # the file SrcFileIndex names
    def list_dir(self, directory: Dir, quiet: bool = False) -> Iterator[SourceFile | Dir]: ...  # see LocalSource
    def sample(self) -> Iterator[SourceFile]: ...  # a file of the source, if cheap to find (CopyMode's probe)
    def read(self, f: SourceFile, offset: int, length: int) -> bytes: ...  # exactly length bytes, or raise
    def current(self, f: SourceFile) -> SourceFile: ...  # the file as it is now, to detect a change mid-transfer
    def resolve(self, key: str) -> SourceFile: ...  # the job's file with this key, as it is now (fleet workers)
    def identity(self, f: SourceFile) -> str: ...  # the source version an upload is tied to (resume marker)
    def facts(self, f: SourceFile) -> SourceFacts: ...  # attributes to copy, and what can prove the copy
    def etag_facts(self, f: SourceFile) -> tuple[bool, int]: ...  # is its ETag an MD5, its first part's size
    def describe(self, f: SourceFile) -> str: ...  # for logs


class LocalSource:
    """Files under SrcDir.  Reading is cheap, so parts already on S3 are verified by hashing the local bytes."""

    kind = "local"
    verify_existing_parts = True

    def __init__(self, settings: Settings):
        self.root = os.path.abspath(settings.src_dir)
        self.prefix = key_prefix(settings)
        self.index = settings.src_file_index
        self.listing_errors = Tally()

    def top(self) -> Dir | None:
        """The first directory to walk (SrcDir and the key prefix of its files), or None: SrcFileIndex names one."""
        return (self.root, self.prefix) if self.index == "*" else None

    def only(self) -> SourceFile:
        """SrcFileIndex: the one file, or a UserError."""
        path = os.path.normpath(os.path.join(self.root, self.index))
        if not inside(path, self.root):
            raise UserError(f"SrcFileIndex {self.index!r} points outside SrcDir {self.root}; name a file inside it")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise UserError(
                f"SrcFileIndex {self.index!r}: {printable(path)} cannot be read ({exc.strerror}); check the name "
                f"or use '*'"
            ) from None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise UserError(
                f"SrcFileIndex {self.index!r} is not a file in SrcDir {self.root}; check the name or use '*'"
            )
        return self.entry(path, st)

    def sample(self) -> Iterator[SourceFile]:
        return iter(())  # no sample needed: a local source is never copied by S3

    def list_dir(self, directory: Dir, quiet: bool = False) -> Iterator[SourceFile | Dir]:
        """One directory: its subdirectories (a link to a directory is not followed), then its files in the order of
        their keys (as S3 lists the keys of one folder).  ``quiet``: a second walk (the final comparison) that logs
        and counts nothing again."""
        path, key_prefix = directory
        try:
            with os.scandir(path) as listing:
                entries = []
                for entry in listing:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    entries.append((key_of_name(entry.name), entry.name, is_dir))
        except OSError as exc:
            if not quiet:
                self._error(path, f"cannot be listed: {exc.strerror}")
            return
        entries.sort()
        # Two names, one key (sorted next to each other): either would overwrite the other.
        shared = {a[0] for a, b in itertools.pairwise(entries) if a[0] == b[0]}
        for name_key in sorted(shared) if not quiet else ():
            names = " and ".join(printable(os.path.join(path, e[1])) for e in entries if e[0] == name_key)
            self._error(os.path.join(path, name_key), f"{names} would have the same key {key_prefix + name_key!r}; "
                                                      f"rename one of them")  # fmt: skip
        for name_key, name, is_dir in entries:
            if is_dir and name_key not in shared:
                yield os.path.join(path, name), key_prefix + name_key + "/"
        for name_key, name, is_dir in entries:
            if is_dir or name_key in shared:
                continue
            file_path = os.path.join(path, name)
            try:
                st = os.stat(file_path)
            except FileNotFoundError:
                if not quiet:
                    self._error(file_path, "a link to a file that does not exist" if os.path.islink(file_path) else
                                "deleted while listed")  # fmt: skip
                continue
            except OSError as exc:
                if not quiet:
                    self._error(file_path, exc.strerror or str(exc))
                continue
            if stat.S_ISREG(st.st_mode):
                yield self.entry(file_path, st, key_prefix + name_key)
            elif not quiet and stat.S_ISDIR(st.st_mode):
                log.warning("skip %s: a link to a directory is not followed", printable(file_path))
            elif not quiet:
                log.warning("skip %s: not a regular file (a socket, fifo or device)", printable(file_path))

    def _error(self, path: str, why: str) -> None:
        self.listing_errors.add(f"{printable(path)}: {why}")
        log.error("cannot list %s: %s", printable(path), why)

    def entry(self, path: str, st: os.stat_result, key: str = "") -> SourceFile:
        key = key or self.prefix + key_of_local_name(os.path.relpath(path, self.root))
        version = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_dev}:{st.st_ino}"
        return SourceFile(key=key, size=st.st_size, mtime=st.st_mtime, path=path, version=version)

    def read(self, f: SourceFile, offset: int, length: int) -> bytes:
        with open(f.path, "rb") as fh:
            data = os.pread(fh.fileno(), length, offset) if hasattr(os, "pread") else _seek_read(fh, offset, length)
        if len(data) != length:
            raise SourceChanged(
                f"{printable(f.path)} is shorter than when listed (read {len(data)} of {length} bytes at {offset})"
            )
        return data

    def current(self, f: SourceFile) -> SourceFile:
        try:
            return self.entry(f.path, os.stat(f.path))
        except FileNotFoundError:
            raise SourceChanged(f"{printable(f.path)} was deleted during the transfer; not completed") from None

    def resolve(self, key: str) -> SourceFile:
        """The job's file with this key, as it is now, or FileFailed.  A fleet worker's only way from a queue
        message to a file: the path comes from SrcDir and the key, never from the message, and the file must be one
        the job's own listing gives this very key, so that sender and workers agree on every file:

        - a key holding ‛XX may come from two names, the literal one and the one with those bytes decoded
          (key_of_local_name): the file is the one that exists and whose own key is this key; both existing is the
          listing's "same key" error (without_shared_keys), refused here too;
        - the listing (os.walk) never enters a link to a directory: no directory on the way may be a link;
        - it does list a link to a file and sends its target, wherever that is: so does the worker;
        - with SrcFileIndex, only that path, as the listing stats it."""
        if not key.startswith(self.prefix):
            raise FileFailed(f"key {key!r} is not under this job's S3Prefix {self.prefix!r}")
        relative = key[len(self.prefix) :]
        if "\x00" in relative or not _is_utf8(relative):
            raise FileFailed(f"key {key!r} is no key this job lists")
        found: list[SourceFile] = []
        refused: list[tuple[bool, FileFailed]] = []  # (the name exists, why it is not the file)
        for name in local_name_candidates(relative):
            path = os.path.normpath(os.path.join(self.root, name))
            try:
                found.append(self._listed_file(path, key))
            except FileFailed as exc:
                refused.append((os.path.lexists(path), exc))
        if len(found) > 1:
            names = " and ".join(printable(f.path) for f in found)
            raise FileFailed(f"{names} would have the same key {key!r} (neither is listed); rename one of them")
        if found:
            return found[0]
        raise max(refused, key=lambda r: r[0])[1]  # why the name that exists is not the file, if one does

    def _listed_file(self, path: str, key: str) -> SourceFile:
        """The file at path (normalised) if the listing gives it this key, else FileFailed."""
        if not inside(path, self.root):
            raise FileFailed(f"key {key!r} names {printable(path)}, outside SrcDir {self.root}")
        if self.index != "*":
            if path != os.path.normpath(os.path.join(self.root, self.index)):
                raise FileFailed(f"key {key!r} is not this job's SrcFileIndex {self.index!r}")
        elif path != self.root:
            parent = os.path.dirname(path)
            lexical = os.path.normpath(os.path.join(os.path.realpath(self.root), os.path.relpath(parent, self.root)))
            if os.path.realpath(parent) != lexical:
                raise FileFailed(f"key {key!r} names {printable(path)}, under a link to a directory, which the listing "
                                 f"does not follow")  # fmt: skip
        try:
            st = os.stat(path)
        except OSError as exc:
            raise FileFailed(f"{printable(path)} (key {key!r}) cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise FileFailed(f"{printable(path)} (key {key!r}) is not a regular file")
        f = self.entry(path, st)
        if f.key != key:
            raise FileFailed(f"{printable(path)} has the key {f.key!r} in this job, not {key!r}")
        return f

    def identity(self, f: SourceFile) -> str:
        # The marker only spares hashing work here: every part reused is checked against the local bytes by MD5.
        return f"local size {f.size} mtime {f.mtime!r}"

    def facts(self, f: SourceFile) -> SourceFacts:
        """Content-Type guessed from the file name, as the AWS CLI does (none when unknown: S3's default), and the
        file's mtime as metadata (x-amz-meta-mtime, as rclone records it): a later run that finds the file modified
        after the object was written asks the object whether it is this very file (a clock ahead of S3's).  And a
        full-object CRC32, computed from the bytes as they are sent (COMPUTED_CRC32): S3 checks the whole object
        against it at completion and keeps it."""
        content_type = mimetypes.guess_type(f.path)[0]
        attributes: dict[str, object] = {"Metadata": {MTIME_METADATA: f"{f.mtime:.6f}"}}
        if content_type:
            attributes["ContentType"] = content_type
        return SourceFacts(attributes, COMPUTED_CRC32)

    def etag_facts(self, f: SourceFile) -> tuple[bool, int]:
        return False, 0  # a file has no ETag

    def describe(self, f: SourceFile) -> str:
        return printable(f.path)


def _seek_read(fh, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(length)


def source_bucket(settings: Settings) -> str:
    """The bucket a job reads from: SrcBucket (S3_TO_S3), ali_SrcBucket (ALIOSS_TO_S3), none (LOCAL_TO_S3)."""
    return {"S3_TO_S3": settings.src_bucket, "ALIOSS_TO_S3": settings.ali_src_bucket}.get(settings.job_type, "")


class S3Source:
    """Objects in SrcBucket under S3Prefix, read by ranged GET pinned to the listed ETag (If-Match), so an object
    replaced mid-copy fails the file instead of mixing versions.  Re-reading is a download, so parts already at the
    destination are trusted by size when the upload's resume marker ties it to this very version, and checked by
    reading them again otherwise.  ALIOSS_TO_S3 is this same source on ali_SrcBucket, with a client for OSS."""

    kind = "s3"
    verify_existing_parts = False

    def __init__(self, settings: Settings, client, retry: RetryPolicy):
        self.client, self.retry = client, retry
        self.bucket = source_bucket(settings)
        self.prefix = settings.s3_prefix
        # As typed, as in the original and in S3 itself: "data" lists data/..., data.txt and data2/...
        self.list_prefix = settings.s3_prefix
        self.index = settings.src_file_index
        self.listing_errors = Tally()
        # Aliyun OSS has none of S3's additional checksums (and is asked for nothing it does not know), and its
        # multipart ETags are not known to follow S3's formula.
        self.asks_checksums = self.multipart_etags_comparable = settings.job_type == "S3_TO_S3"

    def top(self) -> Dir | None:
        """The first "directory" to list: S3Prefix as typed (keys are the same at the destination), or None when
        SrcFileIndex names one object."""
        return (self.list_prefix, self.list_prefix) if self.index == "*" else None

    def only(self) -> SourceFile:
        key = join_key(self.prefix, self.index)
        try:
            return self.head(key)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                raise UserError(f"SrcFileIndex {self.index!r}: s3://{self.bucket}/{key} does not exist; check "
                                f"S3Prefix and SrcFileIndex") from None  # fmt: skip
            raise

    def sample(self) -> Iterator[SourceFile]:
        """The first object under S3Prefix, if any (one request)."""
        for key, size, etag, modified in list_page(self.client, self.bucket, self.list_prefix, self.retry,
                                                   page_size=1).objects:  # fmt: skip
            yield SourceFile(key=key, size=size, mtime=modified, etag=etag, version=etag)

    def list_dir(self, directory: Dir, quiet: bool = False) -> Iterator[SourceFile | Dir]:
        """The objects and common prefixes under one prefix (Delimiter '/'), page by page, objects in key order
        (zero-byte "folder" markers left out)."""
        prefix, token = directory[0], ""
        while True:
            page = list_page(self.client, self.bucket, prefix, self.retry, token, delimiter="/")
            for sub in page.prefixes:
                yield sub, sub
            for key, size, etag, modified in page.objects:
                if size or not key.endswith("/"):
                    yield SourceFile(key=key, size=size, mtime=modified, etag=etag, version=etag)
            if not page.truncated or not page.token:
                return
            token = page.token

    def head(self, key: str) -> SourceFile:
        """The object as it is now (HeadObject), e.g. for a fleet worker that must not trust a message."""
        head = self.retry.call(
            f"HEAD s3://{self.bucket}/{key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
        )
        etag = head["ETag"].strip('"')
        return SourceFile(key=key, size=head["ContentLength"], mtime=head["LastModified"].timestamp(), etag=etag,
                          version=etag)  # fmt: skip

    def read(self, f: SourceFile, offset: int, length: int) -> bytes:
        try:
            resp = self.client.get_object(
                Bucket=self.bucket, Key=f.key, IfMatch=f'"{f.etag}"', Range=f"bytes={offset}-{offset + length - 1}"
            )
        except botocore.exceptions.ClientError as exc:
            self._changed(f, exc)
            raise
        data = resp["Body"].read()
        if len(data) != length:
            raise ShortRead(f"s3://{self.bucket}/{f.key}: got {len(data)} of {length} bytes at {offset}")
        return data

    def _changed(self, f: SourceFile, exc: botocore.exceptions.ClientError) -> None:
        """A pinned read refused because the object was replaced or deleted: the file is not completed."""
        code = error_code(exc)
        if code in ("PreconditionFailed", "412"):  # a HeadObject's 412 has no body, so no code but its status
            raise SourceChanged(
                f"{self.describe(f)} changed during the transfer (it is no longer version {f.etag}); "
                f"not completed, rerun to copy the new version"
            ) from None
        if code in NOT_FOUND_CODES:
            raise SourceChanged(f"{self.describe(f)} was deleted during the transfer; not completed") from None

    def current(self, f: SourceFile) -> SourceFile:
        return f  # reads are pinned by If-Match: a replaced object fails them (PreconditionFailed)

    def resolve(self, key: str) -> SourceFile:
        """The job's object with this key, as it is now (HeadObject), or FileFailed: a fleet worker takes only the
        key from a message, and only a key this job would list."""
        if not key.startswith(self.list_prefix) or (key.endswith("/")):
            raise FileFailed(f"key {key!r} is not an object under this job's S3Prefix {self.list_prefix!r}")
        if self.index != "*" and key != join_key(self.prefix, self.index):
            raise FileFailed(f"key {key!r} is not this job's SrcFileIndex {self.index!r}")
        try:
            return self.head(key)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                raise FileFailed(f"s3://{self.bucket}/{key} is not in the source") from None
            raise

    def identity(self, f: SourceFile) -> str:
        # Equal ETags mean equal bytes (MD5-based ETags), or one write (KMS): never two versions.
        return f"s3 etag {f.etag} size {f.size}"

    # HeadObject field -> PutObject / CreateMultipartUpload argument: what a copy keeps of the source object.
    COPIED_ATTRIBUTES = ("ContentType", "ContentEncoding", "CacheControl", "ContentDisposition", "ContentLanguage",
                         "Metadata")  # fmt: skip

    def _head(self, f: SourceFile, **kwargs) -> dict:
        def head() -> dict:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=f.key, IfMatch=f'"{f.etag}"', **kwargs)
            except botocore.exceptions.ClientError as exc:
                self._changed(f, exc)
                raise

        return self.retry.call(f"HEAD s3://{self.bucket}/{f.key}", head)

    def facts(self, f: SourceFile) -> SourceFacts:
        """One HeadObject (with ChecksumMode): the attributes to copy and the source's full-object checksum, if it
        has one (AWS gives new objects a CRC64NVME).  Without one, a multipart source's own part layout: copied with
        the same parts, the copy's ETag must equal the source's, which proves the bytes."""
        head = self._head(f, **({"ChecksumMode": "ENABLED"} if self.asks_checksums else {}))
        attributes = {name: head[name] for name in self.COPIED_ATTRIBUTES if head.get(name)}
        checksum = full_object_checksum(head)
        if checksum or not etag_is_md5(head) or not re.fullmatch(r"[0-9a-f]{32}-[0-9]+", f.etag):
            return SourceFacts(attributes, checksum)
        parts = int(f.etag.rsplit("-", 1)[1])
        part_size, ends = self._layout(f, parts)
        return SourceFacts(attributes, None, part_size, parts if part_size else 0, ends)

    def _layout(self, f: SourceFile, parts: int) -> tuple[int, tuple[int, ...]]:
        """The source's own part layout (part_layout): (the size of every part but the last, ()) when its parts are
        of one size, (the largest part's size, where each part ends) when they are not, (0, ()) when unknown."""
        plan = part_layout(lambda n: self._head(f, PartNumber=n), f.size, parts)
        return (plan.part_size, plan.ends) if plan is not None else (0, ())

    def etag_facts(self, f: SourceFile) -> tuple[bool, int]:
        """Whether the object's ETag is an MD5 (not with KMS or SSE-C), and its first part's size (the whole
        object's, when it is in one part)."""
        head = self._head(f, **({"PartNumber": 1} if etag_part_count(f.etag) > 0 else {}))
        return etag_is_md5(head), int(head.get("ContentLength", -1))

    def describe(self, f: SourceFile) -> str:
        return f"s3://{self.bucket}/{f.key}"


def part_layout(head_part: Callable[[int], dict], size: int, parts: int) -> ChunkPlan | None:
    """An object's own part layout, or None when the store does not tell.  Every part's size is asked (HeadObject with
    PartNumber, 16 at a time): a layout guessed from a few parts could be wrong, and a copy's ETag, or one rebuilt
    from the source, would then never equal the object's."""
    try:
        first = head_part(1)
    except botocore.exceptions.ClientError:
        return None  # a store without HeadObject per part
    first_size = int(first.get("ContentLength", 0))
    if int(first.get("PartsCount", 0) or 0) != parts or first_size <= 0:
        return None
    with concurrent.futures.ThreadPoolExecutor(min(16, max(parts - 1, 1)), thread_name_prefix="layout") as pool:
        rest = list(pool.map(lambda n: int(head_part(n).get("ContentLength", -1)), range(2, parts + 1)))
    sizes = [first_size, *rest]
    if sum(sizes) != size or min(sizes) <= 0:
        return None
    if all(n == first_size for n in sizes[:-1]) and sizes[-1] <= first_size:
        return ChunkPlan(size, first_size)
    return ChunkPlan(size, max(sizes), tuple(itertools.accumulate(sizes)))


FULL_OBJECT_ALGORITHMS = ("CRC64NVME", "CRC32C", "CRC32")  # the checksums S3 can check for a whole object


def full_object_checksum(head: dict) -> tuple[str, str] | None:
    """(algorithm, value) of a full-object checksum in a HeadObject answer.  Some stores omit ChecksumType: a value
    without a '-N' suffix is a full-object one (a composite checksum of N parts ends in '-N')."""
    for algorithm in FULL_OBJECT_ALGORITHMS:
        value = head.get(f"Checksum{algorithm}")
        if value and (head.get("ChecksumType") == "FULL_OBJECT" or (not head.get("ChecksumType") and "-" not in value)):
            return algorithm, value
    return None


class Listed(NamedTuple):
    """An object of the destination (or of an S3 source), as its listing or a HeadObject shows it.  A tuple: a listing
    of ten million objects makes ten million of them, one at a time."""

    key: str
    size: int
    etag: str  # unquoted
    written: float  # LastModified, epoch seconds


@dataclasses.dataclass(frozen=True, slots=True)
class ListPage:
    """One ListObjectsV2 answer, parsed by parse_list_page."""

    objects: list[Listed]
    prefixes: list[str]  # CommonPrefixes, with a Delimiter
    truncated: bool
    token: str  # NextContinuationToken


# ListObjectsV2 is the hot path of a plan: botocore's own parser costs some 140 us per object here, the lean one below
# about 8.  botocore still builds, signs, sends and retries the request and turns error answers into exceptions; only
# the body of a 200 answer is taken away from it (keep_raw_listing) and parsed here.
_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.S)


# The order AWS, SeaweedFS and moto write: Key, LastModified, ETag, maybe ChecksumAlgorithm/ChecksumType, Size.  One
# pattern for all four fields is 4 times as fast as finding each; an answer in another order takes the general path.
_CONTENTS_IN_ORDER = re.compile(
    rb"<Contents><Key>([^<]*)</Key><LastModified>([^<]*)</LastModified><ETag>([^<]*)</ETag>"
    rb"(?:<Checksum[A-Za-z]*>[^<]*</Checksum[A-Za-z]*>)*<Size>([0-9]+)</Size>"
)


_FIELD = re.compile(rb"<(Key|Size|ETag|LastModified)>([^<]*)</")


_COMMON_PREFIX = re.compile(rb"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>")


_TRUNCATED = re.compile(rb"<IsTruncated>\s*true\s*</IsTruncated>")


_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")


_raw_listing = threading.local()  # set around a listing whose body this thread parses itself


_timestamps: dict[bytes, float] = {}  # LastModified text -> epoch seconds: objects written together share them


def keep_raw_listing(operation_model, response_dict: dict, customized_response_dict: dict, **_kwargs) -> None:
    """before-parse handler (registered first: before botocore's own, which parses every S3 body whole to look for an
    error in a 200 answer): the body of a 200 ListObjectsV2 answer goes to the caller as RawBody, and botocore parses
    an empty result instead, when this thread asked for it (list_page).  An error in a 200 answer (its root element
    is Error) is left to botocore."""
    wanted = getattr(_raw_listing, "wanted", False) and operation_model.name == "ListObjectsV2"
    if wanted and response_dict.get("status_code") == 200 and b"<ListBucketResult" in response_dict["body"][:512]:
        customized_response_dict["RawBody"] = response_dict["body"]
        response_dict["body"] = b"<ListBucketResult></ListBucketResult>"


def take_raw_listings(client) -> None:
    """Register keep_raw_listing on a client, ahead of botocore's own check of 200 answers (which parses every body
    whole: some 8 us per listed object)."""
    check_200 = getattr(botocore.handlers, "_handle_200_error", None)
    if check_200 is not None:
        client.meta.events.unregister("before-parse.s3.*", check_200)
    client.meta.events.register_first("before-parse.s3.*", keep_raw_listing)
    if check_200 is not None:
        client.meta.events.register_first("before-parse.s3.*", check_200)


def _listed_text(raw: bytes, url_encoded: bool) -> str:
    """An element's text: XML entities resolved, then, if the answer says EncodingType url, the URL encoding (a key may
    hold characters XML 1.0 cannot carry; S3 writes a space as '+', as botocore decodes it too)."""
    text = raw.decode("utf-8")
    if "&" in text:
        text = html.unescape(text)
    if url_encoded and ("%" in text or "+" in text):
        text = urllib.parse.unquote_plus(text)
    return text


def _etag_text(raw: bytes) -> str:
    return raw.replace(b"&quot;", b"").replace(b"&#34;", b"").strip(b'"').decode("ascii", "replace")


def _epoch(text: bytes) -> float:
    seconds = _timestamps.get(text)
    if seconds is None:
        if len(_timestamps) > 4096:
            _timestamps.clear()
        seconds = _timestamps[text] = parse_timestamp_fast(text.decode()).timestamp() if text else 0.0
    return seconds


def parse_list_page(body: bytes) -> ListPage:
    """A ListObjectsV2 answer (the XML body) as a ListPage."""
    url = b"<EncodingType>url</EncodingType>" in body
    in_order = _CONTENTS_IN_ORDER.findall(body)
    if len(in_order) == body.count(b"<Contents>"):
        objects = [Listed(_listed_text(key, url), int(size), _etag_text(etag), _epoch(modified))
                   for key, modified, etag, size in in_order]  # fmt: skip
    else:
        objects = []
        for block in _CONTENTS.finditer(body):
            fields = dict(_FIELD.findall(block.group(1)))
            objects.append(Listed(_listed_text(fields[b"Key"], url), int(fields[b"Size"]),
                                  _etag_text(fields.get(b"ETag", b"")),
                                  _epoch(fields.get(b"LastModified", b""))))  # fmt: skip
    prefixes = [_listed_text(p, url) for p in _COMMON_PREFIX.findall(body)]
    token = _NEXT_TOKEN.search(body)
    return ListPage(
        objects, prefixes, bool(_TRUNCATED.search(body)), _listed_text(token.group(1), False) if token else ""
    )


LIST_PAGE_SIZE = 1000  # keys per ListObjectsV2 page: S3's largest (the tests lower it to list over many pages)


def list_page(client, bucket: str, prefix: str, retry: RetryPolicy, token: str = "", delimiter: str = "",
              start_after: str = "", page_size: int = 0) -> ListPage:  # fmt: skip
    """One page of ListObjectsV2 (botocore asks for EncodingType url by itself), parsed by parse_list_page;
    ``page_size`` 0: LIST_PAGE_SIZE."""
    kwargs: dict[str, object] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size or LIST_PAGE_SIZE}
    if token:
        kwargs["ContinuationToken"] = token
    if delimiter:
        kwargs["Delimiter"] = delimiter
    if start_after:
        kwargs["StartAfter"] = start_after

    def request() -> dict:
        _raw_listing.wanted = True
        try:
            return client.list_objects_v2(**kwargs)
        finally:
            _raw_listing.wanted = False

    answer = retry.call(f"LIST s3://{bucket}/{prefix}", request)
    return parse_list_page(answer["RawBody"]) if "RawBody" in answer else parsed_list_page(answer)


def parsed_list_page(answer: dict) -> ListPage:
    """A ListPage from botocore's own parse (a client without keep_raw_listing, e.g. a test's)."""
    objects = [Listed(o["Key"], o["Size"], o.get("ETag", "").strip('"'), o["LastModified"].timestamp())
               for o in answer.get("Contents", [])]  # fmt: skip
    return ListPage(objects, [p["Prefix"] for p in answer.get("CommonPrefixes", [])], bool(answer.get("IsTruncated")),
                    answer.get("NextContinuationToken", ""))  # fmt: skip


def iter_objects(client, bucket: str, prefix: str, retry: RetryPolicy, delimiter: str = "",
                 page_size: int = 0) -> Iterator[Listed]:  # fmt: skip
    """The objects under prefix (with a delimiter: those directly under it), page by page, in the store's order."""
    token = ""
    while True:
        page = list_page(client, bucket, prefix, retry, token, delimiter, page_size=page_size)
        yield from page.objects
        if not page.truncated or not page.token:
            return
        token = page.token


@dataclasses.dataclass(frozen=True, slots=True)
class UnfinishedUpload:
    key: str
    upload_id: str
    initiated: float  # epoch seconds


def list_unfinished_uploads(
    client, bucket: str, prefix: str, retry: RetryPolicy, page_size: int = 1000
) -> list[UnfinishedUpload]:
    """Every unfinished upload under prefix, paged by KeyMarker and UploadIdMarker.  The keys are asked URL-encoded
    (EncodingType=url; botocore does not ask for this listing, nor decode it) and decoded once here: as they are, a
    key with a control character comes back altered (U+FFFD) or as XML no parser takes, and its upload could never
    be resumed nor aborted.  The next page's KeyMarker is the decoded key (botocore encodes it in the URL)."""
    uploads: list[UnfinishedUpload] = []
    key_marker = id_marker = ""
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxUploads": page_size, "EncodingType": "url"}
        if key_marker:
            kwargs["KeyMarker"] = key_marker
        if id_marker:
            kwargs["UploadIdMarker"] = id_marker
        page = retry.call(
            f"LIST uploads s3://{bucket}/{prefix}", functools.partial(client.list_multipart_uploads, **kwargs)
        )
        decode = uploads_key_decoder(client, kwargs, page)
        for u in page.get("Uploads", []):
            uploads.append(UnfinishedUpload(decode(u["Key"]), u["UploadId"], u["Initiated"].timestamp()))
        if not page.get("IsTruncated"):
            return uploads
        next_key, next_id = decode(page.get("NextKeyMarker") or ""), page.get("NextUploadIdMarker", "")
        if (next_key, next_id) == (key_marker, id_marker):
            return uploads  # a server that does not advance its markers: stop rather than loop
        key_marker, id_marker = next_key, next_id


# The characters a URL-encoded key is written with: printable ASCII without the space (AWS writes a space as '+').
_URL_ENCODED_KEY = re.compile(r"[!-~]*")


def uploads_key_decoder(client, kwargs: dict, page: dict) -> Callable[[str], str]:
    """How to read the keys of a ListMultipartUploads page asked with EncodingType=url: URL-decoded (as botocore
    decodes ListObjectsV2: a '+' is a space) when the answer says they were encoded.  A store may say so and send
    them as they are (SeaweedFS does, in this listing): a key no URL-encoder writes (a space, a control character,
    U+FFFD, a letter that is not ASCII) shows it; a page that could be either way and holds a '+' or a '%' is asked
    again without encoding, and the same keys in the answer mean they were not encoded (an encoder writes every '+'
    and '%' of a key otherwise)."""
    keys = [str(u["Key"]) for u in page.get("Uploads", [])]
    if page.get("EncodingType") != "url" or not all(_URL_ENCODED_KEY.fullmatch(k) for k in keys):
        return str
    if not any("+" in k or "%" in k for k in [*keys, str(page.get("NextKeyMarker") or "")]):
        return str  # decoding would change nothing
    plain = {name: value for name, value in kwargs.items() if name != "EncodingType"}
    try:
        as_they_are = [u["Key"] for u in client.list_multipart_uploads(**plain).get("Uploads", [])]
    except Exception:  # a probe: its failure (e.g. AWS's plain answer for a control character is not valid XML)
        as_they_are = None  # says nothing against the keys having been encoded
    return str if as_they_are == keys else urllib.parse.unquote_plus


HEAD_REFUSED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})  # a HEAD's 403 has no body


def head_destination(client, bucket: str, key: str, retry: RetryPolicy, needed_for: str, **kwargs) -> dict | None:
    """HeadObject of a destination object, or None when there is none.  A refusal fails the one file that needed it
    (FileFailed, naming the permission: HeadObject needs s3:GetObject), never the run."""
    try:
        return retry.call(f"HEAD {key}", functools.partial(client.head_object, Bucket=bucket, Key=key, **kwargs))
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in NOT_FOUND_CODES:
            return None
        if code in HEAD_REFUSED_CODES:
            raise FileFailed(f"HeadObject of s3://{bucket}/{key} was refused ({describe_error(exc)}), needed "
                             f"{needed_for}; grant the destination's profile s3:GetObject on the bucket"
                             ) from None  # fmt: skip
        raise


def abort_upload(client, bucket: str, key: str, upload_id: str, retry: RetryPolicy) -> None:
    """AbortMultipartUpload; an upload already gone (aborted or completed by someone else) is not an error."""
    try:
        retry.call(f"ABORT {key}", functools.partial(client.abort_multipart_upload, Bucket=bucket, Key=key,
                                                     UploadId=upload_id))  # fmt: skip
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchUpload":
            raise


@dataclasses.dataclass(frozen=True, slots=True)
class ExistingPart:
    number: int
    size: int
    etag: str  # hex, unquoted
    modified: float = 0.0  # LastModified, epoch seconds


@dataclasses.dataclass(frozen=True)
class UploadState:
    """An unfinished upload as ListParts shows it, and how long ago anything was added to it, by S3's own clock (the
    Date of its answer): this machine's clock may be off."""

    parts: list[ExistingPart]
    idle: float  # seconds since its newest part (or since it was created, if it has none)

    def abandoned(self, settings: Settings) -> bool:
        """Nothing added for AbandonedAfter seconds: nobody is working on it any more (a live run adds parts)."""
        return self.idle >= settings.abandoned_after


def list_upload_parts(client, bucket: str, key: str, upload_id: str, retry: RetryPolicy) -> list[ExistingPart]:
    """Every part of an unfinished upload, paginated.  Some servers list a re-sent part number twice: all entries
    are kept here (sorted by number) and ``pick_existing_part`` decides which one counts."""
    return read_upload(client, bucket, key, upload_id, 0.0, retry).parts


def read_upload(client, bucket: str, key: str, upload_id: str, initiated: float, retry: RetryPolicy) -> UploadState:
    """ListParts of an unfinished upload, paginated (its parts sorted by number), and how long it has been idle."""
    parts: list[ExistingPart] = []
    marker, now = 0, 0.0
    while True:
        page = retry.call(
            f"LIST parts s3://{bucket}/{key}",
            functools.partial(client.list_parts, Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker),
        )
        now = server_time(page)
        for p in page.get("Parts", []):
            modified = p["LastModified"].timestamp() if p.get("LastModified") else 0.0
            parts.append(ExistingPart(p["PartNumber"], p["Size"], p["ETag"].strip('"'), modified))
        next_marker = int(page.get("NextPartNumberMarker") or 0)
        if not page.get("IsTruncated") or next_marker <= marker:
            break
        marker = next_marker
    parts.sort(key=lambda p: p.number)
    last = max((p.modified for p in parts), default=0.0) or initiated
    return UploadState(parts, max(0.0, now - last))


def server_time(answer: dict) -> float:
    """S3's clock: the Date of its answer (this machine's when it has none)."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date", "")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return time.time()


# ----------------------------------------------------------------------------------------------------------------------
# 4. Match: both sides walked directory by directory, in lock step
# ----------------------------------------------------------------------------------------------------------------------


def walk_source(source: Source, quiet: bool = False) -> Iterator[SourceFile]:
    """Every file of a source, one directory after the other (deep first), without the destination."""
    top = source.top()
    if top is None:
        yield source.only()
        return
    pending = [top]
    while pending:
        for item in source.list_dir(pending.pop(), quiet):
            if isinstance(item, tuple):
                pending.append(item)
            else:
                yield item


class LockStep:
    """The destination's listing of one directory, in key order, walked in lock step with the source's files of that
    directory (in the same order): match() gives each file the object of its key, or None.  Memory: one object.  The
    listing is asked for its first page only when the first file comes."""

    def __init__(self, objects: Iterable[Listed]):
        self._objects = iter(objects)
        self._current: Listed | None = None
        self._started = False

    def match(self, f: SourceFile) -> Listed | None:
        if not self._started:
            self._current, self._started = next(self._objects, None), True
        while self._current is not None and self._current[0] < f.key:
            self._current = next(self._objects, None)
        return self._current if self._current is not None and self._current[0] == f.key else None


def match_sorted(files: Iterable[SourceFile], objects: Iterable[Listed]) -> Iterator[tuple[SourceFile, Listed | None]]:
    """Two listings of one directory in key order walked in lock step (LockStep)."""
    step = LockStep(objects)
    for f in files:
        yield f, step.match(f)


LISTERS = 16  # directories listed at once: each has a page of the source or of the destination in flight


MARCH_WINDOW = 10_000  # matched files waiting for the plan: the listing never runs further ahead


MARCH_BATCH = 250  # matched files handed to the plan at once (one hand-over between threads costs ~10 us)


class March:
    """Both sides of a job walked directory by directory, as rclone's march does: each directory of the source
    (S3: a prefix listed with Delimiter '/') is listed with the same directory of the destination, and their files
    are matched in lock step (match_sorted).  Within one directory every store lists names in the same order; across
    directories they do not (AWS lists 'a-c' before 'a/x', SeaweedFS after), so no order is assumed between them.

    LISTERS directories are listed at once; the files matched wait in a window of MARCH_WINDOW for the plan to take
    them.  Memory: that window, the directories not yet listed, and one page (a local directory's names) per lister.
    Iterating gives (file, destination object or None) as the listings go, in no particular order."""

    def __init__(self, job: Job, quiet: bool = False, listers: int = LISTERS):
        self.job, self.quiet, self.listers = job, quiet, listers
        self._lock = threading.Condition()
        self._pending: list[Dir] = []
        self._busy = 0
        self._stopped = False
        self._out: queue.Queue = queue.Queue(maxsize=MARCH_WINDOW // MARCH_BATCH)

    def __iter__(self) -> Iterator[tuple[SourceFile, Listed | None]]:
        top = self.job.source.top()
        if top is None:  # SrcFileIndex: one file
            f = self.job.source.only()
            head = head_destination(self.job.des_client, self.job.settings.des_bucket, f.key, self.job.retry,
                                    "to tell whether the object is already there")  # fmt: skip
            there = None if head is None else Listed(f.key, head["ContentLength"], str(head.get("ETag", "")).strip('"'),
                                                     head["LastModified"].timestamp())  # fmt: skip
            yield f, there
            return
        self._pending.append(top)
        threads = [threading.Thread(target=self._work, name=f"lister-{n}", daemon=True) for n in range(self.listers)]
        for thread in threads:
            thread.start()
        try:
            while (batch := self._out.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                yield from batch
        finally:
            with self._lock:
                self._stopped = True
                self._lock.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and self._busy and not self._stopped:
                    self._lock.wait()
                if self._stopped or not self._pending:  # nothing left to list, and nobody listing
                    if not self._stopped:
                        self._stopped = True
                        self._put(None)
                    self._lock.notify_all()
                    return
                directory = self._pending.pop()  # the newest: deep first, so the directories waiting stay few
                self._busy += 1
            try:
                self._one(directory)
            except BaseException as exc:  # the walk stops; the plan raises it
                with self._lock:
                    self._stopped = True
                self._put(exc)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._lock.notify_all()

    def _put(self, item) -> None:
        while True:
            with contextlib.suppress(queue.Full):
                self._out.put(item, timeout=0.5)
                return
            if self._stopped and item is not None and not isinstance(item, BaseException):
                return  # nobody takes it any more

    def _one(self, directory: Dir) -> None:
        job = self.job
        bucket, prefix = job.settings.des_bucket, directory[1]
        objects = guarded(iter_objects(job.des_client, bucket, prefix, job.retry, delimiter="/"), job.des_what,
                          check_access)  # fmt: skip
        step = LockStep(objects)
        batch: list[tuple[SourceFile, Listed | None]] = []
        for item in guarded(job.source.list_dir(directory, self.quiet), job.src_what, job.check_source):
            if self._stopped:
                return
            if isinstance(item, tuple):
                with self._lock:
                    self._pending.append(item)
                    self._lock.notify()
            else:
                batch.append((item, step.match(item)))
                if len(batch) == MARCH_BATCH:
                    self._put(batch)
                    batch = []
        if batch:
            self._put(batch)


@dataclasses.dataclass
class Listings:
    """A job's listings, begun: the unfinished uploads (whole: they are few), and the source walked with the
    destination (March), whose access was proven by a first request to each side before any question."""

    uploads: list[UnfinishedUpload]
    pairs: Iterable[tuple[SourceFile, Listed | None]]
    first: SourceFile | None  # a file of the source (CopyMode's sample), if it has one


def guarded(items: Iterable, what: str, check: Callable[[BaseException, str], None]) -> Iterator:
    """A listing whose failure (at any page) is, where it can be, one line the user can act on (exit 2)."""
    try:
        yield from items
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        check(exc, what)
        raise


def open_listings(job: Job) -> Listings:
    """The unfinished uploads, and one request to each side (a refusal is a user error, exit 2).  The three do not
    depend on each other: on a long link each costs round trips, so they overlap."""
    settings = job.settings

    def source_sample() -> SourceFile | None:
        if job.source.top() is None:
            return job.source.only()
        return next(guarded(job.source.sample(), job.src_what, job.check_source), None)

    def unfinished() -> list[UnfinishedUpload]:
        try:
            return list_unfinished_uploads(job.des_client, settings.des_bucket, job.dest_prefix, job.retry)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            check_access(exc, job.des_what)
            raise

    def first_object() -> None:
        try:
            list_page(job.des_client, settings.des_bucket, job.dest_prefix, job.retry, page_size=1)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            check_access(exc, job.des_what)
            raise

    with concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="list") as pool:
        sample, probe, listed = pool.submit(source_sample), pool.submit(first_object), pool.submit(unfinished)
        first, _ = sample.result(), probe.result()
        return Listings(listed.result(), March(job), first)


# ----------------------------------------------------------------------------------------------------------------------
# 5. Plan: what to do for each file, decided from the listings
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)  # one per file planned (frozen dataclasses take 3 times as long to make)
class ChunkPlan:
    """How one file is cut into parts: every part ``part_size`` bytes but the last; or, to keep the layout of a
    multipart source whose parts are not of one size, where each part ends (``ends``; ``part_size`` its largest)."""

    size: int
    part_size: int
    ends: tuple[int, ...] = ()

    @property
    def part_count(self) -> int:
        return len(self.ends) if self.ends else max(1, math.ceil(self.size / self.part_size))

    def part_range(self, number: int) -> tuple[int, int]:
        """(offset, length) of part ``number`` (1-based)."""
        if self.ends:
            offset = self.ends[number - 2] if number > 1 else 0
            return offset, self.ends[number - 1] - offset
        offset = (number - 1) * self.part_size
        return offset, min(self.part_size, self.size - offset)

    def parts(self) -> Iterator[tuple[int, int, int]]:
        for number in range(1, self.part_count + 1):
            yield (number, *self.part_range(number))


def plan_chunks(size: int, chunk_size: int) -> ChunkPlan:
    """ChunkSize, grown (to a whole MiB) when the file would otherwise need more than 9,999 data parts."""
    part_size = chunk_size
    if math.ceil(size / part_size) > MAX_DATA_PARTS:
        part_size = math.ceil(size / MAX_DATA_PARTS / MiB) * MiB
    return ChunkPlan(size=size, part_size=part_size)


def multipart_etag(digests: Iterable[bytes]) -> str:
    """S3's ETag of a multipart object: MD5 of the concatenated binary part MD5s, then '-N'."""
    digests = list(digests)
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def pick_existing_part(entries: list[ExistingPart], length: int, md5_hex: str | None) -> ExistingPart | None:
    """The listed part that may stand in for ours: right size, and (when we know our MD5) the same ETag."""
    for entry in reversed(entries):  # the newest listing entry first
        if entry.size == length and (md5_hex is None or entry.etag == md5_hex):
            return entry
    return None


# Resume marker.  S3 keeps nothing of an unfinished upload but its key, its start time and its parts, and the start
# time cannot say which version of the source the parts were cut from (two stores' clocks differ; a replacement can
# fall in the same second).  So every upload gets, right after it is created and before any data part, parts 9,999 and
# 10,000: the same few bytes, naming the source version and the part layout.  ListParts shows their ETag, the MD5 of
# those bytes; a rerun computes the MD5 the marker of *its* source version and layout would have, and resumes only on
# a match.  The marker is never part of the completed object: CompleteMultipartUpload lists the data parts only, 1 to
# N, consecutive (as S3 requires when parts carry checksums).  And no other tool can complete it into one by mistake:
# one that completes the upload from its ListParts (the original's completeUpload, `aws s3api list-parts` +
# `complete-multipart-upload`) lists part 9,999, a part under 5 MiB that is not the last, which S3 refuses
# (EntityTooSmall), instead of appending the marker's bytes to the object.  s3_upload 1.1 and earlier wrote the marker
# in part 10,000 alone (marker version 1, data in parts 1 to 9,999): such uploads still resume.


def marker_body(identity: str, plan: ChunkPlan, checksum: tuple[str, str] | None = None) -> bytes:
    """The marker's bytes: the source version, the part layout, and the full-object checksum the upload was created
    with (an upload made without one cannot be completed with one)."""
    algorithm = checksum[0] if checksum else "none"
    layout = f"part_ends_md5 {hashlib.md5(repr(plan.ends).encode()).hexdigest()}\n" if plan.ends else ""
    return (f"s3_upload resume marker 2 (parts 9999 and 10000 are this marker, not data)\nsource {identity}\n"
            f"size {plan.size}\npart_size {plan.part_size}\n{layout}checksum {algorithm}\n").encode()  # fmt: skip


def legacy_marker_body(identity: str, plan: ChunkPlan, checksum: tuple[str, str] | None = None) -> bytes:
    """The marker s3_upload 1.1 and earlier wrote in part 10,000 alone."""
    algorithm = checksum[0] if checksum else "none"
    return (f"s3_upload resume marker 1\nsource {identity}\nsize {plan.size}\npart_size {plan.part_size}\n"
            f"checksum {algorithm}\n").encode()  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ResumeCheck:
    """Whether an unfinished upload can be continued with this plan, and how far its parts can be trusted."""

    restart: str = ""  # why it cannot ('' when it can)
    proven: bool = False  # the marker ties it to this source version and part layout: parts of the right size count
    markers: tuple[int, ...] = ()  # the part numbers that hold its marker (never data)
    # Proven, but made without the full-object checksum this run computes (by s3_upload before 1.3): it is completed
    # without one, proven by its part MD5s.
    without_checksum: bool = False


def marker_numbers(parts: list[ExistingPart]) -> tuple[int, ...]:
    """Which listed parts are a marker: a small part 10,000 (every part of a file but its last is 5 MiB or more, and
    no file of this tool reaches part 10,000), and a small part 9,999 with the same bytes as part 10,000 (a part 9,999
    of s3_upload 1.1 was data)."""
    tops = {p.etag for p in parts if p.number == MARKER_PART and p.size < MIN_PART_SIZE}
    numbers = {MARKER_PART} if tops else set()
    if any(p.number == MARKER_TWIN_PART and p.size < MIN_PART_SIZE and p.etag in tops for p in parts):
        numbers.add(MARKER_TWIN_PART)
    return tuple(sorted(numbers))


def judge_upload(plan: ChunkPlan, parts: list[ExistingPart], identity: str,
                 checksum: tuple[str, str] | None = None) -> ResumeCheck:  # fmt: skip
    """Decide about an unfinished upload of this key from its listed parts (marker included).

    With a marker: resume only if it was made for this source version and layout.  Without one (the original tool,
    another tool, or an upload created a moment ago by another run, its marker on the way), the upload is not tied to
    any version: each part is reused only once its bytes are proven equal to the source by MD5 (LOCAL_TO_S3 hashes
    the local file; S3_TO_S3 reads the range from the source again), and an upload whose parts cannot fit this layout
    restarts at once."""
    expected = {hashlib.md5(marker_body(identity, plan, checksum)).hexdigest()}
    proven_numbers = tuple(sorted({p.number for p in parts if p.number in MARKER_PARTS and p.etag in expected
                                   and p.size < MIN_PART_SIZE}))  # fmt: skip
    if proven_numbers:
        return ResumeCheck(proven=True, markers=proven_numbers)
    markers = marker_numbers(parts)
    if markers:
        legacy = hashlib.md5(legacy_marker_body(identity, plan, checksum)).hexdigest()
        if markers == (MARKER_PART,) and any(p.number == MARKER_PART and p.etag == legacy for p in parts):
            return ResumeCheck(proven=True, markers=markers)
        return ResumeCheck("it was made for another version of the source or another ChunkSize", markers=markers)
    sizes_by_number: dict[int, set[int]] = {}
    for p in parts:
        sizes_by_number.setdefault(p.number, set()).add(p.size)
    for number, sizes in sizes_by_number.items():
        if number > plan.part_count:
            return ResumeCheck(f"it has part {number} but the file now needs {plan.part_count} parts (size or "
                               f"ChunkSize changed)")  # fmt: skip
        expected_size = plan.part_range(number)[1]
        if expected_size not in sizes:
            return ResumeCheck(f"its part {number} is {min(sizes)} bytes, the current plan needs {expected_size} "
                               f"(ChunkSize or file size changed)")  # fmt: skip
    return ResumeCheck()


@dataclasses.dataclass(frozen=True)
class Shape:
    """How one file goes up in this attempt, and what proves the finished object equal to its source."""

    plan: ChunkPlan
    multipart: bool
    checksum: tuple[str, str] | None = None  # the source's full-object checksum: S3 checks the copy against it
    same_layout: bool = False  # parts cut as the source's: the copy's ETag must equal the source's
    proof: str = "part MD5s"


PROOF_PARTS = "part MD5s"  # each part checked by Content-MD5 (or S3's copy of it), the ETag by their digests


PROOF_ETAG = "ETag equal to the source"


PROOF_SERVER = "S3's own copy of the listed version"  # UploadPartCopy / CopyObject pinned by CopySourceIfMatch


def shape_of(task: FileTask, facts: SourceFacts, settings: Settings, copies: bool, computed_checksums: bool = True
             ) -> Shape:  # fmt: skip
    """How a file goes up, and what will prove it: the source's full-object checksum, handed to S3 to check; else a
    multipart source's own part layout, so the copy's ETag must equal the source's (streamed: only when its parts fit
    the memory the settings allow); else the part MD5s, or, copied by S3, the pinned copy itself."""
    f = task.src
    plain = Shape(task.plan, task.action == "multipart", proof=PROOF_SERVER if copies else PROOF_PARTS)
    if facts.checksum == COMPUTED_CRC32 and (task.parts or not computed_checksums):
        return plain  # a fleet range: no worker sees every part's bytes; or a store that refuses such checksums
    if facts.checksum:
        return dataclasses.replace(plain, checksum=facts.checksum, proof=f"full-object {facts.checksum[0]}")
    if not facts.part_size:
        return plain
    size, count = facts.part_size, facts.parts
    ends = facts.part_ends
    if count > MAX_DATA_PARTS or size > MAX_PART_SIZE or (size < MIN_PART_SIZE and count > 1) or \
            any(end - start < MIN_PART_SIZE for start, end in itertools.pairwise((0, *ends[:-1]))):  # fmt: skip
        why = "outside S3's limits with the marker part"
    elif size > settings.chunk_size and not copies:
        why = f"larger than ChunkSize {human_bytes(settings.chunk_size)} (the memory the settings allow)"
    else:
        # Streamed, the copy's ETag must equal the source's.  Copied by S3, the parts' ETags are the store's (on AWS
        # their MD5s, elsewhere not always): an equal ETag proves the copy, another one says nothing against it.
        plan = ChunkPlan(f.size, size, facts.part_ends)
        return Shape(plan, True, same_layout=True, proof=PROOF_SERVER if copies else PROOF_ETAG)
    log.info("%s: the source's %d parts of %s are %s: copied in ChunkSize parts, proven by part MD5s", f.key, count,
             human_bytes(size), why)  # fmt: skip
    return plain


def examine_upload(client, bucket: str, f: SourceFile, upload: UnfinishedUpload, source: Source, retry: RetryPolicy,
                   shape: Shape, can_read_back: bool = True
                   ) -> tuple[ResumeCheck, list[ExistingPart], UploadState]:  # fmt: skip
    """List the parts of an unfinished upload of the file and judge it (a run and --dry-run decide alike): the
    verdict, its data parts, and how long it has been idle.  ``can_read_back``: parts without a marker can be proven by
    reading the source (not when S3 copies them)."""
    state = read_upload(client, bucket, f.key, upload.upload_id, upload.initiated, retry)
    check = judge_upload(shape.plan, state.parts, source.identity(f), shape.checksum)
    if not check.proven and shape.checksum == COMPUTED_CRC32:
        plain = judge_upload(shape.plan, state.parts, source.identity(f), None)
        if plain.proven:  # one of ours, made before local files got a checksum
            check = dataclasses.replace(plain, without_checksum=True)
    data = [p for p in state.parts if p.number not in check.markers]
    if data and not check.restart and not check.proven and not can_read_back:
        check = ResumeCheck("it has no marker, and S3 copies the parts again sooner than they can be checked")
    elif not data and not check.markers:
        check = ResumeCheck("nothing is in it: made by a run that stopped before its marker, or by another tool")
    return check, data, state


# How a skip was decided: the original skipped every object of the same size; a same-size change is caught where
# what S3 keeps can tell.  The closing block counts the skips by these reasons.
SAME_ETAG = "already at the destination (same size and ETag)"


SAME_TIME = "already at the destination (same size, not modified since the object was written)"


SAME_RECORDED_MTIME = "already at the destination (same size, and the mtime recorded with the object)"


def proven_same(how: str) -> str:
    return f"already at the destination (same size, proven equal by {how})"


def etags_not_comparable(why: str) -> str:
    return f"already at the destination (same size; the ETags cannot be compared: {why})"


MTIME_METADATA = "mtime"  # x-amz-meta-mtime: a local file's mtime, seconds since the epoch, as rclone records it


def etag_part_count(etag: str) -> int:
    """0 for a single-part MD5 ETag, N for a multipart one ('...-N'), -1 for any other form."""
    if is_md5_hex(etag):
        return 0
    digest, _, count = etag.rpartition("-")
    return int(count) if is_md5_hex(digest) and count.isdigit() else -1


def listed_verdict(f: SourceFile, there: Listed, kind: str, multipart_etags: bool = True) -> tuple[str, str]:
    """Is the object ``there`` this file, from the listings alone?  ("skip", how it was decided), ("send", why), or
    ("confirm", why it looks changed): then one HeadObject settles it (confirmed_same), in the file's own worker.

    LOCAL_TO_S3: a file not modified since its object was written is skipped by size and time; one modified later is
    checked against the mtime recorded with the object (a clock ahead of S3's must not send every file again).
    S3_TO_S3: equal ETags skip; ETags of two different part layouts say nothing (skipped by size, as the original
    did, and the reason says so); ETags of one form that differ mean other bytes, unless a HeadObject shows one side
    encrypted with KMS or SSE-C, or the two in different part sizes.  ``multipart_etags``: the source's multipart
    ETags are S3's formula (Aliyun OSS's are not known to be)."""
    if there.size != f.size:
        return "send", ""
    if kind == "local":
        if f.mtime <= there.written:
            return "skip", SAME_TIME
        return "confirm", "modified after its object was written (same size)"
    ours, theirs = f.etag.lower(), there.etag.lower()
    if ours == theirs:
        return "skip", SAME_ETAG
    count = etag_part_count(ours)
    if count < 0 or count != etag_part_count(theirs) or (count and not multipart_etags):
        return "skip", etags_not_comparable("the objects are in different part layouts")
    return "confirm", "replaced at the source by other bytes of the same size (the ETags differ)"


def confirmed_same(f: SourceFile, source: Source, head_destination: Callable[..., dict]) -> str:
    """After a "confirm" verdict: how the object is the same after all (a skip reason), or '' to send the file.
    ``head_destination(**kwargs)`` is a HeadObject of the destination object."""
    if source.kind == "local":
        recorded = head_destination().get("Metadata", {}).get(MTIME_METADATA, "")
        try:
            same = abs(float(recorded) - f.mtime) < 2e-6
        except ValueError:  # none, or not a number
            same = False
        return SAME_RECORDED_MTIME if same else ""
    multipart = etag_part_count(f.etag) > 0
    head = head_destination(**({"PartNumber": 1} if multipart else {}))
    source_md5, source_first = source.etag_facts(f)
    if not (source_md5 and etag_is_md5(head)):
        return etags_not_comparable("an object encrypted with KMS or SSE-C has an ETag that is not its MD5")
    if multipart and int(head.get("ContentLength", -1)) != source_first:
        return etags_not_comparable("the objects are in different part sizes")
    return ""


def head_of(client, bucket: str, key: str, retry: RetryPolicy) -> Callable[..., dict]:
    """A HeadObject of one destination object, to call with its extra arguments (``head_of(...)(PartNumber=1)``),
    when a same-size object looks changed: {} if it is gone; a refusal fails that file (head_destination)."""
    return lambda **kwargs: head_destination(client, bucket, key, retry, "to tell whether the object is this file",
                                             **kwargs) or {}  # fmt: skip


@dataclasses.dataclass(slots=True)
class FileTask:
    """What to do for one source file, decided before any byte moves."""

    src: SourceFile
    action: str  # "skip" | "put" | "multipart"
    plan: ChunkPlan  # "put" and "skip": one part of the whole file
    reason: str = ""
    upload: UnfinishedUpload | None = None  # the newest unfinished upload for this key, to resume
    # Other unfinished uploads of this key that this run will not resume: aborted once the file is done with them.
    stale: tuple[UnfinishedUpload, ...] = ()
    complete: bool = False  # "skip" because the object is already at the destination
    # A same-size object that looks changed: a HeadObject decides, in the file's worker (listed_verdict).
    confirm: bool = False
    # Fleet: only these parts (first, last) of ``upload``, made by the sender; the upload is completed by whichever
    # worker finds all its parts there.
    parts: tuple[int, int] | None = None
    # The condition that makes the object (PutObject, CompleteMultipartUpload): no object at the key when the plan saw
    # none (If-None-Match: *), else the very object the plan saw (If-Match: its ETag).  None: written unconditionally.
    write_if: tuple[str, str] | None = None
    # SkipCheck "checksum": the object of the same size skips the file only if it is proven equal (as --audit does).
    prove: bool = False


IF_ABSENT = ("IfNoneMatch", "*")
SAME_BYTES = "s3_upload:same-bytes"  # marks an answer: the object is this file's bytes in another part layout


def refused_feature(exc: BaseException) -> str:
    """What a store's refusal names, lower case, when it refuses a request as not implemented (501 NotImplemented,
    its Header element naming the header, as S3 does) or invalid (400: InvalidRequest, InvalidArgument and the like);
    '' for any other error."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return ""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status not in (400, 501) or error_code(exc) in ("BadDigest", "InvalidDigest", "PreconditionFailed"):
        return ""  # a checksum that does not match, a condition not met: the store took the header
    error = exc.response.get("Error", {})
    return " ".join(str(error.get(name, "")) for name in ("Message", "Header", "ArgumentName")).lower()


def checksums_refused(exc: BaseException) -> bool:
    """A store that does not take full-object checksums (an algorithm, a ChecksumType, a part's CRC32)."""
    return "checksum" in refused_feature(exc)


def conditions_refused(exc: BaseException) -> bool:
    """A store that does not take If-None-Match / If-Match on writes."""
    return any(name in refused_feature(exc) for name in ("if-none-match", "if-match", "ifnonematch", "ifmatch"))


# An ETag no object has (an MD5 is never all zeros in practice): the probe's If-Match can only fail where it is checked.
PROBE_ETAG = '"' + "0" * 32 + '"'


def probe_conditional_writes(client, bucket: str, near_key: str, retry: RetryPolicy | None = None) -> tuple[str, str]:
    """Whether the destination checks conditional writes, asked once by a PutObject of zero bytes with an If-Match no
    object has, at a key of the probe's own beside ``near_key`` that does not exist: "checked" (412, as SeaweedFS
    answers, or 404 NoSuchKey, as AWS and moto do: nothing written), "refused" (the store rejects the header),
    "ignored" (it wrote the empty object, deleted again at once: its writes would overwrite whatever is there), or
    "unknown" (another error, e.g. AccessDenied under a policy the probe does not meet).  The second value says why."""
    key = f"{near_key}.s3_upload-probe-{os.urandom(6).hex()}"
    put = functools.partial(client.put_object, Bucket=bucket, Key=key, Body=b"", ContentMD5=md5_of(b"")[1],
                            IfMatch=PROBE_ETAG)  # fmt: skip
    try:
        retry.call(f"PUT {key} (probe)", put) if retry else put()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey"):
            return "checked", ""
        return ("refused" if conditions_refused(exc) else "unknown"), describe_error(exc)
    except (botocore.exceptions.BotoCoreError, Interrupted) as exc:
        return "unknown", describe_error(exc)
    why = "a PutObject with an If-Match no object has was taken"
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        why += f"; its empty probe object s3://{bucket}/{key} is left ({describe_error(exc)}): delete it"
    return "ignored", why


def write_condition(there: Listed | None) -> tuple[str, str] | None:
    """Never overwrite an object someone else wrote after the plan saw the key: If-None-Match when it saw none,
    If-Match with the ETag it saw."""
    if there is None:
        return IF_ABSENT
    return ("IfMatch", f'"{there.etag}"') if there.etag else None


def plan_task(settings: Settings, f: SourceFile, there: Listed | None, uploads: list[UnfinishedUpload], kind: str,
              multipart_etags: bool = True) -> FileTask:  # fmt: skip
    """What to do for one file, from the destination object of its key (None: there is none) and the unfinished
    uploads of its key."""
    whole = ChunkPlan(size=f.size, part_size=max(f.size, 1))
    of_key = sorted(uploads, key=lambda u: u.initiated) if uploads else uploads
    verdict, reason = listed_verdict(f, there, kind, multipart_etags) if there is not None else ("send", "")
    prove = verdict != "send" and settings.skip_check == "checksum"
    if prove:  # the same size: what the object keeps decides, in the file's worker
        verdict, reason = "send", "same size: skipped only if proven equal (SkipCheck checksum)"
    if verdict == "skip":
        return FileTask(f, "skip", whole, reason, stale=tuple(of_key), complete=True)
    if settings.ignore_small_file and f.size < settings.chunk_size:
        return FileTask(f, "skip", whole, "smaller than ChunkSize (IgnoreSmallFile)", stale=tuple(of_key))
    if f.size < settings.chunk_size:
        return FileTask(f, "put", whole, reason, stale=tuple(of_key), confirm=verdict == "confirm",
                        write_if=write_condition(there), prove=prove)  # fmt: skip
    newest = of_key[-1] if of_key else None
    return FileTask(f, "multipart", plan_chunks(f.size, settings.chunk_size), reason, upload=newest,
                    stale=tuple(of_key[:-1]), confirm=verdict == "confirm",
                    write_if=write_condition(there), prove=prove)  # fmt: skip


def plan_stream(settings: Settings, matched: Iterable[tuple[SourceFile, Listed | None]],
                uploads: list[UnfinishedUpload], source: Source) -> Iterator[FileTask]:  # fmt: skip
    """The plan as it is made: a FileTask for each file as the two listings go."""
    by_key: dict[str, list[UnfinishedUpload]] = {}
    for u in uploads:
        by_key.setdefault(u.key, []).append(u)
    multipart_etags = getattr(source, "multipart_etags_comparable", True)
    for f, there in matched:
        yield plan_task(settings, f, there, by_key.get(f.key, []), source.kind, multipart_etags)


def plan_files(settings: Settings, files: list[SourceFile], destination: dict[str, Listed],
               uploads: list[UnfinishedUpload], source: Source | None = None) -> list[FileTask]:  # fmt: skip
    """plan_stream over files in any order and the destination as a dict (a fleet worker's one file; tests)."""
    by_key: dict[str, list[UnfinishedUpload]] = {}
    for u in uploads:
        by_key.setdefault(u.key, []).append(u)
    kind = source.kind if source is not None else "s3"
    multipart_etags = getattr(source, "multipart_etags_comparable", True)
    return [plan_task(settings, f, destination.get(f.key), by_key.get(f.key, []), kind, multipart_etags)
            for f in files]  # fmt: skip


class PlanTally:
    """What the plan holds, counted as it is made: how many files and bytes to upload, resume and skip."""

    def __init__(self):
        self.counts = dict.fromkeys(("upload", "resume", "there", "ignored"), 0)
        self.sizes = dict(self.counts)

    def add(self, t: FileTask) -> None:
        if t.action != "skip":
            group = "upload" if t.upload is None else "resume"
        else:
            group = "there" if t.complete else "ignored"
        self.counts[group] += 1
        self.sizes[group] += t.src.size

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    def counted(self, tasks: Iterable[FileTask]) -> Iterator[FileTask]:
        """The tasks, each counted as it passes; the plan's line logged once the listing is done."""
        for t in tasks:
            self.add(t)
            yield t
        log.info("plan: %s", self.line())

    def line(self) -> str:
        n, size = self.counts, self.sizes
        everything = human_bytes(sum(size.values()))
        parts = [f"{n['upload']} to upload ({human_bytes(size['upload'])})"] if n["upload"] else []
        if n["resume"]:
            parts.append(f"{n['resume']} to resume ({human_bytes(size['resume'])}, parts already on S3 are not sent "
                         f"again)")  # fmt: skip
        if n["there"]:
            parts.append(f"{n['there']} to skip (already at the destination)")
        if n["ignored"]:
            parts.append(f"{n['ignored']} to skip (smaller than ChunkSize, IgnoreSmallFile)")
        return f"{self.files} file(s), {everything}: " + (", ".join(parts) or "nothing to do")


# ----------------------------------------------------------------------------------------------------------------------
# 6. Move: the file threads, the one budget of requests, the part movers
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class FileResult:
    key: str
    size: int
    status: str  # "uploaded" | "skipped" | "failed"
    detail: str = ""
    parts: int = 0
    parts_reused: int = 0
    bytes_sent: int = 0
    etag: str = ""
    seconds: float = 0.0
    retries: int = 0
    expected_etag: str = ""  # computed here from the part MD5s
    etag_is_md5: bool = True  # False for KMS or SSE-C objects, whose ETag cannot be checked
    etag_known: bool = True  # the ETag S3 should have is known here (False: parts copied by S3 itself)
    bytes_copied: int = 0  # copied by S3 itself (CopyMode), never through this machine
    proof: str = ""  # what proves the object equal to its source: see Shape
    missing: int = 0  # a fleet range sent: parts of its upload still missing (its object is made once they are there)
    checksum: tuple[str, str] | None = None  # the full-object checksum computed here and given to S3 (COMPUTED_CRC32)


@dataclasses.dataclass(slots=True)
class PartResult:
    number: int
    etag: str
    digest: bytes  # binary MD5 of the part
    sent: int  # bytes uploaded this run (0 when an existing part was reused)
    copied: int = 0  # bytes S3 copied itself this run (UploadPartCopy)
    crc: tuple[int, int] | None = None  # (CRC-32, length) of the part's bytes, when computed here (COMPUTED_CRC32)


def is_md5_hex(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)


def etag_digest(etag: str) -> bytes:
    """What a part's ETag adds to the object's ETag: its binary MD5; a store whose parts have other ETags builds the
    object's ETag from them all the same, so a stand-in derived from the text keeps the check of the whole."""
    return binascii.unhexlify(etag) if is_md5_hex(etag) else hashlib.md5(etag.encode()).digest()


def md5_of(data: bytes) -> tuple[bytes, str]:
    digest = hashlib.md5(data).digest()
    return digest, base64.b64encode(digest).decode()


class Throttle:
    """MaxBandwidth for all uploads together: each part is given a start time on one shared schedule, so whatever
    the number of threads the average rate stays at the limit (bursts are at most one part per thread)."""

    def __init__(self, bytes_per_second: int, stop: threading.Event):
        self.rate, self.stop = bytes_per_second, stop
        self._lock = threading.Lock()
        self._next_start = 0.0

    def acquire(self, nbytes: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + nbytes / self.rate
        if start > now and self.stop.wait(start - now):
            raise Interrupted()


@dataclasses.dataclass(frozen=True)
class ProgressSnapshot:
    """What a person is shown, from one consistent reading of the counters."""

    done: int  # bytes of the work that are at the destination: sent this run, or found there (resumed parts)
    total: int
    found: int  # of done: parts found on S3 from an earlier run (never counted as sent)
    copied: int  # of done: copied by S3 itself (server-side), never through this machine
    rate: float  # bytes actually sent per second, over the last RATE_WINDOW seconds
    files_done: int
    total_files: int
    in_flight: list[tuple[str, int, int]]  # key, parts done, parts in all
    listing: bool = False  # the totals are what was listed so far

    @property
    def eta(self) -> str:
        left = self.total - self.done
        return human_duration(left / self.rate) if self.rate > 0 and left > 0 else ("0s" if left <= 0 else "?")

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def amounts(self) -> str:
        found = f"; {human_bytes(self.found)} of it found on S3" if self.found else ""
        copied = f"; {human_bytes(self.copied)} copied by S3" if self.copied else ""
        so_far = " listed so far" if self.listing else ""
        return f"{human_bytes(self.done)} of {human_bytes(self.total)}{so_far} ({self.percent:.0f}%{found}{copied})"


class Progress:
    """What the workers report (bytes and parts per file); renderers draw it.  This base class only counts.

    The rate is what was sent, never what was found on S3 when resuming: a resumed half of a file is done, not
    transferred, and counting it would show a speed the link never had."""

    tick_seconds = 0.0  # renderers redraw this often, from a thread of their own (0: never)
    RATE_WINDOW = 10.0  # seconds of history behind the rate shown

    def __init__(self):
        self._lock = threading.Lock()
        self.total_bytes = self.total_files = 0
        self.done_bytes = self.sent_bytes = self.found_bytes = self.copied_bytes = self.files_done = 0
        self.in_flight: dict[str, list[int]] = {}  # key -> [parts done, parts in all]
        self.listing = False
        self.started = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(self.started, 0)])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def begin(self, tasks: Iterable[FileTask] | None = None) -> None:
        """The transfer starts; the work is added as the plan is made (add), until listed().  ``tasks``: the whole
        plan at once, when it is known."""
        self.listing = True
        self.started = time.monotonic()
        self._samples = collections.deque([(self.started, 0)])
        if tasks is not None:
            for task in tasks:
                self.add(task)
            self.listed()
        if self.tick_seconds:
            self._thread.start()

    def add(self, task: FileTask) -> None:
        if task.action != "skip":
            with self._lock:
                self.total_files += 1
                self.total_bytes += task.src.size

    def listed(self) -> None:
        """Every file is planned: the totals are final."""
        self.listing = False

    def _open(self) -> None:
        """Called once before the first tick that has work to show."""

    def _tick(self) -> None:
        """Draw the current state."""

    def _run(self) -> None:
        opened = False
        while not self._closed.wait(self.tick_seconds):
            if not opened and self.total_files:
                self._open()
                opened = True
            self._tick()

    def file_started(self, key: str, parts: int) -> None:
        with self._lock:
            self.in_flight[key] = [0, parts]

    def part_done(self, key: str, nbytes: int, how: str = "sent") -> None:
        """``how``: "sent" through this machine, "found" on S3 from an earlier run, or "copied" by S3 itself."""
        with self._lock:
            self.done_bytes += nbytes
            if how == "found":
                self.found_bytes += nbytes
            elif how == "copied":
                self.copied_bytes += nbytes
            else:
                self.sent_bytes += nbytes
            if key in self.in_flight:
                self.in_flight[key][0] += 1

    def file_finished(self, key: str) -> None:
        with self._lock:
            self.in_flight.pop(key, None)
            self.files_done += 1

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            now = time.monotonic()
            samples = self._samples
            samples.append((now, self.sent_bytes))
            while len(samples) > 2 and now - samples[1][0] >= self.RATE_WINDOW:
                samples.popleft()  # keep one sample at least RATE_WINDOW old, when there is one
            since, sent_then = samples[0]
            rate = (self.sent_bytes - sent_then) / (now - since) if now > since else 0.0
            flying = [(k, d, n) for k, (d, n) in self.in_flight.items()]
            return ProgressSnapshot(self.done_bytes, self.total_bytes, self.found_bytes, self.copied_bytes, rate,
                                    self.files_done, self.total_files, flying, self.listing)  # fmt: skip

    def line(self) -> str:
        s = self.snapshot()
        flying = ", ".join(f"{k} {d}/{n}" for k, d, n in s.in_flight[:4])
        more = f" +{len(s.in_flight) - 4}" if len(s.in_flight) > 4 else ""
        return f"{s.amounts()}, {human_bytes(s.rate)}/s sent, ETA {s.eta}, files {s.files_done}/{s.total_files}" + (
            f", in flight: {flying}{more}" if flying else ""
        )

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(5)


class LogProgress(Progress):
    """Not on a terminal: one plain log line every ``interval`` seconds."""

    def __init__(self, interval: float = 5.0):
        super().__init__()
        self.tick_seconds = interval

    def _tick(self) -> None:
        if self.total_files:
            log.info("progress: %s", self.line())


class BarProgress(Progress):
    """On a terminal: a live tqdm bar with bytes done, the rate sent, ETA, files done and the files in flight.

    tqdm draws only the bar; every number beside it is ours (binary units, the rate of bytes sent): tqdm's own
    counters would count resumed parts as transferred.  tqdm rather than rich: one small pure-Python package with no
    dependencies of its own, and a single bar is all a transfer needs; log lines are printed above the bar (see
    ConsoleHandler)."""

    tick_seconds = 0.5

    def __init__(self):
        super().__init__()
        self.bar: tqdm.tqdm | None = None

    def _open(self) -> None:
        global _active_bar
        self.bar = tqdm.tqdm(total=max(self.total_bytes, 1), file=sys.stderr, dynamic_ncols=True,
                             bar_format="{percentage:3.0f}%|{bar}| {desc}")  # fmt: skip
        _active_bar = self.bar

    def _tick(self) -> None:
        if self.bar is None:
            return
        s = self.snapshot()
        flying = " ".join(f"{k.rsplit('/', 1)[-1]}:{d}/{n}" for k, d, n in s.in_flight[:3])
        self.bar.total = max(s.total, 1)  # grows while the listing goes on
        self.bar.n = min(s.done, self.bar.total)
        self.bar.set_description_str(f"{s.amounts()} {human_bytes(s.rate)}/s ETA {s.eta} files {s.files_done}/"
                                     f"{s.total_files} {flying}".strip(), refresh=False)  # fmt: skip
        self.bar.refresh()

    def close(self) -> None:
        global _active_bar
        super().close()
        if self.bar is None and self.total_files:
            self._open()  # a run shorter than one tick still shows where it ended
        if self.bar is not None:
            self._tick()
            self.bar.close()
            _active_bar = None


_active_bar = None  # the tqdm bar on screen, if any: console log lines are written above it


def make_progress(mode: str) -> Progress:
    """'bar' on a terminal (when tqdm is installed), 'log' lines otherwise, or 'none'."""
    if mode == "auto":
        mode = "bar" if tqdm is not None and sys.stderr.isatty() and sys.stdout.isatty() else "log"
    if mode == "bar" and tqdm is not None:
        return BarProgress()
    return LogProgress() if mode in ("log", "bar") else Progress()


class ProofFailed(FileFailed):
    """The finished object could not be proven equal to the source version listed: never a success."""


def checksum_args(checksum: tuple[str, str] | None) -> dict:
    """The arguments that hand S3 a full-object checksum to check (PutObject, CompleteMultipartUpload)."""
    return {f"Checksum{checksum[0]}": checksum[1]} if checksum else {}


def part_checksum_args(checksum: tuple[str, str] | None) -> dict:
    """UploadPart into an upload created with a checksum algorithm: botocore computes each part's checksum (CRC32 by
    itself; CRC32C and CRC64NVME need the awscrt package, without which S3 computes them from the bytes)."""
    if checksum and (checksum[0] == "CRC32" or getattr(botocore.compat, "HAS_CRT", False)):
        return {"ChecksumAlgorithm": checksum[0]}
    return {}


class StreamParts:
    """Parts through this machine: a ranged read of the source, its MD5 sent as Content-MD5, UploadPart."""

    copies = False

    def __init__(self, engine: Engine):
        self.engine = engine

    def put(self, f: SourceFile, args: dict, shape: Shape, result: FileResult,
            write_if: tuple[str, str] | None = None) -> dict:  # fmt: skip
        e = self.engine
        data = e.retry.call(f"READ {f.key}", lambda: e.source.read(f, 0, f.size), paced=False) if f.size else b""
        digest, md5_b64 = md5_of(data)
        e._check_unchanged(f)
        e.throttle.acquire(len(data))
        result.checksum = ("CRC32", crc32_b64(zlib.crc32(data))) if shape.checksum == COMPUTED_CRC32 else None
        checksum = checksum_args(result.checksum or shape.checksum)

        def put() -> dict:
            resp = e.write_conditionally(f.key, write_if, lambda conditions: e.client.put_object(
                Bucket=e.bucket, Key=f.key, Body=data, ContentMD5=md5_b64, **args, **checksum,
                **conditions))  # fmt: skip
            require_etag(resp, f"PUT {f.key}")
            return resp

        try:
            resp = e.retry.call(f"PUT {f.key}", put)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "PreconditionFailed":
                raise
            resp = e.written_meanwhile(f.key, digest.hex(), f, write_if=write_if)
            if resp is None:  # nothing there to overwrite after all
                write_if = None
                resp = e.retry.call(f"PUT {f.key}", put)
        e.progress.part_done(f.key, len(data))
        result.bytes_sent, result.expected_etag = len(data), digest.hex()
        return resp

    def part(self, f: SourceFile, upload_id: str, number: int, offset: int, length: int, shape: Shape,
             listed: list[ExistingPart], cancel: threading.Event) -> PartResult:  # fmt: skip
        e = self.engine
        data = e.retry.call(f"READ {f.key} part {number}", lambda: e.source.read(f, offset, length), cancel,
                            paced=False)  # fmt: skip
        digest, md5_b64 = md5_of(data)
        crc = (zlib.crc32(data), length) if shape.checksum == COMPUTED_CRC32 else None
        if listed and pick_existing_part(listed, length, digest.hex()) is not None:  # on S3 already, proven by MD5
            e.progress.part_done(f.key, length, how="found")
            return PartResult(number, digest.hex(), digest, 0, crc=crc)
        e.throttle.acquire(length)
        what = f"UPLOAD {f.key} part {number}/{shape.plan.part_count}"
        checksum = {"ChecksumCRC32": crc32_b64(crc[0])} if crc else part_checksum_args(shape.checksum)
        etag = e.retry.call(what, lambda: require_etag(e.client.upload_part(
            Bucket=e.bucket, Key=f.key, UploadId=upload_id, PartNumber=number, Body=data, ContentMD5=md5_b64,
            **checksum), what), cancel)  # fmt: skip
        e.progress.part_done(f.key, length)
        log.debug("%s part %d/%d sent (%s)", f.key, number, shape.plan.part_count, human_bytes(length))
        return PartResult(number, etag, digest, length, crc=crc)


class CopyParts:
    """Parts copied by S3 itself, inside one store: UploadPartCopy (CopyObject for a small object), pinned to the
    listed version by CopySourceIfMatch.  No byte passes through this machine."""

    copies = True

    def __init__(self, engine: Engine, src_bucket: str):
        self.engine, self.src_bucket = engine, src_bucket

    def _pinned(self, f: SourceFile) -> dict:
        return {"CopySource": {"Bucket": self.src_bucket, "Key": f.key}, "CopySourceIfMatch": f'"{f.etag}"'}

    def _call(self, f: SourceFile, what: str, request: Callable[[], dict], cancel=None) -> dict:
        def pinned() -> dict:
            try:
                return request()
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in ("PreconditionFailed", *NOT_FOUND_CODES):
                    raise SourceChanged(
                        f"s3://{self.src_bucket}/{f.key} changed during the copy (it is no longer "
                        f"version {f.etag}); not completed, rerun to copy the new version"
                    ) from None
                raise

        return self.engine.retry.call(what, pinned, cancel)

    def put(self, f: SourceFile, args: dict, shape: Shape, result: FileResult,
            write_if: tuple[str, str] | None = None) -> dict:  # fmt: skip
        """CopyObject, without a write condition: its precondition headers pin the source here (a 412 is the source
        changed), and botocore before 1.37 does not know CopyObject's own If-None-Match."""
        e = self.engine
        extra = {"ChecksumAlgorithm": shape.checksum[0]} if shape.checksum else {}
        resp = self._call(f, f"COPY {f.key}", lambda: e.client.copy_object(
            Bucket=e.bucket, Key=f.key, MetadataDirective="REPLACE", **self._pinned(f), **args, **extra))  # fmt: skip
        answer = dict(resp.get("CopyObjectResult", {}), **{k: v for k, v in resp.items() if k.startswith("Server")})
        require_etag(answer, f"COPY {f.key}")
        e.progress.part_done(f.key, f.size, how="copied")
        result.bytes_copied = f.size
        if is_md5_hex(f.etag) and etag_is_md5(answer):  # a single-part source: the copy's ETag must be its MD5
            result.expected_etag = f.etag
            if not shape.checksum:
                result.proof = PROOF_ETAG
        result.etag_known = bool(result.expected_etag)
        return answer

    def part(self, f: SourceFile, upload_id: str, number: int, offset: int, length: int, shape: Shape,
             listed: list[ExistingPart], cancel: threading.Event) -> PartResult:  # fmt: skip
        e = self.engine
        what = f"COPY {f.key} part {number}/{shape.plan.part_count}"
        resp = self._call(f, what, lambda: e.client.upload_part_copy(
            Bucket=e.bucket, Key=f.key, UploadId=upload_id, PartNumber=number, **self._pinned(f),
            CopySourceRange=f"bytes={offset}-{offset + length - 1}"), cancel)  # fmt: skip
        etag = require_etag(resp.get("CopyPartResult", {}), what)
        e.progress.part_done(f.key, length, how="copied")
        # The part's ETag is the MD5 of its bytes on AWS; a store whose copied parts have other ETags builds the
        # object's ETag from them all the same, so the ETag check below still holds.
        return PartResult(number, etag, etag_digest(etag), 0, copied=length)


class PartBudget:
    """One budget of requests in flight for the whole run: MaxParallelFile x MaxThread workers, shared by the parts of
    every file in flight (and by the files sent in one request).  A worker takes its next request from the file with
    the fewest in flight: one big file alone gets the whole budget; a file that starts later gets its fair share back
    as the first file's requests finish.  Memory stays what the settings say: one part buffer per worker.

    map() is called by a file's own thread with that file's requests; it returns their results in any order, or raises
    the first final failure once none of the file's requests is in flight any more (``failed`` is set at once, so the
    file's other requests stop)."""

    def __init__(self, size: int, stop: threading.Event):
        self.size, self.stop = size, stop
        self._lock = threading.Condition()
        self._files: list[_FileRequests] = []  # the files with requests to do or in flight, oldest first
        self._started = 0

    def map(self, requests: Iterable[Callable[[], Any]], failed: threading.Event) -> list:
        mine = _FileRequests(collections.deque(requests), failed)
        with self._lock:
            self._files.append(mine)
            self._start_workers()
            self._lock.notify_all()
            while (mine.todo and not failed.is_set()) or mine.in_flight:
                self._lock.wait(0.5)
            self._files.remove(mine)
            mine.todo.clear()
        if mine.error is not None:
            raise mine.error
        if failed.is_set() or self.stop.is_set():
            raise Interrupted()
        return mine.results

    def submit(self, request: Callable[[], Any], group: _FileRequests) -> None:
        """A request nobody waits for, in ``group`` (the files sent in one request): the caller waits only while the
        group already holds a budget's worth of requests not started (the plan never runs far ahead)."""
        with self._lock:
            while len(group.todo) >= self.size and not self.stop.is_set() and not group.failed.is_set():
                self._lock.wait(0.5)
            if group not in self._files:
                self._files.append(group)
            group.todo.append(request)
            self._start_workers()
            self._lock.notify_all()

    def drain(self, group: _FileRequests) -> None:
        """Wait until every request of ``group`` is done (or, once it failed, none is in flight)."""
        with self._lock:
            while (group.todo and not group.failed.is_set()) or group.in_flight:
                self._lock.wait(0.5)
            if group in self._files:
                self._files.remove(group)

    def _start_workers(self) -> None:
        while self._started < self.size:
            self._started += 1
            threading.Thread(target=self._work, name=f"request-{self._started}", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                ready = [f for f in self._files if f.todo and not f.failed.is_set()]
                while not ready:
                    self._lock.wait()
                    ready = [f for f in self._files if f.todo and not f.failed.is_set()]
                mine = min(ready, key=lambda f: f.in_flight)  # the first of the fewest: oldest first among equals
                request = mine.todo.popleft()
                mine.in_flight += 1
            try:
                result = request()
            except BaseException as exc:  # the file's thread raises it
                with self._lock:
                    if mine.error is None:
                        mine.error = exc
                    mine.failed.set()
            else:
                with self._lock:
                    mine.results.append(result)
            finally:
                with self._lock:
                    mine.in_flight -= 1
                    self._lock.notify_all()


@dataclasses.dataclass(eq=False)
class _FileRequests:
    """One file's share of the PartBudget."""

    todo: collections.deque
    failed: threading.Event
    in_flight: int = 0
    results: list = dataclasses.field(default_factory=list)
    error: BaseException | None = None


class Engine:
    """Runs FileTasks: a pool of MaxParallelFile files, each with its own pool of MaxThread parts.  How a part moves
    is the mover's business (StreamParts through this machine, CopyParts inside one store); resume, the marker,
    completion and every check are the same for both.

    Memory: a part's bytes are read inside its worker, so at most MaxParallelFile x MaxThread parts (of ChunkSize
    each) are held at once.
    """

    def __init__(self, settings: Settings, source, client, retry: RetryPolicy, stop: threading.Event,
                 progress: Progress | None = None, copy_from: str = ""):  # fmt: skip
        """``copy_from``: the source bucket, when S3 copies the parts itself (CopyMode); '' streams them."""
        self.s, self.source, self.client, self.retry, self.stop = settings, source, client, retry, stop
        self.bucket = settings.des_bucket
        self.progress = progress or Progress()  # also the count of bytes sent, for the summary
        self.throttle = Throttle(settings.max_bandwidth, stop)
        self.budget = PartBudget(settings.max_parallel_file * settings.max_thread, stop)
        self._finishing_lock = threading.Lock()
        self._finishing_keys: dict[str, int] = {}  # key -> requests in flight that make its object
        self.completed_after_stop: list[str] = []
        self.left_alone = Tally()  # unfinished uploads not aborted: another run may be at work on them
        self._retried_creates: set[str] = set()  # keys whose CreateMultipartUpload was retried (_abort_stale)
        self.conditional = True  # writes carry their condition (write_condition), until the store refuses them
        self._conditions_probed = False  # the first conditional write asks the store whether it checks them
        self._probe_lock = threading.Lock()
        self.computed_checksums = True  # local files get a full-object CRC32, until the store refuses them
        self.mover: StreamParts | CopyParts = StreamParts(self)
        self.copy_from(copy_from)

    def copy_from(self, src_bucket: str) -> None:
        """Parts copied by S3 from src_bucket (server-side), or streamed through this machine ('')."""
        self.mover = CopyParts(self, src_bucket) if src_bucket else StreamParts(self)

    def object_args(self, facts: SourceFacts) -> dict:
        """Arguments of PutObject / CreateMultipartUpload: the source's attributes plus the configured ones."""
        args = dict(facts.attributes)
        args["StorageClass"] = self.s.storage_class
        if self.s.server_side_encryption:
            args["ServerSideEncryption"] = self.s.server_side_encryption
        if self.s.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.s.sse_kms_key_id
        if self.s.acl:
            args["ACL"] = self.s.acl
        return args

    # -- one file -------------------------------------------------------------------------------------------------

    def run_file(self, task: FileTask) -> FileResult:
        result = self._run_file(task)
        result.retries = self.retry.retries_by_key.pop(task.src.key, 0)
        return result

    def _run_file(self, task: FileTask) -> FileResult:
        f = task.src
        started = time.monotonic()
        if task.confirm or task.prove:
            self.retry.working_on(f.key)
            try:
                same = self._proven_same(f) if task.prove else \
                    confirmed_same(f, self.source, head_of(self.client, self.bucket, f.key, self.retry))  # fmt: skip
            except Exception as exc:  # this file's question, not the run's
                interrupted = isinstance(exc, Interrupted)
                detail = "interrupted; run the same command again to resume" if interrupted else \
                    failure_detail(exc, self.s.max_retry)  # fmt: skip
                if not interrupted:
                    log.error("FAILED %s: %s", f.key, detail)
                return FileResult(f.key, f.size, "failed", detail)
            if same:
                stale = task.stale + ((task.upload,) if task.upload else ())
                task = dataclasses.replace(task, action="skip", reason=same, complete=True, confirm=False,
                                           stale=stale, upload=None)  # fmt: skip
                # Counted as work when the plan was made: it was there all along.
                self.progress.part_done(f.key, f.size, how="found")
                self.progress.file_finished(f.key)
            else:
                log.info("%s: %s", f.key, task.reason)
        if task.action == "skip":
            log.debug("skip %s: %s", f.key, task.reason)  # counted in the closing block: one line per file is noise
            skipped = FileResult(f.key, f.size, "skipped", task.reason)
            try:
                self._abort_stale(task)
            except Interrupted:
                skipped.status, skipped.detail = "failed", "interrupted; run the same command again to resume"
            except Exception as exc:  # its HEAD refused or failing: this file fails, the others go on
                skipped.status, skipped.detail = "failed", failure_detail(exc, self.s.max_retry)
                log.error("FAILED %s: %s", f.key, skipped.detail)
            return skipped
        # A file sent in one request gets one line (its finish line); a multipart file also says when it starts.
        log.log(logging.INFO if task.action == "multipart" else logging.DEBUG, "start %s (%s) -> s3://%s/%s",
                self.source.describe(f), human_bytes(f.size), self.bucket, f.key)  # fmt: skip
        result = FileResult(f.key, f.size, "failed")
        self.retry.working_on(f.key)
        self.progress.file_started(f.key, task.plan.part_count)
        try:
            for attempt in range(1, MAX_FILE_ATTEMPTS + 1):
                result.checksum = None
                facts = self.source.facts(f)
                shape = shape_of(task, facts, self.s, self.mover.copies, self.computed_checksums)
                result.proof = shape.proof
                try:
                    if shape.multipart:
                        self._multipart(task, shape, facts, result)
                    else:
                        self._put(f, shape, facts, result, task.write_if)
                except botocore.exceptions.ClientError as exc:
                    if shape.checksum != COMPUTED_CRC32 or not checksums_refused(exc) or attempt == MAX_FILE_ATTEMPTS:
                        raise
                    self._refuse_checksums(exc)  # this file again, without one: its upload made with one is stale
                    task = dataclasses.replace(task, upload=None, stale=task.stale + ((task.upload,) if task.upload
                                                                                      else ()))  # fmt: skip
                    continue
                if result.missing:
                    break  # a fleet range, sent: the worker that finds every part there makes the object
                now = self.source.current(f)
                if now.version != f.version:
                    # Written between the last check and S3's completion: the object holds the version listed, and
                    # S3's LastModified may well be later than the change (a later run would take the object for
                    # this file by its size and time).  The new version is sent now, while it has the same size.
                    if now.size != f.size or attempt == MAX_FILE_ATTEMPTS or task.parts:
                        raise SourceChanged(f"{self.source.describe(f)} changed while its object was being "
                                            f"completed; the object holds the version listed; rerun to upload the "
                                            f"new version")  # fmt: skip
                    log.warning("%s changed while its object was being completed: sending the new version", f.key)
                    f = now
                    # The object there now is the one just made: the new version replaces that one only.
                    task = dataclasses.replace(task, src=now, upload=None, write_if=("IfMatch", f'"{result.etag}"'))
                    continue
                if not self.s.verify_md5 or verify_by_reread(self, f, shape, result):
                    break
                if attempt == MAX_FILE_ATTEMPTS:
                    raise FileFailed(f"ETag still differs after {MAX_FILE_ATTEMPTS} attempts")
                task = dataclasses.replace(task, upload=None, write_if=IF_ABSENT)  # verify deleted the bad object
            result.status = "uploaded"
            result.seconds = time.monotonic() - started
            if result.missing:
                first, last = task.parts or (0, 0)
                log.info("sent %s parts %d-%d in %.1fs (%d reused); %d part(s) of its upload still to come from "
                         "other workers", f.key, first, last, result.seconds, result.parts_reused,
                         result.missing)  # fmt: skip
                self.progress.file_finished(f.key)
                return result
            log.info(
                "finish %s: %s in %.1fs, ETag %s (%d parts, %d reused), proven by %s",
                f.key,
                human_bytes(f.size),
                result.seconds,
                result.etag,
                result.parts,
                result.parts_reused,
                result.proof,
            )
            self._abort_stale(task)
        except Interrupted:
            result.detail = "interrupted; run the same command again to resume"
        except Exception as exc:  # one file's failure must not stop the others
            result.detail = failure_detail(exc, self.s.max_retry)
            log.error("FAILED %s: %s", f.key, result.detail)
        result.seconds = time.monotonic() - started
        self.progress.file_finished(f.key)
        return result

    def _proven_same(self, f: SourceFile) -> str:
        """SkipCheck "checksum": the object of the key proven equal to the file as --audit proves it (what it keeps:
        a full-object checksum, its ETag in its own part layout; the source read once where that is needed): a skip
        reason, or '' to send the file (with why, in the log)."""
        verdict = Auditor(self.s, self.source, self.client, self.retry, Progress()).verdict(f)
        if verdict.status == "proven":
            return proven_same(verdict.how)
        log.info("%s: %s; sending it (SkipCheck checksum)", f.key, {"differs": "the object differs", "missing":
                 "the object is gone", "unproven": "the object cannot be proven equal"}[verdict.status] +
                 f" ({verdict.how})")  # fmt: skip
        return ""

    def _abort_stale(self, task: FileTask, used: str = "") -> None:
        """Unfinished uploads of this key that nothing will resume any more (the file went up another way, is
        ignored, or is complete) would stay on S3, billed, forever: each is aborted once abandoned (nothing added for
        AbandonedAfter seconds); one with a part added sooner may be another run's, and is left for a later run."""
        key = task.src.key
        uploads = [u for u in (task.upload, *task.stale) if u is not None]
        with self._finishing_lock:
            retried = key in self._retried_creates
            self._retried_creates.discard(key)
        if retried:  # the upload a lost answer made is among them now
            uploads = [u for u in list_unfinished_uploads(self.client, self.bucket, key, self.retry) if u.key == key]
        for u in uploads:
            if u.upload_id == used:
                continue
            try:
                state = read_upload(self.client, self.bucket, key, u.upload_id, u.initiated, self.retry)
                if not state.abandoned(self.s):
                    self.left_alone.add(f"{key} (upload {short_id(u.upload_id)}: a part added "
                                        f"{human_duration(state.idle)} ago)")  # fmt: skip
                    log.info("%s: leaving unfinished upload %s alone: a part was added %s ago (another run may be at "
                             "work on it)", key, short_id(u.upload_id), human_duration(state.idle))  # fmt: skip
                    continue
                log.info("%s: aborting unfinished upload %s, which this file no longer needs", key,
                         short_id(u.upload_id))  # fmt: skip
                self._abort(key, u.upload_id)
            except Interrupted:
                raise
            except Exception as exc:  # the object itself is right; say what is left behind and why
                if error_code(exc) == "NoSuchUpload":
                    continue  # gone meanwhile: completed or aborted by its own run
                log.warning("%s: could not abort upload %s: %s", key, short_id(u.upload_id),
                            describe_error(exc) + fix_hint(exc))  # fmt: skip

    def _put(self, f: SourceFile, shape: Shape, facts: SourceFacts, result: FileResult,
             write_if: tuple[str, str] | None = None) -> None:  # fmt: skip
        """Files smaller than one chunk (zero bytes included) go up in one request: PutObject with Content-MD5 (and
        the source's full-object checksum, if it has one), or CopyObject inside one store."""
        with self._finishing(f.key):
            resp = self.mover.put(f, self.object_args(facts), shape, result, write_if)
        result.parts = 1
        result.etag, result.etag_is_md5 = require_etag(resp, "PUT"), etag_is_md5(resp)
        if result.expected_etag and result.etag_is_md5 and result.etag != result.expected_etag:
            why = f"ETag mismatch after PUT: S3 has {result.etag}, the MD5 of the source is {result.expected_etag}"
            raise discard(self, f.key, why)
        if shape.checksum:
            given = dataclasses.replace(shape, checksum=result.checksum or shape.checksum)
            check_checksum(self, f, given, resp, result)

    def _multipart(self, task: FileTask, shape: Shape, facts: SourceFacts, result: FileResult) -> None:
        f, plan = task.src, shape.plan
        if plan.part_size != self.s.chunk_size and not shape.same_layout:
            log.info(
                "%s: %s needs more than %d parts at ChunkSize %s; using %s parts for this file",
                f.key,
                human_bytes(f.size),
                MAX_DATA_PARTS,
                human_bytes(self.s.chunk_size),
                human_bytes(plan.part_size),
            )
        if task.parts:
            self._send_range(task, shape, result)
            return
        upload_id, existing, proven, new, with_checksum = self._resume_or_create(task, shape, facts)
        if shape.checksum and not with_checksum:
            log.info("%s: its upload was made by an earlier s3_upload without a full-object checksum: proven by part "
                     "MD5s", f.key)  # fmt: skip
            shape = dataclasses.replace(shape, checksum=None, proof=PROOF_PARTS)
            result.proof = shape.proof
        if existing and not proven and shape.checksum:
            # Resumed from an upload made without this tool's marker (the original, another tool): whether it was
            # created with the checksum's algorithm is unknown, and S3 checks a full-object checksum only then.
            log.info("%s: the upload was made by another tool: proven by part MD5s, not by the source's %s", f.key,
                     shape.checksum[0])  # fmt: skip
            shape = dataclasses.replace(shape, checksum=None, proof=PROOF_PARTS)
            result.proof = shape.proof
        try:
            parts = self._send_parts(f, shape, upload_id, existing, proven, marker=new)
            self._check_unchanged(f)
        except SourceChanged:
            # Its parts may mix old and new bytes: never complete it, and leave nothing behind.
            self._abort(f.key, upload_id)
            raise
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
            self._made_by_another(f, shape, result)  # the upload was completed (or aborted) while parts went
            return
        result.parts_reused = sum(1 for p in parts if not p.sent and not p.copied)
        # Parts copied by S3 carry the store's ETags (not always their MD5s): the object's ETag is checked against
        # our digests when every part's MD5 is known here, against the source's when the layout is the source's.
        self._finish_upload(f, shape, upload_id, parts, result, not any(p.copied for p in parts), task.write_if)

    def _send_range(self, task: FileTask, shape: Shape, result: FileResult) -> None:
        """Fleet: the parts ``task.parts`` of the upload the sender made for this file (``task.upload``), resumed from
        what is there (every part proven by MD5 as in a run), never another upload; then, if every part of the upload
        is there, whoever sent them, the object is made here.  Workers that race to make it both succeed (_complete).
        The upload must be this source version's (its marker says so): a message queued for an older version fails."""
        f, upload = task.src, task.upload
        assert upload is not None and task.parts is not None
        first, last = task.parts
        if last > shape.plan.part_count:
            raise FileFailed(f"parts {first}-{last} of the message are not in its {shape.plan.part_count} parts; the "
                             f"message was not made for this version of the file")  # fmt: skip
        check, data, _ = examine_upload(self.client, self.bucket, f, upload, self.source, self.retry, shape,
                                        can_read_back=not self.mover.copies)  # fmt: skip
        if not check.proven:
            raise FileFailed(f"upload {short_id(upload.upload_id)} was not made for this version of the file "
                             f"({check.restart or 'no marker'}); run the sender again to queue the file as it is "
                             f"now")  # fmt: skip
        existing: dict[int, list[ExistingPart]] = {}
        for p in data:
            existing.setdefault(p.number, []).append(p)
        try:
            mine = self._send_parts(f, shape, upload.upload_id, existing, True, numbers=range(first, last + 1))
            self._check_unchanged(f)
        except SourceChanged:
            self._abort(f.key, upload.upload_id)  # made for a version that is gone: nobody can complete it rightly
            raise
        result.parts_reused = sum(1 for p in mine if not p.sent and not p.copied)
        result.bytes_sent += sum(p.sent for p in mine)
        result.bytes_copied += sum(p.copied for p in mine)
        # Every part there now?  Each was proven when it was sent (Content-MD5, or S3's copy of the pinned source)
        # or resumed (read back and hashed), by the worker of its range: its listed ETag stands for it.
        listed: dict[int, list[ExistingPart]] = {}
        for p in read_upload(self.client, self.bucket, f.key, upload.upload_id, upload.initiated, self.retry).parts:
            listed.setdefault(p.number, []).append(p)
        ours = {p.number: p for p in mine}
        parts: list[PartResult] = []
        for number, _, length in shape.plan.parts():
            if number in ours:
                parts.append(ours[number])
                continue
            there = pick_existing_part(listed.get(number, []), length, None)
            if there is None:
                result.missing += 1
            else:
                parts.append(PartResult(number, there.etag, etag_digest(there.etag), 0))
        if result.missing:
            result.parts = len(mine)
            return
        known = not self.mover.copies
        sent, copied = result.bytes_sent, result.bytes_copied
        self._finish_upload(f, shape, upload.upload_id, parts, result, known, task.write_if)
        result.bytes_sent, result.bytes_copied = sent, copied  # this worker's share of the bytes, not the file's

    def _finish_upload(self, f: SourceFile, shape: Shape, upload_id: str, parts: list[PartResult], result: FileResult,
                       etag_known: bool, write_if: tuple[str, str] | None = None) -> None:  # fmt: skip
        """Complete the upload from ``parts`` and prove the object: its ETag against the one its parts make (when
        ``etag_known``: every part's MD5 is known here), the source's full-object checksum, or the source's ETag."""
        parts.sort(key=lambda p: p.number)
        expected = multipart_etag(p.digest for p in parts)
        if shape.checksum == COMPUTED_CRC32:  # every part was read here: their CRCs make the whole file's
            joined = crc32_join(p.crc for p in parts if p.crc is not None)
            assert all(p.crc is not None for p in parts)
            shape = dataclasses.replace(shape, checksum=("CRC32", crc32_b64(joined)))
            result.checksum = shape.checksum
        try:
            completed, ours = self._complete(f.key, upload_id, parts, shape.checksum, write_if, f)
        except ProofFailed:
            self._abort(f.key, upload_id)
            raise
        etag = require_etag(completed, "COMPLETE")
        if not ours and completed.get(SAME_BYTES):
            expected = etag  # this file's bytes, read again in the layout of the object another run made
        if not ours and etag != expected:
            # Completed by someone else (or by our own attempt whose answer was lost) as another object: it is
            # someone's good data, never deleted here.
            raise FileFailed(f"its upload was completed by another run or tool, and the object (ETag {etag}) is not "
                             f"this file's (computed here: {expected}); nothing was deleted, rerun to compare and send "
                             f"it again")  # fmt: skip
        result.parts = len(parts)
        result.bytes_sent += sum(p.sent for p in parts)
        result.bytes_copied += sum(p.copied for p in parts)
        result.etag, result.expected_etag, result.etag_is_md5 = etag, expected, etag_is_md5(completed)
        result.etag_known = known = etag_known
        if result.etag_is_md5 and known and etag != expected:
            why = f"ETag mismatch after complete: S3 has {etag}, computed from our parts {expected}"
            raise discard(self, f.key, why)
        if shape.checksum:
            check_checksum(self, f, shape, completed, result)
        if shape.same_layout and etag == f.etag:
            result.proof = PROOF_ETAG
        elif shape.same_layout and not self.mover.copies:
            why = f"the copy's ETag {etag} is not the source's {f.etag} although its parts were cut as the source's"
            raise discard(self, f.key, why, ProofFailed)

    def _complete(self, key: str, upload_id: str, parts: list[PartResult], checksum: tuple[str, str] | None,
                  write_if: tuple[str, str] | None = None, f: SourceFile | None = None
                  ) -> tuple[dict, bool]:  # fmt: skip
        """CompleteMultipartUpload with our own part list (the data parts: never the marker), and the source's
        full-object checksum for S3 to check, if it has one; returns S3's answer and True.  An upload that is gone
        (NoSuchUpload) was completed by an earlier attempt whose answer was lost, or by another run that joined it
        (or aborted): then the object itself is returned (HeadObject) with False, for the caller to compare.
        ``write_if``: the object must still be the one the plan saw (see write_condition): an object written meanwhile
        by someone else is never overwritten (conflict, the upload left as it is)."""
        attempts = 0
        extra = dict(checksum_args(checksum), ChecksumType="FULL_OBJECT") if checksum else {}

        def complete() -> dict:
            nonlocal attempts
            attempts += 1
            try:
                resp = self.write_conditionally(key, write_if, lambda conditions: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]},
                    **extra,
                    **conditions,
                ))  # fmt: skip
            except botocore.exceptions.ClientError as exc:
                if checksum and error_code(exc) in ("BadDigest", "InvalidDigest"):  # S3 refused: bytes differ
                    raise ProofFailed(
                        f"S3 refused to complete it: its bytes do not have the source's full-object "
                        f"{checksum[0]} ({error_code(exc)}); aborted, rerun to copy it again"
                    ) from None
                raise
            require_etag(resp, f"COMPLETE {key}")
            return resp

        try:
            with self._finishing(key):
                return self.retry.call(f"COMPLETE {key}", complete), True
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "PreconditionFailed":
                there = self.written_meanwhile(key, multipart_etag(p.digest for p in parts), f, upload_id, write_if)
                if there is not None:
                    return there, False
                write_if = None  # nothing there to overwrite after all
                with self._finishing(key):
                    return self.retry.call(f"COMPLETE {key}", complete), True
            if error_code(exc) != "NoSuchUpload":
                raise
            head = head_destination(
                self.client,
                self.bucket,
                key,
                self.retry,
                "to find whether the upload, gone, made the object",
                ChecksumMode="ENABLED",
            )
            if head is None:
                raise FileFailed("its upload is gone (NoSuchUpload: aborted by another run or a person) and no object "
                                 "was made of it; rerun to upload it again") from None  # fmt: skip
            log.info("%s: %s; the object is there", key, "the answer to COMPLETE was lost" if attempts > 1 else
                     "its upload was completed by another run")  # fmt: skip
            require_etag(head, f"HEAD {key}")
            return head, False

    def _refuse_checksums(self, exc: BaseException) -> None:
        with self._finishing_lock:
            if self.computed_checksums:
                self.computed_checksums = False
                log.warning("the destination refuses full-object checksums (%s): files are proven by their part MD5s "
                            "from now on", describe_error(exc))  # fmt: skip

    def write_conditionally(self, key: str, write_if: tuple[str, str] | None,
                            request: Callable[[dict], dict]) -> dict:  # fmt: skip
        """``request(conditions)`` with the write condition as arguments (IfNoneMatch / IfMatch).  The run's first one
        asks the store whether it checks them (probe_conditional_writes).  A store that does not take them (it answers
        NotImplemented, or refuses the header) or ignores them is said once, and written to without them from then
        on."""
        if write_if and self.conditional and not self._conditions_probed:
            self._probe_conditions(key)
        conditions = dict([write_if]) if write_if and self.conditional else {}
        try:
            return request(conditions)
        except botocore.exceptions.ClientError as exc:
            if not conditions or not conditions_refused(exc):
                raise
            self._unconditional(f"does not take conditional writes ({describe_error(exc)})")
            return request({})

    def _probe_conditions(self, key: str) -> None:
        with self._probe_lock:  # the other writers wait for the one answer (a request) rather than probe again
            if self._conditions_probed:
                return
            verdict, why = probe_conditional_writes(self.client, self.bucket, key, self.retry)
            self._conditions_probed = True
        if verdict == "refused":
            self._unconditional(f"does not take conditional writes ({why})")
        elif verdict == "ignored":
            self._unconditional(f"ignores conditional writes ({why})")
        elif verdict == "unknown":
            log.info("whether the destination checks conditional writes is not known (%s); writes carry them", why)

    def _unconditional(self, why: str) -> None:
        with self._finishing_lock:
            if self.conditional:
                self.conditional = False
                log.warning("the destination %s: objects are written without If-None-Match / If-Match from now on, so "
                            "one written meanwhile by someone else may be overwritten", why)  # fmt: skip

    def written_meanwhile(self, key: str, ours: str, f: SourceFile | None = None, upload_id: str = "",
                          write_if: tuple[str, str] | None = None) -> dict | None:  # fmt: skip
        """A conditional write was refused (412): the key holds another object than the plan saw, or none.  It is this
        file when its ETag is the one our bytes make (a retried request whose answer was lost, another run of this job
        that wrote the same bytes; a local file is also read again in the object's own part layout, for a run with
        another ChunkSize): then that object is the answer, and our upload, which nothing needs any more, is aborted.
        Anyone else's is a conflict: never overwritten, nothing deleted, the upload left to resume or CLEAN.  None: an
        If-None-Match refused while no object is there at all (SeaweedFS refuses it when a "directory" of that name
        holds other keys, e.g. `name` beside `name/a.bin`): nothing to overwrite, the caller writes without it."""
        head = head_destination(self.client, self.bucket, key, self.retry, "to see the object written meanwhile",
                                ChecksumMode="ENABLED")  # fmt: skip
        if head is None and write_if == IF_ABSENT:
            log.info("%s: the store refused If-None-Match though no object is there; written without it", key)
            return None
        there = str(head.get("ETag", "")).strip('"') if head is not None else ""
        if there and there != ours and f is not None and head is not None and head.get("ContentLength") == f.size \
                and self.source.verify_existing_parts:  # fmt: skip
            if self._etag_in_layout(f, there) == there:
                ours = there
                head = dict(head, **{SAME_BYTES: True})
        if there and there == ours:
            log.info("%s: the object was written meanwhile with this file's bytes (ETag %s)", key, there)
            if upload_id:
                try:
                    self._abort(key, upload_id)
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) != "NoSuchUpload":  # completed by our own first attempt
                        raise
            return head
        now = f"an object with ETag {there}" if there else "no object any more"
        raise FileFailed(f"conflict: s3://{self.bucket}/{key} changed while this file was sent (it holds {now}, not "
                         f"what the plan saw); not overwritten, nothing deleted, its upload is left to resume (or "
                         f"--clean); compare, then rerun to replace it")  # fmt: skip

    def _etag_in_layout(self, f: SourceFile, etag: str) -> str:
        """The ETag this file's bytes make in the part layout of an object whose ETag is ``etag`` (its first part's
        size asked with HeadObject PartNumber=1); '' when that layout cannot be known."""
        count = etag_part_count(etag)
        if count < 0:
            return ""
        if count == 0:
            return self._source_etag(f, None)
        first = head_of(self.client, self.bucket, f.key, self.retry)(PartNumber=1)
        plan = ChunkPlan(f.size, int(first.get("ContentLength", 0)) or f.size)
        return self._source_etag(f, plan) if plan.part_count == count else ""

    def _source_etag(self, f: SourceFile, plan: ChunkPlan | None) -> str:
        """The ETag of the source's bytes cut as ``plan`` (None: one part, its MD5), read and hashed here a piece at a
        time (a single-part object may be 5 GiB)."""

        def read(offset: int, length: int) -> bytes:
            return self.retry.call(f"READ {f.key} at {offset}", functools.partial(self.source.read, f, offset, length),
                                   paced=False)  # fmt: skip

        return compute_proof(StoredProof("", "", plan), read, f.size, min(self.s.chunk_size, 8 * MiB), lambda n: None)

    def _made_by_another(self, f: SourceFile, shape: Shape, result: FileResult) -> None:
        """The file's upload vanished while its parts were being sent: another run that had joined it completed it
        (or it was aborted).  The object at the key is this file if its ETag is the one of this file's bytes in the
        upload's layout (each part read from the source and hashed here; S3 copies are compared with the source's own
        ETag in its layout): then the file is done, else it fails, and nothing is deleted."""
        head = head_destination(self.client, self.bucket, f.key, self.retry, "to find whether its upload, gone, made "
                                "the object")  # fmt: skip
        if head is None:
            raise FileFailed("its upload is gone (NoSuchUpload: aborted by another run or a person) and no object was "
                             "made of it; rerun to upload it again")  # fmt: skip
        etag = require_etag(head, f"HEAD {f.key}")
        if self.mover.copies:
            expected = f.etag if shape.same_layout else ""
        else:
            expected = self._source_etag(f, shape.plan)
        if not expected or etag != expected or not etag_is_md5(head):
            raise FileFailed(f"its upload was completed by another run or tool while its parts were being sent, and "
                             f"the object (ETag {etag}) cannot be shown to be this file; nothing was deleted, rerun to "
                             f"compare and send it again")  # fmt: skip
        log.info("%s: another run completed its upload while its parts were being sent; the object's ETag %s is "
                 "this file's", f.key, etag)  # fmt: skip
        result.etag, result.expected_etag, result.parts = etag, expected, shape.plan.part_count
        result.proof = PROOF_ETAG if self.mover.copies else PROOF_PARTS

    def _create_upload(self, f: SourceFile, shape: Shape, facts: SourceFacts) -> str:
        """CreateMultipartUpload, then at once the resume marker (before any data part, so that no part of this
        upload is ever on S3 without the version it belongs to)."""
        key = f.key
        args = self.object_args(facts)
        if shape.checksum:
            args.update(ChecksumAlgorithm=shape.checksum[0], ChecksumType="FULL_OBJECT")

        attempts = 0

        def create() -> str:
            nonlocal attempts
            attempts += 1
            return self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **args)["UploadId"]

        upload_id = self.retry.call(f"CREATE upload {key}", create)
        if attempts > 1:
            # A try whose answer was lost may have made an upload too: nothing tells it from another run's new upload,
            # so it is looked for once the file is done, and aborted if abandoned by then (_abort_stale).
            with self._finishing_lock:
                self._retried_creates.add(key)
        return upload_id

    def _send_marker(self, f: SourceFile, upload_id: str, shape: Shape, number: int, cancel: threading.Event) -> None:
        """One of the resume marker's two parts (9,999 and 10,000).  Both are on S3 before any data part: no data part
        of this tool's uploads is ever there without the version it belongs to, or without the small part 9,999 that
        makes a completion from ListParts fail.  Both go at once: one round trip per file started."""
        body = marker_body(self.source.identity(f), shape.plan, shape.checksum)
        md5_b64 = md5_of(body)[1]
        self.retry.call(f"MARKER {f.key}", lambda: require_etag(self.client.upload_part(
            Bucket=self.bucket, Key=f.key, UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=md5_b64,
            **part_checksum_args(shape.checksum)), f"MARKER {f.key}"), cancel)  # fmt: skip

    def _resume_or_create(self, task: FileTask, shape: Shape, facts: SourceFacts
                          ) -> tuple[str, dict[int, list[ExistingPart]], bool, bool, bool]:  # fmt: skip
        """The upload to send parts to, the parts it already holds (by number), whether those are tied to this
        source version (so that a part of the right size counts without reading it again), whether its marker is
        still to send, and whether it was made with the shape's full-object checksum.

        Concurrent writers, decided from S3 alone: the file's unfinished uploads are looked at newest first.  The
        first made for this very source version and layout (its marker says so) is joined, even while another run
        adds parts to it (they add the same parts: whoever completes it first makes the object, the other finds it
        made, see _complete).  An upload of another tool without marker is resumed once abandoned, each part checked
        by MD5.  Any other upload (another version or layout, nothing in it yet, another tool's) is aborted only once
        abandoned: nothing added to it for AbandonedAfter seconds, by S3's clock; one with a part added sooner may be
        another run's work in progress, and is left alone (a later run removes it once it is idle).  None to join: a
        new upload."""
        f, plan = task.src, shape.plan
        for upload in sorted((u for u in (task.upload, *task.stale) if u is not None), key=lambda u: -u.initiated):
            check, data, state = examine_upload(self.client, self.bucket, f, upload, self.source, self.retry, shape,
                                                can_read_back=not self.mover.copies)  # fmt: skip
            abandoned = state.abandoned(self.s)
            if check.proven or (not check.restart and abandoned):
                by_number: dict[int, list[ExistingPart]] = {}
                for p in data:
                    by_number.setdefault(p.number, []).append(p)
                log.info(
                    "resume %s: upload %s has %d of %d parts on S3 (%s)",
                    f.key,
                    short_id(upload.upload_id),
                    len(by_number),
                    plan.part_count,
                    "made for this version of the source" if check.proven else
                    "made without s3_upload's marker: each part is checked against the source before it is reused",
                )  # fmt: skip
                # One of ours stopped between its two marker parts gets its marker again, before any data part.
                remark = check.proven and len(check.markers) == 1 and not data
                return upload.upload_id, by_number, check.proven, remark, not check.without_checksum
            if abandoned:
                log.warning("restart %s: unfinished upload %s cannot be resumed, %s; nothing was added to it for %s: "
                            "aborting it", f.key, short_id(upload.upload_id), check.restart,
                            human_duration(state.idle))  # fmt: skip
                self._abort(f.key, upload.upload_id)
            else:
                log.info("%s: leaving unfinished upload %s alone: %s, and a part was added %s ago (another run may be "
                         "at work on it; it is aborted once idle for AbandonedAfter)", f.key,
                         short_id(upload.upload_id), check.restart, human_duration(state.idle))  # fmt: skip
        upload_id = self._create_upload(f, shape, facts)
        log.debug("%s: new upload %s, %d parts of %s", f.key, short_id(upload_id), plan.part_count,
                  human_bytes(plan.part_size))  # fmt: skip
        return upload_id, {}, True, True, True

    def open_upload(self, task: FileTask) -> tuple[str, int] | None:
        """Fleet sender: the upload a big file's ranges go to, and its number of parts.  Joined as a run would (one
        made for this source version: a sender run again queues the same upload), else made, with its marker sent at
        once, so that every worker can prove it is for this version.  None when the upload to resume is another tool's
        (its parts need one worker that checks them all): the file is queued whole."""
        facts = self.source.facts(task.src)
        task = dataclasses.replace(task, parts=(1, task.plan.part_count))  # shaped as its ranges will be
        shape = shape_of(task, facts, self.s, self.mover.copies)
        upload_id, _, proven, marker, _ = self._resume_or_create(task, shape, facts)
        if not proven:
            return None
        if marker:
            cancel = threading.Event()
            self.budget.map([functools.partial(self._send_marker, task.src, upload_id, shape, n, cancel)
                             for n in MARKER_PARTS], cancel)  # fmt: skip
        return upload_id, shape.plan.part_count

    def _send_parts(self, f: SourceFile, shape: Shape, upload_id: str, existing: dict[int, list[ExistingPart]],
                    proven: bool, marker: bool = False, numbers: range | None = None) -> list[PartResult]:  # fmt: skip
        """Every part of the plan, or those ``numbers`` (a fleet range), into the upload."""
        failed = threading.Event()  # one part's final failure stops this file's other parts at once
        # A part of the right size in an upload tied to this version counts as it is, unless reading it back is
        # cheap (a local file: proven by MD5 anyway).
        trust_sizes = proven and not self.source.verify_existing_parts

        def send(number: int, offset: int, length: int) -> PartResult:
            if failed.is_set() or self.stop.is_set():
                raise Interrupted()
            self.retry.working_on(f.key)
            listed = existing.get(number, [])
            if listed and trust_sizes:
                reuse = pick_existing_part(listed, length, None)
                if reuse is not None and is_md5_hex(reuse.etag):
                    self.progress.part_done(f.key, length, how="found")
                    return PartResult(number, reuse.etag, binascii.unhexlify(reuse.etag), 0)
            try:
                return self.mover.part(f, upload_id, number, offset, length, shape, listed, failed)
            except BaseException:
                failed.set()  # now, not once the file thread wakes: the part queued next here must not start
                raise

        if marker:
            markers = [functools.partial(self._send_marker, f, upload_id, shape, n, failed) for n in MARKER_PARTS]
            self.budget.map(markers, failed)
        # Missing parts first: the network starts at once, and checking the parts already on S3 (reading and hashing
        # them) overlaps with those uploads instead of delaying them.
        chosen = shape.plan.parts() if numbers is None else (p for p in shape.plan.parts() if p[0] in numbers)
        ordered = sorted(chosen, key=lambda part: part[0] in existing)
        return self.budget.map([functools.partial(send, *part) for part in ordered], failed)

    def _check_unchanged(self, f: SourceFile) -> None:
        """Before completing: is the source still the version listed?  Any write since (even one that restored the
        size and mtime) fails the file, so no object is ever completed from two versions of a file."""
        now = self.source.current(f)
        if now.version == f.version:
            return
        if now.size != f.size:
            how = f"size {f.size} -> {now.size}"
        elif now.mtime != f.mtime:
            how = "modified"
        else:
            how = "rewritten in place with its size and mtime restored"
        raise SourceChanged(
            f"{self.source.describe(f)} changed during the transfer ({how}); not completed, rerun to upload it again"
        )

    def _abort(self, key: str, upload_id: str) -> None:
        abort_upload(self.client, self.bucket, key, upload_id, self.retry)

    # -- 6. Verify ------------------------------------------------------------------------------------------------

    # -- the file pool --------------------------------------------------------------------------------------------

    def run(self, tasks: Iterable[FileTask], record: Callable[[FileResult], None] | None = None) -> list[FileResult]:
        """Run every task as ``tasks`` yields it (a plan made while the listings go on): a file sent in parts gets
        one of MaxParallelFile file threads, which drives it (resume, marker, completion, proofs) while its parts go
        through the one budget of requests; a file sent in one request is itself one request of that budget.  Each
        result goes to ``record`` as it comes (no list of them is kept then), else it is returned."""
        results: list[FileResult] = []
        keep = record or results.append
        lock = threading.Lock()

        def recorded(result: FileResult) -> None:
            with lock:
                keep(result)

        errors: list[BaseException] = []  # a listing that failed, or a bug: the run stops
        multipart: queue.Queue[FileTask | None] = queue.Queue(maxsize=self.s.max_parallel_file)
        small = _FileRequests(collections.deque(), threading.Event())

        def file_thread() -> None:
            while (task := multipart.get()) is not None:
                try:
                    recorded(self.run_file(task))
                except BaseException as exc:  # run_file keeps every file's failure: this is a bug, say it
                    errors.append(exc)
                    self.stop.set()

        def dispatch() -> None:
            try:
                for task in tasks:
                    if self.stop.is_set():
                        break
                    self.progress.add(task)
                    if task.action == "multipart":
                        while not self.stop.is_set():
                            with contextlib.suppress(queue.Full):
                                multipart.put(task, timeout=0.2)
                                break
                    elif task.action == "skip" and not task.stale:  # nothing to ask S3
                        recorded(self.run_file(task))
                    else:
                        self.budget.submit(functools.partial(lambda t: recorded(self.run_file(t)), task), small)
                self.progress.listed()
                self.budget.drain(small)
                if small.error is not None:
                    raise small.error
            except BaseException as exc:
                errors.append(exc)
                self.stop.set()
            finally:
                for _ in threads:
                    multipart.put(None)

        threads = [threading.Thread(target=file_thread, name=f"file-{n}", daemon=True)
                   for n in range(self.s.max_parallel_file)]  # fmt: skip
        dispatcher = threading.Thread(target=dispatch, name="plan", daemon=True)
        for thread in (*threads, dispatcher):
            thread.start()
        try:
            for thread in (dispatcher, *threads):
                # Wake up often: Ctrl-C may be delivered to a worker thread, and Python only runs the handler
                # (raising KeyboardInterrupt here) when this main thread runs.
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:
            # Ctrl-C reaches only this thread: tell the workers; requests in flight are not waited for, but those that
            # make an object (PutObject, CompleteMultipartUpload) are: S3 finishes them anyway, and a person must not
            # believe such a file unfinished.
            self.stop.set()
            self._report_finishing()
            raise
        if errors:
            raise errors[0]
        return results

    @contextlib.contextmanager
    def _finishing(self, key: str) -> Iterator[None]:
        """Around the request that makes a file's object: a stop waits for it and names the file it completed."""
        with self._finishing_lock:
            self._finishing_keys[key] = self._finishing_keys.get(key, 0) + 1
        try:
            yield
            if self.stop.is_set():
                with self._finishing_lock:
                    self.completed_after_stop.append(key)
        finally:
            with self._finishing_lock:
                self._finishing_keys[key] -= 1
                if not self._finishing_keys[key]:
                    del self._finishing_keys[key]

    def _report_finishing(self) -> None:
        """After a stop: wait (at most ReadTimeout) for the requests that make objects, then name what they made and
        what was still on its way."""
        deadline = time.monotonic() + self.s.read_timeout
        while self._finishing_keys and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._finishing_lock:
            done, pending = list(self.completed_after_stop), sorted(self._finishing_keys)
        if done:
            log.warning("interrupted: completed meanwhile: %s", ", ".join(done))
        if pending:
            log.warning("interrupted: still completing: %s (the next run finds each complete, or completes it)",
                        ", ".join(pending))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# 7. Prove: what makes a finished object equal to its source (checked at completion, and by ifVerifyMD5)
# ----------------------------------------------------------------------------------------------------------------------


def check_checksum(e: Engine, f: SourceFile, shape: Shape, resp: dict, result: FileResult) -> None:
    """The full-object checksum S3 keeps must be the source's: S3 checked the bytes against the one we gave it (a
    store that keeps another value did not: the object is deleted and the file fails).  A store that keeps none
    (asked once more with HeadObject when its answer says nothing) checked nothing: the file is then proven by
    what else proves it, and never said proven by the checksum."""
    assert shape.checksum is not None
    algorithm, value = shape.checksum
    answered = resp.get(f"Checksum{algorithm}") or head_of(e.client, e.bucket, f.key, e.retry)(
        ChecksumMode="ENABLED").get(f"Checksum{algorithm}")  # fmt: skip
    if answered and answered != value:
        raise discard(e, f.key, f"the copy's {algorithm} {answered} is not the source's {value}", ProofFailed)
    if not answered and result.proof == shape.proof:
        result.proof = PROOF_SERVER if e.mover.copies else PROOF_PARTS
        log.info("%s: the store keeps no %s of the object: proven by %s", f.key, algorithm, result.proof)


def discard(e: Engine, key: str, why: str, failure: type[FileFailed] = FileFailed) -> FileFailed:
    """The object at key is not the one computed here (a store that does not check Content-MD5 kept a damaged
    part, the answer itself is wrong, or a proof failed): delete it, so that no later run takes it for complete
    by its key and size, and fail the file."""
    try:
        e.retry.call(f"DELETE {key}", lambda: e.client.delete_object(Bucket=e.bucket, Key=key))
    except Interrupted:
        raise
    except Exception as exc:
        return failure(f"{why}; deleting it failed ({describe_error(exc)}): delete s3://{e.bucket}/{key} "
                       f"yourself, or the next run takes it for complete")  # fmt: skip
    return failure(f"{why}; the object was deleted, the next run uploads it again")


def verify_by_reread(e: Engine, f: SourceFile, shape: Shape, result: FileResult) -> bool:
    """ifVerifyMD5: read the whole source again and recompute the ETag.  It is compared with what the completion
    itself accepted: S3's ETag when it is built from the MD5s of our parts; what was sent when S3's is no MD5
    (KMS, SSE-C); nothing more when S3 copied the parts itself and its copies carry ETags of the store's own (the
    pinned copy stays the proof).  A difference is S3's fault only while the source is still the version sent:
    then the object is deleted and the file sent again (False); a source changed since fails the file and the
    object, which holds the version listed, is kept."""
    try:
        if not shape.multipart:
            digest = md5_of(e.retry.call(f"READ {f.key}", lambda: e.source.read(f, 0, f.size), paced=False))[0]
            expected = digest.hex()
        else:
            digests = []
            for number, offset, length in shape.plan.parts():
                data = e.retry.call(
                    f"VERIFY {f.key} part {number}", functools.partial(e.source.read, f, offset, length)
                )
                digests.append(hashlib.md5(data).digest())
            expected = multipart_etag(digests)
        if result.etag_is_md5 and result.etag_known:
            uploaded = result.etag
        elif not result.bytes_copied:
            uploaded = result.expected_etag
        else:
            log.info("verified %s: the source re-read is the version S3 copied (ETag %s); the copy's ETag is the "
                     "store's own: proven by %s", f.key, expected, result.proof)  # fmt: skip
            return True
        if expected == uploaded:
            log.info("verified %s: re-read ETag %s matches", f.key, expected)
            return True
        e._check_unchanged(f)
    except SourceChanged:
        raise SourceChanged(f"{e.source.describe(f)} changed after it was uploaded: its object holds the "
                            f"version listed and was kept; rerun to upload the new version") from None  # fmt: skip
    log.error("verify %s: source ETag %s but S3 has %s; deleting it and uploading again", f.key, expected, result.etag)
    e.retry.call(f"DELETE {f.key}", lambda: e.client.delete_object(Bucket=e.bucket, Key=f.key))
    return False


# ----------------------------------------------------------------------------------------------------------------------
# 8. Report: logging, the CLEAN question, the dry run, the closing block, --report
# ----------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # sizes repeat: a dry run of millions of files says each one's
def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if round(abs(n), 1) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_duration(seconds: float) -> str:
    """45s, 12m05s, 3h07m: an ETA a person reads at a glance."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def short_id(upload_id: str) -> str:
    return upload_id[:12] + "..." if len(upload_id) > 15 else upload_id


FILE_ONLY = {"file_only": True}  # log(..., extra=FILE_ONLY): for the log file, not for the person at the console


class ConsoleHandler(logging.StreamHandler):
    """stderr; while a progress bar is on screen, lines are written above it instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        bar = _active_bar
        if bar is None:
            super().emit(record)
            return
        try:
            bar.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(settings: Settings) -> str:
    """Console and log/s3_upload-<timestamp>.log at LoggingLevel.  botocore's own loggers stay quiet: at DEBUG they
    print request headers (access key ids, signatures)."""
    level = getattr(logging, settings.logging_level.upper())
    os.makedirs(settings.log_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = new_log_file(os.path.join(settings.log_dir, f"s3_upload-{stamp}"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    file_handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    file_handler.setFormatter(fmt)
    console = ConsoleHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(level)
    log.addHandler(file_handler)
    log.addHandler(console)
    log.setLevel(level)
    log.propagate = False
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(logging.Formatter("%(message)s"))
    report.addHandler(file_handler)
    report.addHandler(stdout)
    report.setLevel(logging.INFO)
    report.propagate = False
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path


def new_log_file(stem: str) -> str:
    """stem.log, or stem-2.log, stem-3.log...: created here, exclusively, so that runs started in the same second
    (fleet workers on one machine) never share a log file."""
    for n in range(1, 10_000):
        path = f"{stem}.log" if n == 1 else f"{stem}-{n}.log"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            continue
    raise OSError(f"too many log files named {stem}*.log")


def close_logging() -> None:
    for logger in (log, report):
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)


def ask_clean(uploads: list[UnfinishedUpload], settings: Settings, prefix: str,
              notes: dict[str, str] | None = None) -> bool:  # fmt: skip
    """The seed's prompt.  Only the answer CLEAN cleans (every upload listed); Enter, anything else or end of input
    resumes.  ``notes``: source_notes, shown with each upload so that a person sees what CLEAN takes."""
    notes = notes or {}
    log.warning(
        "%d unfinished multipart upload(s) under s3://%s/%s (CLEAN aborts them all%s):",
        len(uploads),
        settings.des_bucket,
        prefix,
        notes_summary(uploads, notes),
    )
    for u in uploads[:20]:
        note = notes.get(u.key, "")
        log.warning("  %s (upload %s)%s", u.key, short_id(u.upload_id), f": {note}" if note else "")
    if len(uploads) > 20:
        log.warning("  ... and %d more (--dry-run --clean lists them all)", len(uploads) - 20)
    if settings.dont_ask_me_to_clean:
        log.info("DontAskMeToClean is True: resuming them")
        return False
    try:
        answer = input(CLEAN_PROMPT)
    except (EOFError, OSError, RuntimeError, ValueError):  # end of input, or no stdin at all (`<&-`, some schedulers)
        print()
        log.info("no answer on stdin: resuming")
        return False
    return answer.strip() == "CLEAN"


NOT_FROM_SOURCE = "not from this job's source"


def source_notes(job: Job, uploads: list[UnfinishedUpload]) -> dict[str, str]:
    """What a person should know of each upload CLEAN would abort, by key: '' when this job's source has the key (the
    upload is this job's, or an earlier run's of the same file); NOT_FROM_SOURCE when it does not (S3Prefix is a
    string, as in the original: "data" also takes "database/..."); "could not be checked (...)" when asking failed.
    The source is asked about each key (LocalSource: a regular file inside SrcDir; S3Source: HeadObject), a few at a
    time; it is never listed for this: unfinished uploads are few, a source can be millions of objects."""
    keys = sorted({u.key for u in uploads})

    def ask(key: str) -> str:
        try:
            job.source.resolve(key)
            return ""
        except FileFailed:
            return NOT_FROM_SOURCE
        except (OSError, ValueError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            return f"could not be checked ({describe_error(exc)})"

    with concurrent.futures.ThreadPoolExecutor(max(1, min(8, len(keys))), thread_name_prefix="clean") as pool:
        return dict(zip(keys, pool.map(ask, keys), strict=True))


def notes_summary(uploads: list[UnfinishedUpload], notes: dict[str, str]) -> str:
    """', 2 of them not from this job's source' (and how many could not be checked), or ''."""
    foreign = sum(1 for u in uploads if notes.get(u.key) == NOT_FROM_SOURCE)
    unknown = sum(1 for u in uploads if notes.get(u.key, "").startswith("could not be checked"))
    return (f", {foreign} of them {NOT_FROM_SOURCE}" if foreign else "") + \
        (f", {unknown} of them could not be checked against the source" if unknown else "")  # fmt: skip


def print_dry_run(tasks: Iterable[FileTask], cleaned: list[UnfinishedUpload], client, settings: Settings,
                  retry: RetryPolicy, source, copies: bool = False,
                  notes: dict[str, str] | None = None) -> None:  # fmt: skip
    """--dry-run: what a run would do, file by file; only listings are sent, nothing is written.  ``notes``:
    source_notes of the uploads CLEAN aborts.  The lines of the files go to stdout as the plan is made, written as a
    file is (a logging record and a flush per line would cost more than planning the file); the totals come last,
    and go to the log too."""
    for u in cleaned:
        note = (notes or {}).get(u.key, "")
        report.info("clean    %s (abort unfinished upload %s%s)", u.key, short_id(u.upload_id),
                    f"; {note}" if note else "")  # fmt: skip
    counts: dict[str, int] = {}
    lines: list[str] = []

    def write(line: str) -> None:
        lines.append(line)
        if len(lines) >= 500:  # a write per few hundred lines (stdout may be unbuffered: PYTHONUNBUFFERED)
            sys.stdout.write("".join(lines))
            lines.clear()

    for t in tasks:
        f = t.src
        if t.confirm:  # as the run decides it
            same = confirmed_same(f, source, head_of(client, settings.des_bucket, f.key, retry))
            if same:
                t = dataclasses.replace(
                    t, action="skip", reason=same, stale=t.stale + ((t.upload,) if t.upload else ())
                )
        why = f"; {t.reason}" if t.reason and t.action != "skip" else ""
        if t.action == "skip":
            verb, detail = "skip", t.reason
        elif t.action == "put":
            verb, detail = "upload", f"{human_bytes(f.size)}, one request{why}"
        elif t.upload is None:
            verb, detail = (
                "upload",
                f"{human_bytes(f.size)}, {t.plan.part_count} parts of {human_bytes(t.plan.part_size)}{why}",
            )
        else:  # as the run decides it (Engine._resume_or_create): the first upload to join, newest first
            shape = shape_of(t, source.facts(f), settings, copies)
            verb, detail = (
                "upload",
                f"{human_bytes(f.size)}, {t.plan.part_count} parts of {human_bytes(t.plan.part_size)}",
            )
            for u in sorted((t.upload, *t.stale), key=lambda u: -u.initiated):
                check, parts, state = examine_upload(
                    client, settings.des_bucket, f, u, source, retry, shape, not copies
                )
                if check.proven or (not check.restart and state.abandoned(settings)):
                    verb, detail = (
                        "resume",
                        f"{len({p.number for p in parts})} of {t.plan.part_count} parts already on S3",
                    )
                    break
                if state.abandoned(settings):
                    verb, detail = "restart", check.restart
                else:
                    detail += f"; upload {short_id(u.upload_id)} left alone: {check.restart}, a part added " \
                              f"{human_duration(state.idle)} ago"  # fmt: skip
        counts[verb] = counts.get(verb, 0) + 1
        write(f"{verb:<8} {f.key} ({detail})\n")
        for u in t.stale:  # as the run decides them (Engine._abort_stale)
            state = read_upload(client, settings.des_bucket, f.key, u.upload_id, u.initiated, retry)
            if state.abandoned(settings):
                write(f"clean    {f.key} (abort unfinished upload {short_id(u.upload_id)}, which this file no longer "
                      f"needs)\n")  # fmt: skip
            else:
                write(f"leave    {f.key} (unfinished upload {short_id(u.upload_id)}: a part was added "
                      f"{human_duration(state.idle)} ago, another run may be at work on it)\n")  # fmt: skip
    sys.stdout.write("".join(lines))
    sys.stdout.flush()
    report.info("dry run: %s; nothing was written", ", ".join(f"{n} to {v}" for v, n in counts.items()) or "no files")


class Outcome:
    """What the closing block says, counted as the results come: counts and sums, the proofs and the skip reasons by
    kind, and the failures (the first thousand named; the report names every one).  Nothing grows with the files."""

    def __init__(self, report_file: ReportWriter | None = None):
        self.report_file = report_file
        self.uploaded = self.resumed = self.skipped = self.copied_bytes = 0
        self.proofs: collections.Counter[str] = collections.Counter()
        self.skip_reasons: collections.Counter[str] = collections.Counter()
        self.failed = Tally()
        self.missing = Tally()
        self.left_alone = Tally()  # unfinished uploads not aborted: another run may be at work on them
        self.retries = 0

    def record(self, r: FileResult) -> None:
        if r.status == "uploaded":
            self.uploaded += 1
            self.resumed += bool(r.parts_reused)
            self.copied_bytes += r.bytes_copied
            self.proofs[r.proof] += 1
        elif r.status == "skipped":
            self.skipped += 1
            self.skip_reasons[r.detail] += 1
        else:
            self.failed.add(f"{r.key}: {r.detail}")
        if self.report_file is not None:
            self.report_file.file(r)


class ReportWriter:
    """--report as JSON Lines, written as the run goes (to PATH.partial, renamed to PATH when the run ends): a header
    line, one line per file as it finishes ({"key", "size", "status", "detail", "parts", "parts_reused", "bytes_sent",
    "bytes_copied", "etag", "proof", "retries", "seconds"}), one line per object the final comparison found missing
    ({"key", "size", "status": "missing"}), one line per listing error ({"listing_error": text}), and a last line with
    the totals ({"summary": {...}}).  A run that dies leaves PATH.partial, every finished file in it."""

    def __init__(self, path: str, settings: Settings, dest_prefix: str):
        self.path, self.partial = path, f"{path}.partial"
        self._lock = threading.Lock()
        self._fh = open(self.partial, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        self._write({"tool": f"s3_upload {__version__}", "job_type": settings.job_type,
                     "destination": f"s3://{settings.des_bucket}/{dest_prefix}"})  # fmt: skip

    def _write(self, document: dict) -> None:
        with self._lock:
            self._fh.write(json.dumps(document, ensure_ascii=False) + "\n")

    def file(self, r: FileResult) -> None:
        self._write({"key": r.key, "size": r.size, "status": r.status, "detail": r.detail, "parts": r.parts,
                     "parts_reused": r.parts_reused, "bytes_sent": r.bytes_sent, "bytes_copied": r.bytes_copied,
                     "etag": r.etag, "proof": r.proof, "retries": r.retries,
                     "seconds": round(r.seconds, 3)})  # fmt: skip

    def missing(self, f: SourceFile) -> None:
        self._write({"key": f.key, "size": f.size, "status": "missing"})

    def finish(self, outcome: Outcome, listing_errors: Tally, code: int, seconds: float, bytes_sent: int) -> None:
        for error in listing_errors:
            self._write({"listing_error": error})
        self._write({"summary": {"exit_code": code, "seconds": round(seconds, 3), "bytes_sent": bytes_sent,
                                 "uploaded": outcome.uploaded, "skipped": outcome.skipped,
                                 "failed": len(outcome.failed), "missing": len(outcome.missing),
                                 "listing_errors": len(listing_errors)}})  # fmt: skip
        self._fh.close()
        os.replace(self.partial, self.path)
        log.info("report written to %s", self.path)


def read_report(path: str) -> tuple[dict, list[dict], dict]:
    """A --report file read back: (header, one dict per file, missing object and listing error, summary)."""
    with open(path, encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    return lines[0], lines[1:-1], lines[-1].get("summary", {})


def _ignored(settings: Settings, f: SourceFile) -> bool:
    return settings.ignore_small_file and f.size < settings.chunk_size


def compare_with_destination(job: Job, outcome: Outcome) -> None:
    """The seed's final comparison: list the source and the destination again and look for every source file in
    the destination (its key, its size), the two listings walked in lock step."""
    settings = job.settings
    for f, there in March(job, quiet=True):
        if (there is None or there[1] != f.size) and not _ignored(settings, f):
            outcome.missing.add(f"{f.key} ({human_bytes(f.size)})")
            if outcome.report_file is not None:
                outcome.report_file.missing(f)
    if outcome.missing:
        report.info("%d source file(s) are not in the destination:", len(outcome.missing))
        for line in outcome.missing:
            report.info("  %s", line)
        if outcome.missing.untold:
            report.info("  ... and %d more (--report names every one)", outcome.missing.untold)
    else:
        report.info("All source files are in destination s3://%s/%s", settings.des_bucket, job.dest_prefix)


EXIT_MEANINGS = {
    EXIT_OK: "every source file is at the destination",
    EXIT_FAILED: "some files failed or are missing (named above); run the same command again to resume them",
}


def print_summary(outcome: Outcome, listing_errors: Tally, bytes_sent: int, seconds: float, code: int) -> None:
    """The closing block: a person never needs the log to know what happened."""
    rate = bytes_sent / seconds if seconds > 0 else 0.0
    report.info(
        "summary: %d uploaded%s, %d skipped, %d failed; %s (%d bytes) sent in %.1fs, %s/s; %d retries",
        outcome.uploaded,
        f" ({outcome.resumed} resumed from parts already on S3)" if outcome.resumed else "",
        outcome.skipped,
        len(outcome.failed) + len(listing_errors),
        human_bytes(bytes_sent),
        bytes_sent,
        seconds,
        human_bytes(rate),
        outcome.retries,
    )
    if outcome.copied_bytes:
        report.info("  copied by S3 itself (server-side): %s (%d bytes), none of it through this machine",
                    human_bytes(outcome.copied_bytes), outcome.copied_bytes)  # fmt: skip
    if outcome.proofs:
        report.info("  proven equal to the source: %s",
                    ", ".join(f"{n} by {p}" for p, n in sorted(outcome.proofs.items())))  # fmt: skip
    for reason, count in outcome.skip_reasons.items():
        report.info("  skipped: %d %s", count, reason)
    for line in outcome.failed:
        report.info("  failed: %s", line)
    if outcome.failed.untold:
        report.info("  failed: %d more (the log and --report name every one)", outcome.failed.untold)
    if outcome.left_alone:
        report.info("  left alone: %d unfinished upload(s) a part was added to less than AbandonedAfter ago (another "
                    "run may be at work on them); a later run aborts each once it is idle, --clean now: %s",
                    len(outcome.left_alone), ", ".join(list(outcome.left_alone)[:5]))  # fmt: skip
    for e in listing_errors:
        report.info("  failed to list: %s", e)
    if listing_errors.untold:
        report.info("  failed to list: %d more (the log names every one)", listing_errors.untold)
    report.info("exit code %d: %s", code, EXIT_MEANINGS[code])


def mission_line(settings: Settings, seconds: float) -> str:
    """The original's closing line: MISSION ACCOMPLISHED - Time: 0H:1M:23S - FROM: <source> TO <bucket>/<prefix>,
    the run's whole time unpadded, S3Prefix as typed."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if settings.job_type == "LOCAL_TO_S3":
        source = settings.src_dir[:-1] if settings.src_dir.endswith(("/", "\\")) else settings.src_dir
    else:
        source = f"{source_bucket(settings)}/{settings.s3_prefix}"
    return (f"MISSION ACCOMPLISHED - Time: {hours}H:{minutes}M:{secs}S - FROM: {source} TO "
            f"{settings.des_bucket}/{settings.s3_prefix}")  # fmt: skip


def job_line(job: Job) -> str:
    """Where from, where to: the first thing a person is told."""
    s = job.settings
    target = f"s3://{s.des_bucket}/{job.dest_prefix} (profile {s.des_profile})"
    if s.job_type == "LOCAL_TO_S3":
        source = os.path.abspath(s.src_dir)
    elif s.job_type == "S3_TO_S3":
        source = f"s3://{s.src_bucket}/{s.s3_prefix} (profile {s.src_profile})"
    else:
        source = f"oss://{s.ali_src_bucket}/{s.s3_prefix} ({oss_endpoint_url(s.ali_endpoint)})"
    one = "" if s.src_file_index == "*" else f", only {s.src_file_index}"
    return f"{s.job_type} {source} -> {target}{one}"


# ----------------------------------------------------------------------------------------------------------------------
# 9. Run a job: the command line, --check, and the pipeline that ties the sections together
# ----------------------------------------------------------------------------------------------------------------------


def check_access(exc: BaseException, what: str) -> None:
    """Turn a failure of the first listing into one line the user can act on (exit code 2)."""
    code = error_code(exc)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        raise UserError(
            f"no credentials for {what}; set aws_access_key_id/aws_secret_access_key for the profile "
            f"in ~/.aws/credentials"
        ) from None
    if code in CREDENTIAL_ERROR_CODES:
        raise UserError(
            f"{what}: the profile's credentials were refused ({code}); check its access key and "
            f"secret in ~/.aws/credentials"
        ) from None
    if code == "NoSuchBucket":
        raise UserError(f"{what}: the bucket does not exist; check the bucket name and the profile's region") from None
    if code in ("AccessDenied", "AllAccessDisabled"):
        raise UserError(
            f"{what}: access denied; grant this profile s3:ListBucket, s3:GetObject, s3:PutObject "
            f"and s3:ListBucketMultipartUploads (or AmazonS3FullAccess)"
        ) from None
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        raise UserError(f"{what}: the bucket is in another region ({code}); set that region in the profile") from None
    if isinstance(exc, botocore.exceptions.SSLError):
        raise UserError(
            f"{what}: TLS failed ({exc}); if the endpoint uses a private CA, set ca_bundle = /path/to/ca.pem in the "
            f"profile (~/.aws/config) or AWS_CA_BUNDLE"
        ) from None
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        raise UserError(
            f"{what}: cannot connect to {exc.kwargs.get('endpoint_url', 'the endpoint')}; check the "
            f"network and the profile's region/endpoint_url"
        ) from None


def check_oss_access(exc: BaseException, what: str) -> None:
    """check_access for the OSS source, whose keys and region are ali_ options of the config, not a profile."""
    code = error_code(exc)
    if code in CREDENTIAL_ERROR_CODES:
        raise UserError(f"{what}: the OSS credentials were refused ({code}); check ali_access_key_id and "
                        f"ali_access_key_secret in the config") from None  # fmt: skip
    if code == "NoSuchBucket":
        raise UserError(f"{what}: the bucket does not exist; check ali_SrcBucket, and that ali_endpoint is its "
                        f"region's endpoint") from None  # fmt: skip
    if code in ("AccessDenied", "AllAccessDisabled", "PermanentRedirect", "IllegalLocationConstraintException"):
        raise UserError(f"{what}: {code}; give the RAM user of ali_access_key_id oss:ListObjects and oss:GetObject "
                        f"on ali_SrcBucket, and check that ali_endpoint is the bucket's region") from None  # fmt: skip
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        raise UserError(f"{what}: cannot connect; check ali_endpoint and the network") from None


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run, from the command line (never from the config): see parse_args."""

    dry_run: bool = False
    clean_answer: str = ""  # "" ask (or DontAskMeToClean), "resume" (--yes), "clean" (--clean)
    report_path: str = ""
    progress: str = "auto"  # "auto" | "bar" | "log" | "none"
    sqs_send: str = ""  # queue URL: queue the files instead of transferring them
    sqs_worker: str = ""  # queue URL: transfer the files queued there
    forever: bool = False  # a worker keeps polling an empty queue
    run_started: float = dataclasses.field(default_factory=time.monotonic)  # for the closing line's time


@dataclasses.dataclass
class Job:
    """The endpoints and the source of one configured job, shared by a normal run, the SQS sender and workers."""

    settings: Settings
    retry: RetryPolicy
    endpoints: Endpoints
    des_client: Any
    source: Source
    src_what: str
    des_what: str
    dest_prefix: str
    copy_from: str | None = None  # CopyMode's choice once made: the source bucket (server-side copy) or ''

    def check_source(self, exc: BaseException, what: str) -> None:
        """A failure to list the source as one line the user can act on, where it is one (UserError)."""
        if self.settings.job_type == "ALIOSS_TO_S3":
            check_oss_access(exc, what)
        check_access(exc, what)


def open_job(settings: Settings, stop: threading.Event) -> Job:
    retry = RetryPolicy(settings.max_retry, settings.retry_delay, stop)
    endpoints = Endpoints(settings)
    des_client = endpoints.client(settings.des_profile, "DesProfileName", settings.des_endpoint_url)
    source: Source
    if settings.job_type == "LOCAL_TO_S3":
        source = LocalSource(settings)
        src_what = f"SrcDir {settings.src_dir}"
    elif settings.job_type == "S3_TO_S3":
        src_client = endpoints.client(settings.src_profile, "SrcProfileName", settings.src_endpoint_url)
        source = S3Source(settings, src_client, retry)
        src_what = f"source s3://{settings.src_bucket} (profile {settings.src_profile})"
    else:
        oss_url = oss_endpoint_url(settings.ali_endpoint)
        if "://" not in settings.ali_endpoint:
            log.info("ali_endpoint %r has no scheme: using %s", settings.ali_endpoint, oss_url)
        source = S3Source(settings, endpoints.oss_client(), retry)
        src_what = f"source oss://{settings.ali_src_bucket} (ali_endpoint {oss_url})"
    des_what = f"destination s3://{settings.des_bucket} (profile {settings.des_profile})"
    if settings.job_type == "LOCAL_TO_S3":
        dest_prefix = key_prefix(settings)
        if dest_prefix != folder_prefix(settings.s3_prefix):
            log.warning("S3Prefix %r is written as %r (keys never start with '/' or hold '//' here)",
                        settings.s3_prefix, dest_prefix)  # fmt: skip
    else:
        dest_prefix = settings.s3_prefix  # destination keys equal source keys: the same prefix, as typed
    return Job(settings, retry, endpoints, des_client, source, src_what, des_what, dest_prefix)


def choose_copy(job: Job, sample: SourceFile | None) -> str:
    """CopyMode: the source bucket when S3 copies the parts itself (UploadPartCopy, CopyObject), '' when they stream
    through this machine.  "auto" copies server-side when both buckets are behind one endpoint and the destination's
    profile can read the source (a HeadObject of one source object with its credentials); "server" requires it;
    "stream" never tries.  Decided once, logged once."""
    s = job.settings
    if s.job_type != "S3_TO_S3" or s.copy_mode == "stream":
        if s.job_type == "S3_TO_S3":
            log.info("copy: streamed through this machine (CopyMode = 'stream')")
        return ""
    source = job.source
    assert isinstance(source, S3Source)
    why = ""
    if source.client.meta.endpoint_url != job.des_client.meta.endpoint_url:
        why = "the source and the destination are different endpoints (partitions, accounts or stores)"
    elif sample is not None:
        try:
            job.retry.call("HEAD the source with the destination's profile", lambda: job.des_client.head_object(
                Bucket=source.bucket, Key=sample.key, IfMatch=f'"{sample.etag}"'))  # fmt: skip
        except botocore.exceptions.ClientError as exc:
            why = f"the destination's profile cannot read the source ({error_code(exc) or 'refused'})"
    if why and s.copy_mode == "server":
        raise UserError(f"CopyMode = 'server' but {why}; grant the destination's profile s3:GetObject on the source "
                        f"bucket, or set CopyMode = 'auto' to stream")  # fmt: skip
    if why:
        log.info("copy: streamed through this machine (%s)", why)
        return ""
    log.info("copy: server-side, S3 copies every part itself (UploadPartCopy): no byte passes through this machine")
    return source.bucket


def decide_clean(uploads: list[UnfinishedUpload], job: Job, options: RunOptions,
                 notes: Callable[[], dict[str, str]]) -> bool:  # fmt: skip
    """CLEAN or resume: --clean / --yes, else the prompt.  ``notes`` gives source_notes, asked only when shown."""
    settings = job.settings
    if options.clean_answer:
        log.warning("%d unfinished multipart upload(s) under s3://%s/%s: %s%s", len(uploads), settings.des_bucket,
                    job.dest_prefix, "CLEAN (--clean)" if options.clean_answer == "clean" else "resuming (--yes)",
                    notes_summary(uploads, notes()))  # fmt: skip
        return options.clean_answer == "clean"
    if options.dry_run and not settings.dont_ask_me_to_clean:
        log.info("dry run: not asking about %d unfinished upload(s); showing what resuming would do", len(uploads))
        return False
    return ask_clean(uploads, settings, job.dest_prefix, notes())


def run_job(settings: Settings, stop: threading.Event, options: RunOptions = RunOptions()) -> int:
    """The pipeline, as the data flows: list (both sides as sorted streams) -> match -> plan -> move -> prove ->
    report.  The transfer starts with the first pages of the listings, never after them."""
    job = open_job(settings, stop)
    retry, des_client, source, dest_prefix = job.retry, job.des_client, job.source, job.dest_prefix
    log.info("job: %s", job_line(job))
    listings = open_listings(job)
    uploads = listings.uploads

    # CLEAN, as in the original: every unfinished upload under the prefix, this job's or not, so that the question
    # does not come back on the next run; each one whose key the source does not have is marked wherever it is
    # shown.  The source is asked once, and only if the uploads are shown.  Asked before any byte moves.
    notes = functools.cache(functools.partial(source_notes, job, uploads))
    clean = bool(uploads) and decide_clean(uploads, job, options, notes)
    copy_from = choose_copy(job, listings.first)
    tally = PlanTally()
    tasks = tally.counted(plan_stream(settings, listings.pairs, [] if clean else uploads, source))
    if options.dry_run:
        if settings.job_type == "S3_TO_S3":
            report.info("copy     %s", "server-side (S3 copies the parts itself)" if copy_from else
                        "streamed through this machine")  # fmt: skip
        print_dry_run(tasks, uploads if clean else [], des_client, settings, retry, source, bool(copy_from),
                      notes() if clean else {})  # fmt: skip
        return EXIT_OK
    started = time.monotonic()  # the transfer's time, not the time a person took to answer
    if clean:
        for u in uploads:
            note = notes().get(u.key, "")
            log.warning("CLEAN: aborting unfinished upload of %s (%s%s)", u.key, short_id(u.upload_id),
                        f"; {note}" if note else "")  # fmt: skip
            abort_upload(des_client, settings.des_bucket, u.key, u.upload_id, retry)

    progress = make_progress(options.progress)
    report_file = ReportWriter(options.report_path, settings, dest_prefix) if options.report_path else None
    outcome = Outcome(report_file)
    engine = Engine(settings, source, des_client, retry, stop, progress, copy_from)
    progress.begin()
    try:
        engine.run(tasks, outcome.record)
    finally:
        progress.close()
    if stop.is_set():
        raise KeyboardInterrupt
    outcome.retries = retry.retries
    compare_with_destination(job, outcome)
    seconds = time.monotonic() - started
    code = EXIT_FAILED if outcome.failed or outcome.missing or source.listing_errors else EXIT_OK
    outcome.left_alone = engine.left_alone
    print_summary(outcome, source.listing_errors, engine.progress.sent_bytes, seconds, code)
    if report_file is not None:
        report_file.finish(outcome, source.listing_errors, code, seconds, engine.progress.sent_bytes)
    if code == EXIT_OK:  # the original's closing line, which scripts look for; never printed over a failure
        report.info("%s", mission_line(settings, time.monotonic() - options.run_started))
    return code


@dataclasses.dataclass(frozen=True)
class Check:
    what: str  # what was tried, e.g. "list unfinished uploads"
    action: str  # the IAM permission it needs, and on what
    error: str = ""  # '' when it worked
    warning: str = ""  # not a permission, nothing to grant: what the store lacks, said but not counted as missing


def run_check(settings: Settings, stop: threading.Event) -> int:
    """--check: try each permission the job needs, once, before any transfer, and say which are missing.  The
    original's users met AccessDenied on ListMultipartUploads and CreateMultipartUpload mid-run; its own check wrote
    an access_test object and left it.  This one writes no object: its multipart upload is aborted, and what it HEADs
    and deletes is a key of its own that does not exist (check_destination)."""
    job = open_job(settings, stop)
    report.info("check: %s", job_line(job))
    checks = check_source(job) + check_destination(job)
    for c in checks:
        status, detail = ("MISSING", c.error) if c.error else ("WARNING", c.warning) if c.warning else ("ok", "")
        report.info("  %-8s %-28s %s%s", status, c.what, c.action, f": {detail}" if detail else "")
    missing = [c for c in checks if c.error]
    if not missing:
        report.info("check: every permission the job needs is there")
        return EXIT_OK
    report.info("check: %d missing; grant each to the profile named (or fix what is said), then run --check again",
                len(missing))  # fmt: skip
    return EXIT_USAGE


def _try(what: str, action: str, profile: str, request: Callable[[], object]) -> tuple[Check, Any]:
    try:
        return Check(what, action), request()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        code = error_code(exc)
        if code in ("AccessDenied", "AllAccessDisabled"):
            return Check(what, action, f"{code} for profile {profile}"), None
        if code in ("403", "Forbidden"):  # a HEAD's refusal: no body, no reason
            return Check(what, action, f"refused (HTTP 403) for profile {profile}"), None
        return Check(what, action, f"{describe_error(exc)}{fix_hint(exc)} (profile {profile})"), None


def arn(client, bucket: str, key: str = "") -> str:
    partition = getattr(client.meta, "partition", "aws") or "aws"
    return f"arn:{partition}:s3:::{bucket}" + (f"/{key}*" if key else "")


def check_source(job: Job) -> list[Check]:
    s = job.settings
    if s.job_type == "LOCAL_TO_S3":
        root = os.path.abspath(s.src_dir)
        try:
            with os.scandir(root) as entries:
                next(entries, None)
            return [Check("read SrcDir", root)]
        except OSError as exc:
            return [Check("read SrcDir", root, f"{exc.strerror}; give this user read and execute permission")]
    source = job.source
    assert isinstance(source, S3Source)
    client, bucket, prefix = source.client, source.bucket, source.list_prefix
    profile = s.src_profile if s.job_type == "S3_TO_S3" else "of ali_access_key_id"
    listed, page = _try("list the source", f"s3:ListBucket on {arn(client, bucket)}", profile,
                        lambda: client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))  # fmt: skip
    read_action = f"s3:GetObject on {arn(client, bucket, prefix)}"
    objects = (page or {}).get("Contents", [])
    if listed.error:
        return [listed, Check("read an object", read_action, "not tried: the source cannot be listed")]
    if not objects:
        return [listed, Check("read an object", read_action + " (nothing under the prefix to try)")]
    key = objects[0]["Key"]
    read, _ = _try("read an object", read_action, profile,
                   lambda: client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read())  # fmt: skip
    return [listed, read]


def check_destination(job: Job) -> list[Check]:
    """Every action a run may ask of the destination, each tried once on a key of the check's own that does not
    exist and never will: listings, HeadObject (a run HEADs an object to judge unfinished uploads of a complete one,
    after a lost COMPLETE answer, and in fleet workers: 404 means allowed, 403 refused), a multipart upload created,
    given a part, listed and aborted, and DeleteObject (a run deletes an object whose proof failed; deleting a key
    that does not exist is answered 204 and deletes nothing, though a versioned bucket records a delete marker)."""
    s, client, bucket = job.settings, job.des_client, job.settings.des_bucket
    profile = s.des_profile
    key = f"{job.dest_prefix}s3_upload-check-{os.urandom(6).hex()}"  # a key of its own, never one of the job's
    object_arn = arn(client, bucket, job.dest_prefix)

    def head_missing_key() -> None:
        try:
            client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in NOT_FOUND_CODES:
                raise

    checks = [
        _try("list the destination", f"s3:ListBucket on {arn(client, bucket)}", profile,
             lambda: client.list_objects_v2(Bucket=bucket, Prefix=job.dest_prefix, MaxKeys=1))[0],
        _try("list unfinished uploads", f"s3:ListBucketMultipartUploads on {arn(client, bucket)}", profile,
             lambda: client.list_multipart_uploads(Bucket=bucket, Prefix=job.dest_prefix, MaxUploads=1))[0],
        _try("HEAD an object", f"s3:GetObject on {object_arn}", profile, head_missing_key)[0],
    ]  # fmt: skip
    put_action = f"s3:PutObject on {object_arn}"
    if s.server_side_encryption == "aws:kms":
        put_action += " and kms:GenerateDataKey, kms:Decrypt on the key"
    if s.acl:
        put_action += " and s3:PutObjectAcl"
    args = {"StorageClass": s.storage_class}
    args.update({name: value for name, value in (("ServerSideEncryption", s.server_side_encryption),
                 ("SSEKMSKeyId", s.sse_kms_key_id), ("ACL", s.acl)) if value})  # fmt: skip
    created, answer = _try("create a multipart upload", put_action, profile,
                           lambda: client.create_multipart_upload(Bucket=bucket, Key=key, **args))  # fmt: skip
    checks.append(created)
    if not created.error:
        checks.append(check_conditional_writes(client, bucket, key))
    deleted = _try("delete an object", f"s3:DeleteObject on {object_arn}", profile,
                   lambda: client.delete_object(Bucket=bucket, Key=key))[0]  # fmt: skip
    if created.error:
        return [*checks, deleted]
    upload_id = answer["UploadId"]
    body = b"s3_upload --check"
    md5_b64 = md5_of(body)[1]
    checks.append(_try("upload a part", put_action, profile, lambda: client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body, ContentMD5=md5_b64))[0])  # fmt: skip
    checks.append(_try("list its parts", f"s3:ListMultipartUploadParts on {object_arn}",
                       profile, lambda: client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id))[0])  # fmt: skip
    aborted = _try("abort it", f"s3:AbortMultipartUpload on {object_arn}", profile,
                   lambda: client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))[0]  # fmt: skip
    if aborted.error:
        left = f"the check's upload of {key} is left: abort it once the permission is granted, or answer CLEAN"
        aborted = dataclasses.replace(aborted, error=f"{aborted.error} ({left})")
    checks.append(aborted)
    return [*checks, deleted]


def check_conditional_writes(client, bucket: str, key: str) -> Check:
    """Whether the store checks If-None-Match / If-Match, which keep a run from overwriting an object someone else
    writes meanwhile: a store without them is said, not counted as missing (nothing to grant)."""
    what, action = "write conditionally", "If-None-Match / If-Match on PutObject and CompleteMultipartUpload"
    verdict, why = probe_conditional_writes(client, bucket, key)
    if verdict == "checked":
        return Check(what, action)
    lacks = {"refused": "the store refuses them", "ignored": "the store ignores them",
             "unknown": "not known"}[verdict]  # fmt: skip
    return Check(what, action, warning=f"{lacks} ({why}); an object written by someone else during a run may be "
                 f"overwritten")  # fmt: skip


# --audit: every destination object proven equal to its source without downloading it, and nothing written.  What S3
# keeps of an object (a full-object checksum, the ETag in the object's own part layout) is recomputed from the source's
# bytes, read once; S3_TO_S3 first compares what both sides keep, and reads the source only when that cannot decide.


AUDIT_CHECKSUMS: dict[str, Callable[[bytes, int], int]] = {"CRC32": zlib.crc32}  # full-object checksums made here


PROOF_AUDIT_MD5 = "MD5 (single-part ETag)"


PROOF_AUDIT_PARTS = "ETag in the object's own part layout"


PROOF_AUDIT_BOTH_ETAGS = "equal ETags kept by both sides"


SOURCE_CHANGED_IN_AUDIT = "the source changed during the audit (deleted, replaced or rewritten since it was listed); " \
    "audit again"  # fmt: skip


class AuditVerdict(NamedTuple):
    status: str  # "proven" | "differs" | "missing" | "unproven"
    how: str  # proven: by what; otherwise why, for the person


class StoredProof(NamedTuple):
    """What one object keeps that its source's bytes can be checked against: a full-object checksum made here, or its
    MD5-based ETag with the part layout it was built in (None: one part)."""

    algorithm: str  # "CRC32", or "" for the ETag
    value: str  # the checksum (base64), or the ETag
    layout: ChunkPlan | None = None


def stored_proof(head: dict, size: int, head_part: Callable[[int], dict]) -> StoredProof | str:
    """What a HeadObject (with ChecksumMode) of the object offers to prove its bytes, or why nothing does: a
    full-object checksum computable here first (a composite one, of parts, is not), else the ETag (not with KMS or
    SSE-C), for a multipart object with its own part sizes."""
    checksum = full_object_checksum(head)
    if checksum and checksum[0] in AUDIT_CHECKSUMS:
        return StoredProof(*checksum)
    etag = str(head.get("ETag", "")).strip('"').lower()
    if not etag_is_md5(head):
        return "its ETag is not an MD5 (KMS or SSE-C) and it keeps no CRC32 of the whole object"
    count = etag_part_count(etag)
    if count == 0:
        return StoredProof("", etag)
    if count < 0:
        return f"its ETag {etag} is neither an MD5 nor a multipart ETag, and it keeps no CRC32 of the whole object"
    layout = part_layout(head_part, size, count)
    if layout is None:
        return f"its {count} part sizes are unknown (HeadObject with PartNumber did not tell them)"
    return StoredProof("", etag, layout)


def compute_proof(proof: StoredProof, read: Callable[[int, int], bytes], size: int, piece: int,
                  progress: Callable[[int], None]) -> str:  # fmt: skip
    """The value ``proof`` holds, computed from the source's bytes read once, ``piece`` bytes at a time (never more in
    memory): its CRC32 (base64 of 4 big-endian bytes), its MD5, or the ETag of its parts in the layout given."""
    ranges = list(proof.layout.parts()) if proof.layout is not None else [(1, 0, size)]
    crc, digests = 0, []
    for _number, offset, length in ranges:
        md5 = hashlib.md5()
        for start in range(offset, offset + length, piece):
            data = read(start, min(piece, offset + length - start))
            if proof.algorithm:
                crc = AUDIT_CHECKSUMS[proof.algorithm](data, crc)
            else:
                md5.update(data)
            progress(len(data))
        digests.append(md5.digest())
    if proof.algorithm:
        return crc32_b64(crc)
    return multipart_etag(digests) if proof.layout is not None else digests[0].hex()


def proof_name(proof: StoredProof) -> str:
    if proof.algorithm:
        return f"full-object {proof.algorithm}"
    return PROOF_AUDIT_PARTS if proof.layout is not None else PROOF_AUDIT_MD5


class Auditor:
    """One object at a time per worker: its verdict, from HeadObjects and, where needed, one read of its source."""

    def __init__(self, settings: Settings, source: Source, des_client, retry: RetryPolicy, progress: Progress):
        self.settings, self.source, self.des_client, self.retry, self.progress = (settings, source, des_client, retry,
                                                                                  progress)  # fmt: skip
        self.piece = min(settings.chunk_size, 8 * MiB)

    def head_destination(self, key: str, **kwargs) -> dict | None:
        return head_destination(self.des_client, self.settings.des_bucket, key, self.retry, "to audit the object",
                                **kwargs)  # fmt: skip

    def verdict(self, f: SourceFile) -> AuditVerdict:
        """The object of f's key (listed with f's size) proven equal to f, or why not."""
        head = self.head_destination(f.key, ChecksumMode="ENABLED")
        if head is None:
            return AuditVerdict("missing", "deleted since it was listed")
        if int(head.get("ContentLength", -1)) != f.size:
            return AuditVerdict("differs", f"its size is now {head.get('ContentLength')} bytes, the source's {f.size}")
        if self.source.kind == "s3":
            decided = self.from_both_sides(f, head)
            if decided is not None:
                return decided
        stored = stored_proof(head, f.size, lambda n: self.head_destination(f.key, PartNumber=n) or {})
        if isinstance(stored, str):
            return AuditVerdict("unproven", stored)
        return self.by_reading(f, stored)

    def by_reading(self, f: SourceFile, stored: StoredProof) -> AuditVerdict:
        """Read the source once and compute what the destination keeps."""

        def read(offset: int, length: int) -> bytes:
            return self.retry.call(f"READ {f.key}", functools.partial(self.source.read, f, offset, length),
                                   paced=False)  # fmt: skip

        try:
            computed = compute_proof(stored, read, f.size, self.piece,
                                     lambda n: self.progress.part_done(f.key, n))  # fmt: skip
            changed = self.source.current(f).version != f.version
        except (SourceChanged, FileNotFoundError):
            changed = True
        if changed:
            return AuditVerdict("unproven", SOURCE_CHANGED_IN_AUDIT)
        if computed == stored.value:
            return AuditVerdict("proven", proof_name(stored))
        what = stored.algorithm or "ETag"
        return AuditVerdict("differs", f"its {what} is {stored.value}, the source's bytes give {computed}")

    def from_both_sides(self, f: SourceFile, head: dict) -> AuditVerdict | None:
        """S3_TO_S3: what both sides keep, compared without reading: a full-object checksum of one algorithm, or
        ETags (MD5-based, in one part layout).  None when that cannot decide: the source is then read."""
        source = self.source
        assert isinstance(source, S3Source)
        try:
            src_head = source._head(f, **({"ChecksumMode": "ENABLED"} if source.asks_checksums else {}))
        except SourceChanged:
            return AuditVerdict("unproven", SOURCE_CHANGED_IN_AUDIT)
        ours, theirs = full_object_checksum(src_head), full_object_checksum(head)
        if ours and theirs and ours[0] == theirs[0]:
            if ours[1] == theirs[1]:
                return AuditVerdict("proven", f"full-object {ours[0]} kept by both sides")
            return AuditVerdict("differs", f"its {theirs[0]} is {theirs[1]}, the source's {ours[1]}")
        if not (etag_is_md5(src_head) and etag_is_md5(head)):
            return None
        src_etag, dst_etag = f.etag.lower(), str(head.get("ETag", "")).strip('"').lower()
        count = etag_part_count(src_etag)
        if count < 0 or count != etag_part_count(dst_etag) or (count and not source.multipart_etags_comparable):
            return None  # other part layouts (or another formula): the ETags say nothing
        if src_etag == dst_etag:
            return AuditVerdict("proven", PROOF_AUDIT_BOTH_ETAGS)
        if count == 0:
            return AuditVerdict("differs", f"its ETag (MD5) is {dst_etag}, the source's {src_etag}")
        dst_layout = part_layout(lambda n: self.head_destination(f.key, PartNumber=n) or {}, f.size, count)
        src_layout = part_layout(lambda n: source._head(f, PartNumber=n), f.size, count)
        if dst_layout is not None and dst_layout == src_layout:
            return AuditVerdict("differs", f"its ETag is {dst_etag}, the source's {src_etag}, in the same part "
                                           f"layout")  # fmt: skip
        return None


class AuditTally:
    """The audit's counts, and one line per object that is not proven, printed as it is found (never kept)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.proofs: collections.Counter[str] = collections.Counter()
        self.counts = dict.fromkeys(("differs", "missing", "unproven", "ignored", "present"), 0)
        self.extra = -1  # destination objects the source does not have (-1: not counted)

    def add(self, f: SourceFile, v: AuditVerdict) -> None:
        with self._lock:
            if v.status == "proven":
                self.proofs[v.how] += 1
                return
            self.counts[v.status] += 1
        label = {"differs": "DIFFERS", "missing": "MISSING", "unproven": "UNPROVEN"}[v.status]
        if tqdm is not None and _active_bar is not None:
            with tqdm.tqdm.external_write_mode():
                report.info("%-8s %s: %s", label, f.key, v.how)
        else:
            report.info("%-8s %s: %s", label, f.key, v.how)

    @property
    def proven(self) -> int:
        return sum(self.proofs.values())

    def code(self, listing_errors: Tally) -> int:
        bad = self.counts["differs"] + self.counts["missing"] + self.counts["unproven"] + len(listing_errors)
        return EXIT_FAILED if bad else EXIT_OK

    def summary(self) -> str:
        n = self.counts
        how = ", ".join(f"{count} by {proof}" for proof, count in sorted(self.proofs.items()))
        line = (f"audit: {self.proven} proven equal{f' ({how})' if how else ''}, {n['differs']} differ, "
                f"{n['missing']} missing, {n['unproven']} unproven")  # fmt: skip
        if n["ignored"]:
            line += f"; {n['ignored']} not audited (smaller than ChunkSize, IgnoreSmallFile)"
        if self.extra > 0:
            line += f"; {self.extra} object(s) at the destination that the source does not have (not errors)"
        return line


AUDIT_EXIT_MEANINGS = {
    EXIT_OK: "every destination object is proven equal to its source",
    EXIT_FAILED: (
        "some objects differ, are missing or could not be proven, or the source could not be listed in full "
        "(named above)"
    ),
}


def count_destination(job: Job) -> int:
    """How many objects the destination holds under the job's prefix (a listing of its own: the march skips the
    destination's directories the source does not have)."""
    return sum(1 for _ in iter_objects(job.des_client, job.settings.des_bucket, job.dest_prefix, job.retry))


def run_audit(settings: Settings, stop: threading.Event, options: RunOptions) -> int:
    """--audit: prove every destination object of the job equal to its source, without downloading it, and write
    nothing (no PUT, DELETE or abort).  The listings are the plan's (streamed, matched in lock step); a file the plan
    would ignore (IgnoreSmallFile) is not audited.  Objects are audited MaxParallelFile x MaxThread at once, each
    read ``min(ChunkSize, 8 MiB)`` at a time: memory stays within the transfer's own budget."""
    job = open_job(settings, stop)
    report.info("audit: %s", job_line(job))
    listings = open_listings(job)
    tally = AuditTally()
    progress = make_progress(options.progress)
    auditor = Auditor(settings, job.source, job.des_client, job.retry, progress)
    workers = settings.max_parallel_file * settings.max_thread
    room = threading.BoundedSemaphore(2 * workers)  # objects waiting for a worker: the listing never runs far ahead
    counting = None
    started = time.monotonic()

    def audit_one(f: SourceFile) -> None:
        try:
            progress.file_started(f.key, 1)
            verdict = auditor.verdict(f)
        except Interrupted:
            return
        except Exception as exc:  # this object unproven (and why); the audit goes on
            detail = str(exc) if isinstance(exc, FileFailed) else describe_error(exc)
            verdict = AuditVerdict("unproven", detail)
        finally:
            room.release()
        if verdict.status == "proven" and verdict.how.endswith("kept by both sides"):
            progress.part_done(f.key, f.size, "found")
        progress.file_finished(f.key)
        tally.add(f, verdict)

    progress.begin()
    with concurrent.futures.ThreadPoolExecutor(workers + 1, thread_name_prefix="audit") as pool:
        try:
            if job.source.top() is not None:
                counting = pool.submit(count_destination, job)
            for f, there in listings.pairs:
                if stop.is_set():
                    break
                if there is not None:
                    tally.counts["present"] += 1
                if _ignored(settings, f):
                    tally.counts["ignored"] += 1
                elif there is None:
                    tally.add(f, AuditVerdict("missing", f"not at the destination ({human_bytes(f.size)})"))
                elif there.size != f.size:
                    tally.add(f, AuditVerdict("differs", f"its size is {there.size} bytes, the source's {f.size}"))
                else:
                    progress.add(FileTask(f, "audit", ChunkPlan(f.size, max(f.size, 1))))
                    room.acquire()
                    pool.submit(audit_one, f)
            progress.listed()
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True)
            progress.close()
    if stop.is_set():
        raise KeyboardInterrupt
    if counting is not None:
        tally.extra = max(counting.result() - tally.counts["present"], 0)
    for e in job.source.listing_errors:
        report.info("FAILED   to list: %s", e)
    code = tally.code(job.source.listing_errors)
    report.info("%s; %s read in %.1fs, %d retries", tally.summary(), human_bytes(progress.sent_bytes),
                time.monotonic() - started, job.retry.retries)  # fmt: skip
    report.info("exit code %d: %s", code, AUDIT_EXIT_MEANINGS[code])
    return code


def check_report_path(path: str) -> None:
    """--report is checked before anything is transferred: a typo must not cost the report of a long run."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"--report {path} is a directory; give a file name, e.g. {os.path.join(path, 'report.json')}")
    if not os.path.isdir(directory):
        raise UserError(f"--report {path}: the directory {directory} does not exist; create it or choose another path")
    if not os.access(directory, os.W_OK):
        raise UserError(f"--report {path}: this user cannot write in {directory}; choose another path")


SIZE_UNITS = {"": 1, "b": 1, "k": KiB, "kb": KiB, "kib": KiB, "m": MiB, "mb": MiB, "mib": MiB, "g": GiB, "gb": GiB,
              "gib": GiB}  # fmt: skip


def parse_size(text: str) -> int:
    """'64MiB', '64MB', '64m', '1GiB', '5242880' -> bytes.  Like the AWS CLI, MB means MiB."""
    number = text.strip().rstrip("sS/").lower()
    digits = number.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = number[len(digits) :]
    if unit not in SIZE_UNITS or not digits:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 64MiB, 512KiB or 1GiB")
    try:
        value = float(digits)
        if not math.isfinite(value) or value < 0:
            raise ValueError(value)
        return int(value * SIZE_UNITS[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 64MiB, 512KiB or 1GiB") from None


# Flags that override one config value for one run: (flag, config name, type, help).
OVERRIDE_FLAGS = (
    ("--job-type", "JobType", str, "LOCAL_TO_S3, S3_TO_S3 or ALIOSS_TO_S3"),
    ("--src-dir", "SrcDir", str, "local directory to upload (LOCAL_TO_S3)"),
    ("--file", "SrcFileIndex", str, "one file (name relative to SrcDir / S3Prefix), or '*' for all"),
    ("--prefix", "S3Prefix", str, "S3Prefix: destination prefix (LOCAL_TO_S3) or source prefix (S3_TO_S3)"),
    ("--des-bucket", "DesBucket", str, "destination bucket"),
    ("--des-profile", "DesProfileName", str, "profile for the destination"),
    ("--src-bucket", "SrcBucket", str, "source bucket (S3_TO_S3)"),
    ("--src-profile", "SrcProfileName", str, "profile for the source (S3_TO_S3)"),
    ("--chunk-size", "ChunkSize", parse_size, "part size with units, e.g. 64MiB (5MiB to 5GiB)"),
    ("--threads", "MaxThread", int, "parts in flight per file"),
    ("--parallel-files", "MaxParallelFile", int, "files in flight"),
    ("--max-retry", "MaxRetry", int, "retries per request"),
    ("--storage-class", "StorageClass", str, "storage class of the objects, e.g. STANDARD_IA"),
    ("--max-bandwidth", "MaxBandwidth", parse_size, "upload bandwidth cap per second, e.g. 20MiB (0 = none)"),
    ("--des-endpoint-url", "DesEndpointURL", str, "endpoint of an S3-compatible destination"),
    ("--src-endpoint-url", "SrcEndpointURL", str, "endpoint of an S3-compatible source"),
    ("--log-level", "LoggingLevel", str, "WARNING, INFO or DEBUG"),
    ("--skip-check", "SkipCheck", str, "size: a same-size object skips its file; checksum: only one proven equal"),
)


def default_config_path() -> str:
    """s3_upload_config.py next to the script (the original's behaviour), else in the current directory (for the
    installed s3-upload command)."""
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "s3_upload_config.py")
    return beside if os.path.isfile(beside) else os.path.abspath("s3_upload_config.py")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="s3_upload",
        allow_abbrev=False,  # a flag is spelt out: --verify must not silently mean --verify-md5
        description="Multi-threaded, resumable, MD5-verified upload of large files to Amazon S3 (LOCAL_TO_S3) or "
        "between buckets of two accounts (S3_TO_S3) or from Aliyun OSS (ALIOSS_TO_S3). Settings come from the config "
        "module (s3_upload_config.py); the flags below override single values for one run.",
        epilog="Exit codes: 0 every file is at the destination; 1 some file failed (rerun to resume); 2 bad config, "
        "credentials or access; 130 interrupted. With --audit: 0 every object is proven equal to its source, 1 some "
        "object differs, is missing or is unproven.",
    )
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config module (default: s3_upload_config.py next to this script, else in the current "
                             "directory)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="list, compare and print what would be uploaded, resumed, restarted, skipped and "
                             "cleaned, then exit without writing anything")  # fmt: skip
    answer = parser.add_mutually_exclusive_group()
    answer.add_argument("--yes", dest="clean_answer", action="store_const", const="resume",
                        help="do not ask about unfinished uploads: resume them")  # fmt: skip
    answer.add_argument("--clean", dest="clean_answer", action="store_const", const="clean",
                        help="do not ask about unfinished uploads: abort every one under S3Prefix and restart "
                             "those files (the CLEAN answer)")  # fmt: skip
    parser.add_argument("--report", metavar="PATH", default="",
                        help="write a JSON report: per file key, size, status, parts, ETag, retries")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="check the permissions the job needs (list, read, list uploads, create, upload to, "
                             "list and abort an upload of its own), one line each; writes no object")  # fmt: skip
    parser.add_argument("--audit", action="store_true",
                        help="prove every destination object of the job equal to its source without downloading it "
                             "(checksums and ETags S3 keeps, recomputed from the source read once); writes nothing; "
                             "one line per object that differs, is missing or unproven; exit 0 when all are proven, "
                             "1 otherwise")  # fmt: skip
    parser.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                        help="live bar on a terminal, a log line every few seconds otherwise (auto)")  # fmt: skip
    fleet = parser.add_argument_group("fleet mode: one SQS message per file, many workers (see README)")
    role = fleet.add_mutually_exclusive_group()
    role.add_argument("--sqs-send", metavar="QUEUE_URL", default="",
                      help="list and diff once, queue one message per file to transfer, then exit "
                           "(with --dry-run: print the messages)")  # fmt: skip
    role.add_argument("--sqs-worker", metavar="QUEUE_URL", default="",
                      help="take files from the queue and transfer them; exits after SQSIdleSeconds of an empty "
                           "queue")  # fmt: skip
    fleet.add_argument("--forever", action="store_true", help="with --sqs-worker: never exit on an empty queue")
    fleet.add_argument("--idle-exit", dest="set_SQSIdleSeconds", type=float, metavar="SECONDS",
                       help="with --sqs-worker: exit after the queue was empty this long (SQSIdleSeconds)")  # fmt: skip
    overrides = parser.add_argument_group("override one config value for this run")
    for flag, name, kind, text in OVERRIDE_FLAGS:
        overrides.add_argument(flag, dest=f"set_{name}", type=kind, metavar=name.upper(), help=f"{text} ({name})")
    overrides.add_argument("--verify-md5", dest="set_ifVerifyMD5", action="store_const", const=True,
                           help="re-read each source after upload and compare ETags (ifVerifyMD5)")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.audit:  # an audit writes nothing and transfers nothing: a flag that would is a mistake, not ignored
        clash = [flag for flag, given in (("--sqs-send", args.sqs_send), ("--sqs-worker", args.sqs_worker),
                                          ("--clean", args.clean_answer == "clean"), ("--yes", args.clean_answer),
                                          ("--dry-run", args.dry_run), ("--check", args.check),
                                          ("--report", args.report)) if given]  # fmt: skip
        if clash:
            parser.error(f"--audit writes nothing: it cannot be combined with {clash[0]}")
    return args


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """Defaults < config module < command-line flags, validated once.  Returns the settings and a line for each
    value a flag changed, so that a flag and the config never disagree silently."""
    values = load_config_module(args.config or default_config_path())
    changed = []
    for name in CONFIG_OPTIONS:
        flag_value = getattr(args, f"set_{name}", None)
        if flag_value is None:
            continue
        if name in values and values[name] != flag_value:
            changed.append(f"{name} = {flag_value!r} from the command line (the config says {values[name]!r})")
        values[name] = flag_value
    return settings_from_values(values), changed


def log_effective_settings(settings: Settings, changed: list[str]) -> None:
    names = {field: name for name, (field, _) in CONFIG_OPTIONS.items()}

    def value(field: str) -> str:
        if names[field] in SECRET_OPTIONS:
            return "'***'" if getattr(settings, field) else "''"
        return repr(getattr(settings, field))

    shown = ", ".join(f"{names[f.name]}={value(f.name)}" for f in dataclasses.fields(settings))
    log.info("s3_upload %s settings: %s", __version__, shown, extra=FILE_ONLY)
    for line in changed:
        log.warning("%s", line)


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> int:
    """Run one job; returns the exit code.  User errors are one line on stderr, never a traceback."""
    run_started = time.monotonic()
    args = parse_args(argv)
    stop = stop or threading.Event()
    try:
        settings, changed = resolve_settings(args)
        if args.report:
            check_report_path(args.report)
    except UserError as exc:
        print(f"s3_upload: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        log_path = setup_logging(settings)
    except OSError as exc:
        print(
            f"s3_upload: error: cannot write the log in {settings.log_dir} ({exc.strerror or exc}); "
            f"run from a writable directory or set LogDir",
            file=sys.stderr,
        )
        return EXIT_USAGE
    options = RunOptions(dry_run=args.dry_run, clean_answer=args.clean_answer or "", report_path=args.report,
                         progress="none" if args.dry_run else args.progress, sqs_send=args.sqs_send,
                         sqs_worker=args.sqs_worker, forever=args.forever, run_started=run_started)  # fmt: skip
    try:
        report.info("Logging to file: %s", os.path.abspath(log_path))  # as the original printed it
        log_effective_settings(settings, changed)
        if args.check:
            return run_check(settings, stop)
        if args.audit:
            return run_audit(settings, stop, options)
        if options.sqs_send:
            return send_to_queue(settings, stop, options, options.sqs_send)
        if options.sqs_worker:
            return run_worker(settings, stop, options, options.sqs_worker)
        return run_job(settings, stop, options)
    except UserError as exc:
        log.error("s3_upload: error: %s", exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        stop.set()
        log.warning("interrupted: finished parts stay on S3; run the same command again to resume")
        return EXIT_INTERRUPTED
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, FileFailed) as exc:
        detail = str(exc) if isinstance(exc, FileFailed) else describe_error(exc)
        log.error("s3_upload: error: %s; the run stopped, rerun to resume", detail)
        return EXIT_FAILED
    finally:
        close_logging()


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a fleet scaling in, systemd) stops like Ctrl-C: S3 keeps what is done


def cli() -> None:
    """The ``s3-upload`` command (pyproject.toml) and ``python3 s3_upload.py``: run, then exit with the code."""
    signal.signal(signal.SIGTERM, _terminate)
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if code == EXIT_INTERRUPTED:
        os._exit(code)  # threads still blocked in a request after Ctrl-C would delay a normal exit
    sys.exit(code)


# ----------------------------------------------------------------------------------------------------------------------
# 10. Fleet mode: a sender queues one SQS message per file (per range of parts for a big file); workers on many
#    machines run each through the same engine.  S3 stays the only state, so a worker that dies mid-file leaves a
#    multipart upload the next worker resumes.
# ----------------------------------------------------------------------------------------------------------------------


MESSAGE_VERSION = 1  # one whole file
RANGE_MESSAGE_VERSION = 2  # a range of the parts of one upload of a big file


SQS_BATCH = 10  # SendMessageBatch takes at most 10 messages
SENDER_BATCHES = 16  # SendMessageBatch requests in flight at once: queuing must never be what limits the fleet


def file_message(settings: Settings, f: SourceFile) -> dict:
    """One queued file: where it is, where it goes, and what it looked like when it was listed."""
    return {
        "v": MESSAGE_VERSION,
        "job_type": settings.job_type,
        "src_bucket": source_bucket(settings),
        "src_key_or_path": f.path if settings.job_type == "LOCAL_TO_S3" else f.key,
        "des_bucket": settings.des_bucket,
        "key": f.key,
        "size": f.size,
        "mtime": f.mtime,
        "src_etag": f.etag,
    }


def range_messages(settings: Settings, f: SourceFile, upload_id: str, part_count: int) -> Iterator[dict]:
    """A big file as messages of SQSPartsPerMessage parts each, all of one upload (made by the sender)."""
    step = settings.sqs_parts_per_message
    for first in range(1, part_count + 1, step):
        message = file_message(settings, f)
        message.update(v=RANGE_MESSAGE_VERSION, upload_id=upload_id, parts=[first, min(part_count, first + step - 1)],
                       part_count=part_count)  # fmt: skip
        yield message


class QueuedWork(NamedTuple):
    """What a worker takes from a message: a key of its job, and for a range message the upload and its parts."""

    key: str
    upload_id: str = ""
    parts: tuple[int, int] | None = None


def parse_message(settings: Settings, body: str) -> QueuedWork:
    """Which file a message names: only its key (and, for a range, the upload and part numbers) is taken, and only if
    the message is for this worker's job.  Size, mtime, ETag and path in it are for people; the worker reads the
    file's state from the source itself, and proves a range's upload is for that state by its marker.  A message this
    worker cannot serve is poison: it is left in the queue, and after the queue's maxReceiveCount it goes to the
    dead-letter queue."""
    try:
        m = json.loads(body)
        if m.get("v") not in (MESSAGE_VERSION, RANGE_MESSAGE_VERSION):
            raise ValueError(f"unknown message version {m.get('v')!r}")
        expected = (settings.job_type, settings.des_bucket, source_bucket(settings))
        if (m["job_type"], m["des_bucket"], m["src_bucket"]) != expected:
            raise ValueError("it belongs to another job (JobType or buckets differ from this worker's config)")
        key = m["key"]
        if not isinstance(key, str) or not key:
            raise ValueError("it names no key")
        if m["v"] == MESSAGE_VERSION:
            return QueuedWork(key)
        upload_id, parts = m["upload_id"], m["parts"]
        if not isinstance(upload_id, str) or not 0 < len(upload_id) <= 1024 or not upload_id.isprintable():
            raise ValueError("its upload_id is not an upload ID")
        if not (isinstance(parts, list) and len(parts) == 2 and all(type(n) is int for n in parts)
                and 1 <= parts[0] <= parts[1] <= MAX_DATA_PARTS):  # fmt: skip
            raise ValueError(f"its parts {parts!r} are not a range of part numbers (first, last) in 1-{MAX_DATA_PARTS}")
        return QueuedWork(key, upload_id, (parts[0], parts[1]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FileFailed(f"unusable message: {exc}") from None


class Heartbeat:
    """Keeps a message invisible to other workers while this one works on it (ChangeMessageVisibility every third
    of the visibility timeout)."""

    def __init__(self, sqs, queue_url: str, receipt: str, visibility: int, retry: RetryPolicy):
        self.sqs, self.queue_url, self.receipt, self.visibility, self.retry = sqs, queue_url, receipt, visibility, retry
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(max(self.visibility / 3, 0.5)):
            try:
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=self.receipt,
                                                   VisibilityTimeout=self.visibility)  # fmt: skip
            except Exception as exc:  # a missed beat only risks a duplicate, which S3 makes harmless
                log.warning("SQS heartbeat failed: %s", describe_error(exc))
                if error_code(exc) == "ReceiptHandleIsInvalid":
                    return  # the message was handed on: nothing left to keep invisible

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join(timeout=5)


QUEUE_MISSING_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"})


def open_queue(job: Job, queue_url: str):
    """The SQS client, once the queue is known to exist and be reachable: a wrong URL is one line, exit 2."""
    if not queue_url.startswith(("http://", "https://")):
        raise UserError(f"queue URL {queue_url!r} must start with https:// (e.g. https://sqs.REGION.amazonaws.com/"
                        f"ACCOUNT/NAME)")  # fmt: skip
    sqs = job.endpoints.sqs_client()
    try:
        answer = job.retry.call("SQS queue", functools.partial(sqs.get_queue_attributes, QueueUrl=queue_url,
                                                               AttributeNames=["VisibilityTimeout"]))  # fmt: skip
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in QUEUE_MISSING_CODES:
            raise UserError(f"queue {queue_url} does not exist; create it (see README) or fix the URL") from None
        if code in CREDENTIAL_ERROR_CODES or "AccessDenied" in code:
            raise UserError(f"queue {queue_url}: {code}; give the SQS profile (SQSProfileName) access to it") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        answer = f"HTTP {status}" if code in ("", str(status)) else f"{code} (HTTP {status})"  # "403": no code in it
        raise UserError(not_sqs(queue_url, sqs, answer)) from None
    except botocore.exceptions.EndpointConnectionError:
        raise UserError(f"queue {queue_url}: cannot connect; check the URL and SQSEndpointURL") from None
    except botocore.parsers.ResponseParserError:
        raise UserError(not_sqs(queue_url, sqs, "something botocore cannot read")) from None
    if "VisibilityTimeout" not in answer.get("Attributes", {}):  # a 200 from anything else: sends would go nowhere
        raise UserError(not_sqs(queue_url, sqs, "without the queue's attributes"))
    return sqs


def not_sqs(queue_url: str, sqs, answer: str) -> str:
    """The first request to the queue got an answer SQS does not give (an S3 store's XML error, say): the endpoint
    is not the queue's.  The answer's body is not repeated: it can be a page of XML."""
    return (
        f"queue {queue_url}: {sqs.meta.endpoint_url} answered {answer}, which is not SQS's answer; set "
        f"SQSEndpointURL to the queue's SQS endpoint, or SQSProfileName to a profile for SQS"
    )


def send_to_queue(settings: Settings, stop: threading.Event, options: RunOptions, queue_url: str) -> int:
    """--sqs-send: list and diff once, exactly as a run decides, and queue the files to transfer as the listing goes:
    one message per file, or for a file of more than SQSPartsPerMessage parts, its upload made (or joined) here and
    one message per range of parts.  Batches of 10 go out in parallel (SENDER_BATCHES at once)."""
    job = open_job(settings, stop)
    sqs = None if options.dry_run else open_queue(job, queue_url)
    listings = open_listings(job)
    tally = PlanTally()
    tasks = tally.counted(plan_stream(settings, listings.pairs, listings.uploads, job.source))
    engine = Engine(settings, job.source, job.des_client, job.retry, stop)  # makes the uploads of big files
    files = queued = queued_bytes = 0
    failed: list[str] = []

    def to_send() -> Iterator[FileTask]:
        for t in tasks:
            if t.action == "skip" or (t.confirm and confirmed_same(t.src, job.source, head_of(
                    job.des_client, settings.des_bucket, t.src.key, job.retry))):  # fmt: skip
                continue
            yield t

    def messages_of(t: FileTask) -> list[dict]:
        if t.action != "multipart" or t.plan.part_count <= settings.sqs_parts_per_message:
            return [file_message(settings, t.src)]
        if options.dry_run:
            return list(range_messages(settings, t.src, "(made when queued)", t.plan.part_count))
        if job.copy_from is None:  # as a worker decides it, with the first big file as the sample
            job.copy_from = choose_copy(job, t.src)
            engine.copy_from(job.copy_from)
        opened = engine.open_upload(t)
        if opened is None:
            log.info("%s: its unfinished upload was made by another tool; queued whole, for one worker to check its "
                     "parts", t.src.key)  # fmt: skip
            return [file_message(settings, t.src)]
        upload_id, part_count = opened
        return list(range_messages(settings, t.src, upload_id, part_count))

    with QueueSender(job, sqs, queue_url, stop) as sender:
        for t in to_send():
            if stop.is_set():
                raise KeyboardInterrupt
            try:
                messages = messages_of(t)
            except (FileFailed, OSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                detail = str(exc) if isinstance(exc, FileFailed) else describe_error(exc) + fix_hint(exc)
                log.error("FAILED %s: its upload could not be made: %s", t.src.key, detail)
                failed.append(t.src.key)
                continue
            files, queued, queued_bytes = files + 1, queued + len(messages), queued_bytes + t.src.size
            for message in messages:
                # ASCII JSON: a local path that is not UTF-8 travels as \udcXX escapes and comes back the same.
                body = json.dumps(message)
                if options.dry_run:
                    report.info("%s", body)
                else:
                    sender.add(body)
    skipped = tally.files - files - len(failed)
    ranges = f" as {queued} message(s)" if queued != files else ""
    if options.dry_run:
        report.info("dry run: %d file(s)%s would be queued, %d skipped; nothing was sent", files, ranges, skipped)
    else:
        report.info("queued %d file(s) (%s)%s to %s; %d skipped", files, human_bytes(queued_bytes), ranges, queue_url,
                    skipped)  # fmt: skip
    if failed:
        report.info("%d file(s) not queued (see the log): %s", len(failed), ", ".join(failed[:5]) +
                    (" ..." if len(failed) > 5 else ""))  # fmt: skip
        return EXIT_FAILED
    return EXIT_OK


class QueueSender:
    """Messages out in batches of 10, SENDER_BATCHES batches in flight at once, so that a queue far away (each
    request a round trip) never limits the fleet; the caller waits only when that many are on their way.  The first
    batch SQS refuses for good stops the sending (raised at the next add, or on leaving)."""

    def __init__(self, job: Job, sqs, queue_url: str, stop: threading.Event):
        self.job, self.sqs, self.queue_url, self.stop = job, sqs, queue_url, stop
        self.batch: list[str] = []
        self._slots = threading.Semaphore(SENDER_BATCHES)
        self._pool = concurrent.futures.ThreadPoolExecutor(SENDER_BATCHES, thread_name_prefix="sqs-send")
        self._errors: list[BaseException] = []

    def add(self, body: str) -> None:
        self.batch.append(body)
        if len(self.batch) == SQS_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._errors:
            raise self._errors[0]
        batch, self.batch = self.batch, []
        while not self._slots.acquire(timeout=0.5):
            if self.stop.is_set():
                raise KeyboardInterrupt
        if self._errors:
            self._slots.release()
            raise self._errors[0]

        def send() -> None:
            try:
                send_batch(self.job, self.sqs, self.queue_url, batch, self.stop)
            except BaseException as exc:
                self._errors.append(exc)
            finally:
                self._slots.release()

        self._pool.submit(send)

    def __enter__(self) -> QueueSender:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.batch:
                self._flush()
        finally:
            self._pool.shutdown(wait=True)
        if exc_type is None and self._errors:
            raise self._errors[0]


def send_batch(job: Job, sqs, queue_url: str, messages: list[str], stop: threading.Event) -> None:
    """SendMessageBatch (at most 10): the messages SQS refuses are sent again, at most MaxRetry times."""
    settings = job.settings
    batch = {str(n): body for n, body in enumerate(messages)}
    for attempt in range(settings.max_retry + 1):
        entries = [{"Id": i, "MessageBody": body} for i, body in batch.items()]
        resp = job.retry.call("SQS send", functools.partial(sqs.send_message_batch, QueueUrl=queue_url,
                                                            Entries=entries))  # fmt: skip
        batch = {f["Id"]: batch[f["Id"]] for f in resp.get("Failed", [])}
        if not batch:
            return
        log.warning("SQS refused %d message(s) of a batch; sending them again", len(batch))
        if stop.wait(attempt * settings.retry_delay):
            raise KeyboardInterrupt
    raise FileFailed(f"SQS refused {len(batch)} message(s) {settings.max_retry + 1} times")


def run_worker(settings: Settings, stop: threading.Event, options: RunOptions, queue_url: str) -> int:
    """--sqs-worker: take one message at a time, transfer its file with the normal engine (resuming whatever another
    worker left on S3), delete the message only once the object is complete and verified."""
    job = open_job(settings, stop)
    sqs = open_queue(job, queue_url)
    engine = Engine(settings, job.source, job.des_client, job.retry, stop, make_progress("none"))
    done = failed = 0
    idle_since = time.monotonic()
    log.info("worker: polling %s (%s)", queue_url,
             "forever" if options.forever else f"until idle for {settings.sqs_idle_seconds:g}s")  # fmt: skip
    while options.forever or time.monotonic() - idle_since < settings.sqs_idle_seconds:
        idle_left = settings.sqs_idle_seconds - (time.monotonic() - idle_since)
        wait = 20 if options.forever else int(min(20, max(1, idle_left)))  # long polling, at most 20 s
        resp = job.retry.call("SQS receive", functools.partial(
            sqs.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=wait,
            VisibilityTimeout=settings.sqs_visibility_timeout))  # fmt: skip
        for message in resp.get("Messages", []):
            if work_on_message(job, engine, sqs, queue_url, message):
                done += 1
            else:
                failed += 1
            idle_since = time.monotonic()
        if stop.is_set():
            raise KeyboardInterrupt
    report.info("worker: %d file(s) done, %d failed (left in the queue for another try); idle, exiting", done, failed)
    return EXIT_FAILED if failed else EXIT_OK


def work_on_message(job: Job, engine: Engine, sqs, queue_url: str, message: dict) -> bool:
    settings, retry = job.settings, job.retry
    receipt, message_id = message["ReceiptHandle"], message.get("MessageId", "?")

    def delete() -> None:
        """The file is done: remove its message.  A receipt that is no longer valid means SQS already handed the
        message on (redelivered, or moved to the dead-letter queue): the file is done all the same."""
        try:
            retry.call("SQS delete", functools.partial(sqs.delete_message, QueueUrl=queue_url, ReceiptHandle=receipt))
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ReceiptHandleIsInvalid":
                raise
            log.warning("message %s: no longer ours to delete (redelivered or dead-lettered); its file is complete",
                        message_id)  # fmt: skip

    try:
        work = parse_message(settings, message["Body"])
        f = job.source.resolve(work.key)  # the file as it is now, in this job
        if job.copy_from is None:  # decided once, with the first message's object as the sample
            job.copy_from = choose_copy(job, f)
            engine.copy_from(job.copy_from)
        with Heartbeat(sqs, queue_url, receipt, settings.sqs_visibility_timeout, retry):
            if destination_complete(job, f):
                log.info("message %s: s3://%s/%s is already complete; deleting the message", message_id,
                         settings.des_bucket, f.key)  # fmt: skip
                delete()
                return True
            uploads = [u for u in list_unfinished_uploads(job.des_client, settings.des_bucket, f.key, retry)
                       if u.key == f.key]  # fmt: skip
            # What the key holds now: the object is written only over that one (or only if there is none).
            head = head_destination(job.des_client, settings.des_bucket, f.key, retry, "to see what it would replace")
            there = {f.key: Listed(f.key, head["ContentLength"], str(head.get("ETag", "")).strip('"'),
                                   head["LastModified"].timestamp())} if head else {}  # fmt: skip
            [task] = plan_files(settings, [f], there, uploads, job.source)
            if work.parts:
                try:
                    task = range_task(task, work, uploads)
                except FileFailed:
                    if not destination_complete(job, f):
                        raise
                    log.info("message %s: s3://%s/%s was completed meanwhile; deleting the message", message_id,
                             settings.des_bucket, f.key)  # fmt: skip
                    delete()
                    return True
            [result] = engine.run([task])
        if result.status in ("uploaded", "skipped"):
            delete()
            return True
        if destination_complete(job, job.source.resolve(work.key)):
            # A duplicate delivery: another worker completed this key while we worked on it (its upload is gone).
            # Asked of the file as it is now: a file that changed meanwhile is not done by an object of its old bytes.
            log.info("message %s: s3://%s/%s was completed by another worker; deleting the message", message_id,
                     settings.des_bucket, f.key)  # fmt: skip
            delete()
            return True
        log.error("message %s (%s): %s; left in the queue for another try", message_id, f.key, result.detail)
    except (FileFailed, OSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        detail = str(exc) if isinstance(exc, FileFailed) else describe_error(exc) + fix_hint(exc)
        log.error("message %s: %s; left in the queue for another try", message_id, detail)
    return False


def range_task(task: FileTask, work: QueuedWork, uploads: list[UnfinishedUpload]) -> FileTask:
    """A range message's work: its parts of the upload it names, which must still be there (unfinished) for this
    key; the worker then proves from the upload's marker that it was made for the file as it is now."""
    named = [u for u in uploads if u.upload_id == work.upload_id]
    if not named:
        raise FileFailed(f"its upload {short_id(work.upload_id)} is gone (aborted, or completed as another object); "
                         f"run the sender again to queue the file anew")  # fmt: skip
    if task.action != "multipart":
        raise FileFailed("the file is no longer sent in parts (its size changed since it was queued); run the sender "
                         "again")  # fmt: skip
    return dataclasses.replace(task, upload=named[0], stale=(), parts=work.parts)


def destination_complete(job: Job, f: SourceFile) -> bool:
    """Is the object there and this file (the same test as a normal run's skip)?  Unfinished uploads of the key
    that nothing adds to any more (AbandonedAfter) are leftovers of duplicate deliveries: aborted."""
    settings = job.settings
    head = head_destination(job.des_client, settings.des_bucket, f.key, job.retry,
                            "to tell whether the object is already complete")  # fmt: skip
    if head is None:
        return False
    written = head["LastModified"].timestamp()
    there = Listed(f.key, head["ContentLength"], str(head.get("ETag", "")).strip('"'), written)
    verdict, _ = listed_verdict(f, there, job.source.kind, getattr(job.source, "multipart_etags_comparable", True))
    if verdict == "send" or settings.skip_check == "checksum":
        return False  # SkipCheck "checksum": only a proof says it is complete, made in the engine (Engine._proven_same)
    if verdict == "confirm":
        asked = head_of(job.des_client, settings.des_bucket, f.key, job.retry)
        if not confirmed_same(f, job.source, lambda **kwargs: asked(**kwargs) if kwargs else head):
            return False
    for u in list_unfinished_uploads(job.des_client, settings.des_bucket, f.key, job.retry):
        if u.key != f.key:
            continue
        try:
            state = read_upload(job.des_client, settings.des_bucket, f.key, u.upload_id, u.initiated, job.retry)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                continue
            raise
        if state.abandoned(settings):  # a leftover of a duplicate delivery; a live one may be another worker's
            log.info("%s: aborting upload %s, which nothing adds to any more", f.key, short_id(u.upload_id))
            abort_upload(job.des_client, settings.des_bucket, f.key, u.upload_id, job.retry)
    return True


if __name__ == "__main__":
    cli()
