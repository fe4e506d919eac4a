"""A CryoCloud module: waits on its cancel event (set on cancel or timeout)."""

ccmodule = {
    "description": "Wait until told to stop",
    "depends": [],
    "provides": [],
    "inputs": {"seconds": "how long at most"},
    "outputs": {"stopped": "True when the cancel event was set"},
    "defaults": {},
}


def process_task(worker, task, cancel_event=None):
    stopped = cancel_event.wait(float(task["args"]["seconds"]))
    return {"stopped": stopped}
