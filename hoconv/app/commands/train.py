"""`hoconv train`: train a model (images or clips) with validation, checkpoints and logs."""

from __future__ import annotations

import argparse
from pathlib import Path

from hoconv.app.engine import config as config_io

DEFAULTS = "train"


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or -1 would silently run nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _lasso_value(text: str) -> float | str:
    """argparse type: a gamma >= 0, or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _names(kind: str) -> str:
    """The registered model or data set names, comma-separated, for help texts."""
    if kind == "model":
        from hoconv.models import list_models

        return ", ".join(list_models())
    from hoconv.app.data import list_datasets

    return ", ".join(list_datasets())


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and `search` (every default comes from the YAML config)."""
    p.add_argument(
        "--config", help="YAML file overriding the packaged defaults (flags override it)"
    )
    p.add_argument(
        "--task", choices=("affect", "classify"), help="what to predict; follows from --data"
    )
    p.add_argument(
        "--data", help=f"data set, one of: {_names('data')} (synthetic needs no --data-root)"
    )
    p.add_argument("--data-root", help="folder of the data set")
    p.add_argument("--mode", choices=("static", "video"), help="images or clips")
    p.add_argument("--model", help=f"model registry name, one of: {_names('model')}")
    p.add_argument("--init", help="start from this checkpoint (e.g. from `hoconv transduce`)")
    p.add_argument(
        "--phase",
        choices=("temporal", "all"),
        help="temporal: train only the new temporal factors of a transduced model",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
    p.add_argument("--optimizer", choices=("adam", "sgd"))
    p.add_argument("--lr", type=float)
    p.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"))
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--scheduler", choices=("step", "multistep", "plateau", "cosine", "none"))
    p.add_argument("--lr-step", type=int, help="epochs between learning-rate decays")
    p.add_argument("--lr-gamma", type=float, help="learning-rate decay factor")
    p.add_argument(
        "--lasso",
        type=_lasso_value,
        metavar="GAMMA|auto",
        help="lasso on the ranks (CP weights, Tucker core slices); auto: ramp gamma until "
        "--lasso-target of the components are zero (hoconv/lasso_schedule.py)",
    )
    p.add_argument(
        "--lasso-target",
        type=float,
        metavar="SHARE",
        help="--lasso auto: share of components to zero",
    )
    p.add_argument(
        "--lasso-delay",
        type=int,
        metavar="EPOCHS",
        help="--lasso auto: epochs trained without the penalty before its ramp starts",
    )
    p.add_argument(
        "--proximal",
        action="store_true",
        default=None,
        help="apply the lasso as a soft-threshold after each step (weights reach exact zero)",
    )
    p.add_argument("--num-outputs", type=int)
    p.add_argument("--width", type=int, help="model width (base channels) for small CPU runs")
    p.add_argument("--image-size", type=_positive_int, help="input image size (data set option)")
    p.add_argument(
        "--clip-length", type=_positive_int, help="frames per clip in video mode (data set option)"
    )
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="extra model keyword")
    p.add_argument(
        "--data-arg", action="append", metavar="KEY=VALUE", help="extra data set keyword"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--max-train-batches", type=_positive_int, help="cap on batches per epoch (quick runs)"
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="training-set augmentation (unset: the data set's default; faces: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar / epoch lines")
    p.add_argument(
        "--keep", choices=("best", "last", "both"), help="checkpoints to keep (--resume needs last)"
    )


def show_config_defaults(p: argparse.ArgumentParser, name: str = DEFAULTS) -> None:
    """Append each flag's packaged default (hoconv/app/configs/<name>.yaml) to its help text."""
    defaults = config_io.packaged_config(name)
    for action in p._actions:
        key = action.dest
        if key in defaults and action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''} (default: {defaults[key]})".strip()


def train_overrides(args: argparse.Namespace) -> dict:
    """The config keys set on the command line (None = not given)."""
    model_kwargs = config_io.parse_key_values(args.model_arg, "--model-arg")
    data_kwargs = config_io.parse_key_values(args.data_arg, "--data-arg")
    if args.width is not None:
        model_kwargs["width"] = args.width
    if args.image_size is not None:
        data_kwargs["image_size"] = args.image_size
    if args.clip_length is not None:
        data_kwargs["clip_length"] = args.clip_length
    flags = {
        key: getattr(args, key)
        for key in (
            "task",
            "data",
            "data_root",
            "mode",
            "model",
            "init",
            "phase",
            "epochs",
            "batch_size",
            "optimizer",
            "lr",
            "weight_decay",
            "scheduler",
            "lr_step",
            "lr_gamma",
            "lasso",
            "lasso_target",
            "lasso_delay",
            "proximal",
            "num_outputs",
            "seed",
            "workers",
            "device",
            "max_train_batches",
            "keep",
            "augment",
        )
    }
    flags["betas"] = list(args.betas) if args.betas else None
    flags["model_kwargs"] = model_kwargs or None
    flags["data_kwargs"] = data_kwargs or None
    if args.no_progress:
        flags["progress"] = False
    return flags


