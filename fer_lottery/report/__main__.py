"""``python -m fer_lottery.report DIR...``: see ``fer_lottery.report.cli``."""

import sys

from fer_lottery.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
