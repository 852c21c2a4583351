"""`python tools/inspect.py ...` == `perception-inspect ...` (a thin wrapper: the logic lives in perception/cli/inspect.py)."""
from perception.cli.inspect import main

if __name__ == "__main__":
    raise SystemExit(main())
