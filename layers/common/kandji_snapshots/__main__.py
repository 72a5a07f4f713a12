"""`python -m kandji_snapshots check|collect|diff ...`: the operator's command line (see cli.py)."""

from .cli import main

raise SystemExit(main())
