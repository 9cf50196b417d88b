"""The nts_server role's install step, for real: pip installs ntspki from this source tree into a
new virtualenv on the host (here the local machine, connection local), and the installed command
runs. The rest of the role is tested on the multi-host lab (tests/test_fleet.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def test_role_installs_ntspki_into_a_virtualenv(tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    venv = tmp_path / "venv"
    source = tmp_path / "src"  # a copy without the developer's .venv and caches
    source.mkdir()
    for n in ("pyproject.toml", "ntspki", "man", "README.md"):
        subprocess.run(["cp", "-r", str(REPO / n), str(source)], check=True)
    playbook = tmp_path / "install.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.include_role": {"name": "nts_server", "tasks_from": "install"},
                            "vars": {
                                "ntspki_pip_name": str(source),
                                "ntspki_pip_virtualenv": str(venv),
                                "ntspki_pip_virtualenv_command": f"{sys.base_prefix}/bin/python3 -m venv",
                            },
                        }
                    ],
                }
            ]
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "examples" / "ansible" / "roles"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    }
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", str(playbook)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "changed=1" in proc.stdout, proc.stdout[-2000:]
    installed = subprocess.run([venv / "bin" / "ntspki", "--version"], capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and "ntspki" in installed.stdout, installed.stdout + installed.stderr
    # the installed copy, not this source tree, answers
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import ntspki; print(ntspki.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
