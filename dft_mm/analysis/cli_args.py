"""Parsing of repeated ``NAME=VALUE`` command-line options (``--model``, ``--run``, ``--set``)."""

from __future__ import annotations

from dft_mm.errors import UserError


def parse_named(values: list[str], flag: str) -> dict[str, str]:
    """``["NAME=DIR", ...]`` -> ordered ``{NAME: DIR}``; names must be unique and non-empty."""
    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{flag} {value}: expected NAME=DIR.")
        if name in named:
            raise UserError(f"{flag} {value}: the name '{name}' is used twice.")
        named[name] = path
    return named


def parse_settings(values: list[str] | None) -> dict:
    """``--set KEY=VALUE`` items -> ``{KEY: value}``, values read as YAML (``262144`` -> int)."""
    import yaml

    settings = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item}: expected KEY=VALUE (a LLaMA-Factory argument).")
        settings[key] = yaml.safe_load(value)
    return settings
