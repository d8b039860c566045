"""Integrity on the real wire: https to SeaweedFS with a certificate made here (botocore streams aws-chunked bodies
with trailing checksums over https, as real AWS sees), certificates verified by default, and both ChecksumModes."""

from __future__ import annotations

import pytest

import s3_upload
from conftest import DST_KEYS, MiB, assert_tree_uploaded, is_probe, run_tool, unfinished_uploads, write_file
from faultproxy import FaultProxy

CHUNK = 5 * MiB


@pytest.fixture
def tls_config(make_config, aws_profiles, tls_server, tls_cert, monkeypatch):
    """A profile for the https endpoint; its CA is given the documented way (ca_bundle in ~/.aws/config)."""
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # the environment would override the profile
    aws_profiles.add("tls", tls_server.https_endpoint_url, *DST_KEYS)
    config_file = aws_profiles.directory / "config"
    config_file.write_text(config_file.read_text() + f"ca_bundle = {tls_cert[0]}\n")
    client = tls_server.client(*DST_KEYS, endpoint_url=tls_server.https_endpoint_url)
    bucket = f"tls-{config_file.parent.parent.name[-20:].lower().replace('_', '-')}"
    client.create_bucket(Bucket=bucket)

    def make(**overrides):
        return make_config(DesProfileName="tls", DesBucket=bucket, **overrides)

    return make, client, bucket


@pytest.mark.parametrize("mode", ["MD5", "MD5_CRC32"])
def test_upload_over_https_in_each_checksum_mode(src_dir, tls_config, mode):
    make, client, bucket = tls_config
    write_file(src_dir / "big.bin", 2 * CHUNK + 17)
    write_file(src_dir / "small.txt", 321)
    write_file(src_dir / "empty.dat", 0)
    run = run_tool(make(ChecksumMode=mode, S3Prefix=f"{mode}/"))
    assert run.code == 0, run
    assert assert_tree_uploaded(client, bucket, f"{mode}/", src_dir) == 3
    assert unfinished_uploads(client, bucket) == []


def test_certificate_is_verified_by_default(src_dir, tls_config, aws_profiles):
    make, client, bucket = tls_config
    write_file(src_dir / "a.txt", 10)
    config_file = aws_profiles.directory / "config"
    config_file.write_text(config_file.read_text().replace("ca_bundle", "# ca_bundle"))
    run = run_tool(make())
    assert run.code == 2, run
    assert "TLS failed" in run.stderr and "ca_bundle" in run.stderr
    assert "Traceback" not in run.output
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize(("mode", "crc32_sent"), [("MD5", False), ("MD5_CRC32", True)])
def test_checksum_headers_on_the_wire(dst, bucket, src_dir, make_config, aws_profiles, dst_server, mode, crc32_sent):
    """Over http the headers can be seen: Content-MD5 always, and a CRC32 on every part and PutObject in both modes:
    LOCAL_TO_S3's full-object CRC32, computed here, goes up part by part (the marker's computed by botocore, as the
    upload was made with that algorithm).  botocore adds CRC32s of its own only in MD5_CRC32 mode (see the
    S3_TO_S3 and https tests)."""
    write_file(src_dir / "big.bin", 2 * CHUNK)
    write_file(src_dir / "small.txt", 100)
    with FaultProxy("127.0.0.1", dst_server.port).start() as proxy:
        aws_profiles.add("watched", proxy.endpoint_url, *DST_KEYS)
        run = run_tool(make_config(DesProfileName="watched", ChecksumMode=mode))
        uploads = [r for r in proxy.history if r.operation in ("UploadPart", "PutObject") and not is_probe(r)]
    assert run.code == 0, run
    assert len(uploads) == 5  # two data parts, the resume marker (parts 9,999 and 10,000), one PutObject
    assert sorted(r.part_number for r in uploads if r.part_number in s3_upload.MARKER_PARTS) == [9999, 10000]
    assert all("content-md5" in r.headers for r in uploads)
    assert all("x-amz-checksum-crc32" in r.headers for r in uploads), [r.headers for r in uploads]
    assert assert_tree_uploaded(dst, bucket, "up/", src_dir) == 2
    assert unfinished_uploads(dst, bucket) == []
