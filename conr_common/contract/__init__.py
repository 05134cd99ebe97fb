"""The model contract: architecture config, the official checkpoint manifest (official_manifest.json), the rename table."""
