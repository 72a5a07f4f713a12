"""The differ: compare two committed snapshots and publish once (differ.SnapshotDiffer), changed fields
(field_changes), ignore and severity rules (rules), the event format (events), progress, SNS publisher, wiring."""
