"""The SQLite catalog: tables, engine, migrations and queries."""
