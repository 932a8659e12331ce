"""`dane-relay user add|del|list`: manage the AUTH users of the submission listener.

    dane-relay user add NAME [--users-file F | --config F] [--password-stdin]
    dane-relay user del NAME [--users-file F | --config F]
    dane-relay user list     [--users-file F | --config F]

The file is `--users-file`, else `listen.users_file` of `--config`.  `add`
asks for the password twice on the terminal (never echoed), or reads one
line from standard input with `--password-stdin` (for scripts); it adds the
user or changes the password of an existing one.  The format and the
hashing are described in `relay.users`.  Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from relay.config import Config
from relay.errors import UsageError
from relay.users import add_user, read_users, remove_user

__all__ = ["register"]


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description="Manage the users file of the submission listener (salted scrypt hashes).",
    )
    actions = parser.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user or change a password")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of a prompt",
    )
    add.set_defaults(handler=run_add)
    delete = actions.add_parser("del", help="remove a user")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=run_del)
    listing = actions.add_parser("list", help="print the user names")
    listing.set_defaults(handler=run_list)
    for action in (add, delete, listing):
        where = action.add_mutually_exclusive_group()
        where.add_argument("--users-file", type=Path, metavar="FILE", help="the users file")
        where.add_argument(
            "--config", type=Path, metavar="FILE", help="take listen.users_file from this file"
        )


def users_file(args: argparse.Namespace) -> Path:
    if args.users_file is not None:
        return Path(args.users_file)
    if args.config is None:
        raise UsageError("say which users file: --users-file FILE or --config FILE")
    config = Config.load(args.config)
    listen = getattr(config, "listen", None)  # the [listen] section, once config.py has it
    path = getattr(listen, "users_file", None)
    if path is None:
        raise UsageError(f"{args.config}: listen.users_file is not set")
    return Path(path)


def read_password(from_stdin: bool) -> bytes:
    if from_stdin:
        line = sys.stdin.buffer.readline()
        password = line.removesuffix(b"\n").removesuffix(b"\r")
    else:
        try:
            first = getpass.getpass("Password: ")
            second = getpass.getpass("Password again: ")
        except EOFError:
            raise UsageError("no password given") from None
        if first != second:
            raise UsageError("the passwords differ")
        password = first.encode("utf-8")
    if not password:
        raise UsageError("the password is empty")
    return password


def run_add(args: argparse.Namespace) -> int:
    path = users_file(args)
    existed = add_user(path, args.name, read_password(args.password_stdin))
    print(f"{'changed the password of' if existed else 'added'} user {args.name} in {path}")
    return 0


def run_del(args: argparse.Namespace) -> int:
    path = users_file(args)
    if not remove_user(path, args.name):
        raise UsageError(f"{path}: no user {args.name!r}")
    print(f"removed user {args.name} from {path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    for name in sorted(read_users(users_file(args))):
        print(name)
    return 0
