"""The operator's command line, `check`, `collect` and `diff` (main is the entry point). Operator
tooling: not needed in Lambda."""
