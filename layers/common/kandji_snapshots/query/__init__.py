"""Asking the snapshots questions: the saved queries' Athena SQL beside its DuckDB twin (fleet_queries)
and DuckDB over a local snapshot folder (local_duckdb). Operator tooling: not needed in Lambda."""
