"""`python -m kandji_snapshots ...`, the same as the `kandji-snapshots` command (see cli/main.py)."""

from kandji_snapshots.cli.main import main

raise SystemExit(main())
