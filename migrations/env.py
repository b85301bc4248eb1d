import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
# disable_existing_loggers=False: an in-process upgrade (init-db, tests) must not silence the app's loggers.
fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def get_engine():
    return current_app.extensions["migrate"].db.engine


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace("%", "%%")
    except AttributeError:
        return str(get_engine().url).replace("%", "%%")


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option("sqlalchemy.url", get_engine_url())
target_db = current_app.extensions["migrate"].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def render_item(type_, obj, autogen_context):
    """Write the app's column types as plain SQLAlchemy types so migrations don't import app code."""
    import sqlalchemy as sa

    from crm.models.types import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    if type_ == "type" and isinstance(obj, sa.JSON) and getattr(obj, "_variant_mapping", None):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def defer_use_alter_foreign_keys(script):
    """Create ``use_alter`` foreign keys (the users <-> teams and followups <-> reminders cycles) after
    all tables exist, and drop them first on downgrade.

    Autogenerate leaves them inside ``op.create_table(..., ForeignKeyConstraint(use_alter=True))``, which
    CREATE TABLE skips, so PostgreSQL would silently get no such foreign key.
    """
    import sqlalchemy as sa
    from alembic.operations import ops

    deferred = []
    for op_ in script.upgrade_ops.ops:
        if isinstance(op_, ops.CreateTableOp):
            kept = []
            for item in op_.columns:
                if isinstance(item, sa.ForeignKeyConstraint) and item.use_alter:
                    deferred.append(item)
                else:
                    kept.append(item)
            op_.columns = kept
    for fk in deferred:
        create = ops.CreateForeignKeyOp.from_constraint(fk)
        script.upgrade_ops.ops.append(ops.ModifyTableOps(create.source_table, [create]))
    for fk in reversed(deferred):
        drop = ops.DropConstraintOp.from_constraint(fk)
        script.downgrade_ops.ops.insert(0, ops.ModifyTableOps(drop.table_name, [drop]))


def get_metadata():
    if hasattr(target_db, "metadatas"):
        return target_db.metadatas[None]
    return target_db.metadata


def check_sqlite_foreign_keys(connection):
    """``PRAGMA foreign_key_check`` after a migration ran with foreign keys off: refuse to carry on with
    rows that point nowhere (the migration's data steps must keep them consistent)."""
    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    connection.commit()
    if problems:
        shown = ", ".join(f"{table}.rowid={rowid} -> {parent}" for table, rowid, parent, _fk in problems[:10])
        raise RuntimeError(f"foreign key check failed after the migration ({len(problems)} rows): {shown}")


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    url = config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=get_metadata(), literal_binds=True)

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")
                return
            defer_use_alter_foreign_keys(script)

    conf_args = current_app.extensions["migrate"].configure_args
    conf_args.setdefault("render_item", render_item)
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    with connectable.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite: batch operations copy and drop tables, which fails (or cascades) with foreign keys on,
            # and the app's connect hook turns them on for every connection. Off for the migration (the
            # pragma is ignored inside a transaction, so before it), checked afterwards, then on again.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(connection=connection, target_metadata=get_metadata(), **conf_args)

        try:
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                check_sqlite_foreign_keys(connection)
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
