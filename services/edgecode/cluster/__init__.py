"""Cluster launchers: local processes (the embedded default) and docker."""
