"""Annotation speed: annotator's Engine against plain llama-cpp-python, same model, same items.

    python bench/annotate.py [--model M.gguf] [--short 60] [--long 12] [--repeats 1]
                             [--threads 0] [--parallel N] [--json OUT.json]

Two workloads: "short" (GoEmotions dev comments, one nominal dimension of 28 emotions) and
"long" (Newsroom summary + article, one summary per article, four ordinal 1-5 dimensions), with
the sample rubrics in annotator/samples. Four modes label the same items with the same model and
llama.cpp settings (n_ctx 4096, n_batch 512, threads):

  A  what a user would write first: `Llama.create_completion` per item on the prompt text the
     engine renders (rubric, item, first cue "name:"), temperature 0, max_tokens 8 per
     dimension, stop at a blank line; the model is to continue with "name: value" lines, which
     are then parsed. A dimension with no parseable allowed value is a failure (and counts as a
     label that differs from C's).
  B  the same call with a GBNF grammar (llama_cpp.LlamaGrammar) that allows exactly the
     "name: value" lines with allowed values; generation ends when the grammar is complete.
  C  annotator.inference.engine.Engine as shipped: `annotate()` per item (rubric prefix evaluated once,
     cache cut back to it per item, decisions read from the logits of the allowed values).
  L  the limit: with the rubric prefix in the KV cache, per item one `llm.eval` of the item's
     own tokens (the Engine's tokenization, done before the clock starts) plus the first cue,
     then one forward step per further decision (chosen value + next cue); the value is the
     argmax over the allowed first tokens. No probabilities, no bookkeeping.
  N  the Engine with read_hidden off: what reading the hidden state at each decision costs
     (C copies the middle block's output out of the same decodes); N/C time is reported with
     the share of labels that differ (none should: the computation is the same).
  P  (with --parallel N) the Engine with N parallel sequences (`annotator annotate --parallel`),
     all items in one call; reported with P/C and the share of labels that differ from C.

Timing. One fresh process per workload and repeat holds A's Llama, B's Llama (separate, so B
never reuses A's cached prompt) and one Engine (C; L uses its model and cache, both cut back to
the prefix per item). Before the clock starts every model is loaded and the rubric prefix is
in its KV cache (the Engine evaluates it when built; A and B: one untimed completion of the
prefix text, whose tokens llama-cpp-python then reuses for every prompt). Then each item is
labelled by all four modes in turn (the order rotates from item to item), each call timed on
its own, so the modes share the same background load: the shared 2-core machines this runs on
drift by 2x within minutes. items/s = items / a mode's summed seconds; ratios are per repeat,
and every printed figure is the median over --repeats.

Startup and memory come from the real CLI: `annotator annotate` (`python -m annotator`) in a
subprocess on a fresh temporary project with the workload's first 3 items and its longest one,
timed from process start to the first row in the project's SQLite `annotations` table (polled
every 10 ms); its peak RSS (ru_maxrss, read with `os.wait4`) is the tool's memory as shipped,
printed next to the model file size. (The timing process holds three model instances, so its
own peak is only recorded in the --json output.)

Targets (the speed issue): C/A >= 3x short and >= 1.5x long; L-time / C-time >= 0.85;
first label <= 2 s; peak RSS <= model file size + 1 GB. Item text is never printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.datasets import goemotions, newsroom  # noqa: E402

MODES = ("A", "B", "C", "L", "N")
MODE_NAMES = {
    "A": "free generation + parse",
    "B": "GBNF grammar",
    "C": "annotator Engine",
    "L": "limit (item eval + 1 step/decision)",
    "N": "Engine without reading hidden states",
}
TARGETS = {"short": 3.0, "long": 1.5}  # C/A
MAX_TOKENS_PER_DIM = 8
FIRST_LABEL_ITEMS = 3
N_BATCH = 512
GB = 1024**3


def one_per_article(n: int) -> list[dict]:
    """The first `n` distinct articles (Newsroom has 7 system summaries per article, in a row;
    the first 12 rows would be two articles, one of them the longest in the set)."""
    rows, seen = [], set()
    for row in newsroom(None):
        if row["article"] not in seen and len(rows) < n:
            seen.add(row["article"])
            rows.append(row)
    return rows


WORKLOADS = {  # name: (sample rubric, description, rows(n))
    "short": ("goemotions", "GoEmotions dev", lambda n: goemotions(n, "dev")),
    "long": ("newsroom", "Newsroom, one summary per article", one_per_article),
}


def rubric_path(workload: str) -> Path:
    return ROOT / "annotator" / "samples" / WORKLOADS[workload][0] / "rubric.toml"


def load_workload(workload: str, n: int):
    from annotator.rubric import load_rubric

    rubric = load_rubric(rubric_path(workload))
    rows = WORKLOADS[workload][2](n)
    items = [{inp.column: row[inp.column] for inp in rubric.inputs} for row in rows]
    return rubric, [row["id"] for row in rows], items


# -- the four modes, timed item by item in one process ----------------------------------------


def measure(workload: str, n: int, model: str, threads: int, n_ctx: int, parallel: int = 1) -> dict:
    """Every mode on every item of the workload: seconds, labels and tokens per mode."""
    import llama_cpp

    from annotator.inference import prompt
    from annotator.inference.backend import EngineSettings, load_llama
    from annotator.inference.engine import Engine
    from annotator.inference.llama_quiet import quiet_llama

    quiet_llama()
    rubric, _, items = load_workload(workload, n)
    prefix = prompt.render_prefix(rubric)
    first_cue = prompt.render_cue(rubric.dimensions[0])
    max_tokens = MAX_TOKENS_PER_DIM * len(rubric.dimensions)

    def completion_mode(grammar):
        llm = llama_cpp.Llama(
            model_path=model,
            n_ctx=n_ctx,
            n_batch=N_BATCH,
            n_ubatch=N_BATCH,
            n_threads=threads,
            n_threads_batch=threads,
            seed=0,
            verbose=False,
        )
        llm.create_completion(prefix, max_tokens=1, temperature=0.0)  # prefix into the cache

        def label(fields):
            text = prefix + prompt.render_item(rubric, fields) + first_cue
            try:
                out = llm.create_completion(
                    text, max_tokens=max_tokens, temperature=0.0, stop=["\n\n"], grammar=grammar
                )
            except ValueError:  # longer than the context: a failure, like a bad answer
                return [None] * len(rubric.dimensions), 0
            answer = first_cue + out["choices"][0]["text"]
            return parse_answer(rubric, answer), out["usage"]["completion_tokens"]

        return llm, label

    llm_a, mode_a = completion_mode(None)
    llm_b, mode_b = completion_mode(llama_cpp.LlamaGrammar.from_string(gbnf(rubric), verbose=False))
    engine = Engine(model, rubric, EngineSettings(n_ctx=n_ctx, n_batch=N_BATCH, n_threads=threads))
    no_hidden = Engine(
        model,
        rubric,
        EngineSettings(n_ctx=n_ctx, n_batch=N_BATCH, n_threads=threads, read_hidden=False),
        llm=load_llama(model, EngineSettings(n_ctx=n_ctx, n_batch=N_BATCH, n_threads=threads)),
    )

    def engine_mode(eng):
        def label(fields):
            result = eng.annotate(fields)
            return [result.decisions[d.name].value for d in rubric.dimensions], result.n_tokens

        return label

    mode_l = Limit(engine)
    label = {
        "A": mode_a,
        "B": mode_b,
        "C": engine_mode(engine),
        "L": mode_l,
        "N": engine_mode(no_hidden),
    }
    prepare = {"L": lambda fields: engine.fit_item(fields)[0]}  # L tokenizes before the clock

    seconds = dict.fromkeys(MODES, 0.0)
    labels: dict[str, list] = {m: [] for m in MODES}
    tokens = dict.fromkeys(MODES, 0)  # A, B: generated; C, L: item tokens evaluated
    for i, fields in enumerate(items):
        for m in MODES[i % len(MODES) :] + MODES[: i % len(MODES)]:
            arg = prepare[m](fields) if m in prepare else fields
            start = time.perf_counter()
            values, count = label[m](arg)
            seconds[m] += time.perf_counter() - start
            labels[m].append(values)
            tokens[m] += count
    for closable in (llm_a, llm_b, engine, no_hidden):
        closable.close()
    if parallel > 1:  # P: the same engine with --parallel, all items in one call
        engine_p = Engine(
            model,
            rubric,
            EngineSettings(n_ctx=n_ctx, n_batch=N_BATCH, n_threads=threads, n_parallel=parallel),
        )
        start = time.perf_counter()
        results = list(engine_p.annotate_many(items))
        seconds["P"] = time.perf_counter() - start
        labels["P"] = [[r.decisions[d.name].value for d in rubric.dimensions] for r in results]
        engine_p.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": seconds, "labels": labels, "tokens": tokens, "process_peak_rss": peak}


class Limit:
    """L: the item's tokens plus the first cue in one eval, then one eval per further decision
    (the chosen value's remaining tokens and the next cue). Argmax over the first tokens."""

    def __init__(self, engine):
        self.engine = engine
        self.choices = []  # per dimension: (first token, value index, tokens after the lead)
        for index, (lead, branch) in enumerate(engine.tries):
            self.choices.append(
                [
                    (token, leaf, engine.value_tokens[index][leaf][len(lead) :])
                    for token, leaf in ((t, _first_leaf(c)) for t, c in branch.children.items())
                ]
            )
        self.cues = [engine.cue_tokens[i] + engine.tries[i][0] for i in range(len(engine.tries))]

    def __call__(self, item_tokens: list[int]):
        import llama_cpp

        llm, dims = self.engine.llm, self.engine.rubric.dimensions
        llm.n_tokens = len(self.engine.prefix_tokens)
        pending, chosen = item_tokens + self.cues[0], []
        for index, options in enumerate(self.choices):
            llm.eval(pending)
            logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            _, value, rest = max(options, key=lambda o: logits[o[0]])
            chosen.append(dims[index].values[value])
            if index + 1 < len(self.choices):
                pending = rest + self.cues[index + 1]
        return chosen, len(item_tokens)


def _first_leaf(node) -> int:
    while node.value_index is None:
        node = next(iter(node.children.values()))
    return node.value_index


def gbnf(rubric) -> str:
    """A grammar for the continuation of the prompt (which ends with the first cue)."""

    def lit(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    seq, rules = [], []
    for i, dim in enumerate(rubric.dimensions):
        if i:
            seq.append(lit(dim.name + ":"))
        seq += [lit(" "), f"v{i}", lit("\n")]
        rules.append(f"v{i} ::= " + " | ".join(lit(str(v)) for v in dim.values))
    return "root ::= " + " ".join(seq) + "\n" + "\n".join(rules) + "\n"


def parse_answer(rubric, text: str) -> list:
    """'name: value' lines to one value per dimension; None where missing or not allowed."""
    found: dict[str, object] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition(":")
        name = name.strip().strip("*").strip().lower()
        dim = next((d for d in rubric.dimensions if d.name.lower() == name), None)
        if not sep or dim is None or dim.name in found:
            continue
        raw = raw.strip().strip(".*\"'").strip()
        if dim.scale == "nominal":
            found[dim.name] = next((v for v in dim.values if v.lower() == raw.lower()), None)
        else:
            try:
                found[dim.name] = dim.parse_value(raw)
            except ValueError:
                found[dim.name] = None
    return [found.get(d.name) for d in rubric.dimensions]


def in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, *args).result()


# -- first label and memory, through the real CLI ---------------------------------------------


def first_label(workload: str, n: int, model: str, threads: int, n_ctx: int) -> dict:
    """`annotator annotate` in a subprocess: seconds to the first stored label, peak RSS."""
    rubric, ids, items = load_workload(workload, n)
    longest = max(range(len(items)), key=lambda i: sum(map(len, items[i].values())))
    chosen = sorted(set(range(min(FIRST_LABEL_ITEMS, len(items)))) | {longest})
    columns = [inp.column for inp in rubric.inputs]
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
        data, project, log = (Path(tmp) / name for name in ("items.csv", "project.sqlite", "log"))
        with data.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *columns])
            writer.writerows([ids[i], *(items[i][c] for c in columns)] for i in chosen)
        command = [
            sys.executable,
            "-m",
            "annotator",
            "annotate",
            str(data),
            "--rubric",
            str(rubric_path(workload)),
            "--project",
            str(project),
            "--model",
            model,
            "--threads",
            str(threads),
            "--n-ctx",
            str(n_ctx),
            "--n-batch",
            str(N_BATCH),
        ]
        with log.open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp)
            first = None
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if first is None and _labels_stored(project):
                    first = time.perf_counter() - start
                if pid:
                    break
                time.sleep(0.01)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4
            total = time.perf_counter() - start
        if proc.returncode != 0 or first is None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SystemExit(
                f"annotator annotate failed (exit {proc.returncode}): " + " | ".join(tail)
            )
    return {
        "first_label_seconds": first,
        "cli_seconds": total,
        "cli_items": len(chosen),
        "cli_peak_rss": usage.ru_maxrss * 1024,
    }


