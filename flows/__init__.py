"""One module per flow; pure decision code lives in modules of its own (no Prefect import)."""
