"""Model registry: versions, aliases, metadata and an audit log, over SQLite or PostgreSQL."""
