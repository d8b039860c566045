"""Mutation check of the test suite: one small change at a decision point of s3_upload.py at a time, and the tests
must notice it.

Each mutant below is a bug a person could plausibly write (a comparison flipped, a check dropped, a bound off by
one) at a place where the tool decides whether an object is right, a part can be reused, a file can be skipped, a
request is retried, an exit code says success.  For each one this script copies the repository as it was when the
check started (s3_upload.py, tests/, pyproject.toml, ...; never .git, .venv or logs) into a temporary directory,
applies the change there, runs the tests named in the mutant's hints, and if those pass, the whole suite (with
-x).  A failing test kills the mutant; a mutant no test kills is a gap in the suite.  The working tree's
s3_upload.py is only ever read.

    .venv/bin/python tools/mutation_check.py                 # every mutant, whole suite where the hints miss
    .venv/bin/python tools/mutation_check.py --hints-only    # quick: the hinted tests only
    .venv/bin/python tools/mutation_check.py --list          # what the mutants are
    .venv/bin/python tools/mutation_check.py --only stale-abort-flipped,put-etag-not-compared

Every mutant's original text must occur exactly once in s3_upload.py, and every hint must name a test that exists:
the script checks both before running anything, so the list cannot silently rot when the code moves on.  Then the
same tests run on the code as it is (the hinted ones, or the whole suite): they must pass there, or every "kill"
would mean nothing.  Exit 0 only when every mutant is killed; 1 when one survives, is broken (pytest exit 2-5
without a failing test: the mutated tree does not even collect) or runs out of time; 2 when the list itself is wrong
or the tests fail on the code as it is.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = "s3_upload.py"
# Never copied into a mutant's tree: version control, environments, caches, logs, benchmark output.
SKIPPED = {".git", "log", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist",
           "bench/results", "bench/.peers"}  # fmt: skip
PYTEST_ERRORS = {2: "interrupted (collection error)", 3: "internal error", 4: "usage error", 5: "no tests collected"}
STOPPING = threading.Event()  # Ctrl-C or SIGTERM: start nothing more, stop the pytest runs in flight
RUNNING: set[subprocess.Popen] = set()
RUNNING_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    point: str  # the decision point (one of POINTS)
    original: str  # exact text of s3_upload.py, found exactly once
    mutated: str  # what it becomes
    breaks: str  # what the mutation breaks, in one line
    hints: tuple[str, ...]  # test files or node ids expected to kill it, run first


POINTS = (
    "ETag comparison", "Content-MD5", "part reuse", "marker match", "skip rule", "change detection", "If-Match pinning",
    "part plan", "completion list", "stale abort", "worker confinement", "exit codes", "retry classification",
    "CLEAN scope", "verify path", "checksum proof", "source layout",
)  # fmt: skip

T = "tests/"
# fmt: off
MUTANTS: tuple[Mutant, ...] = (
    # -- ETag comparison ---------------------------------------------------------------------------------------------
    Mutant(
        "complete-etag-count-only", "ETag comparison",
        "        if result.etag_is_md5 and known and etag != expected:",
        '        if result.etag_is_md5 and known and etag.rsplit("-", 1)[-1] != expected.rsplit("-", 1)[-1]:',
        "the ETag after CompleteMultipartUpload is compared by its part count only: a damaged part a store kept "
        "passes",
        (T + "test_faults.py::test_etag_mismatch_after_complete_is_reported",
         T + "test_integrity.py::test_a_damaged_part_a_store_kept_is_never_a_success"),
    ),
    Mutant(
        "put-etag-not-compared", "ETag comparison",
        "        if result.expected_etag and result.etag_is_md5 and result.etag != result.expected_etag:",
        "        if result.expected_etag and result.etag_is_md5 and not result.etag:",
        "the ETag PutObject answers is never compared with the MD5 of the bytes sent",
        (T + "test_integrity.py::test_a_damaged_part_a_store_kept_is_never_a_success",),
    ),
    Mutant(
        "part-digest-from-the-answer", "ETag comparison",
        "        return PartResult(number, etag, digest, length, crc=crc)",
        "        return PartResult(number, etag, binascii.unhexlify(etag) if is_md5_hex(etag) else digest, length,"
        " crc=crc)",
        "the expected ETag is built from the part ETags S3 answered, not from our MD5s: it can never differ",
        (T + "test_integrity.py::test_a_damaged_part_a_store_kept_is_never_a_success",
         T + "test_faults.py::test_etag_mismatch_after_complete_is_reported"),
    ),
    Mutant(
        "gone-upload-any-object-taken", "ETag comparison",
        "        if not expected or etag != expected or not etag_is_md5(head):",
        "        if not expected:",
        "a run whose upload vanished mid-file takes whatever object is at the key for its file, not only one with "
        "this file's ETag",
        (T + "test_concurrent.py::test_a_run_whose_upload_is_gone_and_whose_key_holds_other_bytes_fails_and_deletes_"
             "nothing",),
    ),
    Mutant(
        "gone-upload-other-object-deleted", "ETag comparison",
        "        if not ours and etag != expected:",
        "        if False and not ours and etag != expected:",
        "a run whose upload was completed (or aborted) by someone else takes the object it finds for damaged and "
        "deletes it: someone's good data",
        (T + "test_concurrent.py::test_a_run_whose_upload_is_gone_and_whose_key_holds_other_bytes_fails_and_deletes_"
             "nothing",),
    ),
    # -- Content-MD5 ---------------------------------------------------------------------------------------------------
    Mutant(
        "part-without-content-md5", "Content-MD5",
        "            Bucket=e.bucket, Key=f.key, UploadId=upload_id, PartNumber=number, Body=data, ContentMD5=md5_b64,",
        "            Bucket=e.bucket, Key=f.key, UploadId=upload_id, PartNumber=number, Body=data,",
        "UploadPart without Content-MD5: a part damaged on the way is stored, not refused and sent again",
        (T + "test_stores.py::test_a_part_damaged_on_the_way_is_refused_and_sent_again",
         T + "test_tls_checksums.py::test_checksum_headers_on_the_wire"),
    ),
    Mutant(
        "put-without-content-md5", "Content-MD5",
        "                Bucket=e.bucket, Key=f.key, Body=data, ContentMD5=md5_b64, **args, **checksum,",
        "                Bucket=e.bucket, Key=f.key, Body=data, **args, **checksum,",
        "PutObject without Content-MD5: a small file damaged on the way is stored",
        (T + "test_stores.py::test_a_part_damaged_on_the_way_is_refused_and_sent_again",
         T + "test_tls_checksums.py::test_checksum_headers_on_the_wire"),
    ),
    Mutant(
        "marker-md5-of-other-bytes", "Content-MD5",
        "        md5_b64 = md5_of(body)[1]",
        "        md5_b64 = md5_of(body.rstrip())[1]",
        "the marker part is sent with the MD5 of other bytes (its body without the last newline): S3 refuses it",
        (T + "test_local_to_s3.py::test_directory_tree_nested_unicode_zero_byte_small_and_exact_multiples",),
    ),
    # -- part reuse ----------------------------------------------------------------------------------------------------
    Mutant(
        "reuse-ignores-md5", "part reuse",
        "        if entry.size == length and (md5_hex is None or entry.etag == md5_hex):",
        "        if entry.size == length:",
        "a listed part of the right size is reused whatever its MD5: a changed part of the source is not sent again",
        (T + "test_units.py::test_pick_existing_part_no_entry_with_our_md5",
         T + "test_resume.py::test_changed_part_with_old_mtime_is_caught_by_md5_and_resent"),
    ),
    Mutant(
        "reuse-any-size", "part reuse",
        "        if entry.size == length and (md5_hex is None or entry.etag == md5_hex):",
        "        if md5_hex is None or entry.etag == md5_hex:",
        "a listed part is reused whatever its size when the upload's marker ties it to this version",
        (T + "test_units.py::test_pick_existing_part_wrong_size_never_counts",),
    ),
    Mutant(
        "local-parts-trusted-by-size", "part reuse",
        "        trust_sizes = proven and not self.source.verify_existing_parts",
        "        trust_sizes = proven",
        "a local file's parts already on S3 are trusted by size, never hashed: a part changed with its mtime "
        "restored is kept",
        (T + "test_resume.py::test_a_part_rewritten_with_size_and_mtime_restored_is_caught_by_md5_in_an_upload_with_"
             "our_marker",),
    ),
    # -- marker match --------------------------------------------------------------------------------------------------
    Mutant(
        "any-marker-accepted", "marker match",
        '        return ResumeCheck("it was made for another version of the source or another ChunkSize", '
        "markers=markers)",
        "        return ResumeCheck(proven=True, markers=markers)",
        "an upload whose marker names another source version or layout is resumed as proven",
        (T + "test_units.py::test_judge_upload_marker_of_another_version_or_layout_restarts",
         T + "test_integrity.py::test_s3_upload_made_for_another_source_version_restarts"),
    ),
    Mutant(
        "marker-twin-of-any-bytes", "marker match",
        "    if any(p.number == MARKER_TWIN_PART and p.size < MIN_PART_SIZE and p.etag in tops for p in parts):",
        "    if any(p.number == MARKER_TWIN_PART and p.size < MIN_PART_SIZE for p in parts):",
        "a small part 9,999 that differs from part 10,000 (s3_upload 1.1's last data part) is taken for a marker",
        (T + "test_units.py::test_judge_upload_of_s3_upload_1_1_resumes_with_its_marker_in_part_10000",),
    ),
    Mutant(
        "marker-without-twin", "marker match",
        "            markers = [functools.partial(self._send_marker, f, upload_id, shape, n, failed) for n in "
        "MARKER_PARTS]",
        "            markers = [functools.partial(self._send_marker, f, upload_id, shape, n, failed) for n in "
        "(MARKER_PART,)]",
        "the marker goes in part 10,000 alone: a tool completing the upload from its ListParts appends the marker's "
        "bytes to the object instead of being refused",
        (T + "test_resume.py::test_another_tool_completing_our_upload_from_its_parts_fails_loudly",),
    ),
    Mutant(
        "range-into-another-versions-upload", "marker match",
        "        if not check.proven:\n            raise FileFailed(f\"upload {short_id(upload.upload_id)} was not",
        "        if False:\n            raise FileFailed(f\"upload {short_id(upload.upload_id)} was not",
        "a fleet worker sends a range of parts into an upload whose marker names another version of the file",
        (T + "test_sqs_fleet.py::test_a_range_queued_for_an_older_version_of_the_file_is_refused",),
    ),
    # -- skip rule -----------------------------------------------------------------------------------------------------
    Mutant(
        "skip-larger-object", "skip rule",
        "    if there.size != f.size:\n        return \"send\", \"\"",
        "    if there.size < f.size:\n        return \"send\", \"\"",
        "an object larger than the file (of another version) is taken for it; only a smaller one is replaced",
        (T + "test_skips.py::test_a_file_replaced_by_a_smaller_one_with_an_old_mtime_is_uploaded_again",),
    ),
    Mutant(
        "skip-mtime-flipped", "skip rule",
        "        if f.mtime <= there.written:",
        "        if f.mtime >= there.written:",
        "a local file modified after its object was written is skipped (and an older one checked again)",
        (T + "test_skips.py::test_a_local_file_rewritten_after_its_upload_with_the_same_size_is_uploaded_again",),
    ),
    Mutant(
        "skip-etag-form-only", "skip rule",
        "    if ours == theirs:\n        return \"skip\", SAME_ETAG",
        "    if len(ours) == len(theirs):\n        return \"skip\", SAME_ETAG",
        "S3_TO_S3 compares the ETags' forms, not their values: a source replaced by other bytes of the same size is "
        "skipped",
        (T + "test_skips.py::test_a_source_object_replaced_by_other_bytes_of_the_same_size_is_copied_again",),
    ),
    Mutant(
        "skip-confirm-skipped", "skip rule",
        '    return "confirm", "replaced at the source by other bytes of the same size (the ETags differ)"',
        "    return \"skip\", SAME_ETAG",
        "ETags of one form that differ are taken for the same object without the HeadObject that settles it",
        (T + "test_skips.py::test_a_source_object_replaced_by_other_bytes_of_the_same_size_is_copied_again",),
    ),
    Mutant(
        "recorded-mtime-whole-seconds", "skip rule",
        "            same = abs(float(recorded) - f.mtime) < 2e-6",
        "            same = int(float(recorded)) == int(f.mtime)",
        "the mtime recorded with the object is compared in whole seconds: a rewrite within the second is skipped",
        (T + "test_skips.py::test_a_rewrite_within_a_second_of_the_recorded_mtime_is_uploaded_again",),
    ),
    Mutant(
        "confirm-ignores-kms", "skip rule",
        "    if not (source_md5 and etag_is_md5(head)):",
        "    if not source_md5:",
        "a destination object encrypted with KMS has its ETag compared as an MD5: a same-size copy is sent again on "
        "every run",
        (T + "test_skips.py::test_a_copy_encrypted_with_kms_is_skipped_by_size_and_says_so",),
    ),
    Mutant(
        "confirm-ignores-part-size", "skip rule",
        '    if multipart and int(head.get("ContentLength", -1)) != source_first:',
        '    if multipart and int(head.get("ContentLength", -1)) < 0:',
        "objects in different part sizes have their ETags compared: a same-size copy is sent again on every run",
        (T + "test_skips.py::test_a_copy_in_other_part_sizes_is_skipped_by_size_and_says_so",),
    ),
    # -- change detection ----------------------------------------------------------------------------------------------
    Mutant(
        "unchanged-by-size-only", "change detection",
        "        if now.version == f.version:\n            return",
        "        if now.size == f.size:\n            return",
        "a source rewritten during the transfer with its size kept is completed, mixing two versions",
        (T + "test_integrity.py::test_local_file_rewritten_in_place_with_mtime_restored_is_never_completed",
         T + "test_faults.py::test_source_modified_during_upload_is_never_completed"),
    ),
    # -- If-Match pinning ----------------------------------------------------------------------------------------------
    Mutant(
        "read-not-pinned", "If-Match pinning",
        "                Bucket=self.bucket, Key=f.key, IfMatch=f'\"{f.etag}\"', Range=f\"bytes={offset}-{offset + "
        "length - 1}\"",
        "                Bucket=self.bucket, Key=f.key, Range=f\"bytes={offset}-{offset + length - 1}\"",
        "S3Source reads ranges without If-Match: an object replaced mid-copy mixes two versions",
        (T + "test_integrity.py::test_source_replaced_mid_copy_aborts_the_upload",),
    ),
    Mutant(
        "copy-not-pinned", "If-Match pinning",
        "        return {\"CopySource\": {\"Bucket\": self.src_bucket, \"Key\": f.key}, \"CopySourceIfMatch\": "
        "f'\"{f.etag}\"'}",
        "        return {\"CopySource\": {\"Bucket\": self.src_bucket, \"Key\": f.key}}",
        "server-side copies without CopySourceIfMatch: an object replaced mid-copy mixes two versions",
        (T + "test_server_copy.py::test_source_replaced_mid_server_copy_is_never_completed",),
    ),
    Mutant(
        "probe-ignoring-store-trusted", "If-Match pinning",
        '    return "ignored", why',
        '    return "checked", why',
        "a store that ignores If-None-Match / If-Match is taken for one that checks them: no warning that an object "
        "written meanwhile may be overwritten",
        (T + "test_conditional.py::test_the_probe_tells_a_store_that_checks_refuses_or_ignores_conditional_writes",
         T + "test_conditional.py::test_a_store_that_ignores_conditional_writes_is_said_once_and_written_to"),
    ),
    Mutant(
        "probe-skipped", "If-Match pinning",
        "        if write_if and self.conditional and not self._conditions_probed:",
        "        if False:",
        "a run never asks the store whether it checks conditional writes",
        (T + "test_conditional.py::test_a_store_that_checks_conditional_writes_is_probed_once",
         T + "test_conditional.py::test_a_store_that_ignores_conditional_writes_is_said_once_and_written_to"),
    ),
    # -- part plan -----------------------------------------------------------------------------------------------------
    Mutant(
        "plan-grows-past-the-marker", "part plan",
        "    if math.ceil(size / part_size) > MAX_DATA_PARTS:",
        "    if math.ceil(size / part_size) > MAX_PARTS:",
        "a file of 9,999 or 10,000 ChunkSize parts keeps ChunkSize: its data overwrites the marker parts",
        (T + "test_units.py",),
    ),
    Mutant(
        "plan-grows-rounding-down", "part plan",
        "        part_size = math.ceil(size / MAX_DATA_PARTS / MiB) * MiB",
        "        part_size = math.floor(size / MAX_DATA_PARTS / MiB) * MiB or MiB",
        "the grown part size is rounded down to a MiB: the file still needs more parts than S3 allows",
        (T + "test_units.py",),
    ),
    Mutant(
        "part-count-plus-one", "part plan",
        "        return len(self.ends) if self.ends else max(1, math.ceil(self.size / self.part_size))",
        "        return len(self.ends) if self.ends else self.size // self.part_size + 1",
        "a file of an exact multiple of ChunkSize gets an empty last part: its ETag is not S3's for its layout",
        (T + "test_units.py",),
    ),
    Mutant(
        "layout-ends-inclusive", "part plan",
        "            return offset, self.ends[number - 1] - offset",
        "            return offset, self.ends[number - 1] - offset + 1",
        "the parts of an explicit layout (a source's own) are one byte too long: its ends taken as inclusive",
        (T + "test_units.py::test_chunk_plan_of_an_explicit_layout_keeps_each_part_where_the_source_has_it",),
    ),
    # -- completion list -----------------------------------------------------------------------------------------------
    Mutant(
        "complete-from-listparts", "completion list",
        "                    MultipartUpload={\"Parts\": [{\"PartNumber\": p.number, \"ETag\": f'\"{p.etag}\"'} "
        "for p in parts]},",
        "                    MultipartUpload={\"Parts\": [{\"PartNumber\": p.number, \"ETag\": f'\"{p.etag}\"'} "
        "for p in list_upload_parts(self.client, self.bucket, key, upload_id, self.retry)]},",
        "the upload is completed from its ListParts, as the original did: the marker parts are listed too",
        (T + "test_local_to_s3.py::test_directory_tree_nested_unicode_zero_byte_small_and_exact_multiples",),
    ),
    Mutant(
        "complete-sorted-as-text", "completion list",
        "        parts.sort(key=lambda p: p.number)",
        "        parts.sort(key=lambda p: str(p.number))",
        "the parts are sorted as text (1, 10, 11, 2, ...): the expected ETag and the part list are in the wrong order",
        (T + "test_faults.py::test_ctrl_c_stops_quickly_and_the_rerun_resumes",),
    ),
    Mutant(
        "range-completed-with-parts-missing", "completion list",
        "        if result.missing:\n            result.parts = len(mine)\n            return",
        "        if False:\n            result.parts = len(mine)\n            return",
        "a fleet worker completes a big file's upload once its own range is there, the other ranges' parts still "
        "missing",
        (T + "test_sqs_fleet.py::test_a_big_file_is_queued_as_ranges_of_one_upload_that_two_workers_complete",
         T + "test_sqs_fleet.py::test_a_worker_killed_mid_range_leaves_it_to_the_next"),
    ),
    # -- stale abort ---------------------------------------------------------------------------------------------------
    Mutant(
        "stale-abort-flipped", "stale abort",
        "                if not state.abandoned(self.s):\n                    self.left_alone.add(",
        "                if state.abandoned(self.s):\n                    self.left_alone.add(",
        "a file done with its uploads aborts those another run adds parts to (live) and keeps the abandoned ones",
        (T + "test_integrity.py::test_an_upload_the_file_no_longer_needs_is_aborted",
         T + "test_integrity.py::test_an_upload_another_run_adds_parts_to_is_never_aborted"),
    ),
    Mutant(
        "worker-abort-flipped", "stale abort",
        "        if state.abandoned(settings):  # a leftover of a duplicate delivery",
        "        if not state.abandoned(settings):  # a leftover of a duplicate delivery",
        "a worker finding the object complete aborts the uploads another worker adds parts to and keeps the leftovers",
        (T + "test_sqs_fleet.py::test_worker_aborts_uploads_older_than_the_complete_object",),
    ),
    Mutant(
        "restart-aborts-a-live-upload", "stale abort",
        "            if abandoned:\n                log.warning(\"restart %s",
        "            if True:\n                log.warning(\"restart %s",
        "an upload that cannot be resumed (another version or layout) is aborted though a part was added a moment ago: "
        "another run's work in progress is destroyed under it",
        (T + "test_integrity.py::test_an_upload_another_run_adds_parts_to_is_never_aborted",
         T + "test_concurrent.py::test_a_lost_create_answer_never_aborts_another_runs_upload"),
    ),
    Mutant(
        "join-a-live-upload-without-marker", "stale abort",
        "            if check.proven or (not check.restart and abandoned):",
        "            if check.proven or not check.restart:",
        "an upload without this tool's marker is resumed while another tool still adds parts to it",
        (T + "test_integrity.py::test_an_upload_another_run_adds_parts_to_is_never_aborted",),
    ),
    Mutant(
        "idle-since-creation", "stale abort",
        "    last = max((p.modified for p in parts), default=0.0) or initiated",
        "    last = initiated",
        "an upload's idle time counts from its creation, not from its newest part: a long upload another run still "
        "adds parts to is taken for abandoned",
        (T + "test_units.py::test_an_upload_is_idle_since_its_newest_part_by_s3s_clock",),
    ),
    # -- worker confinement --------------------------------------------------------------------------------------------
    Mutant(
        "resolve-lexical-only", "worker confinement",
        "            if os.path.realpath(parent) != lexical:",
        "            if os.path.normpath(parent) != os.path.normpath(os.path.join(self.root, os.path.relpath(parent, "
        "self.root))):",
        "a worker's LocalSource.resolve checks the key's path lexically only: a file under a link to a directory, "
        "which the listing does not follow, is sent",
        (T + "test_sqs_fleet.py::test_a_worker_refuses_a_file_under_a_link_to_a_directory",
         T + "test_units.py::test_a_worker_finds_each_file_by_the_key_the_listing_gives_it"),
    ),
    Mutant(
        "resolve-outside-srcdir", "worker confinement",
        "        if not inside(path, self.root):\n            raise FileFailed(f\"key {key!r} names",
        "        if not path:\n            raise FileFailed(f\"key {key!r} names",
        "a worker takes a message's key with '..' to a file outside SrcDir",
        (T + "test_integrity.py::test_local_worker_refuses_a_message_for_a_file_outside_srcdir",),
    ),
    Mutant(
        "message-of-another-source", "worker confinement",
        "        if (m[\"job_type\"], m[\"des_bucket\"], m[\"src_bucket\"]) != expected:",
        "        if (m[\"job_type\"], m[\"des_bucket\"]) != expected[:2]:",
        "a worker serves a message of another job (another source bucket) with its own config",
        (T + "test_alioss.py::test_fleet_messages_name_the_oss_bucket",),
    ),
    Mutant(
        "message-of-another-destination", "worker confinement",
        "        if (m[\"job_type\"], m[\"des_bucket\"], m[\"src_bucket\"]) != expected:",
        "        if (m[\"job_type\"], m[\"src_bucket\"]) != expected[::2]:",
        "a worker serves a message of another job (another destination bucket): the file goes to its own bucket",
        (T + "test_units.py::test_a_message_this_worker_cannot_serve_is_poison_not_a_file",),
    ),
    Mutant(
        "worker-complete-ignores-size", "worker confinement",
        "    there = Listed(f.key, head[\"ContentLength\"], str(head.get(\"ETag\", \"\")).strip('\"'), written)",
        "    there = Listed(f.key, f.size, str(head.get(\"ETag\", \"\")).strip('\"'), written)",
        "a worker takes an object of the key with another size for the file and deletes the message",
        (T + "test_sqs_fleet.py::test_a_worker_uploads_over_an_object_of_the_key_with_another_size",),
    ),
    Mutant(
        "worker-deletes-failed-message", "worker confinement",
        "        if result.status in (\"uploaded\", \"skipped\"):",
        "        if result.status in (\"uploaded\", \"skipped\", \"failed\"):",
        "a worker deletes the message of a file that failed: nobody sends it again",
        (T + "test_sqs_fleet.py::test_a_file_that_fails_keeps_its_message_and_the_next_worker_sends_it",),
    ),
    # -- exit codes ----------------------------------------------------------------------------------------------------
    Mutant(
        "failed-file-exit-0", "exit codes",
        "    code = EXIT_FAILED if outcome.failed or outcome.missing or source.listing_errors else EXIT_OK",
        "    code = EXIT_FAILED if outcome.missing or source.listing_errors else EXIT_OK",
        "a failed file whose key has an object of the listed size (kept, or older) leaves exit code 0",
        (T + "test_verify.py::test_a_file_changed_while_verify_reads_it_keeps_its_object",),
    ),
    Mutant(
        "mission-over-failure", "exit codes",
        "    if code == EXIT_OK:  # the original's closing line",
        "    if code in (EXIT_OK, EXIT_FAILED):  # the original's closing line",
        "MISSION ACCOMPLISHED is printed over a failure",
        (T + "test_fidelity.py::test_no_closing_line_over_a_failure",),
    ),
    # -- retry classification ------------------------------------------------------------------------------------------
    Mutant(
        "retry-5xx-from-501", "retry classification",
        "        return status >= 500 or status in (408, 429) or code in RETRYABLE_ERROR_CODES",
        "        return status > 500 or status in (408, 429) or code in RETRYABLE_ERROR_CODES",
        "an HTTP 500 with a code the tool does not know is final, not retried",
        (T + "test_faults.py::test_a_500_with_a_code_the_tool_does_not_know_is_retried",),
    ),
    Mutant(
        "access-denied-retried", "retry classification",
        "        if code in FATAL_ERROR_CODES:\n            return False",
        "        if code == \"AccessDenied\":  # an IAM change takes a while to propagate\n            return True\n"
        "        if code in FATAL_ERROR_CODES:\n            return False",
        "AccessDenied is retried MaxRetry times before the file fails",
        (T + "test_failures.py::test_write_denied_fails_at_once_without_retries",),
    ),
    Mutant(
        "throttling-from-any-5xx", "retry classification",
        "    return error_code(exc) in THROTTLING_CODES or status in (429, 503)",
        "    return error_code(exc) in THROTTLING_CODES or status >= 500 or status == 429",
        "any 5xx (a server's trouble with one request) slows every request of the process, as a SlowDown does",
        (T + "test_units.py::test_the_pace_grows_once_per_pause_and_recovers_by_halves",
         T + "test_units.py::test_a_throttling_answer_to_one_request_paces_every_request_of_the_policy"),
    ),
    Mutant(
        "throttling-not-shared", "retry classification",
        "                if paced and is_throttling(exc):\n                    self.pace.throttled()",
        "                if False:\n                    self.pace.throttled()",
        "a SlowDown is retried by its own thread only: the other threads go on at full speed against a store that "
        "asked the process to slow down",
        (T + "test_units.py::test_a_throttling_answer_to_one_request_paces_every_request_of_the_policy",
         T + "test_faults.py::test_a_slowdown_slows_the_whole_process_together"),
    ),
    Mutant(
        "pace-never-recovers", "retry classification",
        "                self.interval = self.interval / 2 if self.interval / 2 >= self.base / 8 else 0.0",
        "                self.interval = self.interval",
        "after one SlowDown the process stays spaced out for the rest of the run: successes never speed it up again",
        (T + "test_units.py::test_the_pace_grows_once_per_pause_and_recovers_by_halves",),
    ),
    # -- CLEAN scope ---------------------------------------------------------------------------------------------------
    Mutant(
        "clean-only-this-jobs", "CLEAN scope",
        "        for u in uploads:\n            note = notes().get(u.key, \"\")",
        "        for u in [u for u in uploads if not notes().get(u.key)]:\n            note = notes().get(u.key, \"\")",
        "CLEAN aborts only the uploads whose key this job's source has, not every one under the prefix",
        (T + "test_usability.py::test_clean_marks_the_uploads_whose_key_this_jobs_source_does_not_have",),
    ),
    Mutant(
        "clean-aborts-none", "CLEAN scope",
        "            abort_upload(des_client, settings.des_bucket, u.key, u.upload_id, retry)\n",
        "            pass\n",
        "CLEAN aborts nothing: the files restart in new uploads and the old ones stay on S3, billed",
        (T + "test_resume.py::test_clean_aborts_every_upload_under_the_prefix_and_restarts",),
    ),
    # -- verify path ---------------------------------------------------------------------------------------------------
    Mutant(
        "verify-deletes-without-asking", "verify path",
        "            return True\n        e._check_unchanged(f)\n    except SourceChanged:",
        "            return True\n    except SourceChanged:",
        "ifVerifyMD5 deletes the object when the re-read differs without asking whether the source changed",
        (T + "test_verify.py::test_a_file_changed_while_verify_reads_it_keeps_its_object",),
    ),
    # -- checksum proof ------------------------------------------------------------------------------------------------
    Mutant(
        "checksum-proof-claimed", "checksum proof",
        "    if not answered and result.proof == shape.proof:",
        "    if not answered and result.proof != shape.proof:",
        "a store that keeps no full-object checksum is said to have proven the copy by it",
        (T + "test_server_copy.py::test_a_store_that_keeps_no_checksum_of_the_copy_is_not_said_to_prove_it_by_one",),
    ),
    # -- source layout -------------------------------------------------------------------------------------------------
    Mutant(
        "layout-from-first-part", "source layout",
        "    with concurrent.futures.ThreadPoolExecutor(min(16, max(parts - 1, 1)), thread_name_prefix=\"layout\") "
        "as pool:",
        "    return ChunkPlan(size, first_size)\n"
        "    with concurrent.futures.ThreadPoolExecutor(min(16, max(parts - 1, 1)), thread_name_prefix=\"layout\") "
        "as pool:",
        "part_layout takes the first part's size for every part: a source in parts of several sizes is cut "
        "wrongly",
        (T + "test_units.py::test_a_source_in_parts_of_several_sizes_has_its_own_layout",
         T + "test_s3_to_s3.py::test_a_source_whose_parts_are_not_of_one_size_is_copied_in_its_own_layout"),
    ),
)
# fmt: on


# ----------------------------------------------------------------------------------------------------------------------
# Checking the list
# ----------------------------------------------------------------------------------------------------------------------


def list_problems(source: str, mutants: tuple[Mutant, ...]) -> list[str]:
    """What is wrong with the list against the current s3_upload.py and tests: an original text not found exactly
    once, a mutation that does not compile, a hint naming no test, a name used twice."""
    problems, seen = [], set()
    for m in mutants:
        if m.name in seen:
            problems.append(f"{m.name}: the name is used twice")
        seen.add(m.name)
        if m.point not in POINTS:
            problems.append(f"{m.name}: decision point {m.point!r} is not one of {POINTS}")
        count = source.count(m.original)
        if count != 1:
            problems.append(f"{m.name}: its original text occurs {count} times in {TARGET} (must be once): "
                            f"{m.original.splitlines()[0].strip()!r}")  # fmt: skip
            continue
        if m.original == m.mutated:
            problems.append(f"{m.name}: the mutated text is the original")
        try:
            compile(source.replace(m.original, m.mutated), TARGET, "exec")
        except SyntaxError as exc:
            problems.append(f"{m.name}: the mutated {TARGET} does not compile ({exc.msg}, line {exc.lineno})")
        if not m.hints:
            problems.append(f"{m.name}: no hints")
        for hint in m.hints:
            path, _, test = hint.partition("::")
            file = ROOT / path
            if not file.is_file():
                problems.append(f"{m.name}: hint {hint!r}: no file {path}")
            elif test and not re.search(rf"^def {re.escape(test.split('[')[0])}\(", file.read_text(), re.M):
                problems.append(f"{m.name}: hint {hint!r}: no test of that name in {path}")
    return problems


# ----------------------------------------------------------------------------------------------------------------------
# Running one mutant
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    mutant: Mutant
    status: str  # "killed" | "survived" | "broken" | "timeout" | "stopped"
    detail: str = ""  # the test that killed it, or why it is broken
    phase: str = ""  # "hints" | "suite"
    seconds: float = 0.0
    log: str = ""


def copy_tree(source: pathlib.Path, to: pathlib.Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        here = pathlib.Path(directory).relative_to(source)
        return {n for n in names if n in SKIPPED or (here / n).as_posix() in SKIPPED
                or n.startswith((".venv", ".coverage")) or n.endswith(".egg-info")}  # fmt: skip

    shutil.copytree(source, to, ignore=ignore, symlinks=True)


def first_failure(output: str) -> str:
    """The node id of the first failing test in pytest's short summary (-ra), or '' (a collection error names a
    file, not a test)."""
    for line in output.splitlines():
        m = re.match(r"(FAILED|ERROR) (\S+::\S+)", line)
        if m:
            return m.group(2) + (" (error in its setup)" if m.group(1) == "ERROR" else "")
    return ""


def verdict(code: int, output: str) -> tuple[str, str]:
    """(status, detail) of one pytest run.  A failing test is exit 1; with -x under pytest-xdist the session is
    stopped after it and says so, exit 2: that is a kill too.  Any other 2-5 is a mutant the suite cannot even run."""
    failure = first_failure(output)
    if code == 0:
        return "survived", ""
    if failure and (code == 1 or (code == 2 and "stopping after" in output and "during collection" not in output)):
        return "killed", failure
    if code == 1:
        return "killed", "a failing test (not named in the summary)"
    return "broken", f"pytest exit {code}: {PYTEST_ERRORS.get(code, 'unknown')}"


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a pytest run and everything it started: it leads a process group of its own (its xdist workers and
    their test servers, which do not always stop on SIGTERM once their parent is gone).  SIGTERM, a grace period,
    then SIGKILL to whatever of the group is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group never empties
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait()


def run_pytest(tree: pathlib.Path, args: list[str], log: pathlib.Path, timeout: float) -> int | None:
    """pytest in the mutant's tree, its output in log; the exit code, or None when the time ran out."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={tree}/.bt", *args]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        with RUNNING_LOCK:
            if STOPPING.is_set():
                return None
            proc = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            RUNNING.add(proc)
        try:
            return proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            stop_group(proc)
            return None
        except BaseException:  # Ctrl-C while this thread waits: the run must not outlive its tree
            stop_group(proc)
            raise
        finally:
            with RUNNING_LOCK:
                RUNNING.discard(proc)


