"""Command ``explain-lm``: why a causal language model predicts its next token (:mod:`attngrad.lm`)."""

from __future__ import annotations

import sys
import warnings

import click

from ..errors import AttngradError
from ..lm.attnlrp import DEFAULT_METHOD, FALLBACK_METHOD, default_method
from ..lm.attribution import LM_METHODS
from ..losses import LOSSES, check_loss_is_read
from . import main
from .common import OutDir, device_option, method_options_option, methods_option, model_option, out_dir, write_method_options

#: The command's method and loss when none is given: the best on the evidence test (issue 22, the first 100
#: kept prompts, docs/results/lm-peers.md): ``attnlrp`` against the runner-up token (:func:`attngrad.lm.explainer.
#: default_loss`), evidence share 0.570 ± 0.038,
#: +0.147 ± 0.034 over ``attnlrp`` on the logit alone (LXT's AttnLRP) and +0.257 ± 0.036 over ``complete`` against
#: the runner-up. Models outside attnlrp's families (:data:`attngrad.lm.attnlrp.FAMILIES`) fall back to ``complete``
#: (:func:`attngrad.lm.attnlrp.default_method`, which the explorer's LM tab follows too).

@main.command("explain-lm")
@click.argument("prompts", nargs=-1, required=True)
@model_option(default=None, help="Causal LM folder or Hub name (default: SmolLM2-135M-Instruct from attngrad[lm]).")
@device_option()
@method_options_option("methods", lm=True)
@methods_option("--method", "-m", "methods", registry=LM_METHODS, kind="a language model", default=DEFAULT_METHOD,
                help="Method(s), comma-separated, or 'all' (default attnlrp; complete for models outside its families)")
@click.option("--target", "-t", default=None, help="Token explained: text (' Paris': its first token) or topK (default: top1, the greedy next token).")
@click.option("--contrast", "-c", default=None,
              help="Second token: text (' Rome'), topK or runner-up; alone it implies --loss diff (default for diff/normdiff: runner-up).")
@click.option("--loss", "-l", default=None,
              help=f"One of {', '.join(LOSSES)} (default: diff, against the runner-up token unless --contrast names one).")
@click.option("--generate", "-g", default=0, show_default=True, type=click.IntRange(min=0), help="Generate N tokens greedily and explain each one.")
@click.option("--start-layer", default=0, show_default=True, type=click.IntRange(min=0), help="First layer of the rollout product.")
@click.option("--top", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="How many top tokens to print.")
@click.option("--hide-first", is_flag=True, help="Leave the first token (the attention sink) out of the colours and the top list (not out of the maths).")
@click.option("--out", "-o", default="attngrad-lm", show_default=True, type=OutDir(), help="Output folder.")
@click.option("--batch-size", "-b", default=16, show_default=True, type=click.IntRange(min=1), help="Prompts per forward/backward pass.")
@click.option("--color/--no-color", default=None, help="Colour the terminal view (default: when printing to a terminal).")
@click.option("--streaming", type=click.Choice(["auto", "always", "never", "layers"]), default="auto", show_default=True,
              help="Long prompts in bounded memory: always = fused attention, each layer's maps recomputed from its "
                   "queries and keys when its gradient arrives (one layer's maps at a time); layers = each whole layer "
                   "recomputed (the least memory); never = keep every layer's maps; auto: the first that fits.")
