"""The built-in demo: a deterministic SSE upstream, its payloads, the `demo` walkthrough."""
