"""A CryoCloud module: joins a list of values under a label."""

ccmodule = {
    "description": "Report values",
    "depends": [],
    "provides": [],
    "inputs": {"values": "the values", "label": "a label"},
    "outputs": {"report": "label:v1,v2,..."},
    "defaults": {"runOn": "success"},
}


def process_task(worker, task, cancel_event=None):
    args = task["args"]
    return 100, {"report": f"{args['label']}:{','.join(map(str, args['values']))}"}
