"""`python -m kandji_snapshots check|collect|diff ...`: the operator's command line (see cli.py)."""

from kandji_snapshots.cli.main import main

raise SystemExit(main())
