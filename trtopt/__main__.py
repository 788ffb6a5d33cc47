"""``python -m trtopt``."""

import sys

from trtopt.cli.main import main

sys.exit(main())
