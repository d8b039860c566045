"""Every mistake a user can make in the config, on the command line or in the AWS profile ends in one line on the
console that names what is wrong and how to fix it: exit code 2, no traceback, and nothing sent to S3.

The last tests check the other side: a config written for the original tool (v1.0) still runs unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import subprocess
import sys

import pytest

import s3_upload
from conftest import (
    DROP,
    DST_KEYS,
    SCRIPT,
    MiB,
    Run,
    assert_tree_uploaded,
    list_keys,
    run_tool,
    tool_command,
    unfinished_uploads,
    without_permission_override,
    write_file,
)
from faultproxy import FaultProxy

GiB = 1024 * MiB
SECRET = "not-the-secret"  # the wrong secret key of the "badsecret" profile (conftest.aws_profiles)


def error_line(run) -> str:
    """The one console line that carries the error; it is the last line on stderr (nothing follows it)."""
    assert run.code == 2, run
    assert "Traceback" not in run.output, run
    lines = [line for line in run.output.splitlines() if "error:" in line]
    assert len(lines) == 1, run
    assert run.stderr.rstrip("\n").splitlines()[-1] == lines[0], run
    return lines[0]


class Expr:
    """A config value written as Python source (write_config writes each value's repr)."""

    def __init__(self, source: str):
        self.source = source

    def __repr__(self) -> str:
        return self.source


def assert_user_error(run, *words: str) -> str:
    line = error_line(run)
    for word in words:
        assert word in line, f"{word!r} not in the error line: {line!r}"
    return line


def assert_nothing_uploaded(dst, bucket: str) -> None:
    assert list_keys(dst, bucket) == {}
    assert unfinished_uploads(dst, bucket) == []


@pytest.fixture
def source(src_dir):
    """A source that would be uploaded if the run got that far: one multipart file and one small file."""
    write_file(src_dir / "big.bin", 6 * MiB)
    write_file(src_dir / "small.txt", 100)
    return src_dir


# ---------------------------------------------------------------------------------------------------------------------
# A bad value for each option: rejected before any request
# ---------------------------------------------------------------------------------------------------------------------

# (id, overrides: a dict, or a function of the source dir and the bucket, words that the error line must contain)
# An ALIOSS_TO_S3 job: its ali_ options are checked only for that job type.
OSS_JOB = {"JobType": "ALIOSS_TO_S3", "ali_SrcBucket": "oss-b", "ali_access_key_id": "LTAIkey",
           "ali_access_key_secret": "secret", "ali_endpoint": "oss-cn-beijing.aliyuncs.com"}  # fmt: skip

BAD_VALUES = [
    ("JobType-unknown", {"JobType": "LOCAL_TO_GCS"}, ("JobType", "'LOCAL_TO_GCS'", "unknown", "S3_TO_S3")),
    ("JobType-lowercase", {"JobType": "local_to_s3"}, ("JobType", "unknown", "'LOCAL_TO_S3'")),
    ("ChunkSize-below-5MiB", {"ChunkSize": 5 * MiB - 1}, ("ChunkSize", "out of range", "5 MiB to 5 GiB")),
    ("ChunkSize-above-5GiB", {"ChunkSize": 5 * GiB + 1}, ("ChunkSize", "out of range", "Megabytes")),
    ("ChunkSize-zero", {"ChunkSize": 0}, ("ChunkSize", "out of range", "5 MiB to 5 GiB")),
    ("ChunkSize-str", {"ChunkSize": "50MB"}, ("ChunkSize", "must be int", "'50MB'", "fix it")),
    ("ChunkSize-bool", {"ChunkSize": True}, ("ChunkSize", "must be int", "bool True", "fix it")),
    ("ChunkSize-float", {"ChunkSize": 5.5 * MiB}, ("ChunkSize", "must be int", "float", "fix it")),
    ("MaxRetry-negative", {"MaxRetry": -1}, ("MaxRetry", "-1", "0 or more")),
    ("MaxRetry-str", {"MaxRetry": "30"}, ("MaxRetry", "must be int", "'30'", "fix it")),
    ("MaxThread-0", {"MaxThread": 0}, ("MaxThread", "at least 1", "got 0", "positive")),
    ("MaxThread-negative", {"MaxThread": -1}, ("MaxThread", "at least 1", "got -1", "positive")),
    ("MaxParallelFile-0", {"MaxParallelFile": 0}, ("MaxParallelFile", "at least 1", "positive")),
    ("StorageClass-unknown", {"StorageClass": "COLD"}, ("StorageClass", "'COLD'", "unknown", "STANDARD_IA")),
    ("LoggingLevel-unknown", {"LoggingLevel": "LOUD"}, ("LoggingLevel", "'LOUD'", "unknown", "'INFO'")),
    ("IgnoreSmallFile-str", {"IgnoreSmallFile": "yes"}, ("IgnoreSmallFile", "must be bool", "'yes'")),
    ("IgnoreSmallFile-int", {"IgnoreSmallFile": 1}, ("IgnoreSmallFile", "must be bool", "int 1")),
    ("ifVerifyMD5-str", {"ifVerifyMD5": "yes"}, ("ifVerifyMD5", "must be bool", "'yes'", "fix it")),
    ("DontAskMeToClean-str", {"DontAskMeToClean": "yes"}, ("DontAskMeToClean", "must be bool", "'yes'")),
    ("DesBucket-empty", {"DesBucket": ""}, ("DesBucket", "empty", "set the destination bucket")),
    ("DesBucket-missing", {"DesBucket": DROP}, ("DesBucket", "empty", "set the destination bucket")),
    ("SrcDir-missing", lambda d, b: {"SrcDir": str(d / "nope")}, ("SrcDir", "nope", "does not exist", "set SrcDir")),
    ("SrcDir-empty", {"SrcDir": ""}, ("SrcDir", "empty", "local directory")),
    ("SrcDir-is-a-file", lambda d, b: {"SrcDir": str(d / "big.bin")}, ("SrcDir", "not a directory", "SrcFileIndex")),
    ("SrcFileIndex-empty", {"SrcFileIndex": ""}, ("SrcFileIndex", "empty", "'*'")),
    ("S3Prefix-int", {"S3Prefix": 2024}, ("S3Prefix", "must be str", "int 2024", "fix it")),
    ("RetryDelay-negative", {"RetryDelay": -1}, ("RetryDelay", "0 or more")),
    ("AbandonedAfter-negative", {"AbandonedAfter": -1}, ("AbandonedAfter", "0 or more", "AbandonedAfter = 3600")),
    ("AbandonedAfter-NaN", {"AbandonedAfter": Expr("float('nan')")}, ("AbandonedAfter", "nan", "finite")),
    ("RetryDelay-str", {"RetryDelay": "5"}, ("RetryDelay", "must be int or float", "'5'")),
    ("LogDir-int", {"LogDir": 7}, ("LogDir", "must be str", "int 7")),
    ("LogDir-is-a-file", lambda d, b: {"LogDir": str(d / "small.txt")}, ("cannot write the log", "set LogDir")),
    ("SrcBucket-empty-S3_TO_S3", {"JobType": "S3_TO_S3", "SrcBucket": ""}, ("SrcBucket", "empty")),
    (
        "SrcBucket-same-as-DesBucket",
        lambda d, b: {"JobType": "S3_TO_S3", "SrcBucket": b, "SrcProfileName": "dst"},
        ("SrcBucket and DesBucket", "same bucket", "set another DesBucket"),
    ),
    ("DesProfileName-int", {"DesProfileName": 1}, ("DesProfileName", "must be str", "int 1")),
    ("SrcProfileName-int", {"SrcProfileName": 1}, ("SrcProfileName", "must be str", "int 1")),
    ("ConnectTimeout-zero", {"ConnectTimeout": 0}, ("ConnectTimeout", "more than 0 seconds", "got 0")),
    ("ConnectTimeout-str", {"ConnectTimeout": "10"}, ("ConnectTimeout", "must be int or float", "'10'")),
    ("ReadTimeout-negative", {"ReadTimeout": -1}, ("ReadTimeout", "more than 0 seconds", "got -1")),
    ("ReadTimeout-none", {"ReadTimeout": None}, ("ReadTimeout", "must be int or float", "NoneType None")),
    ("ChecksumMode-unknown", {"ChecksumMode": "CRC32"}, ("ChecksumMode", "'CRC32'", "unknown", "'MD5_CRC32'")),
    ("DesEndpointURL-no-scheme", {"DesEndpointURL": "s3.local"}, ("DesEndpointURL", "'s3.local'", "http://")),
    ("SrcEndpointURL-no-scheme", {"SrcEndpointURL": "ftp://x"}, ("SrcEndpointURL", "'ftp://x'", "https://")),
    ("AddressingStyle-unknown", {"AddressingStyle": "dns"}, ("AddressingStyle", "'dns'", "unknown", "'path'")),
    (
        "ServerSideEncryption-unknown",
        {"ServerSideEncryption": "aws:kms:dsse"},
        ("ServerSideEncryption", "'aws:kms:dsse'", "unknown", "'AES256'"),
    ),
    ("SSEKMSKeyId-without-kms", {"SSEKMSKeyId": "k1"}, ("SSEKMSKeyId", "not 'aws:kms'")),
    ("ACL-unknown", {"ACL": "public"}, ("ACL", "'public'", "unknown", "bucket-owner-full-control")),
    ("MaxBandwidth-negative", {"MaxBandwidth": -1}, ("MaxBandwidth", "0 (unlimited)", "-1")),
    ("MaxBandwidth-float", {"MaxBandwidth": 1.5e6}, ("MaxBandwidth", "must be int", "float")),
    ("SQSProfileName-int", {"SQSProfileName": 7}, ("SQSProfileName", "must be str", "int 7")),
    ("SQSEndpointURL-no-scheme", {"SQSEndpointURL": "sqs.local"}, ("SQSEndpointURL", "'sqs.local'", "http://")),
    ("SQSIdleSeconds-zero", {"SQSIdleSeconds": 0}, ("SQSIdleSeconds", "more than 0", "got 0")),
    ("SQSVisibilityTimeout-zero", {"SQSVisibilityTimeout": 0}, ("SQSVisibilityTimeout", "1 to 43200", "got 0")),
    ("SQSVisibilityTimeout-above-12h", {"SQSVisibilityTimeout": 43201}, ("SQSVisibilityTimeout", "1 to 43200")),
    ("SQSVisibilityTimeout-float", {"SQSVisibilityTimeout": 1.5}, ("SQSVisibilityTimeout", "must be int", "float")),
    ("SQSPartsPerMessage-zero", {"SQSPartsPerMessage": 0}, ("SQSPartsPerMessage", "1 to 9998", "got 0")),
    ("SQSPartsPerMessage-above-the-data-parts", {"SQSPartsPerMessage": 9999}, ("SQSPartsPerMessage", "1 to 9998")),
    ("CopyMode-unknown", {"CopyMode": "sideways"}, ("CopyMode", "'sideways'", "unknown", "'server'")),
    ("ali_SrcBucket-empty", dict(OSS_JOB, ali_SrcBucket=""), ("ali_SrcBucket", "empty", "OSS bucket")),
    ("ali_access_key_id-empty", dict(OSS_JOB, ali_access_key_id=""), ("ali_access_key_id", "empty", "RAM user")),
    ("ali_access_key_secret-int", dict(OSS_JOB, ali_access_key_secret=7),
     ("ali_access_key_secret", "must be str", "(value not shown)")),
    ("ali_endpoint-ftp", dict(OSS_JOB, ali_endpoint="ftp://oss.example"), ("ali_endpoint", "not an OSS endpoint")),
    ("ali_endpoint-port-above-65535", dict(OSS_JOB, ali_endpoint="oss.example:99999"),
     ("ali_endpoint", "'oss.example:99999'", "not an OSS endpoint")),
    ("ali_endpoint-unclosed-bracket", dict(OSS_JOB, ali_endpoint="oss[.example"), ("ali_endpoint", "not an OSS")),
    # Values that passed the checks above and then raised inside the tool (ValueError, a hang) or at the first request.
    ("SrcFileIndex-NUL", {"SrcFileIndex": "a\0b"}, ("SrcFileIndex", "'a\\x00b'", "NUL", "remove it")),
    ("LogDir-NUL", {"LogDir": "log\0"}, ("LogDir", "'log\\x00'", "NUL", "remove it")),
    ("SrcDir-NUL", {"SrcDir": "/data\0"}, ("SrcDir", "'/data\\x00'", "NUL", "remove it")),
    ("DesEndpointURL-no-host", {"DesEndpointURL": "http://"}, ("DesEndpointURL", "'http://'", "no host",
                                                              "http(s)://HOST[:PORT]")),
    ("DesEndpointURL-port-above-65535", {"DesEndpointURL": "http://127.0.0.1:99999"},
     ("DesEndpointURL", "'http://127.0.0.1:99999'", "port", "1 to 65535")),
    ("SrcEndpointURL-port-not-a-number", {"SrcEndpointURL": "http://s3.local:port"},
     ("SrcEndpointURL", "'http://s3.local:port'", "port", "1 to 65535")),
    ("SrcEndpointURL-space-in-host", {"SrcEndpointURL": "http://s3 local"}, ("SrcEndpointURL", "host")),
    ("DesEndpointURL-unclosed-IPv6", {"DesEndpointURL": "http://[::1:8333"}, ("DesEndpointURL", "not a URL",
                                                                            "[brackets]")),
    ("DesEndpointURL-with-a-query", {"DesEndpointURL": "http://s3.local?x=1"}, ("DesEndpointURL", "?query")),
    ("SQSEndpointURL-no-host", {"SQSEndpointURL": "https://"}, ("SQSEndpointURL", "'https://'", "no host")),
    ("RetryDelay-NaN", {"RetryDelay": Expr("float('nan')")}, ("RetryDelay", "nan", "finite", "RetryDelay = 5")),
    ("ConnectTimeout-inf", {"ConnectTimeout": Expr("float('inf')")}, ("ConnectTimeout", "inf", "finite")),
    ("ReadTimeout-NaN", {"ReadTimeout": Expr("float('nan')")}, ("ReadTimeout", "nan", "finite")),
    ("SQSIdleSeconds-NaN", {"SQSIdleSeconds": Expr("float('nan')")}, ("SQSIdleSeconds", "nan", "finite")),
    ("MaxThread-above-1000", {"MaxThread": 1001}, ("MaxThread", "1001", "at most 1000")),
    ("MaxParallelFile-above-1000", {"MaxParallelFile": 1001}, ("MaxParallelFile", "1001", "at most 1000")),
    ("MaxThread-more-memory-than-this-machine", {"MaxThread": 1000, "MaxParallelFile": 1000, "ChunkSize": 5 * GiB},
     ("MaxParallelFile 1000 x MaxThread 1000 x ChunkSize 5368709120", "memory", "lower")),
]  # fmt: skip


def test_every_option_has_a_bad_value_case():
    """The README's promise, kept as options are added: every config option has a case above."""
    assert set(s3_upload.CONFIG_OPTIONS) - {case[0].split("-")[0] for case in BAD_VALUES} == set()


@pytest.mark.parametrize("overrides, words", [p[1:] for p in BAD_VALUES], ids=[p[0] for p in BAD_VALUES])
def test_bad_option_value_is_one_line_exit_2_and_nothing_uploaded(
    dst, bucket, source, make_config, tmp_path, capsys, overrides, words
):
    """In-process (main(), the function the command runs; the other tests here run the command itself): with 70-odd
    cases, a Python start each would cost the suite half a minute."""
    values = overrides(source, bucket) if callable(overrides) else overrides
    code = s3_upload.main(["--config", str(make_config(**values))])
    out, err = capsys.readouterr()
    run = Run(subprocess.CompletedProcess([], code, out, err))
    assert_user_error(run, *words)
    assert_nothing_uploaded(dst, bucket)
    if "LogDir" not in values:  # a config error stops the run before the log file is opened
        assert not (tmp_path / "log").exists()


def test_src_file_index_naming_a_missing_file(dst, bucket, source, make_config):
    run = run_tool(make_config(SrcFileIndex="missing.bin"))
    assert_user_error(run, "SrcFileIndex", "'missing.bin'", "not a file in SrcDir", str(source), "use '*'")
    assert_nothing_uploaded(dst, bucket)


# ---------------------------------------------------------------------------------------------------------------------
# Profiles, buckets and credentials: rejected by the first listing
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_des_profile_name(dst, bucket, source, make_config):
    run = run_tool(make_config(DesProfileName="nosuchprofile"))
    line = assert_user_error(run, "DesProfileName 'nosuchprofile': no such profile", "~/.aws/credentials")
    assert "dst" in line.split("known:")[1]  # the profiles that do exist are listed
    assert_nothing_uploaded(dst, bucket)


def test_unknown_src_profile_name_for_s3_to_s3(dst, bucket, source, make_config):
    run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket="some-source-bucket", SrcProfileName="nosuchsrc"))
    assert_user_error(run, "SrcProfileName 'nosuchsrc': no such profile", "~/.aws/credentials", "SrcProfileName")
    assert_nothing_uploaded(dst, bucket)