def run_mutant(m: Mutant, snapshot: pathlib.Path, source: str, logs: pathlib.Path, hints_only: bool,
               limit: float) -> Outcome:  # fmt: skip
    started = time.monotonic()
    log = logs / f"{m.name}.txt"
    log.write_text(f"{m.name} ({m.point}): {m.breaks}\n--- {m.original}\n+++ {m.mutated}\n")
    with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
        tree = pathlib.Path(tmp) / "t"
        copy_tree(snapshot, tree)
        (tree / TARGET).write_text(source.replace(m.original, m.mutated))
        phases = [("hints", list(m.hints))] + ([] if hints_only else [("suite", [])])
        outcome = Outcome(m, "survived", log=str(log))
        for phase, args in phases:
            left = limit - (time.monotonic() - started)
            code = run_pytest(tree, args, log, left)
            outcome.phase = phase
            if STOPPING.is_set():
                outcome.status, outcome.detail = "stopped", "the check was stopped"
                break
            if code is None:
                outcome.status, outcome.detail = "timeout", f"over the time limit of {limit:.0f} s"
                break
            outcome.status, outcome.detail = verdict(code, log.read_text().split("\n$ ")[-1])
            if outcome.status == "killed" and phase == "suite":
                outcome.detail += " (not a hinted test)"
            if outcome.status != "survived":
                break
    outcome.seconds = time.monotonic() - started
    return outcome


