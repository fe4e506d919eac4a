"""``nbflow convert``: a notebook or a spec compiled to a spec, a plain script, a jupytext
notebook or an Airflow DAG (see ``docs/convert.md``)."""
