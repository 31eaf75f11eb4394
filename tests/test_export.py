"""`annotator export` end to end on a tiny CPU model with the real Gemma tokenizer.

The model is built here (nothing is downloaded): a 2-layer Gemma 3 whose tokenizer is the one in
the packaged Gemma GGUF, loaded through transformers. It goes through the real converter, the
real quantizer and the real engine. Its weights are random, nudged so that its answers depend
on the item (sharper attention) and are confident (larger logits for the answer tokens):

* at Q8_0 it answers exactly like the torch model: the export is accepted;
* at Q4_K_M (the default) its sharp attention does not survive 4-bit weights: several
  answers flip, and the drift check refuses the file. A real check catching real drift.

The merged model is scored by train.scoring (torch-side, the engine's decoding), as in production.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import import_extra, run_cli, write_csv

# The [export] extra, which `make test` installs: skipped only where it is not installed.
torch = import_extra("torch", "torch")
import_extra("transformers", "transformers")
import_extra("convert_hf_to_gguf", "convert-hf-to-gguf")
import annotator.train.scoring  # noqa: E402, F401  (scores the merged model torch-side)
from annotator.errors import AnnotatorError  # noqa: E402
from annotator.inference import prompt  # noqa: E402
from annotator.modelfile import KEY_PROMPT_FORMAT, KEY_PROVENANCE, KEY_RUBRIC  # noqa: E402
from annotator.rubric import rubric_from_dict  # noqa: E402

# Every test here builds or exports a model: the long tier (`make test-long`).
pytestmark = pytest.mark.long

RUBRIC = rubric_from_dict(
    {
        "name": "reviews",
        "instructions": "Read the product review.",
        "inputs": [{"column": "text", "label": "REVIEW"}],
        "dimensions": [
            {
                "name": "sentiment",
                "question": "What is the sentiment?",
                "scale": "nominal",
                "values": ["positive", "negative", "neutral"],
            },
            {
                "name": "quality",
                "question": "How well written is it?",
                "scale": "ordinal",
                "values": [1, 2, 3, 4, 5],
            },
        ],
    },
    "test rubric",
)

ITEMS = [
    ("Great blender, works every morning.", "positive", 4),
    ("Broke after two days.", "negative", 3),
    ("It is a blender.", "neutral", 2),
    ("Terrible customer service, never again!", "negative", 4),
    ("Absolutely love it, five stars", "positive", 3),
    ("Meh. Does the job I guess", "neutral", 2),
    ("The lid cracked but support replaced it quickly.", "positive", 5),
    ("Too loud for an apartment.", "negative", 3),
    ("Best purchase this year", "positive", 3),
    ("Arrived late and dirty", "negative", 2),
    ("Fine for the price", "neutral", 3),
    ("I returned it", "negative", 1),
    ("Smooth soups in seconds", "positive", 4),
    ("Motor smells like burning", "negative", 3),
    ("Color is nice", "neutral", 2),
    ("Would buy again", "positive", 3),
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch on one thread here too (see `export`); restored for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the tiny model and its run directory ---------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, default_model) -> Path:
    """RUN_DIR as train/ leaves it: merged/ (HF model + provenance) and validation.jsonl."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    run = tmp_path_factory.mktemp("run")
    merged = run / "merged"
    tokenizer = AutoTokenizer.from_pretrained(
        str(default_model.parent), gguf_file=default_model.name
    )
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        # llama.cpp scales attention by 1/sqrt(head_dim) and treats 5 of every 6 Gemma 3 layers
        # as sliding-window (rope base 10k); a config that says otherwise converts "fine" and
        # then answers differently (the drift check catches it; here we avoid it).
        query_pre_attn_scalar=128,
        layer_types=["sliding_attention", "sliding_attention"],
        sliding_window=512,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.fill_(3.0)  # (1 + w): 4x sharper attention
        # The tokens where the allowed values part ways: larger logits, confident answers.
        embeddings = model.model.embed_tokens.weight
        for token in _branch_tokens(tokenizer, RUBRIC):
            embeddings[token] *= 60
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    provenance = {
        "base": "tiny-gemma3-test (random weights, Gemma 3 tokenizer)",
        "data_sha256": ["0" * 64],
        "split": {"train": 0, "validation": len(ITEMS), "seed": 0},
        "settings": {"lora_r": 16, "epochs": 0},
        "validation_alpha": {"sentiment": None},
        "rubric": RUBRIC.canonical_json(),
        "prompt_format": prompt.PROMPT_FORMAT,
        "date": "2026-01-01T00:00:00+00:00",
        "tool_version": "0.1.0",
        "merge_check": {"max_abs_logit_diff": 0.0},
    }
    (merged / "annotator_provenance.json").write_text(json.dumps(provenance))
    with (run / "validation.jsonl").open("w") as handle:
        for n, (text, sentiment, quality) in enumerate(ITEMS):
            handle.write(
                json.dumps(
                    {"id": f"v{n}", "text": text, "sentiment": sentiment, "quality": quality}
                )
                + "\n"
            )
    return run


