"""The HRNet papers' training recipes, as run-configuration files (``<name>.toml`` here).

Each file is an ordinary run configuration (``hrnet-edge train --config FILE`` reads it)
whose values come from the official configuration its header names; what the trainer
does not apply sits under ``[recorded]`` and is printed by ``train``. A file opens with
``# recipe:``, ``# paper:``, ``# source:`` (the official configuration) and
``# dataset:`` lines, which ``hrnet-edge recipes``
lists. ``hrnet-edge recipes NAME --write my.toml`` copies one for the user to edit (the
data root at least: every recipe points at real data through a placeholder path).

This module imports no torch: listing reads the files and the model table only.
"""
from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hrnet_edge.errors import ConfigError, HRNetEdgeError, unknown_choice

RECIPES_DIR = Path(__file__).parent
HEADER_KEYS = ("recipe", "paper", "source", "dataset")
_HEADER = re.compile(r"#\s*(\w+):\s*(.+?)\s*$")


@dataclass(frozen=True)
class RecipeInfo:
    """What ``hrnet-edge recipes`` shows of one recipe."""

    name: str
    task: str
    model: str
    dataset: str
    epochs: int
    input_size: tuple[int, int]
    title: str
    paper: str
    source: str

    @property
    def summary(self) -> str:
        """The paper and the official configuration's file name, on one line."""
        return f"{self.paper}; {self.source.rsplit('/', 1)[-1]}"
    path: Path


def names() -> list[str]:
    """The shipped recipes' names, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    """The file of recipe ``name`` (ConfigError listing the valid names otherwise)."""
    valid = names()
    if name not in valid:
        raise unknown_choice("recipe", name, valid)
    return RECIPES_DIR / f"{name}.toml"


def recipe_text(name: str) -> str:
    return recipe_path(name).read_text()


def header(text: str) -> dict[str, str]:
    """The ``# key: value`` lines at the top of a recipe (up to its first other line)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        m = _HEADER.match(line)
        if m and m.group(1) in HEADER_KEYS:
            out[m.group(1)] = m.group(2)
    return out


def info(name: str) -> RecipeInfo:
    """Recipe ``name``'s summary, read from its file without building the run config."""
    from hrnet_edge.config import get_config

    path = recipe_path(name)
    text = path.read_text()
    head = header(text)
    missing = [k for k in HEADER_KEYS if k not in head]
    if missing:
        raise ConfigError(f"recipe {name}: its header lacks {', '.join(f'# {k}:' for k in missing)}")
    data = tomllib.loads(text)
    model = data["model"]["name"] if isinstance(data.get("model"), dict) else data["model"]
    cfg = get_config(model)
    size = data.get("model_overrides", {}).get("input_size", cfg.input_size)
    return RecipeInfo(name=name, task=cfg.task, model=model, dataset=head["dataset"],
                      epochs=int(data["train"]["epochs"]), input_size=(int(size[0]), int(size[1])),
                      title=head["recipe"], paper=head["paper"], source=head["source"], path=path)


def write_recipe(name: str, dest: str | Path, force: bool = False) -> Path:
    """Copy recipe ``name`` to ``dest`` (a file, or a folder to hold ``<name>.toml``);
    an existing file is replaced only with ``force``."""
    from hrnet_edge.io import write_text

    text = recipe_text(name)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"{name}.toml"
    if dest.suffix not in (".toml",):
        raise ConfigError(f"--write {dest}: a run configuration written from a recipe is TOML; "
                          "give a path ending in .toml")
    if dest.exists() and not force:
        raise HRNetEdgeError(f"{dest} exists; --force replaces it")
    if not dest.parent.is_dir():
        raise HRNetEdgeError(f"folder {dest.parent} does not exist")
    return write_text(dest, text)


# --- the command line ----------------------------------------------------------------------
def add_parser(sub, command) -> None:
    """``hrnet-edge recipes [NAME] [--write PATH [--force]]``."""
    p = sub.add_parser("recipes", help="the HRNet papers' training recipes as run configurations: "
                                       "list them, print one, or write a copy to edit")
    p.add_argument("name", nargs="?", help="a recipe to print (or to write with --write)")
    p.add_argument("--write", metavar="PATH",
                   help="write recipe NAME to PATH (.toml, or a folder) for editing; then "
                        "hrnet-edge train --config PATH")
    p.add_argument("--force", action="store_true", help="with --write: replace an existing file")
    command("recipes")(cmd_recipes)


def cmd_recipes(args) -> int:
    if args.name is None:
        if args.write or args.force:
            raise ConfigError("--write and --force need a recipe NAME; `hrnet-edge recipes` lists them")
        rows = [info(n) for n in names()]
        print(f"{'name':22} {'task':4} {'model':15} {'input':>8} {'epochs':>6}  {'dataset':28} source")
        for r in rows:
            size = "x".join(map(str, r.input_size))
            print(f"{r.name:22} {r.task:4} {r.model:15} {size:>8} {r.epochs:6d}  {r.dataset:28} {r.summary}")
        print("hrnet-edge recipes NAME prints one; --write PATH copies it to edit ([data] root at least).")
        return 0
    if args.write is None:
        if args.force:
            raise ConfigError("--force: only with --write PATH")
        sys.stdout.write(recipe_text(args.name))
        return 0
    from hrnet_edge.console import say

    path = write_recipe(args.name, args.write, force=args.force)
    say(f"[recipes] wrote {path}: set [data] root (and [model] init for pretrained weights), then "
        f"hrnet-edge train --config {path}")
    return 0
