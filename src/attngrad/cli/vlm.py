"""Command ``explain-vlm``: why a LLaVA-style vision-language model says its next word (:mod:`attngrad.vlm`)."""

from __future__ import annotations

import warnings

import click
import numpy as np

from ..errors import AttngradError, MultiTokenWarning
from ..losses import LOSSES, check_loss_is_read
from . import main
from .common import IMAGE, OutDir, device_option, methods_option, model_option, out_dir, safe_name

_METHODS = ("complete", "gae", "absolute", "rollout", "raw_attention", "grad_x_input", "random")


@main.command("explain-vlm")
@click.argument("image", type=IMAGE)
@click.argument("prompt")
@model_option(default=None, help="LlavaForConditionalGeneration, Idefics3 (SmolVLM) or Qwen2-VL folder or Hub name "
              "(default: attngrad's LLaVA stand-in, ViT-Ti + SmolLM2 + a projector trained here; docs/vlm.md).")
@device_option()
@methods_option("--method", "-m", "methods", registry=_METHODS, kind="a vision-language model")
@click.option("--reading", "-r", type=click.Choice(["language", "vision", "both"]), default="both", show_default=True,
              help="language: the rollout over the LM's layers at the image tokens; vision: carried on through the "
                   "vision encoder's rollout to its patches.")
@click.option("--target", "-t", default=None, help="Token explained: text (' zebra': its first token) or topK (default: top1).")
@click.option("--contrast", "-c", default=None, help="Second token (' horse') for diff / normdiff; alone it implies --loss diff.")
@click.option("--loss", "-l", default=None, help=f"One of {', '.join(LOSSES)} (default: logit; diff with --contrast).")
@click.option("--generate", "-g", default=0, show_default=True, type=click.IntRange(min=0, max=64),
              help="Generate N tokens greedily and explain each one (one method, one reading).")
@click.option("--out", "-o", default="attngrad-vlm", show_default=True, type=OutDir(), help="Output folder.")
def explain_vlm(image, prompt, model, device, methods, reading, target, contrast, loss, generate, out):
    """Explain the next token a vision-language model gives after IMAGE and PROMPT, over the image's patches
    (red: supports, blue: opposes) and the prompt's words. Writes OUT/explanation.png, .html, .npy maps and scores.json.
    """
    from ..io import load_image
    from ..vlm import VLMExplainer
    from ..vlm.display import figure, generation_figure, generation_html, save_json, to_html

    if not prompt.strip():
        raise AttngradError("the prompt is empty; ask a question (\"What animal is this?\")")
    check_loss_is_read(methods, loss, contrast)
    if loss is None:
        loss = "logit" if contrast is None else "diff"
    readings = ["language", "vision"] if reading == "both" else [reading]
    if generate and (len(methods) != 1 or len(readings) != 1):
        raise AttngradError("--generate takes one method and one reading (for example -m complete -r language)")
    if generate and target is not None:
        raise AttngradError("--generate explains the generated tokens themselves; leave out --target")
    explainer = VLMExplainer.from_pretrained(model, device=device)
    picture = load_image(image)
    shown = explainer.preprocess.geometry(picture) if explainer.preprocess is not None else picture
    if generate:
        res = explainer.explain_generation(picture, prompt, max_new_tokens=generate, method=methods[0], loss=loss,
                                           contrast=contrast, reading=readings[0])
        results = [res]
        n = len(res.target_text)
        stopped = "" if n == generate else f" ({n} of {generate}: it stopped at the end token)"
        click.echo(f"[{res.method}, {res.reading}] answer: {' + '.join(repr(t) for t in res.target_text)}{stopped}")
        fig = generation_figure(shown, res)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MultiTokenWarning)
            results = list(explainer.explain_methods(picture, prompt, methods, readings=readings, target=target,
                                                     contrast=contrast, loss=loss).values())
        for message in dict.fromkeys(str(w.message) for w in caught):
            click.echo(f"attngrad: warning: {message}", err=True)
        first = results[0]
        said = f"{first.target_text[0]!r}" + ("" if first.contrasts is None else
                                             f" rather than {explainer.adapter.token_text([int(first.contrasts[0])])[0]!r}")
        click.echo(f"explaining {said} (loss {first.loss}; p = {first.logits[0].softmax(-1)[first.targets[0]]:.3f})")
        for res in results:
            if res.reading == readings[0]:  # the prompt tokens' scores are the same in both readings
                top = ", ".join(f"{t!r} {s:+.3g}" for _, t, s in res.top_tokens(0, 5))
                click.echo(f"  {res.method}: top prompt tokens {top}")
        fig = figure(shown, results)
    folder = out_dir(out)
    fig.savefig(folder / "explanation.png", dpi=110, bbox_inches="tight")
    # the page embeds the same figure (drawn once) and closes it
    page = generation_html(shown, results[0], prompt, fig=fig) if generate else to_html(shown, results, prompt, fig=fig)
    (folder / "explanation.html").write_text(page)
    for res in results:
        np.save(folder / f"{safe_name(res.method)}_{res.reading}.npy", res.maps.numpy())
    save_json(folder / "scores.json", results, {"prompt": prompt, "image": str(image)})
    click.echo(f"wrote {folder}/: explanation.png, explanation.html, {len(results)} .npy "
               f"map{'s' if len(results) > 1 else ''} and scores.json")
