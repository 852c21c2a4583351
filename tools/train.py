"""`python tools/train.py ...` == `perception-train ...` (a thin wrapper: the logic lives in perception/cli/train.py)."""
from perception.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
