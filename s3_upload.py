#!/usr/bin/env python3
"""s3_upload: multi-threaded, resumable, MD5-verified upload of large files to Amazon S3.

A Python port of the "AWS S3 multi-thread resumable upload tool v1.0" (James Huang, Apache-2.0).

Two jobs share one engine:
  LOCAL_TO_S3  a local directory (or one file in it) -> a destination bucket
  S3_TO_S3     a source bucket -> a destination bucket, each with its own credential profile
               (e.g. AWS global -> AWS China); bytes stream through this machine by ranged GET + UploadPart.

The user edits ``s3_upload_config.py`` and runs ``python3 s3_upload.py``.  The script reads like the data flows:

  1. Settings   the config module, validated once, frozen
  2. Endpoints  one boto3 session per profile
  3. Sources    LocalSource / S3Source behind one small interface
  4. Plan       ChunkPlan per file; skip / put / multipart (resume or restart) decided from S3 listings
  5. Transfer   a pool of files, each with its own pool of parts; every request retried with linear backoff
  6. Verify     the multipart ETag recomputed from our own part digests; optional full re-read
  7. Report     logging, the CLEAN prompt, the final comparison and summary, exit codes

S3 is the only state: a rerun (on this machine or another) resumes from ListMultipartUploads and ListParts.
The module is importable; ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import concurrent.futures
import dataclasses
import datetime
import difflib
import functools
import hashlib
import importlib.util
import json
import logging
import math
import mimetypes
import os
import re
import signal
import stat
import sys
import threading
import time
import traceback
import types
from typing import Any, Callable, Iterable, Iterator, Protocol

import boto3
import botocore.config
import botocore.exceptions
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
# Part 10,000 of every upload this tool creates is a small marker naming the source version and the part layout the
# upload was made for (see "Resume marker"); data uses parts 1 to 9,999 and the marker is never completed.
MARKER_PART = MAX_PARTS
MAX_DATA_PARTS = MAX_PARTS - 1
MAX_FILE_ATTEMPTS = 3  # ifVerifyMD5: a file whose re-read ETag differs is deleted and redone at most this often
ORPHAN_WINDOW = 300  # seconds: how far back a retried CreateMultipartUpload may have left an orphan

EXIT_OK = 0
EXIT_FAILED = 1  # some file failed or is missing at the destination
EXIT_USAGE = 2  # bad config, credentials or access: nothing was transferred
EXIT_INTERRUPTED = 130

JOB_TYPES = ("LOCAL_TO_S3", "S3_TO_S3")
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
    chunk_size: int = 50 * MiB  # ChunkSize
    max_retry: int = 30  # MaxRetry
    max_thread: int = 3  # MaxThread
    max_parallel_file: int = 3  # MaxParallelFile
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
}


CONFIG_EXAMPLES = {
    "ChunkSize": "ChunkSize = 50 * Megabytes",
    "MaxRetry": "MaxRetry = 30",
    "MaxThread": "MaxThread = 3",
    "MaxParallelFile": "MaxParallelFile = 3",
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
    lowered = {name.lower(): name for name in CONFIG_OPTIONS}
    for name in values:
        if name in CONFIG_OPTIONS or isinstance(values[name], types.ModuleType) or callable(values[name]):
            continue
        close = lowered.get(name.lower()) or next(iter(difflib.get_close_matches(name, CONFIG_OPTIONS, 1, 0.8)), "")
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
            raise UserError(
                f"{name} must be {wanted}, got {type(value).__name__} {value!r}; fix it in the config "
                f"(e.g. {CONFIG_EXAMPLES.get(name, name + ' = ...')})"
            )
        fields[field] = value
    settings = Settings(**fields)  # type: ignore[arg-type]
    validate_settings(settings)
    return settings


def validate_settings(s: Settings) -> None:
    """Range checks that need no network.  Each message names the option and the fix."""
    if s.job_type not in JOB_TYPES:
        raise UserError(f"JobType {s.job_type!r} is unknown; use 'LOCAL_TO_S3' or 'S3_TO_S3'")
    if not MIN_PART_SIZE <= s.chunk_size <= MAX_PART_SIZE:
        raise UserError(
            f"ChunkSize {s.chunk_size} is out of range; S3 parts must be 5 MiB to 5 GiB "
            f"(e.g. ChunkSize = 50 * Megabytes)"
        )
    for name, value in (("MaxThread", s.max_thread), ("MaxParallelFile", s.max_parallel_file)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}; set a positive number")
    if s.max_retry < 0:
        raise UserError(f"MaxRetry must be 0 or more, got {s.max_retry}; set e.g. MaxRetry = 30")
    if s.retry_delay < 0:
        raise UserError(f"RetryDelay must be 0 or more seconds, got {s.retry_delay}; set e.g. RetryDelay = 5")
    for name, seconds in (("ConnectTimeout", s.connect_timeout), ("ReadTimeout", s.read_timeout)):
        if seconds <= 0:
            raise UserError(f"{name} must be more than 0 seconds, got {seconds}; e.g. {name} = 60")
    if s.checksum_mode not in CHECKSUM_MODES:
        raise UserError(
            f"ChecksumMode {s.checksum_mode!r} is unknown; use 'MD5' (Content-MD5 only, works with every "
            f"S3-compatible store) or 'MD5_CRC32' (also botocore's CRC32)"
        )
    for name, url in (("DesEndpointURL", s.des_endpoint_url), ("SrcEndpointURL", s.src_endpoint_url)):
        if url and not url.startswith(("http://", "https://")):
            raise UserError(f'{name} {url!r} must start with http:// or https://, or be "" for the default')
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
    if s.sqs_endpoint_url and not s.sqs_endpoint_url.startswith(("http://", "https://")):
        raise UserError(f"SQSEndpointURL {s.sqs_endpoint_url!r} must start with http:// or https://")
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
    else:
        if not s.src_bucket:
            raise UserError("SrcBucket is empty; set the source bucket for S3_TO_S3")
        check_bucket_name("SrcBucket", s.src_bucket)
        if (s.src_bucket, s.src_profile) == (s.des_bucket, s.des_profile):
            raise UserError(
                "SrcBucket and DesBucket are the same bucket with the same profile; S3_TO_S3 would copy "
                "every object onto itself: set another DesBucket or DesProfileName"
            )


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


def load_settings(path: str) -> Settings:
    return settings_from_values(load_config_module(path))


# ----------------------------------------------------------------------------------------------------------------------
# 2. Endpoints
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
        addressing = (
            {} if settings.addressing_style == "auto" else {"s3": {"addressing_style": settings.addressing_style}}
        )
        self.client_config = botocore.config.Config(
            **addressing,
            max_pool_connections=pool,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        self._clients: dict[str, object] = {}

    def sqs_client(self):
        """The queue of the fleet mode: SQSProfileName (default: the destination's profile), SQSEndpointURL."""
        profile = self.settings.sqs_profile or self.settings.des_profile
        option = "SQSProfileName" if self.settings.sqs_profile else "DesProfileName"
        config = botocore.config.Config(connect_timeout=self.settings.connect_timeout, read_timeout=60,
                                        retries={"total_max_attempts": 1, "mode": "standard"})  # fmt: skip
        return make_session(profile, option).client("sqs", endpoint_url=self.settings.sqs_endpoint_url or None,
                                                    config=config)  # fmt: skip

    def client(self, profile: str, option: str, endpoint_url: str = ""):
        """The client for a profile; ``endpoint_url`` (DesEndpointURL/SrcEndpointURL) wins over the profile's."""
        key = f"{profile}|{endpoint_url}"
        if key not in self._clients:
            session = make_session(profile, option)
            client = session.client("s3", endpoint_url=endpoint_url or None, config=self.client_config)
            # Last: botocore's own before-call handler is the one that adds the Expect header.
            client.meta.events.register_last("before-call.s3", no_expect_for_empty_body)
            self._clients[key] = client
        return self._clients[key]


def no_expect_for_empty_body(params: dict, **_kwargs) -> None:
    """Send no ``Expect: 100-continue`` when there is no body (a zero-byte PutObject).

    botocore asks every PutObject and UploadPart to wait for ``100 Continue``.  With ``Content-Length: 0`` a server
    may answer at once with its final response and keep the connection (SeaweedFS does); botocore before 1.43.77
    then keeps that answer's status line on the connection, misreads the response to the next 100-continue request
    sent on it and waits for the read timeout (120 s by default).  With nothing to send there is nothing to wait
    for."""
    headers = params.get("headers", {})
    if "Expect" in headers and botocore.utils.determine_content_length(params.get("body")) == 0:
        del headers["Expect"]


def make_session(profile: str, option: str = "DesProfileName") -> boto3.Session:
    """A session for a named profile from ~/.aws/credentials and ~/.aws/config (region, endpoint_url, ...).

    ``default`` with no such profile falls back to the standard chain (environment variables, instance role).
    ``option`` names the config option that holds the profile, for the error message."""
    try:
        return boto3.Session(profile_name=profile)
    except botocore.exceptions.ProfileNotFound:
        if profile == "default":
            return boto3.Session()
        known = ", ".join(boto3.Session().available_profiles) or "none"
        raise UserError(
            f"{option} {profile!r}: no such profile in ~/.aws/credentials or ~/.aws/config (known: {known}); "
            f"add it there or fix {option}"
        ) from None


# ----------------------------------------------------------------------------------------------------------------------
# Retry policy
# ----------------------------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """The run is stopping (Ctrl-C): abandon work quietly, S3 keeps what is done."""


class RetryPolicy:
    """MaxRetry retries after the first attempt; the n-th retry waits n x RetryDelay seconds (seed: n x 5 s)."""

    def __init__(self, max_retry: int, delay: float, stop: threading.Event):
        self.max_retry, self.delay, self.stop = max_retry, delay, stop
        self._lock = threading.Lock()
        self.retries = 0
        self.retries_by_key: dict[str, int] = {}
        self._current = threading.local()  # which file this thread works for, to count its retries

    def working_on(self, key: str) -> None:
        self._current.key = key

    def call(self, what: str, request: Callable[[], object], cancel: threading.Event | None = None):
        """``cancel``: the work this request is for was given up (a sibling part failed for good): stop retrying at
        once, also in the middle of a wait, instead of after MaxRetry more attempts."""
        attempt = 0
        while True:
            if self.stop.is_set() or (cancel is not None and cancel.is_set()):
                raise Interrupted()
            try:
                return request()
            except Exception as exc:
                if not is_retryable(exc) or attempt >= self.max_retry or (cancel is not None and cancel.is_set()):
                    raise
                attempt += 1
                key = getattr(self._current, "key", "")
                with self._lock:
                    self.retries += 1
                    self.retries_by_key[key] = self.retries_by_key.get(key, 0) + 1
                wait = attempt * self.delay
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
# 3. Sources
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
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
# way rclone spells such bytes.  local_name_of_key reverses it.
BYTE_QUOTE = "\u201b"
_QUOTED_BYTE = re.compile(BYTE_QUOTE + "([89A-F][0-9A-F])")


def key_of_local_name(relative: str) -> str:
    """A path relative to SrcDir as a key: only the OS's own separator separates (on Linux 'a\\b.txt' is one name)."""
    if os.sep != "/":
        relative = relative.replace(os.sep, "/")
    try:
        relative.encode("utf-8")
        return relative
    except UnicodeEncodeError:
        return "".join(f"{BYTE_QUOTE}{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in relative)


def local_name_of_key(relative_key: str) -> str:
    """The relative path a key came from (key_of_local_name reversed)."""
    name = _QUOTED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), relative_key)
    return name.replace("/", os.sep)


