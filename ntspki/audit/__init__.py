"""`ntspki check`: audits a machine's chrony NTS set-up (files, owners, modes, chain, expiry,
sources) and reports findings with monitoring exit codes.

Layer: orchestration. May import `servers`, `pki`, `nts` (for --probe) and `store`; never `cli`.
"""
