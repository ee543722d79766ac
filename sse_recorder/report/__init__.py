"""Looking at recordings: an HTML timeline report of a cassette, and a drift diff of two.

`timeline` measures one recorded interaction (pure), `shapes` describes the JSON shape of
event data (pure), `diff` pairs two cassettes' interactions and lists what drifted, `html`
renders both as self-contained pages, `load` reads a cassette into the values they take.
"""