def test_unknown_sqs_profile_name(dst, bucket, source, make_config, moto_url):
    """SQSProfileName is only used by the fleet mode: --sqs-send with a profile that does not exist."""
    config = make_config(SQSProfileName="nosuchqueue")
    proc = subprocess.run([*tool_command(config), "--sqs-send", f"{moto_url}/123456789012/q"], cwd=config.parent,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert_user_error(Run(proc), "SQSProfileName 'nosuchqueue': no such profile", "fix SQSProfileName")
    assert_nothing_uploaded(dst, bucket)


@pytest.mark.parametrize(
    "option, other, overrides",
    [
        ("DesProfileName", "SrcProfileName", {"DesProfileName": "nosuchprofile"}),
        ("SrcProfileName", "DesProfileName", {"JobType": "S3_TO_S3", "SrcBucket": "sb", "SrcProfileName": "nosuch"}),
    ],
)
def test_unknown_profile_names_only_its_own_option(source, make_config, option, other, overrides):
    line = assert_user_error(run_tool(make_config(**overrides)), option)
    assert other not in line


def test_destination_bucket_that_does_not_exist(dst, bucket, source, make_config):
    missing = bucket + "-missing"
    run = run_tool(make_config(DesBucket=missing))
    assert_user_error(run, f"s3://{missing}", "bucket does not exist", "check the bucket name")
    assert missing not in {b["Name"] for b in dst.list_buckets()["Buckets"]}  # not created by the tool either
    assert_nothing_uploaded(dst, bucket)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_wrong_secret_key_mentions_credentials_and_never_shows_the_secret(
    dst, bucket, source, make_config, tmp_path, level
):
    run = run_tool(make_config(DesProfileName="badsecret", LoggingLevel=level))
    assert_user_error(run, "profile badsecret", "credentials were refused", "secret", "~/.aws/credentials")
    assert_nothing_uploaded(dst, bucket)
    assert SECRET not in run.output
    logs = sorted((tmp_path / "log").glob("*"))
    assert logs, "the run that reached the network writes a log file"
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in logs)
    assert "credentials were refused" in text  # the error is in the log file too
    assert SECRET not in text


