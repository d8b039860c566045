"""ALIOSS_TO_S3, and the original tool's own sample configs (v1.1/v1.2 layout, with their ali_ block for Aliyun OSS).

The OSS stand-in is a SeaweedFS server that serves virtual-hosted requests (``-s3.domainName=oss-test.local``: Host
``<bucket>.oss-test.local:PORT``) with SigV4 checked, as OSS serves only virtual-hosted requests.  Such names do not
resolve here, so the tool reaches it through the fault proxy as an HTTP forward proxy (``HTTP_PROXY``; ``NO_PROXY``
keeps the destination on 127.0.0.1 direct), and the proxy's history shows what was sent to "OSS"."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess

import pytest
from botocore.config import Config
from test_config_errors import assert_user_error

import s3_upload
from conftest import (
    MiB,
    assert_tree_uploaded,
    leave_unfinished,
    list_keys,
    new_bucket,
    object_md5,
    remove_bucket,
    run_tool,
    tool_command,
    unfinished_uploads,
    write_file,
)
from faultproxy import FaultProxy
from seaweed import SeaweedServer, identity

OSS_DOMAIN = "oss-test.local"
OSS_KEYS = ("LTAI5tOssStandInKeyId01", "ossStandInSecretThatIsNeverPrinted0042")
WRONG_SECRET = "aWrongOssSecretNeverPrintedEither0042"
CHUNK = 10 * MiB  # the v1.2 layout's ChunkSize = 10 * Megabytes

# A job config laid out as the original tool's v1.2 sample is (its sections, option order, comments and the
# Megabytes helper), with ali_SrcBucket right after SrcBucket; only buckets, profiles, SrcDir and the OSS endpoint
# and keys are filled in for the test servers.
V12_LAYOUT = r'''# -*- coding: utf-8 -*-

"""Basic Configure"""
JobType = "{job_type}"  # 'LOCAL_TO_S3' | 'S3_TO_S3' | 'ALIOSS_TO_S3'
SrcFileIndex = "*"  # 只传一个文件时写它的文件名, type = str; "*" 传全部文件
# S3_TO_S3 / ALIOSS_TO_S3: prefix of the source (the same keys at the destination)
# LOCAL_TO_S3: prefix at the destination
S3Prefix = "multipart"
DesProfileName = "{des_profile}"  # ~/.aws 里能写目标 bucket 的 profile name
DesBucket = "{des_bucket}"  # 目标 bucket, type = str

"""Configure for LOCAL_TO_S3"""
SrcDir = r"{src_dir}"  # e.g. r"C:\Downloads" on Windows
# 本地源目录: no slash at its end, and keep the r in front of the string
# not used by S3_TO_S3 / ALIOSS_TO_S3, type = str

"""Configure for S3_TO_S3"""
SrcBucket = "{src_bucket}"  # 源 bucket; not used by LOCAL_TO_S3 / ALIOSS_TO_S3
SrcProfileName = "{src_profile}"  # ~/.aws 里能读源 bucket 的 profile name; not used by LOCAL_TO_S3 / ALIOSS_TO_S3

"""Configure for ALIOSS_TO_S3"""
ali_SrcBucket = "{ali_bucket}"  # 阿里云 OSS 源 bucket; not used by LOCAL_TO_S3 / S3_TO_S3
ali_access_key_id = "{ali_key_id}"  # a RAM user's AccessKey (RAM 用户访问密钥)
ali_access_key_secret = "{ali_secret}"
ali_endpoint = "{ali_endpoint}"  # the OSS endpoint of the bucket's region, as the OSS console shows it

"""Advanced Configure"""
Megabytes = 1024*1024
ChunkSize = 10 * Megabytes  # part size: 5 MB or more, and a file has at most 10,000 parts, type = int
MaxRetry = 20  # how often a failed part is tried again, type = int
MaxThread = 5  # parts of one file in flight, type = int
MaxParallelFile = 5  # files in flight; requests in flight = MaxParallelFile * MaxThread, type = int
IgnoreSmallFile = False  # skip files smaller than ChunkSize, type = bool
StorageClass = "STANDARD"
# 'STANDARD'|'REDUCED_REDUNDANCY'|'STANDARD_IA'|'ONEZONE_IA'|'INTELLIGENT_TIERING'|'GLACIER'|'DEEP_ARCHIVE'
ifVerifyMD5 = False  # read each file again once it is complete and compare the whole ETag
# With True, S3_TO_S3 also downloads again the parts of an upload it resumes.
# Each part is checked by its MD5 as it is uploaded whatever this says.

DontAskMeToClean = False  # False: ask whether to CLEAN unfinished uploads (Enter, or no answer: resume them)
LoggingLevel = "INFO"  # 'WARNING' | 'INFO' | 'DEBUG'
'''

PLACEHOLDERS = dict(job_type="LOCAL_TO_S3", des_profile="cn", des_bucket="my-cn-bucket",
                    src_dir="/Users/someone/Downloads", src_bucket="my-us-bucket", src_profile="us",
                    ali_bucket="img-process", ali_key_id="LTAIxxxxxxxx", ali_secret="xxxxxxxxxxxx",
                    ali_endpoint="oss-cn-beijing.aliyuncs.com")  # fmt: skip


def write_v12_config(directory: pathlib.Path, fields: dict, overrides: dict | None = None, drop=()) -> pathlib.Path:
    """The v1.2 layout with ``fields`` filled in; ``drop`` takes option lines out; ``overrides`` are appended as
    assignments (a later one wins), only where a test changes the job on purpose."""
    text = V12_LAYOUT.format(**{**PLACEHOLDERS, **fields})
    for name in drop:
        text, n = re.subn(rf"^{name} = .*\n", "", text, flags=re.M)
        assert n == 1, name
    text += "".join(f"{name} = {value!r}\n" for name, value in (overrides or {}).items())
    path = directory / f"s3_upload_config_{len(list(directory.glob('s3_upload_config_*.py')))}.py"
    path.write_text(text, encoding="utf-8")
    return path


def assert_never_shown(run, directory: pathlib.Path, *secrets: str) -> None:
    """No secret in the console output nor in any log file of the run."""
    texts = [run.output] + [p.read_text(encoding="utf-8", errors="replace") for p in directory.glob("log/*.log")]
    for secret in secrets:
        assert all(secret not in text for text in texts), "a secret was printed or logged"


# ---------------------------------------------------------------------------------------------------------------------
# The OSS stand-in
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oss_server(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-oss"), [identity("oss", *OSS_KEYS)],
                           extra_flags=[f"-s3.domainName={OSS_DOMAIN}"])  # fmt: skip
    server.start()
    yield server
    server.stop(grace=0)  # the session's data is thrown away


@pytest.fixture
def oss(oss_server):
    """A path-style client on 127.0.0.1 for the test itself (to fill and check the stand-in)."""
    return oss_server.client(*OSS_KEYS)


@pytest.fixture
def oss_bucket(oss):
    name = new_bucket(oss)
    yield name
    remove_bucket(oss, name)


@pytest.fixture
def oss_proxy(oss_server, monkeypatch):
    """The forward proxy every request to the stand-in goes through (HTTP_PROXY); 127.0.0.1 stays direct."""
    with FaultProxy("127.0.0.1", oss_server.port, virtual_host_domain=OSS_DOMAIN) as proxy:
        for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.endpoint_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield proxy
        assert proxy.exceptions == []


def assert_oss_wire(proxy: FaultProxy, bucket: str) -> None:
    """What OSS requires of every request: virtual-hosted (the bucket in the Host header, not in the path), no
    aws-chunked body and none of botocore's new checksum headers; and reads pinned to the listed version."""
    assert proxy.history
    for r in proxy.history:
        where = (r.method, r.headers.get("host"), r.target)
        assert r.absolute_form and r.virtual_hosted and r.bucket == bucket, where
        assert not (r.path + "/").startswith(f"/{bucket}/"), where
        assert r.operation in ("ListObjectsV2", "HeadObject", "GetObject"), where
        assert "aws-chunked" not in r.headers.get("content-encoding", ""), where
        assert [h for h in r.headers if h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm"] == []
        assert r.status in (200, 206), where
    gets = [r for r in proxy.history if r.operation == "GetObject"]
    assert all(r.headers.get("if-match") and r.headers.get("range") for r in gets)


OSS_OBJECTS = {
    "multipart/big.bin": 2 * CHUNK + 321,  # three parts
    "multipart/exact.bin": CHUNK,  # one whole part
    "multipart/nested/deep/报告 ü.txt": 4321,
    "multipart/empty.dat": 0,
    "multipart/small.txt": 99,
}


@pytest.fixture
def oss_objects(oss, oss_bucket):
    for key, size in OSS_OBJECTS.items():
        oss.put_object(Bucket=oss_bucket, Key=key, Body=os.urandom(size))
    oss.put_object(Bucket=oss_bucket, Key="elsewhere/not-copied.txt", Body=b"outside the prefix")
    return oss_bucket


@pytest.fixture
def oss_job(tmp_path, bucket, aws_profiles, oss_server, oss_bucket, oss_proxy):
    """An ALIOSS_TO_S3 config in the v1.2 layout.  SrcDir, SrcBucket and SrcProfileName keep the sample's values
    (a directory and a profile that do not exist here): this job does not use them."""
    fields = dict(job_type="ALIOSS_TO_S3", des_profile="dst", des_bucket=bucket, ali_bucket=oss_bucket,
                  ali_key_id=OSS_KEYS[0], ali_secret=OSS_KEYS[1],
                  ali_endpoint=f"http://{OSS_DOMAIN}:{oss_server.port}")  # fmt: skip

    def make(drop=(), **overrides) -> pathlib.Path:
        return write_v12_config(tmp_path, fields, overrides, drop)

    return make


def assert_copied_from_oss(oss, oss_bucket: str, dst, bucket: str, keys) -> None:
    for key in keys:
        assert object_md5(dst, bucket, key) == object_md5(oss, oss_bucket, key), key


# ---------------------------------------------------------------------------------------------------------------------
# 1, 2: the original's v1.2 config, ali_ block included, runs unchanged for LOCAL_TO_S3 and S3_TO_S3
# ---------------------------------------------------------------------------------------------------------------------


def test_v12_config_with_ali_block_runs_unchanged_for_local_to_s3(dst, bucket, tmp_path, src_dir, aws_profiles):
    write_file(src_dir / "big.bin", CHUNK + 4321)  # two parts
    write_file(src_dir / "sub" / "文件.txt", 777)
    write_file(src_dir / "empty.dat", 0)
    config = write_v12_config(tmp_path, dict(des_profile="dst", des_bucket=bucket, src_dir=str(src_dir)))
    assert "ali_SrcBucket" in config.read_text(encoding="utf-8")

    run = run_tool(config)
    assert run.code == 0, run
    assert "Traceback" not in run.output and "error:" not in run.output, run
    assert list_keys(dst, bucket) == {"multipart/big.bin": CHUNK + 4321, "multipart/sub/文件.txt": 777,
                                      "multipart/empty.dat": 0}  # fmt: skip
    assert assert_tree_uploaded(dst, bucket, "multipart/", src_dir) == 3
    assert unfinished_uploads(dst, bucket) == []
    assert "All source files are in destination" in run.stdout
    assert_never_shown(run, tmp_path, PLACEHOLDERS["ali_secret"])
    assert run_tool(config).bytes_sent == 0


def test_v12_config_with_ali_block_runs_unchanged_for_s3_to_s3(src, src_bucket, src_profile, dst, bucket, tmp_path):
    objects = {"multipart/big.bin": CHUNK + 321, "multipart/nested/报告.txt": 4321, "multipart/empty.dat": 0}
    for key, size in objects.items():
        src.put_object(Bucket=src_bucket, Key=key, Body=os.urandom(size))
    config = write_v12_config(tmp_path, dict(job_type="S3_TO_S3", des_profile="dst", des_bucket=bucket,
                                             src_bucket=src_bucket, src_profile=src_profile))  # fmt: skip

    run = run_tool(config)
    assert run.code == 0, run
    assert "Traceback" not in run.output and "error:" not in run.output, run
    assert list_keys(dst, bucket) == objects
    for key in objects:
        assert object_md5(dst, bucket, key) == object_md5(src, src_bucket, key), key
    assert unfinished_uploads(dst, bucket) == []
    assert_never_shown(run, tmp_path, PLACEHOLDERS["ali_secret"])


# ---------------------------------------------------------------------------------------------------------------------
# 3: ALIOSS_TO_S3 from the OSS stand-in
# ---------------------------------------------------------------------------------------------------------------------


def test_alioss_to_s3_copies_the_prefix_virtual_hosted_without_aws_chunked(oss, oss_objects, dst, bucket, oss_job,
                                                                          oss_proxy, tmp_path):  # fmt: skip
    run = run_tool(oss_job())
    assert run.code == 0, run
    assert list_keys(dst, bucket) == OSS_OBJECTS  # same keys, same sizes; nothing outside the prefix
    assert_copied_from_oss(oss, oss_objects, dst, bucket, OSS_OBJECTS)
    assert run.bytes_sent == sum(OSS_OBJECTS.values())
    assert "All source files are in destination" in run.stdout
    assert unfinished_uploads(dst, bucket) == []
    assert_oss_wire(oss_proxy, oss_objects)
    assert_never_shown(run, tmp_path, OSS_KEYS[1])

    again = run_tool(oss_job())
    assert again.code == 0 and again.bytes_sent == 0, again
    assert_never_shown(again, tmp_path, OSS_KEYS[1])


def test_alioss_to_s3_resumes_reading_only_the_missing_part(oss, oss_objects, dst, bucket, oss_job, oss_proxy,
                                                            aws_profiles, dst_server, tmp_path):  # fmt: skip
    """Interrupted at part 3 of 3, then rerun (with ChecksumMode = "MD5_CRC32": OSS still gets no checksum
    headers): the upload is resumed and only the missing range is read from OSS."""
    big, size = "multipart/big.bin", OSS_OBJECTS["multipart/big.bin"]
    leave_unfinished(oss_job, aws_profiles, dst_server, fail_part=3, SrcFileIndex="big.bin")
    seen = len(oss_proxy.history)
    run = run_tool(oss_job(SrcFileIndex="big.bin", ChecksumMode="MD5_CRC32"))
    assert run.code == 0, run
    assert "has 2 of 3 parts on S3 (made for this version of the source)" in run.stderr
    assert run.bytes_sent == size - 2 * CHUNK
    reads = [r.headers.get("range") for r in oss_proxy.history[seen:] if r.operation == "GetObject"]
    assert reads == [f"bytes={2 * CHUNK}-{size - 1}"]
    assert_copied_from_oss(oss, oss_objects, dst, bucket, [big])
    assert list(list_keys(dst, bucket)) == [big]
    assert unfinished_uploads(dst, bucket) == []
    assert_oss_wire(oss_proxy, oss_objects)
    assert_never_shown(run, tmp_path, OSS_KEYS[1])


def test_alioss_closing_line_and_check_name_the_oss_side(oss, oss_objects, dst, bucket, oss_job, oss_proxy, tmp_path):
    run = run_tool(oss_job())
    assert run.code == 0, run
    assert run.stdout.splitlines()[-1].endswith(f" - FROM: {oss_objects}/multipart TO {bucket}/multipart")
    assert f"job: ALIOSS_TO_S3 oss://{oss_objects}/multipart (http://{OSS_DOMAIN}:" in run.stderr
    config = oss_job()
    check = subprocess.run(tool_command(config) + ["--check"], cwd=config.parent, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"ok\s+list the source\s+s3:ListBucket", check.stdout), check.stdout
    assert re.search(r"ok\s+read an object\s+s3:GetObject", check.stdout), check.stdout
    assert_never_shown(run, tmp_path, OSS_KEYS[1])


# ---------------------------------------------------------------------------------------------------------------------
# 4: a missing ali_ option, wrong keys
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["ali_SrcBucket", "ali_access_key_id", "ali_access_key_secret", "ali_endpoint"])
def test_alioss_without_an_ali_option_is_one_line(dst, bucket, oss_job, oss_proxy, tmp_path, option):
    run = run_tool(oss_job(drop=[option]))
    assert_user_error(run, option, "empty")
    assert_never_shown(run, tmp_path, OSS_KEYS[1])
    assert oss_proxy.history == []  # refused before any request
    assert list_keys(dst, bucket) == {}