def printable(text: str) -> str:
    """A path for logs and reports: bytes that are not UTF-8 shown as \\xNN instead of breaking the output."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def inside(path: str, root: str) -> bool:
    """Is path (already absolute and normalised) root itself or below it?  ('..data' is a name, not a way up.)"""
    rel = os.path.relpath(path, root)
    return rel != os.pardir and not rel.startswith(os.pardir + os.sep) and not os.path.isabs(rel)


class Source(Protocol):
    """What the engine needs of a source; it never asks which kind it has."""

    kind: str
    verify_existing_parts: bool  # parts already at the destination can be checked by reading (cheap) the source
    listing_errors: list[str]

    def list(self) -> list[SourceFile]: ...  # every file of the job, with its destination key
    def read(self, f: SourceFile, offset: int, length: int) -> bytes: ...  # exactly length bytes, or raise
    def current(self, f: SourceFile) -> SourceFile: ...  # the file as it is now, to detect a change mid-transfer
    def resolve(self, key: str) -> SourceFile: ...  # the job's file with this key, as it is now (fleet workers)
    def identity(self, f: SourceFile) -> str: ...  # the source version an upload is tied to (resume marker)
    def attributes(self, f: SourceFile) -> dict: ...  # object attributes to set at the destination
    def describe(self, f: SourceFile) -> str: ...  # for logs


class LocalSource:
    """Files under SrcDir.  Reading is cheap, so parts already on S3 are verified by hashing the local bytes."""

    kind = "local"
    verify_existing_parts = True

    def __init__(self, settings: Settings):
        self.root = os.path.abspath(settings.src_dir)
        self.prefix = key_prefix(settings)
        self.index = settings.src_file_index
        self.listing_errors: list[str] = []

    def list(self) -> list[SourceFile]:
        if self.index != "*":
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
            return [self.entry(path, st)]
        files = []

        def on_error(err: OSError) -> None:
            self._error(err.filename, f"cannot be listed: {err.strerror}")

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=on_error):
            dirnames.sort()
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):  # not followed: it could loop or leave SrcDir
                    log.warning(
                        "skip %s: a link to a directory is not followed", printable(os.path.join(dirpath, name))
                    )
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    gone = "a link to a file that does not exist" if os.path.islink(path) else "deleted while listed"
                    self._error(path, gone)
                    continue
                except OSError as exc:
                    self._error(path, exc.strerror or str(exc))
                    continue
                if stat.S_ISREG(st.st_mode):
                    files.append(self.entry(path, st))
                else:
                    log.warning("skip %s: not a regular file (a socket, fifo or device)", printable(path))
        return without_shared_keys(files, self._error)

    def _error(self, path: str, why: str) -> None:
        self.listing_errors.append(f"{printable(path)}: {why}")
        log.error("cannot list %s: %s", printable(path), why)

    def entry(self, path: str, st: os.stat_result) -> SourceFile:
        key = self.prefix + key_of_local_name(os.path.relpath(path, self.root))
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
        message to a file: the path comes from SrcDir and the key, never from the message, and must stay inside
        SrcDir with every link resolved."""
        if not key.startswith(self.prefix):
            raise FileFailed(f"key {key!r} is not under this job's S3Prefix {self.prefix!r}")
        path = os.path.normpath(os.path.join(self.root, local_name_of_key(key[len(self.prefix) :])))
        if not inside(path, self.root) or not inside(os.path.realpath(path), os.path.realpath(self.root)):
            raise FileFailed(f"key {key!r} names {printable(path)}, outside SrcDir {self.root} (links resolved)")
        if self.index != "*" and path != os.path.normpath(os.path.join(self.root, self.index)):
            raise FileFailed(f"key {key!r} is not this job's SrcFileIndex {self.index!r}")
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

    def attributes(self, f: SourceFile) -> dict:
        """Content-Type guessed from the file name, as the AWS CLI does; none when unknown (S3's default)."""
        content_type = mimetypes.guess_type(f.path)[0]
        return {"ContentType": content_type} if content_type else {}

    def describe(self, f: SourceFile) -> str:
        return printable(f.path)


