"""`python tools/evaluate.py ...` == `perception-test ...` (named so as not to shadow the stdlib `test` package)."""
from perception.cli.test import main

if __name__ == "__main__":
    raise SystemExit(main())