def _labels_stored(project: Path) -> bool:
    if not project.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{project}?mode=ro", uri=True, timeout=0.1)
        try:
            return db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:  # not created yet, or mid-migration
        return False


# -- one repeat, medians, report --------------------------------------------------------------


def differs(a: list, b: list) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return sum(x is None or y is None or x != y for x, y in pairs) / len(pairs)


def failed(labels: list) -> float:
    cells = [v for row in labels for v in row]
    return sum(v is None for v in cells) / len(cells)


def one_repeat(workload: str, n: int, args) -> dict:
    run = in_fresh_process(workload, n, args.model, args.threads, args.n_ctx, args.parallel)
    seconds, labels, tokens = run["seconds"], run["labels"], run["tokens"]
    speed = {m: n / seconds[m] for m in MODES}
    parallel = {}
    if "P" in seconds:
        parallel = {
            "P_items_per_s": n / seconds["P"],
            "P_over_C": seconds["C"] / seconds["P"],
            "P_differs_from_C": differs(labels["P"], labels["C"]),
        }
    return {
        **parallel,
        **{f"{m}_items_per_s": speed[m] for m in MODES},
        "C_over_A": speed["C"] / speed["A"],
        "C_over_B": speed["C"] / speed["B"],
        "L_time_over_C_time": seconds["L"] / seconds["C"],
        "C_differs_from_A": differs(labels["C"], labels["A"]),
        "C_differs_from_B": differs(labels["C"], labels["B"]),
        "L_differs_from_C": differs(labels["L"], labels["C"]),
        "N_time_over_C_time": seconds["N"] / seconds["C"],
        "N_differs_from_C": differs(labels["N"], labels["C"]),
        "A_failed": failed(labels["A"]),
        "B_failed": failed(labels["B"]),
        "A_generated_tokens_per_item": tokens["A"] / n,
        "B_generated_tokens_per_item": tokens["B"] / n,
        "item_tokens_per_item": tokens["C"] / n,
        "process_peak_rss": run["process_peak_rss"],
        **first_label(workload, n, args.model, args.threads, args.n_ctx),
    }


