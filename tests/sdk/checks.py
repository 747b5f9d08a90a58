"""What the SDK check scripts share: one line per check passed, the first failure raised."""

from __future__ import annotations

from typing import Any


class CheckFailed(Exception):
    pass


def expect(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}")
    print(f"ok  {what}")


def expect_true(what: str, cond: bool, detail: Any) -> None:
    if not cond:
        raise CheckFailed(f"{what}: {detail!r}")
    print(f"ok  {what}")
