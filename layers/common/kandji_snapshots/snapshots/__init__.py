"""Snapshots at rest: columns and types (schema), raw payloads to rows (normalize, timeutil), where objects
live (layout), the stores (storage), gzip JSON Lines parts (table_io), manifests (catalog), device-ordered reading."""