def without_shared_keys(files: list[SourceFile], error: Callable[[str, str], None]) -> list[SourceFile]:
    """Two names that map to one key would overwrite each other: both are listing errors, neither is sent."""
    by_key: dict[str, list[SourceFile]] = {}
    for f in files:
        by_key.setdefault(f.key, []).append(f)
    if len(by_key) == len(files):
        return files
    for key, same in by_key.items():
        if len(same) > 1:
            names = " and ".join(printable(f.path) for f in same)
            error(same[0].path, f"{names} would have the same key {key!r}; rename one of them")
    return [f for f in files if len(by_key[f.key]) == 1]


def _seek_read(fh, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(length)


class S3Source:
    """Objects in SrcBucket under S3Prefix, read by ranged GET pinned to the listed ETag (If-Match), so an object
    replaced mid-copy fails the file instead of mixing versions.  Re-reading is a download, so parts already at the
    destination are trusted by size when the upload's resume marker ties it to this very version, and checked by
    reading them again otherwise."""

    kind = "s3"
    verify_existing_parts = False

    def __init__(self, settings: Settings, client, retry: RetryPolicy):
        self.client, self.retry = client, retry
        self.bucket = settings.src_bucket
        self.prefix = settings.s3_prefix
        # As typed, as in the original and in S3 itself: "data" lists data/..., data.txt and data2/...
        self.list_prefix = settings.s3_prefix
        self.index = settings.src_file_index
        self.listing_errors: list[str] = []

    def list(self) -> list[SourceFile]:
        if self.index != "*":
            key = join_key(self.prefix, self.index)
            try:
                return [self.head(key)]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in NOT_FOUND_CODES:
                    raise UserError(
                        f"SrcFileIndex {self.index!r}: s3://{self.bucket}/{key} does not exist; "
                        f"check S3Prefix and SrcFileIndex"
                    ) from None
                raise
        return [
            SourceFile(
                key=o["Key"],
                size=o["Size"],
                mtime=o["LastModified"].timestamp(),
                etag=o["ETag"].strip('"'),
                version=o["ETag"].strip('"'),
            )  # fmt: skip
            for o in list_objects(self.client, self.bucket, self.list_prefix, self.retry)
            if not o["Key"].endswith("/") or o["Size"] > 0
        ]  # skip zero-byte "folder" markers

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
        if code == "PreconditionFailed":
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

    def attributes(self, f: SourceFile) -> dict:
        def head() -> dict:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=f.key, IfMatch=f'"{f.etag}"')
            except botocore.exceptions.ClientError as exc:
                self._changed(f, exc)
                raise

        response = self.retry.call(f"HEAD s3://{self.bucket}/{f.key}", head)
        return {name: response[name] for name in self.COPIED_ATTRIBUTES if response.get(name)}

    def describe(self, f: SourceFile) -> str:
        return f"s3://{self.bucket}/{f.key}"


# ----------------------------------------------------------------------------------------------------------------------
# S3 listings (all paginated)
# ----------------------------------------------------------------------------------------------------------------------


def list_objects(client, bucket: str, prefix: str, retry: RetryPolicy, page_size: int = 1000) -> Iterator[dict]:
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
        if token:
            kwargs["ContinuationToken"] = token
        page = retry.call(f"LIST s3://{bucket}/{prefix}", functools.partial(client.list_objects_v2, **kwargs))
        yield from page.get("Contents", [])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


@dataclasses.dataclass(frozen=True)
class UnfinishedUpload:
    key: str
    upload_id: str
    initiated: float  # epoch seconds


def list_unfinished_uploads(
    client, bucket: str, prefix: str, retry: RetryPolicy, page_size: int = 1000
) -> list[UnfinishedUpload]:
    uploads: list[UnfinishedUpload] = []
    key_marker = id_marker = ""
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxUploads": page_size}
        if key_marker:
            kwargs["KeyMarker"] = key_marker
        if id_marker:
            kwargs["UploadIdMarker"] = id_marker
        page = retry.call(
            f"LIST uploads s3://{bucket}/{prefix}", functools.partial(client.list_multipart_uploads, **kwargs)
        )
        for u in page.get("Uploads", []):
            uploads.append(UnfinishedUpload(u["Key"], u["UploadId"], u["Initiated"].timestamp()))
        if not page.get("IsTruncated"):
            return uploads
        next_key, next_id = page.get("NextKeyMarker", ""), page.get("NextUploadIdMarker", "")
        if (next_key, next_id) == (key_marker, id_marker):
            return uploads  # a server that does not advance its markers: stop rather than loop
        key_marker, id_marker = next_key, next_id


def abort_upload(client, bucket: str, key: str, upload_id: str, retry: RetryPolicy) -> None:
    """AbortMultipartUpload; an upload already gone (aborted or completed by someone else) is not an error."""
    try:
        retry.call(f"ABORT {key}", functools.partial(client.abort_multipart_upload, Bucket=bucket, Key=key,
                                                     UploadId=upload_id))  # fmt: skip
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchUpload":
            raise


@dataclasses.dataclass(frozen=True)
class ExistingPart:
    number: int
    size: int
    etag: str  # hex, unquoted


def list_upload_parts(client, bucket: str, key: str, upload_id: str, retry: RetryPolicy) -> list[ExistingPart]:
    """Every part of an unfinished upload, paginated.  Some servers list a re-sent part number twice: all entries
    are kept here (sorted by number) and ``pick_existing_part`` decides which one counts."""
    parts: list[ExistingPart] = []
    marker = 0
    while True:
        page = retry.call(
            f"LIST parts s3://{bucket}/{key}",
            functools.partial(client.list_parts, Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker),
        )
        for p in page.get("Parts", []):
            parts.append(ExistingPart(p["PartNumber"], p["Size"], p["ETag"].strip('"')))
        next_marker = int(page.get("NextPartNumberMarker") or 0)
        if not page.get("IsTruncated") or next_marker <= marker:
            break
        marker = next_marker
    parts.sort(key=lambda p: p.number)
    return parts


# ----------------------------------------------------------------------------------------------------------------------
# 4. Plan
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """How one file is cut into parts: every part ``part_size`` bytes but the last."""

    size: int
    part_size: int

    @property
    def part_count(self) -> int:
        return max(1, math.ceil(self.size / self.part_size))

    def part_range(self, number: int) -> tuple[int, int]:
        """(offset, length) of part ``number`` (1-based)."""
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
# fall in the same second).  So every upload gets, right after it is created and before any data part, part 10,000:
# a few bytes naming the source version and the part layout.  ListParts shows its ETag, the MD5 of those bytes; a
# rerun computes the MD5 the marker of *its* source version and layout would have, and resumes only on a match.
# The marker is never part of the completed object (CompleteMultipartUpload lists the data parts only).


def marker_body(identity: str, plan: ChunkPlan) -> bytes:
    return f"s3_upload resume marker 1\nsource {identity}\nsize {plan.size}\npart_size {plan.part_size}\n".encode()


@dataclasses.dataclass(frozen=True)
class ResumeCheck:
    """Whether an unfinished upload can be continued with this plan, and how far its parts can be trusted."""

    restart: str = ""  # why it cannot ('' when it can)
    proven: bool = False  # the marker ties it to this source version and part layout: parts of the right size count


def judge_upload(plan: ChunkPlan, parts: list[ExistingPart], identity: str) -> ResumeCheck:
    """Decide about an unfinished upload of this key from its listed parts (marker included).

    With a marker: resume only if it was made for this source version and layout.  Without one (the original tool,
    another tool, or a run killed between creating the upload and writing the marker), the upload is not tied to any
    version: each part is reused only once its bytes are proven equal to the source by MD5 (LOCAL_TO_S3 hashes the
    local file; S3_TO_S3 reads the range from the source again), and an upload whose parts cannot fit this layout
    restarts at once."""
    markers = [p for p in parts if p.number == MARKER_PART]
    if markers:
        expected = hashlib.md5(marker_body(identity, plan)).hexdigest()
        if any(p.etag == expected for p in markers):
            return ResumeCheck(proven=True)
        return ResumeCheck("it was made for another version of the source or another ChunkSize")
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


