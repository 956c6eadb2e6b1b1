"""attngrad's LM methods and the peers (LXT's AttnLRP, Captum's LayerIntegratedGradients, inseq) on the
same SmolLM2-135M-Instruct weights and prompts (issue 22; docs/results/lm-peers.md).

Peers are never attngrad dependencies: install them into folders of their own and put those on
PYTHONPATH for this script only, one peer per process (LXT patches transformers' Llama module in place):

    python -m pip install --no-deps --target ../peers/lxt lxt zennit tabulate
    python -m pip install --no-deps --target ../peers/captum captum
    python -m pip install --no-deps --target ../peers/inseq inseq jaxtyping wadler_lindig "typeguard<=2.13.3" treescope

Steps (every map explains the target token's logit after the prompt, over the prompt's tokens as
attngrad's tokenizer call gives them):

    PYTHONPATH=src python benchmarks/lm_peers.py scores --peer attngrad --evidence RUN/prompts.json --out OUT
    PYTHONPATH=src:../peers/lxt python benchmarks/lm_peers.py scores --peer lxt --evidence ... --out OUT
    PYTHONPATH=src:../peers/captum python benchmarks/lm_peers.py scores --peer captum ...
    PYTHONPATH=src:../peers/inseq:../peers/captum python benchmarks/lm_peers.py scores --peer inseq ...
    PYTHONPATH=src python benchmarks/lm_peers.py table --evidence RUN/prompts.json --out OUT

``RUN/prompts.json`` is the prompt list an ``attngrad evaluate lm-evidence`` run kept. ``table`` scores
every stored map with the same code (attngrad.lm.evidence.prompt_metrics, the deletion and insertion
curves of attngrad.lm.deletion / attngrad.lm.insertion, unpatched model) and writes OUT/table.md + .json
(every column mean ± 1.96 standard errors over prompts; the per-prompt gaps are in table.json).
``compare`` says how far two stored methods' maps are apart (and whether they delete in the same order):

    PYTHONPATH=src python benchmarks/lm_peers.py compare --out OUT --table-methods attnlrp,lxt/attnlrp

``speed`` times each of a peer's methods on one prompt of each length against a plain forward + backward
(interleaved, benchmarks/_timing.py) and measures each one's peak memory: CUDA allocations on a GPU; on
the CPU the peak resident set of a fresh process per case and length (``peak`` step, Linux):

    PYTHONPATH=src python benchmarks/lm_peers.py speed --peer attngrad --out OUT --lengths 256,1024,2048
    PYTHONPATH=src:../peers/lxt python benchmarks/lm_peers.py speed --peer lxt --out OUT --lengths 256,1024,2048
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from attngrad.lm import LMExplainer
from attngrad.lm.attribution import LM_METHODS, signed
from attngrad.lm.deletion import FRACTIONS, auc, deleted_sequences, deletion_order, fill_token, log_probs
from attngrad.lm.evidence import prompt_metrics
from attngrad.lm.evidence_prompts import EvidencePrompt, token_spans
from attngrad.lm.insertion import inserted_sequences, neutral_token
from attngrad.lm.prompts import Prompt, deletion_prompts

INSEQ_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "attention")
SIGNED_PEERS = {"lxt/attnlrp": True, "captum/layer_ig": True, "inseq/saliency": False,
                "inseq/input_x_gradient": True, "inseq/integrated_gradients": True, "inseq/attention": False}


def _tasks(evidence_file: str, limit: int | None):
    data = json.loads(Path(evidence_file).read_text())
    ev = [EvidencePrompt(p["text"], p["target"], p["kind"], tuple(map(tuple, p["evidence"])),
                         tuple(map(tuple, p["distractors"]))) for p in data["prompts"]][:limit]
    de = deletion_prompts()[:limit]
    return ev, de


def _stored(out: Path, peer: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The maps and seconds a previous (possibly stopped) ``scores`` run of ``peer`` wrote."""
    f, g = out / f"scores-{peer}.npz", out / f"seconds-{peer}.json"
    arrays: dict[str, np.ndarray] = {}
    if f.exists():
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(g.read_text()) if g.exists() else {}


