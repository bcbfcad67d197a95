"""Freeze the curated stream into period-bounded Parquet snapshots on object storage.

Never imports producers or processors.
"""
