"""Record Server-Sent Events through mitmproxy into SQLite cassettes, and replay them."""

__version__ = "0.1.0"
