"""The delivery monitor (``ketenstroom monitor``): a faust-streaming app that watches deliveries, the
curated stream and the dead-letter queues, and tells operators how complete each measurement period is,
which partner has gone silent and where dead letters spike. A component: it uses the ground package only.
"""