def examine_upload(client, bucket: str, task: FileTask, source: Source, retry: RetryPolicy
                   ) -> tuple[ResumeCheck, list[ExistingPart]]:  # fmt: skip
    """List the parts of the task's unfinished upload and judge it (a run and --dry-run decide alike)."""
    assert task.upload is not None
    parts = list_upload_parts(client, bucket, task.src.key, task.upload.upload_id, retry)
    check = judge_upload(task.plan, parts, source.identity(task.src))
    # An upload without marker and without parts may be another run's, created a moment ago with its marker on the
    # way: it is resumed (there is nothing in it to doubt), never aborted.
    return check, [p for p in parts if p.number != MARKER_PART]


@dataclasses.dataclass
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


def plan_files(
    settings: Settings, files: list[SourceFile], destination: dict[str, int], uploads: list[UnfinishedUpload]
) -> list[FileTask]:
    by_key: dict[str, list[UnfinishedUpload]] = {}
    for u in uploads:
        by_key.setdefault(u.key, []).append(u)
    tasks = []
    for f in files:
        whole = ChunkPlan(size=f.size, part_size=max(f.size, 1))
        of_key = sorted(by_key.get(f.key, ()), key=lambda u: u.initiated)
        if destination.get(f.key) == f.size:
            tasks.append(FileTask(f, "skip", whole, "already at the destination with the same size",
                                  stale=tuple(of_key), complete=True))  # fmt: skip
        elif settings.ignore_small_file and f.size < settings.chunk_size:
            tasks.append(FileTask(f, "skip", whole, "smaller than ChunkSize (IgnoreSmallFile)", stale=tuple(of_key)))
        elif f.size < settings.chunk_size:
            tasks.append(FileTask(f, "put", whole, stale=tuple(of_key)))
        else:
            plan = plan_chunks(f.size, settings.chunk_size)
            newest = of_key[-1] if of_key else None
            tasks.append(FileTask(f, "multipart", plan, upload=newest, stale=tuple(of_key[:-1])))
    return tasks


# ----------------------------------------------------------------------------------------------------------------------
# 5. Transfer
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
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


@dataclasses.dataclass
class PartResult:
    number: int
    etag: str
    digest: bytes  # binary MD5 of the part
    sent: int  # bytes uploaded this run (0 when an existing part was reused)


def is_md5_hex(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)


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


class Progress:
    """What the workers report (bytes and parts per file); renderers draw it.  This base class only counts."""

    tick_seconds = 0.0  # renderers redraw this often, from a thread of their own (0: never)

    def __init__(self):
        self._lock = threading.Lock()
        self.total_bytes = self.total_files = 0
        self.done_bytes = self.sent_bytes = self.files_done = 0
        self.in_flight: dict[str, list[int]] = {}  # key -> [parts done, parts in all]
        self.started = time.monotonic()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def begin(self, tasks: list[FileTask]) -> None:
        work = [t for t in tasks if t.action != "skip"]
        self.total_files, self.total_bytes = len(work), sum(t.src.size for t in work)
        self.started = time.monotonic()
        if self.tick_seconds and self.total_files:
            self._open()
            self._thread.start()

    def _open(self) -> None:
        """Called once before the first tick, when there is work to show."""

    def _tick(self) -> None:
        """Draw the current state."""

    def _run(self) -> None:
        while not self._closed.wait(self.tick_seconds):
            self._tick()

    def file_started(self, key: str, parts: int) -> None:
        with self._lock:
            self.in_flight[key] = [0, parts]

    def part_done(self, key: str, nbytes: int, reused: bool = False) -> None:
        with self._lock:
            self.done_bytes += nbytes  # resumed parts count as done
            if not reused:
                self.sent_bytes += nbytes
            if key in self.in_flight:
                self.in_flight[key][0] += 1

    def file_finished(self, key: str) -> None:
        with self._lock:
            self.in_flight.pop(key, None)
            self.files_done += 1

    def line(self) -> str:
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = self.sent_bytes / elapsed
            left = self.total_bytes - self.done_bytes
            eta = f"{left / rate:.0f}s" if rate > 0 else "?"
            pct = 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0
            flying = ", ".join(f"{k} {d}/{n}" for k, (d, n) in list(self.in_flight.items())[:4])
            more = f" +{len(self.in_flight) - 4}" if len(self.in_flight) > 4 else ""
            return (
                f"{human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)} ({pct:.0f}%), "
                f"{human_bytes(rate)}/s, ETA {eta}, files {self.files_done}/{self.total_files}"
                + (f", in flight: {flying}{more}" if flying else "")
            )

    def close(self) -> None:
        self._closed.set()


class LogProgress(Progress):
    """Not on a terminal: one plain log line every ``interval`` seconds."""

    def __init__(self, interval: float = 5.0):
        super().__init__()
        self.tick_seconds = interval

    def _tick(self) -> None:
        log.info("progress: %s", self.line())


