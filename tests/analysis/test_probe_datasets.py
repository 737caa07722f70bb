"""Probe datasets on the tiny random pipeline: collection, lazy loading, resumption after a simulated kill,
corrupt files, sharding across processes, and bad input. (The probe commands end to end:
tests/cli/test_probe_cmd.py.)"""

import json

import pytest
import torch
from safetensors import safe_open

from freeprompt.analysis.collect import CollectOptions, collect
from freeprompt.analysis.datasets import CorruptShard, open_dataset
from freeprompt.analysis.specs import DatasetSpec, build_spec
from freeprompt.analysis.words import get_vocabulary, read_word_list
from freeprompt.attention.recorder import record_attention
from freeprompt.diffusion import ddim_scheduler, encode_prompts, initial_latents, sample
from freeprompt.errors import BadInput

OPTIONS = CollectOptions(steps=2, batch_size=2, shard_size=4)
MODEL = {"id": "random:tiny", "revision": "seed0"}


def small_spec(name="color", colors=("red", "blue", "green"), seeds=2):
    vocab = get_vocabulary("paper").with_lists(colors=list(colors), objects=["bus", "cup"], animals=["cat", "dog"])
    return build_spec(name, vocab, seeds)


def contents(root):
    """Every tensor of every shard, by key, plus the index lines."""
    out = {}
    for path in sorted((root / "shards").glob("shard-*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                out[f"{path.name}:{key}"] = f.get_tensor(key)
    return out, (root / "index.jsonl").read_text()


def same(a, b):
    ta, ia = a
    tb, ib = b
    return ia == ib and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def reference_run(tiny_pipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    summary = collect(tiny_pipe, small_spec(), root, OPTIONS, model_info=MODEL)
    return root, summary


def test_collection_layout_and_contents(tiny_pipe, reference_run):
    root, summary = reference_run
    assert summary["complete"] and summary["items_generated"] == 6 and summary["shards_owned"] == [0, 1]
    ds = open_dataset(root, verify=True)
    assert ds.complete and ds.skipped == [] and ds.words == ["target", "a", "noun"]
    lines = [json.loads(line) for line in (root / "index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(6))
    assert lines[4] == {"id": 4, "prompt": "a blue car", "seed": 1, "class": "blue", "template": "a {color} {noun}",
                        "fields": {"noun": "car", "color": "blue"},
                        "words": {"target": "blue", "a": "a", "noun": "car"},
                        "tokens": {"target": [2], "a": [1], "noun": [3]}, "shard": 1, "row": 0}
    meta = json.loads((root / "meta.json").read_text())
    assert meta["model"] == MODEL and len(meta["layers"]) == 16 and meta["layers"][0]["shape"] == [8, 8]
    assert len(meta["layout"]) == 32 and meta["collect"]["store_dtype"] == "float32"
    assert ds.y.tolist() == [0, 1, 2, 0, 1, 2]
    maps = ds.load(1)
    assert maps.shape == (6, 8, 8) and ds.load("7", "noun").shape == (6, 1, 1)
    # the stored maps are what the recorder gives for the same batch (items 0 and 1)
    emb = encode_prompts(tiny_pipe, ["a red car", "a blue car"], "", True, "cpu")
    noise = torch.cat([initial_latents(0, (1, 4, 8, 8), "cpu", torch.float32)] * 2)
    with record_attention(tiny_pipe, tokens=[2]) as rec:
        sample(tiny_pipe.unet, ddim_scheduler(tiny_pipe.scheduler.config), noise, emb, 2, 7.5, hooks=[rec])
    assert torch.equal(rec.maps()[ds.layer(1)["name"]], maps[:2])
    with pytest.raises(BadInput) as err:
        ds.load(17)
    assert "no cross-attention layer 17" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BadInput):
        ds.load(1, "zebra")


def test_resume_after_kill_equals_uninterrupted_run(tiny_pipe, reference_run, tmp_path):
    class Killed(Exception):
        pass

    def kill_after(shard, batch):
        def on_batch(k, j, ids):
            if (k, j) == (shard, batch):
                raise Killed
        return on_batch

    with pytest.raises(Killed):
        collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL, on_batch=kill_after(0, 0))
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-00000.batch-0000.safetensors"]
    progress = json.loads((tmp_path / "progress" / "process-0-of-1.json").read_text())
    assert progress["in_flight"]["shard"] == 0 and progress["shards_done"] == []
    assert not (tmp_path / "index.jsonl").exists()
    # a write killed before its rename leaves a temporary file: it must be ignored and removed
    (tmp_path / "shards" / ".shard-00000.batch-0001.safetensors.tmp-999").write_bytes(b"partial")
    with pytest.raises(Killed):  # killed again, in the second shard
        collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL, on_batch=kill_after(1, 0))
    summary = collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL)
    assert summary["items_generated"] == 0 and summary["items_reused"] == 6  # shard 1's batch was written
    assert same(contents(tmp_path), contents(reference_run[0]))
    assert not list((tmp_path / "shards").glob(".*")) and not list((tmp_path / "shards").glob("*batch*"))


def test_corrupt_files_are_skipped_reported_and_regenerated(tiny_pipe, reference_run, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(reference_run[0], root)
    shard = root / "shards" / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(CorruptShard, match="shard-00001"):
        ds = open_dataset(root)
    assert not ds.complete and len(ds.items) == 4 and ds.load(1).shape == (4, 8, 8)
    assert len(ds.skipped) == 1 and "shard-00001" in ds.skipped[0] and "shard-00001" in ds.summary()
    with pytest.warns(CorruptShard):
        summary = collect(tiny_pipe, small_spec(), root, OPTIONS, model_info=MODEL)
    assert summary["items_generated"] == 2 and len(summary["skipped_files"]) == 1
    assert same(contents(root), contents(reference_run[0]))

    # flipped bytes inside the tensor data: found by the checksums
    shard = root / "shards" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    ds = open_dataset(root)  # the header is intact
    with pytest.raises(BadInput, match="corrupt"):
        for layer in ds.layers:
            for word in ds.words:
                ds.load(layer["name"], word)
    with pytest.warns(CorruptShard, match="checksum"):
        ds = open_dataset(root, verify=True)
    assert len(ds.items) == 2 and ds.skipped
    # a resumed collection checks the finished shards' checksums too: the damaged one is made again, and the
    # dataset is only then reported complete (issue #29: "complete" was reported over a corrupted shard)
    with pytest.warns(CorruptShard):
        summary = collect(tiny_pipe, small_spec(), root, OPTIONS, model_info=MODEL)
    assert summary["items_generated"] == 4 and "checksum" in summary["skipped_files"][0] and summary["complete"]
    assert same(contents(root), contents(reference_run[0]))


def test_sharding_across_processes_and_self_maps(tiny_pipe, reference_run, tmp_path):
    for index in (1, 0):
        summary = collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL, num_shards=2,
                          shard_index=index)
        assert summary["shards_owned"] == [index]
    assert summary["complete"]
    assert same(contents(tmp_path), contents(reference_run[0]))
    with pytest.raises(BadInput):
        collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL, num_shards=2, shard_index=2)

    spec = small_spec("self_animal", seeds=1)
    root = tmp_path / "self"
    options = CollectOptions(steps=2, batch_size=2, shard_size=4, self_max_tokens=16, layers="1,7")
    collect(tiny_pipe, spec, root, options, model_info=MODEL)
    ds = open_dataset(root)
    assert ds.kind == "self" and [r["index"] for r in ds.layers] == [1, 7]
    maps = ds.load(1)
    assert maps.shape == (2, 16, 16) and ds.meta["collect"]["store_dtype"] == "float16"
    assert torch.allclose(maps.sum(-1), torch.ones(2, 16), atol=1e-2)  # pooled rows stay distributions


