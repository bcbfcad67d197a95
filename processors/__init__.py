"""In-flight processing: decode raw partner events, pseudonymise, normalise terminology, route.

The transform core (``pseudonym``, ``terminology``, ``transform``) is pure and runner-independent;
``runner`` is the thin exactly-once Kafka loop. Never imports producers or sinks.
"""
