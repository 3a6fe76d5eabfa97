"""``python -m mitigate.report OUT``: write ``OUT/report.html``."""

from mitigate.report.page import main

if __name__ == "__main__":
    raise SystemExit(main())
