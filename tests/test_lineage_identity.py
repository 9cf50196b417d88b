"""A lineage keeps its identity: re-issuing and renewing reuse its names, key type, lifetime and
source; changing any of them is refused with what would change, unless --allow-change."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ntspki.issuing import renew
from tests.conftest import run_cli


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    run_cli("ca", "create", "--no-passphrase", home=home, check=True)
    run_cli(
        "issue",
        "ntp3",
        "--san",
        "ntp3-ipv6",
        "--san",
        "192.0.2.3",
        "--key-type",
        "ec-p384",
        "--days",
        "30",
        home=home,
        check=True,
    )
    return home


def _renewal(home, name="ntp3") -> dict:
    return json.loads((home / "renewal" / f"{name}.json").read_text())


def _days(not_after: str) -> int:
    return round((dt.datetime.fromisoformat(not_after) - dt.datetime.now(dt.UTC)).total_seconds() / 86400)


def test_reissue_without_options_keeps_names_key_type_and_lifetime(home):
    before = _renewal(home)
    proc = run_cli("issue", "ntp3", "--json", home=home, check=True)
    result = json.loads(proc.stdout)
    assert result["version"] == 2
    assert result["sans"] == ["ntp3", "ntp3-ipv6", "192.0.2.3"] and result["key_type"] == "ec-p384"
    assert _days(result["not_after"]) == 30
    assert _renewal(home) == before


def test_a_different_name_set_is_refused_with_names_added_and_removed(home):
    before = _renewal(home)
    proc = run_cli("issue", "ntp3", "--san", "ntp3-ipv6", "--san", "ntp3.example.net", home=home)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("ntspki: error:") and len(err.splitlines()) == 1
    assert "added ntp3.example.net" in err and "removed 192.0.2.3" in err and "--allow-change" in err
    assert not (home / "archive" / "ntp3" / "cert2.pem").exists() and _renewal(home) == before
    proc = run_cli(
        "issue",
        "ntp3",
        "--san",
        "ntp3-ipv6",
        "--san",
        "ntp3.example.net",
        "--allow-change",
        "--json",
        home=home,
        check=True,
    )
    assert json.loads(proc.stdout)["sans"] == ["ntp3", "ntp3-ipv6", "ntp3.example.net"]
    assert _renewal(home)["sans"] == ["ntp3", "ntp3-ipv6", "ntp3.example.net"]


def test_the_same_names_in_another_order_or_spelling_are_the_same_set(home):
    proc = run_cli("issue", "NTP3", "--san", "192.0.2.3", "--san", "NTP3-IPv6", home=home)
    assert proc.returncode == 0, proc.stderr


def test_another_key_type_is_refused_unless_confirmed(home):
    proc = run_cli("issue", "ntp3", "--key-type", "rsa-2048", home=home)
    assert proc.returncode == 1 and "key type ec-p384 -> rsa-2048" in proc.stderr
    run_cli("issue", "ntp3", "--key-type", "rsa-2048", "--allow-change", home=home, check=True)
    assert _renewal(home)["key_type"] == "rsa-2048"


def test_a_fleet_file_that_drops_a_name_issues_nothing(home, tmp_path):
    fleet = tmp_path / "fleet.txt"
    fleet.write_text("ntp4 ntp4-ipv6\nntp3 ntp3-ipv6\n")
    proc = run_cli("issue", "--from", fleet, home=home)
    assert proc.returncode == 1 and "line 2" in proc.stderr and "removed 192.0.2.3" in proc.stderr
    assert not (home / "live" / "ntp4").exists()


def test_acme_issue_does_not_silently_turn_an_internal_lineage_into_an_acme_one(home):
    # Refused before any network traffic: the directory below answers nothing.
    proc = run_cli("acme", "issue", "ntp3", "--directory", "https://127.0.0.1:9/dir", "--agree-tos", home=home)
    assert proc.returncode == 1, proc.stderr
    assert "source internal -> acme" in proc.stderr and "--allow-change" in proc.stderr
    assert _renewal(home)["source"] == "internal"


def test_renew_reuses_the_stored_identity(home):
    from ntspki.store import Home

    report = renew.renew(Home(home), ["ntp3"], force=True, deploy=False)
    assert report.ok and report.renewed, report.to_dict()
    proc = run_cli("show", "ntp3", "--json", home=home)
    info = json.loads(proc.stdout)
    assert info["sans"] == ["ntp3", "ntp3-ipv6", "192.0.2.3"] and info["key_type"] == "ec-p384"
    assert info["days_left"] in (29, 30)
