"""Fault-injection experiments: run a client under a matrix of fault scenarios and judge it.

plan.py reads a TOML plan (scenarios, hypothesis) into the runs it makes; runner.py gives
each run its own replay server and a tap (observe.py) in front of it, runs the client, and
judges the run with measures.py; report.py writes the summary table and the HTML report.
"""
