"""`python tools/calib.py ...` == `perception-calib ...` (a thin wrapper: the logic lives in perception/cli/calib.py)."""
from perception.cli.calib import main

if __name__ == "__main__":
    raise SystemExit(main())
