"""``freeprompt eval`` end to end on the tiny random model with tiny random CLIP and ViT backbones: items table,
summary, plot, resumption, shards, refusals; and on rendered photos (inversion and masks)."""

import csv

import pytest


def test_eval_command_end_to_end(tiny_model_dir, tiny_clip_dir, tiny_vit_dir, tmp_path, capsys):
    from freeprompt.cli.main import main

    out = tmp_path / "eval"
    argv = ["eval", "shapes-fake-edit", "--model", str(tiny_model_dir), "--method", "fpe,plain", "--limit", "2",
            "--clip", str(tiny_clip_dir), "--dino", str(tiny_vit_dir), "--steps", "2", "--guidance", "3", "--out",
            str(out), "--quiet"]
    main(argv)
    rows = list(csv.DictReader(open(out / "items.csv")))
    assert len(rows) == 2 * 9 * 2 and {r["method"] for r in rows} == {"fpe", "plain"}
    assert all(r["clip_score"] and r["clip_directional"] and r["structure_distance"] and r["iou"] for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| fpe |" in summary and "CDS vs joint" in summary and (out / "metrics.png").exists()
    before = (out / "items.csv").read_bytes()
    main(argv)
    assert (out / "items.csv").read_bytes() == before  # resumed: nothing recomputed
    # two shards in one folder write their own tables; the report reads both
    sharded = tmp_path / "sharded"
    for index in ("1", "0"):  # process 0 writes the report once every shard is done
        main([*argv[:-2], str(sharded), "--quiet", "--num-shards", "2", "--shard-index", index])
    assert len(list(sharded.glob("items.shard-*.csv"))) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--metrics", "clip,bogus"])
    assert exit_info.value.code == 2 and "unknown metric" in capsys.readouterr().err


def test_eval_on_rendered_photos_uses_inversion_and_masks(tiny_model_dir, tiny_clip_dir, tmp_path, monkeypatch):
    from freeprompt.cli.main import main

    monkeypatch.setenv("FREEPROMPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "real"
    main(["eval", "shapes-real-edit", "--model", str(tiny_model_dir), "--limit", "1", "--clip", str(tiny_clip_dir),
          "--metrics", "clip,cds,clip_edited,psnr,ssim,oracle", "--steps", "2", "--guidance", "3", "--out", str(out),
          "--quiet"])
    rows = list(csv.DictReader(open(out / "items.csv")))
    assert len(rows) == 3 and all(r["clip_edited"] and r["psnr_outside"] and r["iou"] for r in rows)