def set_profile_line(aws_profiles, profile: str, option: str, value: str | None) -> None:
    """Give a profile of ~/.aws/config another value for one of its lines (region, endpoint_url); None drops it."""
    path = aws_profiles.directory / "config"
    sections = path.read_text().split("\n\n")
    for n, section in enumerate(sections):
        if section.startswith(f"[profile {profile}]\n"):
            lines = [f"{option} = {value}" if line.startswith(f"{option} =") else line for line in section.split("\n")]
            sections[n] = "\n".join(line for line in lines if line != f"{option} = None")
    path.write_text("\n\n".join(sections))


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("endpoint_url", "not a url", ("DesProfileName 'odd'", "endpoint_url", "'not a url'", "~/.aws/config",
                                       "DesEndpointURL")),
        ("endpoint_url", "http://127.0.0.1:99999", ("DesProfileName 'odd'", "endpoint_url", "'http://127.0.0.1:99999'",
                                                    "port", "1 to 65535", "~/.aws/config")),
        ("region", "us east 1!", ("DesProfileName 'odd'", "region", "'us east 1!'", "~/.aws/config", "us-east-1")),
    ],
    ids=["endpoint-not-a-url", "endpoint-port-above-65535", "region-not-a-region"],
)  # fmt: skip
def test_a_bad_value_in_the_profile_is_one_line_naming_it(dst, bucket, source, make_config, aws_profiles, dst_server,
                                                          option, value, words):  # fmt: skip
    aws_profiles.add("odd", dst_server.endpoint_url, *DST_KEYS)
    set_profile_line(aws_profiles, "odd", option, value)
    for extra in ((), ("--dry-run",)):
        run = run_tool(make_config(DesProfileName="odd"), extra=extra)
        line = assert_user_error(run, *words)
        assert "rerun" not in line, line  # nothing a rerun would fix
    assert_nothing_uploaded(dst, bucket)


