"""Bringing a SQLite file written by an earlier release up to the current schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping


def add_missing_columns(db: sqlite3.Connection, added: Mapping[tuple[str, str], str]) -> None:
    """Run the ``ALTER TABLE`` statement of each ``(table, column)`` the file lacks."""
    for (table, column), statement in added.items():
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(statement)
