"""Streams that are not SSE: sans-IO framings (NDJSON, JSON text sequences, the AWS event
stream, a streamed JSON array), the registry of media types, and the record-time decision to
stream a response through rather than buffer it (policy.py)."""
