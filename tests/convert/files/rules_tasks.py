"""Tasks of rules.yaml: a map with a failing branch, trigger rules and a condition."""


def items(n):
    return list(range(n))


def invert(x):
    return 1 / x  # fails for 0


def double(value):
    return 2 * value


def total(values):
    return {"sum": sum(v for v in values if v), "missing": [repr(v) for v in values if not v]}


def alert(inverted):
    return "failed: " + ", ".join(repr(v) for v in inverted if not v)


def big(items):
    return len(items) > 10


def only_big(items):
    return len(items)


def words(echoed):
    return echoed.stdout.split()
