#!/usr/bin/env python
"""Set up the Bitrix24 integration's database: tables and the Bitrix24 row in the CRMs table.

    python setup_bitrix24_crm.py [--database-url URL]

Idempotent: a second run changes nothing and says so. The Bitrix24 row is looked up by name at run
time, so no source file is rewritten to hold its id.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: DATABASE_URL, else SQLite in instance/)")
    args = parser.parse_args(argv)

    from flask_bitrix24 import create_app
    from flask_bitrix24.config import app_settings
    from flask_bitrix24.services.setup import run_setup

    overrides = {"BITRIX_AUTO_SETUP": False}
    if args.database_url:
        overrides["SQLALCHEMY_DATABASE_URI"] = app_settings({"DATABASE_URL": args.database_url})[
            "SQLALCHEMY_DATABASE_URI"
        ]
    app = create_app(overrides)
    with app.app_context():
        try:
            report = run_setup()
        except Exception as exc:  # a CLI for ops: say what failed, no traceback
            print(f"setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
