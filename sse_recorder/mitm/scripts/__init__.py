"""The `mitmdump -s` scripts, shipped in the package: `sse-recorder addon-path` prints their
paths. Each only hands an addon to mitmproxy; mitmproxy loads them by path, not by import."""
