"""`python -m app` runs the longwatch CLI."""

import sys

from app.cli import main

sys.exit(main())
