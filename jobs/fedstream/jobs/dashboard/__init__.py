"""`fedstream dashboard`: a local page of what the job does, per model, with no CDN.

prometheus.py  the metrics endpoint's text format -> samples (pure)
figures.py     samples over time -> per-model figures: counts, rates, histograms (pure)
kafka_feed.py  releases and dead letters, followed read_committed on their topics
page.py        figures -> one HTML page with inline SVG charts (pure)
server.py      the HTTP server and the loop that scrapes and follows
"""
