"""Conduit's sync health view inside the Airflow UI (issue 14).

* :mod:`conduit.ui.health`: what the view shows, as pure functions of plain data (the verdict
  rules, counts, charts, the gate's per-expectation results, quarantine rows, lineage);
* :mod:`conduit.ui.data`: where the data comes from (Airflow's metadata database, the state stores);
* :mod:`conduit.ui.app`: the FastAPI app the plugin mounts at ``/conduit-ui`` (pages and JSON API,
  every route authenticated and authorized);
* :mod:`conduit.ui.assets`: the vendored browser files (uPlot for the charts, the libraries the
  Great Expectations Data Docs load) and the rewrite that serves the Data Docs offline.
"""
