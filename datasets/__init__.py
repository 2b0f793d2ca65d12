"""The job's data: job.py (a config's media, aligned), samples.py (the data contract), preview.py; prepare/
(prepare.py's pipeline that makes job folders)."""
