"""``sidecar config check``: every mistake of a configuration file, each with its key and its line.

The rules are :mod:`sidecar.ops.config`'s (:func:`~sidecar.ops.config.check_table` for each key,
:func:`~sidecar.ops.config.check_settings` for the rules across keys); this module adds the lines.
``tomllib`` gives none for keys, so :func:`key_lines` scans the text of a file that ``tomllib`` has
already accepted: it follows the ``[table]`` and ``[[array]]`` headers and the ``key =`` lines (bare,
quoted and dotted keys), and walks each value (strings, arrays, inline tables, comments) so that a
value spanning lines is not taken for keys, and keys inside inline tables get lines of their own.
No dependency: a library with positions (tomlkit) would be a second TOML parser for this one task.

>>> text = '[consumer]\\nworkers = "2"\\n\\n[[consumer.providers]]\\naddress = "127.0.0.1:1"\\nwieght = 3\\n'
>>> print("\\n".join(check_text(text).lines("sidecar.toml")))
sidecar.toml:2: key consumer.workers: must be a whole number, not '2'
sidecar.toml:6: key consumer.providers[1].wieght: not a known key; did you mean 'weight'?
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sidecar.ops.config import SECTIONS, ConfigError, check_document, check_settings, check_table

__all__ = ["Problem", "Report", "check_file", "check_text", "key_lines"]

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake: its line (``None`` for the file as a whole), the key it concerns, and what is wrong."""

    line: int | None
    key: str
    message: str
    column: int | None = None

    def format(self, filename: str | Path) -> str:
        where = f"{filename}" if self.line is None else f"{filename}:{self.line}"
        if self.column is not None:
            where += f":{self.column}"
        return f"{where}: key {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass(frozen=True)
class Report:
    """What checking a file found: its mistakes in line order, and the tables it has."""

    problems: tuple[Problem, ...]
    sections: tuple[str, ...]

    def lines(self, filename: str | Path) -> list[str]:
        """One line per mistake, or a single line saying the file is valid."""
        if self.problems:
            return [problem.format(filename) for problem in self.problems]
        return [f"{filename}: {' and '.join(self.sections)} settings are valid"]


def check_file(path: str | Path) -> Report:
    """The mistakes of the configuration file at ``path``; ConfigError if it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8: {e.reason} at byte {e.start}") from None
    return check_text(text)


def check_text(text: str) -> Report:
    """The mistakes of a configuration file's text: a TOML syntax error alone, else every wrong key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return Report((_syntax_problem(str(e), text),), ())
    lines = key_lines(text)
    errors = check_document(document)
    sections = [name for name in SECTIONS if isinstance(document.get(name), dict)]
    for section in sections:
        values, table_errors = check_table(section, document[section])
        errors += table_errors
        if not table_errors:
            errors += check_settings(SECTIONS[section](**values))
    problems = [Problem(_line_of(error.path, lines), error.key, error.problem) for error in errors]
    problems.sort(key=lambda problem: problem.line or 0)
    if not sections and not any(name in SECTIONS for name in document):
        problems.append(Problem(None, "", "has neither a [consumer] nor a [provider] table"))
    return Report(tuple(problems), tuple(sections))


def _syntax_problem(message: str, text: str) -> Problem:
    found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if found:
        return Problem(int(found[1]), "", f"not valid TOML: {message[: found.start()]}", int(found[2]))
    line = text.count("\n") + (0 if text.endswith("\n") else 1)
    return Problem(max(line, 1), "", f"not valid TOML: {message}")  # "... (at end of document)"


