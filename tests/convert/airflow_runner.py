"""Run inside the Airflow venv (not the test venv): import a DAG file, optionally run it.

    python airflow_runner.py DAG_FILE OUT_JSON [--test CONF_JSON]

Writes ``{"import_errors": {...}, "dag_ids": [...], "state": ..., "tasks": {name:
{"state": ..., "value": ...}}}`` to OUT_JSON. A mapped task's state and value are lists
(one per map index). Values are the tasks' return-value XComs, as JSON.
AIRFLOW_HOME and AIRFLOW__CORE__DAGS_FOLDER (the DAG file's folder) are set by the caller.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    from airflow.dag_processing.dagbag import DagBag

    dag_file, out = argv[0], argv[1]
    bag = DagBag(dag_folder=dag_file)
    report: dict[str, Any] = {"import_errors": {str(k): str(v) for k, v in
                                                bag.import_errors.items()},
                              "dag_ids": sorted(bag.dags)}
    if len(argv) > 2 and argv[2] == "--test" and bag.dags and not bag.import_errors:
        dag = next(iter(bag.dags.values()))
        dr = dag.test(run_conf=json.loads(argv[3]))
        report["state"] = str(dr.state)
        report["tasks"] = _results(dag.dag_id, dr)
    with open(out, "w") as f:
        json.dump(report, f, default=repr)
    return 0


def _results(dag_id: str, dr: Any) -> dict[str, Any]:
    """Every task instance's state and return-value XCom, mapped ones as lists."""
    from airflow.models.xcom import XComModel
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session

    tasks: dict[str, Any] = {}
    with create_session() as session:
        for ti in sorted(dr.get_task_instances(session=session),
                         key=lambda ti: (ti.task_id, ti.map_index)):
            row = session.query(XComModel).filter_by(
                dag_id=dag_id, run_id=dr.run_id, task_id=ti.task_id, map_index=ti.map_index,
                key="return_value").one_or_none()
            value = None if row is None else deserialize(XComModel.deserialize_value(row))
            state = str(getattr(ti.state, "value", ti.state))
            if ti.map_index < 0:
                tasks[ti.task_id] = {"state": state, "value": value}
            else:
                entry = tasks.setdefault(ti.task_id, {"state": [], "value": []})
                entry["state"].append(state)
                entry["value"].append(value)
    return tasks


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
