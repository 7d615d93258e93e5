"""The shape every ``python -m jobs.X`` entry point shares: parse, set up logging, turn user errors into exit 2."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence

log = logging.getLogger("videofactory")


def add_set_argument(parser: argparse.ArgumentParser, example: str, applies_to: str = "the config",
                     order: str = "Applied after the config file; explicit options such as --output win over it.",
                     ) -> None:
    """``--set KEY=VALUE``, repeatable: a dotted override of any config key, the value parsed as YAML.

    Only the form is checked here (argparse exits 2 on ``--set foo``); whether the key exists and the value
    fits is checked when the config is built, which fails with the key's name (exit 2 as well).
    """
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", type=_override,
        help=f"override one key of {applies_to}; repeatable. KEY is dotted (section.key), VALUE is YAML "
             f"(numbers, true/false, null, [lists], {{maps}}), e.g. --set {example}. {order} An unknown key "
             "or a value of the wrong type is an error naming it (exit status 2)")


def _override(text: str) -> str:
    from settings import ConfigError, parse_override

    try:
        parse_override(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def setup_logging() -> None:
    """Readable logs on stderr; ``VIDEOFACTORY_LOG=DEBUG`` (or WARNING, ...) sets the level."""
    logging.basicConfig(level=os.environ.get("VIDEOFACTORY_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_entry_point(prog: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
                    handler: Callable[[argparse.Namespace], int], argv: Sequence[str] | None) -> int:
    """Run ``handler`` on the parsed ``argv``; a ValueError, FileNotFoundError or RuntimeError is logged, exit 2."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_handler(handler, parser.parse_args(argv))


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Set up logging and run ``handler``; a user's mistake (ValueError, FileNotFoundError, RuntimeError) is one
    logged line and exit status 2, not a traceback."""
    setup_logging()
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