def _branch_tokens(tokenizer, rubric) -> set[int]:
    found: set[int] = set()
    for dim in rubric.dimensions:
        seqs = [
            tokenizer(prompt.render_answer(v)[0], add_special_tokens=False)["input_ids"]
            for v in dim.values
        ]
        depth = 0
        while all(s[depth] == seqs[0][depth] for s in seqs):
            depth += 1
        found |= {s[depth] for s in seqs}
    return found


def export(run_dir: Path, out: Path, *extra: str):
    """`annotator export` in-process (so the merged scorer above is visible to it)."""
    from click.testing import CliRunner

    from annotator.export.cli import export_command

    # One thread: on a machine shared with other work, llama.cpp's threads wait on each
    # other at every barrier and a 2-thread run can be 30x slower than a 1-thread one.
    return CliRunner().invoke(
        export_command,
        [
            str(run_dir / "merged"),
            "--out",
            str(out),
            "--bootstrap",
            "200",
            "--threads",
            "1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def accepted(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("accepted") / "reviews.gguf"
    result = export(run_dir, out, "--quant", "q8_0")
    assert result.exit_code == 0, (result.output, result.exception)
    return out, result


@pytest.fixture(scope="module")
def gguf_fields(accepted):
    """The accepted file read with the gguf package's own reader (slow on a 262k vocabulary:
    read once)."""
    from gguf import GGUFReader

    return GGUFReader(accepted[0])


# -- the happy path -------------------------------------------------------------------------


def test_export_accepts_q8_file_and_prints_sha256_and_size(accepted):
    from annotator.modelfile import sha256_file

    out, result = accepted
    assert out.is_file() and not out.with_name(out.name + ".rejected").exists()
    lines = result.stdout.splitlines()
    assert lines[-2] == f"size      {out.stat().st_size} bytes ({out.stat().st_size / 1e6:.1f} MB)"
    assert lines[-1] == f"sha256    {sha256_file(out)}"
    assert "status    ACCEPTED" in result.stdout
    leftovers = [
        p.name
        for p in out.parent.iterdir()
        if p.name not in {"reviews.gguf", "reviews.export.json", "reviews.export.txt"}
    ]
    assert leftovers == []  # no f16 or partial files left behind


def test_report_has_three_alphas_per_dimension(accepted):
    out, _ = accepted
    report = json.loads(out.with_name("reviews.export.json").read_text())
    assert report["status"] == "accepted" and report["quant"] == "Q8_0"
    drift = report["drift"]
    assert drift["items"] == len(ITEMS) and drift["threshold"] == 0.9
    by_name = {d["dimension"]: d for d in drift["dimensions"]}
    quality = by_name["quality"]
    # The model's quality answers vary from item to item, and Q8_0 keeps every one of them.
    assert len({a["merged"]["quality"][0] for a in drift["answers"]}) > 1
    assert quality["quantized_vs_merged"]["alpha"] == pytest.approx(1.0)
    assert quality["exact_agreement"] == 1.0 and quality["passed"]
    for d in drift["dimensions"]:
        for pair in ("quantized_vs_merged", "quantized_vs_human", "merged_vs_human"):
            assert set(d[pair]) >= {"alpha", "ci95", "n", "coders"}
        assert d["quantized_vs_human"]["n"] == len(ITEMS)
    text = out.with_name("reviews.export.txt").read_text()
    assert "q~merged" in text and "merged~human" in text and "quality" in text
    assert report["sha256"] and report["size"] == out.stat().st_size
    assert report["timings"]["convert_s"] > 0 and report["timings"]["quantize_s"] > 0


def test_file_loads_in_llama_cpp_and_carries_rubric_and_provenance(accepted, gguf_fields):
    import llama_cpp

    out, _ = accepted
    llm = llama_cpp.Llama(str(out), n_ctx=256, verbose=False)
    try:
        assert llm.n_vocab() == 262144
        assert llm.tokenize(b" positive", add_bos=False, special=False)
    finally:
        llm.close()

    reader = gguf_fields
    assert reader.get_field(KEY_RUBRIC).contents() == RUBRIC.canonical_json()
    assert int(reader.get_field(KEY_PROMPT_FORMAT).contents()) == prompt.PROMPT_FORMAT
    provenance = json.loads(reader.get_field(KEY_PROVENANCE).contents())
    for key in (
        "base",
        "data_sha256",
        "split",
        "settings",
        "validation_alpha",
        "date",
        "tool_version",
        "merge_check",
        "prompt_format",
    ):
        assert key in provenance
    assert "rubric" not in provenance  # carried once, under its own key
    assert provenance["rubric_sha256"] == RUBRIC.hash
    assert provenance["export"]["quant"] == "q8_0"
    assert provenance["export"]["converter"].startswith("convert-hf-to-gguf")


def test_annotate_and_inspect_use_the_rubric_in_the_file(accepted, tmp_path):
    out, _ = accepted
    data = write_csv(
        tmp_path / "items.csv",
        [{"id": f"v{n}", "text": text} for n, (text, _, _) in enumerate(ITEMS)],
    )
    done = run_cli(
        "annotate",
        str(data),
        "--model",
        str(out),
        "--project",
        str(tmp_path / "p.db"),
        "--threads",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert f"rubric 'reviews' {RUBRIC.hash[:12]}" in done.stderr
    assert f"done {len(ITEMS)} of {len(ITEMS)} items" in done.stderr
    # The labels are the drift check's: same file, same engine, same rubric.
    results = run_cli("results", str(tmp_path / "p.db"), "--out", str(tmp_path / "r.jsonl"))
    assert results.returncode == 0, results.stderr
    labelled = {
        r["id"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())
    }
    report = json.loads(out.with_name("reviews.export.json").read_text())
    for answer in report["drift"]["answers"]:
        assert labelled[answer["id"]]["quality"] == answer["quantized"]["quality"][0]

    shown = run_cli("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "rubric        'reviews'" in shown.stdout and "Q8_0" in shown.stdout
    assert "provenance    (all of it: inspect --json)" in shown.stdout
    full = json.loads(run_cli("inspect", "--json", str(out)).stdout)
    assert full["provenance"]["rubric_sha256"] == RUBRIC.hash and full["quantization"] == "Q8_0"


# -- the drift check refuses a file that drifted --------------------------------------------


def test_q4_k_m_of_this_model_drifts_and_is_refused(run_dir, tmp_path):
    out = tmp_path / "reviews.gguf"
    result = export(run_dir, out)  # default --quant q4_k_m
    assert result.exit_code != 0
    assert isinstance(result.exception, AnnotatorError)
    message = str(result.exception)
    assert "refused" in message and "quality" in message and "\n" not in message
    rejected = out.with_name("reviews.gguf.rejected")
    assert rejected.is_file() and not out.exists()
    report = json.loads(out.with_name("reviews.export.json").read_text())
    assert report["status"] == "rejected" and report["file"] == str(rejected)
    quality = {d["dimension"]: d for d in report["drift"]["dimensions"]}["quality"]
    assert quality["disagreements"] > 0 and not quality["passed"]
    assert quality["quantized_vs_merged"]["alpha"] < 0.9
    assert "sha256" in result.stdout and "FAIL" in result.stdout


# -- untrusted metadata: malicious, huge, mistyped, truncated --------------------------------

STRING, ARRAY, UINT32 = 8, 9, 4


def _gguf_str(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _gguf_kv(key: str, vtype: int, value) -> bytes:
    body = _gguf_str(key) + struct.pack("<I", vtype)
    if vtype == STRING:
        return body + _gguf_str(value)
    if vtype == UINT32:
        return body + struct.pack("<I", value)
    return body + struct.pack("<IQ", STRING, len(value)) + b"".join(map(_gguf_str, value))


def with_metadata(reader, src: Path, dst: Path, changes: dict[str, tuple[int, object]]) -> Path:
    """A copy of `src` whose key/value pairs in `changes` are replaced (or added), spliced at
    the byte level: the tensor infos and data are copied untouched (their offsets are
    relative to the aligned data section, so a header of another length stays valid)."""
    raw = src.read_bytes()
    pairs = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        end = field.offset + sum(int(part.nbytes) for part in field.parts)
        pairs.append((name, raw[field.offset : end]))
    pairs = [(n, _gguf_kv(n, *changes[n]) if n in changes else b) for n, b in pairs]
    pairs += [(n, _gguf_kv(n, *c)) for n, c in changes.items() if n not in dict(pairs)]
    first, last = reader.tensors[0].field, reader.tensors[-1].field
    infos = raw[first.offset : last.offset + sum(int(p.nbytes) for p in last.parts)]
    header = raw[:8] + struct.pack("<QQ", len(reader.tensors), len(pairs))
    body = header + b"".join(b for _, b in pairs) + infos
    body += b"\0" * (-len(body) % reader.alignment)
    dst.write_bytes(body + raw[reader.data_offset :])
    return dst


def _rubric_json(**override) -> str:
    data = RUBRIC.to_dict()
    data.update(override)
    return json.dumps(data)


PAYLOADS = {
    "format string as dimension name": (
        KEY_RUBRIC,
        STRING,
        _rubric_json(
            dimensions=[
                {"name": "{0.__class__}", "question": "q", "scale": "nominal", "values": ["a", "b"]}
            ]
        ),
    ),
    "template as a key": (KEY_RUBRIC, STRING, _rubric_json(**{"{{ cycler.__init__ }}": "x"})),
    "template as a value type": (
        KEY_RUBRIC,
        STRING,
        _rubric_json(
            dimensions=[
                {"name": "d", "question": "q", "scale": "ordinal", "values": ["{{ 7*7 }}", "{0}"]}
            ]
        ),
    ),
    "huge rubric": (KEY_RUBRIC, STRING, " " * 1_500_000 + _rubric_json()),
    "nested rubric": (KEY_RUBRIC, STRING, "[" * 100_000 + "]" * 100_000),
    "rubric as an integer": (KEY_RUBRIC, UINT32, 7),
    "rubric not JSON": (KEY_RUBRIC, STRING, "{{ cycler.__init__.__globals__.os.popen('id') }}"),
    "prompt format as text": (KEY_PROMPT_FORMAT, STRING, "{0.__class__}"),
    "provenance not an object": (KEY_PROVENANCE, STRING, '["{0.__class__}"]'),
    "huge provenance": (KEY_PROVENANCE, STRING, '{"a": "' + "x" * 1_200_000 + '"}'),
}


@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_malicious_metadata_is_refused_in_one_line(case, accepted, gguf_fields, tmp_path):
    key, vtype, value = PAYLOADS[case]
    bad = with_metadata(gguf_fields, accepted[0], tmp_path / "bad.gguf", {key: (vtype, value)})
    done = run_cli("inspect", str(bad))
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annotator: error: ") and str(bad) in lines[0]
    assert len(lines[0]) < 400 and "Traceback" not in done.stderr
    assert "<class" not in done.stderr  # echoed as text at most, never formatted


def test_malicious_rubric_is_refused_by_annotate_before_any_work(accepted, gguf_fields, tmp_path):
    key, vtype, value = PAYLOADS["template as a key"]
    bad = with_metadata(gguf_fields, accepted[0], tmp_path / "bad.gguf", {key: (vtype, value)})
    data = write_csv(tmp_path / "items.csv", [{"id": "1", "text": "hello"}])
    done = run_cli("annotate", str(data), "--model", str(bad), "--project", str(tmp_path / "p.db"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid rubric" in lines[0] and "unknown key" in lines[0]
    assert not (tmp_path / "p.db").exists()  # refused before the project was created


def test_template_text_in_a_rubric_stays_text(accepted, gguf_fields, tmp_path):
    """Braces are ordinary prose in instructions and questions; a rubric carrying them is
    valid, and the text reaches the model verbatim: nothing formats or renders it."""
    payload = "{0.__class__} {{ cycler.__init__.__globals__ }} {% for x in y %}"
    bad = with_metadata(
        gguf_fields,
        accepted[0],
        tmp_path / "text.gguf",
        {KEY_RUBRIC: (STRING, _rubric_json(instructions=payload))},
    )
    from annotator.inference.backend import EngineSettings
    from annotator.inference.engine import Engine
    from annotator.modelfile import read_model_info

    info = read_model_info(bad)
    assert info.rubric.instructions == payload
    assert prompt.render_prefix(info.rubric).startswith(payload)
    engine = Engine(bad, info.rubric, EngineSettings(n_ctx=512))
    try:
        text = engine.llm.detokenize(engine.prefix_tokens).decode("utf-8")
        assert payload in text and "<class" not in text
    finally:
        engine.close()


def test_rubric_of_the_wrong_gguf_type_is_never_read(accepted, gguf_fields, tmp_path):
    """llama.cpp does not expose array-typed keys as metadata, so an array where the rubric
    belongs is invisible: the file counts as carrying no rubric, and `annotate` without
    --rubric refuses it in one line instead of reading anything from it."""
    bad = with_metadata(
        gguf_fields,
        accepted[0],
        tmp_path / "bad.gguf",
        {KEY_RUBRIC: (ARRAY, ["{0.__class__}", "{{ cycler.__init__ }}"])},
    )
    shown = run_cli("inspect", str(bad))
    assert shown.returncode == 0 and "rubric        none" in shown.stdout
    data = write_csv(tmp_path / "items.csv", [{"id": "1", "text": "hello"}])
    done = run_cli("annotate", str(data), "--model", str(bad), "--project", str(tmp_path / "p.db"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"annotator: error: {bad}: the model carries no rubric; pass --rubric RUBRIC.toml"
    ]


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_file_is_refused_by_inspect_and_annotate(keep, accepted, tmp_path):
    out = accepted[0]
    cut = tmp_path / "cut.gguf"
    with out.open("rb") as src:
        cut.write_bytes(src.read(int(out.stat().st_size * keep)))
    data = write_csv(tmp_path / "items.csv", [{"id": "1", "text": "hello"}])
    for args in (
        ["inspect", str(cut)],
        ["annotate", str(data), "--model", str(cut), "--project", str(tmp_path / "p.db")],
    ):
        done = run_cli(*args)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [
            f"annotator: error: {cut}: damaged or truncated GGUF file (llama.cpp cannot load it)"
        ]
