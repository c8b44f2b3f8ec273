"""User mistakes as one readable line.

`UserError` marks what the user can fix (a bad config value, missing data, an unusable
checkpoint): the command line prints `error: <one line>` and exits 2. Anything else is a bug and
keeps its traceback. `one_line` is the one place that condenses an exception's message.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; its message is the one line they see."""


class InvalidValue(UserError, ValueError):
    """A config value a model or dataset cannot work with (too small, inconsistent): raise this,
    not a bare ValueError, so the user sees one line instead of a bug's traceback."""


def one_line(err: BaseException) -> str:
    """An exception (and its chained cause) as a single readable line: first line, the cause's
    lines, then the rest; repeats dropped."""
    head, *rest = _lines(err) or [type(err).__name__]
    cause = _lines(err.__cause__) if err.__cause__ is not None else []
    return " ".join(dict.fromkeys([head, *cause, *rest]))


def _lines(err: BaseException) -> list[str]:
    """Meaningful lines of a message; Hydra's option lists become 'a, b, c'."""
    lines: list[str] = []
    for raw in str(err).splitlines():
        line = raw.strip()
        if line.startswith(("Config search path", "full_key:", "object_type=", "reference_type")):
            break
        if not line:
            continue
        if raw.startswith("\t") and lines and not lines[-1].endswith(":"):
            lines[-1] += f", {line}"  # continuation of an indented option list
        else:
            lines.append(line)
    return lines


def first_line(err: BaseException) -> str:
    lines = _lines(err)
    return lines[0] if lines else type(err).__name__


def first_and_last_line(err: BaseException) -> str:
    """What failed and the root cause, e.g. a download error and 'Name or service not known'."""
    lines = _lines(err)
    if not lines:
        return type(err).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')} {lines[-1]}"


if __name__ == "__main__":
    try:
        raise UserError("no data in /nowhere\n\tplace the files there")
    except UserError as err:
        print("error:", one_line(err))