def _line_of(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    """The line of ``path``, or of its nearest enclosing key or table (a missing key's table)."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


# The position scanner. It runs only on text that tomllib accepted, so it may be lenient.

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\r\n#]*")
_SPACE = " \t"


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line (from 1) where each table, array entry and key of a valid TOML text is defined, by
    path: ``("consumer",)``, ``("consumer", "providers", 0)``, ``("consumer", "providers", 0, "weight")``.

    >>> lines = key_lines('a.b = 1\\n[t]\\n"q k" = {x = [1,\\n 2], y = 3}\\n[[t.arr]]\\n[[t.arr]]\\nz = 1')
    >>> lines[("a", "b")], lines[("t", "q k", "x", 1)], lines[("t", "q k", "y")], lines[("t", "arr", 1, "z")]
    (1, 4, 4, 7)
    """
    return _Scanner(text).scan()


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self.entries: dict[tuple[str, ...], int] = {}  # array-of-tables header -> index of its last entry

    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip(self, newlines: bool) -> None:
        """Past spaces, comments and (when ``newlines``) line ends."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in _SPACE or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def scan(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while True:
            self.skip(newlines=True)
            if self.pos >= len(self.text):
                return self.lines
            line = self.line()
            if self.peek(2) == "[[":
                self.pos += 2
                names = self.key()
                self.entries[names] = self.entries.get(names, -1) + 1
                table = self.resolve(names) + (self.entries[names],)
                self.lines.setdefault(table[:-1], line)
                self.pos += 2
            elif self.peek() == "[":
                self.pos += 1
                table = self.resolve(self.key())
                self.pos += 1
            else:
                self.key_value(table, line)
                continue
            self.lines.setdefault(table, line)

    def resolve(self, names: tuple[str, ...]) -> KeyPath:
        """A header's names as a path, with the current entry of each enclosing array of tables."""
        path: KeyPath = ()
        for end in range(1, len(names) + 1):
            path += (names[end - 1],)
            if end < len(names) and names[:end] in self.entries:
                path += (self.entries[names[:end]],)
        return path

    def key(self) -> tuple[str, ...]:
        """A bare, quoted or dotted key; leaves the position after it and the spaces that follow."""
        parts = []
        while True:
            self.skip(newlines=False)
            char = self.peek()
            if char in ('"', "'"):
                start = self.pos
                self.string()
                parts.append(tomllib.loads(f"k = {self.text[start : self.pos]}")["k"])
            else:
                found = _BARE_KEY.match(self.text, self.pos)
                end = found.end() if found else self.pos + 1
                parts.append(self.text[self.pos : end])
                self.pos = end
            self.skip(newlines=False)
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1

    def key_value(self, table: KeyPath, line: int) -> None:
        path = table + self.key()
        self.lines.setdefault(path, line)
        self.pos += 1  # "="
        self.value(path)

    def value(self, path: KeyPath) -> None:
        self.skip(newlines=False)
        char = self.peek()
        if char == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if self.peek() in ("]", ""):
                    self.pos += 1
                    return
                self.lines.setdefault(path + (index,), self.line())
                self.value(path + (index,))
                self.skip(newlines=True)
                if self.peek() == ",":
                    self.pos += 1
                index += 1
        elif char == "{":
            self.pos += 1
            while True:
                self.skip(newlines=False)
                if self.peek() in ("}", ""):
                    self.pos += 1
                    return
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.key_value(path, self.line())
        elif char in ('"', "'"):
            self.string()
        else:  # numbers, booleans, dates and times: up to the next delimiter
            found = _SCALAR.match(self.text, self.pos)
            self.pos = found.end()

    def string(self) -> None:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.pos += 3
            end = self.text.find(quote * 3, self.pos) if quote == "'" else self._basic_end(quote * 3)
            self.pos = end + 3
            while self.peek() == quote:  # up to two quotes may end the content: """a"""""
                self.pos += 1
        else:
            self.pos += 1
            end = self.text.find(quote, self.pos) if quote == "'" else self._basic_end(quote)
            self.pos = end + 1

    def _basic_end(self, closing: str) -> int:
        """Where ``closing`` ends a basic string from the current position, skipping escapes."""
        pos = self.pos
        while not self.text.startswith(closing, pos):
            pos += 2 if self.text[pos] == "\\" else 1
        return pos
