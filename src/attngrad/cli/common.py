"""Options, argument types and helpers shared by the CLI commands.

Checks that need no model run while click parses the command line (a bad count, an empty
method list, an output path that is a file, a missing image or gallery), so a mistake is
reported at once, in the one-line form of :mod:`attngrad.cli`, before any model loads.

Output folders are created only when something is written into them; ``OutDir`` records
which folders a command may create, and :func:`remove_unused_outputs` removes those that a
failed command left empty.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import click

from ..errors import AttngradError
from ..explainer import Explainer
from ..io import find_sample, sample_names
from ..methods import METHODS

_OUTPUTS_KEY = "attngrad.outputs"

MODEL_HELP = (
    "Hugging Face folder or Hub name, or timm:NAME (default: the shipped ViT-Ti). Note: the timm and "
    "Hugging Face copies of ViT-Ti preprocess differently (timm: resize the short side to 248 + centre "
    "crop 224; Hugging Face: squash to 224x224), so they can predict different classes for the same file."
)
DEVICE_HELP = "cpu, cuda, cuda:1, mps ... (default: cpu)."


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..models import check_device

    try:
        check_device(value)
    except AttngradError as err:
        raise click.BadParameter(str(err)) from None
    return value


def _check_model_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..models.hf import looks_like_path

    if value is not None and not value.startswith("timm:") and looks_like_path(value) and not Path(value).expanduser().exists():
        raise click.BadParameter(f"{value}: no such model folder; check the path")
    return value


def device_option(help: str = DEVICE_HELP):
    """``--device``, checked while parsing (unknown or absent devices are refused before any model loads)."""
    return click.option("--device", default=None, callback=_check_device, help=help)


def model_option(help: str, **kwargs):
    """``--model``: a folder that does not exist is refused while parsing, with a message about folders."""
    return click.option("--model", callback=_check_model_name, help=help, **kwargs)


def model_options(fn):
    """``--model``, ``--checkpoint`` and ``--device``, passed to the command as ``explainer``."""

    @model_option(MODEL_HELP, default=None)
    @click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Weights file (.safetensors or .pth) for a timm:NAME model.")
    @device_option()
    @functools.wraps(fn)
    def wrapper(*args, model, checkpoint, device, **kwargs):
        from ..models import load_model

        explainer = Explainer(load_model(model, device=device, checkpoint=checkpoint))
        return fn(*args, explainer=explainer, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- lists


def split_list(value: str | None, registry: Iterable[str] | None = None) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; ``"all"`` expands to every name of ``registry``
    (default: every registered method, :data:`attngrad.methods.METHODS`)."""
    if not value:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    return list(METHODS if registry is None else registry) if items == ["all"] else items


def method_names(registry: Iterable[str] | None = None) -> str:
    """The names of ``registry`` (default: the registered methods), for help texts and messages."""
    return ", ".join(METHODS if registry is None else registry)


