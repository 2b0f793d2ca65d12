"""The local web page over the job folders (python webui.py): one edit from the clip to the result."""
