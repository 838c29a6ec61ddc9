"""The archiver: every record, once, into the archive (SQLite or PostgreSQL) for `logbus query`."""