def test_bad_input(tiny_pipe, reference_run, tmp_path):
    root = reference_run[0]
    with pytest.raises(BadInput, match="model"):
        collect(tiny_pipe, small_spec(), root, OPTIONS, model_info={"id": "other", "revision": None})
    with pytest.raises(BadInput, match="layer layout"):
        collect(tiny_pipe, small_spec(), root, CollectOptions(steps=2, batch_size=2, shard_size=4, height=128),
                model_info=MODEL)
    with pytest.raises(BadInput, match="options"):
        collect(tiny_pipe, small_spec(), root, CollectOptions(steps=3, batch_size=2, shard_size=4), model_info=MODEL)
    with pytest.raises(BadInput, match="duplicates: red"):
        small_spec(colors=("red", "blue", "red"))
    with pytest.raises(BadInput, match="duplicates"):
        read_word_list("cat,dog,cat")
    with pytest.raises(BadInput, match="colours and objects"):
        get_vocabulary("paper").with_lists(objects=["orange", "bus"])
    spec = DatasetSpec(name="x", kind="cross", templates=["a {color} car"], class_field="color",
                       classes=["red"], seeds=[0], words={"target": "{color}", "other": "zebra"})
    with pytest.raises(BadInput) as err:
        collect(tiny_pipe, spec, tmp_path / "x", OPTIONS, model_info=MODEL)
    assert "'zebra'" in str(err.value) and "a, red, car" in str(err.value)
    assert not (tmp_path / "x").exists()  # nothing written before every word was found
    with pytest.raises(BadInput, match="no meta.json"):
        open_dataset(tmp_path)
    with pytest.raises(BadInput, match="covers none of the 10 steps"):
        collect(tiny_pipe, small_spec(), tmp_path / "empty_range",
                CollectOptions(steps=10, batch_size=2, shard_size=4, record_steps="0:0.05"), model_info=MODEL)
    with pytest.raises(BadInput, match="between 1 and 1000"):
        collect(tiny_pipe, small_spec(), tmp_path / "too_many", CollectOptions(steps=1001), model_info=MODEL)
    assert not (tmp_path / "empty_range").exists() and not (tmp_path / "too_many").exists()


