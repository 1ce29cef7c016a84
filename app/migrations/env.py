"""Alembic environment for the integration's own tables.

Our history is its own branch ("bitrix24") kept in its own version table
(``bitrix24_alembic_version``), so a host app's migrations and its ``alembic_version`` are never
touched, and autogenerate only ever looks at our tables. Run through ``flask bitrix24 setup`` /
``setup_bitrix24_crm.py`` (which hold the setup lock), or, when writing a new migration for this
repo, ``flask --app app db revision --autogenerate -m "..."`` (Flask-Migrate, see app/__init__.py).
"""

from alembic import context

from app.extensions import db
from app.services.setup import OUR_TABLES, VERSION_TABLE

OUR_NAMES = {table.name for table in OUR_TABLES}


def include_object(obj, name, type_, reflected, compare_to):  # noqa: ARG001 - alembic's signature
    if type_ == "table":
        return name in OUR_NAMES
    table = getattr(obj, "table", None)
    return table is None or table.name in OUR_NAMES


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=db.metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        with db.engine.connect() as connection:
            _run(connection)
            connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()
