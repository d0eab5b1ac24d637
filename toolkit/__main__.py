"""``python -m toolkit`` runs the edgecam command line."""

import sys

from toolkit.cli import main

sys.exit(main())
