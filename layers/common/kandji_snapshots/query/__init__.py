"""Asking the snapshots questions: the views' and saved queries' Athena SQL, the only text (athena_sql, which
the differ's e-mails also name), and that text run by DuckDB over a local snapshot folder (local_duckdb,
translated by sqlglot; operator tooling only)."""
