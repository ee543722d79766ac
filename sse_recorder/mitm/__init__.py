"""Everything that imports mitmproxy (nothing else does): the addons and the runner."""