def test_a_bad_endpoint_in_the_source_profile_names_src_profile_name(dst, bucket, make_config, aws_profiles):
    aws_profiles.add("oddsrc", "http://127.0.0.1:70000", *DST_KEYS)
    run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket="some-source-bucket", SrcProfileName="oddsrc"))
    line = assert_user_error(run, "SrcProfileName 'oddsrc'", "'http://127.0.0.1:70000'", "port", "SrcEndpointURL")
    assert "DesProfileName" not in line
    assert_nothing_uploaded(dst, bucket)


@pytest.mark.parametrize("broken", ["config", "credentials"])
def test_a_syntax_error_in_the_aws_files_is_one_line_naming_the_file(dst, bucket, source, make_config, aws_profiles,
                                                                     broken):  # fmt: skip
    config = make_config()
    path = aws_profiles.directory / broken
    path.write_text(path.read_text() + "\n[profile unclosed\nregion = us-east-1\n")
    run = run_tool(config)
    line = assert_user_error(run, str(path), "cannot be parsed", "fix")
    assert "rerun" not in line, line
    assert_nothing_uploaded(dst, bucket)


def test_the_queue_of_a_profile_without_region_is_one_line(dst, bucket, source, make_config, aws_profiles, dst_server):
    """A profile for an S3-compatible store often holds only endpoint_url; the queue is never behind it, so without
    SQSEndpointURL it is AWS's SQS of the profile's region, and there is none."""
    aws_profiles.add("storeonly", dst_server.endpoint_url, *DST_KEYS)
    set_profile_line(aws_profiles, "storeonly", "region", None)
    config = make_config(DesProfileName="storeonly")
    proc = subprocess.run([*tool_command(config), "--sqs-worker", "https://sqs.us-east-1.amazonaws.com/1/q"],
                          cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert_user_error(Run(proc), "DesProfileName 'storeonly' has no region", "SQS", "set region", "~/.aws/config")
    assert_nothing_uploaded(dst, bucket)


def test_sqs_profile_with_a_bad_endpoint_is_one_line(dst, bucket, source, make_config, aws_profiles):
    aws_profiles.add("oddqueue", "http://", *DST_KEYS)
    config = make_config(SQSProfileName="oddqueue")
    proc = subprocess.run([*tool_command(config), "--sqs-send", "http://127.0.0.1:1/123456789012/q"],
                          cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert_user_error(Run(proc), "SQSProfileName 'oddqueue'", "endpoint_url", "'http://'", "SQSEndpointURL")
    assert_nothing_uploaded(dst, bucket)


# ---------------------------------------------------------------------------------------------------------------------
# The config file itself and the command line
# ---------------------------------------------------------------------------------------------------------------------


def test_config_file_missing(tmp_path, aws_profiles):
    path = tmp_path / "nowhere" / "s3_upload_config.py"
    run = run_tool(path, cwd=tmp_path)
    assert_user_error(run, f"config file {path} not found", "--config PATH")


def test_config_file_not_named_py(tmp_path, aws_profiles):
    path = tmp_path / "s3_upload_config.txt"
    path.write_text("JobType = 'LOCAL_TO_S3'\n")
    run = run_tool(path)
    assert_user_error(run, str(path), "cannot be loaded as Python", ".py")


def test_config_with_a_syntax_error_names_the_line(dst, bucket, tmp_path, aws_profiles):
    path = tmp_path / "s3_upload_config.py"
    path.write_text(f'JobType = "LOCAL_TO_S3"\nDesBucket = "{bucket}"\nChunkSize = 50 *\nMaxThread = 3\n')
    run = run_tool(path)
    assert_user_error(run, str(path), "line 3", "fix the Python syntax")
    assert_nothing_uploaded(dst, bucket)


def test_config_with_unclosed_string(tmp_path, aws_profiles):
    path = tmp_path / "s3_upload_config.py"
    path.write_text('JobType = "LOCAL_TO_S3"\nSrcDir = "/data/files\nMaxThread = 3\n')
    run = run_tool(path)
    assert_user_error(run, str(path), "line 2", "fix the Python syntax")


def test_config_file_not_readable_is_one_line_naming_its_permissions(tmp_path):
    path = tmp_path / "s3_upload_config.py"
    path.write_text('JobType = "LOCAL_TO_S3"\n')
    path.chmod(0o200)  # written by another user's umask, or a copy kept private by mistake
    try:
        proc = subprocess.run(tool_command(path), cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60, preexec_fn=without_permission_override)  # fmt: skip
    finally:
        path.chmod(0o644)
    assert_user_error(Run(proc), f"config file {path} cannot be read (Permission denied); check its permissions")
    assert not (tmp_path / "log").exists()


NAME_ERROR_CONFIG = 'JobType = "LOCAL_TO_S3"\nMegabytes = 1024 * 1024\nChunkSize = 50 * Megabyte\n'


def test_config_raising_name_error(dst, bucket, tmp_path, aws_profiles):
    path = tmp_path / "s3_upload_config.py"
    path.write_text(NAME_ERROR_CONFIG)
    run = run_tool(path)
    assert_user_error(run, str(path), "NameError", "'Megabyte'", "fix")
    assert_nothing_uploaded(dst, bucket)


def test_config_raising_name_error_names_the_line(tmp_path, aws_profiles):
    path = tmp_path / "s3_upload_config.py"
    path.write_text(NAME_ERROR_CONFIG)
    run = run_tool(path)
    assert_user_error(run, "NameError", "line 3")


def test_help_mentions_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc
    assert "--config" in proc.stdout and "PATH" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "log").exists()


def test_unknown_command_line_argument(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--confg", "x.py"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "unrecognized arguments: --confg" in errors[0], proc


def test_an_abbreviated_flag_is_not_taken_for_a_longer_one(source, make_config):
    """--verify is not --verify-md5, --dry not --dry-run: a flag is spelt out or refused."""
    for flag in ("--verify", "--dry"):
        run = run_tool(make_config(), extra=(flag,))
        assert run.code == 2, run
        assert "Traceback" not in run.output, run
        errors = [line for line in run.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and f"unrecognized arguments: {flag}" in errors[0], run


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--threads", "100000000"), ("MaxThread", "100000000", "at most 1000")),
        (("--parallel-files", "5000"), ("MaxParallelFile", "5000", "at most 1000")),
        (("--threads", "1000", "--parallel-files", "1000", "--chunk-size", "5GiB"),
         ("MaxParallelFile 1000 x MaxThread 1000 x ChunkSize 5368709120", "memory")),
        (("--idle-exit", "nan"), ("SQSIdleSeconds", "nan", "finite")),
    ],
    ids=["threads", "parallel-files", "memory", "idle-exit-nan"],
)  # fmt: skip
def test_a_flag_value_out_of_bounds_is_one_line_also_with_dry_run(dst, bucket, source, make_config, flags, words):
    """--threads 100000000 used to hang (even with --dry-run): a connection pool that large is built slot by slot."""
    for extra in (flags, (*flags, "--dry-run")):
        run = run_tool(make_config(), extra=extra, timeout=60)
        assert_user_error(run, *words)
    assert_nothing_uploaded(dst, bucket)


# ---------------------------------------------------------------------------------------------------------------------
# A config written for the original tool runs unchanged
# ---------------------------------------------------------------------------------------------------------------------

SEED_CONFIG = '''\
# -*- coding: utf-8 -*-

"""Basic Configure"""
JobType = "LOCAL_TO_S3"  # 'LOCAL_TO_S3' | 'S3_TO_S3'
SrcFileIndex = "*"  # 指定要上传的文件的文件名, type = str，Upload全部文件则用 "*"
S3Prefix = "multipart/"  # S3_TO_S3源S3的Prefix，LOCAL_TO_S3则为目标S3的Prefix, type = str
DesProfileName = "dst"  # 在~/.aws 中配置的能访问目标S3的 profile name
DesBucket = "{bucket}"  # 目标文件bucket, type = str

"""Configure for LOCAL_TO_S3"""
SrcDir = r"{src_dir}"
# 原文件本地存放目录, S3_TO_S3则该字段无效 type = str

"""Configure for S3_TO_S3"""
SrcBucket = "my-us-bucket"  # 源Bucket，LOCAL_TO_S3则本字段无效
SrcProfileName = "us"  # 在~/.aws 中配置的能访问源S3的 profile name，LOCAL_TO_S3则本字段无效

"""Advanced Configure"""
Megabytes = 1024*1024
ChunkSize = 5 * Megabytes  # 文件分片大小，不小于5M，单文件分片总数不能超过10000, type = int
MaxRetry = 20  # 单个Part上传失败后，最大重试次数, type = int
MaxThread = 5  # 单文件同时上传的进程数量, type = int
MaxParallelFile = 5  # 并行操作文件数量, type = int
# 即同时并发的进程数 = MaxParallelFile * MaxThread
IgnoreSmallFile = False  # 是否跳过小于chunksize的小文件, type = bool
StorageClass = "STANDARD"
# 'STANDARD'|'REDUCED_REDUNDANCY'|'STANDARD_IA'|'ONEZONE_IA'|'INTELLIGENT_TIERING'|'GLACIER'|'DEEP_ARCHIVE'
ifVerifyMD5 = False
# 整个文件完成上传合并之后再次进行整个文件的ETag校验MD5。该开关不影响每个分片上传时候的MD5校验。
# 对于S3_TO_S3，该开关True会在断点续传的时候重新下载所有已传过的分片来计算MD5
DontAskMeToClean = False  # False 遇到存在现有的未完成upload时，不再询问是否Clean，默认不Clean，自动续传
LoggingLevel = "INFO"  # 日志输出级别 'WARNING' | 'INFO' | 'DEBUG'
'''


def test_config_from_the_original_tool_works_unchanged(dst, bucket, tmp_path, src_dir, aws_profiles):
    write_file(src_dir / "big.bin", 5 * MiB + 4321)  # two parts
    write_file(src_dir / "sub" / "文件.txt", 777)
    config = tmp_path / "s3_upload_config.py"
    config.write_text(SEED_CONFIG.format(bucket=bucket, src_dir=f"{src_dir}/"), encoding="utf-8")
    assert "RetryDelay" not in config.read_text() and "LogDir" not in config.read_text()

    run = run_tool(config, cwd=tmp_path)
    assert run.code == 0, run
    assert "Traceback" not in run.output and "error:" not in run.output, run
    assert list_keys(dst, bucket) == {"multipart/big.bin": 5 * MiB + 4321, "multipart/sub/文件.txt": 777}
    assert assert_tree_uploaded(dst, bucket, "multipart/", src_dir) == 2  # object_md5 == md5_file for each
    assert unfinished_uploads(dst, bucket) == []
    assert "All source files are in destination" in run.stdout
    logs = list((tmp_path / "log").glob("s3_upload-*.log"))  # LogDir defaults to "log" under the cwd
    assert len(logs) == 1 and "finish multipart/big.bin" in logs[0].read_text(encoding="utf-8")


def test_shipped_sample_config_is_valid(tmp_path):
    """The sample s3_upload_config.py passes validation once SrcDir exists (its bucket and paths are placeholders)."""
    import s3_upload

    values = s3_upload.load_config_module(str(pathlib.Path(SCRIPT).parent / "s3_upload_config.py"))
    values["SrcDir"] = str(tmp_path)
    settings = s3_upload.settings_from_values(values)
    assert (settings.chunk_size, settings.max_thread, settings.max_parallel_file) == (10 * MiB, 5, 5)
    assert settings.des_profile == "default" and settings == dataclasses.replace(
        s3_upload.Settings(),
        **{
            f.name: getattr(settings, f.name)
            for f in dataclasses.fields(settings)
            if f.name
            in (
                "des_bucket",
                "src_dir",
                "src_bucket",
                "s3_prefix",
                "ali_src_bucket",
                "ali_access_key_id",
                "ali_access_key_secret",
                "ali_endpoint",
            )
        },
    )


# ---------------------------------------------------------------------------------------------------------------------
# Misspelt options, access refused, expired credentials, another region
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("typo", "option"), [("ChunkSzie", "ChunkSize"), ("MaxThreads", "MaxThread"),
                                              ("dontaskmetoclean", "DontAskMeToClean")])  # fmt: skip
