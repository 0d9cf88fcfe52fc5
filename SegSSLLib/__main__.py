"""`python -m SegSSLLib ...` is the same as the `segssl` command."""

from SegSSLLib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
