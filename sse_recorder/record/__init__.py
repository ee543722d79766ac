"""Recording: live chunks in, redacted cassette rows out, off the proxy's hot path."""
