"""The real-sshd fixture skips where sshd cannot run, except under CI where it must fail."""

from __future__ import annotations

import os

import pytest

from tests.remote import conftest


def test_skips_without_root_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        conftest.require_sshd()


def test_fails_without_root_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.require_sshd()
