"""Asking the snapshots questions: the saved queries' Athena SQL beside its DuckDB twin (fleet_queries, which
the differ's e-mails also name) and DuckDB over a local snapshot folder (local_duckdb, operator tooling only)."""