def test_misspelt_option_names_the_close_match(dst, bucket, source, make_config, typo, option):
    config = make_config(**{option: DROP})  # a name close to an option the config sets is not a typo of it
    config.write_text(config.read_text() + f"{typo} = 1\n")
    assert_user_error(run_tool(config), repr(typo), f"did you mean {option!r}")
    assert_nothing_uploaded(dst, bucket)


def test_misspelt_option_next_to_its_option_is_an_error_that_does_not_say_rename(dst, bucket, source, make_config):
    config = make_config()  # sets ChunkSize
    config.write_text(config.read_text() + "ChunkSzie = 64 * Megabytes\n")
    assert_user_error(run_tool(config), "'ChunkSzie'", "also sets 'ChunkSize'", "delete 'ChunkSzie'")
    assert_nothing_uploaded(dst, bucket)


def test_helper_names_in_the_config_are_not_options(dst, bucket, source, make_config):
    """Helpers are ignored, and an option computed from them is used: big.bin (6 MiB) goes up as one part of
    ChunkSize = My_Chunk = 6 MiB (the default 50 MiB would be one PutObject, 5 MiB two parts)."""
    config = make_config(ChunkSize=DROP)
    helpers = "Gigabytes = 1024 * Megabytes\nMy_Chunk = 6 * Megabytes\nChunkSize = My_Chunk\n"
    config.write_text(config.read_text() + helpers)
    run = run_tool(config)
    assert run.code == 0, run
    assert "ChunkSize=6291456" in run.log_text and "Gigabytes" not in run.output and "My_Chunk" not in run.output
    digest = hashlib.md5((source / "big.bin").read_bytes()).digest()
    assert dst.head_object(Bucket=bucket, Key="up/big.bin")["ETag"].strip('"') == s3_upload.multipart_etag([digest])
    assert assert_tree_uploaded(dst, bucket, "up/", source) == 2
    assert unfinished_uploads(dst, bucket) == []


