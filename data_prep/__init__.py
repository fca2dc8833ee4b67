"""Converters from the paper's datasets to verl RL parquet (installed as `skpo_verl.data_prep`).

`sources.py` knows each public dataset's columns, `convert.py` builds verl rows and accounts
for bad rows, `prepare.py` is the `skpo-prepare-data` command. See docs/data.md.
"""
