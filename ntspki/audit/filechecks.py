"""`check`: what chronyd's user may do with the files it needs (key, certificate: reach and read;
the key: nobody else; ntsdumpdir: write), with hints that fit what is there."""

from __future__ import annotations

import os
import stat

from ntspki.audit.checkbase import cannot_exist
from ntspki.audit.probes import ProbeChecks
from ntspki.store import access


class FileChecks(ProbeChecks):
    # -- permissions, as chronyd's user ------------------------------------------------------------
    def permissions(self, path: str, what: str, where: str) -> None:
        if not path or not os.path.isfile(path):
            return  # missing or not a file: already reported, and no mode makes it right
        who = self.who
        blocked = who.blocked_dir(path)
        if blocked:
            d, st = blocked
            self.add(
                "critical",
                "dir-untraversable",
                f"directory {d} ({access.owner_text(st)}) is not searchable by {who.name}, so chronyd cannot "
                f"reach {path} and fails with 'Could not set credentials : Error while reading file.'",
                # A directory that keeps others away from a key does its job: move the key, never open it up.
                "keep the key where only root and chronyd's user can reach it: /etc/chrony/nts/ (ntspki deploy "
                f"writes NAME.key there as root:{who.group} 0640)"
                if what == "key"
                else f"keep chronyd's files under /etc/chrony/nts/ (ntspki deploy), or chmod o+x {d}",
                path,
                where,
            )
            return
        st = os.stat(path)
        if not who.may_stat(st, 4):
            code = "key-unreadable" if what == "key" else "cert-unreadable"
            self.add(
                "critical",
                code,
                f"{path} ({access.owner_text(st)}) is not readable by {who.name}: chronyd reads it after dropping "
                "root and fails with 'Could not set credentials : Error while reading file.'",
                f"chown root:{who.group} {path} && chmod {'0640' if what == 'key' else '0644'} {path}",
                path,
                where,
            )
        elif what == "key":
            self.add("ok", "key-readable", f"{path} ({access.owner_text(st)}) is readable by {who.name}", path=path)
        if what != "key":
            return
        mode = stat.S_IMODE(st.st_mode)
        fix = f"chown root:{who.group} {path} && chmod 0640 {path}"
        if mode & 0o004:
            self.add(
                "critical",
                "key-exposed",
                f"{path} ({access.owner_text(st)}) is readable by every user",
                fix,
                path,
                where,
            )
        elif mode & 0o040 and st.st_gid not in (0, who.gid):
            self.add(
                "warning",
                "key-group",
                f"{path} ({access.owner_text(st)}) is readable by group {access.group_name(st.st_gid)}, which is not {who.name}'s",
                fix,
                path,
                where,
            )
        if st.st_uid not in (0, who.uid):
            self.add(
                "warning",
                "key-owner",
                f"{path} is owned by {access.owner_text(st).split(':')[0]}, neither root nor {who.name}: "
                "that user can replace the key or change who may read it",
                fix,
                path,
                where,
            )
        if who.uid != 0 and (who.may_stat(st, 2) or st.st_uid == who.uid):
            self.add(
                "warning",
                "key-writable",
                f"{path} ({access.owner_text(st)}) can be changed by {who.name}: a compromised chronyd could "
                "replace its own key (chrony 4.4 and later warn about this)",
                fix,
                path,
                where,
            )

    def dumpdir(self) -> None:
        d = self.conf.last("ntsdumpdir")
        if d is None or not d.args:
            self.add(
                "warning",
                "no-dumpdir",
                "no ntsdumpdir: every restart of chronyd makes new cookie keys, so every client's cookies "
                "are refused (NTS NAK) and all clients redo NTS-KE",
                "add `ntsdumpdir /var/lib/chrony` to chrony.conf",
            )
            return
        path = d.args[0]
        if os.path.exists(path) and not os.path.isdir(path):
            self.add(
                "warning",
                "dumpdir-not-directory",
                f"ntsdumpdir {path} is not a directory: chronyd cannot keep its cookie keys across restarts",
                f"point ntsdumpdir in {d.where} at a directory chronyd's user can write (e.g. /var/lib/chrony)",
                path,
                d.where,
            )
            return
        blocker = cannot_exist(path) if not os.path.isdir(path) else None
        if blocker:
            self.add(
                "warning",
                "dumpdir-missing",
                f"ntsdumpdir {path} does not exist and cannot be created ({blocker}): chronyd cannot keep its "
                "cookie keys across restarts",
                f"point ntsdumpdir in {d.where} at a directory chronyd's user can write (e.g. /var/lib/chrony)",
                path,
                d.where,
            )
            return
        if not os.path.isdir(path):
            self.add(
                "warning",
                "dumpdir-missing",
                f"ntsdumpdir {path} does not exist: chronyd cannot keep its cookie keys across restarts",
                f"install -d -m 0750 -o {self.who.name} -g {self.who.group} {path}",
                path,
                d.where,
            )
            return
        st = os.stat(path)
        if self.who.blocked_dir(path) or not self.who.may_stat(st, 2 | 1):
            self.add(
                "warning",
                "dumpdir-unwritable",
                f"ntsdumpdir {path} ({access.owner_text(st)}) is not writable by {self.who.name}",
                f"chown {self.who.name}: {path}",
                path,
                d.where,
            )
            return
        self.add("ok", "dumpdir", f"ntsdumpdir {path} is writable by {self.who.name}", path=path)
