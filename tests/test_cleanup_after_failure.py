"""A failed run removes the parts it wrote; parts S3 refuses to delete are logged by key and code.

DeleteObjects answers 200 even when it deleted nothing: the refusals come back per key in `Errors`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import boto3
import pytest
from aws_helpers import BUCKET
from handler_pipeline import snapshot_keys

from kandji_snapshots.collect import runtime as collector_runtime
from kandji_snapshots.errors import SnapshotWriteError
from kandji_snapshots.snapshots.storage import S3ObjectStore
from simulator import Fleet


class StubS3:
    """Just the DeleteObjects call, answering like S3 does when some keys may not be deleted."""

    def __init__(self, refuse: set[str]):
        self.refuse = refuse
        self.calls: list[list[str]] = []

    def delete_objects(self, Bucket, Delete):
        keys = [item["Key"] for item in Delete["Objects"]]
        self.calls.append(keys)
        return {"Errors": [{"Key": key, "Code": "AccessDenied", "Message": "Access Denied"}
                           for key in keys if key in self.refuse]}


def test_keys_s3_refuses_to_delete_are_logged_with_their_code(caplog):
    keys = [f"snapshots/devices/dt=2026-11-23/20261123T100000Z-{index:05d}.json.gz" for index in range(1500)]
    s3 = StubS3(refuse={keys[3], keys[1200]})
    with caplog.at_level(logging.WARNING, logger="kandji_snapshots"):
        S3ObjectStore(s3, BUCKET).delete(keys)  # does not raise: the caller's own error matters more
    assert [len(call) for call in s3.calls] == [1000, 500]
    [record] = caplog.records
    assert "could not delete 2 of 1500 objects" in record.getMessage() and "AccessDenied" in record.getMessage()
    assert record.undeleted == [{"key": keys[3], "code": "AccessDenied", "message": "Access Denied"},
                                {"key": keys[1200], "code": "AccessDenied", "message": "Access Denied"}]


def test_a_clean_delete_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="kandji_snapshots"):
        S3ObjectStore(StubS3(refuse=set()), BUCKET).delete(["a", "b"])
    assert caplog.records == []


def test_a_failed_runs_parts_that_cannot_be_deleted_are_named_in_the_log(pipeline, monkeypatch, caplog):
    run = pipeline(Fleet.generate(60, seed=31))
    build = collector_runtime.build_collector
    monkeypatch.setattr(collector_runtime, "build_collector", lambda credentials, store, settings, **wiring: build(
        credentials, store, replace(settings, rows_per_part=25), **wiring))
    # The manifest cannot be written (the run fails), and the devices parts already written cannot be deleted.
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/snapshots/manifests/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/snapshots/devices/*"}]}
    boto3.client("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))

    caplog.set_level(logging.INFO, logger="kandji_snapshots")
    with pytest.raises(SnapshotWriteError, match="snapshots/manifests/"):  # the run's own error, unchanged
        run.collect()
    left = snapshot_keys()
    assert left and all(key.startswith("snapshots/devices/") for key in left)
    [undeleted] = [record for record in caplog.records if "could not delete" in record.getMessage()]
    assert undeleted.levelno == logging.ERROR and "AccessDenied" in undeleted.getMessage()
    assert sorted(item["key"] for item in undeleted.undeleted) == left
    assert {item["code"] for item in undeleted.undeleted} == {"AccessDenied"}
    failed = [record for record in caplog.records if getattr(record, "error_type", None) == "SnapshotWriteError"]
    assert failed and "manifests" in failed[0].error  # still reported as the cause