@pytest.mark.parametrize(
    ("option", "value", "code"),
    [("ali_access_key_secret", WRONG_SECRET, "SignatureDoesNotMatch"),
     ("ali_access_key_id", "LTAInoSuchKey", "InvalidAccessKeyId")],
)  # fmt: skip
def test_alioss_with_wrong_keys_is_one_line_naming_them(dst, bucket, oss_objects, oss_job, oss_proxy, tmp_path,
                                                        option, value, code):  # fmt: skip
    run = run_tool(oss_job(**{option: value}))
    assert_user_error(run, f"oss://{oss_objects}", code, "ali_access_key_id", "ali_access_key_secret")
    assert_never_shown(run, tmp_path, OSS_KEYS[1], WRONG_SECRET)
    assert list_keys(dst, bucket) == {} and unfinished_uploads(dst, bucket) == []
    assert oss_proxy.history and all(r.virtual_hosted for r in oss_proxy.history)


# ---------------------------------------------------------------------------------------------------------------------
# 5 and the pieces without a server
# ---------------------------------------------------------------------------------------------------------------------


def misspelling(values: dict) -> str:
    """The error the typo check gives for these config values ('' when none)."""
    try:
        s3_upload.check_misspelt_options(values)
    except s3_upload.UserError as exc:
        return str(exc)
    return ""