def _methods_check(registry: Iterable[str] | None, kind: str):
    def check(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
        names = method_names(registry)
        methods = split_list(value, registry)
        if not methods:
            raise click.BadParameter(f"no method named in {value!r}; give one or more of: {names}, or 'all'")
        known = set(METHODS if registry is None else registry)
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise click.BadParameter(f"unknown method {unknown[0]!r}{kind}; choose from {names}, or 'all'")
        return list(dict.fromkeys(methods))

    return check


def methods_option(*decls: str, default: str = "complete", help: str = "Method(s), comma-separated, or 'all'",
                   registry: Iterable[str] | None = None, kind: str = ""):
    """A comma-separated method list, checked while parsing (the command gets a list of distinct names).

    Args:
        registry: the method names this command knows (default: every registered method,
            :data:`attngrad.methods.METHODS`); ``all`` expands to them, in their order.
        kind: what the command explains, for the message (``"language model"``: "unknown method
            'x' for a language model").
    """
    names = list(METHODS if registry is None else registry)
    check = _methods_check(names, f" for {kind}" if kind else "")
    return click.option(*decls, default=default, show_default=True, callback=check,
                        help=f"{help}: {method_names(names)}.")  # fmt: skip


def require_classes(labels: Sequence[str], names: Iterable[str], command: str) -> None:
    """Refuse, before anything is written, a model without the ImageNet classes ``command`` explains by name."""
    from ..targets import class_index

    missing = []
    for name in dict.fromkeys(names):
        try:
            class_index(name, labels)
        except AttngradError:
            missing.append(name)
    if missing:
        raise AttngradError(f"{command} explains ImageNet classes this model does not have ({', '.join(map(repr, missing))}); "
                            "give an ImageNet classifier (its classes: `attngrad classes --model ...`)")


def split_classes(values: str | Sequence[str] | None, labels: Sequence[str]) -> list[str]:
    """Classes given as repeated options and/or comma lists: ``("zebra,African elephant", "top3")``.

    A value that is itself one of ``labels`` (a name that contains a comma, such as
    ``"tench, Tinca tinca"``) is kept whole.
    """
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    known = {label.strip().lower() for label in labels}
    found: list[str] = []
    for value in values:
        if value.strip().lower() in known:
            found.append(value.strip())
        else:
            found.extend(v.strip() for v in value.split(",") if v.strip())
    return found


# --------------------------------------------------------------------------- paths


class FiniteRange(click.FloatRange):
    """A ``click.FloatRange`` that also refuses NaN (which passes every comparison) and infinities."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class ImagePath(click.ParamType):
    """An image file, or the short name of a shipped sample image when no such file exists."""

    name = "image"

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.exists():
            if path.is_dir():
                self.fail(f"{value} is a folder; give an image file", param, ctx)
            return str(path)
        sample = find_sample(value)
        if sample is None:
            self.fail(f"{value}: no such file (shipped samples by short name: {', '.join(sample_names())})", param, ctx)
        return str(sample)


IMAGE = ImagePath()
#: An existing folder (galleries, data folders).
FOLDER = click.Path(exists=True, file_okay=False)
IMAGES_HELP = f"IMAGE arguments are files, or a shipped sample's short name ({', '.join(sample_names())})."


def _first_missing(path: Path) -> Path | None:
    """The topmost folder that creating ``path`` would create (``None`` when ``path`` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            return missing
        missing = p
    return missing


class OutDir(click.ParamType):
    """An output folder: refused when it (or a folder above it) is a file or cannot be written.

    The folder is not created here; the command creates it when it writes (:func:`out_dir`).
    The topmost folder it would create is recorded, so that a failed command removes it again
    when nothing was written into it (:func:`remove_unused_outputs`).
    """

    name = "folder"

    def convert(self, value, param, ctx):
        if isinstance(value, Path):
            value = str(value)
        if not str(value).strip():
            self.fail("an empty name; give a folder name", param, ctx)
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            self.fail(f"{value} is an existing file; give a folder name (it is created when needed)", param, ctx)
        missing = _first_missing(path.absolute())
        existing = path.absolute() if missing is None else missing.parent
        if not existing.is_dir():
            self.fail(f"{value}: {existing} is a file, so no folder can be made inside it", param, ctx)
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"{value}: cannot write in {existing}; choose another folder", param, ctx)
        if ctx is not None and missing is not None:
            ctx.meta.setdefault(_OUTPUTS_KEY, []).append(missing)
        return path


def out_option(default: str, help: str = "Output folder (created when needed)."):
    return click.option("--out", "-o", default=default, show_default=True, type=OutDir(), help=help)


def remove_unused_outputs(ctx: click.Context) -> None:
    """Remove the output folders this command created but left without any file (after a failure)."""
    for top in ctx.meta.pop(_OUTPUTS_KEY, []):
        if not top.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):  # deepest first
            try:
                os.rmdir(folder)  # fails (and keeps the folder) when anything is inside
            except OSError:
                pass


def safe_name(text: str) -> str:
    """A file-name-safe version of a class name or file stem."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"


def out_dir(path: str | Path) -> Path:
    """Create the output folder (and its parents) when the first file goes into it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------- class names without the model


