"""In-flight processing: decode raw partner events, pseudonymise, normalise terminology, route.

The transform core (``pseudonym``, ``terminology``, ``transform``) is pure and runner-independent;
``app`` is the thin faust-streaming runner. Never imports producers or sinks.
"""
