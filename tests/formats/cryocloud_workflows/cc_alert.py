"""A CryoCloud module: a global error handler that reports the error it was given."""

ccmodule = {
    "description": "Raise the alarm",
    "depends": [],
    "provides": [],
    "inputs": {"error": "the error message"},
    "outputs": {"alerted": "the error message"},
    "defaults": {"runOn": "error"},
}


def process_task(worker, task, cancel_event=None):
    return {"alerted": task["args"]["error"]}
