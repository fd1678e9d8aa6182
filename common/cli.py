"""The project's one command-line convention, shared by every entry point.

Each command declares a frozen dataclass, its typed config, whose fields are its flags::

    @dataclasses.dataclass(frozen=True)
    class ExportConfig:
        model: str | None = cli.flag(None, "A .keras model written by the trainer.", group="input")
        threads: tuple[int, ...] = cli.flag((1,), "Thread counts, comma-separated.", group="timing")

    def main(argv=None) -> int:
        return cli.main(ExportConfig, export, argv, prog="keras-effnet-export",
                        description="Export a trained model to every TFLite format.")

- Flags are spelled ``--name=value`` with the field's name (``--data_dir``, ``--batch_size``); booleans are
  ``--name`` / ``--noname``. ``--help`` groups them and shows each one's default and one line of meaning.
- The config is built in one place (`parse`); library code receives the config and never reads flags.
- Expected errors (`UsageError`, a bad flag, a full disk, a folder without write permission) end in one line,
  ``error: ...`` on stderr, and exit code 2. Ctrl-C ends in one line and exit code 130. Anything else is a bug
  and keeps its traceback.

argparse (the standard library) is the one flag library: it needs no process-global registry, so commands
can be imported side by side and called from tests with an argv list.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
RESUME_HINT = "interrupted; run the same command again to resume"
INTERRUPTED = "interrupted"

# OS errors a user can fix (disk, permissions, read-only media): one line, not a traceback.
_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class UsageError(Exception):
    """An expected error: bad flag value, missing input, unusable output. Printed as one line, exit code 2.

    `UsageError("batch_size", 0, "a positive integer")` reads ``--batch_size=0: expected a positive integer``.
    `UsageError(message)` with one argument is printed as given.
    """

    def __init__(self, flag_or_message: str, value: object = dataclasses.MISSING, allowed: str | None = None):
        if value is dataclasses.MISSING:
            message = flag_or_message
        else:
            name = flag_or_message if flag_or_message.startswith("-") else "--" + flag_or_message
            message = f"{name}={value!s}: expected {allowed}" if allowed else f"{name}={value!s}"
        super().__init__(message)
        self.flag = None if value is dataclasses.MISSING else flag_or_message


def flag(
    default,
    help: str,
    *,
    group: str = "general",
    choices: Sequence | None = None,
    metavar: str | None = None,
    required: bool = False,
):
    """A dataclass field that is also a command-line flag (its name is the field's name)."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "group": group,
            "choices": tuple(choices) if choices is not None else None,
            "metavar": metavar,
            "required": required,
        },
    )


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _converter(name: str, tp) -> Callable[[str], object]:
    base, _ = _unwrap_optional(tp)
    origin = typing.get_origin(base)
    if origin is tuple:
        args = typing.get_args(base)
        item = args[0] if args else str
        item_conv = _converter(name, item)
        return lambda text: tuple(item_conv(v.strip()) for v in text.split(",") if v.strip())
    if base is bool:
        return _parse_bool
    if base in (int, float, str):

        def convert(text: str, base=base):
            try:
                return base(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"not a{'n' if base is int else ''} {base.__name__}: {text!r}"
                ) from None

        convert.__name__ = base.__name__
        return convert
    return str


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (true or false)")


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "''"
    if value is None:
        return "none"
    return str(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message and exits; we want one line
        raise UsageError(message)


def build_parser(config_cls, *, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser whose flags are the fields of `config_cls`, grouped, each with its default."""
    parser = _Parser(
        prog=prog, description=description, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    hints = typing.get_type_hints(config_cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        if "help" not in meta:
            continue  # a field that is not a flag (set by code, not by users)
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        tp = hints[field.name]
        base, _ = _unwrap_optional(tp)
        default = field.default if field.default is not dataclasses.MISSING else None
        text = meta["help"].replace("%", "%%")  # argparse formats help with %
        if meta["choices"]:
            text += f" One of: {', '.join(map(str, meta['choices']))}."
        if meta["required"]:
            text += " (required)"
        elif "(default:" not in text:  # a help text may explain its default itself
            text += f" (default: {_show(default)})"
        if base is bool:
            group.add_argument(
                f"--{field.name}",
                dest=field.name,
                nargs="?",
                const=True,
                default=argparse.SUPPRESS,
                type=_parse_bool,
                metavar="BOOL",
                help=text,
            )
            group.add_argument(
                f"--no{field.name}",
                dest=field.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
            continue
        group.add_argument(
            f"--{field.name}",
            dest=field.name,
            type=_converter(field.name, tp),
            default=argparse.SUPPRESS,
            metavar=meta["metavar"] or field.name.upper(),
            help=text,
        )
    return parser


def parse(config_cls, argv: Sequence[str] | None = None, *, prog: str, description: str):
    """The config that `argv` (default: sys.argv[1:]) describes. Raises UsageError for anything invalid."""
    parser = build_parser(config_cls, prog=prog, description=description)
    namespace = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    given = vars(namespace)
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        if "help" not in meta:
            continue
        if meta["required"] and given.get(field.name) in (None, ""):
            raise UsageError(f"--{field.name} is required")
        choices = meta["choices"]
        if choices and field.name in given:
            value = given[field.name]
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if v not in choices:
                    raise UsageError(field.name, v, "one of " + ", ".join(map(str, choices)))
    try:
        return config_cls(**given)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def _name_the_flag(message: str, config_cls) -> str:
    """Library errors name their argument ("data_dir: ..."); on the command line that argument is --data_dir."""
    head = message.split(":", 1)[0]
    flags = {f.name for f in dataclasses.fields(config_cls) if "help" in f.metadata}
    return "--" + message if head in flags else message


def error_line(message: str) -> str:
    return "error: " + " ".join(str(message).split())


def main(
    config_cls,
    run: Callable,
    argv: Sequence[str] | None = None,
    *,
    prog: str,
    description: str,
    resumable: bool = False,
) -> int:
    """Parse `argv` into `config_cls`, call `run(config)`, and turn expected failures into one line and an exit code.

    `run` returns None (success, 0), an int exit code, or raises. `resumable` says whether a rerun resumes: it
    picks the line printed on Ctrl-C.
    """
    try:
        config = parse(config_cls, argv, prog=prog, description=description)
        result = run(config)
    except UsageError as e:
        print(error_line(_name_the_flag(str(e), config_cls)), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(RESUME_HINT if resumable else INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(error_line(f"{os.strerror(e.errno)}:{where}"), file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)


def run_main(main_fn: Callable[[], int]) -> None:
    """Exit the process with `main_fn()`'s code; the last line of every command module."""
    sys.exit(main_fn())


# ---------------------------------------------------------------- checks every command needs


def _require_path(flag_name: str, path: str | None, what: str, exists, kind: str) -> str:
    if not path:
        raise UsageError(f"--{flag_name} is required ({what})")
    if not exists(path):
        raise UsageError(
            flag_name, path, what + (" (it does not exist)" if not os.path.exists(path) else f" (it is not a {kind})")
        )
    return path


def require_dir(flag_name: str, path: str | None, *, what: str = "an existing folder") -> str:
    return _require_path(flag_name, path, what, os.path.isdir, "folder")


def require_file(flag_name: str, path: str | None, *, what: str = "an existing file") -> str:
    return _require_path(flag_name, path, what, os.path.isfile, "file")


def require_writable_dir(flag_name: str, path: str | None) -> str:
    """Check that `path` is, or can be created as, a writable folder, without creating anything."""
    if not path:
        raise UsageError(f"--{flag_name} is required (an output folder)")
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise UsageError(flag_name, path, "a folder (a file of that name exists)")
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise UsageError(flag_name, path, f"a folder that can be created ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(flag_name, path, f"a writable folder (no write permission in {probe})")
    return path


def positive(flag_name: str, value, *, allow_none: bool = False, kind: str = "integer"):
    if value is None and allow_none:
        return value
    if value is None or value <= 0:
        raise UsageError(flag_name, value, f"a positive {kind}")
    return value
