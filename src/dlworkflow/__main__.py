"""`python -m dlworkflow` is the `dlworkflow` command."""

import sys

from dlworkflow.cli import main

sys.exit(main())
