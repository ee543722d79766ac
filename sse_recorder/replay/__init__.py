"""Replay: match a request, then play its recording on schedule, ending and faults."""
