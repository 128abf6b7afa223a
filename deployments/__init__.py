"""How the flows are deployed and triggered: webhook receiver, local serving, templates."""