def test_did_you_mean_never_names_an_option_the_config_sets():
    assert misspelling({"SrcBucket": "a", "ali_SrcBucket": "b", "Megabytes": 1}) == ""  # the v1.2 sample's names
    assert "did you mean 'MaxThread'? Rename it" in misspelling({"MaxThreads": 4})  # a typo is caught...
    # ...also next to its own option, but then renaming it is not the fix (it would silently replace the value).
    both = misspelling({"MaxThread": 3, "MaxThreads": 4})
    assert "also sets 'MaxThread'" in both and "delete 'MaxThreads'" in both and "did you mean" not in both
    for option in s3_upload.CONFIG_OPTIONS:
        for other in (option + "s", option[:-1], option.lower(), option.upper(), "ali_" + option, "x" + option):
            if other in s3_upload.CONFIG_OPTIONS:
                continue
            values = {option: 1, other: 2}
            named = re.search(r"did you mean '([^']+)'", misspelling(values))
            assert not named or named.group(1) not in values, values


@pytest.mark.parametrize("job_type", ["LOCAL_TO_S3", "S3_TO_S3", "ALIOSS_TO_S3"])
def test_v11_sample_names_are_all_options_and_each_job_reads_its_own(tmp_path, job_type):
    """The v1.1 sample has the same names as v1.2 (with S3Prefix "multipart/" and a SrcDir ending in "/")."""
    values = dict(JobType=job_type, SrcFileIndex="*", S3Prefix="multipart/", DesProfileName="cn", DesBucket="cn-b",
                  SrcDir=f"{tmp_path}/", SrcBucket="us-b", SrcProfileName="us", ali_SrcBucket="img-process",
                  ali_access_key_id="LTAIxx", ali_access_key_secret="xxxx", ali_endpoint="oss-cn-beijing.aliyuncs.com",
                  Megabytes=MiB, ChunkSize=50 * MiB, MaxRetry=200, MaxThread=3, MaxParallelFile=3,
                  IgnoreSmallFile=False, StorageClass="STANDARD", ifVerifyMD5=False, DontAskMeToClean=False,
                  LoggingLevel="INFO")  # fmt: skip
    settings = s3_upload.settings_from_values(values)
    expected = {"LOCAL_TO_S3": "", "S3_TO_S3": "us-b", "ALIOSS_TO_S3": "img-process"}[job_type]
    assert s3_upload.source_bucket(settings) == expected


