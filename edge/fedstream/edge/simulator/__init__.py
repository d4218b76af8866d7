"""A heterogeneous fleet of simulated devices, training against a running aggregation job.

``python -m fedstream.edge.simulator --help``. Devices are threads with their own
`fedstream.edge.EdgeClient`; data is scikit-learn's digits split non-IID (Dirichlet);
speeds differ by a configurable spread; devices drop out and rejoin; an evaluator scores
every release with onnxruntime. The same fleet runs asynchronously (FedBuff) and
synchronously (FedAvg) so the two are compared on equal terms. Outputs: ``report.json``,
``accuracy_vs_time.png``, ``staleness_hist.png`` and a one-line summary.

Needs the ``train`` extra (torch, scikit-learn) and matplotlib for the plots. The modules:
`data` (split), `fleet` (`FleetSettings`, `FleetRun`), `report` (JSON, plots, summary).
This package's ``__init__`` imports nothing heavy, so ``--help`` is instant.
"""