def class_names(model: str | None) -> list[str]:
    """A model's class names from its configuration only (no weights are loaded).

    Hugging Face folders and Hub names: ``config.json``'s ``id2label``; ``timm:NAME``: the
    ImageNet-1k names when timm's configuration of NAME has 1000 classes.
    """
    from ..models import DEFAULT_MODEL
    from ..models.timm_vit import imagenet_labels

    name = str(model) if model is not None else str(DEFAULT_MODEL)
    if name.startswith("timm:"):
        return _timm_class_names(name[len("timm:"):], imagenet_labels)
    from ..models.hf import check_model_folder, load_config

    check_model_folder(name)
    config = load_config(name, what="the configuration of", hint="pass a model folder, or a Hub name when online")
    id2label = getattr(config, "id2label", None) or {}
    count = getattr(config, "num_labels", len(id2label))
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(count)]


def _timm_class_names(arch: str, imagenet_labels) -> list[str]:
    try:
        import timm
    except ImportError:
        raise AttngradError("timm is not installed; pip install 'attngrad[timm]'") from None
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # timm raises several types for unknown names
        cfg = None
    if cfg is None:
        if not timm.is_model(arch):
            raise AttngradError(f"timm has no model {arch!r}; see timm.list_models('vit_*')")
        count = 1000
    else:
        count = getattr(cfg, "num_classes", 1000)
    return imagenet_labels() if count == 1000 else [f"class_{i}" for i in range(count)]


# --------------------------------------------------------------------------- method options

METHOD_OPTION_HELP = ("A method's option, METHOD.OPTION=VALUE (repeatable), e.g. --method-option ig.steps=32 "
                      "--method-option ig.layer=attention:11; see docs/methods.md for each method's options.")


def method_options_option(methods_param: str, *, lm: bool = False):
    """``--method-option METHOD.OPTION=VALUE`` (repeatable), parsed and checked before any model loads.

    The command gets ``method_options``: ``{method: {option: value}}`` for methods of its
    ``methods_param`` list, typed by the method's constructor (:mod:`attngrad.methods.options`;
    ``lm``: the language-model methods', :func:`attngrad.lm.explainer.check_method_options`)
    and checked by the method itself, so a bad value is refused in one line with nothing written.
    """

    def decorate(fn):
        @click.option("--method-option", "method_option", multiple=True, metavar="METHOD.OPTION=VALUE",
                      help=METHOD_OPTION_HELP)
        @functools.wraps(fn)
        def wrapper(*args, method_option, **kwargs):
            kwargs["method_options"] = parse_method_options_cli(method_option, kwargs[methods_param], lm=lm)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def parse_method_options_cli(specs: Sequence[str], methods: Sequence[str], *, lm: bool = False) -> dict:
    """The ``--method-option`` values for ``methods``, typed and checked (see :func:`method_options_option`)."""
    from ..methods.options import parse_method_options, registry_options

    if not specs:
        return {}
    if lm:
        from ..lm.attribution import PATH_METHODS
        from ..lm.explainer import check_method_options
        from ..lm.ig import IG_OPTIONS, lm_integrated_gradients
        from ..methods.options import keyword_parameters

        def options_of(name: str):
            return keyword_parameters(lm_integrated_gradients, IG_OPTIONS) if name in PATH_METHODS else {}

        found = parse_method_options(specs, methods, options_of)
        check_method_options(found, methods)
        return found
    found = parse_method_options(specs, methods, registry_options)
    from ..methods import get_method

    for name, opts in found.items():  # the method's own checks (ranges, names), before any model loads
        get_method(name, **opts)
    return found


def write_method_options(out: str | Path, methods: Sequence[str], options: dict) -> Path:
    """``OUT/method_options.json``: the methods run and their options (and the ``--method-option`` values
    that give them again), so that a run with options can be reproduced."""
    import json

    from ..methods.options import format_options

    path = out_dir(out) / "method_options.json"
    record = {"methods": list(methods), "method_options": options, "method_option": format_options(options)}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