def explain_lm(prompts, model, device, methods, target, contrast, loss, generate, start_layer, top, hide_first, out,
               batch_size, color, streaming, method_options):
    """Explain the next token after each of PROMPTS token by token (red: supports, blue: opposes).

    By default attnlrp explains the target against the runner-up token (loss diff), the best on the
    evidence test (docs/results/lm-peers.md); --contrast ' Rome' names the other token, --loss logit
    explains the target's logit alone. Writes OUT/explanation.html
    (and OUT/generation.html with --generate) and OUT/scores.json.

    Integrated gradients (-m ig) from the pad token's embedding with the first token kept, 64
    Gauss-Legendre nodes unless --method-option says otherwise (ig.layer, ig.baseline, ig.steps,
    ig.rule, ig.batch_size, ig.keep_first; docs/lm.md).
    """
    from ..lm import LMExplainer, save_generation_html, save_html, save_json, signed, terminal
    from ..lm.display import describe
    from ..lm.explainer import MultiTokenWarning, default_loss

    check_loss_is_read(methods, loss, contrast)  # as the user gave them, before the default below
    loss, contrast = default_loss(loss, contrast)  # "this rather than that": the contrast given, else the runner-up
    if generate and len(prompts) != 1:
        raise AttngradError(f"--generate explains one prompt's continuation; {len(prompts)} prompts were given")
    if generate and len(methods) != 1:
        raise AttngradError("--generate takes one method (for example --method complete)")
    if generate and target is not None:
        raise AttngradError("--generate explains the generated tokens themselves; leave out --target")
    explainer = LMExplainer.from_pretrained(model, device=device,
                                            streaming={"auto": None, "always": True, "never": False, "layers": "layers"}[streaming])
    explainer.batch_size = batch_size
    if click.get_current_context().get_parameter_source("methods") == click.core.ParameterSource.DEFAULT:
        kind = getattr(explainer.adapter.model.config, "model_type", None)
        if streaming in ("always", "layers"):  # relevance propagation cannot stream: the paper's map can
            methods = [FALLBACK_METHOD]
            click.echo(f"attngrad: note: --streaming {streaming}: explaining with {FALLBACK_METHOD} "
                       f"({DEFAULT_METHOD} cannot stream; choose with -m)", err=True)
        elif default_method(kind) != DEFAULT_METHOD:
            methods = [default_method(kind)]
            click.echo(f"attngrad: note: {DEFAULT_METHOD} does not know the {kind!r} family; explaining with "
                       f"{FALLBACK_METHOD} (choose with -m)", err=True)
    if hide_first and not generate:
        short = [p for p in prompts if len(explainer.adapter.tokenize(p)) < 2]
        if short:
            raise AttngradError(f"--hide-first leaves the first token out, and {short[0]!r} has only one token: "
                                "nothing would be left to show; drop --hide-first or give a longer prompt")
    colour = sys.stdout.isatty() if color is None else color
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MultiTokenWarning)
        if generate:
            gen = explainer.explain_generation(prompts[0], max_new_tokens=generate, method=methods[0], loss=loss,
                                               contrast=contrast, start_layer=start_layer,
                                               options=method_options.get(methods[0]))
            results = []
        else:
            gen = None
            results = list(explainer.explain_methods(list(prompts), methods, target=target, contrast=contrast,
                                                     loss=loss, start_layer=start_layer,
                                                     options=method_options).values())
    for w in caught:
        click.echo(f"attngrad: warning: {w.message}", err=True)
    for res in results:
        for i in range(len(res.tokens)):
            click.echo(f"[{describe(res, i)}]")
            scores = res.scores(i).tolist()
            click.echo("  " + terminal(res.tokens[i], scores, colour=colour, hide_first=hide_first)
                       + f"  -> {res.target_text[i]!r}")
            shown = ", ".join(f"{t!r} {s:+.3g}" for _, t, s in res.top(i, top, skip_first=hide_first))
            kind = "signed" if signed(res.method) else "magnitude"
            click.echo(f"  top ({kind}): {shown}")
    if gen is not None:
        click.echo(f"[{gen.method}, {gen.loss}] {gen.prompt}" + click.style(gen.text, bold=True) if colour
                   else f"[{gen.method}, {gen.loss}] {gen.prompt}|{gen.text}")
        for k, token in enumerate(gen.generated):
            pairs = gen.token_scores(k)
            ranked = sorted(enumerate(pairs), key=lambda p: -p[1][1])
            ranked = [p for p in ranked if not (hide_first and p[0] == 0)][:top]
            click.echo(f"  {token!r} <- " + ", ".join(f"{t!r} {s:+.3g}" for _, (t, s) in ranked))
    folder = out_dir(out)
    written = []
    if results:
        written.append(save_html(folder / "explanation.html", results, hide_first=hide_first))
    if gen is not None:
        written.append(save_generation_html(folder / "generation.html", gen, hide_first=hide_first))
    written.append(save_json(folder / "scores.json", results, gen))
    if method_options:
        written.append(write_method_options(folder, methods, method_options))
    click.echo("wrote " + " and ".join(str(p) for p in written))
