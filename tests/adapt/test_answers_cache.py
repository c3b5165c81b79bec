"""Saved answers are reused only while the model and the settings that made them are the same."""

from __future__ import annotations

import os
import shutil

from conveyor.adapt.answers import ModelSource, cache_key, load_answers, save_answers


def test_the_key_follows_weights_and_settings(tiny_model, tmp_path):
    folder = shutil.copytree(tiny_model, tmp_path / "tuned")
    source = ModelSource("tuned", str(folder))
    settings = {"generation": {"max_new_tokens": 128}}
    key = cache_key(source, settings)
    assert cache_key(source, settings) == key
    assert cache_key(source, {"generation": {"max_new_tokens": 64}}) != key
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert cache_key(source, settings) != key, "trained again in the same folder"
    assert cache_key(ModelSource("base", "default"), settings) == \
        cache_key(ModelSource("other-name", "default"), settings)


def test_answers_under_another_key_are_not_loaded(tmp_path):
    file = tmp_path / "answers.jsonl"
    save_answers(file, "k1", {"q": "a"})
    assert load_answers(file, "k1") == {"q": "a"}
    assert load_answers(file, "k2") == {}