def ok(good: bool) -> str:
    return "ok" if good else "MISSED"


def mib(size: float) -> str:
    return f"{size / 2**20:.0f} MiB"


def report(workload: str, n: int, runs: list[dict], model_size: int, parallel: int = 1) -> None:
    from annotator.rubric import load_rubric

    med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}

    def spread(key: str, fmt: str) -> str:
        low, high = min(run[key] for run in runs), max(run[key] for run in runs)
        return f" [runs {low:{fmt}}..{high:{fmt}}]" if len(runs) > 1 else ""

    dims = load_rubric(rubric_path(workload)).dimensions
    kinds = ", ".join(sorted({f"{d.scale}, {len(d.values)} values" for d in dims}))
    print(
        f"\n{workload}: {WORKLOADS[workload][1]}, {n} items, {len(dims)} dimension(s) ({kinds}), "
        f"{med['item_tokens_per_item']:.0f} item tokens/item"
    )
    print(f"  {'mode':40} {'items/s':>8} {'s/item':>8}")
    for m in MODES:
        ips = med[f"{m}_items_per_s"]
        extra = ""
        if m in "AB":
            extra = (
                f"  ({med[f'{m}_generated_tokens_per_item']:.1f} tokens generated/item, "
                f"{med[f'{m}_failed']:.0%} labels unparseable)"
            )
        print(f"  {m} {MODE_NAMES[m]:38} {ips:8.3g} {1 / ips:8.3f}{extra}")
    target = TARGETS[workload]
    print(
        f"  C/A {med['C_over_A']:.2f}x{spread('C_over_A', '.2f')} (target >= {target}x: "
        f"{ok(med['C_over_A'] >= target)});  "
        f"C/B {med['C_over_B']:.2f}x{spread('C_over_B', '.2f')}"
    )
    eff = med["L_time_over_C_time"]
    print(
        f"  efficiency L-time / C-time {eff:.2f}{spread('L_time_over_C_time', '.2f')} "
        f"(target >= 0.85: {ok(eff >= 0.85)})"
    )
    print(
        f"  reading hidden states: N-time / C-time {med['N_time_over_C_time']:.2f}"
        f"{spread('N_time_over_C_time', '.2f')} (1.0: free); labels where N differs from C: "
        f"{med['N_differs_from_C']:.1%}"
    )
    print(
        f"  labels where C differs from A: {med['C_differs_from_A']:.1%} "
        f"(unparseable A counted as different), from B: {med['C_differs_from_B']:.1%}"
    )
    fl = med["first_label_seconds"]
    print(
        f"  first label: {fl:.2f} s{spread('first_label_seconds', '.2f')} from `annotator "
        f"annotate` start to the first stored label (target <= 2 s: {ok(fl <= 2)}); real CLI "
        f"in a subprocess, fresh project, SQLite polled every 10 ms; its whole "
        f"{med['cli_items']:.0f}-item run took {med['cli_seconds']:.1f} s"
    )
    if "P_items_per_s" in med:
        print(
            f"  P engine with --parallel {parallel}: {med['P_items_per_s']:.3g} items/s, "
            f"P/C {med['P_over_C']:.2f}x{spread('P_over_C', '.2f')}; labels where P differs "
            f"from C: {med['P_differs_from_C']:.1%} (one timed call over all items, not "
            "interleaved with the other modes)"
        )
    peak, limit = med["cli_peak_rss"], model_size + GB
    print(
        f"  peak RSS of that CLI run (ru_maxrss): {mib(peak)} vs model file {mib(model_size)} "
        f"+ 1 GiB = {mib(limit)} (target: {ok(peak <= limit)})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF model [default: the packaged Gemma 3 270M]")
    parser.add_argument("--short", type=int, default=60, help="GoEmotions dev items [60]")
    parser.add_argument("--long", type=int, default=12, help="Newsroom items [12]")
    parser.add_argument("--repeats", type=int, default=1, help="runs of everything; medians [1]")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads [0: all this process may use, the engine's default]",
    )
    parser.add_argument("--n-ctx", type=int, default=4096, help="context size [4096, as the CLI]")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="also time P: the engine with --parallel N (N > 1) [off]",
    )
    parser.add_argument("--json", type=Path, help="write every figure (each repeat and medians)")
    args = parser.parse_args(argv)

    import llama_cpp

    from annotator.inference.backend import EngineSettings
    from annotator.modelfile import default_model_path

    args.model = str(Path(args.model) if args.model else default_model_path())
    args.threads = EngineSettings(n_threads=args.threads).resolved().n_threads
    model_size = os.path.getsize(args.model)
    backend = "GPU offload build" if llama_cpp.llama_supports_gpu_offload() else "CPU"
    print(
        f"model {Path(args.model).name} ({mib(model_size)}), llama-cpp-python "
        f"{llama_cpp.__version__} {backend}, {args.threads} thread(s), n_ctx {args.n_ctx}; "
        f"figures are medians of {args.repeats} run(s)",
        flush=True,
    )

    sizes = {w: n for w, n in (("short", args.short), ("long", args.long)) if n > 0}
    repeats: dict[str, list[dict]] = {w: [] for w in sizes}
    for r in range(args.repeats):
        for workload, n in sizes.items():
            t = time.perf_counter()
            repeats[workload].append(one_repeat(workload, n, args))
            print(
                f"  run {r + 1}/{args.repeats} {workload}: {time.perf_counter() - t:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    for workload, runs in repeats.items():
        report(workload, sizes[workload], runs, model_size, args.parallel)
    if args.json:
        medians = {
            w: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
            for w, runs in repeats.items()
        }
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "model_size": model_size,
                    "threads": args.threads,
                    "n_ctx": args.n_ctx,
                    "sizes": sizes,
                    "repeats": repeats,
                    "medians": medians,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
