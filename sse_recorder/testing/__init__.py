"""The pytest plugin (entry point sse_recorder.testing.plugin), settings, processes."""
