"""Releases: each sealed snapshot revision as protected, StatLine-style open-data tables.

``spec`` reads the table specifications in ``publication/``; ``engine`` computes them with DuckDB;
``sdc`` holds the disclosure rules; ``build`` writes, lists and verifies releases; ``serve`` exposes
them read-only in the OData shapes of ``cbsodata`` and ``cbsodata4``. A component: it reads sealed
revisions through ``ketenstroom.adapters`` and never imports ``sinks``, ``processors`` or ``producers``.
"""
