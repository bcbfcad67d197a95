"""The dashboard: one static site, in Dutch, generated from the releases only (never from microdata).

``read`` reads releases as files (manifest first, every file checked against its sha256); ``charts``
draws SVG on the server (no script runs in the reader's browser, nothing is fetched from anywhere);
``pages`` renders the HTML; ``build`` writes the site deterministically: the same releases give
byte-identical pages. ``serve`` serves a built site read-only on loopback.
"""
