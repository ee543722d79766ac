"""The pytest plugin (entry point sse_recorder.testing.plugin), settings, processes, which
recorder records (locate) and --sse-block-network (network)."""
