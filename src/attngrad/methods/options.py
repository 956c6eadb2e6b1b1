"""Method options written as text, ``METHOD.OPTION=VALUE`` (the command line's ``--method-option``).

A method's options are the keyword arguments of its constructor (:func:`~.base.method_options`;
for a language model, those :func:`attngrad.lm.lm_method_parameters` lists). A value is typed
by the option's annotation (or, without one, its default): ``int``, ``float``, ``bool``
(``true`` / ``false``, ``yes`` / ``no``, ``1`` / ``0``) or ``str``; an option typed
``str | Tensor`` (``ig``'s ``baseline``) takes its names only (a tensor is for the API).
Ranges and names are then checked by the method itself (its constructor, or
:func:`attngrad.lm.ig.check_options`): this module only parses.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from ..errors import AttngradError

#: ``options_of(method) -> {option: inspect.Parameter}`` (annotations evaluated).
OptionsOf = Callable[[str], Mapping[str, inspect.Parameter]]

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
SYNTAX = "METHOD.OPTION=VALUE"


def keyword_parameters(fn: Callable[..., Any], names: Sequence[str] | None = None) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``fn`` (only ``names`` when given), annotations evaluated."""
    try:
        params = inspect.signature(fn, eval_str=True).parameters
    except Exception:  # an annotation that cannot be evaluated here: read it as text (_kinds)
        params = inspect.signature(fn).parameters
    keep = [p for p in params.values() if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return {p.name: p for p in keep if names is None or p.name in names}


def _kinds(param: inspect.Parameter) -> set[type]:
    annotation = param.annotation
    if isinstance(annotation, str):  # not evaluable (a name imported for type checking only)
        words = set(annotation.replace("|", " ").replace("[", " ").replace("]", " ").replace(",", " ").split())
        return {t for t in (bool, int, float, str) if t.__name__ in words}
    if annotation is inspect.Parameter.empty:
        default = param.default
        return {type(default)} if default not in (None, inspect.Parameter.empty) else {str}
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union \
        else (annotation,)
    return {a for a in args if isinstance(a, type)}


def convert(method: str, option: str, text: str, param: inspect.Parameter) -> Any:
    """``text`` as the type the option takes; :class:`AttngradError` naming the option when it is not one."""
    kinds = _kinds(param)
    value = text.strip()
    where = f"{method}.{option}={text!r}"
    if bool in kinds:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise AttngradError(f"{where}: give true or false")
    if int in kinds:
        try:
            return int(value)
        except ValueError:
            if float not in kinds:
                raise AttngradError(f"{where}: give a whole number") from None
    if float in kinds:
        try:
            return float(value)
        except ValueError:
            raise AttngradError(f"{where}: give a number") from None
    if str in kinds:
        if not value:
            raise AttngradError(f"{where}: give a value")
        return value
    raise AttngradError(f"{where}: this option cannot be given as text; set it from the Python API")


def parse_method_options(specs: Sequence[str], methods: Sequence[str], options_of: OptionsOf,
                         *, flag: str = "--method-option") -> dict[str, dict[str, Any]]:
    """``["ig.steps=8", "ig.layer=hidden:3"]`` -> ``{"ig": {"steps": 8, "layer": "hidden:3"}}``.

    Every spec must name one of ``methods`` (the methods being run) and one of its options, once.
    """
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        head, eq, text = spec.partition("=")
        method, dot, option = head.strip().partition(".")
        if not eq or not dot or not method or not option.strip():
            raise AttngradError(f"{flag} takes {SYNTAX} (for example ig.steps=32), not {spec!r}")
        option = option.strip()
        if method not in methods:
            raise AttngradError(f"{flag} {head.strip()}: method {method!r} is not among the methods run "
                                f"({', '.join(methods)}); add it to the method list or drop the option")
        params = options_of(method)
        if option not in params:
            takes = f"it takes {', '.join(params)}" if params else "it takes no options"
            raise AttngradError(f"{flag} {head.strip()}: method {method!r} has no option {option!r}; {takes}")
        if option in out.get(method, {}):
            raise AttngradError(f"{flag} {head.strip()} is given twice; give each option once")
        try:
            value = convert(method, option, text, params[option])
        except AttngradError as err:
            raise AttngradError(f"{flag} {err}") from None
        out.setdefault(method, {})[option] = value
    return out


def registry_options(method: str) -> dict[str, inspect.Parameter]:
    """The options of a registered method (its constructor's keyword arguments)."""
    from .base import METHODS, Method, method_options

    cls = METHODS.get(method, Method)
    return keyword_parameters(cls.__init__, method_options(cls)) if method_options(cls) else {}


def check_options(options: Mapping[str, Mapping[str, Any]] | None, methods: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``options`` keyed by names among ``methods`` (names or :class:`~.base.Method` instances)."""
    if not options:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(v, Mapping) for v in options.values()):
        raise AttngradError("options must map a method name to its options: {'ig': {'steps': 32}}")
    names = [m if isinstance(m, str) else m.name for m in methods]
    stray = [k for k in options if k not in names or not isinstance(methods[names.index(k)], str)]
    if stray:
        raise AttngradError(f"options for {stray[0]!r}, which is not among the methods named ({', '.join(names)}); "
                            "add it to the methods, or give a Method instance its options directly")
    return {k: dict(v) for k, v in options.items()}


def instance(method: Any, options: Mapping[str, Any] | None = None, start_layer: int | None = None) -> Any:
    """A :class:`~.base.Method` from a name with ``options`` (``start_layer`` joins them when the
    method takes it and they do not set it; a different value in both is refused)."""
    from .base import METHODS, Method, get_method, method_options

    if not isinstance(method, str):
        return get_method(method)
    opts = dict(options or {})
    takes = "start_layer" in method_options(METHODS.get(method, Method))
    if takes and start_layer is not None:
        given = opts.setdefault("start_layer", start_layer)
        if start_layer not in (0, given):
            raise AttngradError(f"start_layer is given twice for {method} ({start_layer} and {given}); give it once")
    return get_method(method, **opts)


def format_options(options: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The specs that give ``options`` back (``{"ig": {"steps": 8}}`` -> ``["ig.steps=8"]``), sorted."""
    def text(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    return sorted(f"{m}.{k}={text(v)}" for m, opts in options.items() for k, v in opts.items())


__all__ = ["SYNTAX", "check_options", "convert", "format_options", "instance", "keyword_parameters", "parse_method_options",
           "registry_options"]