def test_destination_listing_access_denied(dst, bucket, source, make_config):
    run = run_tool(make_config(DesProfileName="writer"))
    assert_user_error(run, "destination", "access denied", "s3:ListBucket")
    assert_nothing_uploaded(dst, bucket)


def test_source_listing_access_denied_s3_to_s3(dst, bucket, make_config):
    src_bucket = bucket + "-src"
    dst.create_bucket(Bucket=src_bucket)
    dst.put_object(Bucket=src_bucket, Key="up/a.txt", Body=b"a")
    other = bucket + "-dst"
    dst.create_bucket(Bucket=other)
    run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName="writer", DesBucket=other))
    assert_user_error(run, "source", "access denied")
    assert_nothing_uploaded(dst, other)


def test_src_file_index_missing_in_the_source_bucket(dst, bucket, make_config):
    src_bucket = bucket + "-src"
    dst.create_bucket(Bucket=src_bucket)
    run = run_tool(make_config(JobType="S3_TO_S3", SrcBucket=src_bucket, SrcProfileName="dst", SrcFileIndex="nope.bin",
                               DesBucket=bucket))  # fmt: skip
    assert_user_error(run, "SrcFileIndex", "does not exist")
    assert_nothing_uploaded(dst, bucket)


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (400, "ExpiredToken", ("credentials were refused", "ExpiredToken")),
        (301, "PermanentRedirect", ("another region", "region")),
    ],
)
def test_expired_token_and_bucket_in_another_region(dst, bucket, source, make_config, aws_profiles, dst_server,
                                                    status, code, words):  # fmt: skip
    """Answers SeaweedFS cannot give (it has no tokens or regions), injected on the first listing by the proxy."""
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        proxy.set(outage=True, error_status=status, error_code=code, match=lambda r: r.operation == "ListObjectsV2")
        aws_profiles.add("proxied", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="proxied"))
    assert_user_error(run, *words)
    assert_nothing_uploaded(dst, bucket)