def _save(out: Path, peer: str, maps: dict[str, list[np.ndarray]], seconds: dict[str, float]) -> None:
    """Adds ``maps`` (``{"method|task": [map per prompt]}``) to what is stored for ``peer``, written
    atomically (a stopped run keeps every method and task it finished)."""
    arrays, secs = _stored(out, peer)
    arrays.update({f"{m}|{i}": v for m, vs in maps.items() for i, v in enumerate(vs)})
    tmp = out / f".tmp-scores-{peer}.npz"  # not matched by the table step's scores-*.npz
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(out / f"scores-{peer}.npz")
    (out / f"seconds-{peer}.json").write_text(json.dumps({**secs, **seconds}, indent=1))


def _load_hf(explainer: LMExplainer):
    return explainer.adapter.model, explainer.adapter.tokenizer


# ------------------------------------------------------------------------------------------ peers


def scores_attngrad(explainer, texts, targets, methods, loss: str = "logit"):
    """attngrad's ``methods`` explaining ``loss`` (``diff``: the target's logit minus the runner-up's,
    stored as ``METHOD+diff``)."""
    suffix = "" if loss == "logit" else f"+{loss}"
    contrast = "runner-up" if loss != "logit" else None
    maps: dict[str, list[np.ndarray]] = {m + suffix: [] for m in methods}
    for start in tqdm(range(0, len(texts), 8), desc="attngrad"):
        res = explainer.explain_methods(texts[start : start + 8], methods, target=targets[start : start + 8],
                                        loss=loss, contrast=contrast)
        for m in methods:
            maps[m + suffix] += [res[m].scores(i).detach().float().cpu().numpy()
                                 for i in range(len(res[m].batch.lengths))]
    return maps


_LXT: dict = {}


