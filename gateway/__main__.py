"""The ``gateway`` command: serve, keys, check-config, --version."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence

from gateway import __version__
from gateway.config import CONFIG_ENV_VAR, Config, ConfigError, load_config, with_overrides
from gateway.store import DuplicateName, KeyRow, Store


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

    keys = commands.add_parser("keys", help="create, list and revoke proxy keys",
                               description="create, list and revoke proxy keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret (shown once) on stdout")
    create.add_argument("--name", required=True, help="a unique name for the key")
    key_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("key", metavar="NAME_OR_ID")
    for sub in key_commands.choices.values():
        sub.add_argument("--config", metavar="PATH", help="config file (its server.data_dir holds the keys)")
    return parser


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


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging
    from gateway.server import run

    setup_logging()
    config = with_overrides(_load(args.config), host=args.host, port=args.port, workers=args.workers)
    asyncio.run(_prepare_store(config))  # create the data dir and migrate before anything listens
    if config.path is not None:
        os.environ[CONFIG_ENV_VAR] = str(config.path)
    host, port = config.server.host, config.server.port
    shown_host = f"[{host}]" if ":" in host else host
    providers = ", ".join(f"{n} ({config.sources.get(n, p.kind)})" for n, p in config.providers.items())
    print(f"gateway {__version__} listening on http://{shown_host}:{port}", file=sys.stderr)
    print(f"  config: {config.path or 'built-in defaults'}; data: {config.data_dir}", file=sys.stderr)
    print(f"  providers: {providers or 'none configured'}", file=sys.stderr, flush=True)
    run(host, port, config.server.workers)
    return 0


async def _prepare_store(config: Config) -> None:
    store = await Store.open(config.data_dir)
    await store.close()


async def _keys(args: argparse.Namespace, config: Config) -> int:
    from gateway.keys import create_key

    store = await Store.open(config.data_dir)
    try:
        if args.keys_command == "create":
            try:
                secret, _ = await create_key(store, args.name)
            except DuplicateName:
                print(f"error: a key named {args.name!r} already exists", file=sys.stderr)
                return 1
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(secret)
            print("store this secret now: it is shown only once", file=sys.stderr)
            return 0
        if args.keys_command == "list":
            _print_keys(await store.list_keys())
            return 0
        row = await store.find_key(args.key)
        if row is None:
            print(f"error: no key named or with id {args.key!r}", file=sys.stderr)
            return 1
        if row.revoked_at is not None:
            print(f"key {row.name} ({row.id}) was already revoked", file=sys.stderr)
            return 0
        await store.revoke_key(row.id)
        print(f"revoked {row.name} ({row.id})", file=sys.stderr)
        return 0
    finally:
        await store.close()


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def _print_keys(rows: list[KeyRow]) -> None:
    header = ("NAME", "ID", "PREFIX", "CREATED (UTC)", "LAST USED (UTC)", "REVOKED (UTC)")
    table = [header] + [
        (r.name, r.id, r.prefix + "…", _when(r.created_at), _when(r.last_used_at), _when(r.revoked_at))
        for r in rows
    ]
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
    return asyncio.run(_keys(args, _load(args.config)))


if __name__ == "__main__":
    sys.exit(main())