def resolve_config(args: argparse.Namespace, resume: bool = False) -> dict:
    """Packaged defaults (or the run's saved config on --resume) < --config < flags."""
    if not resume:
        return config_io.resolve(DEFAULTS, args.config, train_overrides(args))
    from hoconv.app.engine import read_checkpoint

    last = Path(args.out) / "last.pt"
    saved = (
        read_checkpoint(last)["config"] if last.exists() else config_io.packaged_config(DEFAULTS)
    )
    recorded = config_io.merge(config_io.packaged_config(DEFAULTS), saved, where="saved config")
    cfg = recorded
    if args.config:
        cfg = config_io.merge(
            cfg, config_io.read_yaml(args.config), where=f"--config {args.config}"
        )
    cfg = config_io.merge(
        cfg, {k: v for k, v in train_overrides(args).items() if v is not None}, where="command line"
    )
    config_io.infer_auto(cfg)
    config_io.validate(cfg)
    if last.exists():
        _refuse_recipe_changes(recorded, cfg, last)
    return cfg


# What a resumed run may change: how long and where it runs (and where its data now lies),
# not what it computes.
RESUME_CHANGEABLE = (
    "epochs", "workers", "device", "progress", "keep", "max_train_batches", "data_root",
)  # fmt: skip


def _refuse_recipe_changes(recorded: dict, cfg: dict, last: Path) -> None:
    """Raise ValueError when a flag or --config changes the recipe of the run being resumed.

    The optimizer, scheduler and model state come from ``last.pt``: a new ``--lr`` (or
    model, data, loss, ...) would be recorded in config.yaml but not be what runs.
    """
    recorded = dict(recorded)
    config_io.infer_auto(recorded)
    for key, value in cfg.items():
        if key not in RESUME_CHANGEABLE and recorded.get(key) != value:
            flag = {"model_kwargs": "--model-arg/--width", "data_kwargs": "--data-arg"}.get(
                key, "--" + key.replace("_", "-")
            )
            raise ValueError(
                f"--resume: {flag} {value!r} differs from the run's {recorded.get(key)!r} "
                f"(saved in {last}); a resumed run keeps its recipe (it may change only "
                f"{', '.join('--' + k.replace('_', '-') for k in RESUME_CHANGEABLE)}); "
                f"start a new run with --init {last} to change it"
            )


def check_init(args: argparse.Namespace, cfg: dict) -> None:
    """Raise ValueError when ``--init``'s checkpoint does not fit ``--model`` or the task."""
    if not cfg.get("init") or args.resume:
        return
    from hoconv.app.engine import read_checkpoint

    ckpt = read_checkpoint(cfg["init"])
    name = ckpt["model"]["name"]
    if args.model and args.model != name:
        raise ValueError(
            f"--init {cfg['init']} holds model {name!r}, not --model {args.model!r}; "
            "drop --model (the checkpoint's model is trained) or pass a matching --init"
        )
    task = (ckpt.get("config") or {}).get("task")
    if task not in (None, cfg["task"]):
        raise ValueError(
            f"--init {cfg['init']} was trained for task {task!r} but this run is "
            f"{cfg['task']!r} (from --data {cfg['data']}); pass a checkpoint of the same task"
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a model",
        description=__doc__,
        epilog="Defaults: hoconv/app/configs/train.yaml (the paper's recipe: Adam, lr x0.1 every 15 "
        "epochs). Under torchrun each process trains on its share of the global batch.",
    )
    add_train_arguments(p)
    show_config_defaults(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, config)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; exit code 0 on success."""
    from hoconv.app.cli import CLIError
    from hoconv.app.engine import TrainingError, train

    cfg = resolve_config(args, resume=args.resume)
    check_init(args, cfg)
    try:
        result = train(cfg, args.out, resume=args.resume)
    except TrainingError as err:
        raise CLIError(str(err)) from err
    except KeyboardInterrupt as err:
        last = Path(args.out) / "last.pt"
        if last.is_file():
            hint = f"{last} keeps the last finished epoch; --resume continues"
            raise KeyboardInterrupt(hint) from err
        raise
    if cfg.get("progress", True) and result["best"] is not None:
        print(
            f"best epoch {result['best']['epoch']} (score {result['best']['score']:.4f}); "
            f"checkpoints in {args.out}"
        )
    return 0