def run_unmutated(chosen: list[Mutant], snapshot: pathlib.Path, logs: pathlib.Path, hints_only: bool,
                  limit: float) -> tuple[str, float]:  # fmt: skip
    """The same tests on the code as it is, first: a test that fails there would "kill" every mutant.  Returns ''
    when they pass, else what failed."""
    started = time.monotonic()
    log = logs / "unmutated.txt"
    log.write_text("the tree as it is, no mutation\n")
    with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
        tree = pathlib.Path(tmp) / "t"
        copy_tree(snapshot, tree)
        args = list(dict.fromkeys(h for m in chosen for h in m.hints)) if hints_only else []
        code = run_pytest(tree, args, log, limit)
    seconds = time.monotonic() - started
    if code is None:
        return ("stopped" if STOPPING.is_set() else f"over the time limit of {limit:.0f} s"), seconds
    status, detail = verdict(code, log.read_text().split("\n$ ")[-1])
    return ("" if status == "survived" else detail), seconds


def describe(o: Outcome) -> str:
    what = {"killed": f"killed by {o.detail} ({o.phase})", "survived": "SURVIVED" + (
        " the hinted tests (the whole suite was not run)" if o.phase == "hints" else " the whole suite"),
        "broken": f"BROKEN: {o.detail}", "timeout": f"TIMEOUT: {o.detail} ({o.phase})",
        "stopped": "STOPPED"}[o.status]  # fmt: skip
    return f"{o.mutant.name:32} {what}  [{o.seconds:.0f} s]"


