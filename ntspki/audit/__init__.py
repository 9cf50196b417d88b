"""`ntspki check` (`check`): audits a machine's chrony NTS set-up (files, owners, modes, chain, expiry,
sources) and reports findings with monitoring exit codes. Its parts: `findings` (the report),
`checkbase` (adding findings, reading files), `serverside` (key, chain, expiry), `filechecks` (permissions, ntsdumpdir),
`clientside` (sources and their trust), `probes` (--probe), `prometheus` (node_exporter textfile);
`check` assembles them. `ntspki migrate` (`migrate`): reads an
ntpd/NTPsec configuration and writes the chrony one with NTS, probing upstreams with --probe.

Layer: orchestration. May import `servers`, `pki`, `nts` (for --probe) and `store`; never `cli`.
"""
