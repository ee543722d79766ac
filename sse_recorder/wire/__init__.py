"""HTTP/1.1 on sockets: requests, heads, framed bodies, endings, a raw probe client."""
