"""The ``gateway`` command: serve, keys, check-config, --version."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from gateway import __version__, keys
from gateway.config import CONFIG_ENV_VAR, Config, ConfigError, load_config, parse_expiry, with_overrides
from gateway.store import KeyLimits, Store
from gateway.usage_report import BY_CHOICES, as_csv, as_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="A self-hosted LLM gateway speaking the OpenAI API.",
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
    update = key_commands.add_parser("update", help="change a key's limits (only the flags given change)")
    update.add_argument("key", metavar="NAME_OR_ID")
    for sub in (create, update):
        _limit_flags(sub)
    key_commands.add_parser("list", help="list keys with their spend and limits (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("key", metavar="NAME_OR_ID")
    for sub in key_commands.choices.values():
        sub.add_argument("--config", metavar="PATH", help="config file (its server.data_dir holds the keys)")

    usage = add("usage", "print usage and spend, aggregated by key, model, project or day")
    usage.add_argument("--by", choices=BY_CHOICES, default="key", help="how to group (default: key)")
    usage.add_argument("--since", metavar="DATE", type=_date, help="from this UTC day on (YYYY-MM-DD)")
    usage.add_argument("--until", metavar="DATE", type=_date, help="up to this UTC day (YYYY-MM-DD)")
    usage.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    return parser


def _none_or(kind: Callable[[str], object]) -> Callable[[str], object]:
    """A flag value, or 'none' to clear the limit."""
    def parse(value: str) -> object:
        return None if value.lower() == "none" else kind(value)
    return parse


def _date(value: str) -> str:
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {value!r}") from None


def _expiry(value: str) -> float:
    return parse_expiry(_date(value))


def _patterns(value: str) -> list[str]:
    return [p.strip() for p in value.split(",")]


def _limit_flags(sub: argparse.ArgumentParser) -> None:
    unset = argparse.SUPPRESS  # update changes only the flags that are given
    sub.add_argument("--budget-usd", type=_none_or(float), default=unset, metavar="X",
                     help="USD budget per period ('none': no budget)")
    sub.add_argument("--budget-period", choices=("day", "week", "month", "total"), default=unset,
                     help="budget period, UTC boundaries (default: month)")
    sub.add_argument("--rpm", type=_none_or(int), default=unset, metavar="N", help="requests per minute ('none')")
    sub.add_argument("--tpm", type=_none_or(int), default=unset, metavar="N", help="tokens per minute ('none')")
    sub.add_argument("--models", type=_none_or(_patterns), default=unset, metavar="PATTERN,...",
                     help="allowed models: globs over provider/model and group names ('none': all)")
    sub.add_argument("--expires", type=_none_or(_expiry), default=unset, metavar="YYYY-MM-DD",
                     help="the key stops working on this UTC day ('none': never)")
    sub.add_argument("--project", type=_none_or(str), default=unset, metavar="ID",
                     help="the project its requests count against ('none')")


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
    path.write_text(render(example_text(), os.environ), encoding="utf-8")
    config = _load(str(path))
    providers = ", ".join(config.providers) or "none yet: uncomment a [providers.NAME] table"
    code = asyncio.run(_keys(argparse.Namespace(keys_command="create", name=args.key_name), config))
    print(f"wrote {path} (providers: {providers})", file=sys.stderr)
    if code == 0:
        print(f"start the gateway with: gateway serve --config {path}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging
    from gateway.server import serve

    setup_logging()
    serve(with_overrides(_load(args.config), host=args.host, port=args.port, workers=args.workers))
    return 0


async def _keys(args: argparse.Namespace, config: Config) -> int:
    store = await Store.open(config.data_dir)
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
    store = await Store.open(config.data_dir)
    try:
        rows = await store.aggregate(args.by, since=args.since, until=args.until)
    finally:
        await store.close()
    print(as_csv(args.by, rows) if args.csv else as_table(args.by, rows), end="")
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "-"


def _print_keys(views: list[keys.KeyView]) -> None:
    header = ("NAME", "ID", "SOURCE", "PREFIX", "CREATED", "LAST USED", "REVOKED", "SPENT", "BUDGET", "RPM", "TPM",
              "MODELS", "EXPIRES", "PROJECT")
    table = [header] + [(
        v.name, v.id, v.source, (v.prefix + "…") if v.prefix else "-", _when(v.created_at), _when(v.last_used_at),
        _when(v.revoked_at), f"${v.spent_usd:.4f}",
        f"${v.budget_usd:g}/{v.budget_period}" if v.budget_usd is not None else "-",
        str(v.rpm or "-"), str(v.tpm or "-"), ",".join(v.models) if v.models is not None else "*",
        _when(v.expires_at)[:10], v.project or "-",
    ) for v in views]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    multiprocessing.freeze_support()
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args(["serve", *(argv or sys.argv[1:])])
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "usage":
        return asyncio.run(_usage(args, _load(args.config)))
    if args.command == "init":
        return cmd_init(args)
    return asyncio.run(_keys(args, _load(args.config)))


if __name__ == "__main__":
    sys.exit(main())
