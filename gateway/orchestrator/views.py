"""What operators read of runs: a run with its DAG, pages of runs, a run's products."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bricks.errors import NotFound
from gateway.orchestrator import state as st
from storage import configdb, missiondb


def run_view(run_id: str) -> dict[str, Any]:
    """A run with its tasks (states, attempts, durations), outputs and CALDB files."""
    with st.session() as db:
        run = missiondb.get_run(db, run_id)
        tasks = missiondb.run_tasks(db, run_id)
        caldb = db.scalars(sa.select(st.RunCaldbFile).where(st.RunCaldbFile.run_id == run_id))
        products = db.scalars(sa.select(st.Product).where(st.Product.run_id == run_id))
        by_task: dict[str, list[str]] = {}
        for product in products:
            by_task.setdefault(product.task_id or "", []).append(product.name)
        needs = needs_of(db, run.programme, run.config_version)
        caldb_files = {
            f.codename: {"ref": f"{f.bucket}/{f.key}", "sha256": f.sha256} for f in caldb
        }
    view = run.model_dump(mode="json")
    view["caldb_files"] = caldb_files
    view["tasks"] = [
        {
            **task.model_dump(mode="json"),
            "needs": needs.get(task.brick, []),
            "products": by_task.get(task.task_id, []),
            "seconds": seconds_between(task.started_at, task.finished_at),
        }
        for task in tasks
    ]
    return view


def list_runs(filters: dict[str, Any], limit: int = 50, after: int | None = None) -> dict[str, Any]:
    """Runs, newest first, filtered by ``run_id``, ``obs_id``, ``programme`` or ``state``."""
    request = missiondb.QueryRequest(
        entity="runs", filters=filters, limit=limit, after=after, descending=True
    )
    with st.session() as db:
        return missiondb.query(db, request).model_dump(mode="json")


def list_products(run_id: str) -> list[dict[str, Any]]:
    """The products a run registered, with their provenance, in registration order."""
    with st.session() as db:
        missiondb.get_run(db, run_id)
        page = missiondb.query(
            db, missiondb.QueryRequest(entity="products", filters={"run_id": run_id}, limit=1000)
        )
    return page.items


def needs_of(db: Session, programme: str, version: int | None) -> dict[str, list[str]]:
    try:
        record = configdb.get_config(db, programme, version)
    except NotFound:
        return {}
    return {node["brick"]: list(node.get("needs", [])) for node in record.dag}


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None
