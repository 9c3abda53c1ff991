"""`python -m mcc_fast` runs the `mcc-fast` command."""
import sys

from .cli import main

sys.exit(main())
