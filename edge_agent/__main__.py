"""``python -m edge_agent`` runs the command line."""

import sys

from edge_agent.cli import main

sys.exit(main())
