"""Observing a running node: in-process counters, and the HTTP endpoint that exposes them.

`counters` imports nothing of ours (the receiver and the pipeline count with it); `collector`
and `endpoint` read the database and the spool and are started by the assembly (`node.py`).
Nothing is re-exported here, so importing the counters never imports the server.
"""
