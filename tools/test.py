"""`python tools/test.py ...` == `perception-test ...` (a thin wrapper: the logic lives in perception/cli/test.py)."""
from perception.cli.test import main

if __name__ == "__main__":
    raise SystemExit(main())
