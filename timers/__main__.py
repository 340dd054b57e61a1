"""`python -m timers`: the `timers` command (see timers.cli)."""

from timers.cli import main

raise SystemExit(main())