class BarProgress(Progress):
    """On a terminal: a live tqdm bar (bytes, throughput, ETA) with files done and the files in flight.

    tqdm rather than rich: one small pure-Python package with no dependencies of its own, and a single bar is all a
    transfer needs; log lines are printed above the bar (see ConsoleHandler)."""

    tick_seconds = 0.5

    def __init__(self):
        super().__init__()
        self.bar: tqdm.tqdm | None = None

    def _open(self) -> None:
        global _active_bar
        self.bar = tqdm.tqdm(total=self.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1)  # fmt: skip
        _active_bar = self.bar

    def _tick(self) -> None:
        if self.bar is None:
            return
        with self._lock:
            done, files = self.done_bytes, f"files {self.files_done}/{self.total_files}"
            flying = " ".join(f"{k.rsplit('/', 1)[-1]}:{d}/{n}" for k, (d, n) in list(self.in_flight.items())[:3])
        self.bar.n = done
        self.bar.set_postfix_str(f"{files} {flying}".strip(), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        global _active_bar
        super().close()
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


class Engine:
    """Runs FileTasks: a pool of MaxParallelFile files, each with its own pool of MaxThread parts.

    Memory: a part's bytes are read inside its worker, so at most MaxParallelFile x MaxThread parts (of ChunkSize
    each) are held at once.
    """

    def __init__(self, settings: Settings, source, client, retry: RetryPolicy, stop: threading.Event,
                 progress: Progress | None = None):  # fmt: skip
        self.s, self.source, self.client, self.retry, self.stop = settings, source, client, retry, stop
        self.bucket = settings.des_bucket
        self.progress = progress or Progress()  # also the count of bytes sent, for the summary
        self.throttle = Throttle(settings.max_bandwidth, stop)

    def object_args(self, f: SourceFile) -> dict:
        """Arguments of PutObject / CreateMultipartUpload: the source's attributes plus the configured ones."""
        args = dict(self.source.attributes(f))
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
        f = task.src
        started = time.monotonic()
        if task.action == "skip":
            log.info("skip %s: %s", f.key, task.reason)
            self._abort_stale(task)
            return FileResult(f.key, f.size, "skipped", task.reason)
        log.info("start %s (%s) -> s3://%s/%s", self.source.describe(f), human_bytes(f.size), self.bucket, f.key)
        result = FileResult(f.key, f.size, "failed")
        self.retry.working_on(f.key)
        self.progress.file_started(f.key, task.plan.part_count)
        try:
            for attempt in range(1, MAX_FILE_ATTEMPTS + 1):
                if task.action == "put":
                    self._put_small(f, result)
                else:
                    self._multipart(task, result)
                if not self.s.verify_md5 or self._verify_by_reread(f, task, result):
                    break
                if attempt == MAX_FILE_ATTEMPTS:
                    raise FileFailed(f"ETag still differs after {MAX_FILE_ATTEMPTS} attempts")
                task = dataclasses.replace(task, upload=None)
            result.status = "uploaded"
            result.seconds = time.monotonic() - started
            log.info(
                "finish %s: %s in %.1fs, ETag %s (%d parts, %d reused)",
                f.key,
                human_bytes(f.size),
                result.seconds,
                result.etag,
                result.parts,
                result.parts_reused,
            )
            self._abort_stale(task)
        except Interrupted:
            result.detail = "interrupted"
        except Exception as exc:  # one file's failure must not stop the others
            result.detail = str(exc) if isinstance(exc, FileFailed) else describe_error(exc) + fix_hint(exc)
            log.error("FAILED %s: %s", f.key, result.detail)
        result.seconds = time.monotonic() - started
        self.progress.file_finished(f.key)
        return result

    def _abort_stale(self, task: FileTask) -> None:
        """Unfinished uploads of this key that nothing will resume any more (the file went up another way, is
        ignored, or is complete) would stay on S3, billed, forever: abort them."""
        stale, key = list(task.stale), task.src.key
        if task.complete and stale:
            # Only uploads begun before the object was written: a later one may be another run's work in progress.
            head = self.retry.call(f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
            written = head["LastModified"].timestamp()
            stale = [u for u in stale if u.initiated <= written]
        for u in stale:
            log.info("%s: aborting unfinished upload %s, which this file no longer needs", key, short_id(u.upload_id))
            try:
                self._abort(key, u.upload_id)
            except Exception as exc:  # the object itself is right; say what is left behind and why
                log.warning("%s: could not abort upload %s: %s", key, short_id(u.upload_id),
                            describe_error(exc) + fix_hint(exc))  # fmt: skip

    def _put_small(self, f: SourceFile, result: FileResult) -> None:
        """Files smaller than one chunk (zero bytes included) go up in one PutObject with Content-MD5."""
        data = self.retry.call(f"READ {f.key}", lambda: self.source.read(f, 0, f.size)) if f.size else b""
        digest, md5_b64 = md5_of(data)
        self._check_unchanged(f)
        args = self.object_args(f)
        self.throttle.acquire(len(data))

        def put() -> dict:
            resp = self.client.put_object(Bucket=self.bucket, Key=f.key, Body=data, ContentMD5=md5_b64, **args)
            require_etag(resp, f"PUT {f.key}")
            return resp

        resp = self.retry.call(f"PUT {f.key}", put)
        self.progress.part_done(f.key, len(data))
        result.parts, result.bytes_sent, result.expected_etag = 1, len(data), digest.hex()
        result.etag, result.etag_is_md5 = require_etag(resp, "PUT"), etag_is_md5(resp)
        if result.etag_is_md5 and result.etag != digest.hex():
            raise FileFailed(f"ETag mismatch after PUT: S3 has {result.etag}, local MD5 is {digest.hex()}")

    def _multipart(self, task: FileTask, result: FileResult) -> None:
        f, plan = task.src, task.plan
        if plan.part_size != self.s.chunk_size:
            log.info(
                "%s: %s needs more than %d parts at ChunkSize %s; using %s parts for this file",
                f.key,
                human_bytes(f.size),
                MAX_DATA_PARTS,
                human_bytes(self.s.chunk_size),
                human_bytes(plan.part_size),
            )
        upload_id, existing, proven = self._resume_or_create(task)
        try:
            parts = self._send_parts(f, plan, upload_id, existing, proven)
            self._check_unchanged(f)
        except SourceChanged:
            # Its parts may mix old and new bytes: never complete it, and leave nothing behind.
            self._abort(f.key, upload_id)
            raise
        parts.sort(key=lambda p: p.number)
        expected = multipart_etag(p.digest for p in parts)
        completed = self._complete(f.key, upload_id, parts)
        etag = require_etag(completed, "COMPLETE")
        result.parts = len(parts)
        result.parts_reused = sum(1 for p in parts if not p.sent)
        result.bytes_sent += sum(p.sent for p in parts)
        result.etag, result.expected_etag, result.etag_is_md5 = etag, expected, etag_is_md5(completed)
        if result.etag_is_md5 and etag != expected:
            raise FileFailed(f"ETag mismatch after complete: S3 has {etag}, computed from our parts {expected}")

    def _complete(self, key: str, upload_id: str, parts: list[PartResult]) -> dict:
        """CompleteMultipartUpload with our own part list (the data parts: never the marker); returns S3's answer.
        If an earlier attempt completed it but its answer was lost, the retry finds no such upload: the object
        itself then tells."""
        attempts = 0

        def complete() -> dict:
            nonlocal attempts
            attempts += 1
            resp = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]},
            )
            require_etag(resp, f"COMPLETE {key}")
            return resp

        try:
            return self.retry.call(f"COMPLETE {key}", complete)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "NoSuchUpload" or attempts < 2:
                raise
            head = self.retry.call(f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
            log.info("%s: the answer to COMPLETE was lost; the object is there", key)
            require_etag(head, f"HEAD {key}")
            return head

    def _create_upload(self, f: SourceFile, plan: ChunkPlan) -> str:
        """CreateMultipartUpload, then at once the resume marker (before any data part, so that no part of this
        upload is ever on S3 without the version it belongs to)."""
        key, args, attempts = f.key, self.object_args(f), 0

        def create() -> str:
            nonlocal attempts
            attempts += 1
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **args)
            return resp["UploadId"]

        upload_id = self.retry.call(f"CREATE upload {key}", create)
        if attempts > 1:
            self._abort_orphans(key, upload_id)
        body = marker_body(self.source.identity(f), plan)
        md5_b64 = md5_of(body)[1]
        self.retry.call(f"MARKER {key}", lambda: require_etag(self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=MARKER_PART, Body=body, ContentMD5=md5_b64),
            f"MARKER {key}"))  # fmt: skip
        return upload_id

    def _abort_orphans(self, key: str, keep: str) -> None:
        """A CreateMultipartUpload whose answer was lost still made an upload, that nobody would ever resume.
        Those are the uploads of this key made just before ours (within ORPHAN_WINDOW seconds)."""
        uploads = [u for u in list_unfinished_uploads(self.client, self.bucket, key, self.retry) if u.key == key]
        ours = next((u for u in uploads if u.upload_id == keep), None)
        for u in uploads:
            if ours and u.upload_id != keep and ours.initiated - ORPHAN_WINDOW <= u.initiated <= ours.initiated:
                log.info("%s: aborting upload %s, made by a retried request whose answer was lost", key,
                         short_id(u.upload_id))  # fmt: skip
                self._abort(key, u.upload_id)

    def _resume_or_create(self, task: FileTask) -> tuple[str, dict[int, list[ExistingPart]], bool]:
        """The upload to send parts to, the parts it already holds (by number), and whether those are tied to this
        source version (so that a part of the right size counts without reading it again)."""
        f, plan, upload = task.src, task.plan, task.upload
        if upload is not None:
            check, data = examine_upload(self.client, self.bucket, task, self.source, self.retry)
            if check.restart:
                log.warning(
                    "restart %s: unfinished upload %s cannot be resumed, %s; aborting it",
                    f.key,
                    short_id(upload.upload_id),
                    check.restart,
                )
                self._abort(f.key, upload.upload_id)
            else:
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
                return upload.upload_id, by_number, check.proven
        upload_id = self._create_upload(f, plan)
        log.debug("%s: new upload %s, %d parts of %s", f.key, short_id(upload_id), plan.part_count,
                  human_bytes(plan.part_size))  # fmt: skip
        return upload_id, {}, True

    def _send_parts(self, f: SourceFile, plan: ChunkPlan, upload_id: str, existing: dict[int, list[ExistingPart]],
                    proven: bool) -> list[PartResult]:  # fmt: skip
        failed = threading.Event()  # one part's final failure stops this file's other parts at once
        trust_sizes = proven and not self.source.verify_existing_parts  # S3_TO_S3: reading again is a download

        def send(number: int, offset: int, length: int) -> PartResult:
            if failed.is_set() or self.stop.is_set():
                raise Interrupted()
            self.retry.working_on(f.key)
            listed = existing.get(number, [])
            if listed and trust_sizes:
                reuse = pick_existing_part(listed, length, None)
                if reuse is not None and is_md5_hex(reuse.etag):
                    self.progress.part_done(f.key, length, reused=True)
                    return PartResult(number, reuse.etag, binascii.unhexlify(reuse.etag), 0)
            data = self.retry.call(f"READ {f.key} part {number}", lambda: self.source.read(f, offset, length), failed)
            digest, md5_b64 = md5_of(data)
            if listed and pick_existing_part(listed, length, digest.hex()) is not None:
                self.progress.part_done(f.key, length, reused=True)
                return PartResult(number, digest.hex(), digest, 0)
            self.throttle.acquire(length)
            what = f"UPLOAD {f.key} part {number}/{plan.part_count}"
            etag = self.retry.call(
                what,
                lambda: require_etag(
                    self.client.upload_part(
                        Bucket=self.bucket, Key=f.key, UploadId=upload_id, PartNumber=number, Body=data,
                        ContentMD5=md5_b64,
                    ),
                    what,
                ),
                failed,
            )  # fmt: skip
            self.progress.part_done(f.key, length)
            log.debug("%s part %d/%d sent (%s)", f.key, number, plan.part_count, human_bytes(length))
            return PartResult(number, etag, digest, length)

        results: list[PartResult] = []
        with concurrent.futures.ThreadPoolExecutor(self.s.max_thread, thread_name_prefix="part") as pool:
            # Missing parts first: the network starts at once, and checking the parts already on S3 (reading and
            # hashing them) overlaps with those uploads instead of delaying them.
            ordered = sorted(plan.parts(), key=lambda part: part[0] in existing)
            futures = [pool.submit(send, *part) for part in ordered]
            try:
                for future in concurrent.futures.as_completed(futures):
                    results.append(future.result())
            except BaseException:
                failed.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return results

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

    def _verify_by_reread(self, f: SourceFile, task: FileTask, result: FileResult) -> bool:
        """ifVerifyMD5: read the whole source again, recompute the ETag; on mismatch delete the object."""
        if task.action == "put":
            digest = md5_of(self.retry.call(f"READ {f.key}", lambda: self.source.read(f, 0, f.size)))[0]
            expected = digest.hex()
        else:
            digests = []
            for number, offset, length in task.plan.parts():
                data = self.retry.call(
                    f"VERIFY {f.key} part {number}", functools.partial(self.source.read, f, offset, length)
                )
                digests.append(hashlib.md5(data).digest())
            expected = multipart_etag(digests)
        uploaded = result.etag if result.etag_is_md5 else result.expected_etag
        if expected == uploaded:
            log.info("verified %s: re-read ETag %s matches", f.key, expected)
            return True
        log.error(
            "verify %s: source ETag %s but S3 has %s; deleting it and uploading again", f.key, expected, result.etag
        )
        self.retry.call(f"DELETE {f.key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=f.key))
        return False

    # -- the file pool --------------------------------------------------------------------------------------------

    def run(self, tasks: Iterable[FileTask]) -> list[FileResult]:
        """At most a small window of files is submitted at a time, so a job of a million files costs the same per
        file as one of ten (the work queue and each wait stay short).  Skips without anything to clean up are
        decided right here, without a thread."""
        results: list[FileResult] = []
        window = 2 * self.s.max_parallel_file
        pool = concurrent.futures.ThreadPoolExecutor(self.s.max_parallel_file, thread_name_prefix="file")
        todo = iter(tasks)
        pending: set[concurrent.futures.Future] = set()
        try:
            while True:
                for task in todo:
                    if task.action == "skip" and not task.stale:
                        results.append(self.run_file(task))
                        continue
                    pending.add(pool.submit(self.run_file, task))
                    if len(pending) >= window:
                        break
                if not pending:
                    break
                # Wake up often: Ctrl-C may be delivered to a worker thread, and Python only runs the handler
                # (raising KeyboardInterrupt here) when this main thread runs.
                done, pending = concurrent.futures.wait(pending, timeout=0.2, return_when="FIRST_COMPLETED")
                results.extend(future.result() for future in done)
        except BaseException:
            # Ctrl-C reaches only this thread: tell the workers, and do not wait for requests in flight.
            self.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results


# ----------------------------------------------------------------------------------------------------------------------
# 7. Report and main
# ----------------------------------------------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if round(abs(n), 1) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def short_id(upload_id: str) -> str:
    return upload_id[:12] + "..." if len(upload_id) > 15 else upload_id


class ConsoleHandler(logging.StreamHandler):
    """stderr; while a progress bar is on screen, lines are written above it instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
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


def ask_clean(uploads: list[UnfinishedUpload], settings: Settings, prefix: str) -> bool:
    """The seed's prompt.  Only the answer CLEAN cleans (every upload listed); Enter, anything else or end of input
    resumes."""
    log.warning(
        "%d unfinished multipart upload(s) under s3://%s/%s (CLEAN aborts them all):",
        len(uploads),
        settings.des_bucket,
        prefix,
    )
    for u in uploads[:20]:
        log.warning("  %s (upload %s)", u.key, short_id(u.upload_id))
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


def open_job(settings: Settings, stop: threading.Event) -> Job:
    retry = RetryPolicy(settings.max_retry, settings.retry_delay, stop)
    endpoints = Endpoints(settings)
    des_client = endpoints.client(settings.des_profile, "DesProfileName", settings.des_endpoint_url)
    source: Source
    if settings.job_type == "LOCAL_TO_S3":
        source = LocalSource(settings)
        src_what = f"SrcDir {settings.src_dir}"
    else:
        src_client = endpoints.client(settings.src_profile, "SrcProfileName", settings.src_endpoint_url)
        source = S3Source(settings, src_client, retry)
        src_what = f"source s3://{settings.src_bucket} (profile {settings.src_profile})"
    des_what = f"destination s3://{settings.des_bucket} (profile {settings.des_profile})"
    if settings.job_type == "LOCAL_TO_S3":
        dest_prefix = key_prefix(settings)
        if dest_prefix != folder_prefix(settings.s3_prefix):
            log.warning("S3Prefix %r is written as %r (keys never start with '/' or hold '//' here)",
                        settings.s3_prefix, dest_prefix)  # fmt: skip
    else:
        dest_prefix = settings.s3_prefix  # destination keys equal source keys: the same prefix, as typed
    return Job(settings, retry, endpoints, des_client, source, src_what, des_what, dest_prefix)


def list_job(job: Job) -> tuple[list[SourceFile], dict[str, int], list[UnfinishedUpload]]:
    """The source, the destination (once) and its unfinished uploads; a refusal here is a user error (exit 2)."""
    settings, retry, des_client = job.settings, job.retry, job.des_client
    try:
        files = job.source.list()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        check_access(exc, job.src_what)
        raise
    log.info("source: %d file(s), %s", len(files), human_bytes(sum(f.size for f in files)))
    try:
        listing = list_objects(des_client, settings.des_bucket, job.dest_prefix, retry)
        destination = {o["Key"]: o["Size"] for o in listing}
        uploads = list_unfinished_uploads(des_client, settings.des_bucket, job.dest_prefix, retry)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        check_access(exc, job.des_what)
        raise
    return files, destination, uploads


def run_job(settings: Settings, stop: threading.Event, options: RunOptions = RunOptions()) -> int:
    """The pipeline: list source, list destination, ask about unfinished uploads, plan, transfer, compare, report."""
    job = open_job(settings, stop)
    retry, des_client, source, dest_prefix = job.retry, job.des_client, job.source, job.dest_prefix
    files, destination, uploads = list_job(job)

    # CLEAN, as in the original: every unfinished upload under the prefix, this job's or not, so that the question
    # does not come back on the next run.
    clean = bool(uploads) and decide_clean(uploads, job, options)
    if options.dry_run:
        tasks = plan_files(settings, files, destination, [] if clean else uploads)
        print_dry_run(tasks, uploads if clean else [], des_client, settings, retry, source)
        return EXIT_OK
    started = time.monotonic()  # the transfer's time, not the time a person took to answer
    if clean:
        for u in uploads:
            log.warning("CLEAN: aborting unfinished upload of %s (%s)", u.key, short_id(u.upload_id))
            abort_upload(des_client, settings.des_bucket, u.key, u.upload_id, retry)
        uploads = []

    tasks = plan_files(settings, files, destination, uploads)
    progress = make_progress(options.progress)
    progress.begin(tasks)
    engine = Engine(settings, source, des_client, retry, stop, progress)
    try:
        results = engine.run(tasks)
    finally:
        progress.close()
    if stop.is_set():
        raise KeyboardInterrupt
    for r in results:
        r.retries = retry.retries_by_key.get(r.key, 0)

    # The seed's final comparison: list the destination again and look for every source file in it.
    after = {o["Key"]: o["Size"] for o in list_objects(des_client, settings.des_bucket, dest_prefix, retry)}
    missing = [f for f in files if after.get(f.key) != f.size and not _ignored(settings, f)]
    if missing:
        report.info("%d source file(s) are not in the destination:", len(missing))
        for f in missing:
            report.info("  %s (%s)", f.key, human_bytes(f.size))
    else:
        report.info("All source files are in destination s3://%s/%s", settings.des_bucket, dest_prefix)

    seconds = time.monotonic() - started
    print_summary(results, source.listing_errors, engine.progress.sent_bytes, seconds, retry.retries)
    failed = [r for r in results if r.status == "failed"]
    code = EXIT_FAILED if failed or missing or source.listing_errors else EXIT_OK
    if options.report_path:
        write_report(options.report_path, settings, results, missing, source.listing_errors, code, seconds,
                     engine.progress.sent_bytes)  # fmt: skip
    if code == EXIT_OK:  # the original's closing line, which scripts look for; never printed over a failure
        report.info("%s", mission_line(settings, time.monotonic() - options.run_started))
    return code


def mission_line(settings: Settings, seconds: float) -> str:
    """The original's closing line: MISSION ACCOMPLISHED - Time: 0H:1M:23S - FROM: <source> TO <bucket>/<prefix>,
    the run's whole time unpadded, S3Prefix as typed."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if settings.job_type == "LOCAL_TO_S3":
        source = settings.src_dir[:-1] if settings.src_dir.endswith(("/", "\\")) else settings.src_dir
    else:
        source = f"{settings.src_bucket}/{settings.s3_prefix}"
    return (f"MISSION ACCOMPLISHED - Time: {hours}H:{minutes}M:{secs}S - FROM: {source} TO "
            f"{settings.des_bucket}/{settings.s3_prefix}")  # fmt: skip


def decide_clean(uploads: list[UnfinishedUpload], job: Job, options: RunOptions) -> bool:
    settings = job.settings
    if options.clean_answer:
        log.warning("%d unfinished multipart upload(s) under s3://%s/%s: %s", len(uploads), settings.des_bucket,
                    job.dest_prefix, "CLEAN (--clean)" if options.clean_answer == "clean"
                    else "resuming (--yes)")  # fmt: skip
        return options.clean_answer == "clean"
    if options.dry_run and not settings.dont_ask_me_to_clean:
        log.info("dry run: not asking about %d unfinished upload(s); showing what resuming would do", len(uploads))
        return False
    return ask_clean(uploads, settings, job.dest_prefix)


def print_dry_run(tasks: list[FileTask], cleaned: list[UnfinishedUpload], client, settings: Settings,
                  retry: RetryPolicy, source) -> None:  # fmt: skip
    """--dry-run: what a run would do, file by file; only listings are sent, nothing is written."""
    for u in cleaned:
        report.info("clean    %s (abort unfinished upload %s)", u.key, short_id(u.upload_id))
    counts: dict[str, int] = {}
    for t in tasks:
        f = t.src
        if t.action == "skip":
            verb, detail = "skip", t.reason
        elif t.action == "put":
            verb, detail = "upload", f"{human_bytes(f.size)}, one request"
        elif t.upload is None:
            verb, detail = (
                "upload",
                f"{human_bytes(f.size)}, {t.plan.part_count} parts of {human_bytes(t.plan.part_size)}",
            )
        else:
            check, parts = examine_upload(client, settings.des_bucket, t, source, retry)
            if check.restart:
                verb, detail = "restart", check.restart
            else:
                have = len({p.number for p in parts})
                verb, detail = "resume", f"{have} of {t.plan.part_count} parts already on S3"
        counts[verb] = counts.get(verb, 0) + 1
        report.info("%-8s %s (%s)", verb, f.key, detail)
        for u in t.stale:
            report.info("%-8s %s (abort unfinished upload %s, which this file no longer needs)", "clean", f.key,
                        short_id(u.upload_id))  # fmt: skip
    report.info("dry run: %s; nothing was written", ", ".join(f"{n} to {v}" for v, n in counts.items()) or "no files")


def write_report(path: str, settings: Settings, results: list[FileResult], missing: list[SourceFile],
                 listing_errors: list[str], code: int, seconds: float, bytes_sent: int) -> None:  # fmt: skip
    """--report: one JSON document with every file's outcome, for scripts and audits."""
    document = {
        "tool": f"s3_upload {__version__}",
        "job_type": settings.job_type,
        "destination": f"s3://{settings.des_bucket}/{folder_prefix(settings.s3_prefix)}",
        "exit_code": code,
        "seconds": round(seconds, 3),
        "bytes_sent": bytes_sent,
        "files": [
            {
                "key": r.key,
                "size": r.size,
                "status": r.status,
                "detail": r.detail,
                "parts": r.parts,
                "parts_reused": r.parts_reused,
                "bytes_sent": r.bytes_sent,
                "etag": r.etag,
                "retries": r.retries,
                "seconds": round(r.seconds, 3),
            }
            for r in sorted(results, key=lambda r: r.key)
        ],  # fmt: skip
        "missing": [f.key for f in missing],
        "listing_errors": listing_errors,
    }
    # Written whole or not at all: a crash or a full disk never leaves a truncated JSON behind.
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8", errors="backslashreplace") as fh:
        json.dump(document, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    os.replace(partial, path)
    log.info("report written to %s", path)


def check_report_path(path: str) -> None:
    """--report is checked before anything is transferred: a typo must not cost the report of a long run."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"--report {path} is a directory; give a file name, e.g. {os.path.join(path, 'report.json')}")
    if not os.path.isdir(directory):
        raise UserError(f"--report {path}: the directory {directory} does not exist; create it or choose another path")
    if not os.access(directory, os.W_OK):
        raise UserError(f"--report {path}: this user cannot write in {directory}; choose another path")


def _ignored(settings: Settings, f: SourceFile) -> bool:
    return settings.ignore_small_file and f.size < settings.chunk_size


def print_summary(
    results: list[FileResult], listing_errors: list[str], bytes_sent: int, seconds: float, retries: int
) -> None:
    done = [r for r in results if r.status == "uploaded"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    rate = bytes_sent / seconds if seconds > 0 else 0.0
    report.info(
        "summary: %d uploaded, %d skipped, %d failed; %s (%d bytes) sent in %.1fs, %s/s; %d retries",
        len(done),
        len(skipped),
        len(failed) + len(listing_errors),
        human_bytes(bytes_sent),
        bytes_sent,
        seconds,
        human_bytes(rate),
        retries,
    )
    for r in failed:
        report.info("  failed: %s: %s", r.key, r.detail)
    for e in listing_errors:
        report.info("  failed to list: %s", e)


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
    ("--job-type", "JobType", str, "LOCAL_TO_S3 or S3_TO_S3"),
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
)


def default_config_path() -> str:
    """s3_upload_config.py next to the script (the original's behaviour), else in the current directory (for the
    installed s3-upload command)."""
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "s3_upload_config.py")
    return beside if os.path.isfile(beside) else os.path.abspath("s3_upload_config.py")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="s3_upload",
        description="Multi-threaded, resumable, MD5-verified upload of large files to Amazon S3 (LOCAL_TO_S3) or "
        "between buckets of two accounts (S3_TO_S3). Settings come from the config module (s3_upload_config.py); "
        "the flags below override single values for one run.",
        epilog="Exit codes: 0 every file is at the destination; 1 some file failed (rerun to resume); 2 bad config, "
        "credentials or access; 130 interrupted.",
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
    return parser.parse_args(argv)


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
    shown = ", ".join(f"{names[f.name]}={getattr(settings, f.name)!r}" for f in dataclasses.fields(settings))
    log.info("s3_upload %s settings: %s", __version__, shown)
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
# 8. Fleet mode: a sender queues one SQS message per file; workers on many machines run each through the same engine.
#    S3 stays the only state, so a worker that dies mid-file leaves a multipart upload the next worker resumes.
# ----------------------------------------------------------------------------------------------------------------------

MESSAGE_VERSION = 1
SQS_BATCH = 10  # SendMessageBatch takes at most 10 messages


def file_message(settings: Settings, f: SourceFile) -> dict:
    """One queued file: where it is, where it goes, and what it looked like when it was listed."""
    return {
        "v": MESSAGE_VERSION,
        "job_type": settings.job_type,
        "src_bucket": settings.src_bucket if settings.job_type == "S3_TO_S3" else "",
        "src_key_or_path": f.path if settings.job_type == "LOCAL_TO_S3" else f.key,
        "des_bucket": settings.des_bucket,
        "key": f.key,
        "size": f.size,
        "mtime": f.mtime,
        "src_etag": f.etag,
    }


def message_key(settings: Settings, body: str) -> str:
    """Which file a message names: only its key is taken, and only if the message is for this worker's job.  Size,
    mtime, ETag and path in it are for people; the worker reads the file's state from the source itself.  A message
    this worker cannot serve is poison: it is left in the queue, and after the queue's maxReceiveCount it goes to
    the dead-letter queue."""
    try:
        m = json.loads(body)
        if m.get("v") != MESSAGE_VERSION:
            raise ValueError(f"unknown message version {m.get('v')!r}")
        src_bucket = settings.src_bucket if settings.job_type == "S3_TO_S3" else ""
        if (m["job_type"], m["des_bucket"], m["src_bucket"]) != (settings.job_type, settings.des_bucket, src_bucket):
            raise ValueError("it belongs to another job (JobType or buckets differ from this worker's config)")
        key = m["key"]
        if not isinstance(key, str) or not key:
            raise ValueError("it names no key")
        return key
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
        job.retry.call("SQS queue", functools.partial(sqs.get_queue_attributes, QueueUrl=queue_url,
                                                      AttributeNames=["VisibilityTimeout"]))  # fmt: skip
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in QUEUE_MISSING_CODES:
            raise UserError(f"queue {queue_url} does not exist; create it (see README) or fix the URL") from None
        if code in CREDENTIAL_ERROR_CODES or "AccessDenied" in code:
            raise UserError(f"queue {queue_url}: {code}; give the SQS profile (SQSProfileName) access to it") from None
        raise
    except botocore.exceptions.EndpointConnectionError:
        raise UserError(f"queue {queue_url}: cannot connect; check the URL and SQSEndpointURL") from None
    return sqs


def send_to_queue(settings: Settings, stop: threading.Event, options: RunOptions, queue_url: str) -> int:
    """--sqs-send: list and diff once, exactly as a run decides, then queue one message per file to transfer."""
    job = open_job(settings, stop)
    sqs = None if options.dry_run else open_queue(job, queue_url)
    files, destination, uploads = list_job(job)
    tasks = [t for t in plan_files(settings, files, destination, uploads) if t.action != "skip"]
    skipped = len(files) - len(tasks)
    messages = [file_message(settings, t.src) for t in tasks]
    if options.dry_run:
        for m in messages:
            report.info("%s", json.dumps(m))
        report.info("dry run: %d message(s) would be queued, %d file(s) skipped; nothing was sent", len(messages),
                    skipped)  # fmt: skip
        return EXIT_OK
    assert sqs is not None
    for start in range(0, len(messages), SQS_BATCH):
        # ASCII JSON: a local path that is not UTF-8 travels as \udcXX escapes and comes back the same.
        batch = {str(n): json.dumps(m) for n, m in enumerate(messages[start : start + SQS_BATCH])}
        for attempt in range(settings.max_retry + 1):
            entries = [{"Id": i, "MessageBody": body} for i, body in batch.items()]
            resp = job.retry.call("SQS send", functools.partial(sqs.send_message_batch, QueueUrl=queue_url,
                                                                Entries=entries))  # fmt: skip
            batch = {f["Id"]: batch[f["Id"]] for f in resp.get("Failed", [])}
            if not batch:
                break
            log.warning("SQS refused %d message(s) of a batch; sending them again", len(batch))
            if stop.wait(attempt * settings.retry_delay):
                raise KeyboardInterrupt
        if batch:
            raise FileFailed(f"SQS refused {len(batch)} message(s) {settings.max_retry + 1} times")
    total = sum(t.src.size for t in tasks)
    report.info("queued %d file(s) (%s) to %s; %d skipped", len(messages), human_bytes(total), queue_url, skipped)
    return EXIT_OK


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
        f = job.source.resolve(message_key(settings, message["Body"]))  # the file as it is now, in this job
        with Heartbeat(sqs, queue_url, receipt, settings.sqs_visibility_timeout, retry):
            if destination_complete(job, f):
                log.info("message %s: s3://%s/%s is already complete; deleting the message", message_id,
                         settings.des_bucket, f.key)  # fmt: skip
                delete()
                return True
            uploads = list_unfinished_uploads(job.des_client, settings.des_bucket, f.key, retry)
            [task] = plan_files(settings, [f], {}, [u for u in uploads if u.key == f.key])
            [result] = engine.run([task])
        if result.status in ("uploaded", "skipped"):
            delete()
            return True
        if destination_complete(job, f):
            # A duplicate delivery: another worker completed this key while we worked on it (its upload is gone).
            log.info("message %s: s3://%s/%s was completed by another worker; deleting the message", message_id,
                     settings.des_bucket, f.key)  # fmt: skip
            delete()
            return True
        log.error("message %s (%s): %s; left in the queue for another try", message_id, f.key, result.detail)
    except (FileFailed, OSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        detail = str(exc) if isinstance(exc, FileFailed) else describe_error(exc) + fix_hint(exc)
        log.error("message %s: %s; left in the queue for another try", message_id, detail)
    return False


def destination_complete(job: Job, f: SourceFile) -> bool:
    """Is the object there with the file's size (the same test as a normal run's skip)?  Unfinished uploads of
    the key older than the object are leftovers of duplicate deliveries: nothing can resume them any more."""
    settings = job.settings
    try:
        head = job.retry.call(f"HEAD {f.key}", functools.partial(job.des_client.head_object,
                                                                 Bucket=settings.des_bucket, Key=f.key))  # fmt: skip
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in NOT_FOUND_CODES:
            return False
        raise
    if head["ContentLength"] != f.size:
        return False
    written = head["LastModified"].timestamp()
    for u in list_unfinished_uploads(job.des_client, settings.des_bucket, f.key, job.retry):
        if u.key == f.key and u.initiated < written:
            log.info("%s: aborting upload %s, older than the complete object", f.key, short_id(u.upload_id))
            abort_upload(job.des_client, settings.des_bucket, f.key, u.upload_id, job.retry)
    return True


if __name__ == "__main__":
    cli()
