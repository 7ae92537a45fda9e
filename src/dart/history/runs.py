"""Every run of a store with what a person asks first: is it running, did it
die, and where is its newest commit."""

from __future__ import annotations

from ..capture.path import describe
from ..errors import StoreError


def live_holder(store, run_id: str) -> str | None:
    """Who holds the run's lease now (``process 1234``), or None if nobody does
    (the run ended, or was killed)."""
    if not store.writable:
        return None
    try:
        return store.backend.lease_holder(run_id)
    except StoreError:
        return None


def run_status(run: dict, holder: str | None) -> str:
    """running / killed / failed / finished / abandoned / interrupted / exited / stopped."""
    status = run.get("status", "running")
    if status == "running":
        return "running" if holder else "killed"
    return status


def run_summaries(store, damage: list | None = None) -> list[dict]:
    """One JSON-ready summary per run, oldest first."""
    out = []
    for run in store.list_runs(damage=damage):
        run_id = run["id"]
        commits = store.log(run=run_id)
        holder = live_holder(store, run_id) if run.get("status", "running") == "running" else None
        newest = commits[0] if commits else None
        first = commits[-1] if commits else None
        out.append({
            "id": run_id,
            "script": run.get("script"),
            "argv": run.get("argv", []),
            "status": run_status(run, holder),
            "holder": holder,
            "pid": run.get("pid"),
            "error": run.get("error"),
            "created": run.get("created"),
            "ended": run.get("ended"),
            "commits": len(commits),
            "newest": newest.id if newest else None,
            "position": describe(newest.position) if newest else None,
            "branched_from": run.get("branched_from") or (first.parent if first is not None else None),
        })
    return out
