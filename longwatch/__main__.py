"""`python -m longwatch`: the same as the `longwatch` console script."""

from longwatch.app.cli import main

raise SystemExit(main())
