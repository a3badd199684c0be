"""`redsession sql`: one read-only query against the SQL mirror, as a table or JSON."""

from __future__ import annotations

import click
from rich.table import Table

from redsession.cli.output import console, print_json
from redsession.cli.state import get_state, json_option


@click.command()
@json_option
@click.argument("query")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Bind :NAME in the query to VALUE (a string); repeatable.")  # fmt: skip
@click.option("--sql-url", metavar="URL",
              help="The mirror's database [default: REDSESSION_SQL_URL, else "
                   "DATA_DIR/sessions.sqlite3].")  # fmt: skip
def sql(query: str, params: tuple[str, ...], sql_url: str | None) -> None:
    """Run QUERY (one SELECT) on the SQL mirror, read-only; print the rows."""
    from redsession.mirror.database import Database

    bound = {}
    for p in params:
        name, eq, value = p.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"{p!r} is not NAME=VALUE", param_hint="--param")
        bound[name] = value
    state = get_state()
    database = Database.from_settings(state.settings(sql_url=sql_url))
    try:
        columns, rows = database.query(query, bound)
    finally:
        database.close()
    if state.json:
        print_json([dict(zip(columns, row)) for row in rows])
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console().print(table)
    click.echo(f"{len(rows)} row(s)")
