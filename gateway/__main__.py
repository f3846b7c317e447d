"""The ``gateway`` command: serve, keys, check-config, --version."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.catalog import format_usd
from gateway.config import CONFIG_ENV_VAR, Config, ConfigError, ServeFlags, load_config, parse_expiry
from gateway.invocation import program

# What only some commands need is imported by them: the store (aiosqlite, asyncio), the key operations and
# the usage report. Every run builds the whole parser, `--version` and `--help` included, and the single
# executable pays for each import again at every start.
if TYPE_CHECKING:
    from gateway import keys


class _ByChoices:
    """`usage --by`'s choices, read from the usage report only when argparse checks a value or prints
    them (the module brings the store with it)."""

    def __contains__(self, value: object) -> bool:
        return value in self._choices()

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices())

    @staticmethod
    def _choices() -> tuple[str, ...]:
        from gateway.usage_report import BY_CHOICES

        return BY_CHOICES


def _parser() -> argparse.ArgumentParser:
    prog = program()
    parser = argparse.ArgumentParser(
        prog=prog, description="A self-hosted LLM gateway speaking the OpenAI API.",
        epilog=f"With no COMMAND, `{prog}` runs `{prog} serve` (on ./config.toml or the built-in defaults).",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--config", metavar="PATH",
                         help=f"config file (default: ${CONFIG_ENV_VAR}, then ./config.toml, then built-in defaults)")
        return sub

    serve = add("serve", "run the gateway server")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (overrides server.workers)")

    add("check-config", "validate the config file and exit (0 = valid, 2 = invalid)")
    init = add("init", "write a commented config.toml (from the example) and create a first key")
    init.add_argument("--key-name", default="default", help="name of the first key (default: default)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config file")

    keys = commands.add_parser("keys", help="create, update, list and revoke proxy keys",
                               description="create, update, list and revoke proxy keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret (shown once) on stdout")
    create.add_argument("--name", required=True, help="a unique name for the key")
    update = key_commands.add_parser("update", help="change a key's limits (only the flags given change)",
                                     description="change a key's limits: only the flags given change, every "
                                                 "other limit keeps its current value")
    update.add_argument("key", metavar="NAME_OR_ID")
    _limit_flags(create, creating=True)
    _limit_flags(update, creating=False)
    key_commands.add_parser("list", help="list keys with their spend and limits (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("key", metavar="NAME_OR_ID")
    for sub in key_commands.choices.values():
        sub.add_argument("--config", metavar="PATH", help="config file (its server.data_dir holds the keys)")

    usage = add("usage", "print usage and spend, aggregated by key, model, project or day")
    usage.add_argument("--by", choices=_ByChoices(), default="key", metavar="BY",
                       help="how to group: %(choices)s (default: key)")
    usage.add_argument("--since", metavar="DATE", type=_date, help="from this UTC day on (YYYY-MM-DD)")
    usage.add_argument("--until", metavar="DATE", type=_date, help="up to this UTC day (YYYY-MM-DD)")
    usage.add_argument("--csv", action="store_true", help="print CSV instead of a table")

    migrate = commands.add_parser(
        "migrate-store", help="copy an SQLite store into an empty PostgreSQL database ([store] backend)",
        description="copy every key, usage record, aggregate and admin session of an SQLite store into an "
                    "empty PostgreSQL database, in one transaction, and check the row counts afterwards")
    migrate.add_argument("--from", dest="source", required=True, type=_sqlite_source, metavar="sqlite:PATH",
                         help="the SQLite database: its file, or the server.data_dir holding gateway.db")
    migrate.add_argument("--to", dest="target", required=True, type=_postgres_target, metavar="postgres://...",
                         help="the PostgreSQL database (created beforehand, empty)")
    return parser


def _sqlite_source(value: str) -> Path:
    from gateway.store import DB_FILENAME

    scheme, _, rest = value.partition(":")
    if scheme != "sqlite" or not rest:
        raise argparse.ArgumentTypeError(f"{value!r}: expected sqlite:PATH")
    path = Path(rest).expanduser()
    path = path / DB_FILENAME if path.is_dir() else path
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no SQLite database at {path}")
    return path


def _postgres_target(value: str) -> str:
    if not value.startswith(("postgres://", "postgresql://")):
        raise argparse.ArgumentTypeError("expected a postgres:// or postgresql:// URL")
    return value


def _none_or(kind: Callable[[str], object], expected: str) -> Callable[[str], object]:
    """A flag value, or 'none' to clear the limit; a bad value is refused saying what is expected (argparse
    alone would say "invalid parse value")."""
    def parse(value: str) -> object:
        if value.lower() == "none":
            return None
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r}: expected {expected}, or 'none'") from None
    return parse


def _usd(value: str) -> float:
    amount = float(value)
    if not math.isfinite(amount):  # "nan" and "inf" parse as floats, but no budget can be compared to them
        raise ValueError(value)
    return amount  # a negative amount is refused by keys.validate_limits, as on the admin page


def _date(value: str) -> str:
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {value!r}") from None


def _expiry(value: str) -> float:
    expires = parse_expiry(_date(value))
    if expires <= time.time():
        # The key stops working at the start of that UTC day: a day already begun would make a key that
        # never works (or one that stops at once), which nobody asks for on purpose.
        raise argparse.ArgumentTypeError(f"{value} has already begun (UTC): a key expiring then would not work; "
                                         "give a later day")
    return expires


def _patterns(value: str) -> list[str]:
    return [p.strip() for p in value.split(",")]


def _limit_flags(sub: argparse.ArgumentParser, *, creating: bool) -> None:
    unset = argparse.SUPPRESS  # update changes only the flags that are given

    def default(value: str) -> str:
        # create applies these defaults; update never does (a flag not given keeps its current value).
        return f"default: {value}" if creating else "unchanged when not given"

    sub.add_argument("--budget-usd", type=_none_or(_usd, "a number of US dollars such as 25 or 0.50"),
                     default=unset, metavar="X",
                     help=f"USD budget per period ('none': no budget; {default('none')})")
    sub.add_argument("--budget-period", choices=("day", "week", "month", "total"), default=unset,
                     help=f"budget period, UTC boundaries ({default('month')})")
    sub.add_argument("--rpm", type=_none_or(int, "a whole number"), default=unset, metavar="N",
                     help=f"requests per minute ('none': no limit; {default('none')})")
    sub.add_argument("--tpm", type=_none_or(int, "a whole number"), default=unset, metavar="N",
                     help=f"tokens per minute ('none': no limit; {default('none')})")
    sub.add_argument("--models", type=_none_or(_patterns, "comma-separated patterns"), default=unset,
                     metavar="PATTERN,...",
                     help=f"allowed models: globs over provider/model and group names ('none': all; {default('all')})")
    sub.add_argument("--expires", type=_none_or(_expiry, "a day as YYYY-MM-DD"), default=unset, metavar="YYYY-MM-DD",
                     help=f"the key stops working on this UTC day ('none': never; {default('never')})")
    sub.add_argument("--project", type=_none_or(str, "a project name"), default=unset, metavar="ID",
                     help=f"the project its requests count against ('none': no project; {default('none')})")


_LIMIT_FLAGS = {"budget_usd": "budget_usd", "budget_period": "budget_period", "rpm": "rpm", "tpm": "tpm",
                "models": "models", "expires": "expires_at", "project": "project"}


def _limit_changes(args: argparse.Namespace) -> dict[str, object]:
    return {field: getattr(args, flag) for flag, field in _LIMIT_FLAGS.items() if hasattr(args, flag)}


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    where = config.path or "built-in defaults"
    names = ", ".join(f"{p.name} ({p.kind})" for p in config.providers.values()) or "none"
    print(f"config OK: {where}\nproviders: {names}\ndata dir: {config.data_dir}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.init import example_text, render

    path = Path(args.config or "config.toml")
    if path.exists() and not args.force:
        print(f"error: {path} already exists (use --force to overwrite it)", file=sys.stderr)
        return 1
    # The new file is written beside the old one (so its relative data_dir means the same) and takes its
    # place only once the key exists: a failed init leaves the old file and the database as they were.
    draft = path.with_name(f".{path.name}.init-{os.getpid()}")
    try:
        draft.write_text(render(example_text(), os.environ), encoding="utf-8")
        config = dataclasses.replace(_load(str(draft)), path=path.resolve())
        import asyncio

        code = asyncio.run(_keys(argparse.Namespace(keys_command="create", name=args.key_name), config))
        if code != 0:
            print(f"{path} was left unchanged", file=sys.stderr)
            return code
        draft.replace(path)
    finally:
        draft.unlink(missing_ok=True)
    providers = ", ".join(config.providers) or "none yet: uncomment a [providers.NAME] table"
    print(f"wrote {path} (providers: {providers})", file=sys.stderr)
    print(f"start the gateway with: {program()} serve --config {path}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging
    from gateway.server import ServeRefused, serve, tolerate_closed_stderr

    tolerate_closed_stderr()  # before any handler takes hold of sys.stderr
    setup_logging()
    flags = ServeFlags(host=args.host, port=args.port, workers=args.workers)
    try:
        serve(flags.apply(_load(args.config)), flags)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ServeRefused as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


async def _keys(args: argparse.Namespace, config: Config) -> int:
    import msgspec

    from gateway import keys
    from gateway.store import KeyLimits, open_store

    store = await open_store(config)
    try:
        if args.keys_command == "create":
            limits = msgspec.convert(_limit_changes(args), KeyLimits)
            secret, _ = await keys.create(store, config, args.name, limits)
            print(secret)
            print("store this secret now: it is shown only once", file=sys.stderr)
        elif args.keys_command == "update":
            row = await keys.update(store, config, args.key, _limit_changes(args))
            print(f"updated {row.name} ({row.id}); a running server applies it within a second", file=sys.stderr)
        elif args.keys_command == "list":
            _print_keys(await keys.list_keys(store, config, time.time()))
        else:
            row, revoked = await keys.revoke(store, config, args.key)
            state = "revoked" if revoked else "was already revoked:"
            print(f"{state} {row.name} ({row.id})", file=sys.stderr)
        return 0
    except keys.KeyOperationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _usage(args: argparse.Namespace, config: Config) -> int:
    from gateway.store import open_store
    from gateway.usage_report import as_csv, as_table

    store = await open_store(config)
    try:
        rows = await store.aggregate(args.by, since=args.since, until=args.until)
    finally:
        await store.close()
    print(as_csv(args.by, rows) if args.csv else as_table(args.by, rows), end="")
    return 0


async def _migrate_store(source_path: Path, target_url: str) -> int:
    from gateway.store import TABLES, SqliteStore, StoreNotEmpty, open_postgres, redact_url

    source = await SqliteStore.open_file(source_path)
    try:
        target = await open_postgres(target_url)
    except BaseException:
        await source.close()
        raise
    try:
        copied = await target.copy_from(source)
        for table in TABLES:
            here, there = await source.count_rows(table), await target.count_rows(table)
            if not here == copied[table] == there:
                print(f"error: {table}: {here} rows in the source, {copied[table]} copied, {there} in the target",
                      file=sys.stderr)
                return 1
            print(f"{table}: {there} rows")
    except StoreNotEmpty as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await target.close()
        await source.close()
    print(f"copied {source_path} into {redact_url(target_url)}; set [store] backend = \"postgres\" and "
          "postgres_url to serve from it", file=sys.stderr)
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "-"


def _print_keys(views: list[keys.KeyView]) -> None:
    header = ("NAME", "ID", "SOURCE", "PREFIX", "CREATED", "LAST USED", "REVOKED", "SPENT", "BUDGET", "RPM", "TPM",
              "MODELS", "EXPIRES", "PROJECT")
    table = [header] + [(
        v.name, v.id, v.source, (v.prefix + "…") if v.prefix else "-", _when(v.created_at), _when(v.last_used_at),
        _when(v.revoked_at), format_usd(v.spent_usd),
        f"{format_usd(v.budget_usd)}/{v.budget_period}" if v.budget_usd is not None else "-",
        str(v.rpm or "-"), str(v.tpm or "-"), ",".join(v.models) if v.models is not None else "*",
        _when(v.expires_at)[:10], v.project or "-",
    ) for v in views]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        # The reader went away (`keys list | head`): stop quietly like other command-line tools, and point
        # stdout at /dev/null so the interpreter's last flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    multiprocessing.freeze_support()
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args(["serve", *(argv or sys.argv[1:])])
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "init":
        return cmd_init(args)
    import asyncio

    from gateway.store import StoreUnavailable

    try:
        if args.command == "usage":
            return asyncio.run(_usage(args, _load(args.config)))
        if args.command == "migrate-store":
            return asyncio.run(_migrate_store(args.source, args.target))
        return asyncio.run(_keys(args, _load(args.config)))
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
