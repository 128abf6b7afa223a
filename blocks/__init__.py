"""Prefect blocks: credentials and backends. Flows get their clients from these, never build SDK clients."""
