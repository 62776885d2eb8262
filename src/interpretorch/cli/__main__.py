"""``python -m interpretorch.cli``."""
import sys

from interpretorch.cli import main

sys.exit(main())
