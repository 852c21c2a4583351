"""`python tools/inspect_frame.py ...` == `perception-inspect ...` (named so as not to shadow the stdlib `inspect`)."""
from perception.cli.inspect import main

if __name__ == "__main__":
    raise SystemExit(main())
