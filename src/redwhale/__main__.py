"""``python -m redwhale`` runs the command line."""

import sys

from redwhale.cli import main

sys.exit(main())
