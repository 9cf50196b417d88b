"""The certbot deploy hook: the script certbot runs after each renewal, and its installer."""

from __future__ import annotations

import os
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.store import fsutil

CERTBOT_HOOK_DIR = Path("/etc/letsencrypt/renewal-hooks/deploy")
CERTBOT_HOOK_NAME = "ntspki"


def certbot_hook_script(ntspki_argv: list[str] | None = None) -> str:
    """The hook certbot runs after each renewal (hooks/ntspki-certbot-deploy-hook is this with
    the default command; `ntspki hook install certbot` bakes in the exact ntspki and home)."""
    import shlex

    command = shlex.quote(shlex.join(ntspki_argv)) if ntspki_argv else "ntspki"
    return f"""#!/bin/sh
# ntspki's certbot deploy hook. certbot runs it after every successful renewal, from
# renewal-hooks/deploy/ or as --deploy-hook, with RENEWED_LINEAGE (the live directory) and
# RENEWED_DOMAINS (space-separated) set. It deploys every ntspki deploy target whose source is
# that lineage: copies the pair with the server's owner and modes, restarts the server once,
# checks that the new certificate is served and rolls back if not (see ntspki-deploy(1)).
# Install with: ntspki hook install certbot
set -u
if [ -z "${{NTSPKI:-}}" ]; then NTSPKI={command}; fi
if [ -z "${{RENEWED_LINEAGE:-}}" ]; then
    echo "ntspki hook: RENEWED_LINEAGE is not set: certbot runs this hook, see ntspki-hook(1)" >&2
    exit 2
fi
echo "ntspki hook: certbot renewed ${{RENEWED_DOMAINS:-(no domains given)}} in $RENEWED_LINEAGE"
eval "set -- $NTSPKI"
exec "$@" deploy --source "$RENEWED_LINEAGE"
"""


def install_certbot_hook(
    directory: Path = CERTBOT_HOOK_DIR, ntspki_argv: list[str] | None = None, force: bool = False
) -> tuple[Path, bool]:
    """Write the hook into certbot's renewal-hooks/deploy/. (path, changed)."""
    script = certbot_hook_script(ntspki_argv).encode()
    if not Path(directory).is_dir():
        # Never create it: a mistyped --dir would "succeed" with a hook certbot never runs.
        raise NtspkiError(
            f"{directory} does not exist: give certbot's CONFIG_DIR/renewal-hooks/deploy with --dir "
            "(certbot creates it when it is installed)",
            2,
        )
    path = Path(directory) / CERTBOT_HOOK_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise NtspkiError(f"{path} exists and is not a regular file")
    if path.exists():
        if fsutil.read_bounded(path, fsutil.PEM_LIMIT, "hook", binary=True) == script:
            os.chmod(path, 0o755)
            return path, False
        if not force:
            raise NtspkiError(f"{path} exists with other content: use --force to replace it")
    fsutil.atomic_write(path, script, 0o755)
    return path, True