def _lxt_model(explainer):
    """SmolLM2 loaded again after LXT patched transformers' Llama module (once per process)."""
    if "model" in _LXT:
        return _LXT["model"]
    import transformers.pytorch_utils as pu

    # LXT 2.1 imports its BERT patch, which needs a helper transformers 5 removed; the Llama patch does not use it
    pu.find_pruneable_heads_and_indices = getattr(pu, "find_pruneable_heads_and_indices", lambda *a, **k: None)
    from lxt.efficient import monkey_patch
    from transformers.models.llama import modeling_llama

    interface = modeling_llama.ALL_ATTENTION_FUNCTIONS
    monkey_patch(modeling_llama, verbose=False)
    # LXT replaces transformers' AttentionInterface by a plain dict, which transformers 5 cannot call
    # (no .get_interface); the eager path it patched (module-level eager_attention_forward) is what runs
    modeling_llama.ALL_ATTENTION_FUNCTIONS = interface
    assert modeling_llama.eager_attention_forward.__name__ == "attention_forward", "LXT did not patch attention"
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(explainer.adapter.model.name_or_path, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _LXT["model"] = model.to(explainer.device)
    return _LXT["model"]


def scores_lxt(explainer, texts, targets):
    model = _lxt_model(explainer)
    out = []
    for text, t in tqdm(list(zip(texts, targets)), desc="lxt", disable=len(texts) < 2):
        ids = torch.tensor([explainer.adapter.tokenize(text)], device=explainer.device)
        emb = model.get_input_embeddings()(ids).detach().requires_grad_()
        logits = model(inputs_embeds=emb, use_cache=False, logits_to_keep=1).logits[0, -1]
        logits[t].backward()
        out.append((emb.grad * emb).sum(-1)[0].detach().cpu().numpy())
    return {"lxt/attnlrp": out}


def scores_captum(explainer, texts, targets, steps, internal_batch_size: int | None = None):
    from captum.attr import LayerIntegratedGradients

    model = explainer.adapter.model
    pad = neutral_token(explainer)

    def forward(ids, t):
        return model(input_ids=ids, use_cache=False).logits[:, -1, t]

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    out = []
    for text, t in tqdm(list(zip(texts, targets)), desc="captum", disable=len(texts) < 2):
        ids = torch.tensor([explainer.adapter.tokenize(text)], device=explainer.device)
        attr = lig.attribute(ids, baselines=torch.full_like(ids, pad), additional_forward_args=(t,), n_steps=steps,
                             internal_batch_size=internal_batch_size)
        out.append(attr.sum(-1)[0].detach().cpu().numpy())
    return {"captum/layer_ig": out}


def scores_inseq(explainer, texts, targets, steps, only: str | None = None):
    import inseq

    model, tok = _load_hf(explainer)
    out: dict[str, list[np.ndarray]] = {}
    for method in (only,) if only else INSEQ_METHODS:
        m = inseq.load_model(model, method, tokenizer=tok)
        name = f"inseq/{method}"
        out[name] = []
        kw = {"n_steps": steps} if method == "integrated_gradients" else {}
        for text, t in tqdm(list(zip(texts, targets)), desc=name, disable=len(texts) < 2):
            res = m.attribute(input_texts=text, generated_texts=text + tok.decode([t]), attributed_fn="logit",
                              show_progress=False, skip_special_tokens=False, **kw)
            attr = res.sequence_attributions[0]
            mat = attr.target_attributions  # (prefix + generated, generated[, hidden])
            if mat.ndim == 2:
                col = mat[:, -1]
            elif method == "saliency":  # gradient per hidden unit: its norm, as inseq's default aggregation
                col = mat[:, -1].norm(dim=-1)
            elif method == "attention":  # per layer and head: the mean over both
                col = mat[:, -1].reshape(mat.shape[0], -1).mean(-1)
            else:  # per hidden unit: summed, as Captum's attributions
                col = mat[:, -1].sum(-1)
            n = len(explainer.adapter.tokenize(text))
            out[name].append(col[:n].float().cpu().numpy())
    return out


# ------------------------------------------------------------------------------------------ table


def table(explainer, out: Path, ev: list[EvidencePrompt], de: list[Prompt], eval_batch_size: int = 64,
          only: list[str] | None = None, deletion: bool = True, name: str = "table") -> dict:
    """Scores every stored map (``only``: these methods, in this order). Resumable: rows of ``table.json``
    scored on the same prompt counts are kept and not scored again (a row without deletion columns gets
    them when ``deletion``); each finished method is written at once, to ``OUT/NAME.json`` + ``.md``."""
    tok = explainer.adapter.tokenizer
    old = json.loads((out / f"{name}.json").read_text()) if (out / f"{name}.json").exists() else {}
    rows: dict = {m: r for m, r in old.items() if r.get("prompts") == [len(ev), len(de)]}
    stored: dict[str, np.ndarray] = {}
    notes: dict = {}
    for f in sorted(out.glob("scores-*.npz")):
        with np.load(f) as z:
            stored.update({k: z[k] for k in z.files})
    for f in sorted(out.glob("seconds-*.json")):
        notes.update(json.loads(f.read_text()))
    names = {k.split("|")[0] for k in stored}
    methods = [m for m in only if m in names] if only else sorted(names)
    ev_spans = [token_spans(tok, p.text, p.evidence + p.distractors) for p in ev]
    fill, neutral = fill_token(explainer), neutral_token(explainer)
    de_targets = [explainer.adapter.word_ids(p.target)[0] for p in de]
    for m in tqdm(methods, desc="table"):
        if m in rows and ("del_gap_factual" in rows[m] or not deletion or f"{m}|de|0" not in stored):
            continue
        task = m.split("/", 1)
        base = task[-1].split("+")[0]
        is_signed = SIGNED_PEERS.get(m, signed(base) if base in LM_METHODS else False)
        row: dict = {"prompts": [len(ev), len(de)]}
        vals = [prompt_metrics(stored[f"{m}|ev|{i}"], sp[0], [j for s in sp[1:] for j in s], signed_method=is_signed)
                for i, sp in enumerate(ev_spans)]
        for metric in ("evidence_share", "top1", "topk", "distractor_negative"):
            v = np.array([r[metric] for r in vals])
            v = v[~np.isnan(v)]
            row[metric] = float(v.mean()) if len(v) else None
            row[metric + "_ci95"] = float(1.96 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
        row["seconds_per_prompt"] = notes.get(m)
        rows[m] = row
        if not deletion or f"{m}|de|0" not in stored:  # evidence only (or the scores step stopped before deletion)
            _write_table(out, rows, name=name)
            continue
        seqs, tg, slots = [], [], []
        for i, p in enumerate(de):
            s = torch.as_tensor(stored[f"{m}|de|{i}"])
            ids = explainer.adapter.tokenize(p.text)
            order = deletion_order(s)
            for test, d, q in (("del", "most", deleted_sequences(ids, order, fill=fill)),
                               ("del", "least", deleted_sequences(ids, order[::-1], fill=fill)),
                               ("ins", "most", inserted_sequences(ids, order, neutral=neutral)),
                               ("ins", "least", inserted_sequences(ids, order[::-1], neutral=neutral))):
                seqs += q
                tg += [de_targets[i]] * len(q)
                slots.append((test, d, p.kind))
        lp = log_probs(explainer, seqs, tg, batch_size=eval_batch_size)
        k = len(FRACTIONS)
        for j, (test, d, kind) in enumerate(slots):
            group = "review" if kind == "review" else "factual"
            row.setdefault(f"{test}_{d}_{group}", []).append(auc(lp[j * k : (j + 1) * k]))
        per = {key: np.array(row[key]) for key in row if key.startswith(("del_", "ins_"))}
        for g in ("factual", "review"):
            # per-prompt gaps (the same prompts in both directions): mean ± 1.96 standard errors
            gaps = {"del_gap": per[f"del_least_{g}"] - per[f"del_most_{g}"],
                    "ins_gap": per[f"ins_most_{g}"] - per[f"ins_least_{g}"]}
            for gap, v in gaps.items():
                row[f"{gap}_{g}"] = float(v.mean())
                row[f"{gap}_{g}_ci95"] = float(1.96 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
                row[f"{gap}_{g}_per_prompt"] = v.tolist()
        for key in per:
            row[key] = float(per[key].mean())
        _write_table(out, rows, name=name)  # after each method: a long run's finished rows are kept
    return _write_table(out, rows, echo=True, name=name)


def _write_table(out: Path, rows: dict, echo: bool = False, name: str = "table") -> dict:
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    lines = ["| method | evidence share | top-1 | top-k | distractors' share of negative | deletion gap factual | "
             "deletion gap reviews | insertion gap factual | insertion gap reviews | s / prompt |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def f(r, k):
        v = r.get(k)
        if v is None:
            return "-"
        ci = r.get(k + "_ci95")
        return f"{v:.3f}" + (f" ± {ci:.3f}" if ci is not None else "")

    for m, r in sorted(rows.items(), key=lambda kv: -kv[1]["evidence_share"]):
        lines.append(f"| {m} | " + " | ".join(f(r, k) for k in (
            "evidence_share", "top1", "topk", "distractor_negative", "del_gap_factual", "del_gap_review",
            "ins_gap_factual", "ins_gap_review")) + f" | {r['seconds_per_prompt'] or 0:.3f} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    if echo:
        print("\n".join(lines))
    return rows


SPEED_CASES = {"attngrad": ("complete", "attnlrp", "grad_x_input"), "lxt": ("lxt/attnlrp",), "captum": ("captum/layer_ig",),
               "inseq": ("inseq/saliency",)}


def compare(out: Path, a: str, b: str) -> dict:
    """How far two stored methods' maps are apart, per task (``ev``, ``de``): the largest relative
    difference max|a - b| / max|a| over prompts, and the share of prompts whose deletion order
    (``attngrad.lm.deletion.deletion_order``) is the same."""
    stored: dict[str, np.ndarray] = {}
    for f in sorted(out.glob("scores-*.npz")):
        with np.load(f) as z:
            stored.update({k: z[k] for k in z.files})
    res: dict = {}
    for task in ("ev", "de"):
        keys = sorted((k for k in stored if k.startswith(f"{a}|{task}|")), key=lambda k: int(k.rsplit("|", 1)[1]))
        rel, same = [], []
        for k in keys:
            x, y = stored[k], stored[k.replace(a, b, 1)]
            rel.append(float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30)))
            same.append(bool(np.array_equal(deletion_order(torch.as_tensor(x)), deletion_order(torch.as_tensor(y)))))
        res[task] = {"prompts": len(keys), "max_relative_difference": max(rel), "same_deletion_order": float(np.mean(same))}
    print(json.dumps({f"{a} vs {b}": res}, indent=1))
    return res


def paired(out: Path, names: list[str], tables: list[str], first: int | None = None) -> dict:
    """Deletion / insertion gaps of ``names`` (found in the ``tables``' JSON, the first listed first) on
    the first ``first`` prompts of each kind (factual, reviews) — the same prompts for every method:
    mean ± 1.96 standard errors, and each method's paired difference from the first name."""
    found: dict = {}
    for t in reversed(tables):
        found.update(json.loads((out / f"{t}.json").read_text()))
    res: dict = {}
    keys = [f"{g}_gap_{k}" for k in ("factual", "review") for g in ("del", "ins")]
    ci = lambda v: float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))  # noqa: E731
    ref = {k: np.array(found[names[0]][k + "_per_prompt"][:first]) for k in keys}
    for m in names:
        row = {}
        for k in keys:
            v = np.array(found[m][k + "_per_prompt"][:first])
            row[k] = [float(v.mean()), ci(v), len(v)]
            if m != names[0]:
                row[k + "_minus_" + names[0]] = [float((v - ref[k]).mean()), ci(v - ref[k])]
        res[m] = row
    for m, row in res.items():
        print(m, " ".join(f"{k}={v[0]:+.3f}±{v[1]:.3f}" for k, v in row.items()))
    return res


def _speed_cases(explainer, peer: str, n: int, steps: int) -> dict:
    """``plain`` (one forward + backward of the ``n``-token prompt to its target's logit) and ``peer``'s methods."""
    words = "The quick brown fox jumps over the lazy dog and runs into the forest where it sleeps ."
    ids = explainer.adapter.tokenize((words + " ") * (n // 8))[:n]
    text = explainer.adapter.tokenizer.decode(ids)
    t = int(explainer.adapter.word_ids(" the")[0])

    adapter = explainer.adapter
    batch = adapter.batch([ids])

    def plain():  # as benchmarks/lm_speed.py's fwd_bwd: the eager model without maps, weights frozen
        x = adapter.embed(batch.input_ids).requires_grad_(True)
        with adapter.frozen_weights():
            torch.autograd.grad(adapter.forward(x, batch, attentions=False).logits[:, t].sum(), x)

    cases = {"plain": plain}
    if peer == "attngrad":
        cases.update({m: (lambda m=m: explainer.explain(text, method=m, target=t)) for m in LM_METHODS})
    elif peer == "lxt":
        _lxt_model(explainer)  # its patched model loaded here, not in the first timed call
        cases["lxt/attnlrp"] = lambda: scores_lxt(explainer, [text], [t])
    elif peer == "captum":
        # the steps one at a time: all at once (Captum's default) needs `steps` times the activations
        cases["captum/layer_ig"] = lambda: scores_captum(explainer, [text], [t], steps, internal_batch_size=1)
    else:
        cases["inseq/saliency"] = lambda: scores_inseq(explainer, [text], [t], steps, only="saliency")
    return cases


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_step(explainer, peer: str, case: str, n: int, steps: int) -> dict:
    """Peak resident memory (MB) one call of ``case`` adds above the loaded model(s), measured in this
    (fresh) process: one warm-up call (it pages in the memory-mapped weights, and LXT loads its patched
    model there), then the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``, Linux) and the case
    runs once. ``_peak_fresh`` starts it with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``) so
    that the warm-up's freed tensors go back to the system and do not hide the measured call's."""
    import gc

    fn = _speed_cases(explainer, peer, n, steps)[case]
    fn()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    fn()
    return {"peak_mb": (_status_kb("VmHWM") - before) / 1024, "rss_before_mb": before / 1024}


def _peak_fresh(peer: str, case: str, n: int, steps: int, device: str | None) -> float | None:
    """``peak_step`` of ``case`` in a process of its own (CPU only: on CUDA ``ratio`` measures the peak)."""
    import os
    import subprocess

    if device not in (None, "cpu") or not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "peak", "--peer", peer, "--case", case, "--lengths", str(n),
           "--steps", str(steps)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])["peak_mb"]


def speed(explainer, peer: str, lengths: list[int], repeats: int, steps: int, memory: bool = True,
          warmup: int = 1, methods: list[str] | None = None, out: Path | None = None) -> dict:
    """Median seconds of each of ``peer``'s methods on one prompt of each length, interleaved with a plain
    forward + backward of the same prompt (the ratio's denominator); the peak memory of one call of each
    (and of the plain forward + backward): CUDA allocations on a GPU, on the CPU the peak resident memory
    of a fresh process per case and length (``peak_step``). ``methods``: attngrad's (default
    ``SPEED_CASES``). With ``out``, each row is written to ``out/speed-PEER.json`` when done, with the
    1-minute load average before and after it, and rows already there are not measured again (the plain
    forward + backward's peak, ``out/plain-peak.json``, neither)."""
    import os

    sys.path.insert(0, str(Path(__file__).parent))
    from _timing import ratio

    path = out / f"speed-{peer}.json" if out is not None else None
    rows: dict = json.loads(path.read_text()) if path is not None and path.exists() else {}
    plain_file = out / "plain-peak.json" if out is not None else None
    device = explainer.device.type
    names = (methods or list(SPEED_CASES["attngrad"])) if peer == "attngrad" else list(SPEED_CASES[peer])
    for n in lengths:
        cases = _speed_cases(explainer, peer, n, steps)
        todo = [m for m in names if str(n) not in rows.get(m, {})]
        plain_peak = None
        if memory and todo:  # the plain forward + backward's peak is the same for every peer: measured once per length
            known = json.loads(plain_file.read_text()) if plain_file is not None and plain_file.exists() else {}
            plain_peak = known.get(str(n)) or _peak_fresh(peer, "plain", n, steps, device)
            if plain_file is not None and plain_peak is not None:
                plain_file.write_text(json.dumps({**known, str(n): plain_peak}, indent=1))
        for name in todo:
            fn = cases[name]
            load = os.getloadavg()[0]
            r = ratio(cases["plain"], fn, repeats, warmup=warmup, device=explainer.device)
            r["load_1min_before_after"] = [load, os.getloadavg()[0]]
            if memory and device == "cpu":
                r["forward_backward_peak_mb"] = plain_peak
                r["explanation_peak_mb"] = _peak_fresh(peer, name, n, steps, device)
            if r.get("explanation_peak_mb") and r.get("forward_backward_peak_mb"):
                r["memory_ratio"] = r["explanation_peak_mb"] / r["forward_backward_peak_mb"]
            rows.setdefault(name, {})[str(n)] = r
            print(name, n, r, flush=True)
            if path is not None:
                path.write_text(json.dumps(rows, indent=1))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["scores", "table", "compare", "paired", "speed", "peak"])
    ap.add_argument("--peer", choices=["attngrad", "lxt", "captum", "inseq"], default="attngrad")
    ap.add_argument("--evidence", default=None, help="scores, table: prompts.json of an `evaluate lm-evidence` run")
    ap.add_argument("--out", default=None, help="folder of the maps, table and timings")
    ap.add_argument("--limit", type=int, default=None, help="first N prompts of each set")
    ap.add_argument("--steps", type=int, default=16, help="integrated-gradients steps")
    ap.add_argument("--methods", default=None,
                    help="attngrad's methods (scores: default all; speed: default complete,attnlrp,grad_x_input)")
    ap.add_argument("--loss", default="logit", choices=["logit", "diff"],
                    help="scores, attngrad: the loss explained (diff: against the runner-up; stored as METHOD+diff)")
    ap.add_argument("--evidence-only", action="store_true", help="table: the evidence columns only (fast)")
    ap.add_argument("--de-limit", type=int, default=None,
                    help="table: the first N deletion prompts only (default --limit); written to table-deN.json")
    ap.add_argument("--tables", default="table", help="paired: the table JSON names in OUT to read (comma-separated)")
    ap.add_argument("--first", type=int, default=None, help="paired: the first N prompts of each kind")
    ap.add_argument("--lengths", default="256,1024,2048", help="speed: prompt lengths in tokens")
    ap.add_argument("--table-methods", default=None,
                    help="table: only these stored methods (comma-separated); compare: the two to compare")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    ap.add_argument("--repeats", type=int, default=3, help="speed: interleaved repeats")
    ap.add_argument("--warmup", type=int, default=1, help="speed: untimed calls of each case first")
    ap.add_argument("--no-memory", action="store_true", help="speed: skip the fresh-process peak memory (CPU)")
    ap.add_argument("--case", default="plain", help="peak (started by speed): the case to measure")
    args = ap.parse_args(argv)
    if args.step != "peak" and args.out is None or args.step in ("scores", "table") and args.evidence is None:
        ap.error(f"{args.step} needs --out" + (" and --evidence" if args.step in ("scores", "table") else ""))
    torch.manual_seed(0)
    if args.step == "compare":
        compare(Path(args.out), *args.table_methods.split(","))
        return 0
    if args.step == "paired":
        res = paired(Path(args.out), args.table_methods.split(","), args.tables.split(","), args.first)
        (Path(args.out) / "paired.json").write_text(json.dumps(res, indent=1))
        return 0
    explainer = LMExplainer.from_pretrained(quiet=True, device=args.device)
    if args.step == "peak":
        print(json.dumps(peak_step(explainer, args.peer, args.case, int(args.lengths), args.steps)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "speed":
        speed(explainer, args.peer, [int(x) for x in args.lengths.split(",")], args.repeats, args.steps,
              memory=not args.no_memory, warmup=args.warmup,
              methods=args.methods.split(",") if args.methods else None, out=out)
        return 0
    args.methods = args.methods or ",".join(LM_METHODS)
    ev, de = _tasks(args.evidence, args.limit)
    if args.step == "table":
        name = "table" if args.de_limit is None else f"table-de{args.de_limit}"
        table(explainer, out, ev, de[: args.de_limit], only=args.table_methods.split(",") if args.table_methods else None,
              deletion=not args.evidence_only, name=name)
        return 0
    peer = args.peer if args.peer != "attngrad" or args.loss == "logit" else f"attngrad-{args.loss}"
    suffix = "" if args.loss == "logit" else f"+{args.loss}"
    jobs = {"attngrad": [[m + suffix for m in args.methods.split(",")]], "lxt": [["lxt/attnlrp"]],
            "captum": [["captum/layer_ig"]], "inseq": [[f"inseq/{m}"] for m in INSEQ_METHODS]}[args.peer]
    for names in jobs:  # each job's maps are stored as soon as each task is done; a rerun skips stored ones
        for task, prompts in (("ev", ev), ("de", de)):
            have, secs = _stored(out, peer)
            if all(f"{m}|{task}|{len(prompts) - 1}" in have for m in names):
                continue
            texts = [p.text for p in prompts]
            targets = [explainer.adapter.word_ids(p.target)[0] for p in prompts]
            start = time.perf_counter()
            if args.peer == "attngrad":
                got = scores_attngrad(explainer, texts, targets, [m.split("+")[0] for m in names], loss=args.loss)
            elif args.peer == "lxt":
                got = scores_lxt(explainer, texts, targets)
            elif args.peer == "captum":
                got = scores_captum(explainer, texts, targets, args.steps)
            else:
                got = scores_inseq(explainer, texts, targets, args.steps, only=names[0].split("/")[1])
            took = (time.perf_counter() - start) / len(texts) / max(len(got), 1)
            _save(out, peer, {f"{m}|{task}": vs for m, vs in got.items()},
                  {m: secs.get(m, 0.0) * (task == "de") + took / 2 for m in got})
    print(f"wrote {out}/scores-{peer}.npz", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
