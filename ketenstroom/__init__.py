"""ketenstroom: event streaming for the Dutch criminal justice chain.

Layers (imports point downwards only; ``tests/unit/test_layers.py`` enforces it)::

    cli                                        leaf: nothing imports it
    producers | processors | sinks | extracts | releases | dashboard | monitor
                                               components: never import each other
    ketenstroom.adapters                       thin I/O: Kafka, registry, object store, sealed snapshots
    ketenstroom.catalogue                      the chain catalogue (partners, steps, terminology) as data
    ketenstroom.settings, .calendar, .contract typed settings, Amsterdam dates and CBS periods, the
                                               schema contract and snapshot layout (pure, no network)
    ketenstroom.errors                         exception tree, imports nothing of ours

Development tooling beside them, never imported by runtime code: ``devstack`` (the local Kafka,
Apicurio and s3proxy) and ``synthetic`` (seeded test and demo data).
"""

__version__ = "0.1.0"
