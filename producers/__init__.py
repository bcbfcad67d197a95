"""Partner-side delivery: read exports, validate rows, encode Avro through the registry, produce once.

Never imports processors or sinks.
"""
