"""`ntspki check`: audits a machine's chrony NTS set-up (files, owners, modes, chain, expiry,
sources) and reports findings with monitoring exit codes. `ntspki migrate` (`migrate`): reads an
ntpd/NTPsec configuration and writes the chrony one with NTS, probing upstreams with --probe.

Layer: orchestration. May import `servers`, `pki`, `nts` (for --probe) and `store`; never `cli`.
"""
