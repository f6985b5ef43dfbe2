"""Whether a client's cluster serves Dask's dashboard, and where: what the pipeline prints at
the start of a run, for the clusters :func:`mosaicflow.cluster.connect` starts and for any
other client."""

from __future__ import annotations

from typing import Any

#: Attribute set on the client of a local cluster started without a dashboard.
NO_DASHBOARD = "_mosaicflow_no_dashboard"


def without_dashboard(client: Any, dashboard: bool) -> Any:
    """``client``, marked as having no dashboard unless ``dashboard``."""
    if not dashboard:
        setattr(client, NO_DASHBOARD, True)
    return client


def dashboard_link(client: Any) -> str | None:
    """The address of the client's dashboard, or None for a local cluster
    :func:`mosaicflow.cluster.connect` started without one (``Client.dashboard_link`` would
    still give the address of its scheduler's HTTP server)."""
    if getattr(client, NO_DASHBOARD, False):
        return None
    return str(client.dashboard_link)
