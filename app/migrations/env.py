"""Alembic environment for the standalone app's own tables (a host app's migrations own ours).

Our history is its own branch ("bitrix24") kept in its own version table
(``bitrix24_alembic_version``), and autogenerate only ever looks at our tables. It runs through
``flask bitrix24 setup`` / ``setup_bitrix24_crm.py`` (which pass the connection, the metadata and our
table names, and hold the setup lock), or, when writing a new migration for this repository,
``flask --app app db revision --autogenerate --head bitrix24@head -m "..."`` (Flask-Migrate).
No imports from the package: this file is loaded by path, under whichever name the package has.
"""

from alembic import context
from flask import current_app

VERSION_TABLE = "bitrix24_alembic_version"
_attributes = context.config.attributes
if "target_metadata" in _attributes:  # from our setup
    METADATA, OUR_NAMES = _attributes["target_metadata"], _attributes["tables"]
else:  # from Flask-Migrate's `flask db ...` on the standalone app
    _rt = current_app.extensions["bitrix24"]
    METADATA = current_app.extensions["migrate"].db.metadata
    OUR_NAMES = {t.name for t in [*_rt.store.tables(), _rt.event_model.__table__, *_rt.feature_tables()]}


def include_object(obj, name, type_, reflected, compare_to):  # noqa: ARG001 - alembic's signature
    if type_ == "table":
        return name in OUR_NAMES
    table = getattr(obj, "table", None)
    return table is None or table.name in OUR_NAMES


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=METADATA,
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
        with current_app.extensions["migrate"].db.engine.connect() as connection:
            _run(connection)
            connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()