def test_launcher_environment_splits_the_work_and_process_0_waits(tiny_pipe, reference_run, tmp_path, monkeypatch):
    """Under torchrun / accelerate launch (WORLD_SIZE, RANK) each process takes its shards; process 0 of
    `probe run` waits until the others' shard files exist, then the dataset equals a one-process run."""
    import threading

    from freeprompt.analysis.collect import distributed_position
    from freeprompt.analysis.protocol import wait_for_datasets

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed_position() == (2, 1)
    assert distributed_position(3, 2) == (3, 2)  # explicit values win
    monkeypatch.setenv("RANK", "0")
    assert collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL)["shards_owned"] == [0]
    waited = threading.Event()

    def wait():
        wait_for_datasets([tmp_path], echo=lambda line: None, poll_s=0.05)
        waited.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not waited.wait(0.3)  # shard 1 is missing: still waiting
    collect(tiny_pipe, small_spec(), tmp_path, OPTIONS, model_info=MODEL, num_shards=2, shard_index=1)
    waiter.join(timeout=30)
    assert waited.is_set()
    assert same(contents(tmp_path), contents(reference_run[0]))
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed_position() == (1, 0)


def test_a_second_collection_into_a_folder_being_written_is_refused_in_one_line(tiny_pipe, tmp_path):
    """Two `probe collect` on one folder (the same shard of it): the second is refused while the first writes, and
    the first finishes its dataset whole."""
    root, refused = tmp_path / "color", []

    def second(*_):
        if not refused:
            with pytest.raises(BadInput, match="another run is writing the dataset") as err:
                collect(tiny_pipe, small_spec(), root, OPTIONS, model_info=MODEL)
            refused.append(str(err.value))

    summary = collect(tiny_pipe, small_spec(), root, OPTIONS, model_info=MODEL, on_batch=second)
    assert refused and "\n" not in refused[0] and summary["complete"]
    assert collect(tiny_pipe, small_spec(), root, OPTIONS, model_info=MODEL)["items_generated"] == 0


@pytest.mark.parametrize("kind", ["color", "self_color"])
def test_collection_on_an_mmdit_records_its_joint_blocks(tmp_path, kind):
    """SD3's joint attention: the image-to-text block as the cross-attention dataset, the image-to-image block as
    the self-attention one; stored maps equal the recorder's on the same batch sampled with the model's flow
    scheduler, and meta.json names the family and the joint layers."""
    from freeprompt.diffusion.denoisers import denoiser_for
    from freeprompt.diffusion.schedulers import make_scheduler
    from freeprompt.models.random_transformers import random_transformer_pipeline

    pipe = random_transformer_pipeline("tiny-sd3")
    collect(pipe, small_spec(kind), tmp_path, OPTIONS, model_info=MODEL)
    ds = open_dataset(tmp_path, verify=True)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["family"] == "sd3" and {row["kind"] for row in meta["layers"]} == {"joint"}
    assert len(meta["layers"]) == pipe.transformer.config.num_layers
    denoiser = denoiser_for(pipe)
    noise = torch.cat([initial_latents(0, (1, 16, 8, 8), "cpu", torch.float32)] * 2)
    emb = denoiser.encode(["a red car", "a blue car"], "", True, "cpu")
    cross = kind == "color"
    with record_attention(pipe, kind="cross" if cross else "self", tokens=[2] if cross else None) as rec:
        sample(denoiser, make_scheduler("flow", pipe.scheduler.config), noise, emb, 2, 7.5, hooks=[rec])
    maps = ds.load(1)
    assert maps.shape == ((6, 4, 4) if cross else (6, 16, 16))
    stored = getattr(torch, meta["collect"]["store_dtype"])  # self maps are stored in float16
    want = rec.maps()[ds.layer(1)["name"]].to(stored).to(maps.dtype)
    assert torch.equal(want, maps[:2])
