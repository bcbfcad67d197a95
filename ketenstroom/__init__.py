"""ketenstroom: event streaming for the Dutch criminal justice chain.

Layers (imports point downwards only; ``tests/unit/test_layers.py`` enforces it)::

    cli                                    leaf: nothing imports it
    producers | processors | sinks | extracts   components: never import each other
    ketenstroom.adapters, devstack   thin I/O (Kafka, registry, object store, local stack)
    ketenstroom.settings, ketenstroom.contract   typed settings, schema contract (pure, no network)
    ketenstroom.errors                     exception tree, imports nothing of ours
"""

__version__ = "0.1.0"
