"""The ``cloudwindow`` command: serve, db, admin, demo load, audit verify, evidence verify, catalogue."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import secrets
import sys
from pathlib import Path

from aiohttp import web

from server.clock import SystemClock
from server.settings import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    return load_settings(args.config, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import create_app
    from server.logconfig import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    app.on_startup.append(_freeze_startup_heap)
    print(f"CloudWindow serving on http://{settings.host}:{settings.port}/", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


async def _freeze_startup_heap(_app: web.Application) -> None:
    """Keep what start-up built (modules, mappers, the app) out of the garbage collector's full passes.

    Without this, every full collection walks the whole start-up heap: about
    80 ms with the event loop stopped, a few times a minute under load, which
    was the queue's p99 (docs/benchmarks.md). Runs last among the start-up hooks.
    """
    gc.collect()
    gc.freeze()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from server.storage.migrate import upgrade

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url(), args.revision)
    print(f"database at {args.revision}")
    return 0


async def _with_db(settings: Settings, fn):  # type: ignore[no-untyped-def]
    from server.storage.database import Database

    db = Database(settings.resolved_database_url())
    try:
        async with db.transaction() as s:
            return await fn(s)
    finally:
        await db.close()


def cmd_create_user(args: argparse.Namespace) -> int:
    from server.services import accounts
    from server.services.principal import Role

    settings = _settings(args)
    password = args.password
    generated = False
    if password is None and sys.stdin.isatty():
        password = getpass.getpass("password: ")
    if not password:
        password, generated = secrets.token_urlsafe(12), True
    body = accounts.UserCreate(
        username=args.username,
        password=password,
        display_name=args.display_name or args.username,
        role=Role(args.role),
        unit_code=args.unit,
        department_code=args.department,
    )

    async def run(s):  # type: ignore[no-untyped-def]
        return await accounts.create_user(s, SystemClock(), body)

    user = asyncio.run(_with_db(settings, run))
    print(f"created user {user.username} (id {user.id}, role {user.role})")
    if generated:
        print(f"password: {password}")
    return 0


def cmd_demo_load(args: argparse.Namespace) -> int:
    from server import demo

    settings = _settings(args)

    async def run(s):  # type: ignore[no-untyped-def]
        if await demo.is_loaded(s):
            if not args.reset_passwords:
                return None
            return await demo.reset_passwords(s, password=args.password)
        return await demo.load(s, SystemClock(), password=args.password)

    users = asyncio.run(_with_db(settings, run))
    if users is None:
        print("demo district already loaded (use --reset-passwords to print fresh credentials)")
        return 0
    print("demo district loaded; log in at the web client with:")
    print(f"  {'username':<15}{'role':<17}{'unit':<6}password")
    for u in users:
        print(f"  {u.username:<15}{u.role:<17}{u.unit:<6}{u.password}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from server.services import audit

    settings = _settings(args)

    async def run(s):  # type: ignore[no-untyped-def]
        if args.case is not None:
            return [await audit.verify_case(s, args.case)]
        return await audit.verify_all(s)

    results = asyncio.run(_with_db(settings, run))
    bad = [r for r in results if not r.ok]
    for r in bad:
        print(f"case {r.case_id}: BROKEN at entry {r.broken_at}: {r.reason}")
    print(f"{len(results)} case trail(s) checked, {len(bad)} broken")
    return 1 if bad else 0


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    """Verify every inspection evidence photo (or one case's): signature, record, stored photo."""
    from server.objectstore import create_object_store
    from server.services.evidence import EvidenceSigner
    from server.services.inspections import verify_evidence
    from server.storage.database import Database
    from server.storage.inspections import InspectionRepository

    settings = _settings(args)

    async def run() -> list[tuple[int, int, list[str]]]:
        secret = settings.resolved_secret_key()
        signer = EvidenceSigner(secret)
        store = create_object_store(settings.object_store, root=settings.resolved_object_root(), secret=secret)
        db = Database(settings.resolved_database_url())
        try:
            async with db.transaction() as s:
                repo = InspectionRepository(s)
                rows = list(await (repo.evidence_of_case(args.case) if args.case else repo.all_evidence()))
            out = []
            for row in rows:
                result = await verify_evidence(store, signer, row)
                out.append((row.case_id, row.id, [] if result.valid else result.problems))
            return out
        finally:
            await store.close()
            await db.close()

    results = asyncio.run(run())
    bad = [r for r in results if r[2]]
    for case_id, evidence_id, problems in bad:
        print(f"case {case_id} evidence {evidence_id}: TAMPERED: {'; '.join(problems)}")
    print(f"{len(results)} evidence photo(s) checked, {len(bad)} failed")
    return 1 if bad else 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    from server.services import catalogue

    settings = _settings(args)
    if args.action == "import":
        text = Path(args.file).read_text(encoding="utf-8")
        spec = catalogue.parse_csv(text) if args.file.endswith(".csv") else catalogue.parse_yaml(text)

        async def run_import(s):  # type: ignore[no-untyped-def]
            return await catalogue.import_spec(s, spec)

        print(asyncio.run(_with_db(settings, run_import)))
        return 0

    async def run_export(s):  # type: ignore[no-untyped-def]
        return await catalogue.export_spec(s)

    spec = asyncio.run(_with_db(settings, run_export))
    out = catalogue.dump_csv(spec) if args.file.endswith(".csv") else catalogue.dump_yaml(spec)
    Path(args.file).write_text(out, encoding="utf-8")
    print(f"wrote {len(spec.matters)} matters to {args.file}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudwindow", description="CloudWindow (云窗口) server")
    p.add_argument("--config", help="TOML config file (or set CLOUDWINDOW_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(fn=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(fn=cmd_db_upgrade)

    admin = sub.add_parser("admin", help="administration").add_subparsers(dest="admin_command", required=True)
    cu = admin.add_parser("create-user", help="create an account")
    cu.add_argument("--username", required=True)
    cu.add_argument(
        "--role",
        required=True,
        choices=["admin", "supervisor", "clerk", "community_staff", "expert", "inspector"],
    )
    cu.add_argument("--unit", required=True, help="unit code, e.g. D01")
    cu.add_argument("--department", help="department code (clerks)")
    cu.add_argument("--display-name")
    cu.add_argument("--password", help="default: prompt, or generate and print")
    cu.set_defaults(fn=cmd_create_user)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="demo_command", required=True)
    dl = demo.add_parser("load", help="load the demo district and catalogue (idempotent)")
    dl.add_argument("--password", help="one password for every demo user (default: random, printed)")
    dl.add_argument("--reset-passwords", action="store_true", help="if loaded already, set and print new passwords")
    dl.set_defaults(fn=cmd_demo_load)

    au = sub.add_parser("audit", help="audit trails").add_subparsers(dest="audit_command", required=True)
    av = au.add_parser("verify", help="verify the hash chains of case audit trails")
    av.add_argument("--case", type=int)
    av.set_defaults(fn=cmd_audit_verify)

    ev = sub.add_parser("evidence", help="inspection evidence").add_subparsers(dest="evidence_command", required=True)
    evv = ev.add_parser("verify", help="verify evidence photos against their signed manifests")
    evv.add_argument("--case", type=int)
    evv.set_defaults(fn=cmd_evidence_verify)

    cat = sub.add_parser("catalogue", help="matter catalogue import/export (YAML or .csv)")
    cat.add_argument("action", choices=["import", "export"])
    cat.add_argument("file")
    cat.set_defaults(fn=cmd_catalogue)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
