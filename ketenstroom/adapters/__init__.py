"""Thin I/O adapters: Kafka, schema registry, object storage. Translate third-party errors here."""
