"""Small Markdown helpers shared by the analysis outputs and the report."""

from __future__ import annotations


def md_escape(text: str) -> str:
    """Escape ``|`` so ``text`` fits in a table cell; newlines become spaces."""
    return text.replace("|", "\\|").replace("\n", " ")


def md_code(text: str) -> str:
    """``text`` as an inline code span that survives backticks and table pipes."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {md_escape(text)} {fence}" if fence == "``" else f"`{md_escape(text)}`"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (cells already formatted as strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
