"""A CryoCloud module: upper-cases one item, and fails on the item named by ``fail``."""

ccmodule = {
    "description": "Upper-case an item",
    "depends": ["Input"],
    "provides": ["Processed"],
    "inputs": {"item": "the item", "fail": "the item that fails"},
    "outputs": {"result": "the item, upper-cased"},
    "defaults": {"priority": 50, "runOn": "success"},
    "status": {"progress": "Progress 0-100%"},
}


def process_task(worker, task, cancel_event=None):
    args = task["args"]
    if args["item"] == args.get("fail"):
        raise ValueError(f"item {args['item']} failed")
    worker.status["progress"] = 100
    return 100, {"result": args["item"].upper()}
