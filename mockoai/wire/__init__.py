"""
The wire: HTTP/1.1 (the lean channel, on httptools or on its own parser,
and twisted.web's), HTTP/2, the lean dispatch over the Klein route table,
CORS, hostile-input guards and the error writer.  It knows requests and
bytes, never an API dialect.
"""
