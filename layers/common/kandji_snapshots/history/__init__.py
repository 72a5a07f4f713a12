"""The columnar history copy: Parquet tables Athena fills from the committed snapshots (tables), the rules
that copy each snapshot once (copier), their AWS adapters and wiring (aws, runtime), the saved history
questions (queries) and the DuckDB twin over a local folder (local_copy, operator tooling only)."""
