"""The ``hrnet-edge`` command line: parses arguments and calls library functions.

Every user mistake surfaces as an :class:`~hrnet_edge.errors.HRNetEdgeError`, which
is printed as one line on stderr with exit code 2 (no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from hrnet_edge.errors import HRNetEdgeError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    """Register a subcommand handler."""
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


def _fmt_published(value, unit=""):
    return "-" if value is None else f"{value:g}{unit}"


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from hrnet_edge.config import get_config
    from hrnet_edge.models.registry import GFLOP, compute_table, list_models, recorded_stats

    names = list_models(args.pattern, task=args.task)
    if not names:
        raise HRNetEdgeError(f"no model matches pattern {args.pattern!r} (task={args.task}); try '*'")
    if args.recompute:
        from hrnet_edge.io import write_json
        from hrnet_edge.models.registry import TABLE_PATH

        table = compute_table()
        write_json(TABLE_PATH, table)
        print(f"recomputed {len(table)} rows into {TABLE_PATH}", file=sys.stderr)
    stats = recorded_stats()
    rows = []
    for n in names:
        cfg, s = get_config(n), stats[n]
        rows.append({
            "name": n, "task": cfg.task, "params_m": s["params"] / 1e6, "gflops": s["macs"] / GFLOP,
            "input": "x".join(map(str, cfg.input_size)),
            "paper": f"{_fmt_published(cfg.published_params_m, 'M')} / {_fmt_published(cfg.published_gflops)}",
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':26} {'task':4} {'params':>9} {'GFLOPs':>8} {'input':>9}  paper (params / GFLOPs)")
    for r in rows:
        print(f"{r['name']:26} {r['task']:4} {r['params_m']:8.2f}M {r['gflops']:8.2f} {r['input']:>9}  {r['paper']}")
    print("GFLOPs = multiply-adds / 1024^3 at the input shown, the HRNet papers' convention.")
    return 0


@command("info")
def cmd_info(args: argparse.Namespace) -> int:
    from hrnet_edge.config import get_config
    from hrnet_edge.models.registry import GFLOP, model_stats

    overrides = _parse_overrides(args.set)
    cfg = get_config(args.name, **overrides)
    stats = model_stats(args.name, **overrides)
    shape_out = _output_shape(cfg)
    info = {
        "config": cfg.to_dict(),
        "branch_channels": list(cfg.backbone.branch_channels),
        "params": stats["params"],
        "gflops": round(stats["macs"] / GFLOP, 4),
        "input": {"shape": [1, 3, *cfg.input_size], "layout": "NCHW", "dtype": "float32",
                  "range": "RGB 0..1" if cfg.normalize_in_graph else "normalized"},
        "output_shape": shape_out,
    }
    print(json.dumps(info, indent=2))
    return 0


def _output_shape(cfg) -> list[int]:
    h, w = cfg.input_size
    if cfg.task in ("pose", "seg"):
        return [1, cfg.num_outputs, h // 4, w // 4]
    if cfg.task == "det":
        points = sum((h // (4 * 2**i)) * (w // (4 * 2**i)) for i in range(cfg.det_levels))
        return [1, points, 5 + cfg.num_outputs]
    return [1, cfg.num_outputs]


def _parse_overrides(items: Sequence[str] | None) -> dict:
    """Parse ``key=value`` overrides; values are JSON when they parse as JSON."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise HRNetEdgeError(f"override {item!r} must look like key=value (e.g. width=8)")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must look like 256x192 (height x width), got {text!r}")
    return h, w


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hrnet_edge.bench import ALL_TARGETS, BenchOptions, run_bench, validate_options
    from hrnet_edge.console import chatter_to, say

    targets = tuple(args.targets or ALL_TARGETS)
    opts = BenchOptions(model=args.model, input_size=args.input_size, threads=args.threads,
                        warmup=args.warmup, iterations=args.iterations, targets=targets,
                        by_hand=not args.no_by_hand, profile=args.profile)
    validate_options(opts)  # before anything is written
    out = Path(args.out or f"bench/{opts.model}-{opts.input_size[0]}x{opts.input_size[1]}")
    if out.exists() and not out.is_dir():
        raise HRNetEdgeError(f"--out {out} exists and is not a directory")
    with chatter_to(out / "bench.log", enabled=not args.verbose) as log:
        result = run_bench(opts, out)
    from hrnet_edge.bench.table import markdown

    say(markdown(result))
    failed = [r for r in result["rows"] if "error" in r]
    say(f"[bench] wrote {out}/bench.json, bench.md, bench.png" + (f"; library output in {log}" if log else ""))
    if failed:
        say(f"[bench] {len(failed)} row(s) failed; the reasons are in the table and bench.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(
        prog="hrnet-edge",
        description="HRNet from training to checked on-device artifacts.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    m = sub.add_parser("models", help="list the model variants with params and GFLOPs")
    m.add_argument("pattern", nargs="?", default="*", help="glob on the name, e.g. '*w18*'")
    m.add_argument("--task", choices=["pose", "seg", "det", "cls"])
    m.add_argument("--json", action="store_true", help="print JSON rows")
    m.add_argument("--recompute", action="store_true", help="recount every variant and rewrite the table")

    i = sub.add_parser("info", help="show one variant's configuration and shapes")
    i.add_argument("name")
    i.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. width=8")

    b = sub.add_parser("bench", help="reference benchmark: every runtime x precision, the project's "
                                     "exports beside by-hand ones, against this CPU's measured peak")
    b.add_argument("--model", default="hrnet_w18_small_v1_pose", help="variant (default: %(default)s)")
    b.add_argument("--input-size", type=_size, default=(256, 192), metavar="HxW",
                   help="input height x width (default: 256x192)")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--iterations", type=int, default=50)
    b.add_argument("--targets", nargs="+", choices=["onnx", "openvino", "tflite", "executorch"])
    b.add_argument("--no-by-hand", action="store_true", help="skip the by-hand default exports")
    b.add_argument("--profile", action="store_true",
                   help="add per-op profiles of the project's ONNX Runtime and OpenVINO rows")
    b.add_argument("--out", help="output folder (default: bench/<model>-<HxW>)")
    b.add_argument("--verbose", action="store_true", help="show the libraries' output instead of logging it")

    from hrnet_edge.pipeline import cli as pipeline_cli  # the run-directory stages

    pipeline_cli.add_parsers(sub, command)
    from hrnet_edge import recipes  # the papers' recipes as run-configuration files

    recipes.add_parser(sub, command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    from hrnet_edge.console import attach

    attach()  # a child of a redirected run: the terminal its parent passed
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HRNetEdgeError as exc:
        print(f"hrnet-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system fault (full disk, read-only, permissions): one line
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"hrnet-edge {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hrnet-edge {args.command}: interrupted; completed stages are kept, re-run to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
