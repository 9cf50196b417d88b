"""ntspki: certificate lifecycle for NTS (RFC 8915) time servers."""

__version__ = "0.1.0"
