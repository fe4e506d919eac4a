"""Task functions of rules.yaml (stdlib only, so the Airflow venv needs nothing else)."""

from __future__ import annotations


def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


def square(x: int) -> int:
    return x * x


def scale(x: int, factor: float) -> float:
    return x * factor


def total(values: list[float]) -> float:
    return sum(values)


def fetch() -> str:
    raise ConnectionError("server down")


def parse(raw: str) -> str:
    return raw.upper()


def alert(fetch: object) -> str:
    return f"alerting: {fetch.error}"  # type: ignore[attr-defined]


def cleanup(parse: object, total: float) -> dict[str, object]:
    return {"parse_ok": bool(parse), "parse_type": type(parse).__name__, "total": total}


def is_big(total: float, threshold: int) -> bool:
    return total > threshold


def report(total: float, threshold: int = 0) -> str:
    return f"total {total:g} > {threshold}"  # :g: Airflow reads a whole float XCom back as an int
