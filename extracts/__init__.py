"""Research extracts: per-study linked microdata from sealed revisions, safe by construction.

A component like ``producers``, ``processors`` and ``sinks`` (it imports none of them): it reads sealed
revisions through the snapshot contract and the object store, and writes an extract plus its manifest
and a register entry. The pieces, in the order they run:

``catalogue``  the research catalogue (``publication/research.toml``) and a study's request
``source``     sealed revisions' chain and person tables and events, sha256-checked
``frame``      one row per case of the population, generalised, pseudonyms re-keyed (``rekey``)
``sdc``        k-anonymity, distinct l-diversity, local suppression within a budget, or refusal
``make``       the order of it all, the final checks, and the create-only writes
``register``   list, show and verify extracts on record (``manifest`` holds the models)
"""
