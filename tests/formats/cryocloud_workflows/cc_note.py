"""A CryoCloud module: returns its message."""

ccmodule = {
    "description": "Return a message",
    "depends": [],
    "provides": [],
    "inputs": {"message": "the message"},
    "outputs": {"message": "the message"},
    "defaults": {},
}


def process_task(worker, task, cancel_event=None):
    return {"message": task["args"].get("message")}