def test_oss_endpoint_defaults_to_https_and_signs_for_its_region():
    assert s3_upload.oss_endpoint_url("oss-cn-beijing.aliyuncs.com") == "https://oss-cn-beijing.aliyuncs.com"
    assert s3_upload.oss_endpoint_url("http://oss-cn-beijing.aliyuncs.com/") == "http://oss-cn-beijing.aliyuncs.com"
    region = s3_upload.oss_signing_region
    assert region("https://oss-cn-beijing.aliyuncs.com") == "cn-beijing"
    assert region("https://s3.oss-cn-hangzhou.aliyuncs.com") == "cn-hangzhou"
    assert region("https://oss-ap-southeast-1-internal.aliyuncs.com") == "ap-southeast-1"
    assert region("https://oss-accelerate.aliyuncs.com") == "us-east-1"
    assert region(f"http://{OSS_DOMAIN}:8333") == "us-east-1"
    for bad in ("ftp://oss-cn-beijing.aliyuncs.com", "oss-cn-beijing.aliyuncs.com/bucket", "http://user:pw@host"):
        with pytest.raises(s3_upload.UserError, match="ali_endpoint"):
            s3_upload.oss_endpoint_url(bad)


def alioss_settings(**overrides) -> s3_upload.Settings:
    values = dict(JobType="ALIOSS_TO_S3", DesBucket="dst", ali_SrcBucket="img-process", ali_access_key_id="LTAIabc",
                  ali_access_key_secret=OSS_KEYS[1], ali_endpoint="oss-cn-beijing.aliyuncs.com")  # fmt: skip
    return s3_upload.settings_from_values({**values, **overrides})


