"""A task module that cannot be imported (a broken extension)."""

import nbflow_testtasks_missing_dependency  # noqa: F401
