"""The edit job's configuration and what the entry points share.

Floor (imported by every layer): errors.py (`UserError`), atomic.py (every output written to a temp name, then
renamed), progress.py (job functions' progress events and cooperative stop). Above models/ (the schema's
`model.type` and per-family defaults come from the family registry): schema.py, loader.py (load, validate,
override, write), cli.py and console.py (the entry points' arguments, exit codes and progress display).

Import the modules themselves (`from config.loader import load_config`): importing this package imports none of
them, so the floor stays below everything.
"""