# ----------------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------------


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the check as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--only", default="", help="NAME[,NAME]: run these mutants only")
    parser.add_argument("--hints-only", action="store_true", help="run the hinted tests only, never the whole suite")
    parser.add_argument("--jobs", type=int, default=1, help="mutants at once (default 1: the suite is heavy)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutant (default 1200)")
    parser.add_argument("--skip-unmutated", action="store_true",
                        help="do not run the tests on the code as it is first (they must pass there)")  # fmt: skip
    args = parser.parse_args(argv)

    target = ROOT / TARGET
    source = target.read_text()  # what every mutant starts from (the snapshot below holds the same)
    fingerprint = hashlib.sha256(source.encode()).hexdigest()
    problems = list_problems(source, MUTANTS)
    if problems:
        print(f"mutation_check: the list does not match {TARGET} or the tests:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    chosen = list(MUTANTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {m.name for m in MUTANTS}]
        if unknown:
            print(f"mutation_check: no mutant named {', '.join(unknown)} (--list shows them)", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name} [{m.point}]: {m.breaks}")
            print(f"    - {m.original.strip()}")
            print(f"    + {m.mutated.strip()}")
            print(f"    hints: {' '.join(m.hints)}")
        print(f"{len(chosen)} mutants")
        return 0

    logs = ROOT / "log" / "mutation" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    mode = "hinted tests only" if args.hints_only else "hinted tests, then the whole suite"
    print(f"mutation_check: {len(chosen)} mutants, {mode}, {args.jobs} at a time, {args.timeout:.0f} s each; "
          f"pytest output in {logs}", flush=True)  # fmt: skip
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    signal.signal(signal.SIGTERM, interrupt)
    # The tree as it is now: every run copies this snapshot, so that editing the working tree meanwhile changes nothing.
    snapshot_dir = tempfile.TemporaryDirectory(prefix="mut-snapshot-")
    snapshot = pathlib.Path(snapshot_dir.name) / "t"
    copy_tree(ROOT, snapshot)
    (snapshot / TARGET).write_text(source)
    pool = concurrent.futures.ThreadPoolExecutor(max(1, args.jobs))
    try:
        if not args.skip_unmutated:
            # The whole suite once: given twice a mutant's time, as nothing stops it early.
            failure, seconds = run_unmutated(chosen, snapshot, logs, args.hints_only, 2 * args.timeout)
            if failure:
                print(f"mutation_check: on the code as it is, the tests fail: {failure} (see "
                      f"{logs / 'unmutated.txt'}); a mutation check means nothing until they pass",
                      file=sys.stderr)  # fmt: skip
                return 2
            print(f"unmutated: the tests pass on the code as it is  [{seconds:.0f} s]", flush=True)
        futures = [pool.submit(run_mutant, m, snapshot, source, logs, args.hints_only, args.timeout) for m in chosen]
        for future in concurrent.futures.as_completed(futures):
            o = future.result()
            outcomes[o.mutant.name] = o
            print(f"[{len(outcomes)}/{len(chosen)}] {describe(o)}", flush=True)
    except KeyboardInterrupt:
        print("mutation_check: stopping the pytest runs in flight", file=sys.stderr, flush=True)
        with RUNNING_LOCK:
            STOPPING.set()
            running = list(RUNNING)
        for proc in running:
            stop_group(proc)
        pool.shutdown(wait=True, cancel_futures=True)
        return 130
    finally:
        pool.shutdown()
        snapshot_dir.cleanup()
    if hashlib.sha256(target.read_bytes()).hexdigest() != fingerprint:  # never: only copies are mutated
        print(f"mutation_check: {TARGET} changed while the check ran; its results are void", file=sys.stderr)
        return 2

    print("\nresults:")
    for m in chosen:
        print(f"  {describe(outcomes[m.name])}")
    killed = sum(1 for o in outcomes.values() if o.status == "killed")
    minutes = (time.monotonic() - started) / 60
    print(f"killed {killed} of {len(chosen)} ({mode}) in {minutes:.1f} min")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
