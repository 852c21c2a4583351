"""`python tools/synth.py ...` == `perception-synth ...` (a thin wrapper: the logic lives in perception/cli/synth.py)."""
from perception.cli.synth import main

if __name__ == "__main__":
    raise SystemExit(main())
