"""A CryoCloud module: passes one value on (the merge point of a split)."""

ccmodule = {
    "description": "Collect a value",
    "depends": [],
    "provides": [],
    "inputs": {"value": "a value"},
    "outputs": {"value": "the same value"},
    "defaults": {"priority": 40},
}


def process_task(worker, task):
    return {"value": task["args"]["value"]}
