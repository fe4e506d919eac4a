"""Batch jobs: workflow notebooks through papermill, parameter sweeps, parameter schemas.

``nbflow.cli`` maps each command to one call here: ``nbflow run`` ->
:func:`execute.run_notebook`, ``nbflow sweep`` -> :func:`sweep.plan_jobs` and
:func:`sweep.run_sweep`, ``nbflow params`` -> :mod:`params`. Importing this
package does not import papermill (the functions do).
"""
