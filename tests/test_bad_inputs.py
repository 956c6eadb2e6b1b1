"""Every command with a table of bad values for every numeric and path option.

Each row must end the same way: exit code 2, exactly ONE line on stderr and it starts with
``attngrad: error:``, no traceback, and no output folder left behind (the test runs in an
empty folder and checks it is still empty afterwards, apart from the fixtures).

Rows run in-process (click's runner) on a tiny random model saved as a Hugging Face folder,
so a row costs milliseconds when click's checks catch it and a fraction of a second when the
model must load first. Two checks run the real entry point in a subprocess.

Rows for mistakes that another part of the project refuses (the core: devices, timm weights,
contrast == target; the evaluation: everything under ``evaluate``) are marked
``xfail(reason="owned-by-<part>")`` until that part lands; ``strict=False`` so that they
pass silently once fixed (search for ``owned-by-`` to find them).

:func:`test_table_covers_every_command_and_option` fails when a command or an option has no
row: a new command needs its rows here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from attngrad.cli import main

from .conftest import tiny_vit_config


def core(reason: str = ""):
    return ()


EVAL = ()

# Placeholders, filled in by the test: {MODEL} tiny model folder, {FILE} an existing text file,
# {DIR} an existing empty folder, {MISSING} a path that does not exist, {NEW} a new output path.
MODEL_ARGS = ["--model", "{MODEL}"]
IMAGE = "el1"  # the shipped sample, found by its short name


def _model_rows(command: str, *args: str) -> list:
    """The --model / --checkpoint / --device rows of a command that loads an image model."""
    base = [command, *args]
    return [
        pytest.param([*base, "--model", "{FILE}"], "not a Hugging Face model folder", id=f"{command}-model-file"),
        pytest.param([*base, "--model", "{DIR}"], "config.json", id=f"{command}-model-empty-dir"),
        pytest.param([*base, "--model", "{MISSING}"], "folder", id=f"{command}-model-missing", marks=core("missing folder")),
        pytest.param([*base, "--model", "timm:no_such_vit"], "timm", id=f"{command}-timm-unknown"),
        pytest.param([*base, "--model", "timm:vit_tiny_patch16_224", "--checkpoint", "{FILE}"], "checkpoint",
                     id=f"{command}-timm-bad-checkpoint", marks=core("timm bad checkpoint")),
        pytest.param([*base, "--checkpoint", "{MISSING}"], "--checkpoint", id=f"{command}-checkpoint-missing"),
        pytest.param([*base, "--checkpoint", "{DIR}"], "--checkpoint", id=f"{command}-checkpoint-dir"),
        pytest.param([*base, *MODEL_ARGS, "--device", "banana"], "device", id=f"{command}-device-banana",
                     marks=core("bad --device")),
        pytest.param([*base, *MODEL_ARGS, "--device", "cuda:7"], "cuda", id=f"{command}-device-cuda7",
                     marks=core("bad --device")),
    ]


def _out_rows(command: str, *args: str) -> list:
    base = [command, *args]
    return [
        pytest.param([*base, *MODEL_ARGS, "--out", "{FILE}"], "is an existing file", id=f"{command}-out-file"),
        pytest.param([*base, *MODEL_ARGS, "--out", "{FILE}/sub"], "is a file", id=f"{command}-out-under-file"),
        pytest.param([*base, *MODEL_ARGS, "--out", ""], "empty", id=f"{command}-out-empty"),
    ]


def _count_rows(command: str, option: str, *args: str, bad=("0", "-1", "abc"), message=None) -> list:
    return [
        pytest.param([command, *args, *MODEL_ARGS, option, value], message or option,
                     id=f"{command}{option}={value or 'empty'}")  # fmt: skip
        for value in bad
    ]


def _method_rows(command: str, option: str, *args: str, model=True) -> list:
    extra = MODEL_ARGS if model else []
    return [
        pytest.param([command, *args, *extra, option, ""], "no method", id=f"{command}{option}=empty"),
        pytest.param([command, *args, *extra, option, ","], "no method", id=f"{command}{option}=comma"),
        pytest.param([command, *args, *extra, option, "gradcam"], "unknown method 'gradcam'", id=f"{command}{option}=unknown"),
    ]


def _option_rows(command: str, method_flag: str, *args: str, model=True) -> list:
    """--method-option rows: bad syntax, an option the method lacks, a bad value, a method not run."""
    base = [command, *args, *(MODEL_ARGS if model else []), method_flag, "ig"]
    return [
        pytest.param([*base, "--method-option", "ig"], "METHOD.OPTION=VALUE", id=f"{command}-method-option-syntax"),
        pytest.param([*base, "--method-option", "ig.stepz=3"], "no option 'stepz'", id=f"{command}-method-option-unknown"),
        pytest.param([*base, "--method-option", "ig.steps=0"], "steps", id=f"{command}-method-option-range"),
        pytest.param([*base, "--method-option", "ig.steps=x"], "whole number", id=f"{command}-method-option-type"),
        pytest.param([*base, "--method-option", "gae.start_layer=1"], "not among the methods",
                     id=f"{command}-method-option-not-run"),
    ]


ROWS = [
    # ------------------------------------------------------------------ top level
    pytest.param(["--bogus"], "no such option", id="main-unknown-option"),
    pytest.param(["no-such-command"], "no such command", id="main-unknown-command"),
    # ------------------------------------------------------------------ explain
    pytest.param(["explain", *MODEL_ARGS], "missing argument", id="explain-no-image"),
    pytest.param(["explain", "{MISSING}", *MODEL_ARGS], "no such file", id="explain-image-missing"),
    pytest.param(["explain", "{DIR}", *MODEL_ARGS], "is a directory", id="explain-image-dir"),
    pytest.param(["explain", "{FILE}", *MODEL_ARGS], "not an image", id="explain-image-not-image"),
    *_count_rows("explain", "--batch-size", IMAGE),
    *_count_rows("explain", "--start-layer", IMAGE, bad=("-1", "abc")),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--start-layer", "9"], "start_layer 9 is out of range", id="explain-start-layer-9"),
    *_method_rows("explain", "--method", IMAGE),
    *_option_rows("explain", "--method", IMAGE),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-t", "zebar"], "unknown class 'zebar'", id="explain-target-unknown"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-t", "99"], "out of range", id="explain-target-index"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-t", ","], "names no class", id="explain-target-empty"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-t", "top0"], "k must be between", id="explain-target-top0"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-l", "kl"], "unknown loss 'kl'", id="explain-loss-unknown"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-l", "normdiff"], "contrast", id="explain-loss-needs-contrast"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-l", "normdiff", "-t", "zebra", "-c", "zebra"], "contrast",
                 id="explain-contrast-equals-target", marks=core("contrast == target")),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-t", "zebra", "-c", "dog"], "a contrast class needs a two-class loss",
                 id="explain-contrast-with-logit"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--token", "banana"], "unknown token", id="explain-token"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--guide", "{MISSING}.jpg"], "no such file", id="explain-guide-missing"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--guide", "{DIR}"], "directory", id="explain-guide-dir"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--gallery", "{MISSING}"], "--gallery", id="explain-gallery-missing"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--gallery", "{FILE}"], "--gallery", id="explain-gallery-file"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "--layout", "diagonal"], "--layout", id="explain-layout"),
    *_out_rows("explain", IMAGE),
    *_model_rows("explain", IMAGE),
    # ------------------------------------------------------------------ predict
    pytest.param(["predict", *MODEL_ARGS], "missing argument", id="predict-no-image"),
    pytest.param(["predict", "{MISSING}", *MODEL_ARGS], "no such file", id="predict-image-missing"),
    pytest.param(["predict", "{DIR}", *MODEL_ARGS], "is a directory", id="predict-image-dir"),
    *_count_rows("predict", "-k", IMAGE),
    *_model_rows("predict", IMAGE),
    # (only the two quick commands: until the core refuses them, random weights run the whole command)
    *[pytest.param([c, IMAGE, "--model", "timm:vit_tiny_patch16_224"], "checkpoint", id=f"{c}-timm-random-weights",
                   marks=core("timm without --checkpoint")) for c in ("explain", "predict")],
    # ------------------------------------------------------------------ classes (configuration only)
    pytest.param(["classes", "--model", "{MISSING}"], "no such model folder", id="classes-model-missing"),
    pytest.param(["classes", "--model", "{FILE}"], "is a file", id="classes-model-file"),
    pytest.param(["classes", "--model", "{DIR}"], "no config.json", id="classes-model-empty-dir"),
    pytest.param(["classes", "--model", "timm:no_such_vit"], "timm has no model", id="classes-timm-unknown"),
    # ------------------------------------------------------------------ compare
    pytest.param(["compare", "{MISSING}", *MODEL_ARGS], "no such file", id="compare-image-missing"),
    pytest.param(["compare", "{DIR}", *MODEL_ARGS], "is a folder", id="compare-image-dir"),
    pytest.param(["compare", IMAGE, *MODEL_ARGS, "-t", ","], "at least one target", id="compare-targets-empty"),
    pytest.param(["compare", IMAGE, *MODEL_ARGS, "-t", "zebra,zebar"], "unknown class 'zebar'", id="compare-targets-unknown"),
    *_method_rows("compare", "--methods", IMAGE),
    *_option_rows("compare", "--methods", IMAGE),
    pytest.param(["compare", IMAGE, *MODEL_ARGS, "-l", "kl"], "unknown loss", id="compare-loss"),
    *_out_rows("compare", IMAGE),
    *_model_rows("compare", IMAGE),
    # ------------------------------------------------------------------ demo
    pytest.param(["demo", *MODEL_ARGS], "demo explains ImageNet classes this model does not have ('bull mastiff'",
                 id="demo-not-imagenet"),  # was: el1 written, then 'unknown class' half-way
    *_out_rows("demo"),
    *_model_rows("demo"),
    pytest.param(["demo", *MODEL_ARGS, "--multiclass", "{MISSING}"], "--multiclass", id="demo-multiclass-missing"),
    pytest.param(["demo", *MODEL_ARGS, "--multiclass", "{FILE}"], "--multiclass", id="demo-multiclass-file"),
    # ------------------------------------------------------------------ detail
    pytest.param(["detail", "{MISSING}", *MODEL_ARGS], "no such file", id="detail-image-missing"),
    *_count_rows("detail", "-k", IMAGE, bad=("1", "0", "-1", "abc")),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "-k", "50"], "k must be between 2 and 5", id="detail-k-too-large"),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "-t", "zebar"], "unknown class", id="detail-target"),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "-c", ","], "names no class", id="detail-contrast-empty"),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "-t", "zebra", "-c", "zebra"], "contrast equals the target", id="detail-contrast-target"),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "-l", "logit"], "compares two classes", id="detail-loss"),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "--gallery", "{MISSING}"], "--gallery", id="detail-gallery-missing"),
    pytest.param(["detail", IMAGE, *MODEL_ARGS, "--gallery", "{FILE}"], "--gallery", id="detail-gallery-file"),
    *_out_rows("detail", IMAGE),
    *_model_rows("detail", IMAGE),
    # ------------------------------------------------------------------ transfer
    pytest.param(["transfer", "{MISSING}", *MODEL_ARGS], "no such file", id="transfer-image-missing"),
    *_count_rows("transfer", "--steps", IMAGE),
    *_count_rows("transfer", "--lr", IMAGE),
    pytest.param(["transfer", IMAGE, *MODEL_ARGS, "--optimizer", "rmsprop"], "--optimizer", id="transfer-optimizer"),
    pytest.param(["transfer", IMAGE, *MODEL_ARGS, "-t", "zebar"], "unknown class", id="transfer-target"),
    pytest.param(["transfer", IMAGE, *MODEL_ARGS, "-t", "zebra", "--opposing", "zebra"], "equals the target", id="transfer-opposing"),
    *_out_rows("transfer", IMAGE),
    *_model_rows("transfer", IMAGE),
    # ------------------------------------------------------------------ rewrite
    pytest.param(["rewrite", "{MISSING}", "--to", "zebra", *MODEL_ARGS], "no such file", id="rewrite-image-missing"),
    pytest.param(["rewrite", "{DIR}", "--to", "zebra", *MODEL_ARGS], "no image files", id="rewrite-empty-folder"),
    pytest.param(["rewrite", IMAGE, *MODEL_ARGS], "--to", id="rewrite-no-to"),
    pytest.param(["rewrite", IMAGE, "--to", "zebar", *MODEL_ARGS], "unknown class", id="rewrite-to-unknown"),
    pytest.param(["rewrite", IMAGE, "--to", "zebra", "--from", "zebar", *MODEL_ARGS], "unknown class", id="rewrite-from-unknown"),
    *_count_rows("rewrite", "--eps", IMAGE, "--to", "zebra", bad=("0", "-1", "300", "abc")),
    *_count_rows("rewrite", "--steps", IMAGE, "--to", "zebra"),
    *_count_rows("rewrite", "--probability", IMAGE, "--to", "zebra", bad=("1.5", "-0.1", "abc")),
    pytest.param(["rewrite", IMAGE, "--to", "zebra", *MODEL_ARGS, "--loss", "bogus"], "loss", id="rewrite-loss"),
    *_count_rows("rewrite", "--limit", IMAGE, "--to", "zebra"),
    *_count_rows("rewrite", "--seed", IMAGE, "--to", "zebra", bad=("-1", "abc")),
    *_count_rows("rewrite", "--batch-size", IMAGE, "--to", "zebra"),
    *_out_rows("rewrite", IMAGE, "--to", "zebra"),
    *_model_rows("rewrite", IMAGE, "--to", "zebra"),
    # ------------------------------------------------------------------ reproduce
    pytest.param(["reproduce", *MODEL_ARGS], "reproduce explains ImageNet classes this model does not have",
                 id="reproduce-not-imagenet"),  # was: single_class.png written, then 'unknown class'
    pytest.param(["reproduce", *MODEL_ARGS, "--gallery", "{MISSING}"], "--gallery", id="reproduce-gallery-missing"),
    pytest.param(["reproduce", *MODEL_ARGS, "--gallery", "{FILE}"], "--gallery", id="reproduce-gallery-file"),
    *_count_rows("reproduce", "--batch-images", bad=("-1", "abc")),
    *_out_rows("reproduce"),
    *_model_rows("reproduce"),
    # ------------------------------------------------------------------ serve (every row fails before the server starts)
    *_count_rows("serve", "--port", bad=("0", "-1", "70000", "abc")),
    *_count_rows("serve", "--max-upload-mb", bad=("0", "-1", "abc")),
    *_count_rows("serve", "--queue-size", bad=("0", "-1", "abc")),
    pytest.param(["serve", "--lm", "{FILE}"], "--lm", id="serve-lm-file"),
    pytest.param(["serve", "--host", "bogus.invalid", "--no-lm"], "cannot resolve", id="serve-host-bogus"),
    pytest.param(["compare", IMAGE, *MODEL_ARGS, "-l", "normdiff"], "needs a contrast class", id="compare-loss-normdiff"),
    pytest.param(["evaluate", "perturbation", "--data", "{DATA}", "--out", "{NEW}", *MODEL_ARGS, "--guide-region", "original"],
                 "needs --guide", id="evaluate-perturbation-guide-region-without-guide"),
    pytest.param(["serve", "--lm", "{DIR}"], "not a Hugging Face model folder", id="serve-lm-empty-dir"),
    pytest.param(["serve", "--vlm-model", "{DIR}", "--no-lm"], "not a Hugging Face model folder", id="serve-vlm-model-empty-dir"),
    pytest.param(["serve", "--no-lm", "--lm", "{DIR}"], "contradict", id="serve-lm-and-no-lm"),
    *_model_rows("serve"),
    # ------------------------------------------------------------------ explain-text / text-deletion (parse-time checks)
    pytest.param(["explain-text"], "missing argument", id="explain-text-no-text"),
    *[pytest.param(["explain-text", "a cat", "-b", v], "--batch-size", id=f"explain-text-batch-size={v}") for v in ("0", "-1", "abc")],
    *[pytest.param(["explain-text", "a cat", "--start-layer", v], "--start-layer", id=f"explain-text-start-layer={v}")
      for v in ("-1", "abc")],
    *_method_rows("explain-text", "--method", "a cat", model=False),
    *_option_rows("explain-text", "--method", "a cat", model=False),
    pytest.param(["explain-text", "a cat", "--out", "{FILE}"], "is an existing file", id="explain-text-out-file"),
    # a text whose every token is [UNK] (emoji for a WordPiece vocabulary) would be explained as [UNK]
    pytest.param(["explain-text", "\U0001F993\U0001F993", "--against", "a dog"], "no word this model knows",
                 id="explain-text-all-unknown"),
    pytest.param(["explain-clip", IMAGE, "-t", "\U0001F993\U0001F993"], "no word this model knows",
                 id="explain-clip-all-unknown"),
    pytest.param(["explain-text", "a cat", "--model", "{DIR}"], "config.json", id="explain-text-model-empty-dir"),
    pytest.param(["explain-text", "a cat", "--model", "{MISSING}"], "{MISSING}", id="explain-text-model-missing",
                 marks=core("missing folder message, text loader: attngrad/text/model.py")),
    pytest.param(["explain-text", "a cat", "--against", "a dog", "--device", "banana"], "device", id="explain-text-device",
                 marks=core("bad --device")),
    *[pytest.param(["text-deletion", "--pairs", v], "--pairs", id=f"text-deletion-pairs={v}") for v in ("-1", "abc")],
    *[pytest.param(["text-deletion", "-b", v], "--batch-size", id=f"text-deletion-batch-size={v}") for v in ("0", "-1", "abc")],
    *_method_rows("text-deletion", "--method", model=False),
    pytest.param(["text-deletion", "--out", "{FILE}"], "is an existing file", id="text-deletion-out-file"),
    pytest.param(["text-deletion", "--model", "{DIR}"], "config.json", id="text-deletion-model-empty-dir"),
    pytest.param(["text-deletion", "--pairs", "1", "--device", "banana"], "device", id="text-deletion-device",
                 marks=core("bad --device")),
    # ------------------------------------------------------------------ explain-lm, explain-clip, explain-seq2seq
    *[pytest.param(["explain-lm", "Hi", "--model", "{MODEL}", opt, v], opt, id=f"explain-lm{opt}={v}")
      for opt, values in (("--batch-size", ("0", "-1", "abc")), ("--generate", ("-1", "abc")), ("--top", ("0", "abc")),
                          ("--start-layer", ("-1", "abc")), ("--streaming", ("sometimes",)))
      for v in values],
    *_method_rows("explain-lm", "--method", "Hi", model=False),
    *_option_rows("explain-lm", "--method", "Hi", model=False),
    pytest.param(["explain-lm", "Hi", "-m", "ig", "--method-option", "ig.baseline=blur"], "pixels",
                 id="explain-lm-method-option-blur"),
    pytest.param(["explain-lm", "Hi", "--out", "{FILE}"], "is an existing file", id="explain-lm-out-file"),
    # a contrast or loss that no chosen method reads (attention alone, or noise) would label identical maps
    pytest.param(["explain-lm", "Hi", "-m", "rollout", "-c", " Rome"], "neither the loss nor a contrast",
                 id="explain-lm-contrast-unread"),
    pytest.param(["explain-vlm", "el1", "Hi", "-m", "rollout,raw_attention", "-c", " horse"],
                 "neither the loss nor a contrast", id="explain-vlm-contrast-unread"),
    pytest.param(["explain", IMAGE, *MODEL_ARGS, "-m", "rollout,random", "-t", "zebra", "-c", "cat", "-l", "diff"],
                 "neither the loss nor a contrast", id="explain-contrast-unread"),
    pytest.param(["explain-lm", "Hi", "--model", "{MISSING}"], "folder", id="explain-lm-model-missing"),
    pytest.param(["explain-lm", "Hi", "--model", "{DIR}", "--device", "banana"], "device", id="explain-lm-device"),
    pytest.param(["explain-clip", "{MISSING}", "-t", "a zebra"], "no such file", id="explain-clip-image-missing"),
    pytest.param(["explain-clip", IMAGE, "-t", "a zebra", "--tower", "both-ways"], "--tower", id="explain-clip-tower"),
    *[pytest.param(["explain-clip", IMAGE, "-t", "a zebra", "--start-layer", v], "--start-layer", id=f"explain-clip-start={v}")
      for v in ("-1", "abc")],
    *_method_rows("explain-clip", "--method", IMAGE, "-t", "a zebra", model=False)[:2],
    pytest.param(["explain-clip", IMAGE, "-t", "a zebra", "--method", "gradcam"], "'gradcam'", id="explain-clip-method-unknown"),
    pytest.param(["explain-clip", IMAGE, "-t", "a zebra", "--out", "{FILE}"], "is an existing file", id="explain-clip-out-file"),
    pytest.param(["explain-clip", IMAGE, "-t", "a zebra", "--model", "{MISSING}"], "folder", id="explain-clip-model-missing"),
    pytest.param(["explain-clip", IMAGE, "-t", "a zebra", "--model", "{DIR}", "--device", "banana"], "device",
                 id="explain-clip-device"),
    pytest.param(["explain-seq2seq", "a cat", "--model", "{MISSING}"], "folder", id="explain-seq2seq-model-missing"),
    pytest.param(["explain-seq2seq", "a cat", "-c", "die"], "a contrast token needs a two-token loss",
                 id="explain-seq2seq-contrast-with-logit"),
    pytest.param(["explain-seq2seq", "a cat", "-t", " "], "--target is empty", id="explain-seq2seq-target-empty"),
    pytest.param(["explain-seq2seq", "a cat", "--model", "{DIR}"], "config.json", id="explain-seq2seq-model-empty-dir"),
    pytest.param(["explain-seq2seq", "a cat", "--model", "{DIR}", "--position", "sideways"], "--position",
                 id="explain-seq2seq-position"),
    *_method_rows("explain-seq2seq", "--method", "a cat", "--model", "{DIR}", model=False),
    pytest.param(["explain-seq2seq", "a cat", "--model", "{DIR}", "--out", "{FILE}"], "is an existing file",
                 id="explain-seq2seq-out-file"),
    pytest.param(["explain-seq2seq", "a cat", "--model", "{DIR}", "--device", "banana"], "device", id="explain-seq2seq-device"),
    pytest.param(["explain-vlm", "{MISSING}", "What animal?"], "no such file", id="explain-vlm-image-missing"),
    pytest.param(["explain-vlm", IMAGE, " "], "prompt is empty", id="explain-vlm-empty-prompt"),
    pytest.param(["explain-vlm", IMAGE, "What?", "--model", "{MISSING}"], "folder", id="explain-vlm-model-missing"),
    pytest.param(["explain-vlm", IMAGE, "What?", "--model", "{DIR}"], "config.json", id="explain-vlm-model-empty-dir"),
    pytest.param(["explain-vlm", IMAGE, "What?", "--model", "{MODEL}"], "attngrad explains LlavaForConditionalGeneration",
                 id="explain-vlm-not-llava"),
    pytest.param(["explain-vlm", IMAGE, "What?", "--model", "{DIR}", "--device", "banana"], "device", id="explain-vlm-device"),
    pytest.param(["explain-vlm", IMAGE, "What?", "--reading", "sideways"], "--reading", id="explain-vlm-reading"),
    *[pytest.param(["explain-vlm", IMAGE, "What?", "--generate", v], "--generate", id=f"explain-vlm-generate={v}")
      for v in ("-1", "65", "abc")],
    pytest.param(["explain-vlm", IMAGE, "What?", "--generate", "2", "-m", "complete,gae"], "one method",
                 id="explain-vlm-generate-two-methods"),
    *_method_rows("explain-vlm", "--method", IMAGE, "What?", model=False),
    pytest.param(["explain-vlm", IMAGE, "What?", "--out", "{FILE}"], "is an existing file", id="explain-vlm-out-file"),
    # ------------------------------------------------------------------ evaluate (helper eval's)
    *[
        pytest.param(["evaluate", sub, "--data", "{DATA}", "--out", "{NEW}", *MODEL_ARGS, *bad], message,
                     id=f"evaluate-{sub}{'=' .join(bad)}", marks=EVAL)
        for sub in ("perturbation", "sanity")
        for bad, message in [
            (["--limit", "0"], "--limit"), (["--limit", "-1"], "--limit"), (["--batch-size", "0"], "--batch-size"),
            (["--methods", ","], "method"), (["--out", "{FILE}"], "file"), (["--data", "{MISSING}"], "{MISSING}"),
            (["--labels", "{MISSING}"], "{MISSING}"), (["--image-labels", "{MISSING}"], "{MISSING}"),
            (["--explain", "bogus"], "--explain"), (["--device", "banana"], "device"),
            (["--checkpoint", "{MISSING}"], "--checkpoint"), (["--model", "{MISSING}"], "folder"),
        ]
    ],
    *[
        pytest.param(["evaluate", "perturbation", "--data", "{DATA}", "--out", "{NEW}", *MODEL_ARGS, *bad], message,
                     id=f"evaluate-perturbation{'='.join(bad)}", marks=EVAL)
        for bad, message in [
            (["--eval-batch-size", "0"], "--eval-batch-size"), (["--workers", "-1"], "--workers"),
            (["--methods", "ig", "--method-option", "ig.steps=0"], "steps"),
            (["--methods", "ig", "--method-option", "ig.stepz=1"], "no option 'stepz'"),
            (["--methods", "random", "--method-option", "ig.steps=2"], "not among the methods"),
            (["--guide", "{MISSING}"], "{MISSING}"), (["--resume"], "resume"), (["--every", "0"], "--every"),
            (["--guide", "{MISSING}.jpg"], "no such file"), (["--guide", "zebar"], "unknown class"),
            (["--gallery", "{DIR}"], "needs --guide with a class name"),
            (["--guide", "{FILE}", "--gallery", "{DIR}"], "needs --guide with a class name"),
            (["--guide", "zebra", "--gallery", "{MISSING}"], "--gallery"),
            (["--guide-region", "middle"], "--guide-region"),
        ]
    ],
    *[
        pytest.param(["evaluate", "lm-deletion", "--out", "{NEW}", "--model", "{DIR}", *bad], message,
                     id=f"evaluate-lm-deletion{'='.join(bad)}")
        for bad, message in [
            (["--limit", "0"], "--limit"), (["--limit", "abc"], "--limit"), (["--reviews", "-1"], "--reviews"),
            (["--batch-size", "0"], "--batch-size"), (["--eval-batch-size", "0"], "--eval-batch-size"),
            (["--methods", ","], "method"), (["--methods", "gradcam"], "gradcam"), (["--loss", "kl"], "--loss"),
            (["--out", "{FILE}"], "file"), (["--device", "banana"], "device"), (["--model", "{MISSING}"], "folder"),
        ]
    ],
    *[
        pytest.param(["evaluate", "lm-insertion", "--out", "{NEW}", "--model", "{DIR}", *bad], message,
                     id=f"evaluate-lm-insertion{'='.join(bad)}")
        for bad, message in [
            (["--limit", "0"], "--limit"), (["--reviews", "-1"], "--reviews"), (["--batch-size", "0"], "--batch-size"),
            (["--eval-batch-size", "0"], "--eval-batch-size"), (["--methods", "gradcam"], "gradcam"),
            (["--loss", "kl"], "--loss"), (["--contrast", " Rome"], "contrast"), (["--out", "{FILE}"], "file"),
            (["--device", "banana"], "device"), (["--model", "{MISSING}"], "folder"),
        ]
    ],
    *[
        pytest.param(["evaluate", "lm-evidence", "--out", "{NEW}", "--model", "{DIR}", *bad], message,
                     id=f"evaluate-lm-evidence{'='.join(bad)}")
        for bad, message in [
            (["--prompts", "0"], "--prompts"), (["--candidates", "0"], "--candidates"), (["--seed", "-1"], "--seed"),
            (["--batch-size", "0"], "--batch-size"), (["--methods", "gradcam"], "gradcam"), (["--loss", "kl"], "--loss"),
            (["--contrast", " Rome"], "contrast"), (["--resume"], "resume"),
            (["--loss", "diff", "--contrast", "top1"], "top1 is the answer itself"),
            (["--out", "{FILE}"], "file"), (["--device", "banana"], "device"), (["--model", "{MISSING}"], "folder"),
        ]
    ],
    *[
        pytest.param(["evaluate", "grid", "--data", "{DATA}", "--out", "{NEW}", *MODEL_ARGS, *bad], message,
                     id=f"evaluate-grid{'='.join(bad)}", marks=EVAL)
        for bad, message in [
            (["--n", "1"], "--n"), (["--n", "9"], "--n"), (["--grids", "0"], "--grids"), (["--seed", "-1"], "--seed"),
            (["--min-confidence", "0"], "--min-confidence"), (["--min-confidence", "nan"], "--min-confidence"),
            (["--min-confidence", "1.5"], "--min-confidence"), (["--batch-size", "0"], "--batch-size"),
            (["--limit", "0"], "--limit"), (["--methods", "attnlrp"], "attnlrp"), (["--methods", ","], "method"),
            (["--resume"], "resume"), (["--out", "{FILE}"], "file"), (["--data", "{MISSING}"], "{MISSING}"),
            (["--labels", "{MISSING}"], "{MISSING}"), (["--image-labels", "{MISSING}"], "{MISSING}"),
            (["--checkpoint", "{MISSING}"], "--checkpoint"), (["--device", "banana"], "device"),
            (["--clip", "--methods", "tam"], "CLIP image-tower method"),
            (["--methods", "ig", "--method-option", "ig.rule=simpson"], "unknown rule"),
            (["--methods", "gae", "--method-option", "gae.steps=2"], "no option 'steps'"),
            (["--clip", "--methods", "complete", "--method-option", "complete.start_layer=1"], "--clip"),
        ]
    ],
    *[
        pytest.param(["evaluate", "attribution-error", "--data", "{DATA}", "--out", "{NEW}", *MODEL_ARGS, *bad], message,
                     id=f"evaluate-attribution-error{'='.join(bad)}")
        for bad, message in [
            (["--limit", "0"], "--limit"), (["--batch-size", "0"], "--batch-size"),
            (["--items-per-pass", "0"], "--items-per-pass"), (["--steps", "0"], "--steps"),
            (["--steps", "a,b"], "--steps"), (["--steps", ","], "--steps"), (["--layers", "block:1"], "layer must be"),
            (["--layers", ","], "--layers"), (["--layers", "attention:99"], "out of range"),
            (["--baselines", "noise"], "unknown baseline"), (["--baselines", "blur", "--layers", "attention:0"], "blur"),
            (["--rules", "simpson"], "unknown rule"), (["--prompts", "{FILE}"], "exactly one"),
            (["--data", "{MISSING}"], "{MISSING}"), (["--data", "{DIR}"], "no images"), (["--out", "{FILE}"], "file"),
            (["--device", "banana"], "device"), (["--model", "{MISSING}"], "folder"),
            (["--checkpoint", "{MISSING}"], "--checkpoint"), (["--keep-first"], "needs --prompts"),
        ]
    ],
    pytest.param(["evaluate", "attribution-error", "--prompts", "{MISSING}", "--out", "{NEW}"], "{MISSING}",
                 id="evaluate-attribution-error-prompts-missing"),
    pytest.param(["evaluate", "attribution-error", "--prompts", "{DIR}", "--out", "{NEW}"], "no such file",
                 id="evaluate-attribution-error-prompts-dir"),
    pytest.param(["evaluate", "attribution-error", "--out", "{NEW}"], "exactly one", id="evaluate-attribution-error-none"),
    *[
        pytest.param(["evaluate", "alignment", "--out", "{NEW}", "--model", "{DIR}", *bad], message,
                     id=f"evaluate-alignment{'='.join(bad) or '-model-empty-dir'}")
        for bad, message in [
            ([], "config.json"), (["--sentences", "0"], "--sentences"), (["--seed", "-1"], "--seed"),
            (["--bootstrap", "5"], "--bootstrap"), (["--bootstrap", "1000000000"], "--bootstrap"),  # was: killed, out of memory
            (["--batch-size", "0"], "--batch-size"),
            (["--methods", ","], "method"), (["--methods", "gradcam"], "gradcam"), (["--out", "{FILE}"], "file"),
            (["--device", "banana"], "device"), (["--model", "{MISSING}"], "folder"),
            (["--model", "{MODEL}"], "encoder-decoder"), (["--loss", "kl"], "--loss"),
        ]
    ],
    pytest.param(["evaluate", "sanity", "--data", "{DATA}", "--out", "{NEW}", *MODEL_ARGS, "--seed", "-1"], "--seed",
                 id="evaluate-sanity-seed", marks=EVAL),
    pytest.param(["evaluate", "compare", "{MISSING}", "complete", "gae"], "{MISSING}", id="evaluate-compare-missing",
                 marks=EVAL),
    pytest.param(["evaluate", "compare", "{DIR}", "complete", "gae"], "results", id="evaluate-compare-empty", marks=EVAL),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """The tiny model folder, an existing file and an empty folder, outside the working folder."""
    import torch
    from transformers import ViTForImageClassification

    root = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    ViTForImageClassification(tiny_vit_config()).save_pretrained(root / "tiny")
    (root / "notes.txt").write_text("not an image, not a model, not a checkpoint")
    (root / "empty").mkdir()
    data = root / "data"  # two labelled images for the evaluate rows
    data.mkdir()
    from attngrad.io import find_sample

    for name in ("zebra", "tusker"):
        src = find_sample(name)
        (data / src.name).write_bytes(src.read_bytes())
    return {"MODEL": str(root / "tiny"), "FILE": str(root / "notes.txt"), "DIR": str(root / "empty"),
            "MISSING": str(root / "missing"), "DATA": str(data)}  # fmt: skip


def _fill(args: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("args, message", ROWS)
def test_bad_input_is_one_line_exit_2_nothing_left(fixtures, tmp_path, monkeypatch, args, message):
    try:  # a row that is not refused must never start a server
        import uvicorn

        monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started a server"))
    except ImportError:
        pass
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default output folders would appear here
    values = {**fixtures, "NEW": str(tmp_path / "new" / "out")}
    result = CliRunner().invoke(main, _fill(args, values))
    stderr = result.stderr.strip()
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError)), result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: "), stderr
    assert message.format(**values).lower() in lines[0].lower(), lines[0]
    assert "repo id" not in lines[0].lower(), lines[0]  # a path is never talked about as a Hub name
    assert list(work.iterdir()) == [], f"left behind: {list(work.iterdir())}"
    assert not (tmp_path / "new").exists()
    assert [p.name for p in Path(fixtures["DIR"]).iterdir()] == []


# ---------------------------------------------------------------------- the table covers every command


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


#: Options with no value that can be wrong (free text, flags checked elsewhere).
NO_BAD_VALUE = {"--search", "--host", "--model-name", "--text-model", "--against", "--labels", "--color", "--token",
                "--contrast", "--target", "--targets", "--from", "--opposing", "--to", "--loss", "--guide", "--layout",
                "--optimizer", "--explain", "--resume", "--insertion-deletion", "--lowest-first", "--help"}


def test_table_covers_every_command_and_option():
    """Every command has rows, and every numeric or path option of it appears in one (or is listed above)."""
    used: dict[tuple[str, ...], set[str]] = {}
    for row in ROWS:
        args = row.values[0]
        path = tuple(args[:2]) if args[0] == "evaluate" else (args[0],)
        used.setdefault(path, set()).update(a for a in args if a.startswith("-"))
    missing = []
    for path, cmd in _commands(main):
        if path not in used:
            missing.append(f"{' '.join(path)}: no rows")
            continue
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.is_flag or param.name == "help":
                continue
            names = set(param.opts) | set(param.secondary_opts)
            if names & NO_BAD_VALUE or names & used[path]:
                continue
            missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, "add rows to tests/test_bad_inputs.py for: " + ", ".join(missing)


# ---------------------------------------------------------------------- the real entry point


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    import attngrad

    src = str(Path(attngrad.__file__).resolve().parents[1])  # this checkout's package, whatever the cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "attngrad", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env)  # fmt: skip


@pytest.mark.slow
def test_subprocess_usage_and_library_errors_are_one_line(tmp_path):
    for args, message in [
        (["explain", "el1", "--batch-size", "0"], "--batch-size"),
        (["serve", "--port", "0"], "--port"),
        (["explain", "el1", "-t", "zebar", "--out", "new/out"], "unknown class 'zebar'"),
    ]:
        proc = _run(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("attngrad: error: ") and message in lines[0], proc.stderr
        assert "Usage:" not in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # the failed explain created no folder


def test_serve_on_a_port_in_use_is_one_line(fixtures, monkeypatch):
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started a server"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--model", fixtures["MODEL"], "--no-lm", "--port", str(port)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: cannot listen on") and "in use" in lines[0], lines


@pytest.mark.parametrize("args, message", [
    (["explain-lm", "caf\udce9 \udcff"], "is not valid UTF-8"),
    (["explain", "el1", "--out", "x" * 300], "File name too long"),
])
def test_bytes_and_long_names_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error:") and message in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_truncated_weights_are_one_line(tmp_path, monkeypatch):
    import shutil

    import attngrad

    folder = tmp_path / "vit"
    shutil.copytree(Path(attngrad.__file__).parent / "assets" / "models" / "vit-tiny-patch16-224", folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    monkeypatch.chdir(tmp_path)
    for args in (["explain", "el1", "--model", str(folder), "--out", "o"], ["explain-clip", "el1", "-t", "a", "--model", str(folder)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot be read (truncated or corrupt?)" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit"]


@pytest.mark.parametrize("option", ["-t", "-c"])
def test_explain_refuses_an_unknown_class_before_predicting(fixtures, tmp_path, option):
    """A typo in --target or --contrast ends the run before the model's first pass: no top-5 lines are printed."""
    extra = ["-t", "zebar"] if option == "-t" else ["-t", "top1", "-l", "diff", "-c", "zebar"]
    result = CliRunner().invoke(main, _fill(["explain", IMAGE, *MODEL_ARGS, *extra, "--out", str(tmp_path / "o")], fixtures))
    assert result.exit_code == 2 and "unknown class 'zebar'" in result.stderr, result.output
    assert result.stdout == "" and not (tmp_path / "o").exists()