def test_alioss_settings_hide_the_secret_and_check_the_endpoint():
    settings = alioss_settings()
    assert OSS_KEYS[1] not in repr(settings)
    for values, words in [
        ({"ali_access_key_secret": 12345}, ("ali_access_key_secret", "not shown")),
        ({"ali_access_key_secret": OSS_KEYS[1] + " "}, ("ali_access_key_secret", "space")),
        ({"ali_endpoint": "img-process.oss-cn-beijing.aliyuncs.com"}, ("ali_endpoint", "bucket")),
        ({"ali_SrcBucket": "img/process"}, ("ali_SrcBucket", "not a bucket name")),
    ]:  # fmt: skip
        with pytest.raises(s3_upload.UserError) as exc:
            alioss_settings(**values)
        assert all(word in str(exc.value) for word in words), exc.value
        assert OSS_KEYS[1] not in str(exc.value) and "12345" not in str(exc.value)


def test_fleet_messages_name_the_oss_bucket():
    settings = alioss_settings(SrcBucket="not-this-one")
    message = s3_upload.file_message(settings, s3_upload.SourceFile("multipart/a.bin", 5, 0.0, etag="e", version="e"))
    assert message["job_type"] == "ALIOSS_TO_S3" and message["src_bucket"] == "img-process"
    assert s3_upload.parse_message(settings, json.dumps(message)).key == "multipart/a.bin"
    with pytest.raises(s3_upload.FileFailed, match="another job"):
        s3_upload.parse_message(settings, json.dumps({**message, "src_bucket": "not-this-one"}))


