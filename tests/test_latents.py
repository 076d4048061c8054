"""What a trained model is worth, told straight (the trained tiny test model on the test cases): evaluate scores the
encoder's latent sets beside the fitted ones, encode records each fitted set's drift and the training cases' latent
statistics, and a blend of two cases' latent sets decodes to closed meshes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vecset.data.mesh import is_closed
from vecset.data.ply import read_ply
from vecset.data.split import read_split_csv
from vecset.eval.encoding import encode_dataset, encoding_dataset
from vecset.eval.fitting import CaseSurface, fit_latents
from vecset.eval.latents import blend_latents, blend_report, encode_cases, file_digest, main
from vecset.eval.run import METRICS, evaluate_run
from vecset.model.checkpoint import load_model
from vecset.settings import EvalSettings

from conftest import DEFAULT_LABELS

QUICK = {"resolution": 32, "fit_steps": 20}  # a coarse grid and a short fit: seconds per case


def encode(trained_run, sample_dir, out, **settings):
    """encode_cases of the test cases (4 training, 2 validation) into ``out``."""
    splits = [read_split_csv(sample_dir / "splits" / f"{split}.csv") for split in ("train", "val")]
    ckpt = trained_run / "checkpoint-best.pt"
    encode_cases(trained_run / "settings.json", ckpt, *splits, out, EvalSettings(**QUICK | settings))
    return out


def evaluate(trained_run, sample_dir, val_label_maps, out, **settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """evaluate_run on the latent sets encode_cases stores with these eval settings, as the workflow runs them."""
    latents = encode(trained_run, sample_dir, out / "latents", **settings)
    paths = {name: out / f"{name}.csv" for name in ("metrics", "summary", "interfaces", "interface_summary", "scores")}
    evaluate_run(
        trained_run / "settings.json", trained_run / "checkpoint-best.pt", latents, sample_dir / "splits" / "val.csv",
        val_label_maps, dict(DEFAULT_LABELS), EvalSettings(**QUICK | settings), out / "cases", paths["metrics"],
        paths["summary"], paths["interfaces"], paths["interface_summary"], paths["scores"],
    )  # fmt: skip
    return pd.read_csv(paths["metrics"]), pd.read_csv(paths["summary"])


def test_one_evaluation_scores_the_encoders_latent_sets_beside_the_fitted_ones(
    trained_run, sample_dir, val_label_maps, tmp_path
):
    """The encoder's columns of a fitted evaluation are the scores an evaluation without fitting gives; without
    fitting, the two are the same numbers; the summary and the scores table hold both beside the metric."""
    fitted, summary = evaluate(trained_run, sample_dir, val_label_maps, tmp_path / "fitted")
    unfitted, _ = evaluate(trained_run, sample_dir, val_label_maps, tmp_path / "unfitted", fit_steps=0)
    for metric in ("status", *METRICS):
        pd.testing.assert_series_equal(fitted[f"{metric}_encoder"], unfitted[metric], check_names=False)
        pd.testing.assert_series_equal(unfitted[f"{metric}_encoder"], unfitted[metric], check_names=False)
    assert not fitted["dice"].equals(fitted["dice_encoder"]), "the fit moved the latent sets: other scores"
    # per metric side by side: fitted, encoder (no oracle tables given here)
    assert list(summary.columns[3:7]) == ["dice_mean", "dice_median", "dice_encoder_mean", "dice_encoder_median"]
    scored = fitted[fitted["status_encoder"] != "absent"].groupby("structure")["dice_encoder"].mean()
    np.testing.assert_allclose(
        summary.set_index("structure")["dice_encoder_mean"], scored.reindex(list(DEFAULT_LABELS)), atol=1e-4
    )
    scores = pd.read_csv(tmp_path / "fitted" / "scores.csv").set_index("structure")
    assert list(scores.columns) == [
        "Dice encoder", "Dice fitted", "Dice oracle", "HD95 mm encoder", "HD95 mm fitted", "HD95 mm oracle"
    ]  # fmt: skip
    np.testing.assert_allclose(scores["Dice fitted"], summary.set_index("structure")["dice_mean"], atol=1e-4)


@pytest.fixture(scope="module")
def latents(trained_run, sample_dir, tmp_path_factory):
    """encode_cases of the test cases (4 training, 2 validation), fitted 20 steps."""
    return encode(trained_run, sample_dir, tmp_path_factory.mktemp("latents") / "run")


def test_evaluate_refuses_latent_sets_of_another_checkpoint(trained_run, sample_dir, val_label_maps, latents, tmp_path):
    other = tmp_path / "other.pt"
    state = torch.load(trained_run / "checkpoint-best.pt", weights_only=True)
    torch.save(state | {"epoch": state["epoch"] + 1}, other)
    paths = [tmp_path / f"{name}.csv" for name in ("metrics", "summary", "interfaces", "interface_summary")]
    with pytest.raises(ValueError, match=r"case_4\.npz was encoded by .*, not by .*other\.pt; rerun the encode rule"):
        evaluate_run(trained_run / "settings.json", other, latents, sample_dir / "splits" / "val.csv", val_label_maps,
                     dict(DEFAULT_LABELS), EvalSettings(**QUICK), tmp_path / "cases", *paths)  # fmt: skip


def test_encode_records_each_cases_drift_and_the_training_cases_latent_statistics(latents, trained_run):
    drift = pd.read_csv(latents / "drift.csv")
    assert list(drift.columns) == ["case", "split", "relative_change", "share_beyond_3sd"]
    assert list(drift["split"]) == ["train"] * 4 + ["val"] * 2
    stats = np.load(latents / "stats.npz")
    assert int(stats["n_cases"]) == 4 and str(stats["checkpoint_sha256"]) == file_digest(
        trained_run / "checkpoint-best.pt"
    )
    train = [np.load(latents / f"{case}.npz") for case in drift.loc[drift["split"] == "train", "case"]]
    for key in ("z", "z_encoder"):
        values = np.stack([npz[key] for npz in train])
        np.testing.assert_allclose(stats[f"{key}_mean"], values.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(stats[f"{key}_std"], values.std(axis=0), atol=1e-5)
    for row in drift.itertuples():
        npz = np.load(latents / f"{row.case}.npz")
        change = np.linalg.norm(npz["z"] - npz["z_encoder"]) / np.linalg.norm(npz["z_encoder"])
        assert row.relative_change == pytest.approx(change, abs=1e-4) == float(npz["relative_change"])
        beyond = np.mean(np.abs(npz["z"] - stats["z_encoder_mean"]) / stats["z_encoder_std"] > 3)
        assert row.share_beyond_3sd == pytest.approx(beyond, abs=1e-4) and 0 <= beyond <= 1
        assert float(npz["fit_proximal"]) == EvalSettings().fit_proximal
    assert (drift["relative_change"] > 0).any(), "the fit moves latent sets"


def test_a_proximal_weight_keeps_the_fitted_sets_nearer_the_encoders(trained_model, sample_dir):
    model, plan = trained_model
    cases = read_split_csv(sample_dir / "splits" / "val.csv")
    surfaces = [CaseSurface.read(path, len(DEFAULT_LABELS), case) for case, path in cases]
    start = torch.stack([z for _, z in encode_dataset(model, encoding_dataset(model, plan, cases), batch_size=2)])
    moved = {w: fit_latents(model, start, surfaces, 20, 0.04, 256, proximal=w).z for w in (0.0, 10.0)}
    drift = {w: float(torch.linalg.norm(v - start) / torch.linalg.norm(start)) for w, v in moved.items()}
    assert drift[10.0] < 0.8 * drift[0.0], drift


def test_the_midpoint_of_two_cases_decodes_to_closed_meshes_between_them(latents, trained_run, tmp_path):
    a, b = (latents / f"{case}.npz" for case in ("case_0", "case_1"))
    checkpoint = trained_run / "checkpoint-best.pt"
    out = tmp_path / "blend"
    structures = blend_latents(a, b, 0.5, checkpoint, out, settings=EvalSettings(resolution=48))
    assert structures, "the trained test model reconstructs a structure in both cases"
    for s in structures:
        _, faces = read_ply(out / f"{s.structure}.ply")
        assert s.closed and is_closed(faces), f"{s.structure}: the blend's mesh is not closed"
        assert s.volume_blend > 0
    stdout = tmp_path / "printed"
    code = main(["blend", "--a", str(a), "--b", str(b), "--t", "0.5", "--checkpoint", str(checkpoint),
                 "--out", str(stdout), "--resolution", "48"])  # fmt: skip
    assert code == 0 and sorted(p.stem for p in stdout.glob("*.ply")) == sorted(DEFAULT_LABELS)
    not_between = [s.structure for s in structures if not s.between]
    last = blend_report(structures, 0.5).splitlines()[-1]
    assert re.match(r"blend at t=0\.5: \d+ structure\(s\) present in both cases: ", last)
    if not_between:  # says which structure is not between the two cases' volumes
        assert all(f"{name} not between" in last for name in not_between)
    else:
        assert last.endswith("every one closed, its volume between the two cases'")
    assert main(["blend", "--a", str(a), "--b", str(b), "--t", "1.5", "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "x")]) == 1  # fmt: skip


def test_a_case_named_like_the_latent_statistics_is_refused(trained_run, sample_dir, tmp_path):
    ((_, path), *_) = read_split_csv(sample_dir / "splits" / "train.csv")
    with pytest.raises(ValueError, match=r"a case is named .stats.*rename that case.s label map"):
        encode_cases(trained_run / "settings.json", trained_run / "checkpoint-best.pt", [("stats", path)], [], tmp_path)
    assert not any(tmp_path.iterdir())


class Evil:
    """A pickle that would run code when loaded unsafely."""

    def __reduce__(self):
        return (print, ("this ran",))


def _bad_latent(kind: str, good: Path, out: Path) -> Path:
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    path = out / f"{kind}.npz"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return path
    if kind == "objects":
        arrays["z"] = np.array([{"a": 1}], dtype=object)
    if kind == "misshapen":
        arrays["z"] = arrays["z"][:, :3]
    if kind in ("nan", "huge"):
        arrays["z"] = np.full_like(arrays["z"], np.nan if kind == "nan" else 1e30)
    if kind == "negative_scale":
        arrays["scale"] = -arrays["scale"]
    if kind == "no_z":
        del arrays["z"]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("truncated", "not a readable latent file"),
        ("random", "not a readable latent file"),
        ("objects", "not a readable latent file"),
        ("no_z", "not a latent file of this workflow (missing ['z'])"),
        ("misshapen", "the checkpoint's model takes"),
        ("nan", "values that are not finite"),
        ("huge", "no structure's surface in the decoded grid"),
        ("negative_scale", "is not a positive number of mm"),
    ],
)
def test_decode_refuses_a_nonsense_latent_file_in_one_line(kind, says, latents, trained_run, tmp_path, capsys):
    bad = _bad_latent(kind, latents / "case_0.npz", tmp_path)
    out = tmp_path / "meshes"
    code = main(["decode", "--latent", str(bad), "--checkpoint", str(trained_run / "checkpoint-best.pt"),
                 "--out", str(out), "--resolution", "24"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists(), "nothing written for a refused latent set"
    assert err[-1].startswith(f"error: {bad}") or err[-1].startswith(f"error: decode {bad}"), err[-1]
    assert says in err[-1] and "fix: " in err[-1] and "allow_pickle" not in err[-1], err[-1]


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("truncated", "unreadable checkpoint"),
        ("random", "unreadable checkpoint"),
        ("code", "refused, not loaded"),
        ("foreign", "not a vecset checkpoint"),
        ("wrong_model", "its model cannot be rebuilt"),
    ],
)
def test_a_nonsense_checkpoint_is_refused_in_one_line(kind, says, trained_run, tmp_path, capsys):
    good = trained_run / "checkpoint-best.pt"
    bad = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[:5000])
    elif kind == "random":
        bad.write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "code":
        torch.save({"format": 1, "ema": Evil()}, bad)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        state = torch.load(good, weights_only=True)
        torch.save(state | {"model_config": state["model_config"] | {"width": 48}}, bad)
    with pytest.raises(ValueError) as info:
        load_model(bad)
    line = str(info.value)
    assert line.startswith(f"{bad}: ") and "\n" not in line and says in line and "fix: " in line, line
    assert "weights_only" not in line and "safe_globals" not in line and "this ran" not in capsys.readouterr().out
