"""``passwd``: hash a password for the app's login and print the ``secrets.toml`` block to add."""
from __future__ import annotations

import argparse
import getpass
import json
import re
import sys

from ..access import MIN_PASSWORD, ROLES, SCRYPT_N, VIEWER, hash_password


# ------------------------------------------------------------------------------------------- CLI
def run(args: argparse.Namespace) -> int:
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.user}: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < MIN_PASSWORD:
        print(f"error: use at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2
    digest = hash_password(password, n=args.n)
    name = args.user if re.fullmatch(r"[A-Za-z0-9_-]+", args.user) else json.dumps(args.user)
    print(f"# add to .streamlit/secrets.toml (keep that file out of git; see docs/server.md)\n"
          f"[segunc.users.{name}]\npassword_hash = \"{digest}\"\nrole = \"{args.role}\"")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("passwd", help="hash a password for the app's login (prints a secrets.toml block)")
    p.add_argument("user", help="user name to log in with")
    p.add_argument("--role", choices=ROLES, default=VIEWER, help="viewer: browse results; runner: also queue jobs, upload")
    p.add_argument("--stdin", action="store_true", help="read the password from one line of standard input")
    p.add_argument("--n", type=int, default=SCRYPT_N, help=f"scrypt cost N, a power of two (default {SCRYPT_N})")
    p.set_defaults(func=run)
    return p