def test_fault_proxy_as_a_forward_proxy_sees_virtual_hosted_requests(oss_server, oss, oss_bucket):
    """The stand-in and the proxy themselves: a virtual-hosted client through the proxy (absolute-form requests),
    SigV4 checked, and the proxy naming bucket, key and operation from the Host header."""
    with FaultProxy("127.0.0.1", oss_server.port, virtual_host_domain=OSS_DOMAIN) as proxy:
        config = Config(s3={"addressing_style": "virtual"}, proxies={"http": proxy.endpoint_url},
                        retries={"total_max_attempts": 1})  # fmt: skip
        virtual = oss_server.client(*OSS_KEYS, endpoint_url=f"http://{OSS_DOMAIN}:{oss_server.port}", config=config)
        virtual.put_object(Bucket=oss_bucket, Key="v/a b.txt", Body=b"hello")
        assert virtual.get_object(Bucket=oss_bucket, Key="v/a b.txt", Range="bytes=1-3")["Body"].read() == b"ell"
        assert [o["Key"] for o in virtual.list_objects_v2(Bucket=oss_bucket, Prefix="v/")["Contents"]] == ["v/a b.txt"]
        wrong = oss_server.client(OSS_KEYS[0], WRONG_SECRET, endpoint_url=f"http://{OSS_DOMAIN}:{oss_server.port}",
                                  config=config)  # fmt: skip
        with pytest.raises(Exception, match="SignatureDoesNotMatch"):
            wrong.list_objects_v2(Bucket=oss_bucket)
        assert proxy.exceptions == []
    assert [(r.operation, r.bucket, r.key) for r in proxy.history] == [
        ("PutObject", oss_bucket, "v/a b.txt"), ("GetObject", oss_bucket, "v/a b.txt"),
        ("ListObjectsV2", oss_bucket, ""), ("ListObjectsV2", oss_bucket, ""),
    ]  # fmt: skip
    assert all(r.absolute_form and r.virtual_hosted and r.path in ("/", "/v/a b.txt") for r in proxy.history)
    assert oss.get_object(Bucket=oss_bucket, Key="v/a b.txt")["Body"].read() == b"hello"  # path style sees it too
    assert hashlib.md5(b"hello").hexdigest() == oss.head_object(Bucket=oss_bucket, Key="v/a b.txt")["ETag"].strip('"')
