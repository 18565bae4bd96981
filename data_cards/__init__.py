"""Dataset-card templates, rendered at shard/publish time (shipped as package data)."""
