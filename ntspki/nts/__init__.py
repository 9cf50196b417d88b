"""NTS itself (RFC 8915): the NTS-KE record codec and TLS client (`ntske`), and the probe that
does NTS-KE plus one authenticated NTP exchange (`probe`).

Layer: domain + network. May import `pki` and `errors`; never `store`, `deploy` or `cli`.
pyOpenSSL is imported here (TLS exporter), so only commands that probe import this package.
"""
